package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/lopnr/lopnr/internal/testenv"
	"github.com/lopnr/lopnr/linkage/personnummer"
)

// TestMain lets the test binary serve as the bench binary: the smoke test
// re-executes it with -step for each measured step.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "-step" {
		if err := mainErr(os.Args[1:]); err != nil {
			os.Stderr.WriteString("bench: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// logWriter sends the bench's progress to the test log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestSmallScenario runs the small scenario end to end against the S3
// gateway (and OpenBao, when it is there) and checks the outputs, not the
// time: lopnr delivers exactly the baseline's rows, file by file (the
// scenario has no identity noise, so a naive script finds the same rows);
// the files fetched back from S3 decrypt with the researcher's key to as
// many rows as the manifest says; and no identity number is in them or in
// the tables.
func TestSmallScenario(t *testing.T) {
	testenv.S3(t)
	dir := t.TempDir()
	cfg := config{scenario: scenarios["small"], growth: []float64{1}, dir: dir, memory: "1GB", seed: 1, keep: true, log: logWriter{t}}
	rep, err := run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := rep.sizes[0]
	if s.lopnr.Rows == 0 || s.lopnr.Rows != s.baseline.Rows {
		t.Errorf("lopnr delivered %d rows, the baseline %d", s.lopnr.Rows, s.baseline.Rows)
	}
	if len(s.lopnr.Files) != 3 {
		t.Errorf("lopnr delivered %d files, want 3: %v", len(s.lopnr.Files), s.lopnr.Files)
	}
	for name, n := range s.lopnr.Files {
		if b := s.baseline.Files[name]; b != n {
			t.Errorf("%s: lopnr delivered %d rows, the baseline %d", name, n, b)
		}
	}
	if s.lopnrDelivered.Rows != s.lopnr.Rows {
		t.Errorf("with only the delivered sources lopnr delivered %d rows, with all %d", s.lopnrDelivered.Rows, s.lopnr.Rows)
	}
	// The fetch step decrypted every file and failed on any identity
	// number; check its plaintext again with the tests' own scanner.
	if s.plainRows != s.lopnr.Rows {
		t.Errorf("the delivery decrypts to %d rows, the manifest says %d", s.plainRows, s.lopnr.Rows)
	}
	plain, err := os.ReadFile(filepath.Join(dir, "x1", plainFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(plain), "LopNr") {
		t.Errorf("the plaintext does not start with a LopNr header: %.20q", plain)
	}
	testenv.NoIdentityNumbers(t, "the decrypted delivery", string(plain))
	md := rep.markdown()
	testenv.NoIdentityNumbers(t, "the tables", md)
	for _, want := range []string{"| baseline:", "| lopnr: the whole job", "| normalisation |", "raw `zstd`", "raw `age`", "raw `put`"} {
		if !strings.Contains(md, want) {
			t.Errorf("the tables lack %q", want)
		}
	}
	// The baseline's output does hold identity numbers (that is what
	// lopnr is for): the same scan must find them there.
	f, err := os.Open(filepath.Join(dir, "x1", "baseline-out", "par_sluten.csv.zst"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := zstd.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	base, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	var found int
	for _, m := range identityShaped.FindAllString(string(base), -1) {
		if personnummer.Parse(m, time.Now()).Valid() {
			found++
		}
	}
	if found == 0 {
		t.Error("no identity numbers found in the baseline's output: the scan finds nothing")
	}
}

func TestSQLStatements(t *testing.T) {
	got := sqlStatements("-- a comment\nCREATE MACRO f(x) AS x;\n\nSELECT 1,\n  2;\nCOPY (SELECT 1) TO 'a' (HEADER);\n")
	want := []string{"CREATE MACRO f(x) AS x;", "SELECT 1,\n  2;", "COPY (SELECT 1) TO 'a' (HEADER);"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("sqlStatements = %q, want %q", got, want)
	}
}
