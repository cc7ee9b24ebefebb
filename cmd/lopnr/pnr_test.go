package main

import (
	"bufio"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testNumbers(t testing.TB, n int) []string {
	t.Helper()
	f, err := os.Open("../../testdata/skatteverket/testpersonnummer.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() && len(out) < n {
		out = append(out, sc.Text())
	}
	return out
}

func TestPnrColumns(t *testing.T) {
	tn := testNumbers(t, 30000)
	old, young := tn[10], tn[29000] // born 1890s and 2000s
	bad := old[:11] + string('0'+(old[11]-'0'+1)%10)
	in := strings.Join([]string{
		young,
		young[2:8] + "-" + young[8:],
		old[2:8] + "+" + old[8:],
		bad,
		"",
		"abc\tdef",
	}, "\n") + "\r\n"
	out, stderr, code := runLopnr(t, in, "pnr", "--ref-date", "2026-11-25")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	sex := func(s string) string {
		if (s[10]-'0')%2 == 1 {
			return "M"
		}
		return "F"
	}
	date := func(s string) string { return s[:4] + "-" + s[4:6] + "-" + s[6:8] }
	want := strings.Join([]string{
		"input\tcanonical\tkind\tsex\tbirth_date\treason",
		young + "\t" + young + "\tpersonnummer\t" + sex(young) + "\t" + date(young) + "\t",
		young[2:8] + "-" + young[8:] + "\t" + young + "\tpersonnummer\t" + sex(young) + "\t" + date(young) + "\t",
		old[2:8] + "+" + old[8:] + "\t" + old + "\tpersonnummer\t" + sex(old) + "\t" + date(old) + "\t",
		bad + "\t\tinvalid\t\t\tchecksum",
		"\t\tinvalid\t\t\tempty",
		"abc\\tdef\t\tinvalid\t\t\tformat",
	}, "\n") + "\n"
	if out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
}

func TestPnrHistoryAndFiles(t *testing.T) {
	tn := testNumbers(t, 100)
	dir := t.TempDir()
	hist := filepath.Join(dir, "history.txt")
	os.WriteFile(hist, []byte("old;new;date\n"+tn[1]+";"+tn[2]+";2001-01-01\n"), 0o600)
	reused := filepath.Join(dir, "reused.txt")
	os.WriteFile(reused, []byte(tn[3]+"\n"), 0o600)
	in1 := filepath.Join(dir, "a.txt")
	os.WriteFile(in1, []byte(tn[1]+"\n"), 0o600)
	in2 := filepath.Join(dir, "b.txt")
	os.WriteFile(in2, []byte(tn[3]+"\n"+tn[4]+"\n"), 0o600)
	out, stderr, code := runLopnr(t, "", "pnr", "--ref-date", "2026-11-25", "--history", hist, "--reused", reused, in1, in2)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 4 || !strings.HasSuffix(lines[0], "\treason\tchanged_from") {
		t.Fatalf("output:\n%s", out)
	}
	check := func(line, input, canonical, reason, from string) {
		t.Helper()
		f := strings.Split(line, "\t")
		if len(f) != 7 || f[0] != input || f[1] != canonical || f[5] != reason || f[6] != from {
			t.Errorf("line %q: want input, canonical %q, reason %q, changed_from %q", line, canonical, reason, from)
		}
	}
	check(lines[1], tn[1], tn[2], "", tn[1])
	check(lines[2], tn[3], tn[3], "reused", "")
	check(lines[3], tn[4], tn[4], "", "")
}

func TestPnrErrors(t *testing.T) {
	tn := testNumbers(t, 3)
	dir := t.TempDir()
	hist := filepath.Join(dir, "history.txt")
	bad := tn[1][:11] + string('0'+(tn[1][11]-'0'+1)%10)
	os.WriteFile(hist, []byte(tn[0]+";"+bad+";2001-01-01\n"), 0o600)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"pnr", "--ref-date", "25/11/2026"}, 2, `--ref-date "25/11/2026": want YYYY-MM-DD`},
		{[]string{"pnr", "--bogus"}, 2, "flag provided but not defined"},
		{[]string{"pnr", filepath.Join(dir, "missing.txt")}, 1, "missing.txt: no such file"},
		{[]string{"pnr", "--history", hist}, 1, hist + ":1: new: invalid identity number (checksum)"},
	} {
		_, stderr, code := runLopnr(t, "", tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", tc.args, code, stderr, tc.code, tc.want)
		}
		if strings.Contains(stderr, bad) || strings.Contains(stderr, tn[0]) {
			t.Errorf("%v: stderr holds an identity number: %q", tc.args, stderr)
		}
	}
}

// repeatReader yields the same lines over and over, n lines in all.
type repeatReader struct {
	lines []byte
	left  int // bytes left
	off   int
}

func newRepeatReader(lines []string, n int) *repeatReader {
	b := []byte(strings.Join(lines, "\n") + "\n")
	return &repeatReader{lines: b, left: n / len(lines) * len(b)}
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && r.left > 0 {
		c := copy(p[n:min(len(p), n+r.left)], r.lines[r.off:])
		n += c
		r.left -= c
		r.off = (r.off + c) % len(r.lines)
	}
	return n, nil
}

// TestPnrStreamsInConstantMemory checks that memory does not grow with the
// input: a run over ten times the lines allocates about the same.
func TestPnrStreamsInConstantMemory(t *testing.T) {
	tn := testNumbers(t, 1000)
	allocs := func(lines int) float64 {
		return testing.AllocsPerRun(1, func() {
			sio := stdio{newRepeatReader(tn, lines), io.Discard, io.Discard}
			if err := runPnr(t.Context(), []string{"--ref-date", "2026-11-25"}, sio); err != nil {
				t.Fatal(err)
			}
		})
	}
	small, large := allocs(20000), allocs(200000)
	if large > small+10 {
		t.Errorf("allocations grow with input: %.0f for 20,000 lines, %.0f for 200,000", small, large)
	}
}

// BenchmarkPnr measures lopnr pnr over a stream of test numbers; run with
// -benchmem: B/op stays flat however many lines.
func BenchmarkPnr(b *testing.B) {
	tn := testNumbers(b, 41493)
	lines := 1_000_000 / len(tn) * len(tn) // whole repetitions of the list
	b.ReportAllocs()
	for b.Loop() {
		sio := stdio{newRepeatReader(tn, lines), io.Discard, io.Discard}
		if err := runPnr(b.Context(), []string{"--ref-date", "2026-11-25"}, sio); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(lines)*float64(b.N)/b.Elapsed().Seconds()/1e6, "Mlines/s")
}
