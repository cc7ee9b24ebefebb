package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lopnr/lopnr/internal/synth"
	"github.com/lopnr/lopnr/internal/testpki"
	"github.com/lopnr/lopnr/keystore"
	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
	"github.com/lopnr/lopnr/server"
)

// t0 is when everything on the fake server happened.
var t0 = time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)

// fakeServer is lopnrd as the client sees it: fixed answers, and a record
// of every request and who sent it.
type fakeServer struct {
	lopnrv1.UnimplementedProjectServiceServer
	lopnrv1.UnimplementedJobServiceServer
	lopnrv1.UnimplementedDeliveryServiceServer
	lopnrv1.UnimplementedKeyServiceServer
	lopnrv1.UnimplementedAuditServiceServer
	addr string

	mu    sync.Mutex
	calls []fakeCall
	// Answers that tests change; read and written under mu.
	fail         error // every call's answer, when set
	events       []*lopnrv1.JobEvent
	job          *lopnrv1.Job
	links        []*lopnrv1.PresignedFile
	personnummer string
	verify       *lopnrv1.VerifyAuditResponse
	rules        *lopnrv1.ProjectRules
}

type fakeCall struct {
	method string
	req    proto.Message
	cn     string // the client certificate's common name, without TLS ""
	tls    uint16 // the TLS version, without TLS 0
	as     string // the lopnrd --dev identity named (lopnr --dev --as)
}

// startFake serves a fakeServer on a loopback port, plaintext unless opts
// say otherwise.
func startFake(t *testing.T, opts ...grpc.ServerOption) *fakeServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{addr: l.Addr().String(),
		job:    &lopnrv1.Job{Id: "j-1", Project: "p1", State: lopnrv1.JobState_JOB_STATE_SUCCEEDED, Delivery: "d-1"},
		verify: &lopnrv1.VerifyAuditResponse{Ok: true, HeadSeq: 12, HeadHash: "abc123"}}
	opts = append(opts,
		grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := f.record(ctx, info.FullMethod, req.(proto.Message)); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			var req lopnrv1.WatchJobRequest
			if err := ss.RecvMsg(&req); err != nil {
				return err
			}
			if err := f.record(ss.Context(), info.FullMethod, &req); err != nil {
				return err
			}
			return f.WatchJob(&req, &grpc.GenericServerStream[lopnrv1.WatchJobRequest, lopnrv1.JobEvent]{ServerStream: ss})
		}))
	s := grpc.NewServer(opts...)
	lopnrv1.RegisterProjectServiceServer(s, f)
	lopnrv1.RegisterJobServiceServer(s, f)
	lopnrv1.RegisterDeliveryServiceServer(s, f)
	lopnrv1.RegisterKeyServiceServer(s, f)
	lopnrv1.RegisterAuditServiceServer(s, f)
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return f
}

func (f *fakeServer) record(ctx context.Context, method string, req proto.Message) error {
	c := fakeCall{method: path.Base(method), req: proto.Clone(req)}
	if as := metadata.ValueFromIncomingContext(ctx, server.DevIdentityHeader); len(as) > 0 {
		c.as = as[0]
	}
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			c.tls = ti.State.Version
			if len(ti.State.PeerCertificates) > 0 {
				c.cn = ti.State.PeerCertificates[0].Subject.CommonName
			}
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
	return f.fail
}

// set changes the fake's answers.
func (f *fakeServer) set(change func(f *fakeServer)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(f)
}

// last returns the last call of a method, failing the test if there was none.
func (f *fakeServer) last(t *testing.T, method string) fakeCall {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.calls) - 1; i >= 0; i-- {
		if f.calls[i].method == method {
			return f.calls[i]
		}
	}
	t.Fatalf("the server received no %s", method)
	return fakeCall{}
}

// count is how many calls the server received, of method or ("") any.
func (f *fakeServer) count(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	var n int
	for _, c := range f.calls {
		if method == "" || c.method == method {
			n++
		}
	}
	return n
}

// wantReq fails the test unless the last call of the request's method
// carried exactly want.
func (f *fakeServer) wantReq(t *testing.T, want proto.Message) {
	t.Helper()
	method := strings.TrimSuffix(string(want.ProtoReflect().Descriptor().Name()), "Request")
	if got := f.last(t, method).req; !proto.Equal(got, want) {
		t.Errorf("%s received\n  %v\nwant\n  %v", method, got, want)
	}
}

func (f *fakeServer) CreateProject(_ context.Context, r *lopnrv1.CreateProjectRequest) (*lopnrv1.Project, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = &lopnrv1.ProjectRules{ApprovedVariables: r.ApprovedVariables, ApprovedSources: r.ApprovedSources,
		AllowPersonnummer: r.AllowPersonnummer, Recipients: r.Recipients}
	return &lopnrv1.Project{Id: r.Id, EpmDnr: r.EpmDnr, Created: timestamppb.New(t0), RetainUntil: timestamppb.New(t0.AddDate(0, 0, int(r.RetentionDays))),
		CreatedBy: "uttag@region.example", PendingChanges: []string{"c1"}}, nil
}

// change is the fake's one change: the rules the project was created
// with, or those proposed last.
func (f *fakeServer) change(project, id string, approvedBy string) *lopnrv1.ProjectChange {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := &lopnrv1.ProjectChange{Id: id, Project: project, State: lopnrv1.ChangeState_CHANGE_STATE_PENDING, ProposedBy: "uttag@region.example",
		Proposed: timestamppb.New(t0), Reason: "the project's first rules", Rules: f.rules}
	if approvedBy != "" {
		ch.State, ch.ApprovedBy, ch.Approved = lopnrv1.ChangeState_CHANGE_STATE_APPROVED, approvedBy, timestamppb.New(t0.Add(time.Hour))
	}
	return ch
}

func (f *fakeServer) ProposeChange(_ context.Context, r *lopnrv1.ProposeChangeRequest) (*lopnrv1.ProjectChange, error) {
	f.mu.Lock()
	f.rules = r.Rules
	f.mu.Unlock()
	ch := f.change(r.Project, "c2", "")
	ch.Reason = r.Reason
	return ch, nil
}

func (f *fakeServer) ApproveChange(_ context.Context, r *lopnrv1.ApproveChangeRequest) (*lopnrv1.ProjectChange, error) {
	return f.change(r.Project, r.Id, "godkannare@region.example"), nil
}

func (f *fakeServer) ListChanges(_ context.Context, r *lopnrv1.ListChangesRequest) (*lopnrv1.ListChangesResponse, error) {
	return &lopnrv1.ListChangesResponse{Changes: []*lopnrv1.ProjectChange{f.change(r.Project, "c1", "")}}, nil
}

func (f *fakeServer) GetProject(_ context.Context, r *lopnrv1.GetProjectRequest) (*lopnrv1.Project, error) {
	return &lopnrv1.Project{Id: r.Id, EpmDnr: "2025-01234-01", Created: timestamppb.New(t0), RetainUntil: timestamppb.New(t0.AddDate(1, 0, 0)),
		Hold: true, HoldReason: "IVO inquiry 2025:7", Persons: 4711, CreatedBy: "uttag@region.example",
		Changes: []*lopnrv1.RetentionChange{{At: timestamppb.New(t0.Add(time.Hour)), Action: "hold", Reason: "IVO inquiry 2025:7"}}}, nil
}

func (f *fakeServer) ListProjects(context.Context, *lopnrv1.ListProjectsRequest) (*lopnrv1.ListProjectsResponse, error) {
	return &lopnrv1.ListProjectsResponse{Projects: []*lopnrv1.Project{
		{Id: "p1", EpmDnr: "2025-01234-01", RetainUntil: timestamppb.New(t0.AddDate(1, 0, 0)), Persons: 4711},
		{Id: "p0", EpmDnr: "2021-00042-01", RetainUntil: timestamppb.New(t0.AddDate(-1, 0, 0)), Destroyed: timestamppb.New(t0.AddDate(0, -1, 0))},
	}}, nil
}

