package linkage

import (
	"errors"
	"testing"
	"time"

	"github.com/lopnr/lopnr/internal/yamlfield"
)

// The job spec and profiles are what a person writes: whatever the bytes,
// parsing either refuses them with errors that each name a field path (or
// the line of a file that is not YAML), or gives a value that marshals
// back to YAML which parses to the same value. Seeds: testdata/fuzz.

func FuzzParseSpec(f *testing.F) {
	f.Add([]byte(specBase))
	parse := func(b []byte) (*JobSpec, error) {
		s, err := ParseSpec(b, "job.yaml")
		if s != nil {
			s.ref = time.Time{} // the day it runs, when the spec names none
		}
		return s, err
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := parse(b)
		if err != nil {
			checkSpecError(t, err)
			return
		}
		if err := yamlfield.RoundTrip(s, parse); err != nil {
			t.Fatal(err)
		}
	})
}

func FuzzParseProfile(f *testing.F) {
	for _, name := range []string{"par-sluten.yaml", "takecare.yaml", "pnr-history.yaml"} {
		b, err := builtinFS.ReadFile("profiles/" + name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	parse := func(b []byte) (*Profile, error) {
		p, err := ParseProfile(b, "profile.yaml")
		return &p, err
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parse(b)
		if err != nil {
			checkSpecError(t, err)
			return
		}
		if err := yamlfield.RoundTrip(p, parse); err != nil {
			t.Fatal(err)
		}
	})
}

// checkSpecError fails unless err is a SpecError whose every error names
// a field path, or a line where there is no field to name.
func checkSpecError(t *testing.T, err error) {
	t.Helper()
	var se *SpecError
	if !errors.As(err, &se) || !errors.Is(err, ErrInvalidSpec) {
		t.Fatalf("error %v (%T) is not a SpecError", err, err)
	}
	if err := yamlfield.Named(se.Errors); err != nil {
		t.Fatal(err)
	}
}

const specBase = `project: p1
epm_dnr: "2025-01234-01"
reference_date: 2026-11-25
sources:
  - {name: par, profile: par-sluten, path: par.csv}
  - {name: lmed, profile: lmed, path: lmed.csv, delimiter: "|", rename: {LopNr: ID}}
  - name: hist
    profile: pnr-history
    path: history.csv
identity: {history: hist}
cohort:
  criteria: [{source: par, codes: [I21, I22], groups: [hdia], from: 2015-01-01}]
  sex: F
  age: {min: 18, max: 80}
variables:
  - {source: par, column: HDIA, transform: truncate(3)}
  - {source: lmed, column: ATC, transform: "blank(N05,N06)"}
outputs: {format: csv, delimiter: "\t", encoding: windows-1252, line_ending: crlf}
recipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p]
`
