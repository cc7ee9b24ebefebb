package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/lopnr/lopnr/internal/synth"
)

const approvedYAML = `variables:
  - {source: par_sluten, column: HDIA, transforms: ["truncate(3)"]}
  - {source: par_sluten, column: INDATUM, transforms: [year-month]}
  - {source: par_sluten, column: OP}
  - {source: lmed, column: ATC}
  - {source: lmed, column: EDATUM, transforms: [year]}
  - {source: dors, column: ULORSAK, transforms: ["truncate(3)"]}
`

// cliJob is a generated job with an approved variable list and a
// researcher's age identity, for tests that run lopnr as a user does.
type cliJob struct {
	dir, approved, idFile string
	id                    *age.X25519Identity
}

func newCLIJob(t *testing.T, persons int, seed uint64) cliJob {
	t.Helper()
	j := cliJob{dir: t.TempDir()}
	if _, err := synth.Generate(j.dir, synth.Options{Persons: persons, Seed: seed}); err != nil {
		t.Fatal(err)
	}
	j.approved = filepath.Join(j.dir, "approved.yaml")
	os.WriteFile(j.approved, []byte(approvedYAML), 0o600)
	j.id, _ = age.GenerateX25519Identity()
	j.idFile = filepath.Join(j.dir, "key.txt")
	os.WriteFile(j.idFile, []byte(j.id.String()+"\n"), 0o600)
	return j
}

// TestRunVerifyDecrypt runs a generated job as a user would: lopnr run to
// a local directory with the local key store, lopnr verify, lopnr decrypt
// with the researcher's identity, and the same with a passphrase.
func TestRunVerifyDecrypt(t *testing.T) {
	j := newCLIJob(t, 800, 5)
	dir, approved, id, idFile := j.dir, j.approved, j.id, j.idFile
	t.Setenv("LOPNR_VAULT_ADDR", "")
	t.Setenv("VAULT_ADDR", "")
	t.Setenv("LOPNR_S3_ENDPOINT", "")
	common := []string{"--keystore", filepath.Join(dir, "ks"), "--signing-key", filepath.Join(dir, "signing.key"), "--out", filepath.Join(dir, "out"), "--approved", approved, "-q"}

	out, stderr, code := runLopnr(t, "", append([]string{"run", filepath.Join(dir, "job.yaml"), "--recipient", id.Recipient().String()}, common...)...)
	if code != 0 {
		t.Fatalf("run: exit %d: %s", code, stderr)
	}
	m := regexp.MustCompile(`Delivery (\S+) of project (\S+): 3 files at (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("run output: %q", out)
	}
	delivery := filepath.Join(dir, "out", m[2], m[1])
	pub, _ := os.ReadFile(filepath.Join(dir, "signing.key.pub"))
	if out, stderr, code := runLopnr(t, "", "verify", delivery, "--key", strings.TrimSpace(string(pub))); code != 0 || !strings.Contains(out, "all 3 files verified") {
		t.Fatalf("verify: exit %d: %s %s", code, out, stderr)
	}
	decrypted := t.TempDir()
	if _, stderr, code := runLopnr(t, "", "decrypt", "-i", idFile, "-o", decrypted, filepath.Join(delivery, "par_sluten.csv.zst.age")); code != 0 {
		t.Fatalf("decrypt: %s", stderr)
	}
	csv, err := os.ReadFile(filepath.Join(decrypted, "par_sluten.csv"))
	if err != nil || !bytes.HasPrefix(csv, []byte("LopNr;HDIA;INDATUM;OP\n")) {
		t.Fatalf("decrypted: %q… (%v)", csv[:min(len(csv), 40)], err)
	}
	// Tampering is caught.
	os.WriteFile(filepath.Join(delivery, "lmed.csv.zst.age"), []byte("x"), 0o600)
	if out, _, code := runLopnr(t, "", "verify", delivery, "--key", strings.TrimSpace(string(pub))); code == 0 || !strings.Contains(out, "ALTERED  lmed.csv.zst.age") {
		t.Fatalf("verify of an altered file: exit %d, %s", code, out)
	}

	// With a passphrase: shown once on stderr, never in the delivery.
	out, stderr, code = runLopnr(t, "", append([]string{"run", filepath.Join(dir, "job.yaml"), "--passphrase"}, common...)...)
	if code != 0 {
		t.Fatalf("run --passphrase: %s", stderr)
	}
	pass := regexp.MustCompile(`(?m)^    ([a-z0-9]{5}(-[a-z0-9]{1,5}){5})$`).FindStringSubmatch(stderr)
	if pass == nil {
		t.Fatalf("no passphrase on stderr: %q", stderr)
	}
	m = regexp.MustCompile(`Delivery (\S+) of project ([^:\s]+):`).FindStringSubmatch(out)
	delivery = filepath.Join(dir, "out", m[2], m[1])
	filepath.WalkDir(filepath.Join(dir, "out"), func(p string, d os.DirEntry, err error) error {
		if b, _ := os.ReadFile(p); err == nil && !d.IsDir() && bytes.Contains(b, []byte(pass[1])) {
			t.Errorf("%s holds the passphrase", p)
		}
		return nil
	})
	decrypted = t.TempDir()
	if _, stderr, code := runLopnr(t, pass[1]+"\n", "decrypt", "--passphrase-file", "-", "-o", decrypted, filepath.Join(delivery, "dors.csv.zst.age")); code != 0 {
		t.Fatalf("decrypt with passphrase: %s", stderr)
	}
	if _, stderr, code := runLopnr(t, "wrong-pass\n", "decrypt", "--passphrase-file", "-", "-o", t.TempDir(), filepath.Join(delivery, "dors.csv.zst.age")); code == 0 {
		t.Fatalf("a wrong passphrase decrypted: %s", stderr)
	}
}

func TestRunRefusesBadUse(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "job.yaml"}, "--approved is required"},
		{[]string{"run", "job.yaml", "--approved", "a.yaml"}, "give --recipient (one or more) or --passphrase"},
		{[]string{"run", "job.yaml", "--approved", "a.yaml", "--passphrase", "--recipient", "age1x"}, "give --recipient (one or more) or --passphrase"},
		{[]string{"decrypt", "x.age"}, "give -i IDENTITY or --passphrase-file"},
		{[]string{"verify", "dir"}, "give --key"},
	} {
		t.Setenv("LOPNR_SIGNING_PUBKEY", "")
		_, stderr, code := runLopnr(t, "", tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, %q", tc.args, code, stderr)
		}
	}
}

func TestDemo(t *testing.T) {
	dir := t.TempDir()
	out, stderr, code := runLopnr(t, "", "demo", "--dir", dir, "--persons", "600")
	if code != 0 {
		t.Fatalf("demo: exit %d\n%s\n%s", code, out, stderr)
	}
	for _, want := range []string{"The cohort matches the", "signature and all 3 files verified", "Decrypted par_sluten.csv.zst.age"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	csv, err := os.ReadFile(filepath.Join(dir, "decrypted", "par_sluten.csv"))
	if err != nil || !bytes.HasPrefix(csv, []byte("LopNr;")) {
		t.Fatalf("decrypted file: %v", err)
	}
}
