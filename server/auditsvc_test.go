package server

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"

	"filippo.io/age"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc/codes"

	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
	"github.com/lopnr/lopnr/server/audit"
)

// newSignedFixture is a server whose audit log signs checkpoints with a key
// from its key store and keeps them there, as lopnrd runs it.
func newSignedFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureWith(t, false, testPolicy, func(cfg *Config) {
		skey, err := cfg.Keys.ServiceKey(context.Background(), audit.SignerName, func() ([]byte, error) { return audit.NewSignerKey("lopnrd.test/audit") })
		if err != nil {
			t.Fatal(err)
		}
		if err := cfg.Audit.EnableCheckpoints(context.Background(), skey, cfg.Keys); err != nil {
			t.Fatal(err)
		}
	})
}

// runJob submits the synthetic job for p1 as anna and waits for it; it
// returns the finished job.
func (f *fixture) runJob(spec []byte) *lopnrv1.Job {
	f.t.Helper()
	jobs := lopnrv1.NewJobServiceClient(f.conn("anna"))
	job, err := jobs.SubmitJob(ctx(f.t), &lopnrv1.SubmitJobRequest{Spec: spec})
	if err != nil {
		f.t.Fatalf("SubmitJob: %v", err)
	}
	watch, err := jobs.WatchJob(ctx(f.t), &lopnrv1.WatchJobRequest{Id: job.Id})
	if err != nil {
		f.t.Fatal(err)
	}
	for {
		if _, err := watch.Recv(); err == io.EOF {
			break
		} else if err != nil {
			f.t.Fatalf("watch: %v", err)
		}
	}
	j, err := jobs.GetJob(ctx(f.t), &lopnrv1.GetJobRequest{Id: job.Id})
	if err != nil || j.State != lopnrv1.JobState_JOB_STATE_SUCCEEDED || j.Delivery == "" {
		f.t.Fatalf("job = %v, %v; want it succeeded with a delivery", j, err)
	}
	return j
}

