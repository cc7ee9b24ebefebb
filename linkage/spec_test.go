package linkage

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestSpecErrorsNameTheField(t *testing.T) {
	base := "project: p1\nepm_dnr: x\nsources:\n  - {name: par, profile: par-sluten, path: par.csv}\n  - {name: lmed, profile: lmed, path: lmed.csv}\ncohort: {criteria: [{source: par, codes: [I21]}]}\n"
	for _, tc := range []struct {
		name, spec, want string
	}{
		{"unknown profile", strings.Replace(base, "profile: lmed", "profile: lmedd", 1), `sources[1].profile: unknown profile "lmedd", want one of cohort-list, dors, lmed,`},
		{"unknown field", base + "sourcez: []\n", `sourcez: line 7: unknown field "sourcez"`},
		{"wrong type", strings.Replace(base, "path: lmed.csv}", "path: lmed.csv, header: maybe}", 1), `sources[1].header: line 5: want true or false, not text`},
		{"not YAML", base + "outputs: {format: csv\n", `: did not find expected ',' or '}'`},
		{"not text", base + "# \xff\n", `line 7: not UTF-8 text`},
		{"bad output delimiter", base + "outputs: {delimiter: \"\\n\"}\n", `outputs.delimiter: "\n": want one character`},
		{"bad project", strings.Replace(base, "project: p1", "project: P/1", 1), `project: "P/1": want`},
		{"duplicate source", strings.Replace(base, "name: lmed", "name: par", 1), `sources[1].name: "par" is used by another source`},
		{"no path", strings.Replace(base, ", path: lmed.csv", "", 1), `sources[1].path: missing`},
		{"bad encoding", strings.Replace(base, "path: lmed.csv}", "path: lmed.csv, encoding: ebcdic}", 1), `sources[1].encoding: unknown encoding "ebcdic"`},
		{"bad delimiter", strings.Replace(base, "path: lmed.csv}", "path: lmed.csv, delimiter: '::'}", 1), `sources[1].delimiter: "::"`},
		{"no cohort", strings.Replace(base, "cohort: {criteria: [{source: par, codes: [I21]}]}\n", "", 1), `cohort: want a list or criteria`},
		{"cohort from unknown source", strings.Replace(base, "source: par, codes", "source: pr, codes", 1), `cohort.criteria[0].source: no source named "pr"`},
		{"bad code", strings.Replace(base, "codes: [I21]", "codes: [\"I21'; DROP TABLE x\"]", 1), `cohort.criteria[0].codes[0]: "I21'; DROP TABLE x": want a code prefix`},
		{"unknown group", strings.Replace(base, "codes: [I21]", "codes: [I21], groups: [hdia, diagnos]", 1), `cohort.criteria[0].groups[1]: source "par" has no code group "diagnos"`},
		{"bad date", strings.Replace(base, "codes: [I21]", "codes: [I21], from: 2015-13-01", 1), `cohort.criteria[0].from: "2015-13-01": want YYYY-MM-DD`},
		{"list of wrong kind", strings.Replace(base, "cohort: {criteria: [{source: par, codes: [I21]}]}", "cohort: {list: lmed}", 1), `cohort.list: source "lmed" is of kind events, want a source of kind list`},
		{"bad sex", strings.Replace(base, "codes: [I21]}]}", "codes: [I21]}], sex: X}", 1), `cohort.sex: "X": want M or F`},
		{"bad transform", base + "variables: [{source: par, column: HDIA, transform: truncate(x)}]\n", `variables[0].transform: "truncate(x)"`},
		{"history of wrong kind", base + "identity: {history: lmed}\n", `identity.history: source "lmed" is of kind events, want a source of kind history`},
		{"bad output", base + "outputs: {format: xlsx}\n", `outputs.format: "xlsx"`},
		{"bad recipient", base + "recipients: [age1abc, \"ssh-ed25519 AAAA\"]\n", `recipients[1]: want an age public key`},
		{"too many sources", strings.Replace(base, "sources:\n", "sources:\n"+manySources(MaxSources-1), 1), `sources: 65 sources: at most 64 in one job`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSpec([]byte(tc.spec), "job.yaml")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v\nwant %q\nspec %q", err, tc.want, tc.spec)
			}
			if !errors.Is(err, ErrInvalidSpec) || !strings.HasPrefix(err.Error(), "job.yaml: invalid job spec") {
				t.Errorf("err does not wrap ErrInvalidSpec or name the file: %v", err)
			}
		})
	}
	if _, err := ParseSpec([]byte(base), "job.yaml"); err != nil {
		t.Fatalf("valid spec: %v", err)
	}
}

func TestBuiltinProfilesResolve(t *testing.T) {
	want := []string{"cohort-list", "dors", "lmed", "par-oppen", "par-sluten", "pnr-history", "takecare", "val-oppenvard", "val-slutenvard"}
	b := Builtin()
	for _, name := range want {
		p, ok := b[name]
		if !ok {
			t.Errorf("no built-in profile %s", name)
			continue
		}
		if _, err := p.resolve(name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	par := b["par-sluten"]
	r, _ := par.resolve("par")
	if got := r.codes[1].Columns; len(got) != 30 || got[0] != "DIA1" || got[29] != "DIA30" {
		t.Errorf("DIA1..DIA30 expanded to %v", got)
	}
}

// manySources is n more lmed sources for a job spec, named m0, m1, ...
func manySources(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "  - {name: m%d, profile: lmed, path: m%d.csv}\n", i, i)
	}
	return b.String()
}

// TestSpecErrorsHoldNoIdentityNumber: an extractor's spec that holds a
// personnummer where it does not belong (a pasted list under the wrong key,
// a code, a boolean) is refused with errors that name the field but do not
// carry the number into logs and status messages.
func TestSpecErrorsHoldNoIdentityNumber(t *testing.T) {
	const n = "189001019802" // Skatteverket's test number
	base := "project: p1\nsources:\n  - {name: par, profile: par-sluten, path: par.csv}\ncohort: {criteria: [{source: par, codes: [I21]}]}\n"
	for name, spec := range map[string]string{
		"as a key":       base + n + ": x\n",
		"as a short key": base + n[2:8] + "-" + n[8:] + ": x\n",
		"in a long run":  base + "00" + n[:8] + "-" + n[8:] + ": x\n",
		"as a code":      strings.Replace(base, "codes: [I21]", "codes: ["+n+"]", 1),
		"as a boolean":   strings.Replace(base, "path: par.csv}", "path: par.csv, header: "+n+"}", 1),
	} {
		_, err := ParseSpec([]byte(spec), "job.yaml")
		if err == nil {
			t.Fatalf("%s: the spec parses", name)
		}
		if msg := err.Error(); strings.Contains(msg, n[2:8]) || strings.Contains(msg, n[8:]) {
			t.Errorf("%s: error %q shows the number", name, msg)
		}
	}
}
