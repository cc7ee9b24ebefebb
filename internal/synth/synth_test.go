package synth

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/csv"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/text/encoding/charmap"

	"github.com/lopnr/lopnr/linkage"
	"github.com/lopnr/lopnr/linkage/personnummer"
)

const testPersons = 2000

// generated caches one data set per seed for the tests that only read.
var generated sync.Map // seed -> *dataset

type dataset struct {
	once  sync.Once
	dir   string
	truth *Truth
	err   error
}

var tmpRoot string

func TestMain(m *testing.M) {
	var err error
	tmpRoot, err = os.MkdirTemp("", "synth-test-")
	if err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(tmpRoot)
	os.Exit(code)
}

func generate(t *testing.T, seed uint64) (string, *Truth) {
	t.Helper()
	v, _ := generated.LoadOrStore(seed, &dataset{})
	d := v.(*dataset)
	d.once.Do(func() {
		d.dir, d.err = os.MkdirTemp(tmpRoot, "seed")
		if d.err == nil {
			d.truth, d.err = Generate(d.dir, Options{Persons: testPersons, Seed: seed})
		}
	})
	if d.err != nil {
		t.Fatal(d.err)
	}
	return d.dir, d.truth
}

var allFiles = []string{
	"val_sluten.csv", "val_oppen.csv", "takecare.csv", "par_sluten.csv", "par_oppen.csv.gz",
	"lmed.csv.zst", "dors.tsv", "reused.csv", "history.csv", JobFile, TruthFile,
}

func readAll(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][]byte{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = b
	}
	return m
}

// TestDeterministic: the same seed gives byte-identical files, whatever the
// number of workers; another seed gives other files.
func TestDeterministic(t *testing.T) {
	dir1, _ := generate(t, 42)
	dir2 := t.TempDir()
	if _, err := Generate(dir2, Options{Persons: testPersons, Seed: 42, Workers: 1}); err != nil {
		t.Fatal(err)
	}
	a, b := readAll(t, dir1), readAll(t, dir2)
	var names []string
	for name := range a {
		names = append(names, name)
	}
	slices.Sort(names)
	if !slices.Equal(names, slices.Sorted(slices.Values(allFiles))) {
		t.Errorf("files %v, want %v", names, allFiles)
	}
	for _, name := range names {
		if !bytes.Equal(a[name], b[name]) {
			t.Errorf("%s differs between two runs with the same seed", name)
		}
	}
	dir3, _ := generate(t, 43)
	c := readAll(t, dir3)
	for _, name := range allFiles {
		if name != JobFile && bytes.Equal(a[name], c[name]) {
			t.Errorf("%s is the same for seeds 42 and 43", name)
		}
	}
}

func TestJobSpecLoads(t *testing.T) {
	dir, _ := generate(t, 42)
	spec, err := linkage.LoadSpec(filepath.Join(dir, JobFile))
	if err != nil {
		t.Fatal(err)
	}
	if spec.Project != "synth-42" || len(spec.Sources) != 9 || spec.Identity.History != "history" || spec.Identity.Reused != "reused" {
		t.Errorf("spec: project %q, %d sources, identity %+v", spec.Project, len(spec.Sources), spec.Identity)
	}
	if !spec.RefDate().Equal(DefaultRefDate) {
		t.Errorf("reference date %v", spec.RefDate())
	}
	for i := range spec.Sources {
		if _, err := os.Stat(spec.File(i)); err != nil {
			t.Error(err)
		}
	}
}

