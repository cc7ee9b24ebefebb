package personnummer

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ref is the reference date of these tests: an extraction on 25 November 2026.
var ref = time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)

// readTestNumbers reads one of Skatteverket's lists of test numbers, kept in
// the project's testdata.
func readTestNumbers(t testing.TB, name string) []string {
	t.Helper()
	f, err := os.Open("../../testdata/skatteverket/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ns []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if s := strings.TrimSpace(sc.Text()); s != "" {
			ns = append(ns, s)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return ns
}

// TestSkatteverketTestNumbers accepts every official test personnummer and
// samordningsnummer as its kind in 12-digit, 12-digit separated, 10-digit
// separated and 10-digit forms.
func TestSkatteverketTestNumbers(t *testing.T) {
	p := NewParser(ref)
	total := 0
	for _, tc := range []struct {
		file string
		kind Kind
	}{
		{"testpersonnummer.txt", Personnummer},
		{"testsamordningsnummer.txt", Samordningsnummer},
	} {
		numbers := readTestNumbers(t, tc.file)
		total += len(numbers)
		failures := 0
		for _, s := range numbers {
			year, _ := strconv.Atoi(s[:4])
			sep := "-"
			if ref.Year()-year >= 100 {
				sep = "+"
			}
			forms := []string{s, s[:8] + "-" + s[8:], s[2:8] + sep + s[8:], "  " + s[2:8] + sep + s[8:] + " "}
			if sep == "-" {
				forms = append(forms, s[2:])
			}
			for _, form := range forms {
				n := p.Parse(form)
				if n.Kind() != tc.kind || n.Canonical() != s || n.Reason() != OK || !n.Linkable() {
					failures++
					if failures <= 5 {
						t.Errorf("%s: test number in form %q parsed as %v with canonical %q", tc.file, form, n, n.Canonical())
					}
				}
			}
			// The 10-digit form without a separator of a person aged 100 or
			// more names someone a century younger (or in the future).
			if sep == "+" {
				n := p.Parse(s[2:])
				if n.Valid() && n.Canonical() == s {
					t.Errorf("%s: 10 digits without '+' resolved to a person aged 100 or more", tc.file)
				}
			}
			// Sex and birth date agree with the digits.
			n := p.Parse(s)
			if want := map[bool]Sex{true: Male, false: Female}[(s[10]-'0')%2 == 1]; n.Sex() != want {
				t.Errorf("%s: sex %v, want %v", tc.file, n.Sex(), want)
			}
			bd := string(n.AppendBirthDate(nil))
			switch {
			case tc.kind == Personnummer && bd != s[:4]+"-"+s[4:6]+"-"+s[6:8]:
				t.Errorf("%s: birth date %q does not match the digits", tc.file, bd)
			case tc.kind == Samordningsnummer && (s[4:6] == "00" || s[6:8] == "60") && bd != "",
				tc.kind == Samordningsnummer && bd != "" && bd[8:] != fmt.Sprintf("%02d", atoi(s[6:8])-60):
				t.Errorf("%s: birth date %q for an unknown month or day", tc.file, bd)
			}
		}
		if failures > 0 {
			t.Errorf("%s: %d forms failed", tc.file, failures)
		}
	}
	if total != 43757 {
		t.Errorf("read %d test numbers, want all 43,757", total)
	}
}

// withCheck appends the Luhn check digit to the nine or eleven digits s
// (the century, when present, is not part of the check).
func withCheck(s string) string {
	d := s[len(s)-9:]
	sum := 0
	for i := 0; i < 9; i++ {
		v := int(d[i] - '0')
		if d[i] >= 'A' {
			v = 1
		}
		if i%2 == 0 {
			v *= 2
			if v > 9 {
				v -= 9
			}
		}
		sum += v
	}
	return s + strconv.Itoa((10-sum%10)%10)
}

// flipCheck returns s with its last digit changed.
func flipCheck(s string) string {
	c := s[len(s)-1]
	return s[:len(s)-1] + string('0'+(c-'0'+1)%10)
}

// TestRules builds numbers that break one rule each, with a correct check
// digit where the rule is not the check digit, and expects the right reason.
// The numbers are made at run time from parts: no identity number that is
// not an official test number is written in this file.
func TestRules(t *testing.T) {
	p := NewParser(ref)
	pers := readTestNumbers(t, "testpersonnummer.txt")[20000] // any valid test number
	for _, tc := range []struct {
		name   string
		in     string
		kind   Kind
		reason Reason
	}{
		{"empty", "", Invalid, Empty},
		{"only spaces", "   ", Invalid, Empty},
		{"too short", pers[2:10], Invalid, Format},
		{"too long", pers + "0", Invalid, Format},
		{"space inside", pers[:8] + " " + pers[8:], Invalid, Format},
		{"space inside 10", pers[2:8] + " " + pers[8:], Invalid, Format},
		{"letter for digit", pers[:5] + "O" + pers[6:], Invalid, Format},
		{"letter in check digit", pers[:11] + "X", Invalid, Format},
		{"wrong separator", pers[2:8] + "/" + pers[8:], Invalid, Format},
		{"two separators", pers[2:8] + "--" + pers[8:], Invalid, Format},
		{"interim letter not allowed", pers[:8] + "A" + pers[9:], Invalid, Format},
		{"checksum", flipCheck(pers), Invalid, Checksum},
		{"checksum 10", pers[2:8] + "-" + flipCheck(pers[8:]), Invalid, Checksum},
		{"30 February", withCheck("19900230123"), Invalid, Date},
		{"31 April", withCheck("19900431123"), Invalid, Date},
		{"month 13", withCheck("19901301123"), Invalid, Date},
		{"month 00", withCheck("19900001123"), Invalid, Date},
		{"day 00", withCheck("19900100123"), Invalid, Date},
		{"29 February 1900 (not a leap year)", withCheck("19000229123"), Invalid, Date},
		{"29 February 2000 (leap year)", withCheck("20000229123"), Personnummer, OK},
		{"29 February 2024", withCheck("20240229123"), Personnummer, OK},
		{"29 February 2023", withCheck("20230229123"), Invalid, Date},
		{"year before 1800", withCheck("17990101123"), Invalid, Date},
		{"born after the reference date", withCheck("20261126123"), Invalid, Future},
		{"born on the reference date", withCheck("20261125123"), Personnummer, OK},
		{"10 digits born after the reference date", withCheck("261126123")[:6] + "-" + withCheck("261126123")[6:], Invalid, Future},
		{"birth number 000", withCheck("19900101000"), Invalid, BirthNumber},
		{"organisationsnummer", withCheck("556036079"), Invalid, Organisationsnummer},
		{"organisationsnummer month 20", withCheck("16202000123"), Invalid, Organisationsnummer},
		{"samordningsnummer day 91", withCheck("19900191123"), Samordningsnummer, OK},
		{"samordningsnummer day 92", withCheck("19900192123"), Invalid, Date},
		{"samordningsnummer 30 February (Skatteverket issues it)", withCheck("19900290123"), Samordningsnummer, OK},
		{"samordningsnummer unknown day", withCheck("19900160123"), Samordningsnummer, OK},
		{"samordningsnummer unknown month", withCheck("19900075123"), Samordningsnummer, OK},
		{"samordningsnummer unknown month and day", withCheck("19900060123"), Samordningsnummer, OK},
		{"interim T", withCheck("19900101T23"), Interim, OK},
		{"interim lower-case", strings.ToLower(withCheck("19900101R23")), Interim, OK},
		{"interim 10 digits", withCheck("900101N23")[:6] + "-" + withCheck("900101N23")[6:], Interim, OK},
		{"interim checksum", flipCheck(withCheck("19900101T23")), Invalid, Checksum},
		{"interim with samordning day", withCheck("19900161T23"), Invalid, Date},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := p.Parse(tc.in)
			if n.Kind() != tc.kind || n.Reason() != tc.reason {
				t.Errorf("Parse = %v, want kind %v reason %q", n, tc.kind, tc.reason)
			}
			if n.Valid() != (tc.kind != Invalid) || (n.Canonical() == "") == n.Valid() {
				t.Errorf("Valid = %t, Canonical empty = %t", n.Valid(), n.Canonical() == "")
			}
		})
	}
}

