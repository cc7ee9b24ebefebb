package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lopnr/lopnr/keystore"
	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
)

// runJob submits a spec as who and waits for the job's end.
func (f *fixture) runJobAs(who string, spec []byte) *lopnrv1.Job {
	f.t.Helper()
	jobs := lopnrv1.NewJobServiceClient(f.conn(who))
	j, err := jobs.SubmitJob(ctx(f.t), &lopnrv1.SubmitJobRequest{Spec: spec})
	if err != nil {
		f.t.Fatalf("SubmitJob: %v", err)
	}
	return f.wait(who, j.Id)
}

// wait follows a job to its end and returns it.
func (f *fixture) wait(who, id string) *lopnrv1.Job {
	f.t.Helper()
	jobs := lopnrv1.NewJobServiceClient(f.conn(who))
	w, err := jobs.WatchJob(ctx(f.t), &lopnrv1.WatchJobRequest{Id: id})
	if err != nil {
		f.t.Fatal(err)
	}
	for _, err := w.Recv(); err == nil; _, err = w.Recv() {
	}
	j, err := jobs.GetJob(ctx(f.t), &lopnrv1.GetJobRequest{Id: id})
	if err != nil {
		f.t.Fatal(err)
	}
	return j
}

// TestExtractorCannotSetTheirOwnRules replays finding 3 of issue 15: an
// extractor creates a project with their own age key as its recipient and
// allow_personnummer, and submits a job. The job is refused until a second
// person approves the rules; the extractor cannot approve them, nor can an
// approver approve a change they proposed; and a proposed change is not
// used until it is approved.
func TestExtractorCannotSetTheirOwnRules(t *testing.T) {
	f := newFixture(t, false)
	spec, _ := f.generate(60)
	own := researcherKey(t) // the extractor's own key
	anna := lopnrv1.NewProjectServiceClient(f.conn("anna"))
	p, err := anna.CreateProject(ctx(t), &lopnrv1.CreateProjectRequest{Id: "p1", EpmDnr: "2026-00000-01",
		ApprovedVariables: approvedVariables(t), ApprovedSources: approvedSources(t), AllowPersonnummer: true, Recipients: []string{own.Recipient().String()}})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Recipients) != 0 || p.AllowPersonnummer || len(p.ApprovedVariables) != 0 || !slices.Equal(p.PendingChanges, []string{"c1"}) {
		t.Fatalf("a new project: recipients %v, allow_personnummer %v, %d approved variables, pending %v; want no approved rules and c1 pending",
			p.Recipients, p.AllowPersonnummer, len(p.ApprovedVariables), p.PendingChanges)
	}
	jobs := lopnrv1.NewJobServiceClient(f.conn("anna"))
	_, err = jobs.SubmitJob(ctx(t), &lopnrv1.SubmitJobRequest{Spec: spec})
	wantCode(t, "a job before a second person approved the rules", err, codes.FailedPrecondition, "no approved rules yet")
	_, err = anna.ApproveChange(ctx(t), &lopnrv1.ApproveChangeRequest{Project: "p1", Id: "c1"})
	wantCode(t, "the extractor approving her own rules", err, codes.PermissionDenied, "project.approve")

	// An approver who proposes rules cannot approve them either.
	bo := lopnrv1.NewProjectServiceClient(f.conn("bo"))
	other := researcherKey(t)
	c2, err := bo.ProposeChange(ctx(t), &lopnrv1.ProposeChangeRequest{Project: "p1", Reason: "the researchers' new key",
		Rules: &lopnrv1.ProjectRules{ApprovedVariables: approvedVariables(t), ApprovedSources: approvedSources(t), AllowPersonnummer: true, Recipients: []string{other.Recipient().String()}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = bo.ApproveChange(ctx(t), &lopnrv1.ApproveChangeRequest{Project: "p1", Id: c2.Id})
	wantCode(t, "an approver approving a change he proposed", err, codes.PermissionDenied, "not the one who proposed it")

	// A second person approves the first rules: jobs run with them.
	c1, err := bo.ApproveChange(ctx(t), &lopnrv1.ApproveChangeRequest{Project: "p1", Id: "c1"})
	if err != nil || c1.State != lopnrv1.ChangeState_CHANGE_STATE_APPROVED || c1.ApprovedBy != "CN=bo,O=Region Test" {
		t.Fatalf("the second person's approval: %v, %v", c1, err)
	}
	_, err = bo.ApproveChange(ctx(t), &lopnrv1.ApproveChangeRequest{Project: "p1", Id: "c1"})
	wantCode(t, "approving twice", err, codes.FailedPrecondition, "was approved by")
	// The pending change's recipient is not the project's yet.
	_, err = jobs.SubmitJob(ctx(t), &lopnrv1.SubmitJobRequest{Spec: append(bytes.Clone(spec), "recipients: ["+other.Recipient().String()+"]\n"...)})
	wantCode(t, "a job to a recipient still pending", err, codes.InvalidArgument, "one of the project's registered recipients")
	if j := f.runJobAs("anna", spec); j.State != lopnrv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("a job under approved rules: %v %s", j.State, j.Error)
	}

	changes, err := lopnrv1.NewProjectServiceClient(f.conn("revisor")).ListChanges(ctx(t), &lopnrv1.ListChangesRequest{Project: "p1"})
	if err != nil || len(changes.Changes) != 2 || changes.Changes[0].State != lopnrv1.ChangeState_CHANGE_STATE_APPROVED ||
		changes.Changes[1].State != lopnrv1.ChangeState_CHANGE_STATE_PENDING || changes.Changes[1].Rules.GetRecipients()[0] != other.Recipient().String() {
		t.Fatalf("ListChanges: %v, %v; want c1 approved and c2 pending", changes, err)
	}
	_, err = lopnrv1.NewProjectServiceClient(f.conn("forskare")).ListChanges(ctx(t), &lopnrv1.ListChangesRequest{Project: "p1"})
	wantCode(t, "a researcher listing changes", err, codes.PermissionDenied, "project.changes")

	// Both steps are audited, with what changed in counts.
	entries, err := lopnrv1.NewAuditServiceClient(f.conn("revisor")).ListAudit(ctx(t), &lopnrv1.ListAuditRequest{Project: "p1"})
	if err != nil {
		t.Fatal(err)
	}
	var proposed, approved, refused bool
	for _, e := range entries.Entries {
		proposed = proposed || e.Action == "project.propose" && e.Outcome == "ok" && strings.Contains(e.Reason, "change c2 proposed: 6 approved variables (6 added, 0 removed), allow_personnummer true (was false), 1 recipients (1 added, 0 removed); reason: the researchers' new key")
		approved = approved || e.Action == "project.approve" && e.Outcome == "ok" && e.Identity == "CN=bo,O=Region Test" && strings.Contains(e.Reason, "change c1 proposed by CN=anna,O=Region Test approved")
		refused = refused || e.Action == "project.approve" && e.Outcome == "denied" && e.Identity == "CN=anna,O=Region Test"
	}
	if !proposed || !approved || !refused {
		t.Errorf("audit: proposal %v, approval %v, the extractor's refused approval %v; want all", proposed, approved, refused)
	}
}

// partnerProject makes p1 with approved rules (scb.INKOMST among them) and
// a kodnyckel of the generated cohort.
func (f *fixture) partnerProject() {
	f.t.Helper()
	spec, _ := f.generate(200)
	if _, err := lopnrv1.NewProjectServiceClient(f.conn("drift")).CreateProject(ctx(f.t), &lopnrv1.CreateProjectRequest{Id: "p1",
		EpmDnr: "2026-00000-01", ApprovedVariables: append(approvedVariables(f.t), &lopnrv1.ApprovedVariable{Source: "scb", Column: "INKOMST"}), ApprovedSources: append(approvedSources(f.t), &lopnrv1.ApprovedSource{Name: "scb", Profile: "partner-import"}),
		Recipients: []string{researcherKey(f.t).Recipient().String()}}); err != nil {
		f.t.Fatal(err)
	}
	f.approve("p1", "bo")
	if j := f.runJobAs("anna", spec); j.State != lopnrv1.JobState_JOB_STATE_SUCCEEDED {
		f.t.Fatalf("job: %v %s", j.State, j.Error)
	}
}

// register proposes a partner's registration as bo and has cecilia
// approve it.
func (f *fixture) register(identity string, recipient string, budget int64, exchanges ...string) {
	f.t.Helper()
	if _, err := lopnrv1.NewPartnerServiceClient(f.conn("bo")).RegisterPartner(ctx(f.t), &lopnrv1.RegisterPartnerRequest{Project: "p1",
		Identity: identity, Recipient: recipient, EvaluateBudget: budget, Exchanges: exchanges, Reason: "the agreement of 2026-03-01"}); err != nil {
		f.t.Fatal(err)
	}
	f.approve("p1", "cecilia")
}

// keyFile fetches a key file as a partner and returns the stream's error.
func keyFile(t *testing.T, c lopnrv1.PartnerServiceClient, grant string) ([]byte, error) {
	st, err := c.GetKeyFile(ctx(t), &lopnrv1.GetKeyFileRequest{Project: "p1", Grant: grant})
	if err != nil {
		return nil, err
	}
	var b []byte
	for {
		chunk, err := st.Recv()
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return nil, err
		}
		b = append(b, chunk.Data...)
	}
}

