package main

import (
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

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
