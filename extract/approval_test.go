package extract

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/lopnr/lopnr/internal/synth"
	"github.com/lopnr/lopnr/keystore"
	"github.com/lopnr/lopnr/keystore/local"
	"github.com/lopnr/lopnr/linkage"
)

// The approved list holds for the data read (docs/security.md): a job
// spec cannot make an approved column name stand for another column of
// the file, by naming the columns itself, renaming them, or reading the
// source with another profile.

// regApproved approves column X of source reg, a file with a header read
// with the custom profile reg-export, and a cohort list.
const regApproved = `sources:
  - name: reg
    profile: reg-export
    profile_yaml: |
      name: reg-export
      kind: events
      identity: PNR
  - {name: cohort, profile: cohort-list}
variables:
  - {source: reg, column: X}
`

// regJob reads reg.csv (PNR;DIAG;X) with the approved profile; its cohort
// is a list.
const regJob = `project: attack
reference_date: 2026-11-25
profiles:
  - {name: reg-export, kind: events, identity: PNR}
sources:
  - {name: reg, profile: reg-export, path: reg.csv}
  - {name: cohort, profile: cohort-list, path: cohort.csv}
cohort: {list: cohort}
variables:
  - {source: reg, column: X}
`

// attackFiles writes reg.csv, a file with a header PNR;DIAG;X whose DIAG
// is not approved, and headerless reg.dat with the same rows, and the
// cohort; it returns the directory.
func attackFiles(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	var rows, cohort strings.Builder
	cohort.WriteString("PNR\n")
	for i := range 5 {
		n := testNumber(t, 20000+1000*i)
		rows.WriteString(n + ";F32.1-DIAGNOSIS;x-value\n")
		cohort.WriteString(n + "\n")
	}
	for name, data := range map[string]string{
		"reg.csv": "PNR;DIAG;X\n" + rows.String(), "reg.dat": rows.String(), "cohort.csv": cohort.String(),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// attack parses a job spec in dir as an extractor wrote it.
func attack(t *testing.T, dir, spec string) *linkage.JobSpec {
	t.Helper()
	path := filepath.Join(dir, "job.yaml")
	if err := os.WriteFile(path, []byte(spec), 0o600); err != nil {
		t.Fatal(err)
	}
	js, err := linkage.LoadSpec(path)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func mustApproval(t *testing.T, y string) Approval {
	t.Helper()
	a, err := ParseApproval([]byte(y), "approved.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// deliverAttack links and delivers js to a fresh directory and returns
// what the researcher reads (the CSV) and the error.
func deliverAttack(t *testing.T, js *linkage.JobSpec, appr Approval) (string, string, error) {
	t.Helper()
	ctx := context.Background()
	res, err := linkage.Link(ctx, js, linkage.Options{MemoryLimit: "1GB"})
	if err != nil {
		return "", "", err
	}
	defer res.Close()
	store, err := local.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	keys := keystore.New(store, keystore.Options{})
	if _, err := keys.CreateProject(ctx, keystore.ProjectSpec{ID: js.Project, EPMDnr: "x"}); err != nil {
		t.Fatal(err)
	}
	id, _ := age.GenerateX25519Identity()
	signer, err := LoadOrCreateSigner(filepath.Join(t.TempDir(), "k"))
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	sink, err := NewDirSink(out)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Deliver(ctx, res, Options{Approval: appr, Keys: keys, Recipients: []age.Recipient{id.Recipient()}, Sink: sink, Signer: signer, SpecBytes: []byte("x")})
	if err != nil {
		return out, "", err
	}
	f := m.Files[0]
	ct, err := os.ReadFile(filepath.Join(out, m.Project, m.Delivery, f.Name))
	if err != nil {
		// Published elsewhere (a staging area): find it.
		filepath.WalkDir(out, func(p string, d os.DirEntry, _ error) error {
			if d != nil && d.Name() == f.Name {
				ct, err = os.ReadFile(p)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	r, err := age.Decrypt(bytes.NewReader(ct), id)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(f.Name, ".zst.age") {
		b, err := io.ReadAll(r) // Parquet
		if err != nil {
			t.Fatal(err)
		}
		return out, string(b), nil
	}
	return out, string(readZstd(t, r)), nil
}

// TestExtractorCannotDeliverAnUnapprovedColumnUnderAnApprovedName replays
// the attack of issue 15: over a file PNR;DIAG;X whose X is approved and
// DIAG is not, a spec declaring header: false and columns [PNR, X,
// NOT_APPROVED] delivered DIAG under the name X. Now it is refused before
// anything runs, naming the fields, by CheckApproval (what lopnr run and
// lopnrd's SubmitJob call) and again by Deliver; nothing is delivered.
// The variants — rename, a profile of the spec's own, the approved
// profile's name given to another profile, another built-in profile — are
// refused the same way.
func TestExtractorCannotDeliverAnUnapprovedColumnUnderAnApprovedName(t *testing.T) {
	dir := attackFiles(t)
	appr := mustApproval(t, regApproved)

	// The approved reading delivers X as X.
	_, csv, err := deliverAttack(t, attack(t, dir, regJob), appr)
	if err != nil {
		t.Fatalf("the approved job: %v", err)
	}
	if !strings.Contains(csv, "x-value") || strings.Contains(csv, "DIAGNOSIS") {
		t.Fatalf("the approved job delivered %q", csv)
	}

	// The headerless reading of the same file, as the issue found it.
	spec := strings.Replace(regJob, "path: reg.csv}", "path: reg.csv, header: false, columns: [PNR, X, NOT_APPROVED]}", 1)
	js := attack(t, dir, spec)
	err = CheckApproval(js, appr)
	for _, want := range []string{"sources[0].header: ", "sources[0].columns: "} {
		if !errors.Is(err, ErrNotApproved) || !strings.Contains(fmtErr(err), want) {
			t.Errorf("CheckApproval: %v, want ErrNotApproved naming %s", err, want)
		}
	}
	out, csv, err := deliverAttack(t, js, appr)
	if !errors.Is(err, ErrNotApproved) || !strings.Contains(err.Error(), "sources[0].columns") {
		t.Errorf("Deliver: %v, want ErrNotApproved naming sources[0].columns", err)
	}
	if strings.Contains(csv, "DIAGNOSIS") || countFiles(out) != 0 {
		t.Fatalf("DIAG was delivered as X: %q (%d files)", csv, countFiles(out))
	}

	// The variants.
	headerless := `sources:
  - name: reg
    profile: reg-dat
    profile_yaml: |
      name: reg-dat
      kind: events
      header: false
      columns: [PNR, DIAG, X]
      identity: PNR
  - {name: cohort, profile: cohort-list}
variables:
  - {source: reg, column: X}
`
	datJob := strings.NewReplacer("{name: reg-export, kind: events, identity: PNR}", "{name: reg-dat, kind: events, header: false, columns: [PNR, DIAG, X], identity: PNR}",
		"profile: reg-export, path: reg.csv", "profile: reg-dat, path: reg.dat").Replace(regJob)
	for _, tc := range []struct {
		name, approved, spec, want string
	}{
		{"rename, over a file without a header", headerless,
			strings.Replace(datJob, "path: reg.dat}", "path: reg.dat, rename: {DIAG: X, X: NOT_APPROVED}}", 1), "sources[0].rename: "},
		{"a profile of the spec's own", regApproved,
			strings.NewReplacer("{name: reg-export, kind: events, identity: PNR}", "{name: reg-mine, kind: events, header: false, columns: [PNR, X, NOT_APPROVED], identity: PNR}",
				"profile: reg-export", "profile: reg-mine").Replace(regJob), `sources[0].profile: "reg-mine": the approved list reads source reg with profile "reg-export"`},
		{"another profile under the approved profile's name", regApproved,
			strings.Replace(regJob, "{name: reg-export, kind: events, identity: PNR}", "{name: reg-export, kind: events, header: false, columns: [PNR, X, NOT_APPROVED], identity: PNR}", 1),
			`profiles[0].header: profile "reg-export" differs from the one the approved list approves`},
		{"another built-in profile", regApproved,
			strings.NewReplacer("{name: reg-export, kind: events, identity: PNR}", "{name: other, kind: events, identity: PNR}", "profile: reg-export", "profile: takecare").Replace(regJob),
			`sources[0].profile: "takecare": the approved list reads source reg with profile "reg-export"`},
		{"the delimiter", regApproved, strings.Replace(regJob, "path: reg.csv}", "path: reg.csv, delimiter: ','}", 1), "sources[0].delimiter: "},
		{"the quote", regApproved, strings.Replace(regJob, "path: reg.csv}", "path: reg.csv, quote: \"'\"}", 1), "sources[0].quote: "},
		{"the identity", regApproved, strings.Replace(regJob, "path: reg.csv}", "path: reg.csv, identity: DIAG}", 1), "sources[0].identity: "},
		{"a variable of a source not approved", regApproved,
			strings.NewReplacer("name: reg,", "name: reg2,", "{source: reg, column: X}", "{source: reg2, column: X}").Replace(regJob), `variables[0].source: "reg2" is not a source on the project's approved list`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			appr := mustApproval(t, tc.approved)
			js := attack(t, dir, tc.spec)
			if err := CheckApproval(js, appr); !errors.Is(err, ErrNotApproved) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("CheckApproval: %v, want ErrNotApproved naming %q", err, tc.want)
			}
			out, csv, err := deliverAttack(t, js, appr)
			if err == nil || strings.Contains(csv, "DIAGNOSIS") || countFiles(out) != 0 {
				t.Fatalf("delivered %q (%v, %d files)", csv, err, countFiles(out))
			}
		})
	}

	// What a job may set of an approved source: its path, encoding and
	// compression.
	ok := strings.Replace(regJob, "path: reg.csv}", "path: ./reg.csv, encoding: utf-8, compression: none}", 1)
	if err := CheckApproval(attack(t, dir, ok), appr); err != nil {
		t.Errorf("path, encoding, compression: %v", err)
	}
	ok = strings.Replace(datJob, "{source: reg, column: X}", "{source: reg, column: X}", 1)
	if _, csv, err := deliverAttack(t, attack(t, dir, ok), mustApproval(t, headerless)); err != nil || !strings.Contains(csv, "x-value") || strings.Contains(csv, "DIAGNOSIS") {
		t.Errorf("the approved headerless reading: %q, %v", csv, err)
	}
}

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestApprovedListNamesItsErrors: an approved list's sources and
// variables are checked, each error naming its field.
func TestApprovedListNamesItsErrors(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"a variable without its source", "sources: [{name: par, profile: par-sluten}]\nvariables: [{source: lmed, column: ATC}]\n",
			`variables[0].source: "lmed" is not among the approved sources`},
		{"no sources", "variables: [{source: lmed, column: ATC}]\n", `variables[0].source: "lmed" is not among the approved sources`},
		{"an unknown built-in", "sources: [{name: lmed, profile: lmedd}]\nvariables: [{source: lmed, column: ATC}]\n", `sources[0].profile: "lmedd" is not a built-in profile`},
		{"no profile", "sources: [{name: lmed}]\nvariables: [{source: lmed, column: ATC}]\n", `sources[0].profile: missing`},
		{"twice", "sources: [{name: lmed, profile: lmed}, {name: lmed, profile: lmed}]\nvariables: [{source: lmed, column: ATC}]\n", `sources[1].name: "lmed" is approved twice`},
		{"a custom profile under a built-in's name", "sources: [{name: lmed, profile: lmed, profile_yaml: 'name: lmed'}]\nvariables: [{source: lmed, column: ATC}]\n", `sources[0].profile_yaml: a custom profile named "lmed"`},
		{"a custom profile that does not parse", "sources: [{name: reg, profile: reg-x, profile_yaml: \"name: reg-x\\nkind: nonsense\\n\"}]\nvariables: [{source: reg, column: X}]\n", `sources[0].profile_yaml.kind: unknown kind "nonsense"`},
		{"a custom profile of another name", "sources: [{name: reg, profile: reg-x, profile_yaml: \"name: reg-y\\nkind: events\\nidentity: PNR\\n\"}]\nvariables: [{source: reg, column: X}]\n", `sources[0].profile_yaml: the profile is named "reg-y"`},
		{"a bad source name", "sources: [{name: Reg, profile: lmed}]\nvariables: [{source: Reg, column: X}]\n", `sources[0].name: "Reg"`},
	} {
		_, err := ParseApproval([]byte(tc.yaml), "approved.yaml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
	if _, err := ParseApproval([]byte(regApproved), "approved.yaml"); err != nil {
		t.Errorf("regApproved: %v", err)
	}
	if err := mustApproval(t, regApproved).Check(); err != nil {
		t.Errorf("Check: %v", err)
	}
}

// TestExtractorCannotChooseTheCohortByAnUnapprovedSource: the approved
// list bound what is delivered of each person, not who is delivered. A
// job whose cohort is the persons with a diagnosis the project may not
// have — criteria on a source the list does not name — passed every
// check, and each delivered LopNr said that person has it (jobs with
// other criteria, joined on LopNr by the researcher, give it per person;
// age-at-index is the age at that event). So did a cohort list, or
// identity sources, the list does not name. Every source a job reads must
// now be approved, with its profile; the job is refused before anything
// runs, naming each field, and nothing is delivered.
func TestExtractorCannotChooseTheCohortByAnUnapprovedSource(t *testing.T) {
	dir := t.TempDir()
	if _, err := synth.Generate(dir, synth.Options{Persons: 50, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, synth.JobFile))
	if err != nil {
		t.Fatal(err)
	}
	// The synthetic job as it is, with synth.Approved: every source it
	// reads is approved.
	if err := CheckApproval(attack(t, dir, string(raw)), mustApproval(t, synth.Approved)); err != nil {
		t.Fatalf("the synthetic job against synth.Approved: %v", err)
	}

	// The attack as the review found it: the cohort is schizophrenia in
	// par_sluten, and the list approves the drug register only.
	spec := strings.Replace(string(raw), "codes: [I21, I22]", "codes: [F20]", 1)
	spec = spec[:strings.Index(spec, "variables:")] + "variables:\n  - {source: lmed, column: ATC, transform: keep}\n"
	profiles := map[string]string{"val_sluten": "val-slutenvard", "val_oppen": "val-oppenvard", "takecare": "takecare", "par_sluten": "par-sluten",
		"par_oppen": "par-oppen", "lmed": "lmed", "dors": "dors", "reused": "cohort-list", "history": "pnr-history"}
	only := func(names ...string) Approval {
		y := "sources:\n"
		for _, n := range names {
			y += "  - {name: " + n + ", profile: " + profiles[n] + "}\n"
		}
		return mustApproval(t, y+"variables:\n  - {source: lmed, column: ATC}\n")
	}
	js := attack(t, dir, spec)
	err = CheckApproval(js, only("lmed"))
	for _, want := range []string{
		`cohort.criteria[0].source: "par_sluten" is not a source on the project's approved list`,
		`identity.history: "history" is not`, `identity.reused: "reused" is not`,
		`sources[0].name: "val_sluten" is not`, `sources[4].name: "par_oppen" is not`,
	} {
		if !errors.Is(err, ErrNotApproved) || !strings.Contains(fmtErr(err), want) {
			t.Errorf("CheckApproval: %v\nwant ErrNotApproved naming %s", err, want)
		}
	}
	// Approve everything but par_sluten: the cohort's source alone is
	// named.
	all := []string{"val_sluten", "val_oppen", "takecare", "par_oppen", "lmed", "dors", "reused", "history"}
	err = CheckApproval(js, only(all...))
	if msg := fmtErr(err); !errors.Is(err, ErrNotApproved) || strings.Count(msg, "\n") != 0 || !strings.Contains(msg, "cohort.criteria[0].source: ") {
		t.Errorf("CheckApproval: %v, want only cohort.criteria[0].source", err)
	}
	if err := CheckApproval(js, only(append(all, "par_sluten")...)); err != nil {
		t.Errorf("with par_sluten approved: %v", err)
	}

	// A cohort list that the approved list does not name.
	list := attackFiles(t)
	appr := mustApproval(t, strings.Replace(regApproved, "  - {name: cohort, profile: cohort-list}\n", "", 1))
	js = attack(t, list, regJob)
	if err := CheckApproval(js, appr); !errors.Is(err, ErrNotApproved) || !strings.Contains(err.Error(), `cohort.list: "cohort" is not a source on the project's approved list`) {
		t.Errorf("CheckApproval, an unapproved cohort list: %v", err)
	}
	out, csv, err := deliverAttack(t, js, appr)
	if !errors.Is(err, ErrNotApproved) || csv != "" || countFiles(out) != 0 {
		t.Errorf("Deliver, an unapproved cohort list: %v, delivered %q (%d files)", err, csv, countFiles(out))
	}
}
