package testenv

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// recorder stands in for a test so that lookup's skip-or-fail decision can be
// observed without ending the real test.
type recorder struct {
	testing.TB
	skipped, failed bool
}

func (r *recorder) Helper()               {}
func (r *recorder) Skipf(string, ...any)  { r.skipped = true }
func (r *recorder) Fatalf(string, ...any) { r.failed = true }

func TestLookupSkipsOrFails(t *testing.T) {
	for _, tc := range []struct {
		ci, integration string
		wantFail        bool
	}{
		{"", "", false},
		{"false", "0", false},
		{"true", "", true},
		{"", "1", true},
	} {
		t.Setenv("CI", tc.ci)
		t.Setenv("LOPNR_INTEGRATION", tc.integration)
		t.Setenv("LOPNR_TEST_UNSET", "")
		r := &recorder{TB: t}
		lookup(r, "LOPNR_TEST_UNSET")
		if r.failed != tc.wantFail || r.skipped == tc.wantFail {
			t.Errorf("CI=%q LOPNR_INTEGRATION=%q: failed=%t skipped=%t, want failed=%t", tc.ci, tc.integration, r.failed, r.skipped, tc.wantFail)
		}
	}
	t.Setenv("LOPNR_TEST_SET", "x")
	r := &recorder{TB: t}
	if v := lookup(r, "LOPNR_TEST_SET"); len(v) != 1 || v[0] != "x" || r.failed || r.skipped {
		t.Errorf("set variable: got %v failed=%t skipped=%t", v, r.failed, r.skipped)
	}
}

func TestNoIdentityNumbersFindsOne(t *testing.T) {
	b, err := os.ReadFile("../../testdata/skatteverket/testpersonnummer.txt")
	if err != nil {
		t.Fatal(err)
	}
	number := strings.Fields(string(b))[0]
	var rec errRecorder
	NoIdentityNumbers(&rec, "a log", `{"msg":"x","ref":"`+number+`"}`)
	if len(rec.errors) != 1 || strings.Contains(rec.errors[0], number) {
		t.Errorf("a log with a test personnummer: %q; want one error that does not repeat it", rec.errors)
	}
	rec.errors = nil
	NoIdentityNumbers(&rec, "a log", `{"time":"2026-11-29T22:29:20Z","hash":"1234567890","pseudonym":"ab`+number+`cd","seq":12}`)
	if len(rec.errors) != 0 {
		t.Errorf("a clean log: %q", rec.errors)
	}
}

// errRecorder is a testing.TB that records errors.
type errRecorder struct {
	testing.TB
	errors []string
}

func (r *errRecorder) Helper() {}
func (r *errRecorder) Errorf(format string, args ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}
