// Package local is the embedded keystore backend for a laptop and the demo:
// every entry is a file encrypted with age, and each project's entries to
// a key of the project's own, so that destroying the project's key
// destroys the project even in copies of the store.
//
// # Layout
//
// The store directory holds identity (the store's age post-quantum hybrid
// identity, created on first use with mode 0600), lock (for check-and-set
// across processes) and kv/<path>.age, one file per entry with its version
// and metadata inside the encryption. Writes go to a temporary file that is
// synced and renamed into place, so a crash leaves the old version or the
// new, never half of one.
//
// The key directory, kept apart from the store directory (by default
// beside it, named DIR.keys), holds one file per project, <project>.age:
// the project's key, an age hybrid identity created with its first entry,
// itself encrypted to the store's identity. Entries under projects/<id>/
// are encrypted to the project's key; the others (tombstones) to the
// store's identity.
//
// # Destruction
//
// Destroy removes an entry's file; when it removes a project's last entry
// it removes the project's key file too. From then on no copy of the store
// directory, the backups taken before the destruction included, can be
// read for that project with the store's identity: the one key that
// opens it is gone. What holds and what an operator must do (copies of
// the key directory) is in docs/keystore.md. Production uses the Vault
// backend.
package local

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"filippo.io/age"

	"github.com/lopnr/lopnr/internal/atomicfile"
	"github.com/lopnr/lopnr/keystore"
)

var _ keystore.Store = (*Store)(nil)

// Store is a directory of age-encrypted entries and a directory of the
// projects' keys.
type Store struct {
	dir, keyDir string
	identity    age.Identity
	recipient   age.Recipient
	mu          sync.Mutex // with the file lock, serialises writers
}

// Open opens the store in dir, its projects' keys in dir.keys beside it
// (see [OpenWithKeys]).
func Open(dir string) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("local keystore %s: %w", dir, err)
	}
	return OpenWithKeys(dir, abs+".keys")
}

// OpenWithKeys opens the store in dir with its projects' keys in keyDir,
// creating the directories and the store's identity on first use. keyDir
// must not be inside dir, nor dir inside keyDir: a copy of the store
// directory must not hold the keys that open its projects.
func OpenWithKeys(dir, keyDir string) (*Store, error) {
	if err := apart(dir, keyDir); err != nil {
		return nil, fmt.Errorf("local keystore %s: %w", dir, err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "kv"), 0o700); err != nil {
		return nil, fmt.Errorf("local keystore %s: %w", dir, err)
	}
	if err := os.MkdirAll(keyDir, 0o700); err != nil {
		return nil, fmt.Errorf("local keystore %s: key directory: %w", dir, err)
	}
	idPath := filepath.Join(dir, "identity")
	id, err := loadIdentity(idPath)
	if errors.Is(err, fs.ErrNotExist) {
		id, err = createIdentity(idPath)
	}
	if err != nil {
		return nil, fmt.Errorf("local keystore %s: %w", dir, err)
	}
	return &Store{dir: dir, keyDir: keyDir, identity: id, recipient: id.Recipient()}, nil
}

// apart refuses a key directory that a copy of the store directory would
// hold, or that would hold the store directory.
func apart(dir, keyDir string) error {
	d, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	k, err := filepath.Abs(keyDir)
	if err != nil {
		return err
	}
	for _, pair := range [][2]string{{d, k}, {k, d}} {
		if rel, err := filepath.Rel(pair[0], pair[1]); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return fmt.Errorf("key directory %s: must be apart from the store directory, neither inside the other", keyDir)
		}
	}
	return nil
}

// KeyDir returns the directory of the projects' keys.
func (s *Store) KeyDir() string { return s.keyDir }

func loadIdentity(path string) (*age.HybridIdentity, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("identity %s is readable by others (mode %04o): chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			id, err := age.ParseHybridIdentity(line)
			if err != nil {
				return nil, fmt.Errorf("identity %s: not an age hybrid identity", path)
			}
			return id, nil
		}
	}
	return nil, fmt.Errorf("identity %s: empty", path)
}

func createIdentity(path string) (*age.HybridIdentity, error) {
	id, err := age.GenerateHybridIdentity()
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return loadIdentity(path) // another process created it first
	}
	if err != nil {
		return nil, err
	}
	_, err = fmt.Fprintf(f, "# lopnr local keystore identity, created %s\n# public key: %s\n%s\n",
		time.Now().UTC().Format(time.RFC3339), id.Recipient(), id)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	return id, nil
}

// record is what one file holds, inside the encryption.
type record struct {
	Version int               `json:"version"`
	Data    []byte            `json:"data"`
	Meta    keystore.PathMeta `json:"meta"`
}

