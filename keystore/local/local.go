// Package local is the embedded keystore backend for a laptop and the demo:
// every entry is a file encrypted with age to a local identity.
//
// The directory holds identity (an age post-quantum hybrid identity,
// created on first use with mode 0600), lock (for check-and-set across
// processes) and kv/<path>.age, one file per entry with its version and
// metadata inside the encryption. Writes go to a temporary file that is
// synced and renamed into place, so a crash leaves the old version or the
// new, never half of one.
//
// Destroy removes the file. On a laptop's SSD a removed file's blocks may
// survive; the data in them stays encrypted to the identity. Production
// uses the Vault backend.
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

// Store is a directory of age-encrypted entries.
type Store struct {
	dir       string
	identity  age.Identity
	recipient age.Recipient
	mu        sync.Mutex // with the file lock, serialises writers
}

// Open opens the store in dir, creating the directory and its identity on
// first use.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(filepath.Join(dir, "kv"), 0o700); err != nil {
		return nil, fmt.Errorf("local keystore %s: %w", dir, err)
	}
	idPath := filepath.Join(dir, "identity")
	id, err := loadIdentity(idPath)
	if errors.Is(err, fs.ErrNotExist) {
		id, err = createIdentity(idPath)
	}
	if err != nil {
		return nil, fmt.Errorf("local keystore %s: %w", dir, err)
	}
	return &Store{dir: dir, identity: id, recipient: id.Recipient()}, nil
}

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
	r, err := age.Decrypt(f, s.identity)
	if err != nil {
		var nomatch *age.NoIdentityMatchError
		if errors.As(err, &nomatch) {
			return record{}, fmt.Errorf("local keystore %s: %s is encrypted to another identity than %s", s.dir, path, filepath.Join(s.dir, "identity"))
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

func (s *Store) write(path string, rec record) error {
	name, err := s.file(path)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
		return err
	}
	plain, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, s.recipient)
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

// Destroy implements keystore.Store.
func (s *Store) Destroy(_ context.Context, path string) error {
	name, err := s.file(path)
	if err != nil {
		return err
	}
	return s.locked(func() error {
		if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	})
}