func (f *fakeServer) ExtendRetention(_ context.Context, r *lopnrv1.ExtendRetentionRequest) (*lopnrv1.Project, error) {
	return &lopnrv1.Project{Id: r.Id, RetainUntil: r.RetainUntil}, nil
}

func (f *fakeServer) SetHold(_ context.Context, r *lopnrv1.SetHoldRequest) (*lopnrv1.Project, error) {
	p := &lopnrv1.Project{Id: r.Id, Hold: r.Hold, RetainUntil: timestamppb.New(t0.AddDate(1, 0, 0))}
	if r.Hold {
		p.HoldReason = r.Reason
	}
	return p, nil
}

func (f *fakeServer) DestroyProject(_ context.Context, r *lopnrv1.DestroyProjectRequest) (*lopnrv1.Receipt, error) {
	return &lopnrv1.Receipt{Project: r.Id, DestroyedAt: timestamppb.New(t0), RetainUntil: timestamppb.New(t0), Paths: 9, Mappings: 4711, Digest: "sha256:00ff"}, nil
}

func (f *fakeServer) SubmitJob(context.Context, *lopnrv1.SubmitJobRequest) (*lopnrv1.Job, error) {
	return &lopnrv1.Job{Id: "j-1", Project: "p1", State: lopnrv1.JobState_JOB_STATE_QUEUED}, nil
}

func (f *fakeServer) GetJob(_ context.Context, r *lopnrv1.GetJobRequest) (*lopnrv1.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	j := proto.Clone(f.job).(*lopnrv1.Job)
	j.Id = r.Id
	return j, nil
}

func (f *fakeServer) ListJobs(context.Context, *lopnrv1.ListJobsRequest) (*lopnrv1.ListJobsResponse, error) {
	return &lopnrv1.ListJobsResponse{Jobs: []*lopnrv1.Job{
		{Id: "j-2", Project: "p1", State: lopnrv1.JobState_JOB_STATE_FAILED, Submitter: "uttag@region.example", Created: timestamppb.New(t0)},
		{Id: "j-1", Project: "p1", State: lopnrv1.JobState_JOB_STATE_SUCCEEDED, Submitter: "uttag@region.example", Created: timestamppb.New(t0.Add(-time.Hour)), Delivery: "d-1"},
	}}, nil
}

func (f *fakeServer) CancelJob(_ context.Context, r *lopnrv1.CancelJobRequest) (*lopnrv1.Job, error) {
	return &lopnrv1.Job{Id: r.Id, State: lopnrv1.JobState_JOB_STATE_CANCELLED}, nil
}

