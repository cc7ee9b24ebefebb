package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
)

// TestRetentionHoldDestroyAndCancel covers the project calls an approver
// makes — extend, hold, destroy, each with a reason — and what a destroyed
// kodnyckel refuses, and cancelling a queued job.
func TestRetentionHoldDestroyAndCancel(t *testing.T) {
	f := newFixture(t, false)
	spec, _ := f.generate(200)
	researcher := researcherKey(t)
	admin := lopnrv1.NewProjectServiceClient(f.conn("drift"))
	approver := lopnrv1.NewProjectServiceClient(f.conn("bo"))
	if _, err := admin.CreateProject(ctx(t), &lopnrv1.CreateProjectRequest{Id: "p1", EpmDnr: "2026-00000-01",
		ApprovedVariables: approvedVariables(t), ApprovedSources: approvedSources(t), Recipients: []string{researcher.Recipient().String()}}); err != nil {
		t.Fatal(err)
	}
	f.approve("p1", "bo")
	_, err := admin.CreateProject(ctx(t), &lopnrv1.CreateProjectRequest{Id: "p1", EpmDnr: "2026-00000-01",
		ApprovedVariables: approvedVariables(t), ApprovedSources: approvedSources(t), Recipients: []string{researcher.Recipient().String()}})
	wantCode(t, "creating p1 again", err, codes.AlreadyExists, `project "p1"`)

	until := time.Now().AddDate(1, 0, 0).UTC().Truncate(24 * time.Hour)
	_, err = approver.ExtendRetention(ctx(t), &lopnrv1.ExtendRetentionRequest{Id: "p1", RetainUntil: timestamppb.New(until)})
	wantCode(t, "extend without a reason", err, codes.InvalidArgument, "reason: required")
	_, err = lopnrv1.NewProjectServiceClient(f.conn("anna")).ExtendRetention(ctx(t), &lopnrv1.ExtendRetentionRequest{Id: "p1", RetainUntil: timestamppb.New(until), Reason: "the researcher needs a year"})
	wantCode(t, "an extractor extending", err, codes.PermissionDenied, "project.extend")
	p, err := approver.ExtendRetention(ctx(t), &lopnrv1.ExtendRetentionRequest{Id: "p1", RetainUntil: timestamppb.New(until), Reason: "the researcher needs a year"})
	if err != nil || !p.RetainUntil.AsTime().Equal(until) || len(p.Changes) != 1 || p.Changes[0].Reason != "the researcher needs a year" {
		t.Fatalf("extend = %v, %v", p, err)
	}
	if p, err = approver.SetHold(ctx(t), &lopnrv1.SetHoldRequest{Id: "p1", Hold: true, Reason: "a complaint is being tried"}); err != nil || !p.Hold {
		t.Fatalf("hold = %v, %v", p, err)
	}
	_, err = approver.DestroyProject(ctx(t), &lopnrv1.DestroyProjectRequest{Id: "p1", Reason: "the study has ended"})
	wantCode(t, "destroy under a hold", err, codes.FailedPrecondition, "")
	if p, err = approver.SetHold(ctx(t), &lopnrv1.SetHoldRequest{Id: "p1", Hold: false, Reason: "the complaint is settled"}); err != nil || p.Hold {
		t.Fatalf("release hold = %v, %v", p, err)
	}

	// A running job holds off destruction until it is cancelled.
	jobs := lopnrv1.NewJobServiceClient(f.conn("anna"))
	f.srv.gate = make(chan struct{}) // jobs wait at their start
	j, err := jobs.SubmitJob(ctx(t), &lopnrv1.SubmitJobRequest{Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	_, err = approver.DestroyProject(ctx(t), &lopnrv1.DestroyProjectRequest{Id: "p1", Reason: "the study has ended"})
	wantCode(t, "destroy with a queued job", err, codes.FailedPrecondition, "cancel them first")
	if c, err := jobs.CancelJob(ctx(t), &lopnrv1.CancelJobRequest{Id: j.Id}); err != nil || c.State != lopnrv1.JobState_JOB_STATE_CANCELLED {
		t.Fatalf("cancel = %v, %v", c, err)
	}
	_, err = jobs.CancelJob(ctx(t), &lopnrv1.CancelJobRequest{Id: j.Id})
	wantCode(t, "cancel twice", err, codes.FailedPrecondition, "finished")

	r, err := approver.DestroyProject(ctx(t), &lopnrv1.DestroyProjectRequest{Id: "p1", Reason: "the study has ended"})
	if err != nil || r.Digest == "" || r.Paths == 0 {
		t.Fatalf("destroy = %v, %v", r, err)
	}
	if p, err = approver.GetProject(ctx(t), &lopnrv1.GetProjectRequest{Id: "p1"}); err != nil || p.Destroyed == nil {
		t.Fatalf("project after destruction = %v, %v; want it marked destroyed", p, err)
	}
	_, err = jobs.SubmitJob(ctx(t), &lopnrv1.SubmitJobRequest{Spec: spec})
	wantCode(t, "a job after destruction", err, codes.FailedPrecondition, "destroyed")
	_, err = lopnrv1.NewKeyServiceClient(f.conn("bo")).RequestReidentification(ctx(t), &lopnrv1.RequestReidentificationRequest{Project: "p1", RunNumber: 1, Reason: "a question from the researcher"})
	wantCode(t, "re-identification after destruction", err, codes.FailedPrecondition, "destroyed")

	entries, err := lopnrv1.NewAuditServiceClient(f.conn("revisor")).ListAudit(ctx(t), &lopnrv1.ListAuditRequest{Project: "p1"})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range entries.Entries {
		if e.Outcome == "ok" {
			actions = append(actions, e.Action)
		}
	}
	if got := strings.Join(actions, " "); !strings.Contains(got, "project.extend project.hold project.release-hold") || !strings.Contains(got, "job.cancel") || !strings.Contains(got, "project.destroy") {
		t.Errorf("audited actions %q, want extend, hold, release-hold, cancel and destroy", got)
	}
}

// TestStaleWorkIsRemoved: a work directory that no live job owns (an
// import killed before its job was kept) is removed when the server opens.
func TestStaleWorkIsRemoved(t *testing.T) {
	f := newFixture(t, true)
	stale := f.srv.workDir("20260101-0000000000000000")
	if err := os.MkdirAll(filepath.Join(stale, "import"), 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(stale, "import", "partner.csv"), []byte("PNR\n"), 0o600)
	cfg := f.srv.cfg
	f.srv.Close()
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("a stale work directory survived a restart: %v", err)
	}
}
