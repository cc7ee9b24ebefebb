package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/lopnr/lopnr/internal/atomicfile"
	"github.com/lopnr/lopnr/keystore"
)

// tree is the RFC 6962 Merkle tree over a log's entries, kept as the hashes
// of its complete subtrees, largest (leftmost) first: all that is needed to
// add a leaf and to compute the tree hash.
type tree struct {
	n        int64
	subtrees []tlog.Hash
}

func (t *tree) add(leaf tlog.Hash) {
	t.subtrees = append(t.subtrees, leaf)
	// Each trailing 1 bit of n is a subtree as large as the one just
	// completed: merge them.
	for n := t.n; n&1 == 1; n >>= 1 {
		k := len(t.subtrees)
		t.subtrees = append(t.subtrees[:k-2], tlog.NodeHash(t.subtrees[k-2], t.subtrees[k-1]))
	}
	t.n++
}

// root is the tree hash: RFC 6962's MTH, SHA-256 of nothing for no leaves.
func (t *tree) root() tlog.Hash {
	if t.n == 0 {
		return sha256.Sum256(nil)
	}
	h := t.subtrees[len(t.subtrees)-1]
	for i := len(t.subtrees) - 2; i >= 0; i-- {
		h = tlog.NodeHash(t.subtrees[i], h)
	}
	return h
}

// Checkpoint is a signed statement of the log's size and tree hash: a C2SP
// tlog-checkpoint in a signed note (see the package doc).
type Checkpoint struct {
	Origin string
	Size   int64
	Root   tlog.Hash
	// Note is the signed note, as kept and as a verifier reads it.
	Note []byte
}

// ErrNotSigned is wrapped by the error for a checkpoint that is not signed
// by the expected key (or is not a checkpoint).
var ErrNotSigned = errors.New("not a checkpoint signed by the audit log's key")

// ParseCheckpoint opens a signed checkpoint and checks its signature
// against the verifier.
func ParseCheckpoint(msg []byte, v note.Verifier) (Checkpoint, error) {
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		var unverified *note.UnverifiedNoteError
		if errors.As(err, &unverified) {
			var by []string
			for _, s := range unverified.Note.UnverifiedSigs {
				by = append(by, fmt.Sprintf("%s+%08x", s.Name, s.Hash))
			}
			return Checkpoint{}, fmt.Errorf("%w %s+%08x: it is signed by %s", ErrNotSigned, v.Name(), v.KeyHash(), strings.Join(by, ", "))
		}
		return Checkpoint{}, fmt.Errorf("%w %s+%08x: %v", ErrNotSigned, v.Name(), v.KeyHash(), err)
	}
	// origin, size, root hash, and extension lines, which lopnr does not
	// write and ignores.
	lines := strings.SplitAfter(n.Text, "\n")
	if len(lines) < 4 {
		return Checkpoint{}, fmt.Errorf("%w: want an origin, a size and a hash on three lines", ErrNotSigned)
	}
	cp := Checkpoint{Origin: strings.TrimSuffix(lines[0], "\n"), Note: bytes.Clone(msg)}
	size := strings.TrimSuffix(lines[1], "\n")
	cp.Size, err = strconv.ParseInt(size, 10, 64)
	if err != nil || cp.Size < 0 || strconv.FormatInt(cp.Size, 10) != size {
		return Checkpoint{}, fmt.Errorf("%w: line 2: want the size in decimal", ErrNotSigned)
	}
	root, err := base64.StdEncoding.Strict().DecodeString(strings.TrimSuffix(lines[2], "\n"))
	if err != nil || len(root) != tlog.HashSize || cp.Origin == "" {
		return Checkpoint{}, fmt.Errorf("%w: line 3: want a base64 SHA-256 tree hash", ErrNotSigned)
	}
	copy(cp.Root[:], root)
	return cp, nil
}

// signCheckpoint signs the checkpoint of a head.
func signCheckpoint(s note.Signer, h Head) (Checkpoint, error) {
	cp := Checkpoint{Origin: s.Name(), Size: h.Seq, Root: h.Root}
	text := fmt.Sprintf("%s\n%d\n%s\n", cp.Origin, cp.Size, base64.StdEncoding.EncodeToString(cp.Root[:]))
	msg, err := note.Sign(&note.Note{Text: text}, s)
	if err != nil {
		return Checkpoint{}, err
	}
	cp.Note = msg
	return cp, nil
}

// CheckpointError says how a log fails a checkpoint it must extend.
type CheckpointError struct {
	Size int64 // the checkpoint's entries
	Head int64 // the log's entries
	What string
}

