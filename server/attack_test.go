package server

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"
	"google.golang.org/grpc/codes"

	"github.com/lopnr/lopnr/keystore"
	"github.com/lopnr/lopnr/linkage"
	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
	"github.com/lopnr/lopnr/server/authz"
)

// The attacks of issue 15's review, replayed against the server as it is
// (the attacker's brief: one identity, with the roles the policy gives it,
// trying to get identity numbers, unapproved variables, cohort membership
// or the kodnyckel out, or to act unaudited).

// TestExtractorCannotHoldAJobWithANamedPipe: an extractor who can write the
// project's source directory puts a named pipe there and names it as a
// source. Opening it blocked until someone wrote to it: at submission the
// call hung, and a file swapped for a pipe after submission held a job slot
// (of every project: two by default) for good, since cancelling a job does
// not end a blocked open, and a project with a job running cannot be
// destroyed. Sources are opened without blocking now, and the pipe is
// refused as not a regular file, at once, naming the field.
func TestExtractorCannotHoldAJobWithANamedPipe(t *testing.T) {
	f := newFixture(t, true)
	root := f.srv.cfg.SourceRoot
	sourceFiles(t, root)
	pipe := filepath.Join(root, "p1", "pipe.csv")
	if err := syscall.Mkfifo(pipe, 0o600); err != nil {
		t.Fatal(err)
	}
	// Whatever the outcome, let a blocked open go.
	t.Cleanup(func() {
		if w, err := os.OpenFile(pipe, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
	})
	within := func(what string, fn func() error) error {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- fn() }()
		select {
		case err := <-done:
			return err
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: still blocked after 5 s on a named pipe", what)
			return nil
		}
	}
	err := within("submission", func() error { _, err := f.srv.parseSpec(lmedSpec("pipe.csv")); return err })
	if err == nil || !strings.Contains(err.Error(), "spec: sources[0].path: a regular file") {
		t.Errorf("a named pipe at submission: err = %v, want it refused naming sources[0].path", err)
	}

	// A proper file at submission, a pipe when the job runs.
	spec, err := f.srv.parseSpec(lmedSpec("lmed.csv"))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(root, "p1", "lmed.csv")
	os.Remove(p)
	if err := os.Rename(pipe, p); err != nil {
		t.Fatal(err)
	}
	pipe = p
	err = within("the run", func() error {
		res, err := linkage.Link(ctx(t), spec, linkage.Options{})
		if err == nil {
			res.Close()
		}
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "sources[0].path") {
		t.Errorf("a file swapped for a named pipe: Link: %v, want it refused naming sources[0].path", err)
	}
}

// TestJobIsNotDeliveredToARecipientRemovedBeforeItRuns: a job spec may
// name a subset of the project's recipients, checked when it is submitted.
// A job submitted while a researcher's key was approved, and run after a
// second person approved a change that removed it (the researcher left,
// the key was lost), was still encrypted to that key: the rules approved
// when the job runs did not decide who could read its delivery. Now the
// job fails, naming the field, and nothing is staged.
func TestJobIsNotDeliveredToARecipientRemovedBeforeItRuns(t *testing.T) {
	f := newFixture(t, false)
	spec, _ := f.generate(100)
	stays, leaves := researcherKey(t), researcherKey(t)
	rules := func(keys ...*age.HybridIdentity) *lopnrv1.ProjectRules {
		r := &lopnrv1.ProjectRules{ApprovedVariables: approvedVariables(t), ApprovedSources: approvedSources(t)}
		for _, k := range keys {
			r.Recipients = append(r.Recipients, k.Recipient().String())
		}
		return r
	}
	both := rules(stays, leaves)
	if _, err := lopnrv1.NewProjectServiceClient(f.conn("drift")).CreateProject(ctx(t), &lopnrv1.CreateProjectRequest{Id: "p1",
		EpmDnr: "2026-00000-01", ApprovedVariables: both.ApprovedVariables, ApprovedSources: both.ApprovedSources, Recipients: both.Recipients}); err != nil {
		t.Fatal(err)
	}
	f.approve("p1", "bo")

	f.srv.gate = make(chan struct{}) // the job waits at its start
	spec = append(bytes.Clone(spec), "recipients: ["+leaves.Recipient().String()+"]\n"...)
	job, err := lopnrv1.NewJobServiceClient(f.conn("anna")).SubmitJob(ctx(t), &lopnrv1.SubmitJobRequest{Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lopnrv1.NewProjectServiceClient(f.conn("bo")).ProposeChange(ctx(t), &lopnrv1.ProposeChangeRequest{Project: "p1",
		Reason: "the second researcher has left the project", Rules: rules(stays)}); err != nil {
		t.Fatal(err)
	}
	f.approve("p1", "cecilia")
	close(f.srv.gate)

	j := f.wait("anna", job.Id)
	if j.State != lopnrv1.JobState_JOB_STATE_FAILED || !strings.Contains(j.Error, "spec: recipients[0]: ") {
		t.Errorf("the job after its recipient was removed: %v %q, want it failed naming spec: recipients[0]", j.State, j.Error)
	}
	if n := countRegular(filepath.Join(f.dir, "deliveries")) + countRegular(filepath.Join(f.srv.cfg.DataDir, "staging")); n != 0 {
		t.Errorf("%d files were delivered or staged", n)
	}
}

// countRegular counts the regular files below dir.
func countRegular(dir string) int {
	n := 0
	filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return nil
	})
	return n
}

// crossPolicy adds a second project's approver to the test policy, and
// gives SCB the partner role in both projects (it is registered in p1
// only).
const crossPolicy = `identities:
  "CN=anna,O=Region Test":   {roles: {p1: [extractor]}}
  "CN=bo,O=Region Test":     {roles: {p1: [approver, keyholder]}}
  "CN=cecilia,O=Region Test": {roles: {p1: [keyholder, approver]}}
  "CN=forskare,O=Region Test": {roles: {p1: [researcher]}}
  "CN=annan,O=Region Test":  {roles: {p2: [researcher]}}
  "CN=gudrun,O=Region Test": {roles: {p2: [approver, keyholder]}}
  "CN=drift,O=Region Test":  {global: [admin]}
  "CN=scb,O=Region Test":    {roles: {p1: [partner], p2: [partner]}}
`

// TestOtherProjectsRolesCannotActOnAProjectByID: the roles of an identity
// hold in the project a call names, and the thing a call acts on is looked
// up by id. An approver and a researcher of p2, and a partner registered
// in p1 with the partner role in p2 too, name their own project with ids
// of p1's delivery, change, key-file grant and re-identification request:
// each is refused as not found (or not registered), and nothing of p1 is
// released, approved or handed out. A project id is never taken twice,
// not even a destroyed project's.
func TestOtherProjectsRolesCannotActOnAProjectByID(t *testing.T) {
	f := newFixtureWith(t, false, crossPolicy, nil)
	f.partnerProject()
	scbKey, _ := age.GenerateX25519Identity()
	f.register("CN=scb,O=Region Test", scbKey.Recipient().String(), 10, "keyfile", "blind", "import")
	admin := lopnrv1.NewProjectServiceClient(f.conn("drift"))
	if _, err := admin.CreateProject(ctx(t), &lopnrv1.CreateProjectRequest{Id: "p2", EpmDnr: "2026-00000-02",
		ApprovedVariables: approvedVariables(t), ApprovedSources: approvedSources(t), Recipients: []string{researcherKey(t).Recipient().String()}}); err != nil {
		t.Fatal(err)
	}
	f.approve("p2", "gudrun")

	// p1's things: a staged delivery, a pending change, a grant, a
	// re-identification request.
	spec, _ := f.generate(50)
	delivery := f.runJobAs("anna", spec).Delivery
	change, err := lopnrv1.NewProjectServiceClient(f.conn("bo")).ProposeChange(ctx(t), &lopnrv1.ProposeChangeRequest{Project: "p1",
		Reason: "a wider list", Rules: &lopnrv1.ProjectRules{ApprovedVariables: approvedVariables(t), ApprovedSources: approvedSources(t),
			AllowPersonnummer: true, Recipients: []string{researcherKey(t).Recipient().String()}}})
	if err != nil {
		t.Fatal(err)
	}
	scb := lopnrv1.NewPartnerServiceClient(f.conn("scb"))
	grant, err := scb.RequestKeyFile(ctx(t), &lopnrv1.RequestKeyFileRequest{Project: "p1", Reason: "linking our register"})
	if err != nil {
		t.Fatal(err)
	}
	reident, err := lopnrv1.NewKeyServiceClient(f.conn("bo")).RequestReidentification(ctx(t), &lopnrv1.RequestReidentificationRequest{
		Project: "p1", RunNumber: 1, Reason: "a data error in LopNr 1"})
	if err != nil {
		t.Fatal(err)
	}

	gudrun := f.conn("gudrun")
	_, err = lopnrv1.NewDeliveryServiceClient(gudrun).ReleaseDelivery(ctx(t), &lopnrv1.ReleaseDeliveryRequest{Project: "p2", Delivery: delivery})
	wantCode(t, "p2's approver releasing p1's delivery", err, codes.NotFound, "delivery")
	_, err = lopnrv1.NewProjectServiceClient(gudrun).ApproveChange(ctx(t), &lopnrv1.ApproveChangeRequest{Project: "p2", Id: change.Id})
	wantCode(t, "p2's approver approving p1's change", err, codes.NotFound, "change")
	_, err = lopnrv1.NewPartnerServiceClient(gudrun).ApproveKeyFile(ctx(t), &lopnrv1.ApproveKeyFileRequest{Project: "p2", Id: grant.Id})
	wantCode(t, "p2's approver approving p1's key file", err, codes.NotFound, "grant")
	_, err = lopnrv1.NewKeyServiceClient(gudrun).ApproveReidentification(ctx(t), &lopnrv1.ApproveReidentificationRequest{Project: "p2", Id: reident.Id})
	wantCode(t, "p2's approver approving p1's re-identification", err, codes.NotFound, "re-identification")

	// Released in p1, p2's researcher still gets no link to it.
	if _, err := lopnrv1.NewDeliveryServiceClient(f.conn("bo")).ReleaseDelivery(ctx(t), &lopnrv1.ReleaseDeliveryRequest{Project: "p1", Delivery: delivery}); err != nil {
		t.Fatal(err)
	}
	_, err = lopnrv1.NewDeliveryServiceClient(f.conn("annan")).PresignDelivery(ctx(t), &lopnrv1.PresignDeliveryRequest{Project: "p2", Delivery: delivery})
	wantCode(t, "p2's researcher presigning p1's delivery", err, codes.NotFound, "delivery")

	// The partner, registered in p1 only, in p2: its p1 grant (approved
	// now), an upload, blind linkage.
	if _, err := lopnrv1.NewPartnerServiceClient(f.conn("cecilia")).ApproveKeyFile(ctx(t), &lopnrv1.ApproveKeyFileRequest{Project: "p1", Id: grant.Id}); err != nil {
		t.Fatal(err)
	}
	st, err := scb.GetKeyFile(ctx(t), &lopnrv1.GetKeyFileRequest{Project: "p2", Grant: grant.Id})
	if err == nil {
		_, err = st.Recv()
	}
	wantCode(t, "the partner using p1's grant in p2", err, codes.PermissionDenied, "not registered as a partner of project p2")
	_, err = scb.RequestKeyFile(ctx(t), &lopnrv1.RequestKeyFileRequest{Project: "p2", Reason: "and this one too"})
	wantCode(t, "the partner asking for p2's key file", err, codes.PermissionDenied, "not registered as a partner of project p2")
	_, err = scb.GetPartnerKeys(ctx(t), &lopnrv1.GetPartnerKeysRequest{Project: "p2"})
	wantCode(t, "the partner asking for p2's keys", err, codes.PermissionDenied, "not registered as a partner of project p2")
	_, err = upload(t, scb, &lopnrv1.ImportHeader{Project: "p2", Source: "scb", KeyedBy: lopnrv1.KeyedBy_KEYED_BY_LOPNR, IdentityColumn: "LOPNR",
		Variables: []*lopnrv1.ImportVariable{{Column: "INKOMST"}}}, []byte("not even encrypted"))
	wantCode(t, "the partner uploading to p2", err, codes.PermissionDenied, "not registered as a partner of project p2")
	ev, err := scb.Evaluate(ctx(t))
	if err == nil {
		ev.Send(&lopnrv1.EvaluateRequest{Project: "p2"})
		_, err = ev.Recv()
	}
	wantCode(t, "the partner evaluating in p2", err, codes.PermissionDenied, "not registered as a partner of project p2")
	// Its grant still gives p1's file once, to its own key.
	if b, err := keyFile(t, scb, grant.Id); err != nil || len(b) == 0 {
		t.Errorf("the grant in p1 after the attempts: %d bytes, %v", len(b), err)
	}

	// Nothing of p1 moved: the change is pending, the request unapproved.
	changes, err := lopnrv1.NewProjectServiceClient(f.conn("bo")).ListChanges(ctx(t), &lopnrv1.ListChangesRequest{Project: "p1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range changes.Changes {
		if c.Id == change.Id && c.State != lopnrv1.ChangeState_CHANGE_STATE_PENDING {
			t.Errorf("p1's change %s: %v", c.Id, c.State)
		}
	}

	// A project id is taken once: p1's, and p2's after its destruction.
	_, err = admin.CreateProject(ctx(t), &lopnrv1.CreateProjectRequest{Id: "p1", EpmDnr: "2026-00000-09",
		ApprovedVariables: approvedVariables(t), ApprovedSources: approvedSources(t), Recipients: []string{researcherKey(t).Recipient().String()}})
	wantCode(t, "creating p1 over p1", err, codes.AlreadyExists, `project "p1"`)
	if _, err := lopnrv1.NewProjectServiceClient(gudrun).DestroyProject(ctx(t), &lopnrv1.DestroyProjectRequest{Id: "p2", Reason: "the study is over"}); err != nil {
		t.Fatal(err)
	}
	_, err = admin.CreateProject(ctx(t), &lopnrv1.CreateProjectRequest{Id: "p2", EpmDnr: "2026-00000-02",
		ApprovedVariables: approvedVariables(t), ApprovedSources: approvedSources(t), Recipients: []string{researcherKey(t).Recipient().String()}})
	wantCode(t, "creating p2 over the destroyed p2", err, codes.AlreadyExists, `project "p2"`)
}

// TestPartnerWithASecondRoleCannotLearnCohortMembership: the partner's
// answer to an upload no longer tells who is in the cohort, but an
// identity that is also an extractor of the project (or an approver,
// auditor or admin: whoever reads jobs or the log; or a researcher, who
// gets the supplementary delivery) reads its upload's matched count in the
// import's job report. A policy that gives a partner another role in its
// project is refused when lopnrd loads it.
func TestPartnerWithASecondRoleCannotLearnCohortMembership(t *testing.T) {
	policy := strings.Replace(testPolicy, `"CN=scb,O=Region Test":    {roles: {p1: [partner]}}`,
		`"CN=scb,O=Region Test":    {roles: {p1: [partner, extractor]}}`, 1)
	file := filepath.Join(t.TempDir(), "policy.yaml")
	os.WriteFile(file, []byte(policy), 0o600)
	if _, err := authz.Load(file); err != nil {
		if !strings.Contains(err.Error(), `identities["CN=scb,O=Region Test"]: a partner of project p1 with the role extractor there too`) {
			t.Errorf("the policy is refused with %v, want the identity and its roles named", err)
		}
		return
	}
	// The policy loads: the attack.
	f := newFixtureWith(t, false, policy, nil)
	scb, keys := f.blindPartner()
	var member string
	f.srv.cfg.Keys.Mappings(ctx(t), "p1", func(c string, _ keystore.RunNumber) error {
		member = c
		return nil
	})
	var b bytes.Buffer
	r, _ := age.ParseRecipients(strings.NewReader(keys.ServiceRecipient))
	w, _ := age.Encrypt(&b, r...)
	io.WriteString(w, "PSEUDONYM;INKOMST\n"+f.pseudonymOf(member)+";100\n")
	w.Close()
	up, err := upload(t, scb, &lopnrv1.ImportHeader{Project: "p1", Source: "scb", KeyedBy: lopnrv1.KeyedBy_KEYED_BY_PSEUDONYM,
		IdentityColumn: "PSEUDONYM", Variables: []*lopnrv1.ImportVariable{{Column: "INKOMST"}}}, b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if j := f.wait("scb", up.Job); strings.Contains(j.Report, "1 rows received, 1 of them of 1 of the project's persons") {
		t.Errorf("the partner, an extractor too, read its one-row upload's report: %q: the person is in the cohort", strings.SplitN(j.Report, "\n", 2)[0])
	}
}

// TestApproverCannotUndoANewerChangeWithAStaleOne: a change replaces a
// project's rules as a whole. An approver proposed new rules (reason:
// allow personnummer for a linkage check) while a lost researcher's key
// was still a recipient; another change, removing that key, was approved
// after it; the stale change, approved then by a second person reading its
// reason, put the lost key back among the recipients. A change proposed
// over rules that another change has replaced since is refused now,
// saying so; proposed again from the rules in force, it is approved.
func TestApproverCannotUndoANewerChangeWithAStaleOne(t *testing.T) {
	f := newFixture(t, false)
	kept, lost := researcherKey(t).Recipient().String(), researcherKey(t).Recipient().String()
	rules := func(allowPnr bool, recipients ...string) *lopnrv1.ProjectRules {
		return &lopnrv1.ProjectRules{ApprovedVariables: approvedVariables(t), ApprovedSources: approvedSources(t), AllowPersonnummer: allowPnr, Recipients: recipients}
	}
	first := rules(false, kept, lost)
	if _, err := lopnrv1.NewProjectServiceClient(f.conn("drift")).CreateProject(ctx(t), &lopnrv1.CreateProjectRequest{Id: "p1", EpmDnr: "2026-00000-01",
		ApprovedVariables: first.ApprovedVariables, ApprovedSources: first.ApprovedSources, Recipients: first.Recipients}); err != nil {
		t.Fatal(err)
	}
	f.approve("p1", "bo")
	bo, cecilia := lopnrv1.NewProjectServiceClient(f.conn("bo")), lopnrv1.NewProjectServiceClient(f.conn("cecilia"))
	stale, err := bo.ProposeChange(ctx(t), &lopnrv1.ProposeChangeRequest{Project: "p1", Reason: "allow personnummer for the linkage check",
		Rules: rules(true, kept, lost)})
	if err != nil {
		t.Fatal(err)
	}
	removal, err := cecilia.ProposeChange(ctx(t), &lopnrv1.ProposeChangeRequest{Project: "p1", Reason: "the second researcher's key was lost",
		Rules: rules(false, kept)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bo.ApproveChange(ctx(t), &lopnrv1.ApproveChangeRequest{Project: "p1", Id: removal.Id}); err != nil {
		t.Fatal(err)
	}
	_, err = cecilia.ApproveChange(ctx(t), &lopnrv1.ApproveChangeRequest{Project: "p1", Id: stale.Id})
	wantCode(t, "approving the stale change", err, codes.FailedPrecondition,
		"change "+stale.Id+" was proposed when the rules of c1 were in force; "+removal.Id+"'s have replaced them since")
	p, err := bo.GetProject(ctx(t), &lopnrv1.GetProjectRequest{Id: "p1"})
	if err != nil || len(p.Recipients) != 1 || p.Recipients[0] != kept || p.AllowPersonnummer {
		t.Fatalf("the project's rules after the attempt: recipients %v, allow_personnummer %v (%v); want only the kept key", p.GetRecipients(), p.GetAllowPersonnummer(), err)
	}
	again, err := bo.ProposeChange(ctx(t), &lopnrv1.ProposeChangeRequest{Project: "p1", Reason: "allow personnummer for the linkage check",
		Rules: rules(true, kept)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cecilia.ApproveChange(ctx(t), &lopnrv1.ApproveChangeRequest{Project: "p1", Id: again.Id}); err != nil {
		t.Errorf("the change proposed again from the rules in force: %v", err)
	}
}

// TestPartnerCannotLearnCohortMembershipFromMetrics: the partner's answer
// is the same for a member's row and a non-member's, but /metrics — which
// a Prometheus outside the operator's reach scrapes — told them apart: the
// member's one-row import delivered a row (lopnr_delivered_rows_total of
// the project grew by one) and its job succeeded, the non-member's job
// failed (no data rows) and lopnr_jobs_total{state="failed"} grew. A
// partner's import is left out of the metrics now: both uploads leave them
// as they were.
func TestPartnerCannotLearnCohortMembershipFromMetrics(t *testing.T) {
	f := newFixture(t, false)
	scb, keys := f.blindPartner()
	cohort, outsider := f.cohortAndOutsider()
	metrics := func() string {
		var m bytes.Buffer
		f.srv.cfg.Metrics.WriteTo(&m)
		var keep []string
		for _, l := range strings.Split(m.String(), "\n") {
			if !strings.HasPrefix(l, "lopnr_audit_") { // the log grows with every call
				keep = append(keep, l)
			}
		}
		return strings.Join(keep, "\n")
	}
	h := &lopnrv1.ImportHeader{Project: "p1", Source: "scb", KeyedBy: lopnrv1.KeyedBy_KEYED_BY_PSEUDONYM, IdentityColumn: "PSEUDONYM",
		Variables: []*lopnrv1.ImportVariable{{Column: "INKOMST"}}}
	for _, who := range []struct{ name, number string }{{"a member", cohort[0]}, {"a non-member", outsider}} {
		before := metrics()
		var enc bytes.Buffer
		r, _ := age.ParseRecipients(strings.NewReader(keys.ServiceRecipient))
		w, _ := age.Encrypt(&enc, r...)
		io.WriteString(w, "PSEUDONYM;INKOMST\n"+f.pseudonymOf(who.number)+";100\n")
		w.Close()
		up, err := upload(t, scb, h, enc.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		f.wait("anna", up.Job)
		if after := metrics(); after != before {
			t.Errorf("%s's one-row upload changed /metrics:\n%s\nto\n%s", who.name, before, after)
		}
	}
}

// TestOneIdentityWithTwoRolesIsStillOnePerson: four eyes count identities,
// not roles. One identity that is extractor, approver and key holder of a
// project proposes its rules (creating the project) and approves them,
// submits a job and releases its delivery, proposes a change and approves
// it, asks for a re-identification and approves it: each second step is
// refused as its own (the tests of each rule use identities with one of
// the two roles, refused by their role before the four-eyes check).
func TestOneIdentityWithTwoRolesIsStillOnePerson(t *testing.T) {
	f := newFixtureWith(t, false, testPolicy+`  "CN=ewa,O=Region Test":    {roles: {p1: [extractor, approver, keyholder]}}
`, nil)
	spec, _ := f.generate(60)
	ewa := f.conn("ewa")
	projects := lopnrv1.NewProjectServiceClient(ewa)
	if _, err := projects.CreateProject(ctx(t), &lopnrv1.CreateProjectRequest{Id: "p1", EpmDnr: "2026-00000-01",
		ApprovedVariables: approvedVariables(t), ApprovedSources: approvedSources(t), Recipients: []string{researcherKey(t).Recipient().String()}}); err != nil {
		t.Fatal(err)
	}
	_, err := projects.ApproveChange(ctx(t), &lopnrv1.ApproveChangeRequest{Project: "p1", Id: "c1"})
	wantCode(t, "approving the rules it proposed", err, codes.PermissionDenied, "not the one who proposed it")
	f.approve("p1", "bo")

	j := f.runJobAs("ewa", spec)
	if j.State != lopnrv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job: %v %s", j.State, j.Error)
	}
	_, err = lopnrv1.NewDeliveryServiceClient(ewa).ReleaseDelivery(ctx(t), &lopnrv1.ReleaseDeliveryRequest{Project: "p1", Delivery: j.Delivery})
	wantCode(t, "releasing its own job's delivery", err, codes.PermissionDenied, "the person who submitted a job may not release")

	c, err := projects.ProposeChange(ctx(t), &lopnrv1.ProposeChangeRequest{Project: "p1", Reason: "personnummer after all",
		Rules: &lopnrv1.ProjectRules{ApprovedVariables: approvedVariables(t), ApprovedSources: approvedSources(t), AllowPersonnummer: true,
			Recipients: []string{researcherKey(t).Recipient().String()}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = projects.ApproveChange(ctx(t), &lopnrv1.ApproveChangeRequest{Project: "p1", Id: c.Id})
	wantCode(t, "approving the change it proposed", err, codes.PermissionDenied, "not the one who proposed it")

	keys := lopnrv1.NewKeyServiceClient(ewa)
	r, err := keys.RequestReidentification(ctx(t), &lopnrv1.RequestReidentificationRequest{Project: "p1", RunNumber: 1, Reason: "a data error in LopNr 1"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = keys.ApproveReidentification(ctx(t), &lopnrv1.ApproveReidentificationRequest{Project: "p1", Id: r.Id})
	wantCode(t, "approving its own re-identification", err, codes.PermissionDenied, "not the one who asked")
	_, err = keys.Reidentify(ctx(t), &lopnrv1.ReidentifyRequest{Project: "p1", Id: r.Id})
	wantCode(t, "re-identifying unapproved", err, codes.FailedPrecondition, "waits for a second person's approval")

	p, err := projects.GetProject(ctx(t), &lopnrv1.GetProjectRequest{Id: "p1"})
	if err != nil || p.AllowPersonnummer {
		t.Errorf("the project after the attempts: allow_personnummer %v (%v)", p.GetAllowPersonnummer(), err)
	}
	ds, err := lopnrv1.NewDeliveryServiceClient(f.conn("forskare")).ListDeliveries(ctx(t), &lopnrv1.ListDeliveriesRequest{Project: "p1"})
	if err != nil || len(ds.Deliveries) != 0 {
		t.Errorf("the researcher's deliveries after the attempts: %v, %v; want none released", ds, err)
	}
}

// TestNoEvaluationWhenTheAuditLogCannotBeWritten: Evaluate lets the
// project's pseudonyms out (the OPRF of each number a partner blinds,
// which its uploads are keyed by), but it was not among the acts entered
// in the audit log before they are taken: with the log unwritable the
// partner got its evaluations, and only the entry after the stream was
// lost. Now it is refused before the first evaluation, and the budget is
// left as it was.
func TestNoEvaluationWhenTheAuditLogCannotBeWritten(t *testing.T) {
	f := newFixture(t, false)
	scb, keys := f.blindPartner()
	f.srv.cfg.Audit.Close()
	stream, err := scb.Evaluate(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&lopnrv1.EvaluateRequest{Project: "p1", Blinded: [][]byte{keys.OprfPublicKey, keys.OprfPublicKey}}); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if len(resp.GetEvaluated()) > 0 {
		t.Errorf("%d evaluations given with the audit log down", len(resp.GetEvaluated()))
	}
	wantCode(t, "Evaluate with the audit log down", err, codes.Unavailable, "audit log")
	rec, err := f.srv.projects.get("p1")
	if err != nil || rec.Partners[0].Evaluated != 0 {
		t.Errorf("the partner's budget after the refused call: %d used (%v)", rec.Partners[0].Evaluated, err)
	}
}