func (f *fakeServer) WatchJob(_ *lopnrv1.WatchJobRequest, s grpc.ServerStreamingServer[lopnrv1.JobEvent]) error {
	f.mu.Lock()
	events := f.events
	f.mu.Unlock()
	for _, ev := range events {
		if err := s.Send(ev); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeServer) ListDeliveries(context.Context, *lopnrv1.ListDeliveriesRequest) (*lopnrv1.ListDeliveriesResponse, error) {
	return &lopnrv1.ListDeliveriesResponse{Deliveries: []*lopnrv1.Delivery{
		{Id: "d-1", Job: "j-1", Released: true, ReleasedBy: "godkannare", ReleasedAt: timestamppb.New(t0.Add(23 * time.Hour)),
			Files: []*lopnrv1.DeliveryFile{{Name: "a", Rows: 1000}, {Name: "b", Rows: 450}, {Name: "c", Rows: 50}}},
		{Id: "d-2", Job: "j-3", Files: []*lopnrv1.DeliveryFile{{Name: "a", Rows: 7}}},
	}}, nil
}

func (f *fakeServer) ReleaseDelivery(_ context.Context, r *lopnrv1.ReleaseDeliveryRequest) (*lopnrv1.Delivery, error) {
	return &lopnrv1.Delivery{Id: r.Delivery, Project: r.Project, Released: true, ReleasedBy: "godkannare", ReleasedAt: timestamppb.New(t0),
		Files: make([]*lopnrv1.DeliveryFile, 3)}, nil
}

func (f *fakeServer) PresignDelivery(context.Context, *lopnrv1.PresignDeliveryRequest) (*lopnrv1.PresignDeliveryResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &lopnrv1.PresignDeliveryResponse{Files: f.links}, nil
}

func (f *fakeServer) RequestReidentification(_ context.Context, r *lopnrv1.RequestReidentificationRequest) (*lopnrv1.Reidentification, error) {
	return &lopnrv1.Reidentification{Id: "r-1", Project: r.Project, RunNumber: r.RunNumber, Reason: r.Reason, RequestedBy: "nyckel1",
		State: lopnrv1.ReidentificationState_REIDENTIFICATION_STATE_PENDING}, nil
}

func (f *fakeServer) ApproveReidentification(_ context.Context, r *lopnrv1.ApproveReidentificationRequest) (*lopnrv1.Reidentification, error) {
	return &lopnrv1.Reidentification{Id: r.Id, Project: r.Project, RunNumber: 17, RequestedBy: "nyckel1", ApprovedBy: "nyckel2",
		State: lopnrv1.ReidentificationState_REIDENTIFICATION_STATE_APPROVED}, nil
}

func (f *fakeServer) Reidentify(context.Context, *lopnrv1.ReidentifyRequest) (*lopnrv1.ReidentifyResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &lopnrv1.ReidentifyResponse{Personnummer: f.personnummer, RunNumber: 17}, nil
}

func (f *fakeServer) Sweep(context.Context, *lopnrv1.SweepRequest) (*lopnrv1.SweepResponse, error) {
	return &lopnrv1.SweepResponse{Receipts: []*lopnrv1.Receipt{
		{Project: "p0", DestroyedAt: timestamppb.New(t0), Paths: 5, Mappings: 100, Digest: "sha256:aa"},
		{Project: "p9", DestroyedAt: timestamppb.New(t0), Paths: 5, Mappings: 200, Digest: "sha256:bb"},
	}}, nil
}

func (f *fakeServer) ListAudit(context.Context, *lopnrv1.ListAuditRequest) (*lopnrv1.ListAuditResponse, error) {
	return &lopnrv1.ListAuditResponse{Entries: []*lopnrv1.AuditEntry{
		{Seq: 11, Time: timestamppb.New(t0), Identity: "uttag@region.example", Action: "job.submit", Project: "p1", Job: "j-1", Outcome: "ok"},
		{Seq: 12, Time: timestamppb.New(t0.Add(time.Minute)), Identity: "godkannare", Action: "project.hold", Project: "p1", Outcome: "ok", Reason: "IVO\tinquiry"},
	}}, nil
}

func (f *fakeServer) VerifyAudit(context.Context, *lopnrv1.VerifyAuditRequest) (*lopnrv1.VerifyAuditResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.verify, nil
}

// clientEnv clears the client settings from the environment and points the
// config file at an empty directory, which it returns, so that a
// developer's own settings do not count.
func clientEnv(t *testing.T) string {
	t.Helper()
	for _, v := range []string{"LOPNR_SERVER", "LOPNR_CERT", "LOPNR_KEY", "LOPNR_CA", "LOPNR_DEV", "LOPNR_AS", "LOPNR_CONFIG"} {
		t.Setenv(v, "")
	}
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	return dir
}

// dev appends the flags that reach f in plaintext.
func (f *fakeServer) dev(args ...string) []string { return append(args, "--dev", "--server", f.addr) }

func newRecipient(t *testing.T) string {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id.Recipient().String()
}

func mustMatch(t *testing.T, what, pattern, s string) {
	t.Helper()
	if !regexp.MustCompile(pattern).MatchString(s) {
		t.Errorf("%s: no match for %s in\n%s", what, pattern, s)
	}
}

func TestClientProjects(t *testing.T) {
	clientEnv(t)
	f := startFake(t)
	approved := filepath.Join(t.TempDir(), "approved.yaml")
	os.WriteFile(approved, []byte(synth.Approved+"allow_personnummer: true\n"), 0o600)
	r1, r2 := newRecipient(t), newRecipient(t)

	out, stderr, code := runLopnr(t, "", f.dev("projects", "create", "p1", "--epm-dnr", "2025-01234-01", "--approved", approved,
		"--recipient", r1, "--recipient", r2, "--retention-days", "365")...)
	if code != 0 {
		t.Fatalf("projects create: exit %d: %s", code, stderr)
	}
	f.wantReq(t, &lopnrv1.CreateProjectRequest{Id: "p1", EpmDnr: "2025-01234-01", AllowPersonnummer: true, Recipients: []string{r1, r2}, RetentionDays: 365,
		ApprovedVariables: []*lopnrv1.ApprovedVariable{
			{Source: "par_sluten", Column: "HDIA", Transforms: []string{"truncate(3)"}},
			{Source: "par_sluten", Column: "INDATUM", Transforms: []string{"year-month"}},
			{Source: "par_sluten", Column: "OP"},
			{Source: "lmed", Column: "ATC"},
			{Source: "lmed", Column: "EDATUM", Transforms: []string{"year"}},
			{Source: "dors", Column: "ULORSAK", Transforms: []string{"truncate(3)"}},
		},
		ApprovedSources: []*lopnrv1.ApprovedSource{{Name: "val_sluten", Profile: "val-slutenvard"}, {Name: "val_oppen", Profile: "val-oppenvard"},
			{Name: "takecare", Profile: "takecare"}, {Name: "par_sluten", Profile: "par-sluten"}, {Name: "par_oppen", Profile: "par-oppen"},
			{Name: "lmed", Profile: "lmed"}, {Name: "dors", Profile: "dors"}, {Name: "reused", Profile: "cohort-list"}, {Name: "history", Profile: "pnr-history"}}})
	for _, re := range []string{`(?m)^Project\s+p1$`, `(?m)^Retain until\s+2026-03-01$`, `(?m)^Rules\s+none approved yet: no job runs$`,
		`(?m)^Pending\s+c1 \(lopnr projects changes p1\)$`, `(?m)^  lopnr projects approve p1 c1$`} {
		mustMatch(t, "projects create", re, out)
	}

	// The second person reads the change in full, and approves it.
	out, _, code = runLopnr(t, "", f.dev("projects", "changes", "p1")...)
	f.wantReq(t, &lopnrv1.ListChangesRequest{Project: "p1"})
	for _, re := range []string{`(?m)^Change\s+c1 of project p1$`, `(?m)^State\s+pending$`, `(?m)^Personnummer\s+allowed in deliveries$`,
		`(?m)^Approved\s+par_sluten.HDIA: truncate\(3\)$`, `(?m)^\s+par_sluten.OP: keep$`, `(?m)^Recipients\s+` + r1 + `$`, `(?m)^\s+` + r2 + `$`,
		`(?m)^Sources\s+val_sluten: read with val-slutenvard$`, `(?m)^\s+par_sluten: read with par-sluten$`} {
		mustMatch(t, "projects changes", re, out)
	}
	out, stderr, code = runLopnr(t, "", f.dev("projects", "approve", "p1", "c1", "--as", "approver")...)
	f.wantReq(t, &lopnrv1.ApproveChangeRequest{Project: "p1", Id: "c1"})
	if code != 0 || f.last(t, "ApproveChange").as != "approver" {
		t.Fatalf("projects approve --as approver: exit %d, sent as %q: %s", code, f.last(t, "ApproveChange").as, stderr)
	}
	mustMatch(t, "projects approve", `(?m)^State\s+approved 2025-03-01 11:00 UTC by godkannare@region.example$`, out)
	if f.last(t, "ListChanges").as != "" {
		t.Errorf("a call without --as named a dev identity")
	}

	// New rules, as a whole, with a reason.
	r3 := newRecipient(t)
	out, stderr, code = runLopnr(t, "", f.dev("projects", "propose", "p1", "--approved", approved, "--recipient", r3, "--reason", "a new researcher")...)
	if code != 0 {
		t.Fatalf("projects propose: exit %d: %s", code, stderr)
	}
	if got := f.last(t, "ProposeChange").req.(*lopnrv1.ProposeChangeRequest); got.Reason != "a new researcher" || !got.Rules.AllowPersonnummer ||
		len(got.Rules.ApprovedVariables) != 6 || len(got.Rules.Recipients) != 1 || got.Rules.Recipients[0] != r3 {
		t.Errorf("ProposeChange received %v", got)
	}
	mustMatch(t, "projects propose", `(?m)^  lopnr projects approve p1 c2$`, out)

	out, _, code = runLopnr(t, "", f.dev("projects", "get", "p1")...)
	f.wantReq(t, &lopnrv1.GetProjectRequest{Id: "p1"})
	if code != 0 {
		t.Fatalf("projects get: exit %d", code)
	}
	mustMatch(t, "projects get", `(?m)^Legal hold\s+yes: IVO inquiry 2025:7$`, out)
	mustMatch(t, "projects get", `(?m)^Changes\s+2025-03-01 11:00 UTC hold: IVO inquiry 2025:7$`, out)
	mustMatch(t, "projects get", `(?m)^Persons\s+4711$`, out)

	out, _, _ = runLopnr(t, "", f.dev("projects", "list")...)
	mustMatch(t, "projects list", `(?m)^PROJECT\s+EPM DNR\s+RETAIN UNTIL\s+PERSONS\s+STATE$`, out)
	mustMatch(t, "projects list", `(?m)^p1\s+2025-01234-01\s+2026-03-01\s+4711\s+active$`, out)
	mustMatch(t, "projects list", `(?m)^p0\s+2021-00042-01\s+2024-03-01\s+0\s+destroyed 2025-02-01$`, out)

	// extend and hold, and their aliases under keys, send the same requests.
	extend := &lopnrv1.ExtendRetentionRequest{Id: "p1", RetainUntil: timestamppb.New(time.Date(2027, 6, 30, 0, 0, 0, 0, time.UTC)), Reason: "follow-up study"}
	for _, group := range []string{"projects", "keys"} {
		out, stderr, code = runLopnr(t, "", f.dev(group, "extend", "p1", "--until", "2027-06-30", "--reason", "follow-up study")...)
		if code != 0 || out != "Project p1: the kodnyckel is kept until 2027-06-30\n" {
			t.Errorf("%s extend: exit %d: %q %s", group, code, out, stderr)
		}
		f.wantReq(t, extend)
		out, _, _ = runLopnr(t, "", f.dev(group, "hold", "p1", "--reason", "IVO inquiry")...)
		f.wantReq(t, &lopnrv1.SetHoldRequest{Id: "p1", Hold: true, Reason: "IVO inquiry"})
		if out != "Project p1: legal hold set: IVO inquiry\n" {
			t.Errorf("%s hold: %q", group, out)
		}
		out, _, _ = runLopnr(t, "", f.dev(group, "hold", "--release", "p1", "--reason", "closed")...)
		f.wantReq(t, &lopnrv1.SetHoldRequest{Id: "p1", Hold: false, Reason: "closed"})
		if out != "Project p1: no legal hold; the kodnyckel is kept until 2026-03-01\n" {
			t.Errorf("%s hold --release: %q", group, out)
		}
	}

	out, _, code = runLopnr(t, "", f.dev("projects", "destroy", "p1", "--reason", "study over")...)
	f.wantReq(t, &lopnrv1.DestroyProjectRequest{Id: "p1", Reason: "study over"})
	var r keystore.Receipt
	if err := json.Unmarshal([]byte(out), &r); err != nil || code != 0 || r.Project != "p1" || r.Mappings != 4711 || r.Paths != 9 || !r.DestroyedAt.Equal(t0) {
		t.Errorf("projects destroy: exit %d, receipt %q (%v)", code, out, err)
	}
}

// TestClientRefusesBadUse checks that mistakes in a command line are usage
// errors caught before anything is sent.
func TestClientRefusesBadUse(t *testing.T) {
	clientEnv(t)
	f := startFake(t)
	approved := filepath.Join(t.TempDir(), "approved.yaml")
	os.WriteFile(approved, []byte(synth.Approved), 0o600)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"projects", "frobnicate"}, `unknown subcommand "frobnicate"`},
		{[]string{"projects", "create", "p1"}, "--epm-dnr is required"},
		{[]string{"projects", "create", "p1", "--epm-dnr", "2025-1", "--approved", approved}, "--recipient (or --recipients-file) is required"},
		{[]string{"projects", "create", "p1", "--epm-dnr", "2025-1", "--approved", approved, "--recipient", "age1nope"}, "--recipient"},
		{[]string{"projects", "create", "--epm-dnr", "2025-1", "--approved", approved, "--recipient", newRecipient(t)}, "one project ID"},
		{[]string{"projects", "get"}, "one project ID"},
		{[]string{"projects", "extend", "p1", "--until", "2027-13-01", "--reason", "r"}, "want a date, YYYY-MM-DD"},
		{[]string{"projects", "extend", "p1", "--until", "2027-01-01"}, "--reason is required"},
		{[]string{"projects", "hold", "p1"}, "--reason is required"},
		{[]string{"keys", "hold", "p1", "--reason", " "}, "--reason is required"},
		{[]string{"projects", "destroy", "p1"}, "--reason is required"},
		{[]string{"projects", "propose", "p1", "--approved", approved, "--recipient", newRecipient(t)}, "--reason is required"},
		{[]string{"projects", "propose", "p1", "--reason", "r"}, "--approved is required"},
		{[]string{"projects", "approve", "p1"}, "a project ID and a CHANGE"},
		{[]string{"projects", "changes"}, "one project ID"},
		{[]string{"projects", "list", "--as", "root"}, `--as "root": want one of approver`},
		{[]string{"partners", "register", "p1", "CN=x", "--recipient", newRecipient(t), "--reason", "r"}, "--exchange is required"},
		{[]string{"partners", "register", "p1", "CN=x", "--recipient", newRecipient(t), "--exchange", "keyfile"}, "--reason is required"},
		{[]string{"partner", "keyfile", "--project", "p1", "-o", "x"}, "a key file needs a grant now"},
		{[]string{"partner", "keyfile", "request", "--project", "p1"}, "--reason is required"},
		{[]string{"partner", "keyfile", "get", "--project", "p1", "-o", "x"}, "--grant is required"},
		{[]string{"partner", "keyfile", "approve", "p1"}, "PROJECT and GRANT"},
		{[]string{"submit"}, "one job spec file"},
		{[]string{"watch", "j-1", "j-2"}, "one job ID"},
		{[]string{"jobs", "get"}, "one job ID"},
		{[]string{"jobs", "p1"}, "jobs takes no arguments"},
		{[]string{"cancel"}, "one job ID"},
		{[]string{"deliveries"}, "--project is required"},
		{[]string{"release", "p1"}, "PROJECT and DELIVERY"},
		{[]string{"presign", "p1"}, "give PROJECT and DELIVERY"},
		{[]string{"keys", "reidentify", "request", "p1", "18900101-9802", "--reason", "r"}, "want a LopNr"},
		{[]string{"keys", "reidentify", "request", "p1", "17"}, "--reason is required"},
		{[]string{"keys", "reidentify", "get", "p1"}, "PROJECT and REQUEST_ID"},
		{[]string{"keys", "reidentify", "forget"}, `lopnr keys: reidentify: unknown subcommand "forget"`},
		{[]string{"audit", "list", "--limit", "-1"}, "want a number"},
		{[]string{"audit", "verify", "a.log", "b.log"}, "one file"},
		{[]string{"audit", "verify", "a.log", "--server", f.addr}, "a FILE or --server, not both"},
		{[]string{"jobs", "--bogus"}, "flag provided but not defined: -bogus"},
	} {
		_, stderr, code := runLopnr(t, "", f.dev(tc.args...)...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, want 2 and %q in\n%s", tc.args, code, tc.want, stderr)
		}
	}
	if _, stderr, code := runLopnr(t, "", "projects"); code != 2 || !strings.Contains(stderr, "lopnr projects: want a subcommand: approve, changes, create, destroy, extend, get, hold, list, propose") {
		t.Errorf("projects: exit %d: %s", code, stderr)
	}
	if n := f.count(""); n != 0 {
		t.Errorf("usage errors sent %d calls to the server", n)
	}
}

