package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/lopnr/lopnr/internal/testenv"
)

// tamper is what someone with write access to a delivery does to its
// plaintext files: a codebook that says a column holds something else,
// a README that tells the researcher to send the data somewhere.
var tamper = map[string]string{
	"lmed.codebook.csv": "ATC;text;keep;ATC;the patient's personnummer, hashed\n",
	"README.txt":        "\nSend the decrypted files to data@example.org for a quality check.\n",
}

// TestOperatorCannotAlterReadmeOrCodebookUnseen replays the README and
// codebook part of finding 11 of issue 15: an operator with disk access
// edits a delivery's codebook or README. lopnr verify checked only the
// data files; the signed manifest now lists both, and verify fails naming
// the file.
func TestOperatorCannotAlterReadmeOrCodebookUnseen(t *testing.T) {
	j := newCLIJob(t, 300, 13)
	t.Setenv("LOPNR_VAULT_ADDR", "")
	t.Setenv("VAULT_ADDR", "")
	t.Setenv("LOPNR_S3_ENDPOINT", "")
	out, stderr, code := runLopnr(t, "", "run", filepath.Join(j.dir, "job.yaml"), "--approved", j.approved, "--recipient", j.id.Recipient().String(),
		"--keystore", filepath.Join(j.dir, "ks"), "--signing-key", filepath.Join(j.dir, "sk"), "--out", filepath.Join(j.dir, "out"), "-q")
	if code != 0 {
		t.Fatalf("run: %s", stderr)
	}
	m := regexp.MustCompile(`Delivery (\S+) of project (\S+): `).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("run output %q", out)
	}
	delivery := filepath.Join(j.dir, "out", m[2], m[1])
	pub, _ := os.ReadFile(filepath.Join(j.dir, "sk.pub"))
	key := strings.TrimSpace(string(pub))
	out, stderr, code = runLopnr(t, "", "verify", "--key", key, delivery)
	if code != 0 || !strings.Contains(out, "ok       README.txt") || !strings.Contains(out, "ok       lmed.codebook.csv") {
		t.Fatalf("verify of the untouched delivery: exit %d: %s%s", code, out, stderr)
	}
	for name, extra := range tamper {
		path := filepath.Join(delivery, name)
		orig, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(path, append(append([]byte(nil), orig...), extra...), 0o600)
		out, stderr, code := runLopnr(t, "", "verify", "--key", key, delivery)
		if code == 0 || !strings.Contains(out, "ALTERED  "+name) || !strings.Contains(stderr, name) {
			t.Errorf("verify after %s was edited: exit %d: %s%s; want it to fail naming the file", name, code, out, stderr)
		}
		os.WriteFile(path, orig, 0o600)
	}
}

// TestBucketOperatorCannotAlterReadmeOrCodebookUnseen is the same attack
// by an operator with access to the bucket: the researcher downloads the
// delivery through lopnr presign --download and verifies it.
func TestBucketOperatorCannotAlterReadmeOrCodebookUnseen(t *testing.T) {
	env := testenv.S3(t)
	clientEnv(t)
	j := newCLIJob(t, 300, 17)
	t.Setenv("LOPNR_VAULT_ADDR", "")
	t.Setenv("VAULT_ADDR", "")
	scheme := "http://"
	if env.Secure {
		scheme = "https://"
	}
	t.Setenv("LOPNR_S3_ENDPOINT", scheme+env.Endpoint)
	t.Setenv("LOPNR_S3_ACCESS_KEY", env.AccessKey)
	t.Setenv("LOPNR_S3_SECRET_KEY", env.SecretKey)
	t.Setenv("LOPNR_S3_BUCKET", "lopnr-cli")
	t.Setenv("LOPNR_S3_PREFIX", "")
	out, stderr, code := runLopnr(t, "", "run", filepath.Join(j.dir, "job.yaml"), "--approved", j.approved, "--recipient", j.id.Recipient().String(),
		"--keystore", filepath.Join(j.dir, "ks"), "--signing-key", filepath.Join(j.dir, "sk"), "-q")
	if code != 0 {
		t.Fatalf("run: %s", stderr)
	}
	m := regexp.MustCompile(`Delivery (\S+) of project ([^:\s]+): 3 files at s3://lopnr-cli/(\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("run output %q", out)
	}
	c, err := minio.New(env.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(env.AccessKey, env.SecretKey, ""), Secure: env.Secure, Region: env.Region})
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := os.ReadFile(filepath.Join(j.dir, "sk.pub"))
	key := strings.TrimSpace(string(pub))
	files := []string{"par_sluten.csv.zst.age", "lmed.csv.zst.age", "dors.csv.zst.age", "par_sluten.codebook.csv", "lmed.codebook.csv",
		"dors.codebook.csv", "README.txt", "manifest.json", "manifest.json.sig"}
	for name, extra := range tamper {
		obj, err := c.GetObject(context.Background(), "lopnr-cli", m[3]+name, minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		orig, err := io.ReadAll(obj)
		obj.Close()
		if err != nil {
			t.Fatal(err)
		}
		edited := string(orig) + extra
		if _, err := c.PutObject(context.Background(), "lopnr-cli", m[3]+name, strings.NewReader(edited), int64(len(edited)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(t.TempDir(), "download")
		if _, stderr, code := runLopnr(t, "", append([]string{"presign", m[2], m[1], "--download", dir}, files...)...); code != 0 {
			t.Fatalf("presign --download: %s", stderr)
		}
		out, stderr, code := runLopnr(t, "", "verify", "--key", key, dir)
		if code == 0 || !strings.Contains(out, "ALTERED  "+name) || !strings.Contains(stderr, name) {
			t.Errorf("verify after %s was edited in the bucket: exit %d: %s%s; want it to fail naming the file", name, code, out, stderr)
		}
		if _, err := c.PutObject(context.Background(), "lopnr-cli", m[3]+name, bytes.NewReader(orig), int64(len(orig)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}
