package extract

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lopnr/lopnr/linkage"
	"github.com/lopnr/lopnr/linkage/personnummer"
)

// withCheckDigit completes an identity number written without its last
// character with the check digit that makes it parse as kind.
func withCheckDigit(t *testing.T, s string, kind personnummer.Kind) string {
	t.Helper()
	p := personnummer.NewParser(time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC))
	for c := '0'; c <= '9'; c++ {
		if n := p.Parse(s + string(c)); n.Valid() && n.Kind() == kind {
			return s + string(c)
		}
	}
	t.Fatalf("no check digit makes %q a %v", s, kind)
	return ""
}

// TestExtractorCannotDeliverAnIdentityNumberInLowerCase: the parser reads
// an interim number's letter, and a reserve number's, in either case
// ("19900101t239" is an interim number to lopnr's linkage), but both leak
// guards knew only the capitals, so a free-text column holding interim or
// reserve numbers written in lower case was delivered in clear, in CSV and
// in Parquet. Every other form of every kind of number is stopped too
// (samordningsnummer, 10 digits, '+'), in every output encoding, line
// ending and format, with nothing delivered.
func TestExtractorCannotDeliverAnIdentityNumberInLowerCase(t *testing.T) {
	pnr := testNumber(t, 12000)
	b, err := os.ReadFile("../testdata/skatteverket/testsamordningsnummer.txt")
	if err != nil {
		t.Fatal(err)
	}
	samordning := strings.Fields(string(b))[100]
	interim := withCheckDigit(t, "19900101T23", personnummer.Interim)
	reserve := withCheckDigit(t, "19900101K12", personnummer.Reserve)
	forms := map[string]string{
		"interim, lower case":             strings.ToLower(interim),
		"interim, lower case, 10 digits":  strings.ToLower(interim[2:8] + "-" + interim[8:]),
		"reserve (VGR), lower case":       strings.ToLower(reserve),
		"interim":                         interim,
		"reserve (VGR)":                   reserve,
		"samordningsnummer":               samordning,
		"samordningsnummer, 10 digits":    samordning[2:8] + "-" + samordning[8:],
		"personnummer, 10 digits, '+'":    pnr[2:8] + "+" + pnr[8:],
		"personnummer, 10 digits, no sep": pnr[2:],
	}
	for name, form := range forms {
		wantFreeTextStopped(t, name, "ur journalen: "+form, func(out linkage.OutputSpec, err error) {
			if strings.Contains(strings.ToLower(err.Error()), strings.ToLower(form)) {
				t.Errorf("%s, outputs %+v: the error %q holds the number", name, out, err)
			}
		})
	}
}

// wantFreeTextStopped delivers mfr.csv with value in its free-text column
// MOR (three children's rows, the cohort), in each output encoding, line
// ending and format, and wants each delivery stopped by a LeakError in MOR
// with no file delivered; check looks further at each error.
func wantFreeTextStopped(t *testing.T, name, value string, check func(out linkage.OutputSpec, err error)) {
	t.Helper()
	dir := t.TempDir()
	rows, cohort := "PNR;MOR;VIKT\n", "PNR\n"
	for i := range 3 {
		child := testNumber(t, 26000+100*i)
		rows += fmt.Sprintf("%s;%s;3400\n", child, value)
		cohort += child + "\n"
	}
	os.WriteFile(filepath.Join(dir, "mfr.csv"), []byte(rows), 0o600)
	os.WriteFile(filepath.Join(dir, "cohort.csv"), []byte(cohort), 0o600)
	for _, out := range []linkage.OutputSpec{{}, {Encoding: linkage.EncodingCP}, {LineEnding: "crlf"}, {Format: "parquet"}} {
		js := attack(t, dir, mfrJob)
		js.Outputs = out
		dst, got, err := deliverAttack(t, js, mustApproval(t, mfrApproved))
		var le *LeakError
		if !errors.As(err, &le) || le.Column != "MOR" {
			t.Errorf("%s, outputs %+v: err = %v, want a LeakError in MOR (delivered %q)", name, out, err, got)
			continue
		}
		if n := countFiles(dst); n != 0 {
			t.Errorf("%s, outputs %+v: %d files delivered", name, out, n)
		}
		check(out, err)
	}
}