func TestClientConnectionSettings(t *testing.T) {
	cfgDir := clientEnv(t)
	a, b := startFake(t), startFake(t)

	// Without --dev a client certificate is required.
	_, stderr, code := runLopnr(t, "", "projects", "list", "--server", a.addr)
	if code != 2 || !strings.Contains(stderr, "no client certificate") || !strings.Contains(stderr, "lopnr: hint: give --cert and --key") {
		t.Errorf("no certificate: exit %d: %s", code, stderr)
	}
	// --dev only to a loopback address, however it is set.
	for _, args := range [][]string{
		{"projects", "list", "--dev", "--server", "10.1.2.3:7443"},
		{"projects", "list", "--dev", "--server", "lopnrd.region.example:7443"},
		{"projects", "list", "--dev", "--server", "[2001:db8::1]:7443"},
	} {
		_, stderr, code := runLopnr(t, "", args...)
		if code != 2 || !strings.Contains(stderr, "only to a loopback address") || !strings.Contains(stderr, "lopnr: hint:") {
			t.Errorf("%v: exit %d: %s", args, code, stderr)
		}
	}
	// --as (a lopnrd --dev identity) only with --dev.
	if _, stderr, code := runLopnr(t, "", "projects", "list", "--as", "approver", "--server", a.addr); code != 2 || !strings.Contains(stderr, "--as is only for a lopnrd --dev") {
		t.Errorf("--as without --dev: exit %d: %s", code, stderr)
	}
	t.Setenv("LOPNR_AS", "auditor")
	if _, stderr, code := runLopnr(t, "", "projects", "list", "--dev", "--server", a.addr); code != 0 || a.last(t, "ListProjects").as != "auditor" {
		t.Errorf("$LOPNR_AS=auditor: exit %d, sent as %q: %s", code, a.last(t, "ListProjects").as, stderr)
	}
	t.Setenv("LOPNR_AS", "")
	a.set(func(f *fakeServer) { f.calls = nil })
	t.Setenv("LOPNR_DEV", "true")
	t.Setenv("LOPNR_SERVER", "10.1.2.3:7443")
	if _, stderr, code := runLopnr(t, "", "projects", "list"); code != 2 || !strings.Contains(stderr, "only to a loopback address") {
		t.Errorf("LOPNR_DEV to 10.1.2.3: exit %d: %s", code, stderr)
	}
	t.Setenv("LOPNR_DEV", "yes please")
	if _, stderr, code := runLopnr(t, "", "projects", "list"); code != 2 || !strings.Contains(stderr, "LOPNR_DEV") {
		t.Errorf("LOPNR_DEV=yes please: exit %d: %s", code, stderr)
	}
	t.Setenv("LOPNR_DEV", "")
	t.Setenv("LOPNR_SERVER", "")

	// Precedence: flag > environment > file.
	os.MkdirAll(filepath.Join(cfgDir, "lopnr"), 0o700)
	os.WriteFile(filepath.Join(cfgDir, "lopnr", "client.yaml"), []byte("server: "+a.addr+"\ndev: true\n"), 0o600)
	list := func(args ...string) {
		t.Helper()
		if _, stderr, code := runLopnr(t, "", append([]string{"projects", "list"}, args...)...); code != 0 {
			t.Fatalf("projects list %v: exit %d: %s", args, code, stderr)
		}
	}
	list()
	if a.count("ListProjects") != 1 || b.count("ListProjects") != 0 {
		t.Errorf("the config file's server was not used: %d %d", a.count("ListProjects"), b.count("ListProjects"))
	}
	t.Setenv("LOPNR_SERVER", b.addr)
	list()
	if a.count("ListProjects") != 1 || b.count("ListProjects") != 1 {
		t.Errorf("$LOPNR_SERVER did not win over the config file: %d %d", a.count("ListProjects"), b.count("ListProjects"))
	}
	list("--server", a.addr)
	if a.count("ListProjects") != 2 || b.count("ListProjects") != 1 {
		t.Errorf("--server did not win over $LOPNR_SERVER: %d %d", a.count("ListProjects"), b.count("ListProjects"))
	}
	t.Setenv("LOPNR_DEV", "false") // over the file's dev: true
	if _, stderr, code := runLopnr(t, "", "projects", "list"); code != 2 || !strings.Contains(stderr, "no client certificate") {
		t.Errorf("LOPNR_DEV=false: exit %d: %s", code, stderr)
	}
	list("--dev") // over LOPNR_DEV=false
	if b.count("ListProjects") != 2 {
		t.Errorf("--dev did not win over LOPNR_DEV=false")
	}
	t.Setenv("LOPNR_DEV", "")

	// $LOPNR_CONFIG names the file; unknown keys and a missing file are errors.
	other := filepath.Join(t.TempDir(), "other.yaml")
	t.Setenv("LOPNR_SERVER", "")
	t.Setenv("LOPNR_CONFIG", other)
	if _, stderr, code := runLopnr(t, "", "projects", "list"); code != 2 || !strings.Contains(stderr, "other.yaml") {
		t.Errorf("missing $LOPNR_CONFIG: exit %d: %s", code, stderr)
	}
	os.WriteFile(other, []byte("sever: "+b.addr+"\ndev: true\n"), 0o600)
	if _, stderr, code := runLopnr(t, "", "projects", "list"); code != 2 || !strings.Contains(stderr, "sever") {
		t.Errorf("unknown key in the config file: exit %d: %s", code, stderr)
	}
	os.WriteFile(other, []byte("server: "+b.addr+"\ndev: true\n"), 0o600)
	list()
	if b.count("ListProjects") != 3 {
		t.Errorf("$LOPNR_CONFIG's server was not used")
	}
}

