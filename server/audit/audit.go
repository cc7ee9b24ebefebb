// Package audit is lopnr's tamper-evident audit log: an append-only file of
// JSON lines, each entry carrying the SHA-256 of the one before it, so that
// altering, removing or reordering an entry breaks the chain at that entry.
// [Verify] recomputes the chain and names the first entry that breaks it.
//
// Entries record who did what to which project and job, and how it ended;
// never an identity number. A free-text reason that holds something shaped
// like one is redacted before it is written.
//
// The chain proves the log consistent with itself. Truncating its end, or
// rewriting everything after some entry, is detectable only against a head
// kept elsewhere: [Log.Head] gives the last sequence number and hash, which
// the server exports (metrics, logs) so that an auditor can pin it.
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
	Outcome  string    `json:"outcome"` // ok, denied, failed
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

// Log is an open audit log. It is safe for concurrent use.
type Log struct {
	mu    sync.Mutex
	path  string
	f     *os.File
	seq   int64
	last  string
	clock func() time.Time
}

// Open opens (or creates, mode 0600) the log at path, verifies the chain
// it holds, and appends after it. clock may be nil (the system clock).
func Open(path string, clock func() time.Time) (*Log, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	head, err := Verify(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("audit log %s: %w", path, err)
	}
	if clock == nil {
		clock = time.Now
	}
	return &Log{path: path, f: f, seq: head.Seq, last: head.Hash, clock: clock}, nil
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
	if _, err := l.f.Write(append(b, '\n')); err != nil {
		return Entry{}, fmt.Errorf("audit log: %w", err)
	}
	if err := l.f.Sync(); err != nil {
		return Entry{}, fmt.Errorf("audit log: %w", err)
	}
	l.seq, l.last = e.Seq, e.Hash
	return e, nil
}

// Head is the last entry's sequence number and hash.
type Head struct {
	Seq  int64
	Hash string
}

// Head returns the log's head.
func (l *Log) Head() Head {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Head{l.seq, l.last}
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
// removed or reordered.
func Verify(r io.ReadSeeker) (Head, error) {
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return Head{}, err
	}
	type link struct {
		seq        int64
		prev, hash string
		bad        string // why the entry itself is invalid
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
			links = append(links, link{seq: e.Seq, prev: e.Prev, hash: e.Hash})
		}
	}
	if err := sc.Err(); err != nil {
		return Head{}, err
	}
	later := func(i int, seq int64) bool {
		for _, l := range links[i+1:] {
			if l.seq == seq {
				return true
			}
		}
		return false
	}
	var head Head
	for i, l := range links {
		want, line := head.Seq+1, i+1
		switch {
		case l.bad != "":
			return Head{}, &VerifyError{Line: line, Seq: want, What: l.bad}
		case l.seq < want:
			return Head{}, &VerifyError{Line: line, Seq: want, What: fmt.Sprintf("reordered or repeated: entry %d stands where %d belongs", l.seq, want)}
		case l.seq > want && later(i, want):
			return Head{}, &VerifyError{Line: line, Seq: want, What: fmt.Sprintf("reordered: entry %d stands where %d belongs", l.seq, want)}
		case l.seq > want:
			return Head{}, &VerifyError{Line: line, Seq: want, What: fmt.Sprintf("removed: entries %d to %d are missing", want, l.seq-1)}
		case l.prev != head.Hash:
			return Head{}, &VerifyError{Line: line - 1, Seq: want - 1, What: "altered or replaced: the next entry does not chain to it"}
		}
		head = Head{Seq: l.seq, Hash: l.hash}
	}
	return head, nil
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
