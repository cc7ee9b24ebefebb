package extract

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/lopnr/lopnr/keystore"
	"github.com/lopnr/lopnr/keystore/local"
	"github.com/lopnr/lopnr/linkage"
)

// TestHostileSpec tries column names, code values and file paths that
// would break SQL built by splicing: they must be refused or taken
// literally, never run.
func TestHostileSpec(t *testing.T) {
	tn := testNumber(t, 25000)
	evilCol := `x"; DROP TABLE ids; --`
	quoteCol := `it's`
	dir := filepath.Join(t.TempDir(), `dir with 'quote'; DROP TABLE x; --`)
	os.MkdirAll(dir, 0o700)
	data := "PNR;EDATUM;FDATUM;ATC;\"" + strings.ReplaceAll(evilCol, `"`, `""`) + "\";" + quoteCol + "\n" +
		tn + ";2020-01-01;;C07AB02;v1;v2\n"
	os.WriteFile(filepath.Join(dir, "lmed'); DROP TABLE cohort; --.csv"), []byte(data), 0o600)
	spec := `project: hostile
reference_date: 2026-11-25
sources:
  - {name: lmed, profile: lmed, path: "lmed'); DROP TABLE cohort; --.csv"}
cohort: {criteria: [{source: lmed, codes: [C07]}]}
variables:
  - {source: lmed, column: ATC, transform: "blank(C07)"}
  - {source: lmed, column: '` + evilCol + `'}
  - {source: lmed, column: "` + quoteCol + `"}
`
	specPath := filepath.Join(dir, "job.yaml")
	os.WriteFile(specPath, []byte(spec), 0o600)
	js, err := linkage.LoadSpec(specPath)
	if err != nil {
		t.Fatal(err)
	}
	res, err := linkage.Link(context.Background(), js, linkage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	store, _ := local.Open(t.TempDir())
	keys := keystore.New(store, keystore.Options{})
	keys.CreateProject(context.Background(), keystore.ProjectSpec{ID: "hostile", EPMDnr: "x"})
	id, _ := age.GenerateX25519Identity()
	signer, _ := LoadOrCreateSigner(filepath.Join(t.TempDir(), "k"))
	out := t.TempDir()
	sink, _ := NewDirSink(out)
	appr := Approval{Sources: []ApprovedSource{{Name: "lmed", Profile: "lmed"}},
		Variables: []ApprovedVariable{{Source: "lmed", Column: "ATC"}, {Source: "lmed", Column: evilCol}, {Source: "lmed", Column: quoteCol}}}
	m, err := Deliver(context.Background(), res, Options{Approval: appr, Keys: keys, Recipients: []age.Recipient{id.Recipient()}, Sink: sink, Signer: signer, SpecBytes: []byte(spec), Release: true})
	if err != nil {
		t.Fatal(err)
	}
	ct, _ := os.ReadFile(filepath.Join(out, "hostile", m.Delivery, "lmed.csv.zst.age"))
	r, err := age.Decrypt(bytes.NewReader(ct), id)
	if err != nil {
		t.Fatal(err)
	}
	plain := readZstd(t, r)
	cr := csv.NewReader(bytes.NewReader(plain))
	cr.Comma = ';'
	rec, err := cr.ReadAll()
	if err != nil || len(rec) != 2 || rec[0][2] != evilCol || rec[0][3] != quoteCol || rec[1][1] != "C07AB02" || rec[1][2] != "v1" || rec[1][3] != "v2" {
		t.Fatalf("output %q (%v)", plain, err)
	}
	// The tables the injections aimed at are still there.
	var n int
	if err := res.Conn().QueryRowContext(context.Background(), "SELECT count(*) FROM ids").Scan(&n); err != nil || n == 0 {
		t.Fatalf("ids: %d, %v", n, err)
	}

	// Hostile code values never reach SQL: the spec refuses them.
	bad := strings.Replace(spec, `"blank(C07)"`, `"blank(C07') OR 1=1 --)"`, 1)
	if _, err := linkage.ParseSpec([]byte(bad), "job.yaml"); err == nil || !strings.Contains(err.Error(), "variables[0].transform") {
		t.Fatalf("hostile code value: %v", err)
	}
	bad = strings.Replace(spec, "codes: [C07]", `codes: ["C07' OR '1'='1"]`, 1)
	if _, err := linkage.ParseSpec([]byte(bad), "job.yaml"); err == nil || !strings.Contains(err.Error(), "cohort.criteria[0].codes[0]") {
		t.Fatalf("hostile cohort code: %v", err)
	}
	// A column the file does not have is refused by name, before anything runs.
	_, err = plan(js, res.Sources(), true, Approval{Sources: appr.Sources, Variables: []ApprovedVariable{{Source: "lmed", Column: "nosuch"}}})
	if err == nil {
		t.Fatal("a missing column was planned")
	}
	js.Variables = append(js.Variables, linkage.VariableSpec{Source: "lmed", Column: "nosuch"})
	appr.Variables = append(appr.Variables, ApprovedVariable{Source: "lmed", Column: "nosuch"})
	_, err = plan(js, res.Sources(), true, appr)
	var ve *VariableError
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), `source lmed has no column "nosuch"`) {
		t.Fatalf("missing column: %v", err)
	}
}

func readZstd(t *testing.T, r io.Reader) []byte {
	t.Helper()
	zr, err := newZstdReader(r)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
