package local_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/lopnr/lopnr/keystore"
	"github.com/lopnr/lopnr/keystore/keystoretest"
	"github.com/lopnr/lopnr/keystore/local"
)

func TestSuite(t *testing.T) {
	keystoretest.Run(t, func(t *testing.T) func() keystore.Store {
		dir := t.TempDir()
		return func() keystore.Store {
			s, err := local.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	})
}

func TestIdentityCreatedPrivateAndFilesEncrypted(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ks")
	s, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "identity"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity mode %04o, want 0600", fi.Mode().Perm())
	}
	ks := keystore.New(s, keystore.Options{})
	ctx := context.Background()
	if _, err := ks.CreateProject(ctx, keystore.ProjectSpec{ID: "p", EPMDnr: "2026-1"}); err != nil {
		t.Fatal(err)
	}
	ns := keystoretest.Numbers(t, 50)
	if _, err := ks.Assign(ctx, "p", ns); err != nil {
		t.Fatal(err)
	}
	// No file under the store holds a number, nor the project's metadata,
	// in the clear.
	filepath.WalkDir(filepath.Join(dir, "kv"), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := os.ReadFile(path)
		if !bytes.HasPrefix(b, []byte("age-encryption.org/v1\n")) {
			t.Errorf("%s is not an age file", path)
		}
		for _, n := range ns {
			if bytes.Contains(b, []byte(n.Canonical())) {
				t.Errorf("%s holds an identity number in the clear", path)
			}
		}
		if bytes.Contains(b, []byte("2026-1")) {
			t.Errorf("%s holds metadata in the clear", path)
		}
		return nil
	})
	// The projects' keys, beside the store, are encrypted to its identity.
	keys, _ := os.ReadDir(s.KeyDir())
	if len(keys) != 1 || keys[0].Name() != "p.age" {
		t.Fatalf("key directory holds %v, want p.age", keys)
	}
	if b, _ := os.ReadFile(filepath.Join(s.KeyDir(), "p.age")); !bytes.HasPrefix(b, []byte("age-encryption.org/v1\n")) {
		t.Error("the project's key is not an age file")
	}
	// A second Open reuses the identity.
	s2, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := keystore.New(s2, keystore.Options{}).Lookup(ctx, "p", ns); err != nil || got[0] == 0 {
		t.Fatalf("reopened store: %v, %v", got, err)
	}
}

func TestWrongOrExposedIdentityIsAClearError(t *testing.T) {
	dir := t.TempDir()
	s, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.Write(ctx, "projects/p/meta", []byte("{}"), 0, keystore.PathMeta{}); err != nil {
		t.Fatal(err)
	}
	idPath := filepath.Join(dir, "identity")
	os.Chmod(idPath, 0o644)
	if _, err := local.Open(dir); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Fatalf("identity readable by others: %v", err)
	}
	// Another identity cannot read the entries.
	os.Remove(idPath)
	s2, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Read(ctx, "projects/p/meta"); err == nil || !strings.Contains(err.Error(), "encrypted to another identity") {
		t.Fatalf("read with another identity: %v", err)
	}
	os.WriteFile(idPath, []byte("AGE-SECRET-KEY-NOT-A-KEY\n"), 0o600)
	if _, err := local.Open(dir); err == nil || !strings.Contains(err.Error(), "not an age hybrid identity") {
		t.Fatalf("garbage identity: %v", err)
	}
}

func TestPathsCannotEscape(t *testing.T) {
	s, err := local.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"../x", "projects/../../x", "/abs", "a//b", "a/./b"} {
		if _, err := s.Write(context.Background(), p, nil, 0, keystore.PathMeta{}); err == nil {
			t.Errorf("path %q accepted", p)
		}
	}
}

