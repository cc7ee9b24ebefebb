package server

import (
	"bytes"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/lopnr/lopnr/extract"
	"github.com/lopnr/lopnr/internal/synth"
	"github.com/lopnr/lopnr/internal/testenv"
	"github.com/lopnr/lopnr/linkage/personnummer"
	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
)

// approvedVariables turns the synthetic job's approved list into the API's.
func approvedVariables(t *testing.T) []*lopnrv1.ApprovedVariable {
	t.Helper()
	var a extract.Approval
	if err := yaml.Unmarshal([]byte(synth.Approved), &a); err != nil {
		t.Fatal(err)
	}
	var out []*lopnrv1.ApprovedVariable
	for _, v := range a.Variables {
		out = append(out, &lopnrv1.ApprovedVariable{Source: v.Source, Column: v.Column, Transforms: v.Transforms})
	}
	return out
}

// generate writes synthetic sources into project p1's directory of the
// source root and returns the job spec for project p1.
func (f *fixture) generate(persons int) ([]byte, *synth.Truth) {
	f.t.Helper()
	root := filepath.Join(f.srv.cfg.SourceRoot, "p1")
	truth, err := synth.Generate(root, synth.Options{Persons: persons, Seed: 7})
	if err != nil {
		f.t.Fatal(err)
	}
	spec, err := os.ReadFile(filepath.Join(root, synth.JobFile))
	if err != nil {
		f.t.Fatal(err)
	}
	return regexp.MustCompile(`(?m)^project: .*$`).ReplaceAll(spec, []byte("project: p1")), truth
}