func TestCenturyInference(t *testing.T) {
	for _, tc := range []struct {
		ref        time.Time
		in, wantYY string // the century the 10-digit input should get
	}{
		{ref, withCheck("260101123"), "20"},
		{ref, withCheck("270101123"), "19"},
		{ref, withCheck("991231123"), "19"},
		{ref, withCheck("000101123"), "20"},
		// A person born in December 1926 is 99 on the reference date but
		// turns 100 in its calendar year, so writes '+' already.
		{ref, "+" + withCheck("261224123"), "19"},
		{ref, "+" + withCheck("270101123"), "18"},
		{time.Date(2000, 6, 1, 0, 0, 0, 0, time.UTC), withCheck("000101123"), "20"},
		{time.Date(2000, 6, 1, 0, 0, 0, 0, time.UTC), withCheck("010101123"), "19"},
	} {
		in := tc.in
		if in[0] == '+' {
			in = in[1:7] + "+" + in[7:]
		}
		n := NewParser(tc.ref).Parse(in)
		if !n.Valid() || n.Canonical()[:2] != tc.wantYY {
			t.Errorf("ref %s, %s: got %v century %q, want %s", tc.ref.Format("2006-01-02"), in[:6]+"…", n, n.Canonical(), tc.wantYY)
		}
	}
	// With '-', a 10-digit date later this year is in the future, not a
	// century ago.
	n := NewParser(ref).Parse(withCheck("261224123")[:6] + "-" + withCheck("261224123")[6:])
	if n.Reason() != Future {
		t.Errorf("261224-…: %v, want future", n)
	}
}

