// Package testenv gives integration tests the addresses of the real servers
// that the dev stack (deploy/dev) started, and decides what happens when
// they are missing.
//
// A test asks for a server with [Vault] or [S3]. When the server's variables
// are unset, the test is skipped on a developer's plain `go test ./...`, but
// fails when CI=true or LOPNR_INTEGRATION=1 (which `make test` sets): there a
// missing server is a failure, never a skip.
package testenv

import (
	"net/url"
	"os"
	"testing"
)

// VaultEnv is how to reach the OpenBao (or Vault) dev server.
type VaultEnv struct {
	Addr  string // http://127.0.0.1:PORT
	Token string // a root token of the dev server
}

// S3Env is how to reach the S3 gateway.
type S3Env struct {
	Endpoint  string // host:port, as minio-go wants it
	Secure    bool   // https
	AccessKey string
	SecretKey string
	Region    string
}

// Vault returns the OpenBao dev server from LOPNR_VAULT_ADDR and
// LOPNR_VAULT_TOKEN.
func Vault(t testing.TB) VaultEnv {
	t.Helper()
	vars := lookup(t, "LOPNR_VAULT_ADDR", "LOPNR_VAULT_TOKEN")
	return VaultEnv{Addr: vars[0], Token: vars[1]}
}

// S3 returns the S3 gateway from LOPNR_S3_ENDPOINT (a URL),
// LOPNR_S3_ACCESS_KEY, LOPNR_S3_SECRET_KEY and LOPNR_S3_REGION (default
// us-east-1).
func S3(t testing.TB) S3Env {
	t.Helper()
	vars := lookup(t, "LOPNR_S3_ENDPOINT", "LOPNR_S3_ACCESS_KEY", "LOPNR_S3_SECRET_KEY")
	u, err := url.Parse(vars[0])
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		t.Fatalf("LOPNR_S3_ENDPOINT=%q: want a URL such as http://127.0.0.1:7070", vars[0])
	}
	region := os.Getenv("LOPNR_S3_REGION")
	if region == "" {
		region = "us-east-1"
	}
	return S3Env{Endpoint: u.Host, Secure: u.Scheme == "https", AccessKey: vars[1], SecretKey: vars[2], Region: region}
}

// BaoBinary returns the path of the OpenBao binary the dev stack built,
// from LOPNR_BAO_BIN, for tests that start a server of their own.
func BaoBinary(t testing.TB) string {
	t.Helper()
	return lookup(t, "LOPNR_BAO_BIN")[0]
}

// Required reports whether integration tests must run rather than skip.
func Required() bool {
	return os.Getenv("CI") == "true" || os.Getenv("LOPNR_INTEGRATION") == "1"
}

// lookup returns the values of the named variables, or skips or fails the
// test when any is unset.
func lookup(t testing.TB, names ...string) []string {
	t.Helper()
	vals := make([]string, len(names))
	var missing []string
	for i, n := range names {
		vals[i] = os.Getenv(n)
		if vals[i] == "" {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return vals
	}
	if Required() {
		t.Fatalf("integration server not configured: %v unset (run `make test`, which starts the dev stack)", missing)
		return nil
	}
	t.Skipf("integration server not configured: %v unset; `make test` runs this test against the real server", missing)
	return nil
}