func TestClientServerErrors(t *testing.T) {
	clientEnv(t)
	f := startFake(t)
	for _, tc := range []struct {
		err       error
		want      string
		hint      string
		extraArgs []string
	}{
		{status.Error(codes.PermissionDenied, `caller "CN=forskare" has no role approver in project "p1"`),
			`lopnr projects: PermissionDenied: caller "CN=forskare" has no role approver in project "p1"`, "check your certificate", nil},
		{status.Error(codes.Unauthenticated, "no client certificate"), "Unauthenticated: no client certificate", "check your certificate", nil},
		{status.Error(codes.PermissionDenied, "four eyes: a second person approves a change of a project's rules or partners, not the one who proposed it"),
			"PermissionDenied: four eyes", "this step is a second person's", nil},
		{status.Error(codes.FailedPrecondition, "project \"p1\" is under a legal hold\x1b[2J"), "FailedPrecondition: project \"p1\" is under a legal hold?[2J\n", "", nil},
	} {
		f.set(func(f *fakeServer) { f.fail = tc.err })
		out, stderr, code := runLopnr(t, "", f.dev("projects", "extend", "p1", "--until", "2027-01-01", "--reason", "r")...)
		if code != 1 || out != "" || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, want 1 and %q on stderr:\n%s", tc.err, code, tc.want, stderr)
		}
		if gotHint := strings.Contains(stderr, "lopnr: hint: "+tc.hint); gotHint != (tc.hint != "") {
			t.Errorf("%v: hint %q wanted: %v, in\n%s", tc.err, tc.hint, tc.hint != "", stderr)
		}
	}
	f.set(func(f *fakeServer) { f.fail = nil })

	// Nothing listens: Unavailable, and where lopnr looked.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := l.Addr().String()
	l.Close()
	_, stderr, code := runLopnr(t, "", "jobs", "--dev", "--server", dead)
	if code != 1 || !strings.Contains(stderr, "lopnr jobs: Unavailable: ") || !strings.Contains(stderr, "lopnr: hint: is lopnrd running at "+dead+"?") {
		t.Errorf("no server: exit %d: %s", code, stderr)
	}
}

func TestClientSubmitAndWatch(t *testing.T) {
	clientEnv(t)
	f := startFake(t)
	spec := filepath.Join(t.TempDir(), "job.yaml")
	specBytes := []byte("project: p1\nepm_dnr: 2025-01234-01\nsources: []\n")
	os.WriteFile(spec, specBytes, 0o600)
	ev := func(stage, source string, rows, bytes int64, state lopnrv1.JobState, done bool) *lopnrv1.JobEvent {
		return &lopnrv1.JobEvent{Job: "j-1", Stage: stage, Source: source, Rows: rows, Bytes: bytes, State: state, Done: done}
	}
	running := lopnrv1.JobState_JOB_STATE_RUNNING
	events := []*lopnrv1.JobEvent{
		ev("queued", "", 0, 0, lopnrv1.JobState_JOB_STATE_QUEUED, false),
		ev("ingest", "par_sluten", 1000, 0, running, false),
		ev("ingest", "par_sluten", 2500, 0, running, true),
		ev("file", "par_sluten.csv.zst.age", 2500, 81234, running, true),
	}
	f.set(func(f *fakeServer) {
		f.events = append(events, ev("succeeded", "", 0, 0, lopnrv1.JobState_JOB_STATE_SUCCEEDED, true))
	})

	out, stderr, code := runLopnr(t, "", f.dev("submit", spec)...)
	if code != 0 || out != "j-1\n" || !strings.Contains(stderr, "job j-1 of project p1: queued") {
		t.Fatalf("submit: exit %d: %q %s", code, out, stderr)
	}
	f.wantReq(t, &lopnrv1.SubmitJobRequest{Spec: specBytes})

	out, stderr, code = runLopnr(t, "", f.dev("watch", "j-1")...)
	if code != 0 {
		t.Fatalf("watch: exit %d: %s", code, stderr)
	}
	f.wantReq(t, &lopnrv1.WatchJobRequest{Id: "j-1"})
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 6 || strings.Contains(out, "\r") {
		t.Fatalf("watch printed %d lines, want 6 plain ones:\n%s", len(lines), out)
	}
	mustMatch(t, "watch", `^ingest\s+par_sluten\s+1000 rows$`, lines[1])
	mustMatch(t, "watch", `^file\s+par_sluten.csv.zst.age\s+2500 rows\s+81234 bytes  done$`, lines[3])
	mustMatch(t, "watch", `^succeeded\s+done$`, lines[4])
	if lines[5] != "Job j-1 succeeded: delivery d-1" {
		t.Errorf("watch ends with %q", lines[5])
	}

	out, _, code = runLopnr(t, "", f.dev("submit", spec, "--watch")...)
	if code != 0 || !strings.HasPrefix(out, "j-1\n") || !strings.HasSuffix(out, "Job j-1 succeeded: delivery d-1\n") {
		t.Errorf("submit --watch: exit %d:\n%s", code, out)
	}

	// A failed or cancelled job exits 1 with its error; so does a stream that
	// ends before the job does.
	for _, tc := range []struct {
		job      *lopnrv1.Job
		last     string
		stderr   string
		hintWant bool
	}{
		{&lopnrv1.Job{State: lopnrv1.JobState_JOB_STATE_FAILED, Error: "sources[1].lmed: column EDATUM: 12 rows are not dates"},
			"Job j-1 failed", "lopnr watch: job j-1 failed: sources[1].lmed: column EDATUM: 12 rows are not dates", false},
		{&lopnrv1.Job{State: lopnrv1.JobState_JOB_STATE_CANCELLED}, "Job j-1 cancelled", "lopnr watch: job j-1 was cancelled", false},
		{&lopnrv1.Job{State: running}, "", "the server ended the stream while the job is running", true},
	} {
		f.set(func(f *fakeServer) {
			f.job = tc.job
			f.events = append(events, ev(jobState(tc.job.State), "", 0, 0, tc.job.State, tc.job.State != running))
		})
		out, stderr, code := runLopnr(t, "", f.dev("watch", "j-1")...)
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if code != 1 || !strings.Contains(stderr, tc.stderr) || strings.Contains(stderr, "lopnr: hint: lopnr watch j-1") != tc.hintWant {
			t.Errorf("watch of a %s job: exit %d: %s", jobState(tc.job.State), code, stderr)
		}
		if tc.last != "" && lines[len(lines)-1] != tc.last {
			t.Errorf("watch of a %s job ends with %q", jobState(tc.job.State), lines[len(lines)-1])
		}
	}
}

