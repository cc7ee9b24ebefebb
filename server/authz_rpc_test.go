package server

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lopnr/lopnr/internal/testpki"
	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
	"github.com/lopnr/lopnr/server/authz"
)

// scope says where a call acts.
type scope int

const (
	inProject scope = iota // on the project it names
	global                 // on no project: needs a global role
	listing                // on no project: lists what a role in some project shows
	open                   // any authenticated caller
)

// ex, ap, kh, re, pa, au and ad abbreviate the roles in authzTable.
const (
	ex = authz.Extractor
	ap = authz.Approver
	kh = authz.Keyholder
	re = authz.Researcher
	pa = authz.Partner
	au = authz.Auditor
	ad = authz.Admin
)

// authzCase is one line of authzTable.
type authzCase struct {
	name   string // the method, and a word for a second case of it
	method string
	scope  scope
	roles  []authz.Role
}

// authzTable is who may call what, written down once. A call on a project
// passes for a role in that project or a global one, never for a role in
// another project; a call on no project passes for a global role only, but
// a listing, which passes for the role in any project. "Passes" means the
// interceptor lets it through: the service may still refuse it (a missing
// reason, a second person missing, an unregistered partner), which is not
// this test's concern.
var authzTable = []authzCase{
	{"GetInfo", lopnrv1.SystemService_GetInfo_FullMethodName, open, nil},

	{"CreateProject", lopnrv1.ProjectService_CreateProject_FullMethodName, inProject, []authz.Role{ex, ad}},
	{"GetProject", lopnrv1.ProjectService_GetProject_FullMethodName, inProject, []authz.Role{ex, ap, kh, re, au, ad}},
	{"ListProjects", lopnrv1.ProjectService_ListProjects_FullMethodName, listing, []authz.Role{ex, ap, kh, re, pa, au, ad}},
	{"ExtendRetention", lopnrv1.ProjectService_ExtendRetention_FullMethodName, inProject, []authz.Role{ap}},
	{"SetHold", lopnrv1.ProjectService_SetHold_FullMethodName, inProject, []authz.Role{ap}},
	{"DestroyProject", lopnrv1.ProjectService_DestroyProject_FullMethodName, inProject, []authz.Role{ap, ad}},
	{"ProposeChange", lopnrv1.ProjectService_ProposeChange_FullMethodName, inProject, []authz.Role{ex, ap, ad}},
	{"ApproveChange", lopnrv1.ProjectService_ApproveChange_FullMethodName, inProject, []authz.Role{ap}},
	{"ListChanges", lopnrv1.ProjectService_ListChanges_FullMethodName, inProject, []authz.Role{ex, ap, au, ad}},

	{"SubmitJob", lopnrv1.JobService_SubmitJob_FullMethodName, inProject, []authz.Role{ex}},
	{"GetJob", lopnrv1.JobService_GetJob_FullMethodName, inProject, []authz.Role{ex, ap, au, ad}},
	{"ListJobs", lopnrv1.JobService_ListJobs_FullMethodName, inProject, []authz.Role{ex, ap, au, ad}},
	{"ListJobs of every project", lopnrv1.JobService_ListJobs_FullMethodName, listing, []authz.Role{ex, ap, au, ad}},
	{"CancelJob", lopnrv1.JobService_CancelJob_FullMethodName, inProject, []authz.Role{ex, ad}},
	{"WatchJob", lopnrv1.JobService_WatchJob_FullMethodName, inProject, []authz.Role{ex, ap, au, ad}},

	{"ListDeliveries", lopnrv1.DeliveryService_ListDeliveries_FullMethodName, inProject, []authz.Role{ex, ap, re, au}},
	{"ReleaseDelivery", lopnrv1.DeliveryService_ReleaseDelivery_FullMethodName, inProject, []authz.Role{ap}},
	{"PresignDelivery", lopnrv1.DeliveryService_PresignDelivery_FullMethodName, inProject, []authz.Role{ex, re}},

	{"RequestReidentification", lopnrv1.KeyService_RequestReidentification_FullMethodName, inProject, []authz.Role{kh}},
	{"ApproveReidentification", lopnrv1.KeyService_ApproveReidentification_FullMethodName, inProject, []authz.Role{ap, kh}},
	{"Reidentify", lopnrv1.KeyService_Reidentify_FullMethodName, inProject, []authz.Role{kh}},
	{"Sweep", lopnrv1.KeyService_Sweep_FullMethodName, global, []authz.Role{ad}},

	{"ListAudit", lopnrv1.AuditService_ListAudit_FullMethodName, inProject, []authz.Role{au, ad}},
	{"ListAudit of every project", lopnrv1.AuditService_ListAudit_FullMethodName, global, []authz.Role{au, ad}},
	{"VerifyAudit", lopnrv1.AuditService_VerifyAudit_FullMethodName, global, []authz.Role{au, ad}},

	{"RegisterPartner", lopnrv1.PartnerService_RegisterPartner_FullMethodName, inProject, []authz.Role{ap, ad}},
	{"ListPartners", lopnrv1.PartnerService_ListPartners_FullMethodName, inProject, []authz.Role{ap, pa, au, ad}},
	{"GetPartnerKeys", lopnrv1.PartnerService_GetPartnerKeys_FullMethodName, inProject, []authz.Role{pa}},
	{"GetKeyFile", lopnrv1.PartnerService_GetKeyFile_FullMethodName, inProject, []authz.Role{pa}},
	{"RequestKeyFile", lopnrv1.PartnerService_RequestKeyFile_FullMethodName, inProject, []authz.Role{pa}},
	{"ApproveKeyFile", lopnrv1.PartnerService_ApproveKeyFile_FullMethodName, inProject, []authz.Role{ap, kh}},
	{"ListKeyFileGrants", lopnrv1.PartnerService_ListKeyFileGrants_FullMethodName, inProject, []authz.Role{pa, ap, kh, au, ad}},
	{"Evaluate", lopnrv1.PartnerService_Evaluate_FullMethodName, inProject, []authz.Role{pa}},
	{"ImportPartnerFile", lopnrv1.PartnerService_ImportPartnerFile_FullMethodName, inProject, []authz.Role{pa}},
}