func TestSexAndBirthDate(t *testing.T) {
	p := NewParser(ref)
	for _, tc := range []struct {
		in    string
		sex   Sex
		birth string
	}{
		{withCheck("19900101123"), Male, "1990-01-01"},
		{withCheck("19900101124"), Female, "1990-01-01"},
		{withCheck("19900161124"), Female, "1990-01-01"},
		{withCheck("19900160124"), Female, ""},
		{withCheck("19900075124"), Female, ""},
		{withCheck("19900290124"), Female, ""},
		{withCheck("19900101T25"), Male, "1990-01-01"},
	} {
		n := p.Parse(tc.in)
		if n.Sex() != tc.sex || string(n.AppendBirthDate(nil)) != tc.birth {
			t.Errorf("%v: sex %q birth %q, want %q %q", n, n.Sex(), n.AppendBirthDate(nil), tc.sex, tc.birth)
		}
		if bd, ok := n.BirthDate(); ok != (tc.birth != "") || (ok && bd.Format("2006-01-02") != tc.birth) {
			t.Errorf("%v: BirthDate = %v, %t", n, bd, ok)
		}
	}
}

// stockholm makes a Stockholm reserve number whose check digit covers the
// 1-based positions from..11.
func stockholm(year, serial string, from int) string {
	s := "99" + year + serial
	vals := make([]int, 0, 11)
	for _, c := range s[from-1 : 11] {
		vals = append(vals, int(c-'0'))
	}
	return s + strconv.Itoa(luhnOver(vals))
}

func TestReserveNumbers(t *testing.T) {
	p := NewParser(ref)
	vgr := func(date, letter, nn string) string {
		vals := []int{}
		for _, c := range date[2:] {
			vals = append(vals, int(c-'0'))
		}
		vals = append(vals, map[string]int{"K": 5, "M": 7, "X": 8}[letter])
		for _, c := range nn {
			vals = append(vals, int(c-'0'))
		}
		return date + letter + nn + strconv.Itoa(luhnOver(vals))
	}
	for _, tc := range []struct {
		name string
		in   string
		kind Kind
	}{
		{"Stockholm, check over 5-11", stockholm("1987", "00123", 5), Reserve},
		{"Stockholm, check over 3-11", stockholm("1987", "00123", 3), Reserve},
		{"Stockholm, wrong check", flipCheck(stockholm("1987", "00123", 5)), Invalid},
		{"Västra Götaland K", vgr("19870314", "K", "12"), Reserve},
		{"Västra Götaland M", vgr("19870314", "M", "07"), Reserve},
		{"Västra Götaland X", vgr("20010228", "X", "99"), Reserve},
		{"Västra Götaland wrong check", flipCheck(vgr("19870314", "K", "12")), Invalid},
		{"Västra Götaland bad date", vgr("19870230", "K", "12"), Invalid},
	} {
		n := p.Parse(tc.in)
		if n.Kind() != tc.kind {
			t.Errorf("%s: %v, want %v", tc.name, n, tc.kind)
			continue
		}
		if n.Kind() == Reserve {
			if n.Linkable() || n.LinkReason() != NotLinkableReserve || n.Canonical() != tc.in {
				t.Errorf("%s: linkable %t, link reason %q, canonical %q", tc.name, n.Linkable(), n.LinkReason(), n.Canonical())
			}
		}
	}
	// The same letters as interim numbers, with their own values: an
	// interim number is never taken for a Västra Götaland reserve number.
	if n := p.Parse(withCheck("19870314K12")); n.Kind() != Interim {
		t.Errorf("interim K: %v", n)
	}
	// A parser without reserve formats reports what the digits break.
	if n := p.WithReserveFormats(nil).Parse(stockholm("1987", "00123", 5)); n.Kind() != Invalid {
		t.Errorf("without formats: %v", n)
	}
}