// TestWatchRedrawsOnATerminal checks the terminal display: a line per stage
// and source, redrawn in place until it is done or the next one starts.
func TestWatchRedrawsOnATerminal(t *testing.T) {
	evs := []*lopnrv1.JobEvent{
		{Stage: "ingest", Source: "par_sluten", Rows: 1000},
		{Stage: "ingest", Source: "par_sluten", Rows: 2000},
		{Stage: "ingest", Source: "par_sluten", Rows: 2500, Done: true},
		{Stage: "file", Source: "lmed.csv.zst.age", Rows: 10, Bytes: 400},
		{Stage: "succeeded", Done: true},
	}
	var buf bytes.Buffer
	p := &progress{w: &buf, term: true}
	for _, ev := range evs {
		p.show(ev)
	}
	p.end()
	const cr = "\r\x1b[K"
	want := cr + eventLine(evs[0]) + cr + eventLine(evs[1]) + cr + eventLine(evs[2]) + "\n" +
		cr + eventLine(evs[3]) + "\n" + cr + eventLine(evs[4]) + "\n"
	if buf.String() != want {
		t.Errorf("terminal display\n%q\nwant\n%q", buf.String(), want)
	}
	if isTerminal(&buf) {
		t.Error("a buffer is a terminal")
	}
	file, _ := os.Create(filepath.Join(t.TempDir(), "out"))
	defer file.Close()
	if isTerminal(file) {
		t.Error("a regular file is a terminal")
	}
}

func TestClientJobsAndDeliveries(t *testing.T) {
	clientEnv(t)
	f := startFake(t)
	out, _, code := runLopnr(t, "", f.dev("jobs", "--project", "p1")...)
	f.wantReq(t, &lopnrv1.ListJobsRequest{Project: "p1"})
	if code != 0 {
		t.Fatalf("jobs: exit %d", code)
	}
	mustMatch(t, "jobs", `(?m)^JOB\s+PROJECT\s+STATE\s+SUBMITTER\s+CREATED\s+DELIVERY$`, out)
	mustMatch(t, "jobs", `(?m)^j-2\s+p1\s+failed\s+uttag@region.example\s+2025-03-01 10:00 UTC\s+-$`, out)
	mustMatch(t, "jobs", `(?m)^j-1\s+p1\s+succeeded\s+uttag@region.example\s+2025-03-01 09:00 UTC\s+d-1$`, out)

	f.set(func(f *fakeServer) {
		f.job = &lopnrv1.Job{Project: "p1", State: lopnrv1.JobState_JOB_STATE_SUCCEEDED, Delivery: "d-1", Started: timestamppb.New(t0),
			Last: &lopnrv1.JobEvent{Stage: "publish", Done: true}, Report: "Cohort: 2500 persons\nLinked: 99.2 %\n",
			Spec: []byte("project: p1\ncohort:\n  criteria:\n    - {source: par_sluten, codes: [I21]}\x1b[2J\n")}
	})
	out, _, _ = runLopnr(t, "", f.dev("jobs", "get", "j-7")...)
	f.wantReq(t, &lopnrv1.GetJobRequest{Id: "j-7"})
	for _, re := range []string{`(?m)^Job\s+j-7$`, `(?m)^State\s+succeeded$`, `(?m)^Started\s+2025-03-01 10:00 UTC$`, `(?m)^Finished\s+-$`,
		`(?m)^Last event\s+publish\s+done$`, `(?m)^Delivery\s+d-1$`, `\n\nCohort: 2500 persons\nLinked: 99.2 %\n$`,
		`\nSpec:\n  project: p1\n  cohort:\n    criteria:\n      - \{source: par_sluten, codes: \[I21\]\}\?\[2J\n`} {
		mustMatch(t, "jobs get", re, out)
	}

	out, _, _ = runLopnr(t, "", f.dev("cancel", "j-2")...)
	f.wantReq(t, &lopnrv1.CancelJobRequest{Id: "j-2"})
	if out != "Job j-2: cancelled\n" {
		t.Errorf("cancel: %q", out)
	}

	out, _, _ = runLopnr(t, "", f.dev("deliveries", "--project", "p1")...)
	f.wantReq(t, &lopnrv1.ListDeliveriesRequest{Project: "p1"})
	mustMatch(t, "deliveries", `(?m)^DELIVERY\s+JOB\s+RELEASED\s+FILES\s+ROWS$`, out)
	mustMatch(t, "deliveries", `(?m)^d-1\s+j-1\s+2025-03-02 09:00 UTC by godkannare\s+3\s+1500$`, out)
	mustMatch(t, "deliveries", `(?m)^d-2\s+j-3\s+no\s+1\s+7$`, out)

	out, _, _ = runLopnr(t, "", f.dev("release", "p1", "d-2")...)
	f.wantReq(t, &lopnrv1.ReleaseDeliveryRequest{Project: "p1", Delivery: "d-2"})
	if out != "Delivery d-2 of project p1 released by godkannare at 2025-03-01 10:00 UTC: 3 files\n" {
		t.Errorf("release: %q", out)
	}
}