var segment = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]*$`)

// file maps a store path to its file, refusing anything that could leave
// the directory.
func (s *Store) file(path string) (string, error) {
	parts := strings.Split(path, "/")
	for _, p := range parts {
		if !segment.MatchString(p) {
			return "", fmt.Errorf("local keystore: invalid path %q", path)
		}
	}
	return filepath.Join(append([]string{s.dir, "kv"}, parts...)...) + ".age", nil
}

func (s *Store) read(path string) (record, error) {
	name, err := s.file(path)
	if err != nil {
		return record{}, err
	}
	f, err := os.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return record{}, fmt.Errorf("%s: %w", path, keystore.ErrNotFound)
	}
	if err != nil {
		return record{}, err
	}
	defer f.Close()
	id := s.identity
	if project, ok := projectOf(path); ok {
		if id, err = s.projectKey(project); err != nil {
			return record{}, fmt.Errorf("local keystore %s: %s: %w", s.dir, path, err)
		}
	}
	r, err := age.Decrypt(f, id)
	if err != nil {
		var nomatch *age.NoIdentityMatchError
		if errors.As(err, &nomatch) {
			return record{}, fmt.Errorf("local keystore %s: %s is encrypted to another identity than %s", s.dir, path, s.keyName(path))
		}
		return record{}, fmt.Errorf("local keystore %s: %s cannot be decrypted: %v", s.dir, path, err)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return record{}, fmt.Errorf("local keystore %s: %s is damaged: %v", s.dir, path, err)
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return record{}, fmt.Errorf("local keystore %s: %s is damaged: %v", s.dir, path, err)
	}
	return rec, nil
}

// keyName names the key an entry is encrypted to, for messages.
func (s *Store) keyName(path string) string {
	if project, ok := projectOf(path); ok {
		return s.keyFile(project)
	}
	return filepath.Join(s.dir, "identity")
}

// write stores rec at path; the caller holds the lock.
func (s *Store) write(path string, rec record) error {
	name, err := s.file(path)
	if err != nil {
		return err
	}
	to := s.recipient
	if project, ok := projectOf(path); ok {
		id, err := s.projectKeyOrNew(project)
		if err != nil {
			return fmt.Errorf("local keystore %s: %s: %w", s.dir, path, err)
		}
		to = id.Recipient()
	}
	if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
		return err
	}
	plain, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, to)
	if err != nil {
		return err
	}
	if _, err := w.Write(plain); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return atomicfile.Write(name, buf.Bytes())
}

// locked runs fn holding the in-process mutex and the directory's file lock.
func (s *Store) locked(fn func() error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := os.OpenFile(filepath.Join(s.dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return fn()
}

// Read implements keystore.Store.
func (s *Store) Read(_ context.Context, path string) (keystore.Entry, error) {
	rec, err := s.read(path)
	if err != nil {
		return keystore.Entry{}, err
	}
	return keystore.Entry{Data: rec.Data, Version: rec.Version}, nil
}

// Write implements keystore.Store.
func (s *Store) Write(_ context.Context, path string, data []byte, cas int, meta keystore.PathMeta) (int, error) {
	var version int
	err := s.locked(func() error {
		cur, err := s.read(path)
		if err != nil && !errors.Is(err, keystore.ErrNotFound) {
			return err
		}
		if cur.Version != cas {
			return fmt.Errorf("%s: version %d, expected %d: %w", path, cur.Version, cas, keystore.ErrConflict)
		}
		version = cur.Version + 1
		return s.write(path, record{Version: version, Data: data, Meta: meta})
	})
	return version, err
}

// SetMeta implements keystore.Store.
func (s *Store) SetMeta(_ context.Context, path string, meta keystore.PathMeta) error {
	return s.locked(func() error {
		cur, err := s.read(path)
		if err != nil {
			return err
		}
		cur.Meta = meta
		return s.write(path, cur)
	})
}

// List implements keystore.Store.
func (s *Store) List(_ context.Context, prefix string) ([]string, error) {
	root := filepath.Join(s.dir, "kv")
	var paths []string
	err := filepath.WalkDir(root, func(name string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && name != root {
			return nil // a destroyed project's directory, removed while listing
		}
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(name, ".age") || strings.HasPrefix(d.Name(), ".tmp-") {
			return nil
		}
		rel, err := filepath.Rel(root, name)
		if err != nil {
			return err
		}
		p := strings.TrimSuffix(filepath.ToSlash(rel), ".age")
		if strings.HasPrefix(p, prefix) {
			paths = append(paths, p)
		}
		return nil
	})
	return paths, err
}

// Destroy implements keystore.Store. Removing a project's last entry
// removes the project's key.
func (s *Store) Destroy(_ context.Context, path string) error {
	name, err := s.file(path)
	if err != nil {
		return err
	}
	return s.locked(func() error {
		if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if project, ok := projectOf(path); ok {
			return s.shredIfEmpty(project)
		}
		return nil
	})
}