func TestNumberNeverPrintsDigits(t *testing.T) {
	pers := readTestNumbers(t, "testpersonnummer.txt")[0]
	n := NewParser(ref).Parse(pers)
	for _, format := range []string{"%v", "%s", "%#v", "%+v", "%q"} {
		if s := fmt.Sprintf(format, n); strings.Contains(s, pers[2:8]) || strings.Contains(s, pers[8:]) {
			t.Errorf("%s prints digits: %s", format, s)
		}
	}
}

func TestReasonsAreDistinctCodes(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range Reasons() {
		s := r.String()
		if s == "" || s == "unknown" || seen[s] || strings.ContainsAny(s, " \t") {
			t.Errorf("reason %d has code %q", r, s)
		}
		seen[s] = true
	}
}

func TestParseDoesNotAllocate(t *testing.T) {
	p := NewParser(ref)
	in := readTestNumbers(t, "testpersonnummer.txt")[100]
	in10 := in[2:8] + "-" + in[8:]
	b := []byte(in)
	allocs := testing.AllocsPerRun(100, func() {
		p.Parse(in)
		p.Parse(in10)
		p.ParseBytes(b)
		p.Parse("not a number")
	})
	if allocs != 0 {
		t.Errorf("Parse allocates %.1f times a run", allocs)
	}
}

func BenchmarkParse12(b *testing.B) {
	benchParse(b, func(s string) string { return s })
}

func BenchmarkParse10Separated(b *testing.B) {
	benchParse(b, func(s string) string {
		sep := "-"
		if y, _ := strconv.Atoi(s[:4]); ref.Year()-y >= 100 {
			sep = "+"
		}
		return s[2:8] + sep + s[8:]
	})
}

func benchParse(b *testing.B, form func(string) string) {
	var in [][]byte
	for _, s := range readTestNumbers(b, "testpersonnummer.txt") {
		in = append(in, []byte(form(s)))
	}
	p := NewParser(ref)
	b.ReportAllocs()
	b.ResetTimer()
	valid := 0
	for i := 0; i < b.N; i++ {
		if p.ParseBytes(in[i%len(in)]).Valid() {
			valid++
		}
	}
	if b.N >= len(in) && valid < b.N {
		b.Fatalf("%d of %d invalid", b.N-valid, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds()/1e6, "Mnumbers/s")
}

func FuzzParse(f *testing.F) {
	for _, s := range readTestNumbers(f, "testpersonnummer.txt")[:20] {
		f.Add(s)
		f.Add(s[2:8] + "-" + s[8:])
	}
	for _, s := range readTestNumbers(f, "testsamordningsnummer.txt")[:10] {
		f.Add(s)
	}
	f.Add(withCheck("19900101T23"))
	f.Add(stockholm("1987", "00123", 5))
	f.Add(" 19900101-1234 ")
	p := NewParser(ref)
	f.Fuzz(func(t *testing.T, s string) {
		n := p.Parse(s)
		if nb := p.ParseBytes([]byte(s)); nb != n {
			t.Fatalf("Parse and ParseBytes disagree: %v vs %v", n, nb)
		}
		if !n.Valid() {
			if n.Reason() == OK || n.Canonical() != "" {
				t.Fatalf("invalid number with reason %q canonical %q", n.Reason(), n.Canonical())
			}
			return
		}
		c := n.Canonical()
		if len(c) != 12 {
			t.Fatalf("canonical form of length %d", len(c))
		}
		again := p.Parse(c)
		if again != n {
			t.Fatalf("canonical form parses to %v (canonical %q), want %v", again, again.Canonical(), n)
		}
	})
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }
