package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lopnr/lopnr/internal/testenv"
)

// TestRunWithVault runs a job with the kodnyckel in OpenBao, twice: the
// second delivery gives the same persons the same LopNr, read back from
// Vault by a new process's worth of state.
func TestRunWithVault(t *testing.T) {
	env := testenv.Vault(t)
	j := newCLIJob(t, 400, 21)
	dir, approved, id, idFile := j.dir, j.approved, j.id, j.idFile
	t.Setenv("LOPNR_S3_ENDPOINT", "")
	t.Setenv("LOPNR_VAULT_TOKEN", env.Token)
	prefix := "lopnr/cli-" + time.Now().Format("150405.000000")
	args := []string{"run", filepath.Join(dir, "job.yaml"), "--approved", approved, "--recipient", id.Recipient().String(),
		"--vault-addr", env.Addr, "--vault-prefix", prefix, "--signing-key", filepath.Join(dir, "sk"), "--out", filepath.Join(dir, "out"), "-q"}
	var outputs [][]byte
	for i := 0; i < 2; i++ {
		out, stderr, code := runLopnr(t, "", args...)
		if code != 0 {
			t.Fatalf("run %d: %s", i, stderr)
		}
		if i == 0 && !strings.Contains(stderr, "in Vault "+env.Addr) {
			t.Errorf("first run did not say it created the project in Vault: %q", stderr)
		}
		m := regexp.MustCompile(`Delivery (\S+) of project ([^:\s]+):`).FindStringSubmatch(out)
		plain := t.TempDir()
		if _, stderr, code := runLopnr(t, "", "decrypt", "-i", idFile, "-o", plain, filepath.Join(dir, "out", m[2], m[1], "lmed.csv.zst.age")); code != 0 {
			t.Fatalf("decrypt: %s", stderr)
		}
		b, _ := os.ReadFile(filepath.Join(plain, "lmed.csv"))
		outputs = append(outputs, b)
	}
	a, b := sortedLines(outputs[0]), sortedLines(outputs[1])
	if len(a) < 10 || strings.Join(a, "\n") != strings.Join(b, "\n") {
		t.Fatal("two deliveries with the kodnyckel in Vault differ")
	}
	// A wrong token is a clear error with a hint.
	t.Setenv("LOPNR_VAULT_TOKEN", "wrong")
	if _, stderr, code := runLopnr(t, "", args...); code != 1 || !strings.Contains(stderr, "token was rejected") || !strings.Contains(stderr, "hint:") {
		t.Fatalf("wrong token: exit %d, %q", code, stderr)
	}
}

func sortedLines(b []byte) []string {
	l := strings.Split(string(b), "\n")
	slices.Sort(l)
	return l
}