// TestTruthConsistent checks the truth against itself, and that every
// reason occurs at the default rates.
func TestTruthConsistent(t *testing.T) {
	dir, truth := generate(t, 42)
	var fromFile Truth
	b, err := os.ReadFile(filepath.Join(dir, TruthFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &fromFile); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&fromFile, truth) {
		t.Error("truth.json differs from the returned Truth")
	}
	var names []string
	for _, s := range sourceDefs {
		names = append(names, s.name)
	}
	seen := map[string]bool{}
	for i, s := range truth.Sources {
		if s.Name != names[i] {
			t.Errorf("source %d is %q, want %q", i, s.Name, names[i])
		}
		sum := int64(0)
		for r, n := range s.Quarantined {
			if n <= 0 {
				t.Errorf("%s: quarantined %s = %d", s.Name, r, n)
			}
			sum += n
			seen[r] = true
		}
		if s.LinkableRows+sum != s.Rows {
			t.Errorf("%s: linkable %d + quarantined %d != rows %d", s.Name, s.LinkableRows, sum, s.Rows)
		}
		if s.CohortPersons > s.Persons || s.Persons == 0 {
			t.Errorf("%s: cohort persons %d, persons %d", s.Name, s.CohortPersons, s.Persons)
		}
	}
	sum := 0
	for _, n := range truth.Overlap {
		sum += n
	}
	if sum != truth.Cohort.Persons {
		t.Errorf("overlap sums to %d, cohort has %d", sum, truth.Cohort.Persons)
	}
	if c := truth.Cohort.Persons; c < testPersons*7/100 || c > testPersons/10 {
		t.Errorf("cohort of %d among %d persons, want about a tenth", c, testPersons)
	}
	for _, r := range personnummer.Reasons() {
		if !seen[r.String()] {
			t.Errorf("no row quarantined as %s", r)
		}
	}
	var rows int64
	for _, s := range truth.Sources {
		rows += s.Rows
	}
	if rows != truth.Rows() || rows < testPersons*13 || rows > testPersons*18 {
		t.Errorf("%d rows for %d persons, want about 15 a person", rows, testPersons)
	}
}

// TestTruthMatchesFiles reads the files back as a linkage engine would —
// decompress, decode, parse CSV, parse and resolve every identity with
// linkage/personnummer — and recounts the report by its definitions. It
// also checks the files' form: headers, field counts, line endings,
// encodings and dates.
func TestTruthMatchesFiles(t *testing.T) {
	for _, seed := range []uint64{42, 43} {
		dir, truth := generate(t, seed)
		got, st := recount(t, dir)
		if !reflect.DeepEqual(got, truth) {
			gb, _ := json.MarshalIndent(got, "", " ")
			wb, _ := json.MarshalIndent(truth, "", " ")
			t.Errorf("seed %d: recounted from the files:\n%s\nwant (the generator's truth):\n%s", seed, gb, wb)
		}
		// The planted traps are all there.
		for what, n := range map[string]int{
			"in-window AMI of a person under 18":          st.minors,
			"in-window AMI with an unknown birth date":    st.unknownBirth,
			"index date on the 18th birthday":             st.on18,
			"index date the day before the 18th birthday": st.before18,
			"AMI only before or after the window":         st.outOfWindow,
			"AMI in OP only":                              st.opOnly,
			"members with AMI before the window too":      st.earlyToo,
			"members indexed under an old number":         st.oldNumber,
			"index on the window's first day":             st.firstDay,
			"index on the window's last day":              st.lastDay,
			"AMI codes with a dot":                        st.dotted,
			"BLANKED codes":                               st.blanked,
			"quoted fields":                               st.quoted,
			"duplicate rows":                              st.duplicates,
			"register dates with 00":                      st.zeroDates,
			"identities with spaces around":               st.spaced,
			"identities with '+'":                         st.plus,
			"samordningsnummer":                           st.sn,
			"persons in only one source":                  st.oneSource,
		} {
			if n == 0 {
				t.Errorf("seed %d: no %s", seed, what)
			}
		}
	}
}

// recountStats are things worth knowing that are not in the report.
type recountStats struct {
	minors, unknownBirth, on18, before18, outOfWindow, opOnly, earlyToo, oldNumber int
	firstDay, lastDay, dotted, blanked, quoted, duplicates, zeroDates, spaced      int
	plus, sn, oneSource                                                            int
}