// TestPartnerCannotGetTheKeyFileOnOneApproversWord replays finding 4 of
// issue 15: a partner registered with an Evaluate budget of 0 got the whole
// kodnyckel, and registering a partner again replaced its recipient key.
// Now the registration names its exchanges, a key file needs a grant per
// file approved by a second person, used once, and a registration is never
// replaced.
func TestPartnerCannotGetTheKeyFileOnOneApproversWord(t *testing.T) {
	f := newFixture(t, false)
	f.partnerProject()
	scbKey, _ := age.GenerateX25519Identity()
	sosKey, _ := age.GenerateX25519Identity()
	f.register("CN=scb,O=Region Test", scbKey.Recipient().String(), 0, "blind")
	f.register("CN=sos,O=Region Test", sosKey.Recipient().String(), 0, "keyfile")
	scb, sos := lopnrv1.NewPartnerServiceClient(f.conn("scb")), lopnrv1.NewPartnerServiceClient(f.conn("sos"))

	// The partner: budget 0, no key-file exchange.
	_, err := keyFile(t, scb, "")
	wantCode(t, "a partner without the keyfile exchange", err, codes.PermissionDenied, "not registered for the keyfile exchange")
	_, err = scb.RequestKeyFile(ctx(t), &lopnrv1.RequestKeyFileRequest{Project: "p1", Reason: "we want it all"})
	wantCode(t, "a partner without the keyfile exchange asking", err, codes.PermissionDenied, "not registered for the keyfile exchange")

	// A partner with the exchange but no approved grant.
	_, err = keyFile(t, sos, "")
	wantCode(t, "a key file without a grant", err, codes.InvalidArgument, "grant")
	g, err := sos.RequestKeyFile(ctx(t), &lopnrv1.RequestKeyFileRequest{Project: "p1", Reason: "linking the cause-of-death register"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = keyFile(t, sos, g.Id)
	wantCode(t, "a key file on a grant not approved", err, codes.FailedPrecondition, "waits for a second person")
	_, err = lopnrv1.NewPartnerServiceClient(f.conn("bo")).ApproveKeyFile(ctx(t), &lopnrv1.ApproveKeyFileRequest{Project: "p1", Id: g.Id})
	wantCode(t, "the grant approved by who proposed the partner", err, codes.PermissionDenied, "not the one who proposed its registration")
	_, err = sos.ApproveKeyFile(ctx(t), &lopnrv1.ApproveKeyFileRequest{Project: "p1", Id: g.Id})
	wantCode(t, "the partner approving its own grant", err, codes.PermissionDenied, "key.keyfile-approve")
	_, err = keyFile(t, scb, g.Id)
	wantCode(t, "another partner using the grant", err, codes.PermissionDenied, "not registered for the keyfile exchange")
	if _, err := lopnrv1.NewPartnerServiceClient(f.conn("cecilia")).ApproveKeyFile(ctx(t), &lopnrv1.ApproveKeyFileRequest{Project: "p1", Id: g.Id}); err != nil {
		t.Fatal(err)
	}
	enc, err := keyFile(t, sos, g.Id)
	if err != nil {
		t.Fatalf("the key file on an approved grant: %v", err)
	}
	r, err := age.Decrypt(bytes.NewReader(enc), sosKey)
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(r)
	if persons, _ := f.srv.cfg.Keys.Persons(context.Background(), "p1"); int64(bytes.Count(plain, []byte("\n"))-1) != persons {
		t.Errorf("the key file has %d lines, want one per person (%d)", bytes.Count(plain, []byte("\n"))-1, persons)
	}
	_, err = keyFile(t, sos, g.Id)
	wantCode(t, "a grant used twice", err, codes.FailedPrecondition, "was used")
	grants, err := sos.ListKeyFileGrants(ctx(t), &lopnrv1.ListKeyFileGrantsRequest{Project: "p1"})
	if err != nil || len(grants.Grants) != 1 || grants.Grants[0].Used == nil || grants.Grants[0].ApprovedBy != "CN=cecilia,O=Region Test" {
		t.Errorf("the partner's grants: %v, %v", grants, err)
	}

	// Registering over an existing partner with the attacker's own key is
	// refused, and the partner's key stays.
	attacker, _ := age.GenerateX25519Identity()
	_, err = lopnrv1.NewPartnerServiceClient(f.conn("cecilia")).RegisterPartner(ctx(t), &lopnrv1.RegisterPartnerRequest{Project: "p1",
		Identity: "CN=sos,O=Region Test", Recipient: attacker.Recipient().String(), Exchanges: []string{"keyfile"}, Reason: "a new key for SoS"})
	wantCode(t, "a registration over an existing partner", err, codes.AlreadyExists, "is registered on project p1 already")
	list, err := lopnrv1.NewPartnerServiceClient(f.conn("bo")).ListPartners(ctx(t), &lopnrv1.ListPartnersRequest{Project: "p1"})
	if err != nil || len(list.Partners) != 2 || list.Partners[1].Recipient != sosKey.Recipient().String() || list.Partners[1].ApprovedBy != "CN=cecilia,O=Region Test" {
		t.Errorf("partners after the attempt: %v, %v; want SoS with its own key, approved by cecilia", list, err)
	}
}

// pseudonymOf is the OPRF pseudonym of a canonical number in p1.
func (f *fixture) pseudonymOf(canonical string) string {
	f.t.Helper()
	key, err := f.srv.projectKey(context.Background(), "p1")
	if err != nil {
		f.t.Fatal(err)
	}
	p, err := key.Pseudonym(canonical)
	if err != nil {
		f.t.Fatal(err)
	}
	return p
}

// TestPartnerCannotLearnCohortMembershipFromUploads replays finding 5 of
// issue 15: a one-row upload keyed by one person's pseudonym told the
// partner, by its matched count, whether that person is in the cohort.
// Now a member's row and a non-member's row get the same answer; the
// counts reach the extraction team (the job's report, the audit log),
// whose jobs the partner cannot read.
func TestPartnerCannotLearnCohortMembershipFromUploads(t *testing.T) {
	f := newFixtureWith(t, false, testPolicy, func(c *Config) { c.ImportRowsPerDay, c.ImportMaxLine = 6, 200 })
	scb, keys := f.blindPartner()

	cohort, outsider := f.cohortAndOutsider()
	enc := func(plain string) []byte {
		var b bytes.Buffer
		r, _ := age.ParseRecipients(strings.NewReader(keys.ServiceRecipient))
		w, _ := age.Encrypt(&b, r...)
		io.WriteString(w, plain)
		w.Close()
		return b.Bytes()
	}
	h := &lopnrv1.ImportHeader{Project: "p1", Source: "scb", KeyedBy: lopnrv1.KeyedBy_KEYED_BY_PSEUDONYM, IdentityColumn: "PSEUDONYM",
		Variables: []*lopnrv1.ImportVariable{{Column: "INKOMST"}}}
	member, err := upload(t, scb, h, enc("PSEUDONYM;INKOMST\n"+f.pseudonymOf(cohort[0])+";100\n"))
	if err != nil {
		t.Fatal(err)
	}
	nonMember, err := upload(t, scb, h, enc("PSEUDONYM;INKOMST\n"+f.pseudonymOf(outsider)+";100\n"))
	if err != nil {
		t.Fatal(err)
	}
	if member.Job == "" || nonMember.Job == "" {
		t.Fatalf("uploads: %v, %v; want a job each", member, nonMember)
	}
	mJob, nJob := member.Job, nonMember.Job
	member.Job, nonMember.Job = "", ""
	if !proto.Equal(member, nonMember) {
		t.Errorf("a member's row is answered %v, a non-member's %v: the partner tells them apart", member, nonMember)
	}
	// The index of the cohort's pseudonyms was built once, not per upload.
	if ix := f.srv.cohort.of("p1"); ix.computed != int64(len(cohort)) {
		t.Errorf("computed %d pseudonyms for two uploads, want the cohort's %d once", ix.computed, len(cohort))
	}

	// The partner cannot read the jobs that hold the counts.
	pj := lopnrv1.NewJobServiceClient(f.conn("scb"))
	_, err = pj.GetJob(ctx(t), &lopnrv1.GetJobRequest{Id: mJob})
	wantCode(t, "the partner reading its import's job", err, codes.PermissionDenied, "job.get")
	_, err = pj.ListJobs(ctx(t), &lopnrv1.ListJobsRequest{Project: "p1"})
	wantCode(t, "the partner listing the project's jobs", err, codes.PermissionDenied, "job.list")
	_, err = pj.ListJobs(ctx(t), &lopnrv1.ListJobsRequest{})
	wantCode(t, "the partner listing every job", err, codes.PermissionDenied, "job.list")
	_, err = pj.WatchJob(ctx(t), &lopnrv1.WatchJobRequest{Id: mJob})
	if err == nil {
		w, _ := pj.WatchJob(ctx(t), &lopnrv1.WatchJobRequest{Id: mJob})
		_, err = w.Recv()
	}
	wantCode(t, "the partner watching its import's job", err, codes.PermissionDenied, "job.get")
	// The extraction team has them.
	if j := f.wait("anna", mJob); !strings.Contains(j.Report, "1 rows received, 1 of them of 1 of the project's persons, 0 matched nobody") {
		t.Errorf("the member's import report: %q", j.Report)
	}
	if j := f.wait("anna", nJob); !strings.Contains(j.Report, "1 rows received, 0 of them of 0 of the project's persons, 1 matched nobody") {
		t.Errorf("the non-member's import report: %q", j.Report)
	}

	// Bounds: a line longer than the limit, named; the day's rows.
	_, err = upload(t, scb, h, enc("PSEUDONYM;INKOMST\n"+f.pseudonymOf(cohort[1])+";"+strings.Repeat("9", 300)+"\n"))
	wantCode(t, "a line too long", err, codes.InvalidArgument, "lines of at most 200 bytes (line 2 is longer)")
	_, err = upload(t, scb, h, enc("PSEUDONYM;INKOMST\n"+strings.Repeat(f.pseudonymOf(outsider)+";1\n", 5)))
	wantCode(t, "more rows than the day's budget", err, codes.ResourceExhausted, "upload budget of 6 rows a day in project p1 is used up: 4 rows are left today")
}

// TestAuthorisationEdges replays the rest of finding 10 of issue 15: a
// project auditor saw audit entries of no project, a partner saw whole
// project records through ListProjects, and the reasons of retention
// extensions and holds reached researchers.
func TestAuthorisationEdges(t *testing.T) {
	f := newFixtureWith(t, false, testPolicy+`  "CN=projektrevisor,O=Region Test": {roles: {p1: [auditor]}}
  "CN=projektdrift,O=Region Test": {roles: {p1: [admin]}}
`, nil)
	researcher := researcherKey(t)
	if _, err := lopnrv1.NewProjectServiceClient(f.conn("drift")).CreateProject(ctx(t), &lopnrv1.CreateProjectRequest{Id: "p1",
		EpmDnr: "2026-00000-01", ApprovedVariables: approvedVariables(t), ApprovedSources: approvedSources(t), Recipients: []string{researcher.Recipient().String()}}); err != nil {
		t.Fatal(err)
	}
	f.approve("p1", "bo")
	approver := lopnrv1.NewProjectServiceClient(f.conn("bo"))
	if _, err := approver.SetHold(ctx(t), &lopnrv1.SetHoldRequest{Id: "p1", Hold: true, Reason: "a complaint about the researcher"}); err != nil {
		t.Fatal(err)
	}
	if _, err := lopnrv1.NewKeyServiceClient(f.conn("drift")).Sweep(ctx(t), &lopnrv1.SweepRequest{}); err != nil {
		t.Fatal(err) // an entry of no project
	}

	// A project admin sweeping every project; a project auditor verifying
	// or reading the whole log.
	_, err := lopnrv1.NewKeyServiceClient(f.conn("projektdrift")).Sweep(ctx(t), &lopnrv1.SweepRequest{})
	wantCode(t, "an admin of p1 sweeping", err, codes.PermissionDenied, "needs a global role")
	pa := lopnrv1.NewAuditServiceClient(f.conn("projektrevisor"))
	_, err = pa.VerifyAudit(ctx(t), &lopnrv1.VerifyAuditRequest{})
	wantCode(t, "an auditor of p1 verifying the whole log", err, codes.PermissionDenied, "needs a global role")
	_, err = pa.ListAudit(ctx(t), &lopnrv1.ListAuditRequest{})
	wantCode(t, "an auditor of p1 reading the whole log", err, codes.PermissionDenied, "needs a global role")
	entries, err := pa.ListAudit(ctx(t), &lopnrv1.ListAuditRequest{Project: "p1"})
	if err != nil || len(entries.Entries) == 0 {
		t.Fatalf("the project auditor's own project: %v, %v", entries, err)
	}
	for _, e := range entries.Entries {
		if e.Project != "p1" {
			t.Errorf("the auditor of p1 sees an entry of project %q: %v", e.Project, e)
		}
	}
	all, err := lopnrv1.NewAuditServiceClient(f.conn("revisor")).ListAudit(ctx(t), &lopnrv1.ListAuditRequest{})
	if err != nil || !slices.ContainsFunc(all.Entries, func(e *lopnrv1.AuditEntry) bool { return e.Project == "" && e.Action == "key.sweep" }) {
		t.Errorf("the global auditor does not see the sweep (an entry of no project): %v", err)
	}

	// A partner sees only the project's id.
	f.register("CN=scb,O=Region Test", researcherKey(t).Recipient().String(), 0, "keyfile")
	list, err := lopnrv1.NewProjectServiceClient(f.conn("scb")).ListProjects(ctx(t), &lopnrv1.ListProjectsRequest{})
	if err != nil || len(list.Projects) != 1 || !proto.Equal(list.Projects[0], &lopnrv1.Project{Id: "p1"}) {
		t.Errorf("the partner's ListProjects: %v, %v; want the id of p1 and nothing else", list, err)
	}
	_, err = lopnrv1.NewProjectServiceClient(f.conn("scb")).GetProject(ctx(t), &lopnrv1.GetProjectRequest{Id: "p1"})
	wantCode(t, "the partner's GetProject", err, codes.PermissionDenied, "project.get")

	// The reasons of holds and extensions reach neither researchers nor
	// extractors; approvers and auditors see them.
	if _, err := approver.ExtendRetention(ctx(t), &lopnrv1.ExtendRetentionRequest{Id: "p1", RetainUntil: timestamppb.New(time.Now().AddDate(1, 0, 0)),
		Reason: "the complaint needs a year"}); err != nil {
		t.Fatal(err)
	}
	for who, sees := range map[string]bool{"forskare": false, "anna": false, "bo": true, "revisor": true} {
		p, err := lopnrv1.NewProjectServiceClient(f.conn(who)).GetProject(ctx(t), &lopnrv1.GetProjectRequest{Id: "p1"})
		if err != nil {
			t.Fatal(err)
		}
		text := p.HoldReason
		for _, c := range p.Changes {
			text += c.Reason
		}
		if got := strings.Contains(text, "complaint"); got != sees || !p.Hold || len(p.Changes) == 0 {
			t.Errorf("%s sees the hold's reason %v (hold %v, %d changes), want %v", who, got, p.Hold, len(p.Changes), sees)
		}
		l, err := lopnrv1.NewProjectServiceClient(f.conn(who)).ListProjects(ctx(t), &lopnrv1.ListProjectsRequest{})
		if err != nil || len(l.Projects) != 1 || strings.Contains(l.Projects[0].HoldReason, "complaint") != sees {
			t.Errorf("%s's ListProjects: %v, %v", who, l, err)
		}
	}
}

// TestNothingOfADestroyedProjectIsLeft: after DestroyProject the data
// directory holds nothing of the project beyond what the receipt needs:
// no rules or recipients, no partner identities or keys, no job spec, no
// report, no reason (finding 11 of issue 15).
func TestNothingOfADestroyedProjectIsLeft(t *testing.T) {
	f := newFixture(t, false)
	f.partnerProject()
	scbKey, _ := age.GenerateX25519Identity()
	f.register("CN=scb,O=Region Test", scbKey.Recipient().String(), 0, "keyfile", "import")
	if _, err := lopnrv1.NewPartnerServiceClient(f.conn("scb")).RequestKeyFile(ctx(t), &lopnrv1.RequestKeyFileRequest{Project: "p1", Reason: "grant reason xyzzy"}); err != nil {
		t.Fatal(err)
	}
	if _, err := lopnrv1.NewKeyServiceClient(f.conn("bo")).RequestReidentification(ctx(t), &lopnrv1.RequestReidentificationRequest{Project: "p1",
		RunNumber: 3, Reason: "reidentification reason plugh"}); err != nil {
		t.Fatal(err)
	}
	keys, err := lopnrv1.NewPartnerServiceClient(f.conn("scb")).GetPartnerKeys(ctx(t), &lopnrv1.GetPartnerKeysRequest{Project: "p1"})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	r, _ := age.ParseRecipients(strings.NewReader(keys.ServiceRecipient))
	w, _ := age.Encrypt(&b, r...)
	io.WriteString(w, "LopNr;INKOMST\n1;100\n2;200\n")
	w.Close()
	res, err := upload(t, lopnrv1.NewPartnerServiceClient(f.conn("scb")), &lopnrv1.ImportHeader{Project: "p1", Source: "scb",
		KeyedBy: lopnrv1.KeyedBy_KEYED_BY_LOPNR, IdentityColumn: "LopNr", Variables: []*lopnrv1.ImportVariable{{Column: "INKOMST"}}}, b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	imported := f.wait("anna", res.Job)
	if imported.State != lopnrv1.JobState_JOB_STATE_SUCCEEDED || imported.Report == "" {
		t.Fatalf("the import's job: %v %s", imported.State, imported.Error)
	}
	p, err := lopnrv1.NewProjectServiceClient(f.conn("bo")).GetProject(ctx(t), &lopnrv1.GetProjectRequest{Id: "p1"})
	if err != nil {
		t.Fatal(err)
	}
	// What must go: the recipients, the partner's identity and key, the
	// report, the reasons, the rules; and the job specs (base64 in the
	// job records, checked below).
	report := strings.Split(strings.TrimSpace(imported.Report), "\n")
	gone := []string{p.Recipients[0], "CN=scb", scbKey.Recipient().String(), "INKOMST",
		report[len(report)-1], "xyzzy", "plugh", "the agreement of 2026-03-01"}
	present := func() map[string][]string {
		found := map[string][]string{}
		filepath.WalkDir(f.srv.cfg.DataDir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, _ := os.ReadFile(path)
			for _, g := range gone {
				if bytes.Contains(b, []byte(g)) {
					found[g] = append(found[g], strings.TrimPrefix(path, f.srv.cfg.DataDir))
				}
			}
			if strings.Contains(path, "/jobs/") {
				var j struct{ Record struct{ Spec []byte } } // a sealed job record
				if json.Unmarshal(b, &j) == nil && len(j.Record.Spec) > 0 {
					found["a job spec"] = append(found["a job spec"], strings.TrimPrefix(path, f.srv.cfg.DataDir))
				}
			}
			return nil
		})
		return found
	}
	if before := present(); len(before) != len(gone)+1 {
		t.Fatalf("before the destruction the data directory holds only %v of %q and the specs: the test would prove nothing", before, gone)
	}

	receipt, err := lopnrv1.NewProjectServiceClient(f.conn("bo")).DestroyProject(ctx(t), &lopnrv1.DestroyProjectRequest{Id: "p1", Reason: "the study has ended"})
	if err != nil {
		t.Fatal(err)
	}
	for g, where := range present() {
		t.Errorf("after the destruction %q is still in %v", g, where)
	}
	// What stays: the project, its jobs and deliveries by id and date,
	// counts.
	p, err = lopnrv1.NewProjectServiceClient(f.conn("bo")).GetProject(ctx(t), &lopnrv1.GetProjectRequest{Id: "p1"})
	if err != nil || p.Destroyed == nil || !p.Destroyed.AsTime().Equal(receipt.DestroyedAt.AsTime()) || p.EpmDnr != "2026-00000-01" {
		t.Errorf("the destroyed project: %v, %v; want its id, EPM dnr and date of destruction", p, err)
	}
	j, err := lopnrv1.NewJobServiceClient(f.conn("anna")).GetJob(ctx(t), &lopnrv1.GetJobRequest{Id: res.Job})
	if err != nil || j.State != lopnrv1.JobState_JOB_STATE_SUCCEEDED || j.Delivery == "" || len(j.Spec) != 0 || !strings.Contains(j.Report, "2 rows received, 2 of them of 2 of the project's persons") {
		t.Errorf("the import job after destruction: %v, %v; want its state and delivery, its counts, no spec", j, err)
	}
	_, err = lopnrv1.NewPartnerServiceClient(f.conn("scb")).GetPartnerKeys(ctx(t), &lopnrv1.GetPartnerKeysRequest{Project: "p1"})
	wantCode(t, "the partner after the destruction", err, codes.FailedPrecondition, "destroyed")
	// The sweeper's path finds nothing left to do.
	if due, err := f.srv.Due(context.Background()); err != nil || len(due) != 0 {
		t.Errorf("the sweeper after the destruction: %v, %v", due, err)
	}
}

// TestDevIdentities: a server without TLS takes the caller's word for one
// of the fixed dev identities (lopnr --dev --as NAME), each with every role
// under DevPolicy, so that a second person can approve on a laptop; a
// server with TLS ignores the word.
func TestDevIdentities(t *testing.T) {
	f := newFixtureWith(t, true, testPolicy, func(c *Config) { c.Policy = DevPolicy() })
	withAs := func(name string) context.Context {
		return metadata.AppendToOutgoingContext(ctx(t), DevIdentityHeader, name)
	}
	c := lopnrv1.NewProjectServiceClient(f.conn(""))
	p, err := c.CreateProject(ctx(t), &lopnrv1.CreateProjectRequest{Id: "p1", EpmDnr: "2026-00000-01",
		ApprovedVariables: approvedVariables(t), ApprovedSources: approvedSources(t), Recipients: []string{researcherKey(t).Recipient().String()}})
	if err != nil || p.CreatedBy != DevIdentity {
		t.Fatalf("CreateProject as the dev identity: %v, %v", p, err)
	}
	_, err = c.ApproveChange(ctx(t), &lopnrv1.ApproveChangeRequest{Project: "p1", Id: "c1"})
	wantCode(t, "the dev identity approving its own rules", err, codes.PermissionDenied, "four eyes")
	ch, err := c.ApproveChange(withAs("approver"), &lopnrv1.ApproveChangeRequest{Project: "p1", Id: "c1"})
	if err != nil || ch.ApprovedBy != "CN=dev-approver,O=lopnrd --dev" {
		t.Fatalf("ApproveChange as dev-approver: %v, %v", ch, err)
	}
	_, err = c.GetProject(withAs("root"), &lopnrv1.GetProjectRequest{Id: "p1"})
	wantCode(t, "an unknown dev identity", err, codes.Unauthenticated, "lopnr-dev-as: one of approver")

	// With TLS the certificate decides, whatever the caller says.
	g := newFixture(t, false)
	_, err = lopnrv1.NewKeyServiceClient(g.conn("anna")).Sweep(metadata.AppendToOutgoingContext(ctx(t), DevIdentityHeader, "admin"), &lopnrv1.SweepRequest{})
	wantCode(t, "a TLS caller naming a dev identity", err, codes.PermissionDenied, "CN=anna,O=Region Test may not key.sweep")
}

// blindPartner makes p1 a partner project and registers scb on it for
// blind linkage, with a budget of 10 evaluations; it returns scb's client
// and the keys the project gives it.
func (f *fixture) blindPartner() (lopnrv1.PartnerServiceClient, *lopnrv1.PartnerKeys) {
	f.t.Helper()
	f.partnerProject()
	scbKey, _ := age.GenerateX25519Identity()
	f.register("CN=scb,O=Region Test", scbKey.Recipient().String(), 10, "blind")
	scb := lopnrv1.NewPartnerServiceClient(f.conn("scb"))
	keys, err := scb.GetPartnerKeys(ctx(f.t), &lopnrv1.GetPartnerKeysRequest{Project: "p1"})
	if err != nil {
		f.t.Fatal(err)
	}
	return scb, keys
}

// cohortAndOutsider returns the numbers in p1's kodnyckel and a test
// number that is not among them.
func (f *fixture) cohortAndOutsider() ([]string, string) {
	f.t.Helper()
	var cohort []string
	if err := f.srv.cfg.Keys.Mappings(ctx(f.t), "p1", func(c string, _ keystore.RunNumber) error {
		cohort = append(cohort, c)
		return nil
	}); err != nil {
		f.t.Fatal(err)
	}
	numbers, err := os.ReadFile("../testdata/skatteverket/testpersonnummer.txt")
	if err != nil {
		f.t.Fatal(err)
	}
	for _, n := range strings.Fields(string(numbers)) {
		if !slices.Contains(cohort, n) {
			return cohort, n
		}
	}
	f.t.Fatal("every test number is in p1's kodnyckel")
	return nil, ""
}