func (e *CheckpointError) Error() string {
	return fmt.Sprintf("against the signed checkpoint of %d entries: %s", e.Size, e.What)
}

func (e *CheckpointError) Unwrap() error { return ErrTampered }

// Check verifies the log in r, as [Verify] does, and that it extends the
// checkpoint: its first Size entries are the ones the checkpoint signed.
// A log cut before the checkpoint, or with an entry under it changed and
// the chain recomputed, fails with a [CheckpointError] that says which.
func (c Checkpoint) Check(r io.ReadSeeker) (Head, error) {
	_, head, root, err := verifyTo(r, c.Size)
	switch {
	case err != nil:
		return Head{}, err
	case head.Seq < c.Size:
		return head, &CheckpointError{Size: c.Size, Head: head.Seq,
			What: fmt.Sprintf("cut: the log ends at entry %d; entries %d to %d, which the checkpoint holds, are missing", head.Seq, head.Seq+1, c.Size)}
	case c.Size > 0 && root != c.Root:
		return head, &CheckpointError{Size: c.Size, Head: head.Seq,
			What: fmt.Sprintf("rewritten: entries 1 to %d do not match the checkpoint's tree hash; one of them was changed and the chain after it recomputed", c.Size)}
	}
	return head, nil
}

// Keeper keeps the newest checkpoint where the holder of the data
// directory can neither change it nor roll it back: *keystore.Keystore is
// one. ServiceRecord returns an error wrapping keystore.ErrNotFound when
// there is none.
type Keeper interface {
	ServiceRecord(ctx context.Context, name string) ([]byte, error)
	UpdateServiceRecord(ctx context.Context, name string, change func(old []byte) ([]byte, error)) error
}

// KeptName is the service record the newest checkpoint is kept in, and
// SignerName the service key that signs checkpoints.
const (
	KeptName   = "audit-checkpoint"
	SignerName = "audit-signer"
)

// NewSignerKey returns a new signer key for checkpoints of the log called
// origin (such as "lopnrd.region.example/audit"), as [note.GenerateKey]
// encodes it; keep it secret, outside the data directory.
func NewSignerKey(origin string) ([]byte, error) {
	if origin == "" || !utf8.ValidString(origin) || strings.ContainsRune(origin, '+') || strings.IndexFunc(origin, unicode.IsSpace) >= 0 {
		return nil, fmt.Errorf("audit log origin %q: want a name without spaces or '+', such as lopnrd.region.example/audit", origin)
	}
	skey, _, err := note.GenerateKey(rand.Reader, origin)
	return []byte(skey), err
}

// parseSignerKey returns the signer of an encoded signer key, and its
// verifier and verifier key.
func parseSignerKey(skey string) (note.Signer, note.Verifier, string, error) {
	bad := errors.New("audit signer key: not an Ed25519 note signer key")
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, nil, "", bad
	}
	parts := strings.SplitN(skey, "+", 5) // the key's base64 may hold a +
	if len(parts) != 5 {
		return nil, nil, "", bad
	}
	k, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(k) != 1+ed25519.SeedSize || k[0] != 1 {
		return nil, nil, "", bad
	}
	vkey, err := note.NewEd25519VerifierKey(s.Name(), ed25519.NewKeyFromSeed(k[1:]).Public().(ed25519.PublicKey))
	if err != nil {
		return nil, nil, "", bad
	}
	v, err := note.NewVerifier(vkey)
	if err != nil || v.KeyHash() != s.KeyHash() {
		return nil, nil, "", bad
	}
	return s, v, vkey, nil
}

// ErrNoCheckpoints is returned by [Log.Checkpoint] before
// [Log.EnableCheckpoints].
var ErrNoCheckpoints = errors.New("audit log: checkpoints are not enabled")

// EnableCheckpoints makes the log sign checkpoints with skey (from
// [NewSignerKey]) and keep the newest in keep, as well as beside the log
// (PATH.checkpoint). It first checks the log on disk against the newest
// checkpoint kept, and fails, naming the problem, for a log that does not
// extend it: lopnrd does not start on a log cut or rewritten while it was
// down.
func (l *Log) EnableCheckpoints(ctx context.Context, skey []byte, keep Keeper) error {
	signer, verifier, vkey, err := parseSignerKey(string(skey))
	if err != nil {
		return err
	}
	newest, err := newestKept(ctx, keep, verifier)
	if err != nil {
		return err
	}
	f, err := os.Open(l.path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := newest.Check(f); err != nil {
		return fmt.Errorf("audit log %s: %w", l.path, err)
	}
	l.cpMu.Lock()
	defer l.cpMu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.signer, l.verifier, l.vkey, l.keep, l.signed = signer, verifier, vkey, keep, newest
	return nil
}

// newestKept reads and checks the newest checkpoint kept (Size 0 for
// none).
func newestKept(ctx context.Context, keep Keeper, v note.Verifier) (Checkpoint, error) {
	b, err := keep.ServiceRecord(ctx, KeptName)
	if errors.Is(err, keystore.ErrNotFound) {
		return Checkpoint{Origin: v.Name()}, nil
	}
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit checkpoint: %w", err)
	}
	cp, err := ParseCheckpoint(b, v)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit checkpoint in the key store: %w", err)
	}
	return cp, nil
}

