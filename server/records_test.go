package server

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
	"google.golang.org/grpc/codes"

	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
)

// recordFile is where the server keeps the record id of kind.
func (f *fixture) recordFile(kind, id string) string {
	return filepath.Join(f.srv.cfg.DataDir, kind, id+".json")
}

// operatorEdits changes a record in the data directory as an operator who
// can write it would: its fields, keeping whatever else the file holds
// (its seal).
func (f *fixture) operatorEdits(kind, id string, edit func(rec map[string]any)) {
	f.t.Helper()
	path := f.recordFile(kind, id)
	b, err := os.ReadFile(path)
	if err != nil {
		f.t.Fatal(err)
	}
	var file map[string]any
	if err := json.Unmarshal(b, &file); err != nil {
		f.t.Fatal(err)
	}
	rec, ok := file["record"].(map[string]any)
	if !ok {
		rec = file
	}
	edit(rec)
	if b, err = json.MarshalIndent(file, "", "  "); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		f.t.Fatal(err)
	}
}

// stripSeals rewrites every record of the data directory as a lopnrd
// before sealing wrote it: the record alone.
func (f *fixture) stripSeals() {
	f.t.Helper()
	for _, kind := range recordKinds {
		entries, _ := os.ReadDir(filepath.Join(f.srv.cfg.DataDir, kind))
		for _, e := range entries {
			if !strings.HasSuffix(e.Name(), ".json") {
				continue
			}
			path := filepath.Join(f.srv.cfg.DataDir, kind, e.Name())
			b, err := os.ReadFile(path)
			if err != nil {
				f.t.Fatal(err)
			}
			var sealed struct{ Record json.RawMessage }
			if err := json.Unmarshal(b, &sealed); err != nil || sealed.Record == nil {
				f.t.Fatalf("%s is not sealed: %v", path, err)
			}
			if err := os.WriteFile(path, sealed.Record, 0o600); err != nil {
				f.t.Fatal(err)
			}
		}
	}
}

// restart stops the server and opens a new one on the same configuration,
// as lopnrd's next start does; it serves no calls.
func (f *fixture) restart() *Server {
	f.t.Helper()
	cfg := f.srv.cfg
	f.srv.Close()
	srv, err := New(cfg)
	if err != nil {
		f.t.Fatalf("restart: %v", err)
	}
	f.t.Cleanup(srv.Close)
	return srv
}

// wantRefusalLogged checks that the server logged the refusal of a record.
func (f *fixture) wantRefusalLogged(record string) {
	f.t.Helper()
	for _, l := range strings.Split(f.logs.String(), "\n") {
		if strings.Contains(l, `"msg":"record refused"`) && strings.Contains(l, record) && strings.Contains(l, "altered outside lopnrd") {
			return
		}
	}
	f.t.Errorf("the server's log does not say it refused %s", record)
}

// readsAny counts the delivered files under the test's directory that id
// decrypts.
func (f *fixture) readsAny(id age.Identity) int {
	read := 0
	filepath.WalkDir(f.dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(p) != ".age" {
			return nil
		}
		ct, _ := os.ReadFile(p)
		r, err := age.Decrypt(bytes.NewReader(ct), id)
		if err != nil {
			return nil
		}
		z, _ := zstd.NewReader(r)
		if n, _ := io.Copy(io.Discard, z); n > 0 {
			read++
		}
		return nil
	})
	return read
}

