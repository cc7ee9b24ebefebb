package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newLog(t *testing.T, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.log")
	clock := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	l, err := Open(path, func() time.Time { clock = clock.Add(time.Second); return clock })
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if _, err := l.Append(Entry{Identity: "CN=uttag", Action: "job.submit", Project: "p1", Job: "j" + string(rune('a'+i)), Outcome: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	return path
}

func lines(t *testing.T, path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func write(t *testing.T, path string, ls []string) {
	if err := os.WriteFile(path, []byte(strings.Join(ls, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func verify(t *testing.T, path string) (Head, error) {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return Verify(f)
}

func TestChainVerifiesAndReopens(t *testing.T) {
	path := newLog(t, 5)
	h, err := verify(t, path)
	if err != nil || h.Seq != 5 {
		t.Fatalf("head %+v, %v", h, err)
	}
	l, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	e, err := l.Append(Entry{Identity: "CN=approver", Action: "delivery.release", Outcome: "ok"})
	if err != nil || e.Seq != 6 || e.Prev != h.Hash {
		t.Fatalf("append after reopen: %+v, %v", e, err)
	}
	l.Close()
	if h, err := verify(t, path); err != nil || h.Seq != 6 {
		t.Fatalf("head %+v, %v", h, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %o", fi.Mode().Perm())
	}
}

func TestVerifyNamesTheFirstBrokenEntry(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func([]string) []string
		line   int
		what   string
	}{
		{"altered", func(ls []string) []string {
			ls[2] = strings.Replace(ls[2], `"outcome":"ok"`, `"outcome":"denied"`, 1)
			return ls
		}, 3, "altered"},
		{"removed", func(ls []string) []string { return append(ls[:1], ls[2:]...) }, 2, "removed: entries 2 to 2 are missing"},
		{"reordered", func(ls []string) []string { ls[1], ls[2] = ls[2], ls[1]; return ls }, 2, "reordered: entry 3 stands where 2 belongs"},
		{"duplicated", func(ls []string) []string { return append(ls[:3], ls[2:]...) }, 4, "reordered or repeated"},
		{"replaced", func(ls []string) []string {
			// A forged entry 2 that is consistent in itself.
			var e Entry
			json.Unmarshal([]byte(ls[1]), &e)
			e.Outcome = "denied"
			e.Hash = e.hash()
			b, _ := json.Marshal(e)
			ls[1] = string(b)
			return ls
		}, 2, "altered or replaced"},
		{"garbage", func(ls []string) []string { ls[3] = "{}"; return ls }, 4, "altered"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := newLog(t, 5)
			write(t, path, tc.tamper(lines(t, path)))
			_, err := verify(t, path)
			var ve *VerifyError
			if !errors.As(err, &ve) || !errors.Is(err, ErrTampered) || ve.Line != tc.line || !strings.Contains(ve.What, tc.what) {
				t.Fatalf("err = %v, want line %d %q", err, tc.line, tc.what)
			}
			if _, err := Open(path, nil); err == nil {
				t.Fatal("a tampered log opened for appending")
			}
		})
	}
}

func TestReasonNeverHoldsAnIdentityNumber(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.log")
	l, _ := Open(path, nil)
	digits := "19" + "900101" + "1234"
	for _, r := range []string{digits, digits[2:8] + "-" + digits[8:], "patient " + digits[2:] + " asked"} {
		e, err := l.Append(Entry{Identity: "CN=k", Action: "key.reidentify", Outcome: "ok", Reason: r})
		if err != nil || strings.Contains(e.Reason, digits[2:8]) || !strings.Contains(e.Reason, "[redacted]") {
			t.Errorf("reason %q stored as %q", r, e.Reason)
		}
	}
	l.Close()
	b, _ := os.ReadFile(path)
	if strings.Contains(string(b), digits[2:8]) {
		t.Fatal("the log file holds the digits")
	}
}

func TestDigestIsKeptExactlyAndChecked(t *testing.T) {
	l, _ := Open(filepath.Join(t.TempDir(), "a.log"), nil)
	defer l.Close()
	d := strings.Repeat("1234567890", 6) + "abcd" // ten digits in a row: a Reason would redact them
	e, err := l.Append(Entry{Identity: "x", Action: "key.destroy", Outcome: "ok", Digest: d})
	if err != nil || e.Digest != d {
		t.Fatalf("digest %q, %v", e.Digest, err)
	}
	if _, err := l.Append(Entry{Identity: "x", Action: "key.destroy", Outcome: "ok", Digest: "19900101-1234"}); err == nil {
		t.Fatal("a digest that is not hex was kept")
	}
}

func TestLogListAndVerifyFromDisk(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i, p := range []string{"a", "b", "a", "a"} {
		if _, err := l.Append(Entry{Identity: "CN=x", Action: "job.submit", Project: p, Outcome: "ok", Job: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := l.List(1, 2, func(e Entry) bool { return e.Project == "a" })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Seq != 3 || got[1].Seq != 4 {
		t.Fatalf("List(after 1, limit 2, project a) = %+v, want entries 3 and 4", got)
	}
	if h, err := l.Verify(); err != nil || h.Seq != 4 {
		t.Fatalf("Verify = %v, %v; want head 4", h, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b, []byte(`"job":"2"`))
	b[i+7] = '9'
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	var ve *VerifyError
	if _, err := l.Verify(); !errors.As(err, &ve) || ve.Seq != 3 {
		t.Fatalf("Verify after one byte changed = %v, want entry 3 named", err)
	}
}
