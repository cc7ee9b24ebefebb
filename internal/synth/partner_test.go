package synth

import (
	"bufio"
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lopnr/lopnr/linkage/personnummer"
)

// testMembers returns n of Skatteverket's test numbers usable at the
// default reference date, spread over the files (personnummer of every
// age, then samordningsnummer), and every number in the files.
func testMembers(t testing.TB, n int) (members []string, all map[uint64]struct{}) {
	t.Helper()
	dir, err := findTestData()
	if err != nil {
		t.Fatal(err)
	}
	all = map[uint64]struct{}{}
	pool, err := loadTestNumbers(dir, personnummer.NewParser(DefaultRefDate), all)
	if err != nil {
		t.Fatal(err)
	}
	if n > len(pool) {
		t.Fatalf("want %d test numbers, have %d", n, len(pool))
	}
	for i := range n {
		members = append(members, string(pool[i*len(pool)/n].c[:]))
	}
	return members, all
}

func TestPartnerFile(t *testing.T) {
	members, testNumbers := testMembers(t, 3000)
	opts := PartnerOptions{Members: members, Others: 5000, RowsPerPerson: 3, Invalid: 700, Seed: 7}
	dir := t.TempDir()
	path := filepath.Join(dir, "scb.csv")
	truth, err := WritePartnerFile(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	want := PartnerTruth{Rows: 8000*3 + 700, MemberRows: 3000 * 3, OtherRows: 5000 * 3, InvalidRows: 700, MemberPersons: 3000, OtherPersons: 5000}
	if truth != want {
		t.Fatalf("truth %+v, want %+v", truth, want)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v; want 0600", fi.Mode(), err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("the directory holds %d entries, want only the file", len(entries))
	}

	// Read it back as a region would.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	isMember := map[string]bool{}
	for _, m := range members {
		isMember[m] = true
	}
	p := personnummer.NewParser(DefaultRefDate)
	memberRows, otherRows := map[string]int{}, map[string]int{}
	var invalid int64
	reasons := map[personnummer.Reason]int{}
	forms := map[string]int{}
	var memberPos []int
	sc := bufio.NewScanner(bytes.NewReader(data))
	if !sc.Scan() || sc.Text() != PartnerHeader {
		t.Fatalf("header %q, want %q", sc.Text(), PartnerHeader)
	}
	line := 1
	for sc.Scan() {
		line++
		f := strings.Split(sc.Text(), ";")
		if len(f) != 4 {
			t.Fatalf("line %d: %d fields, want 4", line, len(f))
		}
		year, err := strconv.Atoi(f[1])
		if err != nil || year < 2023 || year > 2025 {
			t.Fatalf("line %d: year %q, want 2023..2025", line, f[1])
		}
		if inc, err := strconv.ParseInt(f[2], 10, 64); err != nil || inc < 0 {
			t.Fatalf("line %d: income %q", line, f[2])
		}
		if len(f[3]) != 4 || strings.Trim(f[3], "0123456789") != "" {
			t.Fatalf("line %d: municipality %q, want 4 digits", line, f[3])
		}
		n := p.Parse(f[0])
		switch {
		case n.Linkable():
			canon := n.Canonical()
			forms[formOf(f[0])]++
			if isMember[canon] {
				memberRows[canon]++
				memberPos = append(memberPos, line)
			} else {
				otherRows[canon]++
			}
		case n.Kind() == personnummer.Invalid:
			invalid++
			reasons[n.Reason()]++
		default:
			t.Fatalf("line %d: a valid identity that is not linkable (%s)", line, n.LinkReason())
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if int64(line-1) != truth.Rows {
		t.Fatalf("%d rows, truth says %d", line-1, truth.Rows)
	}
	// Every member, and only they, under their canonical number, once a
	// year.
	if len(memberRows) != len(members) {
		t.Fatalf("%d members in the file, want %d", len(memberRows), len(members))
	}
	for _, m := range members {
		if memberRows[m] != 3 {
			t.Fatalf("a member has %d rows, want 3", memberRows[m])
		}
	}
	// Others: as many as asked, none a member (a member's rows would
	// count more than 3), none a test number.
	if int64(len(otherRows)) != truth.OtherPersons {
		t.Fatalf("%d other persons, want %d", len(otherRows), truth.OtherPersons)
	}
	for canon, rows := range otherRows {
		if rows != 3 {
			t.Fatalf("another person has %d rows, want 3", rows)
		}
		c := number([]byte(canon))
		if _, ok := testNumbers[numKey(&c)]; ok {
			t.Fatal("one of the others is a Skatteverket test number")
		}
	}
	if invalid != truth.InvalidRows {
		t.Fatalf("%d invalid rows, want %d", invalid, truth.InvalidRows)
	}
	for _, r := range []personnummer.Reason{personnummer.Checksum, personnummer.Format, personnummer.Empty} {
		if reasons[r] == 0 {
			t.Errorf("no invalid row with reason %s (%v)", r, reasons)
		}
	}
	if len(reasons) != 3 {
		t.Errorf("invalid rows have reasons %v, want checksum, format and empty only", reasons)
	}
	for _, f := range []string{"12", "12-", "10-", "10+"} {
		if forms[f] == 0 {
			t.Errorf("no identity in form %s (%v)", f, forms)
		}
	}
	// Shuffled: the members' rows are spread over the file, not first.
	quarter := 0
	for _, pos := range memberPos {
		if pos <= line/4 {
			quarter++
		}
	}
	if share := float64(quarter) / float64(len(memberPos)); share < 0.2 || share > 0.3 {
		t.Errorf("%.2f of the members' rows in the first quarter of the file, want about 0.25", share)
	}

	// The same seed gives the same bytes; another seed another file.
	again := filepath.Join(dir, "again.csv")
	if _, err := WritePartnerFile(again, opts); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(again); !bytes.Equal(b, data) {
		t.Fatal("the same seed gave another file")
	}
	opts.Seed = 8
	if _, err := WritePartnerFile(again, opts); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(again); bytes.Equal(b, data) {
		t.Fatal("another seed gave the same file")
	}
}

// formOf names an identity's form: digits and which separator.
func formOf(s string) string {
	digits := strings.Trim(s, "-+")
	digits = strings.ReplaceAll(strings.ReplaceAll(digits, "-", ""), "+", "")
	switch {
	case strings.Contains(s, "+"):
		return strconv.Itoa(len(digits)) + "+"
	case strings.Contains(s, "-"):
		return strconv.Itoa(len(digits)) + "-"
	}
	return strconv.Itoa(len(digits))
}

func TestPartnerFileOptions(t *testing.T) {
	members, _ := testMembers(t, 20)
	dir := t.TempDir()
	path := filepath.Join(dir, "p.csv")
	// Defaults: one row a person, the year before the reference date.
	truth, err := WritePartnerFile(path, PartnerOptions{Members: members, Others: 5})
	if err != nil {
		t.Fatal(err)
	}
	if truth.Rows != 25 || truth.MemberRows != 20 || truth.OtherRows != 5 {
		t.Fatalf("truth %+v", truth)
	}
	data, _ := os.ReadFile(path)
	if got := strings.Count(string(data), ";2025;"); got != 25 {
		t.Fatalf("%d rows of 2025, want 25", got)
	}
	// Nothing but invalid rows, and nothing at all.
	if truth, err := WritePartnerFile(path, PartnerOptions{Invalid: 10}); err != nil || truth.InvalidRows != 10 || truth.Rows != 10 {
		t.Fatalf("only invalid rows: %+v, %v", truth, err)
	}
	if truth, err := WritePartnerFile(path, PartnerOptions{}); err != nil || truth.Rows != 0 {
		t.Fatalf("an empty file: %+v, %v", truth, err)
	}
	if data, _ := os.ReadFile(path); string(data) != PartnerHeader+"\n" {
		t.Fatalf("an empty file holds %q", data)
	}
	// An existing file with another mode is replaced by one with 0600.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := WritePartnerFile(path, PartnerOptions{Others: 1}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v; want 0600", fi.Mode(), err)
	}

	dashed := members[0][:8] + "-" + members[0][8:]
	badCheck := members[1][:11] + string('0'+(members[1][11]-'0'+1)%10)
	for name, tc := range map[string]struct {
		opts PartnerOptions
		want string
	}{
		"not canonical":  {PartnerOptions{Members: []string{members[0], dashed}}, "Members[1]"},
		"check digit":    {PartnerOptions{Members: []string{badCheck}}, "Members[0]"},
		"empty":          {PartnerOptions{Members: []string{members[0], members[1], ""}}, "Members[2]"},
		"repeated":       {PartnerOptions{Members: []string{members[0], members[1], members[0]}}, "Members[2] repeats Members[0]"},
		"rows negative":  {PartnerOptions{RowsPerPerson: -1}, "RowsPerPerson"},
		"rows too many":  {PartnerOptions{RowsPerPerson: 101}, "RowsPerPerson"},
		"others":         {PartnerOptions{Others: -1}, "Others"},
		"invalid":        {PartnerOptions{Invalid: -1}, "Invalid"},
		"ref date":       {PartnerOptions{RefDate: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)}, "RefDate"},
		"no test data":   {PartnerOptions{TestData: t.TempDir()}, "test numbers"},
		"missing folder": {PartnerOptions{}, "partner file"},
	} {
		out := path
		if name == "missing folder" {
			out = filepath.Join(dir, "missing", "p.csv")
		}
		_, err := WritePartnerFile(out, tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want an error naming %q", name, err, tc.want)
			continue
		}
		for _, m := range members {
			if strings.Contains(err.Error(), m[2:]) {
				t.Errorf("%s: the error holds an identity number", name)
			}
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("failures left %d entries, want only the file", len(entries))
	}
}

// TestMakeOthersAvoidsTaken gives makeOthers one birth date whose numbers
// are more than half taken: it must find exactly the free ones.
func TestMakeOthersAvoidsTaken(t *testing.T) {
	day := dayOf(1961, 5, 17)
	var all []uint64
	for serial := 1; serial <= 999; serial++ {
		c := makeNumber(1961, 5, 17, serial, false)
		all = append(all, numKey(&c))
	}
	r := rand.New(rand.NewPCG(1, 2))
	takenSet := map[uint64]bool{}
	for _, i := range r.Perm(len(all))[:600] {
		takenSet[all[i]] = true
	}
	taken := func(k uint64) bool { return takenSet[k] }
	got, err := makeOthers(r, 399, day, day, taken)
	if err != nil {
		t.Fatal(err)
	}
	free := slices.DeleteFunc(slices.Clone(all), taken)
	slices.Sort(free)
	if !slices.Equal(got, free) {
		t.Fatalf("makeOthers gave %d numbers, not the %d free ones", len(got), len(free))
	}
	if _, err := makeOthers(r, 400, day, day, taken); err == nil {
		t.Fatal("makeOthers found more free numbers than there are")
	}
	for _, k := range got {
		if c := keyNumber(k); numKey(&c) != k {
			t.Fatal("keyNumber does not invert numKey")
		}
	}
}

func TestFeistelIsAPermutation(t *testing.T) {
	for _, n := range []uint64{1, 2, 3, 4, 5, 7, 8, 9, 100, 255, 256, 257, 1000, 4097, 65_536, 100_003} {
		f := newFeistel(n, n*31)
		seen := make([]bool, n)
		fixed := 0
		for i := range n {
			x := f.at(i)
			if x >= n || seen[x] {
				t.Fatalf("n=%d: at(%d)=%d is out of range or repeated", n, i, x)
			}
			seen[x] = true
			if x == i {
				fixed++
			}
		}
		if n >= 1000 && fixed > 10 {
			t.Errorf("n=%d: %d fixed points; a random permutation has about 1", n, fixed)
		}
	}
}

// benchMembers returns n members: every usable test number, then
// personnummer made up in memory.
func benchMembers(b *testing.B, n int) []string {
	members, all := testMembers(b, 40_000)
	r := rand.New(rand.NewPCG(3, 4))
	seen := map[uint64]bool{}
	for k := range all {
		seen[k] = true
	}
	for len(members) < n {
		y, m, d := civil(dayOf(1920, 1, 1) + int32(r.IntN(35_000)))
		c := makeNumber(y, int(m), d, 1+r.IntN(999), false)
		if k := numKey(&c); !seen[k] {
			seen[k] = true
			members = append(members, string(c[:]))
		}
	}
	return members
}

// BenchmarkWritePartnerFile writes 1,000,000 rows: 100,000 members and
// 400,000 others with two rows each.
func BenchmarkWritePartnerFile(b *testing.B) {
	members := benchMembers(b, 100_000)
	path := filepath.Join(b.TempDir(), "partner.csv")
	opts := PartnerOptions{Members: members, Others: 400_000, RowsPerPerson: 2, Seed: 1}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for b.Loop() {
		truth, err := WritePartnerFile(path, opts)
		if err != nil {
			b.Fatal(err)
		}
		if truth.Rows != 1_000_000 {
			b.Fatalf("%d rows", truth.Rows)
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(b.N)*1e6/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(b.N)/(1<<20), "MiB-alloc/op")
	if fi, err := os.Stat(path); err == nil {
		b.ReportMetric(float64(fi.Size())/(1<<20), "MiB-file")
	}
}
