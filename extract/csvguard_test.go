package extract

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/lopnr/lopnr/linkage/personnummer"
)

func TestCSVGuard(t *testing.T) {
	n := testNumber(t, 30000)
	p := personnummer.NewParser(time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC))
	long := strings.Repeat("x", 5000) + " " + n[2:8] + "-" + n[8:] + " " + strings.Repeat("y", 5000)
	for _, tc := range []struct {
		name, csv, col string
	}{
		{"clean", "LopNr;A;B\n1;2020-01-01;\"a;b\"\"c\"\n2;12345678;I219\n", ""},
		{"plain value", "LopNr;A;B\n1;x;" + n + "\n", "B"},
		{"quoted with delimiter", "LopNr;A;B\n1;\"see; " + n[2:8] + "-" + n[8:] + "\";y\n", "A"},
		{"after doubled quotes", "LopNr;A;B\n1;\"\"\"q\"\" " + n + "\";y\n", "A"},
		{"long value", "LopNr;A\n1;\"" + long + "\"\n", "A"},
		{"header is not data", "LopNr;" + n + "\n1;x\n", ""},
	} {
		for _, chunk := range []int{1, 7, 1 << 20} {
			g := newCSVGuard(io.Discard, "f.csv", ';', p)
			var err error
			for s := tc.csv; len(s) > 0 && err == nil; {
				k := min(chunk, len(s))
				_, err = g.Write([]byte(s[:k]))
				s = s[k:]
			}
			var le *LeakError
			switch {
			case tc.col == "" && err != nil:
				t.Errorf("%s (chunks of %d): %v", tc.name, chunk, err)
			case tc.col != "" && (!errors.As(err, &le) || le.Column != tc.col):
				t.Errorf("%s (chunks of %d): err %v, want a leak in column %s", tc.name, chunk, err, tc.col)
			}
		}
	}
}

func TestLeakGuardParquet(t *testing.T) {
	f := newFixture(t, "outputs: {format: parquet}\n")
	plantInTakeCare(t, f, testNumber(t, 30000))
	_, err := f.deliver(t, testApproval)
	var le *LeakError
	if !errors.As(err, &le) || le.File != "takecare.parquet.age" || le.Column != "Text" {
		t.Fatalf("err = %v", err)
	}
	if n := countFiles(f.out); n != 0 {
		t.Errorf("a stopped delivery left %d files", n)
	}
}
