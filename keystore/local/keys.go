package local

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"filippo.io/age"

	"github.com/lopnr/lopnr/internal/atomicfile"
)

// ErrNoProjectKey is wrapped when a project's entry exists but its key does
// not: the project was destroyed (and this is a copy of the store from
// before), or the key directory is not this store's.
var ErrNoProjectKey = errors.New("no project key")

// projectOf returns the project whose key encrypts the entry at path:
// every entry under projects/<id>/.
func projectOf(path string) (string, bool) {
	parts := strings.Split(path, "/")
	if len(parts) < 3 || parts[0] != "projects" {
		return "", false
	}
	return parts[1], true
}

// keyFile is where the project's key is kept.
func (s *Store) keyFile(project string) string {
	return filepath.Join(s.keyDir, project+".age")
}

// projectKey reads the project's key, decrypting it with the store's
// identity.
func (s *Store) projectKey(project string) (*age.HybridIdentity, error) {
	f, err := os.Open(s.keyFile(project))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: project %q has no key in %s: it was destroyed, or that is not this store's key directory", ErrNoProjectKey, project, s.keyDir)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r, err := age.Decrypt(f, s.identity)
	if err != nil {
		var nomatch *age.NoIdentityMatchError
		if errors.As(err, &nomatch) {
			return nil, fmt.Errorf("key %s is encrypted to another identity than %s", s.keyFile(project), filepath.Join(s.dir, "identity"))
		}
		return nil, fmt.Errorf("key %s cannot be decrypted: %v", s.keyFile(project), err)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("key %s is damaged: %v", s.keyFile(project), err)
	}
	id, err := age.ParseHybridIdentity(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("key %s: not an age hybrid identity", s.keyFile(project))
	}
	return id, nil
}

// projectKeyOrNew returns the project's key, creating it with the
// project's first entry; the caller holds the lock. A project that has
// entries but no key keeps having none: its entries are lost, and new
// ones under a new key would only hide that.
func (s *Store) projectKeyOrNew(project string) (*age.HybridIdentity, error) {
	id, err := s.projectKey(project)
	if !errors.Is(err, ErrNoProjectKey) {
		return id, err
	}
	if has, herr := s.hasEntries(project); herr != nil || has {
		return nil, errors.Join(err, herr)
	}
	if id, err = age.GenerateHybridIdentity(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, s.recipient)
	if err != nil {
		return nil, err
	}
	if _, err := io.WriteString(w, id.String()+"\n"); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	if err := atomicfile.Write(s.keyFile(project), buf.Bytes()); err != nil {
		return nil, fmt.Errorf("key %s: %w", s.keyFile(project), err)
	}
	// Entries are about to be written under this key: its name must
	// survive a crash as surely as they do.
	return id, atomicfile.SyncDir(s.keyDir)
}

// hasEntries tells whether any entry of the project is left.
func (s *Store) hasEntries(project string) (bool, error) {
	found := false
	err := filepath.WalkDir(filepath.Join(s.dir, "kv", "projects", project), func(name string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return fs.SkipAll
		}
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(name, ".age") && !strings.HasPrefix(d.Name(), ".tmp-") {
			found = true
			return fs.SkipAll
		}
		return nil
	})
	return found, err
}

// shredIfEmpty removes the project's key once its last entry is gone, and
// then what is left of its directory (temporary files of interrupted
// writes, encrypted to the key just removed); the caller holds the lock.
func (s *Store) shredIfEmpty(project string) error {
	if has, err := s.hasEntries(project); err != nil || has {
		return err
	}
	if err := os.Remove(s.keyFile(project)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("local keystore %s: remove the key of project %q: %w", s.dir, project, err)
	}
	if err := atomicfile.SyncDir(s.keyDir); err != nil {
		return fmt.Errorf("local keystore %s: remove the key of project %q: %w", s.dir, project, err)
	}
	return os.RemoveAll(filepath.Join(s.dir, "kv", "projects", project))
}