// TestNoSensitiveActWhenTheAuditLogCannotBeWritten: with the audit log
// unwritable (its file closed under the server, as a full or failed disk
// would leave it), a release, a re-identification and its approval, a
// change's approval, a destruction and a sweep are refused, and none of
// them took place.
func TestNoSensitiveActWhenTheAuditLogCannotBeWritten(t *testing.T) {
	f := newSignedFixture(t)
	spec, _ := f.generate(60)
	researcher := researcherKey(t)
	admin := lopnrv1.NewProjectServiceClient(f.conn("drift"))
	if _, err := admin.CreateProject(ctx(t), &lopnrv1.CreateProjectRequest{Id: "p1", EpmDnr: "2026-00000-01",
		ApprovedVariables: approvedVariables(t), ApprovedSources: approvedSources(t), Recipients: []string{researcher.Recipient().String()}}); err != nil {
		t.Fatal(err)
	}
	f.approve("p1", "bo")
	j := f.runJob(spec)
	keysBo, keysCecilia := lopnrv1.NewKeyServiceClient(f.conn("bo")), lopnrv1.NewKeyServiceClient(f.conn("cecilia"))
	approved, err := keysBo.RequestReidentification(ctx(t), &lopnrv1.RequestReidentificationRequest{Project: "p1", RunNumber: 1, Reason: "a data error in LopNr 1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keysCecilia.ApproveReidentification(ctx(t), &lopnrv1.ApproveReidentificationRequest{Project: "p1", Id: approved.Id}); err != nil {
		t.Fatal(err)
	}
	pending, err := keysBo.RequestReidentification(ctx(t), &lopnrv1.RequestReidentificationRequest{Project: "p1", RunNumber: 2, Reason: "a data error in LopNr 2"})
	if err != nil {
		t.Fatal(err)
	}
	// A change of p1's rules awaiting a second person.
	change, err := lopnrv1.NewProjectServiceClient(f.conn("anna")).ProposeChange(ctx(t), &lopnrv1.ProposeChangeRequest{Project: "p1", Reason: "a new recipient",
		Rules: &lopnrv1.ProjectRules{ApprovedVariables: approvedVariables(t), ApprovedSources: approvedSources(t), Recipients: []string{researcherKey(t).Recipient().String()}}})
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(f.auditFn)
	if err != nil {
		t.Fatal(err)
	}

	f.srv.cfg.Audit.Close() // every write fails from here

	_, err = lopnrv1.NewDeliveryServiceClient(f.conn("bo")).ReleaseDelivery(ctx(t), &lopnrv1.ReleaseDeliveryRequest{Project: "p1", Delivery: j.Delivery})
	wantCode(t, "a release with the audit log down", err, codes.Unavailable, "audit log")
	_, err = keysBo.Reidentify(ctx(t), &lopnrv1.ReidentifyRequest{Project: "p1", Id: approved.Id})
	wantCode(t, "a re-identification with the audit log down", err, codes.Unavailable, "audit log")
	_, err = keysCecilia.ApproveReidentification(ctx(t), &lopnrv1.ApproveReidentificationRequest{Project: "p1", Id: pending.Id})
	wantCode(t, "a re-identification's approval with the audit log down", err, codes.Unavailable, "audit log")
	_, err = lopnrv1.NewProjectServiceClient(f.conn("bo")).ApproveChange(ctx(t), &lopnrv1.ApproveChangeRequest{Project: "p1", Id: change.Id})
	wantCode(t, "a change's approval with the audit log down", err, codes.Unavailable, "audit log")
	_, err = lopnrv1.NewProjectServiceClient(f.conn("bo")).DestroyProject(ctx(t), &lopnrv1.DestroyProjectRequest{Id: "p1", Reason: "the study has ended"})
	wantCode(t, "a destruction with the audit log down", err, codes.Unavailable, "audit log")
	_, err = lopnrv1.NewKeyServiceClient(f.conn("drift")).Sweep(ctx(t), &lopnrv1.SweepRequest{})
	wantCode(t, "a sweep with the audit log down", err, codes.Unavailable, "audit log")

	// Nothing happened.
	if d, err := f.srv.deliveries.get(j.Delivery); err != nil || d.ReleasedBy != "" {
		t.Errorf("the delivery after a refused release: %+v, %v; want it unreleased", d, err)
	}
	if r, err := f.srv.reidents.get(approved.Id); err != nil || r.Done {
		t.Errorf("the approved re-identification after a refused Reidentify: %+v, %v; want it unanswered", r, err)
	}
	if r, err := f.srv.reidents.get(pending.Id); err != nil || r.ApprovedBy != "" {
		t.Errorf("the pending re-identification after a refused approval: %+v, %v; want it pending", r, err)
	}
	if p, err := f.srv.cfg.Keys.Project(ctx(t), "p1"); err != nil || p.Destroying {
		t.Errorf("p1's kodnyckel after a refused destruction: %+v, %v", p, err)
	}
	after, err := os.ReadFile(f.auditFn)
	if err != nil || string(after) != string(before) {
		t.Errorf("the audit log changed while it could not be written: %v", err)
	}
	changes, err := lopnrv1.NewProjectServiceClient(f.conn("bo")).ListChanges(ctx(t), &lopnrv1.ListChangesRequest{Project: "p1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range changes.Changes {
		if c.Id == change.Id && c.State != lopnrv1.ChangeState_CHANGE_STATE_PENDING {
			t.Errorf("the change after a refused approval: %v; want it pending", c)
		}
	}
}

// TestAuditorSeesTheLogCutThroughTheServer: VerifyAudit answers
// with the newest signed checkpoint and its key, and names a log cut
// before it while the server runs; the intent of a release stands before
// its outcome.
func TestAuditorSeesTheLogCutThroughTheServer(t *testing.T) {
	f := newSignedFixture(t)
	spec, _ := f.generate(40)
	researcher := researcherKey(t)
	admin := lopnrv1.NewProjectServiceClient(f.conn("drift"))
	if _, err := admin.CreateProject(ctx(t), &lopnrv1.CreateProjectRequest{Id: "p1", EpmDnr: "2026-00000-01",
		ApprovedVariables: approvedVariables(t), ApprovedSources: approvedSources(t), Recipients: []string{researcher.Recipient().String()}}); err != nil {
		t.Fatal(err)
	}
	f.approve("p1", "bo")
	j := f.runJob(spec)
	if _, err := lopnrv1.NewDeliveryServiceClient(f.conn("bo")).ReleaseDelivery(ctx(t), &lopnrv1.ReleaseDeliveryRequest{Project: "p1", Delivery: j.Delivery}); err != nil {
		t.Fatal(err)
	}
	auditor := lopnrv1.NewAuditServiceClient(f.conn("revisor"))
	v, err := auditor.VerifyAudit(ctx(t), &lopnrv1.VerifyAuditRequest{})
	if err != nil || !v.Ok {
		t.Fatalf("VerifyAudit = %v, %v", v, err)
	}
	// The release's intent is the last entry the checkpoint holds, or
	// before it; its outcome follows.
	b, _ := os.ReadFile(f.auditFn)
	ls := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	intent, ok := -1, -1
	for i, l := range ls {
		if strings.Contains(l, `"action":"delivery.release"`) && strings.Contains(l, `"outcome":"intent"`) {
			intent = i
		}
		if strings.Contains(l, `"action":"delivery.release"`) && strings.Contains(l, `"outcome":"ok"`) {
			ok = i
		}
	}
	if intent < 0 || ok < intent || v.CheckpointSize < int64(intent+1) || !strings.Contains(ls[intent], `"job":"`+j.Delivery+`"`) {
		t.Fatalf("release intent at line %d, outcome at %d, checkpoint of %d entries:\n%s", intent+1, ok+1, v.CheckpointSize, b)
	}
	verifier, err := note.NewVerifier(v.VerifierKey)
	if err != nil {
		t.Fatal(err)
	}
	if cp, err := audit.ParseCheckpoint([]byte(v.Checkpoint), verifier); err != nil || cp.Size != v.CheckpointSize {
		t.Fatalf("the checkpoint VerifyAudit gives: %+v, %v", cp, err)
	}

	// Cut the log back to before the release.
	if err := os.WriteFile(f.auditFn, []byte(strings.Join(ls[:intent], "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v, err = auditor.VerifyAudit(ctx(t), &lopnrv1.VerifyAuditRequest{})
	if err != nil || v.Ok || !strings.Contains(v.Problem, "cut: the log ends at entry") || v.Checkpoint == "" {
		t.Fatalf("VerifyAudit of a cut log = %v, %v; want the cut named", v, err)
	}
}

// TestNoKeyFileWhenTheAuditLogCannotBeWritten: the same for the key file
// and its grant's approval, a server stream and a unary call.
func TestNoKeyFileWhenTheAuditLogCannotBeWritten(t *testing.T) {
	f := newSignedFixture(t)
	f.partnerProject()
	sosKey, _ := age.GenerateX25519Identity()
	f.register("CN=sos,O=Region Test", sosKey.Recipient().String(), 0, "keyfile")
	sos := lopnrv1.NewPartnerServiceClient(f.conn("sos"))
	approved, err := sos.RequestKeyFile(ctx(t), &lopnrv1.RequestKeyFileRequest{Project: "p1", Reason: "linking the cause-of-death register"})
	if err != nil {
		t.Fatal(err)
	}
	cecilia := lopnrv1.NewPartnerServiceClient(f.conn("cecilia"))
	if _, err := cecilia.ApproveKeyFile(ctx(t), &lopnrv1.ApproveKeyFileRequest{Project: "p1", Id: approved.Id}); err != nil {
		t.Fatal(err)
	}
	pending, err := sos.RequestKeyFile(ctx(t), &lopnrv1.RequestKeyFileRequest{Project: "p1", Reason: "a second linkage"})
	if err != nil {
		t.Fatal(err)
	}

	f.srv.cfg.Audit.Close()

	b, err := keyFile(t, sos, approved.Id)
	wantCode(t, "a key file with the audit log down", err, codes.Unavailable, "audit log")
	if len(b) != 0 {
		t.Errorf("%d bytes of the key file sent", len(b))
	}
	_, err = cecilia.ApproveKeyFile(ctx(t), &lopnrv1.ApproveKeyFileRequest{Project: "p1", Id: pending.Id})
	wantCode(t, "a grant's approval with the audit log down", err, codes.Unavailable, "audit log")
	grants, err := sos.ListKeyFileGrants(ctx(t), &lopnrv1.ListKeyFileGrantsRequest{Project: "p1"})
	if err != nil || len(grants.Grants) != 2 {
		t.Fatalf("grants: %v, %v", grants, err)
	}
	for _, g := range grants.Grants {
		if g.Used != nil || g.Id == pending.Id && g.ApprovedBy != "" {
			t.Errorf("grant %s after refused calls: %v; want it unused, and the pending one unapproved", g.Id, g)
		}
	}
}
