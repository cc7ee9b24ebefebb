package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
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
	for _, r := range []string{digits, digits[2:8] + "-" + digits[8:], "patient " + digits[2:] + " asked", "ref 00" + digits[:8] + "-" + digits[8:], digits[:8] + "\u2013" + digits[8:]} {
		e, err := l.Append(Entry{Identity: "CN=k", Action: "key.reidentify", Outcome: "ok", Reason: r})
		if err != nil || strings.ContainsAny(e.Reason, "0123456789") || !strings.Contains(e.Reason, "[redacted]") {
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

type fuzzKey struct {
	entries int
	reason  string
}

type fuzzValue struct {
	log   []byte
	heads []Head // heads[i]: after i entries
}

// fuzzLogs keeps the logs FuzzVerify wrote: each Append syncs to disk.
var fuzzLogs = map[fuzzKey]fuzzValue{}

var fuzzSignerKey []byte

// fuzzSigner signs FuzzVerify's checkpoints, with one key for the run.
func fuzzSigner(t *testing.T) note.Signer {
	if fuzzSignerKey == nil {
		fuzzSignerKey = signerKey(t, "lopnrd.test/audit")
	}
	s, _, _, err := parseSignerKey(string(fuzzSignerKey))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fuzzLog returns a log of n entries with the reason, and its heads.
func fuzzLog(t *testing.T, n int, reason string) ([]byte, []Head) {
	if v, ok := fuzzLogs[fuzzKey{n, reason}]; ok {
		return v.log, v.heads
	}
	path := filepath.Join(t.TempDir(), "audit.log")
	clock := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	l, err := Open(path, func() time.Time { clock = clock.Add(time.Second); return clock })
	if err != nil {
		t.Fatal(err)
	}
	heads := []Head{l.Head()}
	for i := range n {
		if _, err := l.Append(Entry{Identity: "CN=uttag", Action: "job.submit", Project: "p1", Job: fmt.Sprint("j", i), Outcome: "ok", Reason: reason}); err != nil {
			t.Fatal(err)
		}
		heads = append(heads, l.Head())
	}
	l.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fuzzLogs[fuzzKey{n, reason}] = fuzzValue{b, heads}
	return b, heads
}

// FuzzVerify changes a log the way someone with the file might (a byte
// flipped, bytes cut out or put in, the file cut short, entries swapped,
// dropped or repeated) and checks that every change is named or refused:
// Verify and Open fail with the line where the chain breaks, or, for a
// log cut after a whole entry, Verify gives that entry's head, which
// differs from the head the server exported before; and against a signed
// checkpoint of the whole log every change fails, a cut named as one.
func FuzzVerify(f *testing.F) {
	f.Add(uint8(3), uint8(0), uint16(10), uint16(0), byte(0x20))
	f.Add(uint8(4), uint8(3), uint16(200), uint16(0), byte(0))
	f.Add(uint8(2), uint8(4), uint16(0), uint16(1), byte(0))
	f.Add(uint8(1), uint8(2), uint16(5), uint16(0), byte('\r'))
	path := filepath.Join(f.TempDir(), "audit.log")
	reasons := []string{"", "released by CN=godkann", "a reason with \"quotes\", <html> & \u00e5\u00e4\u00f6", "not UTF-8: \xff\xc3"}
	f.Fuzz(func(t *testing.T, entries, op uint8, at, arg uint16, b byte) {
		orig, heads := fuzzLog(t, int(entries%6)+1, reasons[int(entries/6)%len(reasons)])
		ls := bytes.SplitAfter(orig, []byte("\n"))
		ls = ls[:len(ls)-1] // the empty piece after the last line end
		pos, n := int(at)%len(orig), int(arg)%24+1
		var changed []byte
		switch op % 7 {
		case 0: // flip bits of one byte
			if b == 0 {
				b = 1
			}
			changed = bytes.Clone(orig)
			changed[pos] ^= b
		case 1: // cut bytes out
			changed = append(bytes.Clone(orig[:pos]), orig[min(pos+n, len(orig)):]...)
		case 2: // put a byte in
			changed = append(append(bytes.Clone(orig[:pos]), b), orig[pos:]...)
		case 3: // cut the file short
			changed = bytes.Clone(orig[:pos])
		case 4: // swap two entries
			i, j := int(at)%len(ls), int(arg)%len(ls)
			c := slices.Clone(ls)
			c[i], c[j] = c[j], c[i]
			changed = bytes.Join(c, nil)
		case 5: // drop an entry
			i := int(at) % len(ls)
			changed = bytes.Join(slices.Delete(slices.Clone(ls), i, i+1), nil)
		case 6: // repeat an entry
			i := int(at) % len(ls)
			changed = bytes.Join(slices.Insert(slices.Clone(ls), i, ls[i]), nil)
		}
		if bytes.Equal(changed, orig) {
			return
		}
		// Against a checkpoint of the whole log, nothing verifies.
		cp, err := signCheckpoint(fuzzSigner(t), heads[len(heads)-1])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cp.Check(bytes.NewReader(changed)); !errors.Is(err, ErrTampered) {
			t.Fatalf("a changed log passes the checkpoint (op %d): %v\n%q\nwas\n%q", op%7, err, changed, orig)
		}
		head, err := Verify(bytes.NewReader(changed))
		if err == nil {
			// Only a log cut after a whole entry verifies, to that
			// entry's head; the checkpoint names the cut.
			k := slices.IndexFunc(heads, func(h Head) bool { return h == head })
			if k < 0 || k == len(heads)-1 || !bytes.Equal(changed, bytes.Join(ls[:k], nil)) {
				t.Fatalf("a changed log verifies, head %+v (op %d):\n%q\nwas\n%q", head, op%7, changed, orig)
			}
			if _, err := cp.Check(bytes.NewReader(changed)); err == nil || !strings.Contains(err.Error(), "cut: ") {
				t.Fatalf("a log cut after entry %d: %v, want the cut named", k, err)
			}
			return
		}
		var ve *VerifyError
		if !errors.As(err, &ve) || !errors.Is(err, ErrTampered) || ve.Line < 1 || ve.Line > bytes.Count(changed, []byte("\n"))+1 {
			t.Fatalf("error %v names no line of the log", err)
		}
		if err := os.WriteFile(path, changed, 0o600); err != nil {
			t.Fatal(err)
		}
		if l, err := Open(path, nil); err == nil {
			l.Close()
			t.Fatal("Open accepts a log Verify refuses")
		}
	})
}

// TestEntryNotUTF8StillVerifies: a client certificate's subject or a
// reason that is not UTF-8 must not leave an entry that no longer matches
// its hash (and a server that refuses to start on its own log).
func TestEntryNotUTF8StillVerifies(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(Entry{Identity: "CN=\xff\xfe", Action: "job.submit", Outcome: "denied", Reason: "bad \xc3 byte"}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, err := verify(t, path); err != nil {
		t.Fatalf("an entry with bytes that are not UTF-8 does not verify: %v", err)
	}
	if l, err = Open(path, nil); err != nil {
		t.Fatalf("reopen: %v", err)
	}
	l.Close()
}
