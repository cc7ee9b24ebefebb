package linkage

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The tests of what a job spec cannot make ingestion do (docs/security.md):
// name a headered file's columns its own way, stand a profile of its own in
// for a built-in one, split a delivery's records with its delimiter, have
// DuckDB read another file than the one opened, or change DuckDB's
// settings once the sources are in.

const tinyJob = `project: p1
reference_date: 2026-11-25
profiles:
  - {name: reg-export, kind: events, identity: PNR, columns: [PNR, DIAG, X], codes: [{group: diag, columns: [DIAG]}]}
sources:
  - {name: reg, profile: reg-export, path: reg.csv}
cohort: {criteria: [{source: reg, codes: [I21]}]}
`

// TestExtractorCannotNameAHeaderedFilesColumns: a profile (or a source's
// override) that names the columns of a file with a header must name them
// as the header does; ingestion takes the header's names, and refuses a
// declaration that differs, naming the file. Before, the declared columns
// were silently ignored for a headered file, and a headerless reading
// (header: false) named them as the spec chose.
func TestExtractorCannotNameAHeaderedFilesColumns(t *testing.T) {
	tn := testNumbers(t)
	reg := "PNR;DIAG;X\n" + tn[20000] + ";I21;secret\n"
	for _, tc := range []struct{ name, job, want string }{
		{"the profile's columns as the header", tinyJob, ""},
		{"the profile's columns reordered", strings.Replace(tinyJob, "[PNR, DIAG, X]", "[PNR, X, DIAG]", 1), "reg.csv:1: column X: the profile's name of column 2"},
		{"a source's columns", strings.Replace(tinyJob, "path: reg.csv}", "path: reg.csv, columns: [PNR, X, NOT_APPROVED]}", 1), "reg.csv:1: column X: the profile's name of column 2"},
		{"too few", strings.Replace(tinyJob, "[PNR, DIAG, X]", "[PNR, DIAG]", 1), "reg.csv:1: the header has 3 columns, the profile names 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeFiles(t, map[string]string{"reg.csv": reg, "job.yaml": tc.job})
			spec, err := LoadSpec(filepath.Join(dir, "job.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			res, err := Link(context.Background(), spec, Options{})
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				defer res.Close()
				if got := res.Sources()[0].Columns; strings.Join(got, ";") != "PNR;DIAG;X" {
					t.Errorf("columns %v, want the header's", got)
				}
				return
			}
			var fe *FileError
			if !errors.As(err, &fe) || !strings.Contains(err.Error(), tc.want) {
				if err == nil {
					res.Close()
				}
				t.Fatalf("err = %v, want a FileError with %q", err, tc.want)
			}
			if strings.Contains(err.Error(), tn[20000][2:8]) {
				t.Errorf("error %q holds the identity number", err)
			}
		})
	}
}