// TestExtractorCannotDeliverANumberThroughADateColumn: a column the
// approved profile declares a date, holding identity numbers (an export
// whose columns were shifted, or a file the extractor wrote). Kept as it
// is, it is scanned like any value and the delivery is stopped; reduced to
// a year or a month, a value that is no date becomes empty, in every date
// format, and nothing of the number is delivered.
func TestExtractorCannotDeliverANumberThroughADateColumn(t *testing.T) {
	n := testNumber(t, 12000)
	for _, format := range []string{"register", "YYYYMMDD", "YYYY-MM-DD"} {
		approved := `sources:
  - name: mfr
    profile: mfr-export
    profile_yaml: |
      name: mfr-export
      kind: events
      identity: PNR
      dates: {FDAT: ` + format + `}
  - {name: cohort, profile: cohort-list}
variables:
  - {source: mfr, column: FDAT, transforms: [keep, year]}
`
		job := `project: mfr
reference_date: 2026-11-25
profiles:
  - {name: mfr-export, kind: events, identity: PNR, dates: {FDAT: ` + format + `}}
sources:
  - {name: mfr, profile: mfr-export, path: mfr.csv}
  - {name: cohort, profile: cohort-list, path: cohort.csv}
cohort: {list: cohort}
variables:
  - {source: mfr, column: FDAT, transform: TRANSFORM}
`
		dir := t.TempDir()
		rows, cohort := "PNR;FDAT\n", "PNR\n"
		for i := range 3 {
			child := testNumber(t, 26000+100*i)
			rows += child + ";" + n + "\n"
			cohort += child + "\n"
		}
		os.WriteFile(filepath.Join(dir, "mfr.csv"), []byte(rows), 0o600)
		os.WriteFile(filepath.Join(dir, "cohort.csv"), []byte(cohort), 0o600)
		for _, out := range []linkage.OutputSpec{{}, {Format: "parquet"}} {
			js := attack(t, dir, strings.Replace(job, "TRANSFORM", "keep", 1))
			js.Outputs = out
			dst, got, err := deliverAttack(t, js, mustApproval(t, approved))
			var le *LeakError
			if !errors.As(err, &le) || le.Column != "FDAT" || countFiles(dst) != 0 {
				t.Errorf("%s, kept, outputs %+v: err = %v, want a LeakError in FDAT and nothing delivered (delivered %q)", format, out, err, got)
			}
			js = attack(t, dir, strings.Replace(job, "TRANSFORM", "year", 1))
			js.Outputs = out
			_, got, err = deliverAttack(t, js, mustApproval(t, approved))
			if err != nil && (strings.Contains(err.Error(), n[2:8]) || !errors.As(err, &le)) {
				t.Errorf("%s, year, outputs %+v: err = %v", format, out, err)
			}
			if strings.Contains(got, n[2:8]) || strings.Contains(got, n[:4]+"\n") {
				t.Errorf("%s, year, outputs %+v: delivered %q, which holds part of the number", format, out, got)
			}
		}
	}
}

// typographic writes the identity number n (12 digits) as an editor or a
// word processor may: every dash and the minus sign between the date and
// the last four, fullwidth and other scripts' digits, and characters that
// show nothing inside it.
func typographic(n string) map[string]string {
	digits := func(s string, zero rune) string {
		return strings.Map(func(r rune) rune { return r - '0' + zero }, s)
	}
	forms := map[string]string{
		"fullwidth digits":          digits(n[:8], '０') + "-" + digits(n[8:], '０'),
		"fullwidth digits, no sep":  digits(n, '０'),
		"fullwidth digits and dash": digits(n[2:8], '０') + "－" + digits(n[8:], '０'),
		"arabic-indic digits":       digits(n, '٠'),
		"devanagari digits, 10":     digits(n[2:8], '०') + "-" + digits(n[8:], '०'),
		"fullwidth plus":            n[2:8] + "＋" + n[8:],
		"a soft hyphen":             n[:8] + "\u00ad" + n[8:],
		"a zero-width space":        n[:4] + "\u200b" + n[4:],
		"a combining mark on each":  strings.Join(strings.Split(n, ""), "\u0336") + "\u0336",
		"en dash, 10 digits":        n[2:8] + "–" + n[8:],
		"minus sign":                n[:8] + "\u2212" + n[8:],
		"small hyphen-minus":        n[:8] + "\ufe63" + n[8:],
		"en dash, then fullwidth":   n[:8] + "–" + digits(n[8:], '０'),
	}
	for r := '\u2010'; r <= '\u2015'; r++ {
		forms[fmt.Sprintf("%U", r)] = n[:8] + string(r) + n[8:]
	}
	return forms
}

