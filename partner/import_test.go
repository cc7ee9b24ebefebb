package partner

import (
	"bytes"
	"encoding/csv"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// importNumbers are canonical numbers the fake kodnyckel resolves LopNr
// 1..len to.
func importNumbers(tb testing.TB) []string {
	b, err := os.ReadFile("../testdata/skatteverket/testpersonnummer.txt")
	if err != nil {
		tb.Fatal(err)
	}
	return strings.Split(string(b), "\n")[:9]
}

var identityShaped = regexp.MustCompile(`\d{10}`)

// FuzzImport reads a partner's file as the service does and checks the
// result against encoding/csv: a delimiter ParseDelimiter accepts is one
// encoding/csv accepts; a file encoding/csv reads converts into exactly the
// rows of the project's persons, each with its canonical number and the
// rest of its values in order, and the cohort of exactly those persons; a
// file it refuses is refused with an ImportError that names the field and
// holds nothing shaped like an identity number.
func FuzzImport(f *testing.F) {
	f.Add(";", "LopNr", []byte("LopNr;Inkomst;Kommun\n1;250000;0180\n4;;1480\n99;1;2\n1;3;4\n"))
	f.Add(",", " lopnr ", []byte("X,LOPNR\n\"a,b\",2\n\"c\"\"d\",3\n"))
	f.Add("\t", "id", []byte("id\tPNR\n1\t2\n"))
	f.Add(";", "LopNr", []byte("LopNr;A\n1;\"open\n"))
	numbers := importNumbers(f)
	resolve := func(key string) string {
		r, err := strconv.Atoi(strings.TrimSpace(key))
		if err != nil || r < 1 || r > len(numbers) {
			return ""
		}
		return numbers[r-1]
	}
	f.Fuzz(func(t *testing.T, d, identityColumn string, data []byte) {
		delim, err := ParseDelimiter(d)
		if err != nil {
			checkImportError(t, err, "header.delimiter")
			return
		}
		dir := t.TempDir()
		got, err := ConvertImport(bytes.NewReader(data), dir, ImportOptions{IdentityColumn: identityColumn, Delimiter: delim, Resolve: resolve})

		// The oracle: encoding/csv, the identity column by name, its
		// values resolved.
		r := csv.NewReader(bytes.NewReader(data))
		r.Comma = delim
		records, oerr := r.ReadAll()
		if oerr != nil && strings.Contains(oerr.Error(), "invalid field or comment delimiter") {
			t.Fatalf("ParseDelimiter accepts %q, encoding/csv does not", d)
		}
		if oerr != nil || len(records) == 0 {
			if err == nil {
				t.Fatalf("imported a file encoding/csv refuses (%v)", oerr)
			}
			checkImportError(t, err, "data", "header.identity_column")
			return
		}
		header := records[0]
		idCol := slices.IndexFunc(header, func(h string) bool { return strings.EqualFold(strings.TrimSpace(h), identityColumn) })
		if idCol < 0 {
			checkImportError(t, err, "header.identity_column")
			return
		}
		want := [][]string{append([]string{"PNR"}, slices.Delete(slices.Clone(header), idCol, idCol+1)...)}
		if slices.ContainsFunc(want[0][1:], func(c string) bool { return c == "" || strings.EqualFold(c, "PNR") }) {
			checkImportError(t, err, "data")
			return
		}
		if err != nil {
			t.Fatalf("refused a file encoding/csv reads: %v", err)
		}
		persons := map[string]bool{}
		for _, rec := range records[1:] {
			c := resolve(rec[idCol])
			if c == "" {
				continue
			}
			persons[c] = true
			want = append(want, append([]string{c}, slices.Delete(slices.Clone(rec), idCol, idCol+1)...))
		}
		if got.Rows != int64(len(records)-1) || got.Matched != int64(len(want)-1) || got.Persons != int64(len(persons)) {
			t.Fatalf("counts %+v, want %d rows, %d matched, %d persons", got, len(records)-1, len(want)-1, len(persons))
		}
		b, err := os.ReadFile(filepath.Join(dir, "partner.csv"))
		if err != nil {
			t.Fatal(err)
		}
		out := csv.NewReader(bytes.NewReader(b))
		out.Comma = ';'
		written, err := out.ReadAll()
		if err != nil {
			t.Fatalf("partner.csv is not CSV: %v", err)
		}
		if !slices.EqualFunc(written, want, slices.Equal) {
			t.Fatalf("partner.csv holds\n%q\nwant\n%q", written, want)
		}
		b, err = os.ReadFile(filepath.Join(dir, "cohort.csv"))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		if lines[0] != "PNR" || !slices.Equal(slices.Sorted(slices.Values(lines[1:])), slices.Sorted(maps.Keys(persons))) {
			t.Fatalf("cohort.csv holds %q, want PNR and %d persons", lines, len(persons))
		}
	})
}

// TestImportBounds: a line longer than the bound is refused naming the
// line, and a file with more rows than the budget left is a RowLimitError.
func TestImportBounds(t *testing.T) {
	resolve := func(string) string { return "" }
	file := "LopNr;A\n1;short\n2;" + strings.Repeat("x", 100) + "\n3;short\n"
	_, err := ConvertImport(strings.NewReader(file), t.TempDir(), ImportOptions{IdentityColumn: "LopNr", Delimiter: ';', Resolve: resolve, MaxLine: 64})
	checkImportError(t, err, "data")
	if !strings.Contains(err.Error(), "line 3 is longer") || !strings.Contains(err.Error(), "at most 64 bytes") {
		t.Errorf("a long line: %v, want the bound and line 3 named", err)
	}
	// A long quoted field spanning lines is bounded per line too.
	quoted := "LopNr;A\n1;\"" + strings.Repeat("y\n", 200) + "\"\n"
	if _, err := ConvertImport(strings.NewReader(quoted), t.TempDir(), ImportOptions{IdentityColumn: "LopNr", Delimiter: ';', Resolve: resolve, MaxLine: 64}); err != nil {
		t.Errorf("short lines in a quoted field: %v", err)
	}
	res, err := ConvertImport(strings.NewReader(file), t.TempDir(), ImportOptions{IdentityColumn: "LopNr", Delimiter: ';', Resolve: resolve, MaxLine: 1 << 10, MaxRows: 3})
	if err != nil || res.Rows != 3 {
		t.Errorf("3 rows within a budget of 3: %+v, %v", res, err)
	}
	_, err = ConvertImport(strings.NewReader(file), t.TempDir(), ImportOptions{IdentityColumn: "LopNr", Delimiter: ';', Resolve: resolve, MaxRows: 2})
	var rl *RowLimitError
	if !errors.As(err, &rl) || rl.Max != 2 {
		t.Errorf("3 rows with a budget of 2: %v, want a RowLimitError", err)
	}
}

// checkImportError fails unless err is an ImportError naming one of the
// fields, with nothing shaped like an identity number in it.
func checkImportError(t *testing.T, err error, fields ...string) {
	t.Helper()
	var ie *ImportError
	switch {
	case !errors.As(err, &ie):
		t.Fatalf("error %v (%T), want an ImportError naming %v", err, err, fields)
	case !slices.Contains(fields, ie.Field):
		t.Fatalf("error %q names %s, want one of %v", err, ie.Field, fields)
	case identityShaped.MatchString(err.Error()):
		t.Fatalf("error %q holds a number shaped like an identity number", err)
	}
}