// TestExtractorCannotStandInForABuiltinProfile: a spec's profile named like
// a built-in one, which it used to replace, is refused by name; so is a
// second profile of a name.
func TestExtractorCannotStandInForABuiltinProfile(t *testing.T) {
	base := "project: p1\nsources:\n  - {name: par, profile: par-sluten, path: par.csv}\ncohort: {criteria: [{source: par, codes: [I21]}]}\n"
	for _, tc := range []struct{ name, spec, want string }{
		{"built-in", base + "profiles:\n  - {name: par-sluten, kind: events, header: false, identity: PNR, columns: [PNR, HDIA, X], codes: [{group: hdia, columns: [HDIA]}]}\n",
			`profiles[0].name: "par-sluten" is a built-in profile`},
		{"partner import", base + "profiles:\n  - {name: partner-import, kind: events, identity: PNR}\n",
			`profiles[0].name: "partner-import" is a built-in profile`},
		{"twice", base + "profiles:\n  - {name: mine, kind: events, identity: PNR}\n  - {name: mine, kind: events, identity: ID}\n",
			`profiles[1].name: "mine" is used by another profile`},
	} {
		_, err := ParseSpec([]byte(tc.spec), "job.yaml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestOutputDelimitersThatSplitRecordsOrNumbersAreRefused: a delimiter
// that is a line break, a quote, another control character, or a
// character identity numbers are written with is refused naming the
// field (the leak guard no longer depends on it, but a researcher's tools
// and the guard's column names do).
func TestOutputDelimitersThatSplitRecordsOrNumbersAreRefused(t *testing.T) {
	base := "project: p1\nsources:\n  - {name: par, profile: par-sluten, path: par.csv}\ncohort: {criteria: [{source: par, codes: [I21]}]}\n"
	for _, d := range []string{`"\n"`, `"\r"`, `'"'`, `"\x00"`, `"\x1f"`, `"\x7f"`, `"-"`, `"+"`, `"7"`, `"T"`, `";;"`, `"é"`} {
		_, err := ParseSpec([]byte(base+"outputs: {delimiter: "+d+"}\n"), "job.yaml")
		if err == nil || !strings.Contains(err.Error(), "outputs.delimiter: ") {
			t.Errorf("delimiter %s: err = %v, want it refused naming outputs.delimiter", d, err)
		}
	}
	for _, d := range []string{`";"`, `","`, `"\t"`, `" "`, `"|"`} {
		if _, err := ParseSpec([]byte(base+"outputs: {delimiter: "+d+"}\n"), "job.yaml"); err != nil {
			t.Errorf("delimiter %s: %v", d, err)
		}
	}
}

// TestLinkReadsTheFileItOpened: a source is read through the file the
// spec's opener opened, by Go and by DuckDB alike; a file put in its place
// under the same path afterwards (a link to another file, say) is never
// read.
func TestLinkReadsTheFileItOpened(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads through /proc/self/fd")
	}
	tn := testNumbers(t)
	dir := writeFiles(t, map[string]string{
		"reg.csv":   "PNR;DIAG;X\n" + tn[20000] + ";I21;a\n",
		"other.csv": "PNR;DIAG;X\n" + tn[21000] + ";I21;b\n" + tn[22000] + ";I21;c\n",
		"job.yaml":  tinyJob,
	})
	spec, err := LoadSpec(filepath.Join(dir, "job.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "reg.csv")
	spec.OpenSourcesWith(func(i int) (*os.File, error) {
		f, err := os.Open(spec.File(i))
		if err != nil {
			return nil, err
		}
		// Swapped after the check: the path now leads elsewhere.
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(dir, "other.csv"), path); err != nil {
			t.Fatal(err)
		}
		return f, nil
	})
	res, err := Link(context.Background(), spec, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	if s := res.Report.Sources[0]; s.Rows != 1 || res.Report.Cohort.Persons != 1 {
		t.Errorf("read %d rows, %d cohort members: want the opened file's 1 and 1", s.Rows, res.Report.Cohort.Persons)
	}
}

// TestExtractorCannotReopenDuckDBsAccess: once the sources are in, DuckDB's
// settings are locked: a statement that would let it read files again, or
// unlock the settings, fails.
func TestExtractorCannotReopenDuckDBsAccess(t *testing.T) {
	tn := testNumbers(t)
	dir := writeFiles(t, map[string]string{"reg.csv": "PNR;DIAG;X\n" + tn[20000] + ";I21;a\n", "job.yaml": tinyJob})
	spec, err := LoadSpec(filepath.Join(dir, "job.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Link(context.Background(), spec, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	for _, q := range []string{
		"SET enable_external_access = true",
		"SET allowed_directories = ['/']",
		"SET lock_configuration = false",
		"RESET lock_configuration",
		"SET threads = 1",
	} {
		if _, err := res.Conn().ExecContext(context.Background(), q); err == nil {
			t.Errorf("%s: succeeded after Link", q)
		}
	}
	var n int
	if err := res.Conn().QueryRowContext(context.Background(), "SELECT count(*) FROM read_csv("+sqlString(filepath.Join(dir, "reg.csv"))+")").Scan(&n); err == nil {
		t.Errorf("DuckDB read a file after Link")
	}
}