// TestOperatorWithABackupCannotReadADestroyedKodnyckel replays an operator
// who copied the store directory (a backup) while a project was alive and
// reads it after the project was destroyed: neither the keystore over the
// copy nor age with the store's identity opens the project's entries,
// while a project that was not destroyed restores from the same copy.
func TestOperatorWithABackupCannotReadADestroyedKodnyckel(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "keystore")
	s, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ks := keystore.New(s, keystore.Options{})
	ctx := context.Background()
	ns := keystoretest.Numbers(t, 40)
	for _, p := range []string{"gone", "kept"} {
		if _, err := ks.CreateProject(ctx, keystore.ProjectSpec{ID: p, EPMDnr: "2026-1"}); err != nil {
			t.Fatal(err)
		}
		if _, err := ks.Assign(ctx, p, ns); err != nil {
			t.Fatal(err)
		}
	}
	backup := filepath.Join(root, "backup")
	copyDir(t, dir, backup)
	if _, err := ks.Destroy(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.KeyDir(), "gone.age")); !os.IsNotExist(err) {
		t.Fatalf("the destroyed project's key is still there: %v", err)
	}

	// The backup restored beside the live key directory: the destroyed
	// project stays destroyed, the other is back.
	restored, err := local.OpenWithKeys(backup, s.KeyDir())
	if err != nil {
		t.Fatal(err)
	}
	rks := keystore.New(restored, keystore.Options{})
	if got, err := rks.Lookup(ctx, "gone", ns); !errors.Is(err, local.ErrNoProjectKey) {
		t.Fatalf("Lookup of the destroyed project in the backup = %v, %v; want ErrNoProjectKey", got, err)
	}
	if err := rks.Mappings(ctx, "gone", func(string, keystore.RunNumber) error { return nil }); !errors.Is(err, local.ErrNoProjectKey) {
		t.Fatalf("Mappings of the destroyed project in the backup: %v", err)
	}
	if got, err := rks.Lookup(ctx, "kept", ns); err != nil || got[0] == 0 {
		t.Fatalf("Lookup of the kept project in the backup = %v, %v", got, err)
	}

	// By hand, with the store's identity from the backup: no entry of the
	// destroyed project decrypts.
	ids, err := age.ParseIdentities(mustOpen(t, filepath.Join(backup, "identity")))
	if err != nil {
		t.Fatal(err)
	}
	files := 0
	filepath.WalkDir(filepath.Join(backup, "kv", "projects", "gone"), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		if _, err := age.Decrypt(mustOpen(t, path), ids...); err == nil {
			t.Errorf("%s decrypts with the store's identity", path)
		}
		return nil
	})
	if files < 4 {
		t.Fatalf("the backup holds %d files of the destroyed project, want meta, secrets, head and chunks", files)
	}
	if _, err := age.Decrypt(mustOpen(t, filepath.Join(s.KeyDir(), "kept.age")), ids...); err != nil {
		t.Fatalf("the identity read from the backup does not open the kept project's key: %v", err)
	}
}

// TestProjectWithoutItsKeyTakesNoNewEntries: entries under a new key
// would hide that the project's old ones can no longer be read.
func TestProjectWithoutItsKeyTakesNoNewEntries(t *testing.T) {
	s, err := local.Open(filepath.Join(t.TempDir(), "ks"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.Write(ctx, "projects/p/meta", []byte("{}"), 0, keystore.PathMeta{}); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(s.KeyDir(), "p.age"))
	if _, err := s.Write(ctx, "projects/p/map/c1", []byte("x"), 0, keystore.PathMeta{}); !errors.Is(err, local.ErrNoProjectKey) {
		t.Fatalf("write without the project's key: %v", err)
	}
	if _, err := s.Read(ctx, "projects/p/meta"); !errors.Is(err, local.ErrNoProjectKey) || !strings.Contains(err.Error(), "destroyed") {
		t.Fatalf("read without the project's key: %v", err)
	}
	// Its last entry destroyed, the project starts afresh.
	if err := s.Destroy(ctx, "projects/p/meta"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(ctx, "projects/p/meta", []byte("{}"), 0, keystore.PathMeta{}); err != nil {
		t.Fatal(err)
	}
}

// TestACopyOfTheKeyDirectoryFromBeforeADestroyRevivesTheProject states the
// limit of crypto-shredding that docs/keystore.md tells operators: a copy
// of the key directory taken before a project's destruction opens the
// project in a copy of the store from then, so such copies must be kept no
// longer than the grace the docs give.
func TestACopyOfTheKeyDirectoryFromBeforeADestroyRevivesTheProject(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "keystore")
	s, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ks := keystore.New(s, keystore.Options{})
	ctx := context.Background()
	ns := keystoretest.Numbers(t, 10)
	if _, err := ks.CreateProject(ctx, keystore.ProjectSpec{ID: "gone", EPMDnr: "2026-1"}); err != nil {
		t.Fatal(err)
	}
	want, err := ks.Assign(ctx, "gone", ns)
	if err != nil {
		t.Fatal(err)
	}
	copyDir(t, dir, filepath.Join(root, "backup"))
	copyDir(t, s.KeyDir(), filepath.Join(root, "backup.keys"))
	if _, err := ks.Destroy(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	both, err := local.Open(filepath.Join(root, "backup"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := keystore.New(both, keystore.Options{}).Lookup(ctx, "gone", ns); err != nil || got[0] != want[0] {
		t.Fatalf("backups of both directories: %v, %v; the docs say they revive the project", got, err)
	}
}

func TestKeyDirectoryIsKeptApartFromTheStore(t *testing.T) {
	dir := t.TempDir()
	for _, keys := range []string{filepath.Join(dir, "keys"), dir, filepath.Dir(dir)} {
		if _, err := local.OpenWithKeys(dir, keys); err == nil || !strings.Contains(err.Error(), "apart") {
			t.Errorf("key directory %s: %v", keys, err)
		}
	}
	s, err := local.Open(dir + "/")
	if err != nil {
		t.Fatal(err)
	}
	if s.KeyDir() != dir+".keys" {
		t.Fatalf("key directory %s, want %s.keys", s.KeyDir(), dir)
	}
	if fi, err := os.Stat(s.KeyDir()); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("key directory: %v, %v; want mode 0700", fi, err)
	}
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o700)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func mustOpen(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
