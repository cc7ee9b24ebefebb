// Package keystore keeps the kodnyckel — each project's mapping from
// personnummer to run number (LopNr) — with the project's keys and its
// retention, and destroys it on time.
//
// The kodnyckel is the most dangerous file a region keeps. A [Keystore]
// gives every person one stable LopNr per project and never the same LopNr
// to two persons, even with several jobs and server processes assigning at
// once; it stores new assignments before it returns them; and past the
// project's RetainUntil (unless a legal hold is set) [Keystore.Sweep]
// destroys every record of the project and leaves a [Receipt].
//
// # Storage
//
// A Keystore runs over a [Store], a small versioned key-value interface with
// check-and-set that two backends implement and one shared test suite
// (package keystoretest) checks:
//
//   - keystore/vault: HashiCorp Vault or OpenBao KV v2, for production;
//   - keystore/local: files encrypted with age to a local identity, the
//     embedded default for a laptop and the demo.
//
// A project's records live under projects/<id>/: meta (EPM dnr, created,
// retain_until, hold), secrets (order_key and oprf_seed, 32 random bytes
// each), head (the number of persons and the list of mapping chunks) and
// map/<chunk> (zstd-compressed runs of canonical numbers). Chunks are
// immutable and named at random; an assignment writes its new chunks, then
// moves head forward by check-and-set, retrying from the start when another
// writer got there first. After destruction a tombstone at
// tombstones/<id> keeps the date, so later calls fail with
// [ErrDestroyed] naming it.
//
// # Run numbers
//
// New persons get the next integers (1..N in a first delivery) in keyed
// order, sorted by HMAC-SHA256(order_key, canonical number), so a LopNr
// reveals neither birth date nor file order, and two projects' LopNr for
// the same persons are unrelated.
//
// Time and randomness are injected ([Options]), so retention and key tests
// are deterministic.
package keystore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sync"
	"time"
)

// Store is the storage a Keystore runs over: versioned entries at
// slash-separated paths, written with check-and-set.
type Store interface {
	// Read returns the current version of the entry at path, or an error
	// wrapping ErrNotFound.
	Read(ctx context.Context, path string) (Entry, error)
	// Write stores data at path if the entry's current version is cas (0:
	// the entry must not exist), sets its metadata, and returns the new
	// version. A mismatch returns an error wrapping ErrConflict.
	Write(ctx context.Context, path string, data []byte, cas int, meta PathMeta) (int, error)
	// SetMeta replaces the metadata of the entry at path.
	SetMeta(ctx context.Context, path string, meta PathMeta) error
	// List returns the paths of every entry below prefix, at any depth.
	List(ctx context.Context, prefix string) ([]string, error)
	// Destroy removes every version of the entry at path and its metadata,
	// beyond recovery through the store's API. Destroying a missing entry
	// is not an error.
	Destroy(ctx context.Context, path string) error
}

// Entry is one version of a stored entry.
type Entry struct {
	Data    []byte
	Version int
}

// PathMeta is the metadata a Store keeps beside an entry: in Vault, KV v2
// custom metadata and delete_version_after.
type PathMeta struct {
	Project     string
	RetainUntil time.Time
	// DeleteAfter is a backstop: the store may delete versions this long
	// after they were written, should the sweeper not run. Zero: never.
	DeleteAfter time.Duration
}

// Errors that callers branch on. Backends wrap ErrNotFound and ErrConflict;
// the Keystore returns the others, wrapped in errors with detail.
var (
	ErrNotFound        = errors.New("not found")
	ErrConflict        = errors.New("check-and-set conflict")
	ErrProjectExists   = errors.New("project exists")
	ErrDestroyed       = errors.New("kodnyckel destroyed")
	ErrExpired         = errors.New("retention ended")
	ErrHeld            = errors.New("legal hold")
	ErrInvalidArgument = errors.New("invalid argument")
)

// DestroyedError is returned for a project whose kodnyckel was destroyed.
type DestroyedError struct {
	Project string
	At      time.Time
}

func (e *DestroyedError) Error() string {
	return fmt.Sprintf("project %q: kodnyckel destroyed on %s; no supplement or re-identification is possible", e.Project, e.At.UTC().Format("2006-01-02"))
}

func (e *DestroyedError) Unwrap() error { return ErrDestroyed }

// Clock tells the time.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Options are a Keystore's sources of time and randomness.
type Options struct {
	Clock Clock     // default: the system clock
	Rand  io.Reader // default: crypto/rand
}

// Keystore keeps projects' kodnycklar in a Store. It is safe for
// concurrent use, and several Keystores (in several processes) may share one
// Store.
type Keystore struct {
	store Store
	clock Clock
	rand  io.Reader
	randM sync.Mutex // an injected reader need not be safe for concurrent use

	mu    sync.Mutex
	cache map[string]*mapping // by project: chunks already read
}

// New returns a Keystore over store.
func New(store Store, opts Options) *Keystore {
	if opts.Clock == nil {
		opts.Clock = systemClock{}
	}
	if opts.Rand == nil {
		opts.Rand = rand.Reader
	}
	return &Keystore{store: store, clock: opts.Clock, rand: opts.Rand, cache: map[string]*mapping{}}
}

func (k *Keystore) random(n int) ([]byte, error) {
	b := make([]byte, n)
	k.randM.Lock()
	defer k.randM.Unlock()
	if _, err := io.ReadFull(k.rand, b); err != nil {
		return nil, fmt.Errorf("keystore: random source: %w", err)
	}
	return b, nil
}

var projectID = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// checkProjectID refuses ids that would not make safe, readable paths.
func checkProjectID(id string) error {
	if !projectID.MatchString(id) {
		return fmt.Errorf("%w: project id %q: want 1-64 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit", ErrInvalidArgument, id)
	}
	return nil
}

func projectPrefix(id string) string    { return "projects/" + id + "/" }
func metaPath(id string) string         { return projectPrefix(id) + "meta" }
func secretsPath(id string) string      { return projectPrefix(id) + "secrets" }
func headPath(id string) string         { return projectPrefix(id) + "head" }
func chunkPath(id, chunk string) string { return projectPrefix(id) + "map/" + chunk }
func tombstonePath(id string) string    { return "tombstones/" + id }