// authzRoles are every role, in the policy file's words.
var authzRoles = []authz.Role{ex, ap, kh, re, pa, au, ad}

// places are where a caller's role is: in the project called (p1), in
// another (p2), or global.
var places = []string{"p1", "p2", "global"}

func authzName(r authz.Role, place string) string { return string(r) + "-" + place }

// authzPolicy gives each role in each place its own identity.
func authzPolicy() string {
	var b strings.Builder
	b.WriteString("identities:\n")
	for _, r := range authzRoles {
		fmt.Fprintf(&b, "  %q: {roles: {p1: [%s]}}\n", testpki.Subject(authzName(r, "p1")), r)
		fmt.Fprintf(&b, "  %q: {roles: {p2: [%s]}}\n", testpki.Subject(authzName(r, "p2")), r)
		fmt.Fprintf(&b, "  %q: {global: [%s]}\n", testpki.Subject(authzName(r, "global")), r)
	}
	return b.String()
}

// passes is the table's answer: whether a role in place passes the
// interceptor for a call of scope s that the roles may make.
func passes(s scope, roles []authz.Role, r authz.Role, place string) bool {
	has := slices.Contains(roles, r)
	switch s {
	case open:
		return true
	case inProject:
		return has && place != "p2"
	case global:
		return has && place == "global"
	default: // listing
		return has
	}
}

