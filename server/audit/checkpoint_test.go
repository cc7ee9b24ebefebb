package audit

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/lopnr/lopnr/keystore"
)

// memKeeper is a Keeper in memory: the key store, out of reach of whoever
// holds the log's directory.
type memKeeper struct {
	mu      sync.Mutex
	records map[string][]byte
}

func (m *memKeeper) ServiceRecord(_ context.Context, name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.records[name]
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, keystore.ErrNotFound)
	}
	return b, nil
}

func (m *memKeeper) UpdateServiceRecord(_ context.Context, name string, change func([]byte) ([]byte, error)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, err := change(m.records[name])
	if err != nil || b == nil {
		return err
	}
	if m.records == nil {
		m.records = map[string][]byte{}
	}
	m.records[name] = b
	return nil
}

var _ Keeper = (*keystore.Keystore)(nil)

func signerKey(t testing.TB, origin string) []byte {
	t.Helper()
	k, err := NewSignerKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// signedLog writes a log of n entries with checkpoints enabled and a
// checkpoint of all of them; it returns the log's path, the keeper, the
// signer key and its verifier.
func signedLog(t *testing.T, n int) (string, *memKeeper, []byte, note.Verifier) {
	t.Helper()
	path := newLog(t, n)
	l, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	keep, skey := &memKeeper{}, signerKey(t, "lopnrd.test/audit")
	if err := l.EnableCheckpoints(context.Background(), skey, keep); err != nil {
		t.Fatal(err)
	}
	cp, err := l.Checkpoint(context.Background())
	if err != nil || cp.Size != int64(n) {
		t.Fatalf("Checkpoint = %+v, %v", cp, err)
	}
	v, err := note.NewVerifier(l.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	return path, keep, skey, v
}

func TestTreeHashIsRFC6962(t *testing.T) {
	var leaves []tlog.Hash
	var tr tree
	for n := range 70 {
		stored := make([]tlog.Hash, 0, tlog.StoredHashCount(int64(n)))
		for i, leaf := range leaves {
			hs, err := tlog.StoredHashesForRecordHash(int64(i), leaf, tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
				out := make([]tlog.Hash, len(idx))
				for j, x := range idx {
					out[j] = stored[x]
				}
				return out, nil
			}))
			if err != nil {
				t.Fatal(err)
			}
			stored = append(stored, hs...)
		}
		want, err := tlog.TreeHash(int64(n), tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
			out := make([]tlog.Hash, len(idx))
			for j, x := range idx {
				out[j] = stored[x]
			}
			return out, nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 && tr.root() != want {
			t.Fatalf("tree of %d leaves: %x, want tlog's %x", n, tr.root(), want)
		}
		leaf := tlog.RecordHash([]byte(fmt.Sprint("entry ", n)))
		leaves = append(leaves, leaf)
		tr.add(leaf)
	}
}

// TestCheckpointIsAStandardSignedNote: a third party checks a checkpoint
// with note.Open and the verifier key alone, and recomputes its tree hash
// from the file's lines with tlog.
func TestCheckpointIsAStandardSignedNote(t *testing.T) {
	path, keep, _, v := signedLog(t, 5)
	kept := keep.records[KeptName]
	beside, err := os.ReadFile(path + ".checkpoint")
	if err != nil || !bytes.Equal(beside, kept) {
		t.Fatalf("the checkpoint beside the log differs from the one kept: %v", err)
	}
	if _, err := note.Open(kept, note.VerifierList(v)); err != nil {
		t.Fatalf("note.Open: %v", err)
	}
	lines := strings.SplitAfter(string(kept), "\n")
	if lines[0] != "lopnrd.test/audit\n" || lines[1] != "5\n" || lines[3] != "\n" || !strings.HasPrefix(lines[4], "— lopnrd.test/audit ") {
		t.Fatalf("checkpoint:\n%s", kept)
	}
	// The tree hash from the file's lines, without lopnr's code.
	b, _ := os.ReadFile(path)
	var stored []tlog.Hash
	r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for j, x := range idx {
			out[j] = stored[x]
		}
		return out, nil
	})
	ls := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	for i, line := range ls {
		hs, err := tlog.StoredHashes(int64(i), []byte(line), r)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, hs...)
	}
	root, _ := tlog.TreeHash(int64(len(ls)), r)
	if lines[2] != base64.StdEncoding.EncodeToString(root[:])+"\n" {
		t.Fatalf("checkpoint hash %q, tlog computes %s from the file", lines[2], base64.StdEncoding.EncodeToString(root[:]))
	}
}