func recount(t *testing.T, dir string) (*Truth, recountStats) {
	t.Helper()
	var st recountStats
	spec, err := linkage.LoadSpec(filepath.Join(dir, JobFile))
	if err != nil {
		t.Fatal(err)
	}
	ref := spec.RefDate()
	p := personnummer.NewParser(ref)
	open := func(name string) io.ReadCloser {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	hf := open("history.csv")
	changes, err := personnummer.ReadHistory(hf, "history.csv", p)
	hf.Close()
	if err != nil {
		t.Fatal(err)
	}
	rf := open("reused.csv")
	reused, err := personnummer.ReadNumbers(rf, "reused.csv", p)
	rf.Close()
	if err != nil {
		t.Fatal(err)
	}
	h := personnummer.NewHistory(changes, reused)
	profiles := linkage.Builtin()

	type key = [12]byte
	truth := &Truth{Overlap: map[string]int{}}
	persons := map[string]map[key]bool{}
	var srcOrder []string
	index := map[key]time.Time{}     // par_sluten: earliest linkable AMI admission in the window
	amiAny := map[key]bool{}         // par_sluten: linkable AMI in HDIA/DIA anywhere
	amiOP := map[key]bool{}          // par_sluten: linkable in-window AMI in OP
	early := map[key]bool{}          // par_sluten: linkable AMI before the window
	indexedOld := map[key]bool{}     // the first in-window AMI row was under an old number
	personSources := map[key]int{}   // over all sources
	from, to := cohortFrom, cohortTo // the spec's, checked below
	cr := spec.Cohort.Criteria[0]
	if cr.From != from.Format(time.DateOnly) || cr.To != to.Format(time.DateOnly) {
		t.Fatalf("criterion window %s..%s", cr.From, cr.To)
	}
	lo := time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC)

	for i, src := range spec.Sources {
		prof := profiles[src.Profile]
		if prof.Kind != linkage.KindEvents {
			continue
		}
		srcOrder = append(srcOrder, src.Name)
		raw, err := os.ReadFile(spec.File(i))
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case strings.HasSuffix(src.Path, ".gz"):
			zr, err := gzip.NewReader(bytes.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			if raw, err = io.ReadAll(zr); err != nil {
				t.Fatal(err)
			}
		case strings.HasSuffix(src.Path, ".zst"):
			zr, err := zstd.NewReader(bytes.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			raw, err = io.ReadAll(zr)
			zr.Close()
			if err != nil {
				t.Fatal(err)
			}
		}
		// Line endings: CRLF in val_sluten only.
		crlf := bytes.Count(raw, []byte("\r\n"))
		lf := bytes.Count(raw, []byte("\n"))
		if src.Name == srcValSluten {
			if crlf != lf {
				t.Errorf("%s: %d of %d lines end in CRLF", src.Name, crlf, lf)
			}
		} else if crlf != 0 || bytes.Contains(raw, []byte("\r")) {
			t.Errorf("%s: carriage returns", src.Name)
		}
		text := string(raw)
		switch enc := src.Encoding; enc {
		case linkage.EncodingLatin, linkage.EncodingCP:
			// val_sluten has no free text: only a few invalid identities
			// ("okänd", an en dash) need more than ASCII.
			if utf8.Valid(raw) && (src.Name != srcValSluten || !isASCII(raw)) {
				t.Errorf("%s: valid UTF-8, want %s with non-ASCII letters", src.Name, enc)
			}
			cm := charmap.ISO8859_1
			if enc == linkage.EncodingCP {
				cm = charmap.Windows1252
			}
			if text, err = cm.NewDecoder().String(text); err != nil {
				t.Fatal(err)
			}
		default:
			if !utf8.Valid(raw) {
				t.Errorf("%s: not UTF-8", src.Name)
			}
		}
		if src.Name == srcTakeCare && !strings.Contains(text, "ö") {
			t.Errorf("%s: no Swedish letters", src.Name)
		}
		rd := csv.NewReader(strings.NewReader(text))
		rd.Comma = rune(prof.Delimiter[0])
		header, err := rd.Read()
		if err != nil {
			t.Fatal(err)
		}
		wantHeader, err := Columns(src.Name)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(header, wantHeader) {
			t.Errorf("%s: header %v, want %v", src.Name, header, wantHeader)
		}
		col := map[string]int{}
		for j, c := range header {
			col[c] = j
		}
		idCol := col[prof.Identity]
		if idCol != 0 {
			t.Errorf("%s: identity column at %d", src.Name, idCol)
		}
		var codeCols []int // criterion columns in par_sluten
		if src.Name == cr.Source {
			codeCols = append(codeCols, col["HDIA"])
			for k := 1; k <= 30; k++ {
				codeCols = append(codeCols, col["DIA"+itoa(k)])
			}
		}
		st.quoted += strings.Count(text, "\"\"")
		s := SourceTruth{Name: src.Name, Quarantined: map[string]int64{}}
		seen := map[key]bool{}
		changed := map[key]bool{}
		var prev []string
		for {
			rec, err := rd.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", src.Name, err)
			}
			if len(rec) != len(header) {
				t.Fatalf("%s: %d fields, want %d", src.Name, len(rec), len(header))
			}
			if slices.Equal(rec, prev) {
				st.duplicates++
			}
			prev = rec
			s.Rows++
			for j, f := range rec {
				if strings.ContainsAny(f, "\r\n") {
					t.Errorf("%s: a line break in a field", src.Name)
				}
				if f == "BLANKED" {
					st.blanked++
				}
				// Dates: in 2010..the reference date.
				c := header[j]
				switch prof.Dates[c] {
				case linkage.DateISO, linkage.DateYYYYMMDD, linkage.DateRegister:
					if f == "" {
						if c == prof.EventDate {
							t.Errorf("%s: empty event date", src.Name)
						}
						continue
					}
					d := strings.ReplaceAll(f, "-", "")
					if prof.Dates[c] == linkage.DateRegister && strings.HasSuffix(d, "00") {
						st.zeroDates++
						d = d[:6] + "01"
						if strings.HasSuffix(d, "0001") {
							d = d[:4] + "0101"
						}
					}
					day, err := time.Parse("20060102", d)
					if err != nil || day.Before(lo) || day.After(ref) {
						t.Errorf("%s: %s %q out of range", src.Name, c, f)
					}
				}
			}
			id := rec[idCol]
			if strings.TrimSpace(id) != id && strings.TrimSpace(id) != "" {
				st.spaced++
			}
			if strings.Contains(id, "+") {
				st.plus++
			}
			n := p.Parse(id)
			if r := n.LinkReason(); r != personnummer.OK {
				s.Quarantined[r.String()]++
				continue
			}
			cur, r := h.Resolve(n)
			if r != personnummer.OK {
				s.Quarantined[r.String()]++
				continue
			}
			if n.Kind() == personnummer.Samordningsnummer {
				st.sn++
			}
			ck := cur.Key()
			seen[ck] = true
			if n.Key() != ck {
				changed[n.Key()] = true
			}
			if codeCols == nil {
				continue
			}
			in, err := time.Parse("20060102", rec[col[prof.EventDate]])
			if err != nil {
				t.Fatal(err)
			}
			inWindow := !in.Before(from) && !in.After(to)
			ami := false
			for _, j := range codeCols {
				c := strings.ToUpper(strings.NewReplacer(".", "", " ", "").Replace(rec[j]))
				if strings.HasPrefix(c, "I21") || strings.HasPrefix(c, "I22") {
					ami = true
					if strings.Contains(rec[j], ".") {
						st.dotted++
					}
				}
			}
			if ami {
				amiAny[ck] = true
				if inWindow {
					if old, ok := index[ck]; !ok || in.Before(old) {
						index[ck] = in
						indexedOld[ck] = n.Key() != ck
					}
				} else if in.Before(from) {
					early[ck] = true
				}
			} else if inWindow {
				for _, c := range strings.Fields(rec[col["OP"]]) {
					if strings.HasPrefix(strings.ToUpper(strings.ReplaceAll(c, ".", "")), "I2") {
						amiOP[ck] = true
					}
				}
			}
		}
		s.LinkableRows = s.Rows
		for _, n := range s.Quarantined {
			s.LinkableRows -= n
		}
		s.Persons = len(seen)
		s.ChangedNumbersResolved = len(changed)
		persons[src.Name] = seen
		for k := range seen {
			personSources[k]++
		}
		truth.Sources = append(truth.Sources, s)
	}

	members := map[key]bool{}
	for k, idx := range index {
		b, ok := p.Parse(string(k[:])).BirthDate()
		if !ok {
			st.unknownBirth++
			continue
		}
		age := idx.Year() - b.Year()
		if idx.Month() < b.Month() || idx.Month() == b.Month() && idx.Day() < b.Day() {
			age--
		}
		if b18 := b.AddDate(18, 0, 0); idx.Equal(b18) {
			st.on18++
		} else if idx.Equal(b18.AddDate(0, 0, -1)) {
			st.before18++
		}
		if age < 18 {
			st.minors++
			continue
		}
		members[k] = true
		if early[k] {
			st.earlyToo++
		}
		if indexedOld[k] {
			st.oldNumber++
		}
		if idx.Equal(from) {
			st.firstDay++
		}
		if idx.Equal(to) {
			st.lastDay++
		}
	}
	for k := range amiAny {
		if _, ok := index[k]; !ok {
			st.outOfWindow++
		}
	}
	for k := range amiOP {
		if !amiAny[k] {
			st.opOnly++
		}
	}
	for k := range personSources {
		if personSources[k] == 1 {
			st.oneSource++
		}
	}
	truth.Cohort.Persons = len(members)
	for _, s := range truth.Sources {
		for k := range members {
			if persons[s.Name][k] {
				truth.Sources[slices.IndexFunc(truth.Sources, func(x SourceTruth) bool { return x.Name == s.Name })].CohortPersons++
			}
		}
	}
	for k := range members {
		var in []string
		for _, name := range srcOrder {
			if persons[name][k] {
				in = append(in, name)
			}
		}
		key := strings.Join(in, "+")
		if key == "" {
			key = "(none)"
		}
		truth.Overlap[key]++
	}
	return truth, st
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}