// TestAuthorisationFollowsTheRuleTable calls every RPC of the rule table as
// every role — in the project it names, in another project, and as a global
// role — over mutual TLS against the real server, and checks that the
// interceptor lets through exactly what authzTable says. It replays
// finding 10 of issue 15 among the rest: an admin of one project sweeping
// every project, an auditor of one verifying or reading the whole audit
// log.
func TestAuthorisationFollowsTheRuleTable(t *testing.T) {
	f := newFixtureWith(t, false, authzPolicy(), nil)
	spec, _ := f.generate(40)

	// Every method of the rule table has a case.
	for method := range rules {
		if !slices.ContainsFunc(authzTable, func(c authzCase) bool { return c.method == method }) {
			t.Errorf("%s has a rule but no case in authzTable", method)
		}
	}

	// Project p1 with approved rules and a job that has ended.
	f.srv.gate = make(chan struct{}) // jobs wait at their start
	researcher := researcherKey(t)
	if _, err := lopnrv1.NewProjectServiceClient(f.conn("admin-global")).CreateProject(ctx(t), &lopnrv1.CreateProjectRequest{Id: "p1",
		EpmDnr: "2026-00000-01", ApprovedVariables: approvedVariables(t), ApprovedSources: approvedSources(t), Recipients: []string{researcher.Recipient().String()}}); err != nil {
		t.Fatal(err)
	}
	f.approve("p1", "approver-global")
	job, err := lopnrv1.NewJobServiceClient(f.conn("extractor-p1")).SubmitJob(ctx(t), &lopnrv1.SubmitJobRequest{Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lopnrv1.NewJobServiceClient(f.conn("extractor-p1")).CancelJob(ctx(t), &lopnrv1.CancelJobRequest{Id: job.Id}); err != nil {
		t.Fatal(err)
	}

	conns := map[string]*grpc.ClientConn{}
	for _, r := range authzRoles {
		for _, place := range places {
			conns[authzName(r, place)] = f.conn(authzName(r, place))
		}
	}
	for _, c := range authzTable {
		for _, r := range authzRoles {
			for _, place := range places {
				err := callAs(ctx(t), conns[authzName(r, place)], c.name, job.Id, spec)
				st := status.Convert(err)
				// The interceptor's refusal names who may not take which
				// action; the services' own refusals say other things.
				denied := st.Code() == codes.PermissionDenied && strings.HasPrefix(st.Message(), testpki.Subject(authzName(r, place))+" may not ")
				if want := passes(c.scope, c.roles, r, place); denied == want {
					t.Errorf("%s as %s in %s: %v; want passed=%t", c.name, r, place, err, want)
				}
			}
		}
	}
}

// callAs makes one call of authzTable's case name, acting on p1 (or on no
// project), with requests that do nothing lasting when they pass: no
// reason, unknown ids.
func callAs(ctx context.Context, c *grpc.ClientConn, name, job string, spec []byte) error {
	projects, jobs := lopnrv1.NewProjectServiceClient(c), lopnrv1.NewJobServiceClient(c)
	deliveries, keys := lopnrv1.NewDeliveryServiceClient(c), lopnrv1.NewKeyServiceClient(c)
	audit, partners := lopnrv1.NewAuditServiceClient(c), lopnrv1.NewPartnerServiceClient(c)
	var err error
	switch name {
	case "GetInfo":
		_, err = lopnrv1.NewSystemServiceClient(c).GetInfo(ctx, &lopnrv1.GetInfoRequest{})
	case "CreateProject":
		_, err = projects.CreateProject(ctx, &lopnrv1.CreateProjectRequest{Id: "p1"})
	case "GetProject":
		_, err = projects.GetProject(ctx, &lopnrv1.GetProjectRequest{Id: "p1"})
	case "ListProjects":
		_, err = projects.ListProjects(ctx, &lopnrv1.ListProjectsRequest{})
	case "ExtendRetention":
		_, err = projects.ExtendRetention(ctx, &lopnrv1.ExtendRetentionRequest{Id: "p1"})
	case "SetHold":
		_, err = projects.SetHold(ctx, &lopnrv1.SetHoldRequest{Id: "p1", Hold: true})
	case "DestroyProject":
		_, err = projects.DestroyProject(ctx, &lopnrv1.DestroyProjectRequest{Id: "p1"})
	case "ProposeChange":
		_, err = projects.ProposeChange(ctx, &lopnrv1.ProposeChangeRequest{Project: "p1"})
	case "ApproveChange":
		_, err = projects.ApproveChange(ctx, &lopnrv1.ApproveChangeRequest{Project: "p1", Id: "c99"})
	case "ListChanges":
		_, err = projects.ListChanges(ctx, &lopnrv1.ListChangesRequest{Project: "p1"})
	case "SubmitJob":
		_, err = jobs.SubmitJob(ctx, &lopnrv1.SubmitJobRequest{Spec: spec})
	case "GetJob":
		_, err = jobs.GetJob(ctx, &lopnrv1.GetJobRequest{Id: job})
	case "ListJobs":
		_, err = jobs.ListJobs(ctx, &lopnrv1.ListJobsRequest{Project: "p1"})
	case "ListJobs of every project":
		_, err = jobs.ListJobs(ctx, &lopnrv1.ListJobsRequest{})
	case "CancelJob":
		_, err = jobs.CancelJob(ctx, &lopnrv1.CancelJobRequest{Id: job})
	case "WatchJob":
		var st grpc.ServerStreamingClient[lopnrv1.JobEvent]
		if st, err = jobs.WatchJob(ctx, &lopnrv1.WatchJobRequest{Id: job}); err == nil {
			for _, err = st.Recv(); err == nil; _, err = st.Recv() {
			}
		}
	case "ListDeliveries":
		_, err = deliveries.ListDeliveries(ctx, &lopnrv1.ListDeliveriesRequest{Project: "p1"})
	case "ReleaseDelivery":
		_, err = deliveries.ReleaseDelivery(ctx, &lopnrv1.ReleaseDeliveryRequest{Project: "p1", Delivery: "nothing"})
	case "PresignDelivery":
		_, err = deliveries.PresignDelivery(ctx, &lopnrv1.PresignDeliveryRequest{Project: "p1", Delivery: "nothing"})
	case "RequestReidentification":
		_, err = keys.RequestReidentification(ctx, &lopnrv1.RequestReidentificationRequest{Project: "p1", RunNumber: 1})
	case "ApproveReidentification":
		_, err = keys.ApproveReidentification(ctx, &lopnrv1.ApproveReidentificationRequest{Project: "p1", Id: "r-nothing"})
	case "Reidentify":
		_, err = keys.Reidentify(ctx, &lopnrv1.ReidentifyRequest{Project: "p1", Id: "r-nothing"})
	case "Sweep":
		_, err = keys.Sweep(ctx, &lopnrv1.SweepRequest{})
	case "ListAudit":
		_, err = audit.ListAudit(ctx, &lopnrv1.ListAuditRequest{Project: "p1", Limit: 1})
	case "ListAudit of every project":
		_, err = audit.ListAudit(ctx, &lopnrv1.ListAuditRequest{Limit: 1})
	case "VerifyAudit":
		_, err = audit.VerifyAudit(ctx, &lopnrv1.VerifyAuditRequest{})
	case "RegisterPartner":
		_, err = partners.RegisterPartner(ctx, &lopnrv1.RegisterPartnerRequest{Project: "p1"})
	case "ListPartners":
		_, err = partners.ListPartners(ctx, &lopnrv1.ListPartnersRequest{Project: "p1"})
	case "GetPartnerKeys":
		_, err = partners.GetPartnerKeys(ctx, &lopnrv1.GetPartnerKeysRequest{Project: "p1"})
	case "GetKeyFile":
		var st grpc.ServerStreamingClient[lopnrv1.FileChunk]
		if st, err = partners.GetKeyFile(ctx, &lopnrv1.GetKeyFileRequest{Project: "p1"}); err == nil {
			for _, err = st.Recv(); err == nil; _, err = st.Recv() {
			}
		}
	case "RequestKeyFile":
		_, err = partners.RequestKeyFile(ctx, &lopnrv1.RequestKeyFileRequest{Project: "p1"})
	case "ApproveKeyFile":
		_, err = partners.ApproveKeyFile(ctx, &lopnrv1.ApproveKeyFileRequest{Project: "p1", Id: "k-nothing"})
	case "ListKeyFileGrants":
		_, err = partners.ListKeyFileGrants(ctx, &lopnrv1.ListKeyFileGrantsRequest{Project: "p1"})
	case "Evaluate":
		var st grpc.BidiStreamingClient[lopnrv1.EvaluateRequest, lopnrv1.EvaluateResponse]
		if st, err = partners.Evaluate(ctx); err == nil {
			if err = st.Send(&lopnrv1.EvaluateRequest{Project: "p1"}); err == nil || err == io.EOF {
				_, err = st.Recv()
			}
		}
	case "ImportPartnerFile":
		var st grpc.ClientStreamingClient[lopnrv1.ImportPartnerFileRequest, lopnrv1.ImportPartnerFileResponse]
		if st, err = partners.ImportPartnerFile(ctx); err == nil {
			if err = st.Send(&lopnrv1.ImportPartnerFileRequest{Part: &lopnrv1.ImportPartnerFileRequest_Header{Header: &lopnrv1.ImportHeader{Project: "p1"}}}); err == nil || err == io.EOF {
				_, err = st.CloseAndRecv()
			}
		}
	default:
		return fmt.Errorf("no call for %q", name)
	}
	if err == io.EOF {
		err = nil
	}
	return err
}
