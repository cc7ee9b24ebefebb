package server

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/lopnr/lopnr/internal/atomicfile"
	"github.com/lopnr/lopnr/server/internal/seal"
)

// records keeps values of one kind as JSON files, one per id, in a
// directory of the server's data directory. Writes are atomic (a temporary
// file, synced, renamed), so a crash leaves the old value or the new one.
//
// Each file is sealed (package seal) with a key from the key store, over
// the directory's name, the id and the JSON: a record that whoever holds
// the data directory edited, copied under another id or stripped of its
// seal is refused, naming it, and the refusal is logged; it is never used.
type records[T any] struct {
	what string // for errors: "project", "delivery"
	dir  string
	kind string // what the seal binds: the directory's name
	seal *seal.Sealer
	log  *slog.Logger
	mu   sync.Mutex
}

// alteredError refuses a record whose seal does not verify: a failed
// precondition to the caller, with the record's kind and id.
type alteredError struct{ *seal.AlteredError }

func (e *alteredError) Unwrap() []error { return []error{e.AlteredError, errState} }

// recordID is what an id must look like to name a file.
var recordID = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,127}$`)

func openRecords[T any](what, dir string, sealer *seal.Sealer, log *slog.Logger) (*records[T], error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return &records[T]{what: what, dir: dir, kind: filepath.Base(dir), seal: sealer, log: log}, nil
}

func (r *records[T]) path(id string) (string, error) {
	if !recordID.MatchString(id) || strings.Contains(id, "..") {
		return "", &fieldError{field: "id", want: fmt.Sprintf("a %s id of lower-case letters, digits, '.', '_' and '-'", r.what)}
	}
	return filepath.Join(r.dir, id+".json"), nil
}

// get returns the value kept under id, or an error wrapping errNotFound.
func (r *records[T]) get(id string) (T, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.getLocked(id)
}

func (r *records[T]) getLocked(id string) (T, error) {
	var v T
	p, err := r.path(id)
	if err != nil {
		return v, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return v, &notFoundError{what: r.what, id: id}
	}
	if err != nil {
		return v, err
	}
	if err := r.seal.Unmarshal(r.kind, id, b, &v); err != nil {
		var ae *seal.AlteredError
		if errors.As(err, &ae) {
			r.log.Error("record refused", "record", r.kind+"/"+id+".json", "why", ae.Why, "err", err)
			return v, &alteredError{ae}
		}
		return v, fmt.Errorf("%s %s: %w", r.what, id, err)
	}
	return v, nil
}

// create keeps a new value; it fails with errExists if id is taken.
func (r *records[T]) create(id string, v T) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, err := r.path(id)
	if err != nil {
		return err
	}
	if _, err := os.Stat(p); err == nil {
		return fmt.Errorf("%s %s: %w", r.what, id, errExists)
	}
	return r.putLocked(id, v)
}

// update applies fn to the value under id and keeps the result.
func (r *records[T]) update(id string, fn func(*T) error) (T, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, err := r.getLocked(id)
	if err != nil {
		return v, err
	}
	if err := fn(&v); err != nil {
		return v, err
	}
	return v, r.putLocked(id, v)
}

func (r *records[T]) putLocked(id string, v T) error {
	p, err := r.path(id)
	if err != nil {
		return err
	}
	b, err := r.seal.Marshal(r.kind, id, v)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(p, b); err != nil {
		return fmt.Errorf("keep %s %s: %w", r.what, id, err)
	}
	return nil
}

// list returns every value, in id order, but those refused as altered
// (which getLocked logs): one altered record hides itself, not the rest.
func (r *records[T]) list() ([]T, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	entries, err := os.ReadDir(r.dir)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".json"); ok && !strings.HasPrefix(name, ".") {
			ids = append(ids, name)
		}
	}
	sort.Strings(ids)
	out := make([]T, 0, len(ids))
	for _, id := range ids {
		v, err := r.getLocked(id)
		if errors.Is(err, seal.ErrAltered) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}