// TestIdentityFiles checks reused.csv and history.csv: a header, then
// valid numbers; the history has a chain, a conflict and a cycle.
func TestIdentityFiles(t *testing.T) {
	dir, _ := generate(t, 42)
	p := personnummer.NewParser(DefaultRefDate)
	f, err := os.Open(filepath.Join(dir, "history.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan()
	if sc.Text() != "GAMMALT_PNR;NYTT_PNR;ANDRINGSDATUM" {
		t.Errorf("history header %q", sc.Text())
	}
	next := map[string][]string{}
	for sc.Scan() {
		fs := strings.Split(sc.Text(), ";")
		if len(fs) != 3 || !p.Parse(fs[0]).Linkable() || !p.Parse(fs[1]).Linkable() {
			t.Fatalf("history line %q", sc.Text())
		}
		next[fs[0]] = append(next[fs[0]], fs[1])
	}
	var chain, conflict, cycle bool
	for old, news := range next {
		if len(news) > 1 {
			conflict = true
		}
		if n2, ok := next[news[0]]; ok {
			if n2[0] == old {
				cycle = true
			} else {
				chain = true
			}
		}
	}
	if !chain || !conflict || !cycle {
		t.Errorf("history: chain %v, conflict %v, cycle %v", chain, conflict, cycle)
	}
}

// TestSmallAndOptions: tiny populations work, rates can be turned off,
// bad options are refused.
func TestSmallAndOptions(t *testing.T) {
	for _, n := range []int{1, 5, 30} {
		if _, err := Generate(t.TempDir(), Options{Persons: n, Seed: 1}); err != nil {
			t.Errorf("%d persons: %v", n, err)
		}
	}
	dir := t.TempDir()
	truth, err := Generate(dir, Options{Persons: 500, Seed: 3, InvalidRate: -1, InterimRate: -1, ReserveRate: -1,
		ChangedRate: -1, ReusedRate: -1, DuplicateRate: -1})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range truth.Sources {
		if len(s.Quarantined) != 0 || s.ChangedNumbersResolved != 0 {
			t.Errorf("%s: quarantined %v, changed %d with no messiness", s.Name, s.Quarantined, s.ChangedNumbersResolved)
		}
	}
	got, _ := recount(t, dir)
	if !reflect.DeepEqual(got, truth) {
		t.Error("recount differs without messiness")
	}
	// Another reference date: numbers and dates follow it.
	dir = t.TempDir()
	truth, err = Generate(dir, Options{Persons: 1000, Seed: 4, RefDate: time.Date(2020, 3, 1, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := recount(t, dir); !reflect.DeepEqual(got, truth) {
		t.Error("recount differs with reference date 2020-03-01")
	}
	for _, o := range []Options{
		{Persons: 0},
		{Persons: 10, InvalidRate: 2},
		{Persons: 10, RowsPerPerson: 1},
		{Persons: 10, RefDate: time.Date(2005, 1, 1, 0, 0, 0, 0, time.UTC)},
		{Persons: 10, TestData: t.TempDir()},
	} {
		if _, err := Generate(t.TempDir(), o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}

// TestBeyondTestNumbers: with more persons than test numbers, generated
// numbers are valid personnummer not on the test list, all distinct.
func TestBeyondTestNumbers(t *testing.T) {
	if testing.Short() {
		t.Skip("60,000 persons")
	}
	o := Options{Persons: 60_000, Seed: 9}.Defaults()
	td, err := findTestData()
	if err != nil {
		t.Fatal(err)
	}
	o.TestData = td
	g, err := newGenerator(o)
	if err != nil {
		t.Fatal(err)
	}
	test := map[uint64]bool{}
	p := personnummer.NewParser(o.RefDate)
	for _, name := range []string{testPNFile, testSNFile} {
		b, err := os.ReadFile(filepath.Join(td, name))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Fields(string(b)) {
			var c number
			copy(c[:], l)
			test[numKey(&c)] = true
		}
	}
	seen := map[number]bool{}
	generatedN, fromTest := 0, 0
	for i := range g.persons {
		pp := &g.persons[i]
		if pp.curRes == personnummer.Reused {
			continue // pairs share
		}
		if seen[pp.num] {
			t.Fatal("a number given to two persons")
		}
		seen[pp.num] = true
		if pp.flags&fTest != 0 {
			fromTest++
			if !test[numKey(&pp.num)] {
				t.Fatal("a test number not on the list")
			}
			continue
		}
		generatedN++
		if test[numKey(&pp.num)] {
			t.Fatal("a generated number is on the test list")
		}
		if n := p.ParseBytes(pp.num[:]); n.Kind() != personnummer.Personnummer || !n.Linkable() {
			t.Fatalf("a generated number parses as %v", n)
		}
	}
	if generatedN == 0 || fromTest < 40_000 {
		t.Errorf("%d generated, %d test numbers", generatedN, fromTest)
	}
}

// BenchmarkGenerate measures rows written a second (100,000 persons, about
// 1.5 million rows a run).
func BenchmarkGenerate(b *testing.B) {
	var rows int64
	for i := 0; b.Loop(); i++ {
		truth, err := Generate(b.TempDir(), Options{Persons: 100_000, Seed: uint64(i)})
		if err != nil {
			b.Fatal(err)
		}
		rows += truth.Rows()
	}
	b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
}

// TestSourceRows: scaling one source's rows per person changes that source
// alone (each source has its own random stream), the truth still matches
// the files, and bad scales are refused.
func TestSourceRows(t *testing.T) {
	o := Options{Persons: 2000, Seed: 5}
	base, err := Generate(t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	o.SourceRows = map[string]float64{srcValOppen: 3, srcLMED: 0.1}
	dir := t.TempDir()
	scaled, err := Generate(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range scaled.Sources {
		b := base.Sources[i]
		switch s.Name {
		case srcValOppen:
			if r := float64(s.Rows) / float64(b.Rows); r < 2.5 || r > 3.5 {
				t.Errorf("val_oppen ×3: %d rows against %d", s.Rows, b.Rows)
			}
		case srcLMED:
			// At least one row for each person who appears.
			if s.Rows >= b.Rows/3 || s.Rows < int64(s.Persons) {
				t.Errorf("lmed ×0.1: %d rows against %d, %d persons", s.Rows, b.Rows, s.Persons)
			}
		default:
			if !reflect.DeepEqual(s, b) {
				t.Errorf("%s changed when other sources were scaled", s.Name)
			}
		}
	}
	if got, _ := recount(t, dir); !reflect.DeepEqual(got, scaled) {
		t.Error("recount differs with SourceRows")
	}
	for _, sr := range []map[string]float64{{"nosuch": 2}, {srcDors: 2}, {srcValOppen: 0}, {srcValOppen: -1}, {srcValOppen: 101}} {
		if _, err := Generate(t.TempDir(), Options{Persons: 10, SourceRows: sr}); err == nil {
			t.Errorf("SourceRows %v: no error", sr)
		}
	}
}

// TestApprovedNamesEverySourceOfTheJob: a job reads only approved
// sources (extract.CheckApproval), so Approved names each source job.yaml
// lists, with its profile.
func TestApprovedNamesEverySourceOfTheJob(t *testing.T) {
	for _, d := range append(append([]sourceDef{}, sourceDefs...), reusedDef, historyDef) {
		if want := "{name: " + d.name + ", profile: " + d.profile + "}"; !strings.Contains(Approved, want) {
			t.Errorf("Approved lacks %s", want)
		}
	}
}
