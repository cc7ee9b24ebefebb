package main

import (
	"context"
	"crypto/tls"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/lopnr/lopnr/extract"
	"github.com/lopnr/lopnr/internal/synth"
	"github.com/lopnr/lopnr/internal/testpki"
	"github.com/lopnr/lopnr/keystore"
	"github.com/lopnr/lopnr/keystore/local"
	"github.com/lopnr/lopnr/server"
	"github.com/lopnr/lopnr/server/audit"
	"github.com/lopnr/lopnr/server/authz"
)

const cliPolicy = `identities:
  "CN=drift,O=Region Test":    {global: [admin]}
  "CN=anna,O=Region Test":     {roles: {cli-1: [extractor, approver]}}
  "CN=bo,O=Region Test":       {roles: {cli-1: [approver]}}
  "CN=forskare,O=Region Test": {roles: {cli-1: [researcher]}}
  "CN=revisor,O=Region Test":  {global: [auditor]}
`

// TestClientAgainstServer runs the lopnr commands as the people in
// docs/client.md would, against a real lopnr server (in this process, over
// mutual TLS, with a local key store and a delivery directory): the client
// and the server agree on the wire, and the four-eyes rule shows in the
// CLI's exit codes and messages.
func TestClientAgainstServer(t *testing.T) {
	clientEnv(t)
	dir := t.TempDir()
	ca := testpki.NewCA(t)
	t.Setenv("LOPNR_CA", ca.WriteCA(t, dir))
	as := func(name string, args ...string) []string {
		cert, key := testpki.WriteKeyPair(t, dir, name, ca.Issue(t, name, false))
		return append(args, "--cert", cert, "--key", key)
	}

	policyFile := filepath.Join(dir, "policy.yaml")
	os.WriteFile(policyFile, []byte(cliPolicy), 0o600)
	policy, err := authz.Load(policyFile)
	if err != nil {
		t.Fatal(err)
	}
	alog, err := audit.Open(filepath.Join(dir, "audit.log"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer alog.Close()
	store, err := local.Open(filepath.Join(dir, "keystore"))
	if err != nil {
		t.Fatal(err)
	}
	sink, err := extract.NewDirSink(filepath.Join(dir, "deliveries"))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := extract.LoadOrCreateSigner(filepath.Join(dir, "signing.key"))
	if err != nil {
		t.Fatal(err)
	}
	sources := filepath.Join(dir, "sources")
	srv, err := server.New(server.Config{DataDir: filepath.Join(dir, "data"), SourceRoot: sources, Policy: policy, Audit: alog,
		Keys: keystore.New(store, keystore.Options{}), Sink: sink, Signer: signer, MemoryLimit: "1GB",
		TLS: &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "lopnrd", true)}, ClientCAs: ca.Pool(),
			ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, l) }()
	defer func() { cancel(); <-served }()
	t.Setenv("LOPNR_SERVER", l.Addr().String())

	if _, err := synth.Generate(sources, synth.Options{Persons: 300, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	spec, _ := os.ReadFile(filepath.Join(sources, synth.JobFile))
	jobFile := filepath.Join(dir, "job.yaml")
	os.WriteFile(jobFile, regexp.MustCompile(`(?m)^project: .*$`).ReplaceAll(spec, []byte("project: cli-1")), 0o600)
	approved := filepath.Join(dir, "approved.yaml")
	os.WriteFile(approved, []byte(synth.Approved), 0o600)
	researcher, _ := age.GenerateX25519Identity()
	keyFile := filepath.Join(dir, "researcher.txt")
	os.WriteFile(keyFile, []byte(researcher.String()+"\n"), 0o600)

	ok := func(who string, args ...string) string {
		t.Helper()
		out, stderr, code := runLopnr(t, "", as(who, args...)...)
		if code != 0 {
			t.Fatalf("%s: lopnr %s: exit %d\n%s%s", who, strings.Join(args, " "), code, out, stderr)
		}
		return out
	}
	fails := func(who, want string, args ...string) {
		t.Helper()
		out, stderr, code := runLopnr(t, "", as(who, args...)...)
		if code != 1 || !strings.Contains(stderr, want) {
			t.Fatalf("%s: lopnr %s: exit %d, %q; want exit 1 with %q\n%s", who, strings.Join(args, " "), code, stderr, want, out)
		}
	}

	ok("drift", "projects", "create", "cli-1", "--epm-dnr", "2026-00000-01", "--approved", approved, "--recipient", researcher.Recipient().String())
	if out := ok("bo", "projects", "get", "cli-1"); !strings.Contains(out, "2026-00000-01") {
		t.Errorf("projects get: %q lacks the EPM dnr", out)
	}
	fails("forskare", "PermissionDenied", "submit", jobFile)
	out := ok("anna", "submit", jobFile, "--watch")
	m := regexp.MustCompile(`Job (\S+) succeeded: delivery (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("submit --watch: %q, want the job to succeed", out)
	}
	delivery := m[2]
	if out := ok("anna", "deliveries", "--project", "cli-1"); !strings.Contains(out, delivery) {
		t.Errorf("deliveries: %q lacks %s", out, delivery)
	}
	fails("anna", "four eyes", "release", "cli-1", delivery)
	fails("forskare", "not released", "presign", "cli-1", delivery)
	ok("bo", "release", "cli-1", delivery)
	links := ok("forskare", "presign", "cli-1", delivery, "par_sluten.csv.zst.age", "--expiry", "1h")
	fields := strings.Split(strings.TrimSpace(links), "\t")
	if len(fields) != 3 || fields[0] != "par_sluten.csv.zst.age" {
		t.Fatalf("presign: %q, want NAME<TAB>URL<TAB>(until …)", links)
	}
	u, err := url.Parse(fields[1])
	if err != nil || u.Scheme != "file" {
		t.Fatalf("presign URL %q: want a file:// URL from the directory sink", fields[1])
	}
	plain := t.TempDir()
	if _, stderr, code := runLopnr(t, "", "decrypt", "-i", keyFile, "-o", plain, u.Path); code != 0 {
		t.Fatalf("decrypt: %s", stderr)
	}
	if b, err := os.ReadFile(filepath.Join(plain, "par_sluten.csv")); err != nil || !strings.HasPrefix(string(b), "LopNr;") {
		t.Errorf("decrypted file: %v, want the LopNr column first", err)
	}
	if out := ok("revisor", "audit", "list", "--project", "cli-1"); !strings.Contains(out, "delivery.release") || !strings.Contains(out, "denied") {
		t.Errorf("audit list lacks the refused release:\n%s", out)
	}
	ok("revisor", "audit", "verify")
	fails("anna", "PermissionDenied", "audit", "verify")

	// A changed byte in the audit log is named by the server's verify.
	b, _ := os.ReadFile(filepath.Join(dir, "audit.log"))
	i := strings.Index(string(b), `"outcome":"denied"`)
	b[i+len(`"outcome":"d`)] = 'D'
	os.WriteFile(filepath.Join(dir, "audit.log"), b, 0o600)
	fails("revisor", "altered", "audit", "verify")
}
