package personnummer

import (
	"errors"
	"strings"
	"testing"
)

func TestHistoryResolve(t *testing.T) {
	p := NewParser(ref)
	tn := readTestNumbers(t, "testpersonnummer.txt")
	a, b, c, d, e, f, g, h, x, y := tn[1000], tn[2000], tn[3000], tn[4000], tn[5000], tn[6000], tn[7000], tn[8000], tn[9000], tn[10000]
	interim := withCheck("19900101T23")
	history := strings.Join([]string{
		"old;new;date",
		a + ";" + b + ";2001-02-03", // a -> b -> c: a chain
		b + ";" + c + ";20050607",
		d + ";" + e + ";2001-01-01", // d -> e and d -> f: a conflict
		d + ";" + f + ";2002-01-01",
		g + ";" + h + ";2001-01-01", // g -> h -> g: a cycle
		h + ";" + g + ";2002-01-01",
		interim + ";" + x + ";2010-01-01", // an interim number later identified
		"",
		y + ";" + y[2:8] + "-" + y[8:] + ";2010-01-01", // y -> y in another form: a cycle of one
	}, "\r\n")
	changes, err := ReadHistory(strings.NewReader(history), "history.csv", p)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 8 {
		t.Fatalf("read %d changes, want 8", len(changes))
	}
	reused, err := ReadNumbers(strings.NewReader("pnr\n"+tn[11000]+"\n"+c+"\n"), "reused.txt", p)
	if err != nil {
		t.Fatal(err)
	}
	hist := NewHistory(changes, reused[:1])
	for _, tc := range []struct {
		name       string
		in, want   string
		wantReason Reason
	}{
		{"chain start", a, c, OK},
		{"chain middle", b, c, OK},
		{"chain end", c, c, OK},
		{"unchanged", tn[12000], tn[12000], OK},
		{"conflict", d, d, HistoryConflict},
		{"conflict target is itself fine", e, e, OK},
		{"cycle", g, g, HistoryCycle},
		{"cycle other", h, h, HistoryCycle},
		{"self cycle", y, y, HistoryCycle},
		{"interim identified", interim, x, OK},
		{"reused", tn[11000], tn[11000], Reused},
	} {
		got, reason := hist.Resolve(p.Parse(tc.in))
		if got.Canonical() != tc.want || reason != tc.wantReason {
			t.Errorf("%s: resolved to the %s number with reason %q, want %s and %q", tc.name,
				map[bool]string{true: "expected", false: "wrong"}[got.Canonical() == tc.want], reason, "the expected number", tc.wantReason)
		}
	}
	// A chain that ends in a re-used number is not resolved.
	hist = NewHistory(changes, reused)
	if _, reason := hist.Resolve(p.Parse(a)); reason != Reused {
		t.Errorf("chain to a re-used number: reason %q, want reused", reason)
	}
	// A longer chain resolves in one step from any point.
	var long []Change
	for i := 0; i < 1000; i++ {
		long = append(long, Change{Old: p.Parse(tn[i]), New: p.Parse(tn[i+1])})
	}
	hist = NewHistory(long, nil)
	if got, reason := hist.Resolve(p.Parse(tn[0])); got.Canonical() != tn[1000] || reason != OK {
		t.Errorf("long chain: %v %q", got, reason)
	}
}

func TestReadHistoryErrorsNameLineAndFieldNotNumber(t *testing.T) {
	p := NewParser(ref)
	tn := readTestNumbers(t, "testpersonnummer.txt")
	bad := flipCheck(tn[1])
	for _, tc := range []struct {
		in, want string
	}{
		{tn[0] + ";" + tn[1] + ";2001-01-01\n" + tn[2] + ";" + bad + ";2001-01-01\n", "h.csv:2: new: invalid identity number (checksum)"},
		{tn[0] + ";" + tn[1] + "\n", "h.csv:1: 2 fields, want 3"},
		{tn[0] + ";" + tn[1] + ";2001-13-01\n", "h.csv:1: date: date \"2001-13-01\""},
		{"\n\n" + bad + "," + tn[1] + ",2001-01-01\n", "h.csv:3: old: invalid identity number (checksum)"},
	} {
		_, err := ReadHistory(strings.NewReader(tc.in), "h.csv", p)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("err = %v, want %q", err, tc.want)
			continue
		}
		var le *LineError
		if !errors.As(err, &le) {
			t.Errorf("err %T is not a *LineError", err)
		}
		for _, n := range []string{tn[0], tn[1], tn[2], bad, bad[2:]} {
			if strings.Contains(err.Error(), n) {
				t.Errorf("error %q contains an identity number", err)
			}
		}
	}
	if _, err := ReadNumbers(strings.NewReader(tn[0]+"\nnonsense\n"), "r.txt", p); err == nil || !errors.Is(err, ErrInvalidNumber) || !strings.HasPrefix(err.Error(), "r.txt:2:") {
		t.Errorf("ReadNumbers: %v", err)
	}
}
