// Package audit is lopnr's tamper-evident audit log: an append-only file of
// JSON lines, each entry carrying the SHA-256 of the one before it, so that
// altering, removing or reordering an entry breaks the chain at that entry.
// [Verify] recomputes the chain and names the first entry that breaks it.
//
// Entries record who did what to which project and job, and how it ended;
// never an identity number. A free-text reason that holds something shaped
// like one is redacted before it is written. A sensitive act (a release, a
// key file, a destruction, a re-identification, a four-eyes approval) is
// entered before it is taken ([Log.Intend]): when the entry cannot be
// written, or its checkpoint signed, the act is refused.
//
// # Checkpoints
//
// The chain proves the log consistent with itself only: whoever holds the
// file can cut its end, or change an entry and recompute every hash after
// it, and the chain still verifies. Against them the log signs checkpoints
// ([Log.Checkpoint]) with a key kept outside the data directory (in the key
// store), and keeps the newest there too ([Keeper]), where the holder of the
// data directory can neither forge one nor roll one back. [Checkpoint.Check]
// then fails, naming what was done, for a log that was cut before the
// checkpoint or rewritten under it.
//
// A checkpoint is a C2SP tlog-checkpoint (https://c2sp.org/tlog-checkpoint)
// in a signed note (https://c2sp.org/signed-note, golang.org/x/mod/sumdb/note),
// the format Go's checksum database and Certificate Transparency's
// tiled logs use:
//
//	lopnrd.region.example/audit
//	2
//	iaOa6pxdeQbcBkoHz8mEIoZHM5VyPSOuV26LQXP1c3M=
//
//	— lopnrd.region.example/audit p0F/AEo2DLcBjMAf7j8zNyFqcxoobaHHJ7OETNL19FeaHzYhk03RJiEaOWNBzpP/aP2yfYGPqHLZ1unWtLEf/nmLGAs=
//
// The lines are the log's origin (the key's name), the number of entries,
// and the RFC 6962 Merkle tree hash of the entries, whose leaves are the
// log's lines without their line end: golang.org/x/mod/sumdb/tlog, or any
// RFC 6962 implementation, recomputes it from the file, and note.Open
// checks the signature with the verifier key lopnrd logs at start
// (here lopnrd.region.example/audit+a7417f00+ARMaSKetfZlhbJ+iinjauXilr2FqldXAvjP1CP/TL2Vz).
// The Merkle tree rather than the chain's last hash is signed so that a
// third party's tools check it as they check any transparency log, and so
// that a newer checkpoint can be proved to extend an older one without the
// whole file; the hash chain stays, to name the first entry that was
// altered.
//
// This holds against whoever holds the data directory as long as the key
// store is out of their reach: Vault or OpenBao, or a local store (and its
// identity) kept elsewhere. A local store inside the data directory gives
// them the signing key too, and the checkpoints prove nothing against them.
// Against someone who also runs the key store, a scraper of the head metric
// or an auditor who keeps checkpoints ([Checkpoint.Check] offline) is the
// witness.
//
// transparency-dev/tessera was considered and not used. It builds large
// public logs served as static tiles: it sequences entries in batches and
// publishes checkpoints on its own schedule, where an intent entry here
// must be on disk and under a signed checkpoint before the call returns;
// and it would replace the log's JSON lines with its tile layout and bring
// its dependencies (cloud storage SDKs, OpenTelemetry, a key-value store
// for the POSIX driver) for a log of a few thousand entries a day that one
// process writes. The format, not the library, is what lets a third party
// check the log.
package audit

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/lopnr/lopnr/linkage/personnummer"
)

// Entry is one audited action.
type Entry struct {
	Seq      int64     `json:"seq"`
	Time     time.Time `json:"time"`
	Identity string    `json:"identity"` // who: the client certificate's subject
	Action   string    `json:"action"`   // such as job.submit, delivery.release, key.reidentify
	Project  string    `json:"project,omitempty"`
	Job      string    `json:"job,omitempty"`
	Outcome  string    `json:"outcome"` // ok, denied, failed; or intent, before a sensitive act
	Reason   string    `json:"reason,omitempty"`
	// Digest is a hex SHA-256 the action produced, such as a destruction
	// receipt's; unlike Reason it is kept as is, and must be hex.
	Digest string `json:"digest,omitempty"`
	Prev   string `json:"prev"` // the previous entry's hash; "" for the first
	Hash   string `json:"hash"` // SHA-256 of this entry with Hash empty
}

