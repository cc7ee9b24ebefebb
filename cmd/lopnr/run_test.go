package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/lopnr/lopnr/internal/synth"
)

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
	os.WriteFile(j.approved, []byte(synth.Approved), 0o600)
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

// TestRunRecipients runs a job as the issue writes it — lopnr run JOB.yaml
// --out DIR — with the approved list beside the spec: recipients on the
// command line add to the spec's (or replace them), and without any a
// passphrase is generated and shown once.
func TestRunRecipients(t *testing.T) {
	j := newCLIJob(t, 300, 9)
	t.Setenv("LOPNR_VAULT_ADDR", "")
	t.Setenv("VAULT_ADDR", "")
	t.Setenv("LOPNR_S3_ENDPOINT", "")
	inSpec, _ := age.GenerateX25519Identity()
	spec := filepath.Join(j.dir, "job.yaml")
	b, _ := os.ReadFile(spec)
	os.WriteFile(spec, append(b, "recipients: ["+inSpec.Recipient().String()+"]\n"...), 0o600)
	out := filepath.Join(j.dir, "out")
	common := []string{"--keystore", filepath.Join(j.dir, "ks"), "--signing-key", filepath.Join(j.dir, "signing.key"), "-q"}
	run := func(args ...string) string {
		t.Helper()
		stdout, stderr, code := runLopnr(t, "", append(append([]string{"run", spec, "--out", out}, common...), args...)...)
		if code != 0 {
			t.Fatalf("run %v: exit %d: %s", args, code, stderr)
		}
		m := regexp.MustCompile(`Delivery (\S+) of project ([^:\s]+):`).FindStringSubmatch(stdout)
		if m == nil {
			t.Fatalf("run output: %q", stdout)
		}
		return filepath.Join(out, m[2], m[1], "dors.csv.zst.age")
	}
	opens := func(file string, id age.Identity) bool {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		_, err = age.Decrypt(f, id)
		return err == nil
	}
	file := run("--recipient", j.id.Recipient().String())
	if !opens(file, inSpec) || !opens(file, j.id) {
		t.Errorf("--recipient should add to the spec's recipients: spec's key %v, command line's %v", opens(file, inSpec), opens(file, j.id))
	}
	file = run("--recipient", j.id.Recipient().String(), "--replace-recipients")
	if opens(file, inSpec) || !opens(file, j.id) {
		t.Errorf("--replace-recipients: spec's key opens %v (want false), command line's %v (want true)", opens(file, inSpec), opens(file, j.id))
	}

	os.WriteFile(spec, b, 0o600) // no recipients anywhere: a passphrase
	_, stderr, code := runLopnr(t, "", append([]string{"run", spec, "--out", out}, common...)...)
	if code != 0 || !regexp.MustCompile(`(?m)^    [a-z0-9]{5}(-[a-z0-9]{1,5}){5}$`).MatchString(stderr) {
		t.Fatalf("run without recipients: exit %d, no passphrase shown: %q", code, stderr)
	}
	os.Remove(j.approved)
	if _, stderr, code := runLopnr(t, "", append([]string{"run", spec, "--out", out}, common...)...); code != 1 || !strings.Contains(stderr, "approved.yaml does not exist") || !strings.Contains(stderr, "hint: give --approved") {
		t.Errorf("run without an approved list: exit %d, %q", code, stderr)
	}
}

func TestRunRefusesBadUse(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "job.yaml", "--passphrase", "--recipient", "age1x"}, "give --recipient or --passphrase, not both"},
		{[]string{"run", "job.yaml", "--replace-recipients"}, "--replace-recipients needs at least one --recipient"},
		{[]string{"run", "a.yaml", "b.yaml"}, "run takes one job spec file"},
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
	for _, want := range []string{"The cohort matches the", "signature and all 3 files verified", "Decrypted par_sluten.csv.zst.age",
		"age -d -i " + filepath.Join(dir, "researcher-key.txt") + " " + dir} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	csv, err := os.ReadFile(filepath.Join(dir, "decrypted", "par_sluten.csv"))
	if err != nil || !bytes.HasPrefix(csv, []byte("LopNr;")) {
		t.Fatalf("decrypted file: %v", err)
	}
}

// TestExtractorCannotRunAnUnapprovedReading: lopnr run checks the job
// against the approved list before anything runs (no key store, no
// delivery): a source read otherwise than its approved profile reads it
// (issue 15: header: false with the spec's own columns, which delivered
// an unapproved column under an approved name) is refused naming the
// field.
func TestExtractorCannotRunAnUnapprovedReading(t *testing.T) {
	j := newCLIJob(t, 300, 5)
	t.Setenv("LOPNR_VAULT_ADDR", "")
	t.Setenv("VAULT_ADDR", "")
	t.Setenv("LOPNR_S3_ENDPOINT", "")
	spec := filepath.Join(j.dir, "job.yaml")
	raw, _ := os.ReadFile(spec)
	// The file's DIA1 (not approved) named HDIA (approved, truncated).
	cols := "PNR, INDATUM, UTDATUM, DIA1, HDIA"
	for i := 2; i <= 30; i++ {
		cols += fmt.Sprintf(", DIA%d", i)
	}
	bad := strings.Replace(string(raw), "path: par_sluten.csv\n", "path: par_sluten.csv\n    header: false\n    columns: ["+cols+", OP]\n", 1)
	os.WriteFile(spec, []byte(bad), 0o600)
	ks, out := filepath.Join(j.dir, "ks"), filepath.Join(j.dir, "out")
	_, stderr, code := runLopnr(t, "", "run", spec, "--keystore", ks, "--signing-key", filepath.Join(j.dir, "signing.key"), "--out", out,
		"--approved", j.approved, "--recipient", j.id.Recipient().String(), "-q")
	if code != 1 || !strings.Contains(stderr, "sources[3].header: ") || !strings.Contains(stderr, "sources[3].columns: ") {
		t.Fatalf("run: exit %d, %q; want it refused naming sources[3].header and .columns", code, stderr)
	}
	for _, dir := range []string{ks, out} {
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("%s exists: something ran", dir)
		}
	}
}