func TestClientPresignDownload(t *testing.T) {
	clientEnv(t)
	f := startFake(t)
	files := map[string]string{"par_sluten.csv.zst.age": "age-encryption.org/v1\n-> X25519 …", "manifest.json": `{"files":[]}`}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := files[path.Base(r.URL.Path)]
		if r.URL.Query().Get("X-Amz-Signature") != "ok" || !ok {
			http.Error(w, "AccessDenied", http.StatusForbidden)
			return
		}
		fmt.Fprint(w, body)
	}))
	defer hs.Close()
	link := func(name, sig string) *lopnrv1.PresignedFile {
		return &lopnrv1.PresignedFile{Name: name, Url: hs.URL + "/lopnr/p1/d-1/" + name + "?X-Amz-Signature=" + sig, Expires: timestamppb.New(t0.Add(72 * time.Hour))}
	}
	f.set(func(f *fakeServer) {
		f.links = []*lopnrv1.PresignedFile{link("par_sluten.csv.zst.age", "ok"), link("manifest.json", "ok")}
	})

	dir := filepath.Join(t.TempDir(), "d-1")
	out, stderr, code := runLopnr(t, "", f.dev("presign", "p1", "d-1", "--download", dir)...)
	if code != 0 {
		t.Fatalf("presign --download: exit %d: %s", code, stderr)
	}
	f.wantReq(t, &lopnrv1.PresignDeliveryRequest{Project: "p1", Delivery: "d-1", Expiry: durationpb.New(72 * time.Hour)})
	want := "par_sluten.csv.zst.age\t" + hs.URL + "/lopnr/p1/d-1/par_sluten.csv.zst.age?X-Amz-Signature=ok\t(until 2025-03-04 10:00 UTC)\n" +
		"manifest.json\t" + hs.URL + "/lopnr/p1/d-1/manifest.json?X-Amz-Signature=ok\t(until 2025-03-04 10:00 UTC)\n"
	if out != want {
		t.Errorf("presign printed\n%s\nwant\n%s", out, want)
	}
	for name, body := range files {
		b, err := os.ReadFile(filepath.Join(dir, name))
		fi, _ := os.Stat(filepath.Join(dir, name))
		if err != nil || string(b) != body || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %q, %v (%v)", name, b, fi.Mode(), err)
		}
	}
	if !strings.Contains(stderr, "downloaded "+filepath.Join(dir, "manifest.json")+" (12 bytes)") {
		t.Errorf("presign --download stderr: %s", stderr)
	}
	// A second download does not overwrite what is there.
	if _, stderr, code := runLopnr(t, "", f.dev("presign", "p1", "d-1", "--download", dir)...); code != 1 || !strings.Contains(stderr, "exists") {
		t.Errorf("download over existing files: exit %d: %s", code, stderr)
	}

	// Named files and an expiry are passed on.
	runLopnr(t, "", f.dev("presign", "p1", "d-1", "lmed.csv.zst.age", "dors.csv.zst.age", "--expiry", "1h")...)
	f.wantReq(t, &lopnrv1.PresignDeliveryRequest{Project: "p1", Delivery: "d-1", Files: []string{"lmed.csv.zst.age", "dors.csv.zst.age"}, Expiry: durationpb.New(time.Hour)})

	// A refused link fails without printing the link's signature; a name
	// that is not a plain file name is not written.
	for _, tc := range []struct {
		link *lopnrv1.PresignedFile
		want string
	}{
		{link("par_sluten.csv.zst.age", "expired"), "par_sluten.csv.zst.age: download: 403 Forbidden"},
		{link("../escape", "ok"), `"../escape": not a plain file name`},
	} {
		f.set(func(f *fakeServer) { f.links = []*lopnrv1.PresignedFile{tc.link} })
		dir := t.TempDir()
		_, stderr, code := runLopnr(t, "", f.dev("presign", "p1", "d-1", "--download", filepath.Join(dir, "in"))...)
		if code != 1 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%s: exit %d: %s", tc.link.Name, code, stderr)
		}
		if entries, _ := os.ReadDir(filepath.Join(dir, "in")); len(entries) != 0 {
			t.Errorf("%s: wrote %v", tc.link.Name, entries)
		}
		if _, err := os.Stat(filepath.Join(dir, "escape")); err == nil {
			t.Errorf("%s: wrote outside the download directory", tc.link.Name)
		}
	}

	// With no server configured, presign signs with S3 keys itself, as before.
	t.Setenv("LOPNR_S3_ENDPOINT", "")
	calls := f.count("")
	if _, stderr, code := runLopnr(t, "", "presign", "p1", "d-1", "lmed.csv.zst.age"); code != 1 || !strings.Contains(stderr, "no S3 endpoint") {
		t.Errorf("presign without a server or S3: exit %d: %s", code, stderr)
	}
	if _, stderr, code := runLopnr(t, "", "presign", "p1", "d-1", "--server", f.addr, "--dev", "--s3-endpoint", "http://127.0.0.1:9"); code != 2 || !strings.Contains(stderr, "not both") {
		t.Errorf("presign with --server and --s3-endpoint: exit %d: %s", code, stderr)
	}
	if f.count("") != calls {
		t.Error("presign without a server asked the server")
	}
}

// testPersonnummer returns one of Skatteverket's test personnummer.
func testPersonnummer(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../testdata/skatteverket/testpersonnummer.txt")
	numbers := strings.Fields(string(b))
	if err != nil || len(numbers) < 10 {
		t.Fatalf("test personnummer: %v", err)
	}
	return numbers[9]
}

func TestClientReidentify(t *testing.T) {
	clientEnv(t)
	f := startFake(t)
	pnr := testPersonnummer(t)
	f.set(func(f *fakeServer) { f.personnummer = pnr })

	out, stderr, code := runLopnr(t, "", f.dev("keys", "reidentify", "request", "p1", "17", "--reason", "adverse event follow-up")...)
	f.wantReq(t, &lopnrv1.RequestReidentificationRequest{Project: "p1", RunNumber: 17, Reason: "adverse event follow-up"})
	if code != 0 || out != "r-1\n" || !strings.Contains(stderr, "lopnr keys reidentify approve p1 r-1") {
		t.Errorf("reidentify request: exit %d: %q %s", code, out, stderr)
	}
	out, _, code = runLopnr(t, "", f.dev("keys", "reidentify", "approve", "p1", "r-1")...)
	f.wantReq(t, &lopnrv1.ApproveReidentificationRequest{Project: "p1", Id: "r-1"})
	if code != 0 || !strings.HasPrefix(out, "Request r-1 for LopNr 17 of project p1 approved by nyckel2; nyckel1 gets the answer") {
		t.Errorf("reidentify approve: exit %d: %q", code, out)
	}
	out, stderr, code = runLopnr(t, "", f.dev("keys", "reidentify", "get", "p1", "r-1")...)
	f.wantReq(t, &lopnrv1.ReidentifyRequest{Project: "p1", Id: "r-1"})
	if code != 0 || out != pnr+"\n" {
		t.Errorf("reidentify get: exit %d: stdout %q, want the identity number alone", code, out)
	}
	if strings.Contains(stderr, pnr) || !strings.Contains(stderr, "LopNr 17 of project p1") {
		t.Errorf("reidentify get: stderr %q", stderr)
	}
}

func TestClientKeysSweep(t *testing.T) {
	clientEnv(t)
	f := startFake(t)
	out, stderr, code := runLopnr(t, "", f.dev("keys", "sweep")...)
	f.last(t, "Sweep")
	if code != 0 || !strings.Contains(stderr, "lopnrd "+f.addr+": 2 project(s) destroyed") {
		t.Fatalf("keys sweep: exit %d: %s", code, stderr)
	}
	dec := json.NewDecoder(strings.NewReader(out))
	for _, want := range []keystore.Receipt{{Project: "p0", DestroyedAt: t0, Paths: 5, Mappings: 100, Digest: "sha256:aa"},
		{Project: "p9", DestroyedAt: t0, Paths: 5, Mappings: 200, Digest: "sha256:bb"}} {
		var r keystore.Receipt
		if err := dec.Decode(&r); err != nil || r.Project != want.Project || r.Mappings != want.Mappings || r.Digest != want.Digest || !r.DestroyedAt.Equal(t0) {
			t.Errorf("receipt %+v (%v), want %+v", r, err, want)
		}
	}
	// --keystore on the command line sweeps the local store even with a
	// server in the environment.
	t.Setenv("LOPNR_SERVER", f.addr)
	t.Setenv("LOPNR_DEV", "true")
	t.Setenv("LOPNR_VAULT_ADDR", "")
	t.Setenv("VAULT_ADDR", "")
	_, stderr, code = runLopnr(t, "", "keys", "sweep", "--keystore", filepath.Join(t.TempDir(), "ks"))
	if code != 0 || !strings.Contains(stderr, "local key store") || f.count("Sweep") != 1 {
		t.Errorf("keys sweep --keystore: exit %d, %d server sweeps: %s", code, f.count("Sweep"), stderr)
	}
}