// The first attack of the issue: drop the last entry. The chain still
// verifies; the checkpoint does not.
func TestOperatorCannotCutTheLogUnseen(t *testing.T) {
	path, keep, skey, v := signedLog(t, 5)
	ls := lines(t, path)
	write(t, path, ls[:4])
	if _, err := verify(t, path); err != nil {
		t.Fatalf("the cut log's chain: %v (the chain alone cannot see a cut end)", err)
	}
	cp, err := ParseCheckpoint(keep.records[KeptName], v)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(path)
	defer f.Close()
	_, err = cp.Check(f)
	var ce *CheckpointError
	if !errors.As(err, &ce) || !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "cut: the log ends at entry 4; entries 5 to 5") {
		t.Fatalf("Check of a log cut by one entry = %v, want it named as cut", err)
	}
	// lopnrd does not start on it.
	l, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.EnableCheckpoints(context.Background(), skey, keep); !errors.As(err, &ce) {
		t.Fatalf("EnableCheckpoints on a cut log = %v, want it refused", err)
	}
}

// The second attack: change an entry and recompute the chain after it.
func TestOperatorCannotRewriteAnEntryAndRecomputeTheChain(t *testing.T) {
	path, keep, _, v := signedLog(t, 5)
	ls := lines(t, path)
	prev := ""
	for i, s := range ls {
		var e Entry
		if err := json.Unmarshal([]byte(s), &e); err != nil {
			t.Fatal(err)
		}
		if i == 2 {
			e.Outcome = "denied"
		}
		e.Prev = prev
		e.Hash = e.hash()
		prev = e.Hash
		b, _ := json.Marshal(e)
		ls[i] = string(b)
	}
	write(t, path, ls)
	if _, err := verify(t, path); err != nil {
		t.Fatalf("the rewritten log's chain: %v (a recomputed chain verifies)", err)
	}
	cp, _ := ParseCheckpoint(keep.records[KeptName], v)
	f, _ := os.Open(path)
	defer f.Close()
	_, err := cp.Check(f)
	if !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "rewritten: entries 1 to 5 do not match") {
		t.Fatalf("Check of a rewritten log = %v, want it named as rewritten", err)
	}
	// The same log grown past the checkpoint still fails.
	l, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.Append(Entry{Identity: "CN=x", Action: "job.submit", Outcome: "ok"})
	l.Close()
	if _, err := cp.Check(f); err == nil || !strings.Contains(err.Error(), "rewritten") {
		t.Fatalf("Check of a rewritten log that grew = %v", err)
	}
}

func TestCheckpointSignedByAnotherKeyIsRefused(t *testing.T) {
	path, keep, _, v := signedLog(t, 3)
	l, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// A forger with the data directory signs what they like, with their
	// own key under the log's name.
	forged := &memKeeper{}
	if err := l.EnableCheckpoints(context.Background(), signerKey(t, "lopnrd.test/audit"), forged); err != nil {
		t.Fatal(err)
	}
	l.Append(Entry{Identity: "CN=x", Action: "job.submit", Outcome: "ok"})
	if _, err := l.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err = ParseCheckpoint(forged.records[KeptName], v)
	if !errors.Is(err, ErrNotSigned) || !strings.Contains(err.Error(), "it is signed by lopnrd.test/audit+") {
		t.Fatalf("a checkpoint of another key = %v, want ErrNotSigned naming its key", err)
	}
	// In the key store, it stops the log from opening.
	if err := l.EnableCheckpoints(context.Background(), signerKey(t, "lopnrd.test/audit"), keep); !errors.Is(err, ErrNotSigned) {
		t.Fatalf("EnableCheckpoints with another key than the kept checkpoint's = %v", err)
	}
	for _, bad := range []string{"", "x\n", "lopnrd.test/audit\n05\nAAAA\n\n— x y\n"} {
		if _, err := ParseCheckpoint([]byte(bad), v); !errors.Is(err, ErrNotSigned) {
			t.Fatalf("ParseCheckpoint(%q) = %v", bad, err)
		}
	}
}

