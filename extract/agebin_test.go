package extract

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"filippo.io/age"

	"github.com/lopnr/lopnr/internal/testenv"
)

// ageVersion is the release of the stock age command that researchers are
// told to use, and that the tests decrypt deliveries with.
const ageVersion = "v1.3.2"

// ageBinary returns the path of the stock age command, built once from the
// Go module proxy into the tools cache ($LOPNR_TOOLS_CACHE, default
// <user cache dir>/lopnr/tools, as deploy/dev/devstack uses) under
// age-<version>/age. A file lock serialises the build between test
// processes, since packages test in parallel. When the build fails the
// test fails under CI=true or LOPNR_INTEGRATION=1, and is skipped
// otherwise.
func ageBinary(t testing.TB) string {
	t.Helper()
	path, err := buildAge()
	if err != nil {
		if testenv.Required() {
			t.Fatalf("build the age command: %v", err)
		}
		t.Skipf("the age command is not available: %v", err)
	}
	return path
}

func buildAge() (string, error) {
	cache := os.Getenv("LOPNR_TOOLS_CACHE")
	if cache == "" {
		d, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("no cache directory (set LOPNR_TOOLS_CACHE): %w", err)
		}
		cache = filepath.Join(d, "lopnr", "tools")
	}
	key := "age-" + ageVersion
	final := filepath.Join(cache, key, "age")
	if fi, err := os.Stat(final); err == nil && fi.Mode().IsRegular() {
		return final, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(cache, key+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(final); err == nil {
		return final, nil // another test process built it while we waited
	}

	gobin, err := exec.LookPath("go")
	if err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(cache, key+".build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command(gobin, "install", "-trimpath", "filippo.io/age/cmd/age@"+ageVersion)
	cmd.Dir = tmp // outside any module, so go.mod and go.work play no part
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOFLAGS=", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install filippo.io/age/cmd/age@%s: %w\n%s", ageVersion, err, out)
	}
	if err := os.Rename(tmp, filepath.Dir(final)); err != nil {
		return "", err
	}
	return final, nil
}

func TestAgeBinaryDecrypts(t *testing.T) {
	bin := ageBinary(t)
	x25519, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	hybrid, err := age.GenerateHybridIdentity()
	if err != nil {
		t.Fatal(err)
	}
	other, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeID := func(name string, id fmt.Stringer) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte("# test identity\n"+id.String()+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	decrypt := func(idFile string, ct []byte) ([]byte, error) {
		cmd := exec.Command(bin, "-d", "-i", idFile)
		cmd.Stdin = bytes.NewReader(ct)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("%w: %s", err, bytes.TrimSpace(stderr.Bytes()))
		}
		return out, nil
	}
	otherFile := writeID("other.txt", other)

	for _, tc := range []struct {
		name string
		id   interface {
			age.Identity
			fmt.Stringer
		}
		rcpt age.Recipient
	}{
		{"X25519", x25519, x25519.Recipient()},
		{"hybrid", hybrid, hybrid.Recipient()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plain := make([]byte, 5000)
			rand.Read(plain)
			var ct bytes.Buffer
			w, err := age.Encrypt(&ct, tc.rcpt)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(w, bytes.NewReader(plain)); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			got, err := decrypt(writeID(tc.name+".txt", tc.id), ct.Bytes())
			if err != nil {
				t.Fatalf("age -d: %v", err)
			}
			if !bytes.Equal(got, plain) {
				t.Fatalf("age -d gave %d bytes that differ from the %d encrypted", len(got), len(plain))
			}
			// The command really decrypts: another identity cannot.
			if _, err := decrypt(otherFile, ct.Bytes()); err == nil {
				t.Fatal("age -d with the wrong identity succeeded")
			} else if !errors.As(err, new(*exec.ExitError)) {
				t.Fatalf("age -d with the wrong identity: %v", err)
			}
		})
	}
}
