package local_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