// TestIntentIsSignedBeforeTheAct: Intend appends and signs a checkpoint
// that holds the entry; with the log unwritable it fails.
func TestIntentIsSignedBeforeTheAct(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	keep := &memKeeper{}
	ctx := context.Background()
	if err := l.EnableCheckpoints(ctx, signerKey(t, "lopnrd.test/audit"), keep); err != nil {
		t.Fatal(err)
	}
	e, err := l.Intend(ctx, Entry{Identity: "CN=bo", Action: "delivery.release", Project: "p1", Job: "j1", Outcome: "ok"})
	if err != nil || e.Outcome != Intent || e.Seq != 1 {
		t.Fatalf("Intend = %+v, %v", e, err)
	}
	if got := l.Signed(); got.Size != 1 || got.Root != l.Head().Root {
		t.Fatalf("the newest checkpoint after Intend: %+v, want one of entry 1", got)
	}
	if _, _, err := l.VerifyCheckpoint(ctx); err != nil {
		t.Fatal(err)
	}
	// No new entry, no new checkpoint.
	if cp, err := l.Checkpoint(ctx); err != nil || cp.Size != 1 {
		t.Fatalf("Checkpoint with nothing new = %+v, %v", cp, err)
	}
	l.Close()
	if _, err := l.Intend(ctx, Entry{Identity: "CN=bo", Action: "delivery.release", Project: "p1"}); err == nil {
		t.Fatal("Intend succeeded on a closed log")
	}
}

// TestVerifyCheckpointSeesTamperingWhileRunning: the file changed behind a
// running server's back fails against the kept checkpoint.
func TestVerifyCheckpointSeesTamperingWhileRunning(t *testing.T) {
	path := newLog(t, 4)
	l, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	if err := l.EnableCheckpoints(ctx, signerKey(t, "lopnrd.test/audit"), &memKeeper{}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	write(t, path, lines(t, path)[:3])
	if _, cp, err := l.VerifyCheckpoint(ctx); !errors.Is(err, ErrTampered) || cp.Size != 4 || !strings.Contains(err.Error(), "cut") {
		t.Fatalf("VerifyCheckpoint = %+v, %v", cp, err)
	}
	// A checkpoint beside the log rolled back, or removed, changes nothing:
	// the kept one counts.
	os.Remove(path + ".checkpoint")
	if _, _, err := l.VerifyCheckpoint(ctx); !errors.Is(err, ErrTampered) {
		t.Fatalf("VerifyCheckpoint without the copy beside the log = %v", err)
	}
}

func TestSignerKeyNamesTheOrigin(t *testing.T) {
	for _, bad := range []string{"", "two words", "a+b", "line\nend"} {
		if _, err := NewSignerKey(bad); err == nil {
			t.Errorf("NewSignerKey(%q) accepted", bad)
		}
	}
	k := signerKey(t, "lopnrd.region.example/audit")
	s, v, vkey, err := parseSignerKey(string(k))
	if err != nil || s.Name() != "lopnrd.region.example/audit" || v.KeyHash() != s.KeyHash() || !strings.HasPrefix(vkey, "lopnrd.region.example/audit+") {
		t.Fatalf("parseSignerKey = %v, %v, %q, %v", s, v, vkey, err)
	}
	if _, _, _, err := parseSignerKey(vkey); err == nil {
		t.Fatal("a verifier key taken for a signer key")
	}
}