func TestJobDeliveryReleaseAndReidentification(t *testing.T) {
	f := newFixture(t, false)
	spec, truth := f.generate(400)
	researcher := researcherKey(t)
	admin := lopnrv1.NewProjectServiceClient(f.conn("drift"))
	anna := f.conn("anna")
	bo, cecilia := f.conn("bo"), f.conn("cecilia")
	forskare, annan, revisor := f.conn("forskare"), f.conn("annan"), f.conn("revisor")

	// An admin registers the project; a bad request names the field.
	_, err := admin.CreateProject(ctx(t), &lopnrv1.CreateProjectRequest{Id: "p1", EpmDnr: "2026-00000-01",
		ApprovedVariables: approvedVariables(t), ApprovedSources: approvedSources(t), Recipients: []string{"not-a-key"}})
	wantCode(t, "CreateProject with a bad recipient", err, codes.InvalidArgument, "recipients")
	p, err := admin.CreateProject(ctx(t), &lopnrv1.CreateProjectRequest{Id: "p1", EpmDnr: "2026-00000-01",
		ApprovedVariables: approvedVariables(t), ApprovedSources: approvedSources(t), Recipients: []string{researcher.Recipient().String()}, RetentionDays: 120})
	if err != nil {
		t.Fatalf("CreateProject: %v", err)
	}
	if d := time.Until(p.RetainUntil.AsTime()); d < 119*24*time.Hour || d > 121*24*time.Hour {
		t.Errorf("retain_until %v, want 120 days from now", p.RetainUntil.AsTime())
	}
	f.approve("p1", "bo")
	_, err = lopnrv1.NewProjectServiceClient(anna).CreateProject(ctx(t), &lopnrv1.CreateProjectRequest{Id: "p2", EpmDnr: "x",
		ApprovedVariables: approvedVariables(t), ApprovedSources: approvedSources(t), Recipients: []string{researcher.Recipient().String()}})
	wantCode(t, "an extractor of p1 creating p2", err, codes.PermissionDenied, "project.create")

	// The extractor submits; an unapproved variable or a source outside
	// the source root is refused before anything runs.
	jobs := lopnrv1.NewJobServiceClient(anna)
	_, err = jobs.SubmitJob(ctx(t), &lopnrv1.SubmitJobRequest{Spec: bytes.Replace(spec, []byte("column: ATC, transform: keep"), []byte("column: ATC, transform: keep}\n  - {source: lmed, column: EDATUM, transform: keep"), 1)})
	wantCode(t, "a job with an unapproved variable", err, codes.InvalidArgument, "not on the project's approved variable list")
	_, err = jobs.SubmitJob(ctx(t), &lopnrv1.SubmitJobRequest{Spec: bytes.Replace(spec, []byte("path: lmed.csv.zst"), []byte("path: ../../etc/lmed.csv.zst"), 1)})
	wantCode(t, "a job reading outside the source root", err, codes.InvalidArgument, "source root")
	_, err = jobs.SubmitJob(ctx(t), &lopnrv1.SubmitJobRequest{Spec: append(bytes.Clone(spec), "recipients: ["+researcherKey(t).Recipient().String()+"]\n"...)})
	wantCode(t, "a job for a recipient the project does not have", err, codes.InvalidArgument, "recipients[0]: one of the project's registered recipients")
	job, err := jobs.SubmitJob(ctx(t), &lopnrv1.SubmitJobRequest{Spec: spec})
	if err != nil {
		t.Fatalf("SubmitJob: %v", err)
	}
	watch, err := jobs.WatchJob(ctx(t), &lopnrv1.WatchJobRequest{Id: job.Id})
	if err != nil {
		t.Fatal(err)
	}
	stages := map[string]bool{}
	var last *lopnrv1.JobEvent
	for {
		e, err := watch.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		stages[e.Stage], last = true, e
	}
	if last.GetState() != lopnrv1.JobState_JOB_STATE_SUCCEEDED {
		j, _ := jobs.GetJob(ctx(t), &lopnrv1.GetJobRequest{Id: job.Id})
		t.Fatalf("job ended %v: %s", last.GetState(), j.GetError())
	}
	for _, s := range []string{"ingest", "cohort", "assign", "file", "succeeded"} {
		if !stages[s] {
			t.Errorf("watch never showed stage %q (saw %v)", s, stages)
		}
	}
	j, err := jobs.GetJob(ctx(t), &lopnrv1.GetJobRequest{Id: job.Id})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(j.Report, "persons") || j.Delivery == "" {
		t.Errorf("finished job: delivery %q, report %q; want both", j.Delivery, j.Report)
	}
	_, err = lopnrv1.NewJobServiceClient(forskare).GetJob(ctx(t), &lopnrv1.GetJobRequest{Id: job.Id})
	wantCode(t, "a researcher reading a job", err, codes.PermissionDenied, "job.get")

	// Four eyes: the extractor cannot release; the researcher sees nothing
	// until an approver has.
	rel := &lopnrv1.ReleaseDeliveryRequest{Project: "p1", Delivery: j.Delivery}
	_, err = lopnrv1.NewDeliveryServiceClient(anna).ReleaseDelivery(ctx(t), rel)
	wantCode(t, "the extractor releasing", err, codes.PermissionDenied, "")
	researcherDeliveries := lopnrv1.NewDeliveryServiceClient(forskare)
	list, err := researcherDeliveries.ListDeliveries(ctx(t), &lopnrv1.ListDeliveriesRequest{Project: "p1"})
	if err != nil || len(list.Deliveries) != 0 {
		t.Fatalf("researcher's list before release = %v, %v; want empty", list, err)
	}
	presign := &lopnrv1.PresignDeliveryRequest{Project: "p1", Delivery: j.Delivery, Expiry: durationpb.New(time.Hour)}
	_, err = researcherDeliveries.PresignDelivery(ctx(t), presign)
	wantCode(t, "presign before release", err, codes.FailedPrecondition, "not released")
	d, err := lopnrv1.NewDeliveryServiceClient(bo).ReleaseDelivery(ctx(t), rel)
	if err != nil || !d.Released || d.ReleasedBy != "CN=bo,O=Region Test" {
		t.Fatalf("approver's release = %v, %v", d, err)
	}
	_, err = lopnrv1.NewDeliveryServiceClient(annan).PresignDelivery(ctx(t), presign)
	wantCode(t, "a researcher of another project", err, codes.PermissionDenied, "delivery.presign")
	_, err = lopnrv1.NewDeliveryServiceClient(annan).ListDeliveries(ctx(t), &lopnrv1.ListDeliveriesRequest{Project: "p1"})
	wantCode(t, "a researcher of another project listing", err, codes.PermissionDenied, "delivery.list")

	// The project's researcher gets links (file:// for a directory sink)
	// and decrypts with the key the project names.
	links, err := researcherDeliveries.PresignDelivery(ctx(t), presign)
	if err != nil {
		t.Fatalf("presign: %v", err)
	}
	if len(links.Files) != len(d.Files)*2+3 {
		t.Errorf("presigned %d files, want every data file, codebook, manifest, signature and README", len(links.Files))
	}
	u, err := url.Parse(links.Files[0].Url)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := os.Open(u.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	plain, err := age.Decrypt(enc, researcher)
	if err != nil {
		t.Fatalf("decrypt %s: %v", links.Files[0].Name, err)
	}
	zr, err := zstd.NewReader(plain)
	if err != nil {
		t.Fatal(err)
	}
	csv, err := io.ReadAll(zr)
	zr.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(csv, []byte("LopNr;")) || int64(bytes.Count(csv, []byte("\n"))-1) != d.Files[0].Rows {
		t.Errorf("decrypted %s: %d lines, header %q; want LopNr first and %d rows", d.Files[0].Name, bytes.Count(csv, []byte("\n")), csv[:min(len(csv), 40)], d.Files[0].Rows)
	}
	testenv.NoIdentityNumbers(t, "the delivered file", string(csv))
	if p, err := admin.GetProject(ctx(t), &lopnrv1.GetProjectRequest{Id: "p1"}); err != nil || p.Persons != int64(truth.Cohort.Persons) {
		t.Errorf("project persons = %d, %v; want the cohort's %d", p.GetPersons(), err, truth.Cohort.Persons)
	}

	// Re-identification: a reason, a second person, the answer once to
	// the key holder who asked.
	keysBo, keysCecilia := lopnrv1.NewKeyServiceClient(bo), lopnrv1.NewKeyServiceClient(cecilia)
	_, err = keysBo.RequestReidentification(ctx(t), &lopnrv1.RequestReidentificationRequest{Project: "p1", RunNumber: 1})
	wantCode(t, "re-identification without a reason", err, codes.InvalidArgument, "reason")
	req, err := keysBo.RequestReidentification(ctx(t), &lopnrv1.RequestReidentificationRequest{Project: "p1", RunNumber: 1, Reason: "the researcher reports a data error in LopNr 1"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = keysBo.Reidentify(ctx(t), &lopnrv1.ReidentifyRequest{Project: "p1", Id: req.Id})
	wantCode(t, "re-identify before approval", err, codes.FailedPrecondition, "approval")
	_, err = keysBo.ApproveReidentification(ctx(t), &lopnrv1.ApproveReidentificationRequest{Project: "p1", Id: req.Id})
	wantCode(t, "approving one's own request", err, codes.PermissionDenied, "second person")
	if _, err := keysCecilia.ApproveReidentification(ctx(t), &lopnrv1.ApproveReidentificationRequest{Project: "p1", Id: req.Id}); err != nil {
		t.Fatal(err)
	}
	_, err = keysCecilia.Reidentify(ctx(t), &lopnrv1.ReidentifyRequest{Project: "p1", Id: req.Id})
	wantCode(t, "the approver taking the answer", err, codes.PermissionDenied, "who asked")
	answer, err := keysBo.Reidentify(ctx(t), &lopnrv1.ReidentifyRequest{Project: "p1", Id: req.Id})
	if err != nil {
		t.Fatal(err)
	}
	if n := personnummer.Parse(answer.Personnummer, time.Now()); !n.Linkable() {
		t.Errorf("re-identification answered something that is not a linkable identity number")
	}
	_, err = keysBo.Reidentify(ctx(t), &lopnrv1.ReidentifyRequest{Project: "p1", Id: req.Id})
	wantCode(t, "a second answer", err, codes.FailedPrecondition, "answered already")

	// The audit log has it all and verifies; one changed byte breaks it.
	auditor := lopnrv1.NewAuditServiceClient(revisor)
	entries, err := auditor.ListAudit(ctx(t), &lopnrv1.ListAuditRequest{Project: "p1"})
	if err != nil {
		t.Fatal(err)
	}
	var sawDeniedRelease, sawReident, sawFinish bool
	for _, e := range entries.Entries {
		sawDeniedRelease = sawDeniedRelease || e.Action == "delivery.release" && e.Outcome == "denied" && e.Identity == "CN=anna,O=Region Test"
		sawReident = sawReident || e.Action == "key.reidentify" && e.Outcome == "ok" && strings.Contains(e.Reason, "data error")
		sawFinish = sawFinish || e.Action == "job.finish" && e.Job == job.Id && e.Outcome == "ok"
	}
	if !sawDeniedRelease || !sawReident || !sawFinish {
		t.Errorf("audit entries: denied release %v, re-identification with reason %v, job finish %v; want all", sawDeniedRelease, sawReident, sawFinish)
	}
	_, err = lopnrv1.NewAuditServiceClient(anna).ListAudit(ctx(t), &lopnrv1.ListAuditRequest{Project: "p1"})
	wantCode(t, "an extractor reading the audit log", err, codes.PermissionDenied, "audit.list")
	v, err := auditor.VerifyAudit(ctx(t), &lopnrv1.VerifyAuditRequest{})
	if err != nil || !v.Ok || v.HeadSeq < int64(len(entries.Entries)) {
		t.Fatalf("VerifyAudit = %v, %v; want ok", v, err)
	}
	b, err := os.ReadFile(f.auditFn)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b, []byte(`"outcome":"denied"`))
	b[i+len(`"outcome":"d`)] = 'D'
	if err := os.WriteFile(f.auditFn, b, 0o600); err != nil {
		t.Fatal(err)
	}
	v, err = auditor.VerifyAudit(ctx(t), &lopnrv1.VerifyAuditRequest{})
	if err != nil || v.Ok || !strings.Contains(v.Problem, "altered") {
		t.Fatalf("VerifyAudit after one byte changed = %v, %v; want not ok, naming the altered entry", v, err)
	}

	testenv.NoIdentityNumbers(t, "the server log", f.logs.String())
	testenv.NoIdentityNumbers(t, "the audit log", string(b))
}