func TestClientAudit(t *testing.T) {
	clientEnv(t)
	f := startFake(t)
	out, stderr, code := runLopnr(t, "", f.dev("audit", "list", "--project", "p1", "--after", "10", "--limit", "2")...)
	f.wantReq(t, &lopnrv1.ListAuditRequest{Project: "p1", After: 10, Limit: 2})
	if code != 0 {
		t.Fatalf("audit list: exit %d: %s", code, stderr)
	}
	mustMatch(t, "audit list", `(?m)^SEQ\s+TIME\s+IDENTITY\s+ACTION\s+PROJECT\s+JOB\s+OUTCOME\s+REASON$`, out)
	mustMatch(t, "audit list", `(?m)^11\s+2025-03-01 10:00 UTC\s+uttag@region.example\s+job.submit\s+p1\s+j-1\s+ok\s+-$`, out)
	mustMatch(t, "audit list", `(?m)^12\s+2025-03-01 10:01 UTC\s+godkannare\s+project.hold\s+p1\s+-\s+ok\s+IVO inquiry$`, out)
	if !strings.Contains(stderr, "--after 12") {
		t.Errorf("a full page does not say how to get the next: %q", stderr)
	}

	name := "the audit log of lopnrd " + f.addr
	for _, tc := range []struct {
		head, want string
		code       int
	}{
		{"", name + ": 12 entries, chain intact; head 12:abc123", 0},
		{"12:abc123", name + ": 12 entries, chain intact; head 12:abc123", 0},
		{"12:fff", "entry 12 does not match the pinned head (rewritten)", 1},
		{"13:abc123", "the log ends at entry 12, the pinned head is entry 13 (truncated)", 1},
	} {
		args := f.dev("audit", "verify")
		if tc.head != "" {
			args = append(args, "--head", tc.head)
		}
		out, stderr, code := runLopnr(t, "", args...)
		if code != tc.code || !strings.Contains(out+stderr, tc.want) {
			t.Errorf("audit verify --head %q: exit %d: %s%s", tc.head, code, out, stderr)
		}
	}
	f.set(func(f *fakeServer) {
		f.verify = &lopnrv1.VerifyAuditResponse{Ok: false, HeadSeq: 6, Problem: "line 7 (entry 7): altered"}
	})
	if out, stderr, code := runLopnr(t, "", f.dev("audit", "verify")...); code != 1 || out != "" ||
		!strings.Contains(stderr, name+": audit log tampered: line 7 (entry 7): altered") {
		t.Errorf("audit verify of a broken chain: exit %d: %s%s", code, out, stderr)
	}
	if n := f.count("VerifyAudit"); n != 5 {
		t.Errorf("the server verified %d times, want 5", n)
	}
}

func TestClientMutualTLS(t *testing.T) {
	cfgDir := clientEnv(t)
	dir := t.TempDir()
	ca := testpki.NewCA(t)
	ca.WriteCA(t, dir)
	serverCert := ca.Issue(t, "lopnrd", true)
	testpki.WriteKeyPair(t, dir, "client", ca.Issue(t, "uttag@region.example", false))
	testpki.WriteKeyPair(t, dir, "stranger", testpki.NewCA(t).Issue(t, "stranger", false))

	f := startFake(t, grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientCAs:    ca.Pool(),
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	})))
	files := func(name string) []string {
		return []string{"--server", f.addr, "--cert", filepath.Join(dir, name+".pem"), "--key", filepath.Join(dir, name+"-key.pem"), "--ca", filepath.Join(dir, "ca.pem")}
	}
	out, stderr, code := runLopnr(t, "", append([]string{"projects", "list"}, files("client")...)...)
	if code != 0 || !strings.Contains(out, "p1") {
		t.Fatalf("projects list over mutual TLS: exit %d: %s", code, stderr)
	}
	if c := f.last(t, "ListProjects"); c.cn != "uttag@region.example" || c.tls != tls.VersionTLS13 {
		t.Errorf("the server saw client %q over TLS %x", c.cn, c.tls)
	}

	// The same from the config file, with paths relative to it.
	os.MkdirAll(filepath.Join(cfgDir, "lopnr"), 0o700)
	for _, name := range []string{"ca.pem", "client.pem", "client-key.pem"} {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		os.WriteFile(filepath.Join(cfgDir, "lopnr", name), b, 0o600)
	}
	os.WriteFile(filepath.Join(cfgDir, "lopnr", "client.yaml"), []byte("server: "+f.addr+"\ncert: client.pem\nkey: client-key.pem\nca: ca.pem\n"), 0o600)
	if _, stderr, code := runLopnr(t, "", "projects", "list"); code != 0 || f.count("ListProjects") != 2 {
		t.Errorf("mutual TLS from the config file: exit %d: %s", code, stderr)
	}
	os.Remove(filepath.Join(cfgDir, "lopnr", "client.yaml"))

	// Refused: a certificate from another CA, no --ca (the system's CAs do
	// not know the test CA), and plaintext.
	calls := f.count("")
	noCA := files("client")[:6]
	for _, args := range [][]string{files("stranger"), noCA, {"--server", f.addr, "--dev"}} {
		if _, stderr, code := runLopnr(t, "", append([]string{"projects", "list"}, args...)...); code != 1 || !strings.Contains(stderr, "Unavailable") {
			t.Errorf("projects list %v: exit %d: %s", args, code, stderr)
		}
	}
	if f.count("") != calls {
		t.Error("the server answered a client it should have refused")
	}
}

func TestClientUsage(t *testing.T) {
	_, stderr, code := runLopnr(t, "", "help")
	if code != 0 {
		t.Fatalf("help: exit %d", code)
	}
	for _, c := range []string{"projects", "submit", "watch", "jobs", "cancel", "deliveries", "release", "presign", "keys", "audit"} {
		mustMatch(t, "usage", `(?m)^  `+c+`\s+\S`, stderr)
	}
	for _, tc := range []struct {
		args       []string
		connection bool // lists the connection flags
	}{
		{[]string{"projects", "-h"}, false}, {[]string{"keys", "-h"}, false}, {[]string{"keys", "reidentify", "-h"}, false}, {[]string{"audit", "-h"}, false},
		{[]string{"projects", "create", "-h"}, true}, {[]string{"projects", "get", "-h"}, true}, {[]string{"projects", "list", "-h"}, true},
		{[]string{"projects", "extend", "-h"}, true}, {[]string{"projects", "hold", "-h"}, true}, {[]string{"projects", "destroy", "-h"}, true},
		{[]string{"projects", "propose", "-h"}, true}, {[]string{"projects", "approve", "-h"}, true}, {[]string{"projects", "changes", "-h"}, true},
		{[]string{"partners", "-h"}, false}, {[]string{"partners", "register", "-h"}, true}, {[]string{"partners", "list", "-h"}, true},
		{[]string{"partner", "-h"}, false}, {[]string{"partner", "keyfile", "-h"}, false},
		{[]string{"partner", "keyfile", "request", "-h"}, true}, {[]string{"partner", "keyfile", "approve", "-h"}, true},
		{[]string{"partner", "keyfile", "get", "-h"}, true}, {[]string{"partner", "keyfile", "list", "-h"}, true},
		{[]string{"partner", "blind", "-h"}, true}, {[]string{"partner", "upload", "-h"}, true},
		{[]string{"submit", "-h"}, true}, {[]string{"watch", "-h"}, true}, {[]string{"jobs", "-h"}, true}, {[]string{"jobs", "get", "-h"}, true},
		{[]string{"cancel", "-h"}, true}, {[]string{"deliveries", "-h"}, true}, {[]string{"release", "-h"}, true}, {[]string{"presign", "-h"}, true},
		{[]string{"keys", "sweep", "-h"}, true}, {[]string{"keys", "extend", "-h"}, true}, {[]string{"keys", "hold", "-h"}, true},
		{[]string{"keys", "reidentify", "request", "-h"}, true}, {[]string{"keys", "reidentify", "approve", "-h"}, true}, {[]string{"keys", "reidentify", "get", "-h"}, true},
		{[]string{"audit", "list", "-h"}, true}, {[]string{"audit", "verify", "-h"}, true},
	} {
		_, stderr, code := runLopnr(t, "", tc.args...)
		if code != 0 || !strings.Contains(stderr, "Usage: lopnr") {
			t.Errorf("%v: exit %d: %s", tc.args, code, stderr)
		}
		if tc.connection && !strings.Contains(stderr, "-server HOST:PORT") {
			t.Errorf("%v: the connection flags are not listed:\n%s", tc.args, stderr)
		}
	}
}