// hash returns the entry's hash: SHA-256 of its JSON with Hash empty.
func (e Entry) hash() string {
	e.Hash = ""
	b, _ := json.Marshal(e)
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

var hexDigest = regexp.MustCompile(`^([0-9a-f]{64})?$`)

// Intent is the outcome of the entry [Log.Intend] writes before a
// sensitive act; the act's own entry follows with how it ended.
const Intent = "intent"

// Log is an open audit log. It is safe for concurrent use.
type Log struct {
	mu    sync.Mutex
	path  string
	f     *os.File
	seq   int64
	last  string
	tree  tree
	clock func() time.Time

	// Checkpoints, once EnableCheckpoints ran. cpMu serialises signing;
	// signed (the newest checkpoint signed or found kept) is read under mu.
	cpMu     sync.Mutex
	signer   note.Signer
	verifier note.Verifier
	vkey     string
	keep     Keeper
	signed   Checkpoint
}

// Open opens (or creates, mode 0600) the log at path, verifies the chain
// it holds, and appends after it. clock may be nil (the system clock).
func Open(path string, clock func() time.Time) (*Log, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	t, head, _, err := verifyTo(f, 0)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("audit log %s: %w", path, err)
	}
	if clock == nil {
		clock = time.Now
	}
	return &Log{path: path, f: f, seq: head.Seq, last: head.Hash, tree: t, clock: clock}, nil
}

// Append writes an entry (Seq, Time, Prev and Hash are filled in), synced to
// disk before it returns.
func (l *Log) Append(e Entry) (Entry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e.Seq, e.Time, e.Prev = l.seq+1, l.clock().UTC(), l.last
	// JSON holds text: bytes that are not UTF-8 would be written as
	// U+FFFD and read back as another entry than the one hashed.
	for _, s := range []*string{&e.Identity, &e.Action, &e.Project, &e.Job, &e.Outcome, &e.Reason} {
		*s = strings.ToValidUTF8(*s, "\uFFFD")
	}
	e.Reason = personnummer.Redact(e.Reason)
	if !hexDigest.MatchString(e.Digest) {
		return Entry{}, fmt.Errorf("audit log: digest: want 64 lower-case hex digits")
	}
	e.Hash = e.hash()
	b, err := json.Marshal(e)
	if err != nil {
		return Entry{}, err
	}
	if err := l.sameFile(); err != nil {
		return Entry{}, err
	}
	if _, err := l.f.Write(append(b, '\n')); err != nil {
		return Entry{}, fmt.Errorf("audit log: %w", err)
	}
	if err := l.f.Sync(); err != nil {
		return Entry{}, fmt.Errorf("audit log: %w", err)
	}
	l.seq, l.last = e.Seq, e.Hash
	l.tree.add(tlog.RecordHash(b))
	return e, nil
}

// sameFile fails when the file at the log's path is no longer the one the
// Log writes to: moved away, or replaced (by a copy cut short, say). The
// entries would go on into a file that no one verifies, the acts they
// record taken all the same; so nothing more is written, and every act
// that needs an entry first is refused, until lopnrd starts again on a
// log that extends its checkpoint.
func (l *Log) sameFile() error {
	open, err := l.f.Stat()
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	now, err := os.Stat(l.path)
	if err != nil || !os.SameFile(open, now) {
		return fmt.Errorf("audit log: %s is not the file lopnrd opened (it was moved, replaced or removed); nothing more is written to it", l.path)
	}
	return nil
}

// Head is the last entry's sequence number and hash, and the Merkle tree
// hash of the log's entries (see [Checkpoint]).
type Head struct {
	Seq  int64
	Hash string
	Root tlog.Hash
}

// Head returns the log's head.
func (l *Log) Head() Head {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Head{l.seq, l.last, l.tree.root()}
}

// Verify recomputes the chain of the log as it now is on disk, as
// [Verify] does: changes made to the file behind the Log's back show.
func (l *Log) Verify() (Head, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return Head{}, err
	}
	defer f.Close()
	return Verify(f)
}

// List returns up to limit entries after sequence number after for which
// keep returns true (keep nil: all), read from disk. It reads entries as
// they stand and does not verify the chain: [Log.Verify] does.
func (l *Log) List(after int64, limit int, keep func(Entry) bool) ([]Entry, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Entry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for line := 1; sc.Scan() && len(out) < limit; line++ {
		var e Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return out, fmt.Errorf("audit log: line %d: not an audit entry", line)
		}
		if e.Seq > after && (keep == nil || keep(e)) {
			out = append(out, e)
		}
	}
	return out, sc.Err()
}