// TestExtractorCannotDeliverANumberWrittenWithATypographicSeparator: a
// free-text column whose values hold identity numbers written as an
// editor writes them — with an en dash or another dash, a minus sign,
// fullwidth digits — was delivered in clear: the guards tried only '-',
// '+' and no separator, as the parser reads numbers, while a researcher
// reads them as numbers (and personnummer.Redact, the audit log's and
// errors' redaction, takes them for numbers). Both guards now read every
// dash and the minus sign as '-', every decimal digit as its digit, and
// skip characters that show nothing: each form is stopped, in each output
// encoding, line ending and format, with nothing delivered.
func TestExtractorCannotDeliverANumberWrittenWithATypographicSeparator(t *testing.T) {
	n := testNumber(t, 12000)
	for name, form := range typographic(n) {
		wantFreeTextStopped(t, name, `"ur journalen: `+form+`"`, func(out linkage.OutputSpec, err error) {
			if msg := foldString(err.Error()); strings.Contains(msg, n[2:8]) || strings.Contains(msg, n[8:]) {
				t.Errorf("%s, outputs %+v: the error %q holds part of the number", name, out, err)
			}
		})
	}
	// The column names too.
	p := personnummer.NewParser(time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC))
	for name, form := range typographic(n) {
		if !hasIdentity(p, "MOR "+form) {
			t.Errorf("%s: hasIdentity(%q) = false", name, form)
		}
	}
}

// TestLeakGuardTakesASpaceForTheEndOfANumber is the documented limit of
// the guards (docs/delivery.md, the leak guard): a space of any kind
// between the date and the last four — or a line break, which the plan
// makes a space — ends a number, as the parser reads it, so a number
// written "19790415 2399" is delivered. Read as a separator, a space would
// stop every delivery with a timestamp "YYYYMMDD HHMM" whose digits happen
// to make a valid check digit, about one in ten of them; this test
// delivers such a timestamp beside the forms. When a precise rule stops
// the forms without stopping the timestamp, this test changes with the
// docs.
func TestLeakGuardTakesASpaceForTheEndOfANumber(t *testing.T) {
	n := testNumber(t, 12000)
	stamp := withCheckDigit(t, "20190304143", personnummer.Personnummer)
	forms := map[string]string{
		"a timestamp YYYYMMDD HHMM": stamp[:8] + " " + stamp[8:],
		"a space":                   n[:8] + " " + n[8:],
		"a no-break space, 10":      n[2:8] + "\u00a0" + n[8:],
		"a narrow no-break space":   n[:8] + "\u202f" + n[8:],
		"a line break (a space)":    n[:8] + "\n" + n[8:],
		"space dash space":          n[:8] + " – " + n[8:],
	}
	for name, form := range forms {
		dir := t.TempDir()
		rows, cohort := "PNR;MOR;VIKT\n", "PNR\n"
		for i := range 3 {
			child := testNumber(t, 26000+100*i)
			rows += fmt.Sprintf("%s;\"ur journalen: %s\";3400\n", child, form)
			cohort += child + "\n"
		}
		os.WriteFile(filepath.Join(dir, "mfr.csv"), []byte(rows), 0o600)
		os.WriteFile(filepath.Join(dir, "cohort.csv"), []byte(cohort), 0o600)
		for _, out := range []linkage.OutputSpec{{}, {Format: "parquet"}} {
			js := attack(t, dir, mfrJob)
			js.Outputs = out
			_, got, err := deliverAttack(t, js, mustApproval(t, mfrApproved))
			if err != nil {
				t.Errorf("%s, outputs %+v: err = %v, want it delivered (the documented limit)", name, out, err)
			}
			if out.Format == "" && !strings.Contains(got, strings.ReplaceAll(form, "\n", " ")) {
				t.Errorf("%s: delivered %q", name, got)
			}
		}
	}
}
