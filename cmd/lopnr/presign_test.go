package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lopnr/lopnr/extract"
	"github.com/lopnr/lopnr/internal/testenv"
)

// TestRunToS3AndPresign delivers to the real S3 gateway with lopnr run and
// fetches a file through the link lopnr presign prints.
func TestRunToS3AndPresign(t *testing.T) {
	env := testenv.S3(t)
	clientEnv(t) // no lopnrd: presign signs with the S3 keys
	j := newCLIJob(t, 500, 9)
	dir, approved, id := j.dir, j.approved, j.id
	t.Setenv("LOPNR_VAULT_ADDR", "")
	t.Setenv("VAULT_ADDR", "")
	t.Setenv("LOPNR_S3_ENDPOINT", "http://"+env.Endpoint)
	t.Setenv("LOPNR_S3_ACCESS_KEY", env.AccessKey)
	t.Setenv("LOPNR_S3_SECRET_KEY", env.SecretKey)
	t.Setenv("LOPNR_S3_BUCKET", "lopnr-cli")
	out, stderr, code := runLopnr(t, "", "run", filepath.Join(dir, "job.yaml"), "--approved", approved, "--recipient", id.Recipient().String(),
		"--keystore", filepath.Join(dir, "ks"), "--signing-key", filepath.Join(dir, "sk"), "-q")
	if code != 0 {
		t.Fatalf("run: %s", stderr)
	}
	m := regexp.MustCompile(`Delivery (\S+) of project ([^:\s]+): 3 files at s3://`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("run output %q", out)
	}
	out, stderr, code = runLopnr(t, "", "presign", m[2], m[1], "lmed.csv.zst.age", "--expiry", "1h")
	if code != 0 {
		t.Fatalf("presign: %s", stderr)
	}
	url := strings.Split(out, "\t")[1]
	resp, err := http.Get(url)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET: %v %v", resp, err)
	}
	resp.Body.Close()
	if _, stderr, code := runLopnr(t, "", "presign", m[2], m[1], "lmed.csv.zst.age", "--expiry", "200h"); code == 0 || !strings.Contains(stderr, "7 days") {
		t.Fatalf("an 8-day link: %s", stderr)
	}
}

// TestDirectPresignRefusesAStagedDelivery replays finding 6 of issue 15
// with lopnr presign's direct mode: an operator (or a researcher who got
// hold of the S3 keys) signs links with the keys for a delivery that waits
// for release. Nothing is signed: not the files at their published keys,
// which hold nothing, and not a staged one. Once released, the same
// command gives links that download.
func TestDirectPresignRefusesAStagedDelivery(t *testing.T) {
	env := testenv.S3(t)
	clientEnv(t)
	endpoint := "http://" + env.Endpoint
	if env.Secure {
		endpoint = "https://" + env.Endpoint
	}
	t.Setenv("LOPNR_S3_ENDPOINT", endpoint)
	t.Setenv("LOPNR_S3_ACCESS_KEY", env.AccessKey)
	t.Setenv("LOPNR_S3_SECRET_KEY", env.SecretKey)
	t.Setenv("LOPNR_S3_BUCKET", "lopnr-cli")
	t.Setenv("LOPNR_S3_PREFIX", "")
	ctx := context.Background()
	sink, err := extract.NewS3Sink(ctx, extract.S3Config{Endpoint: endpoint, AccessKey: env.AccessKey, SecretKey: env.SecretKey,
		Region: env.Region, Bucket: "lopnr-cli"})
	if err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("staged-%d", time.Now().UnixNano())
	st, err := sink.Begin(ctx, "p1", id)
	if err != nil {
		t.Fatal(err)
	}
	files := []string{"lmed.csv.zst.age", "README.txt", "manifest.json", "manifest.json.sig"}
	for _, name := range files {
		w, err := st.Create(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, "encrypted to the researchers\n")
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		out, stderr, code := runLopnr(t, "", "presign", "p1", id, name)
		if code == 0 || out != "" || !strings.Contains(stderr, "not published") || !strings.Contains(stderr, "lopnr release") {
			t.Fatalf("presign of staged %s: exit %d, %q, %q; want it refused with a hint", name, code, out, stderr)
		}
	}
	if err := sink.Release(ctx, "p1", id); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := runLopnr(t, "", "presign", "p1", id, "lmed.csv.zst.age")
	if code != 0 {
		t.Fatalf("presign after release: %s", stderr)
	}
	resp, err := http.Get(strings.Split(out, "\t")[1])
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET after release: %v %v", resp, err)
	}
	resp.Body.Close()
}