// Close closes the log.
func (l *Log) Close() error { return l.f.Close() }

// ErrTampered is wrapped by every VerifyError.
var ErrTampered = errors.New("audit log tampered")

// VerifyError names the first entry where the chain breaks.
type VerifyError struct {
	Line int   // 1-based line of the file
	Seq  int64 // the sequence number expected there
	What string
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("line %d (entry %d): %s", e.Line, e.Seq, e.What)
}

func (e *VerifyError) Unwrap() error { return ErrTampered }

// Verify reads a log from the start and recomputes its chain. It returns
// the head, or a VerifyError naming the first entry that was altered,
// removed or reordered. A log cut after a whole entry, or rewritten with
// its chain recomputed, verifies: [Checkpoint.Check] finds those.
func Verify(r io.ReadSeeker) (Head, error) {
	_, head, _, err := verifyTo(r, 0)
	return head, err
}

// verifyTo is Verify that also returns the Merkle tree of the entries, and
// its hash after the first at entries (when the log has that many).
func verifyTo(r io.ReadSeeker, at int64) (tree, Head, tlog.Hash, error) {
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return tree{}, Head{}, tlog.Hash{}, err
	}
	type link struct {
		seq        int64
		prev, hash string
		leaf       tlog.Hash // the tree's leaf: the line's RFC 6962 record hash
		bad        string    // why the entry itself is invalid
	}
	var links []link
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	sc.Split(scanEntries)
	for sc.Scan() {
		var e Entry
		line := sc.Bytes()
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		switch err := dec.Decode(&e); {
		case !bytes.HasSuffix(line, []byte("\n")):
			links = append(links, link{bad: "altered or cut: the last entry has no line end"})
		case err != nil || e.Seq <= 0:
			links = append(links, link{bad: "altered: not an audit entry"})
		case e.Hash != e.hash():
			links = append(links, link{seq: e.Seq, bad: "altered: its content does not match its hash"})
		case !canonical(e, line):
			// The same entry written another way (a field name's case, a
			// repeated field, an escape): the hash still matches, the
			// bytes do not.
			links = append(links, link{seq: e.Seq, bad: "altered: not as lopnr writes it"})
		default:
			links = append(links, link{seq: e.Seq, prev: e.Prev, hash: e.Hash, leaf: tlog.RecordHash(line[:len(line)-1])})
		}
	}
	if err := sc.Err(); err != nil {
		return tree{}, Head{}, tlog.Hash{}, err
	}
	later := func(i int, seq int64) bool {
		for _, l := range links[i+1:] {
			if l.seq == seq {
				return true
			}
		}
		return false
	}
	var (
		head   Head
		t      tree
		rootAt tlog.Hash
	)
	for i, l := range links {
		want, line := head.Seq+1, i+1
		var what string
		switch {
		case l.bad != "":
			what = l.bad
		case l.seq < want:
			what = fmt.Sprintf("reordered or repeated: entry %d stands where %d belongs", l.seq, want)
		case l.seq > want && later(i, want):
			what = fmt.Sprintf("reordered: entry %d stands where %d belongs", l.seq, want)
		case l.seq > want:
			what = fmt.Sprintf("removed: entries %d to %d are missing", want, l.seq-1)
		case l.prev != head.Hash:
			line, want, what = line-1, want-1, "altered or replaced: the next entry does not chain to it"
		}
		if what != "" {
			return tree{}, Head{}, tlog.Hash{}, &VerifyError{Line: line, Seq: want, What: what}
		}
		t.add(l.leaf)
		head = Head{Seq: l.seq, Hash: l.hash}
		if head.Seq == at {
			rootAt = t.root()
		}
	}
	head.Root = t.root()
	return t, head, rootAt, nil
}

// scanEntries splits a log into entries, each with its '\n' (the last may
// lack it); unlike bufio.ScanLines it keeps a '\r', which lopnr never
// writes.
func scanEntries(data []byte, atEOF bool) (advance int, token []byte, err error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, data[:i+1], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// canonical reports whether line is e as Append writes it.
func canonical(e Entry, line []byte) bool {
	b, err := json.Marshal(e)
	return err == nil && len(line) == len(b)+1 && bytes.Equal(line[:len(b)], b)
}