// VerifierKey is the key that verifies the log's checkpoints, as
// note.NewVerifier reads it ("" before EnableCheckpoints).
func (l *Log) VerifierKey() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.vkey
}

// Signed returns the newest checkpoint signed or kept (Size 0: none).
func (l *Log) Signed() Checkpoint {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.signed
}

// Checkpoint signs a checkpoint of the log as it now is, unless the newest
// already holds every entry, and keeps it: first in the Keeper, then beside
// the log. It returns the newest checkpoint.
func (l *Log) Checkpoint(ctx context.Context) (Checkpoint, error) {
	l.cpMu.Lock()
	defer l.cpMu.Unlock()
	if l.signer == nil {
		return Checkpoint{}, ErrNoCheckpoints
	}
	head, signed := l.Head(), l.Signed()
	if head.Seq <= signed.Size {
		return signed, nil
	}
	cp, err := signCheckpoint(l.signer, head)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit checkpoint: %w", err)
	}
	err = l.keep.UpdateServiceRecord(ctx, KeptName, func(old []byte) ([]byte, error) {
		if old == nil {
			return cp.Note, nil
		}
		prev, err := ParseCheckpoint(old, l.verifier)
		switch {
		case err != nil:
			return nil, fmt.Errorf("the key store's: %w", err)
		case prev.Size == cp.Size && prev.Root == cp.Root:
			return nil, nil // kept before its copy beside the log failed
		case prev.Size >= cp.Size:
			return nil, fmt.Errorf("the key store holds one of %d entries, newer than this log's %d: does another lopnrd share the key store?", prev.Size, cp.Size)
		}
		return cp.Note, nil
	})
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit checkpoint: %w", err)
	}
	if err := atomicfile.Write(l.path+".checkpoint", cp.Note); err != nil {
		return Checkpoint{}, fmt.Errorf("audit checkpoint: %w", err)
	}
	l.mu.Lock()
	l.signed = cp
	l.mu.Unlock()
	return cp, nil
}

// Intend appends e with the outcome [Intent] before a sensitive act and,
// with checkpoints enabled, signs a checkpoint that holds it. When it fails
// the act must not be taken.
func (l *Log) Intend(ctx context.Context, e Entry) (Entry, error) {
	e.Outcome = Intent
	e, err := l.Append(e)
	if err != nil {
		return e, err
	}
	if _, err := l.Checkpoint(ctx); err != nil && !errors.Is(err, ErrNoCheckpoints) {
		return e, err
	}
	return e, nil
}

// SignEvery signs a checkpoint every interval when the log has grown,
// until ctx ends, telling failed of each failure.
func (l *Log) SignEvery(ctx context.Context, every time.Duration, failed func(error)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := l.Checkpoint(ctx); err != nil && ctx.Err() == nil {
			failed(err)
		}
	}
}

// VerifyCheckpoint verifies the log on disk against the newest checkpoint
// in the Keeper (before EnableCheckpoints: as [Log.Verify] does), and
// returns its head and that checkpoint.
func (l *Log) VerifyCheckpoint(ctx context.Context) (Head, Checkpoint, error) {
	l.mu.Lock()
	keep, verifier := l.keep, l.verifier
	l.mu.Unlock()
	if keep == nil {
		h, err := l.Verify()
		return h, Checkpoint{}, err
	}
	cp, err := newestKept(ctx, keep, verifier)
	if errors.Is(err, ErrNotSigned) {
		// Someone with the key store's rights replaced it.
		return Head{}, Checkpoint{}, fmt.Errorf("%w: %w", ErrTampered, err)
	}
	if err != nil {
		return Head{}, Checkpoint{}, err
	}
	f, err := os.Open(l.path)
	if err != nil {
		return Head{}, cp, err
	}
	defer f.Close()
	h, err := cp.Check(f)
	return h, cp, err
}