// TestOperatorCannotChangeAProjectsRulesOnDisk: a project's approved rules
// — recipients, allow_personnummer, approved variables, partners and their
// keys — are a file in the data directory, which jobs read. An operator
// who can write the data directory (but not the key store) adds their own
// age key to a project's recipients, so that the next job the extractor
// submits and an approver releases is encrypted to them too (with the
// source files, which the default source root keeps in the data directory,
// that joins LopNr to personnummer). The record's seal no longer verifies:
// the submission is refused naming the record, and so is a job submitted
// before the edit when it runs; the refusal is logged. The record lopnrd
// wrote, put back, is used again.
func TestOperatorCannotChangeAProjectsRulesOnDisk(t *testing.T) {
	f := newFixture(t, false)
	spec, _ := f.generate(60)
	researcher := researcherKey(t)
	if _, err := lopnrv1.NewProjectServiceClient(f.conn("drift")).CreateProject(ctx(t), &lopnrv1.CreateProjectRequest{Id: "p1", EpmDnr: "2026-00000-01",
		ApprovedVariables: approvedVariables(t), ApprovedSources: approvedSources(t), Recipients: []string{researcher.Recipient().String()}}); err != nil {
		t.Fatal(err)
	}
	f.approve("p1", "bo")
	// A job submitted before the edit, held at its start.
	f.srv.gate = make(chan struct{})
	jobs := lopnrv1.NewJobServiceClient(f.conn("anna"))
	early, err := jobs.SubmitJob(ctx(t), &lopnrv1.SubmitJobRequest{Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	lopnrd := f.recordFile("projects", "p1")
	approved, err := os.ReadFile(lopnrd)
	if err != nil {
		t.Fatal(err)
	}

	// The operator's edit.
	operator := researcherKey(t)
	f.operatorEdits("projects", "p1", func(rec map[string]any) {
		rec["recipients"] = append(rec["recipients"].([]any), operator.Recipient().String())
	})
	close(f.srv.gate)

	refused := "projects/p1.json was altered outside lopnrd (its seal does not verify)"
	if j := f.wait("anna", early.Id); j.State != lopnrv1.JobState_JOB_STATE_FAILED || !strings.Contains(j.Error, refused) {
		t.Errorf("the job submitted before the edit: %v %q, want it failed with %q", j.State, j.Error, refused)
	}
	j, err := jobs.SubmitJob(ctx(t), &lopnrv1.SubmitJobRequest{Spec: spec})
	if err == nil {
		// The attack as it went before records were sealed.
		if j = f.wait("anna", j.Id); j.State == lopnrv1.JobState_JOB_STATE_SUCCEEDED {
			if _, err := lopnrv1.NewDeliveryServiceClient(f.conn("bo")).ReleaseDelivery(ctx(t), &lopnrv1.ReleaseDeliveryRequest{Project: "p1", Delivery: j.Delivery}); err != nil {
				t.Fatal(err)
			}
		}
		t.Fatalf("a job on the edited rules was taken (%v); the operator's own key, written into projects/p1.json, reads %d files of the released delivery; no change was proposed, approved or audited",
			j.State, f.readsAny(operator))
	}
	wantCode(t, "a job on the edited rules", err, codes.FailedPrecondition, refused)
	_, err = lopnrv1.NewProjectServiceClient(f.conn("bo")).GetProject(ctx(t), &lopnrv1.GetProjectRequest{Id: "p1"})
	wantCode(t, "the edited project", err, codes.FailedPrecondition, refused)
	f.wantRefusalLogged("projects/p1.json")
	if n := f.readsAny(operator); n > 0 {
		t.Errorf("the operator's key reads %d delivered files", n)
	}

	// Put back as lopnrd wrote it, the record is used again.
	if err := os.WriteFile(lopnrd, approved, 0o600); err != nil {
		t.Fatal(err)
	}
	if j := f.runJobAs("anna", spec); j.State != lopnrv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("a job on the restored rules: %v %s", j.State, j.Error)
	}
}

// TestOperatorCannotReleaseADeliveryByEditingItsRecord: a delivery's
// record says where it is in its life; one that says "releasing" is
// finished (published) by the next start, since a release was under way
// when the server stopped. An operator edits a staged delivery's record to
// "releasing", in an approver's name, and restarts lopnrd: the record is
// refused, nothing is published, its files stay staged, the refusal is
// logged, and it cannot be released or listed.
func TestOperatorCannotReleaseADeliveryByEditingItsRecord(t *testing.T) {
	deliverySinks(t, func(t *testing.T, f *fixture, view sinkView) {
		spec, _ := f.generate(60)
		if _, err := lopnrv1.NewProjectServiceClient(f.conn("drift")).CreateProject(ctx(t), &lopnrv1.CreateProjectRequest{Id: "p1", EpmDnr: "2026-00000-01",
			ApprovedVariables: approvedVariables(t), ApprovedSources: approvedSources(t), Recipients: []string{researcherKey(t).Recipient().String()}}); err != nil {
			t.Fatal(err)
		}
		f.approve("p1", "bo")
		j := f.runJobAs("anna", spec)
		if j.State != lopnrv1.JobState_JOB_STATE_SUCCEEDED {
			t.Fatalf("job: %v %s", j.State, j.Error)
		}
		staged := view.staged(t, "p1", j.Delivery)
		if len(staged) == 0 || len(view.published(t, "p1", j.Delivery)) != 0 {
			t.Fatalf("before the edit: staged %v, published %v", staged, view.published(t, "p1", j.Delivery))
		}

		f.operatorEdits("deliveries", j.Delivery, func(rec map[string]any) {
			rec["state"], rec["released_by"] = string(deliveryReleasing), "CN=bo,O=Region Test"
		})
		srv := f.restart()

		if got := view.published(t, "p1", j.Delivery); len(got) != 0 {
			t.Errorf("the restart published the edited delivery: %v", got)
		}
		if got := view.staged(t, "p1", j.Delivery); len(got) != len(staged) {
			t.Errorf("staged after the restart: %v, want %v as they were", got, staged)
		}
		f.wantRefusalLogged("deliveries/" + j.Delivery + ".json")
		_, err := srv.delivery("p1", j.Delivery)
		if err == nil || !strings.Contains(err.Error(), "deliveries/"+j.Delivery+".json was altered outside lopnrd") {
			t.Errorf("the edited delivery after the restart: %v, want it refused naming its record", err)
		}
		if _, err := srv.markReleased(j.Delivery); err == nil {
			t.Error("the edited delivery was marked released")
		}
		all, err := srv.deliveries.list()
		if err != nil || len(all) != 0 {
			t.Errorf("deliveries listed after the restart: %v, %v; want none", all, err)
		}
	})
}

// TestOperatorCannotApproveAGrantOrAReidentificationOnDisk: a partner's
// key-file grant and a keyholder's re-identification request wait for a
// second person's approval, which their records keep. An operator writes
// an approver's name into both: the key file is not sent, the
// re-identification not made, both refused naming the record; so is a
// used grant edited back to unused.
func TestOperatorCannotApproveAGrantOrAReidentificationOnDisk(t *testing.T) {
	f := newFixture(t, false)
	f.partnerProject()
	sosKey, _ := age.GenerateX25519Identity()
	f.register("CN=sos,O=Region Test", sosKey.Recipient().String(), 0, "keyfile")
	sos := lopnrv1.NewPartnerServiceClient(f.conn("sos"))
	pending, err := sos.RequestKeyFile(ctx(t), &lopnrv1.RequestKeyFileRequest{Project: "p1", Reason: "linking the cause-of-death register"})
	if err != nil {
		t.Fatal(err)
	}
	used, err := sos.RequestKeyFile(ctx(t), &lopnrv1.RequestKeyFileRequest{Project: "p1", Reason: "the first linkage"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lopnrv1.NewPartnerServiceClient(f.conn("cecilia")).ApproveKeyFile(ctx(t), &lopnrv1.ApproveKeyFileRequest{Project: "p1", Id: used.Id}); err != nil {
		t.Fatal(err)
	}
	if b, err := keyFile(t, sos, used.Id); err != nil || len(b) == 0 {
		t.Fatalf("the approved key file: %d bytes, %v", len(b), err)
	}
	keys := lopnrv1.NewKeyServiceClient(f.conn("bo"))
	reident, err := keys.RequestReidentification(ctx(t), &lopnrv1.RequestReidentificationRequest{Project: "p1", RunNumber: 1, Reason: "a data error in LopNr 1"})
	if err != nil {
		t.Fatal(err)
	}

	f.operatorEdits("keyfile-grants", pending.Id, func(rec map[string]any) {
		rec["approved_by"], rec["approved"] = "CN=cecilia,O=Region Test", rec["requested"]
	})
	f.operatorEdits("keyfile-grants", used.Id, func(rec map[string]any) { delete(rec, "used") })
	f.operatorEdits("reidentifications", reident.Id, func(rec map[string]any) { rec["approved_by"] = "CN=cecilia,O=Region Test" })

	for _, id := range []string{pending.Id, used.Id} {
		b, err := keyFile(t, sos, id)
		wantCode(t, "a key file on an edited grant", err, codes.FailedPrecondition, "keyfile-grants/"+id+".json was altered outside lopnrd")
		if len(b) > 0 {
			t.Errorf("%d bytes of the key file sent on an edited grant", len(b))
		}
		f.wantRefusalLogged("keyfile-grants/" + id + ".json")
	}
	r, err := keys.Reidentify(ctx(t), &lopnrv1.ReidentifyRequest{Project: "p1", Id: reident.Id})
	wantCode(t, "a re-identification on an edited request", err, codes.FailedPrecondition, "reidentifications/"+reident.Id+".json was altered outside lopnrd")
	if r != nil {
		t.Errorf("re-identified on an edited request: %v", r)
	}
	f.wantRefusalLogged("reidentifications/" + reident.Id + ".json")
}

// TestOperatorCannotMoveARecordUnderAnotherID: a record lopnrd sealed
// verifies only under its own kind and id. An operator copies a key-file
// grant that a second person approved over another partner request's
// pending grant, and one project's approved rules over another project's:
// both are refused, naming the record and what it was sealed as.
func TestOperatorCannotMoveARecordUnderAnotherID(t *testing.T) {
	f := newFixture(t, false)
	f.partnerProject()
	sosKey, _ := age.GenerateX25519Identity()
	f.register("CN=sos,O=Region Test", sosKey.Recipient().String(), 0, "keyfile")
	sos := lopnrv1.NewPartnerServiceClient(f.conn("sos"))
	approved, err := sos.RequestKeyFile(ctx(t), &lopnrv1.RequestKeyFileRequest{Project: "p1", Reason: "linking the cause-of-death register"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lopnrv1.NewPartnerServiceClient(f.conn("cecilia")).ApproveKeyFile(ctx(t), &lopnrv1.ApproveKeyFileRequest{Project: "p1", Id: approved.Id}); err != nil {
		t.Fatal(err)
	}
	pending, err := sos.RequestKeyFile(ctx(t), &lopnrv1.RequestKeyFileRequest{Project: "p1", Reason: "a second linkage"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lopnrv1.NewProjectServiceClient(f.conn("drift")).CreateProject(ctx(t), &lopnrv1.CreateProjectRequest{Id: "p2", EpmDnr: "2026-00000-02",
		ApprovedVariables: approvedVariables(t), ApprovedSources: approvedSources(t), Recipients: []string{researcherKey(t).Recipient().String()}}); err != nil {
		t.Fatal(err)
	}

	copyRecord := func(kind, from, to string) {
		t.Helper()
		b, err := os.ReadFile(f.recordFile(kind, from))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f.recordFile(kind, to), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	copyRecord("keyfile-grants", approved.Id, pending.Id)
	copyRecord("projects", "p1", "p2")

	b, err := keyFile(t, sos, pending.Id)
	wantCode(t, "a key file on a grant copied over a pending one", err, codes.FailedPrecondition,
		"keyfile-grants/"+pending.Id+".json was altered outside lopnrd (it is sealed as keyfile-grants/"+approved.Id)
	if len(b) > 0 {
		t.Errorf("%d bytes of the key file sent on a copied grant", len(b))
	}
	_, err = lopnrv1.NewProjectServiceClient(f.conn("drift")).GetProject(ctx(t), &lopnrv1.GetProjectRequest{Id: "p2"})
	wantCode(t, "a project's rules copied over another's", err, codes.FailedPrecondition, "projects/p2.json was altered outside lopnrd (it is sealed as projects/p1")
	f.wantRefusalLogged("projects/p2.json")
}

// TestUnsealedRecordsAreAdoptedOnceAndAStrippedSealIsRefused: the records
// of a lopnrd from before sealing have no seal. The first start with
// sealing, on a key store that has never said the records are sealed,
// seals them and says so in the key store; they are used as they were.
// After that, a record stripped of its seal (to be adopted again with
// whatever the operator wrote) is refused.
func TestUnsealedRecordsAreAdoptedOnceAndAStrippedSealIsRefused(t *testing.T) {
	f := newFixture(t, false)
	spec, _ := f.generate(60)
	if _, err := lopnrv1.NewProjectServiceClient(f.conn("drift")).CreateProject(ctx(t), &lopnrv1.CreateProjectRequest{Id: "p1", EpmDnr: "2026-00000-01",
		ApprovedVariables: approvedVariables(t), ApprovedSources: approvedSources(t), Recipients: []string{researcherKey(t).Recipient().String()}}); err != nil {
		t.Fatal(err)
	}
	f.approve("p1", "bo")
	j := f.runJobAs("anna", spec)
	if j.State != lopnrv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job: %v %s", j.State, j.Error)
	}

	// The data directory as a lopnrd before sealing left it, with a key
	// store that has never sealed records.
	f.srv.Close()
	f.stripSeals()
	marker := filepath.Join(f.dir, "keystore", "kv", "service", "records", sealedMarker+".age")
	if err := os.Remove(marker); err != nil {
		t.Fatalf("the key store's marker: %v", err)
	}
	srv := f.restart()
	if !strings.Contains(f.logs.String(), `"msg":"records sealed`) {
		t.Error("the first start with sealing does not log that it sealed the records")
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("the first start with sealing left no marker in the key store: %v", err)
	}
	for _, kind := range []string{"projects", "deliveries", "jobs"} {
		entries, _ := os.ReadDir(filepath.Join(srv.cfg.DataDir, kind))
		for _, e := range entries {
			b, _ := os.ReadFile(filepath.Join(srv.cfg.DataDir, kind, e.Name()))
			if !bytes.Contains(b, []byte(`"hmac_sha256"`)) {
				t.Errorf("%s/%s is not sealed after the first start", kind, e.Name())
			}
		}
	}
	if _, err := srv.projects.get("p1"); err != nil {
		t.Errorf("the adopted project: %v", err)
	}
	if d, err := srv.delivery("p1", j.Delivery); err != nil || d.state() != deliveryStaged {
		t.Errorf("the adopted delivery: %v, %v", d.state(), err)
	}
	if got, err := srv.jobs.Get(j.Id); err != nil || got.State != "succeeded" {
		t.Errorf("the adopted job: %v, %v", got.State, err)
	}

	// Later, the operator strips the seal and edits the rules.
	srv.Close()
	f.srv = srv
	f.stripSeals()
	f.operatorEdits("projects", "p1", func(rec map[string]any) { rec["allow_personnummer"] = true })
	srv = f.restart()
	_, err := srv.projects.get("p1")
	if err == nil || !strings.Contains(err.Error(), "projects/p1.json was altered outside lopnrd (it has no seal)") {
		t.Errorf("a project stripped of its seal after adoption: %v, want it refused", err)
	}
	if _, err := srv.jobs.Get(j.Id); err == nil {
		t.Error("a job stripped of its seal after adoption was taken")
	}
	f.wantRefusalLogged("jobs/" + j.Id + ".json")
}

// TestOperatorCannotRollBackAProjectsRules: a sealed record cannot be
// edited, but an older sealed version of it can be put back. The rules a
// change replaced — here a lost researcher's key, removed by an approved
// change — would come back with the copy an operator kept. The key store
// keeps the newest approved change of each project, and a record behind
// it is refused.
func TestOperatorCannotRollBackAProjectsRules(t *testing.T) {
	f := newFixture(t, false)
	spec, _ := f.generate(60)
	researcher, lost := researcherKey(t), researcherKey(t)
	projects := lopnrv1.NewProjectServiceClient(f.conn("drift"))
	if _, err := projects.CreateProject(ctx(t), &lopnrv1.CreateProjectRequest{Id: "p1", EpmDnr: "2026-00000-01",
		ApprovedVariables: approvedVariables(t), ApprovedSources: approvedSources(t),
		Recipients: []string{researcher.Recipient().String(), lost.Recipient().String()}}); err != nil {
		t.Fatal(err)
	}
	f.approve("p1", "bo")
	file := f.recordFile("projects", "p1")
	kept, err := os.ReadFile(file) // the operator's copy, with the lost key
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lopnrv1.NewProjectServiceClient(f.conn("cecilia")).ProposeChange(ctx(t), &lopnrv1.ProposeChangeRequest{Project: "p1",
		Reason: "a researcher lost their key", Rules: &lopnrv1.ProjectRules{ApprovedVariables: approvedVariables(t),
			ApprovedSources: approvedSources(t), Recipients: []string{researcher.Recipient().String()}}}); err != nil {
		t.Fatal(err)
	}
	f.approve("p1", "bo")
	newest, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}

	if err := os.WriteFile(file, kept, 0o600); err != nil {
		t.Fatal(err)
	}
	jobs := lopnrv1.NewJobServiceClient(f.conn("anna"))
	j, err := jobs.SubmitJob(ctx(t), &lopnrv1.SubmitJobRequest{Spec: spec})
	if err == nil {
		if j = f.wait("anna", j.Id); j.State == lopnrv1.JobState_JOB_STATE_SUCCEEDED {
			if _, err := lopnrv1.NewDeliveryServiceClient(f.conn("bo")).ReleaseDelivery(ctx(t), &lopnrv1.ReleaseDeliveryRequest{Project: "p1", Delivery: j.Delivery}); err != nil {
				t.Fatal(err)
			}
		}
		t.Fatalf("a job on the rules put back was taken (%v); the lost key reads %d files of the released delivery", j.State, f.readsAny(lost))
	}
	wantCode(t, "a job on the rules put back", err, codes.FailedPrecondition, "projects/p1.json was put back to an older version")
	if !strings.Contains(f.logs.String(), `"msg":"record refused","record":"projects/p1.json","why":"rolled back"`) {
		t.Errorf("the server's log does not say it refused the record put back")
	}

	if err := os.WriteFile(file, newest, 0o600); err != nil {
		t.Fatal(err)
	}
	if j := f.runJobAs("anna", spec); j.State != lopnrv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("a job on the newest rules: %v %s", j.State, j.Error)
	}
	if n := f.readsAny(lost); n > 0 {
		t.Errorf("the lost key reads %d delivered files", n)
	}
}
