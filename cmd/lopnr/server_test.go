package main

import (
	"context"
	"crypto/tls"
	"log/slog"
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
	"github.com/lopnr/lopnr/internal/testenv"
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

// cliServer is a lopnr server in this process, over mutual TLS, for tests
// that run the client's commands against it as the people of a policy.
type cliServer struct {
	t         *testing.T
	dir       string
	dataDir   string
	sources   string
	auditFile string
	ca        *testpki.CA
	logs      testenv.SyncBuffer
}

// startCLIServer serves with the policy given, and the key store and sink
// given (nil: a local key store and a delivery directory in the test's
// directory); it sets LOPNR_SERVER and LOPNR_CA and stops with the test.
func startCLIServer(t *testing.T, policy string, keys *keystore.Keystore, sink server.Sink) *cliServer {
	t.Helper()
	clientEnv(t)
	dir := t.TempDir()
	s := &cliServer{t: t, dir: dir, dataDir: filepath.Join(dir, "data"), sources: filepath.Join(dir, "sources"),
		auditFile: filepath.Join(dir, "audit.log"), ca: testpki.NewCA(t)}
	t.Setenv("LOPNR_CA", s.ca.WriteCA(t, dir))
	policyFile := filepath.Join(dir, "policy.yaml")
	os.WriteFile(policyFile, []byte(policy), 0o600)
	pol, err := authz.Load(policyFile)
	if err != nil {
		t.Fatal(err)
	}
	alog, err := audit.Open(s.auditFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { alog.Close() })
	if keys == nil {
		store, err := local.Open(filepath.Join(dir, "keystore"))
		if err != nil {
			t.Fatal(err)
		}
		keys = keystore.New(store, keystore.Options{})
	}
	if sink == nil {
		if sink, err = extract.NewDirSink(filepath.Join(dir, "deliveries")); err != nil {
			t.Fatal(err)
		}
	}
	signer, err := extract.LoadOrCreateSigner(filepath.Join(dir, "signing.key"))
	if err != nil {
		t.Fatal(err)
	}
	recordKey, err := keys.ServiceKey(context.Background(), server.RecordKeyName, server.NewRecordKey)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{DataDir: s.dataDir, SourceRoot: s.sources, Policy: pol, Audit: alog,
		Keys: keys, Sink: sink, Signer: signer, RecordKey: recordKey, MemoryLimit: "1GB", Logger: slog.New(slog.NewJSONHandler(&s.logs, nil)),
		TLS: &tls.Config{Certificates: []tls.Certificate{s.ca.Issue(t, "lopnrd", true)}, ClientCAs: s.ca.Pool(),
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
	t.Cleanup(func() { cancel(); <-served })
	t.Setenv("LOPNR_SERVER", l.Addr().String())
	return s
}

// as returns args with the named person's certificate and key.
func (s *cliServer) as(name string, args ...string) []string {
	s.t.Helper()
	cert, key := testpki.WriteKeyPair(s.t, s.dir, name, s.ca.Issue(s.t, name, false))
	return append(args, "--cert", cert, "--key", key)
}

// ok runs a command as who and returns its output; it must succeed.
func (s *cliServer) ok(who string, args ...string) string {
	s.t.Helper()
	out, stderr, code := runLopnr(s.t, "", s.as(who, args...)...)
	if code != 0 {
		s.t.Fatalf("%s: lopnr %s: exit %d\n%s%s", who, strings.Join(args, " "), code, out, stderr)
	}
	return out
}

// fails runs a command as who; it must exit 1 with want in its error.
func (s *cliServer) fails(who, want string, args ...string) {
	s.t.Helper()
	out, stderr, code := runLopnr(s.t, "", s.as(who, args...)...)
	if code != 1 || !strings.Contains(stderr, want) {
		s.t.Fatalf("%s: lopnr %s: exit %d, %q; want exit 1 with %q\n%s", who, strings.Join(args, " "), code, stderr, want, out)
	}
}

// approve approves every pending change of a project as who, with lopnr
// projects changes and approve: the second person of every test that
// creates a project or registers a partner.
func (s *cliServer) approve(who, project string) {
	s.t.Helper()
	out := s.ok(who, "projects", "changes", project)
	for _, block := range strings.Split(out, "\n\n") {
		m := regexp.MustCompile(`(?m)^Change\s+(\S+) of project`).FindStringSubmatch(block)
		if m != nil && regexp.MustCompile(`(?m)^State\s+pending$`).MatchString(block) {
			s.ok(who, "projects", "approve", project, m[1])
		}
	}
}

// TestClientAgainstServer runs the lopnr commands as the people in
// docs/client.md would, against a real lopnr server (in this process, over
// mutual TLS, with a local key store and a delivery directory): the client
// and the server agree on the wire, and the four-eyes rule shows in the
// CLI's exit codes and messages.
func TestClientAgainstServer(t *testing.T) {
	s := startCLIServer(t, cliPolicy, nil, nil)
	dir, sources := s.dir, filepath.Join(s.sources, "cli-1")
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

	s.ok("drift", "projects", "create", "cli-1", "--epm-dnr", "2026-00000-01", "--approved", approved, "--recipient", researcher.Recipient().String())
	s.fails("anna", "no approved rules yet", "submit", jobFile)
	s.fails("drift", "PermissionDenied", "projects", "approve", "cli-1", "c1")
	s.approve("bo", "cli-1")
	if out := s.ok("bo", "projects", "get", "cli-1"); !strings.Contains(out, "2026-00000-01") {
		t.Errorf("projects get: %q lacks the EPM dnr", out)
	}
	s.fails("forskare", "PermissionDenied", "submit", jobFile)
	out := s.ok("anna", "submit", jobFile, "--watch")
	m := regexp.MustCompile(`Job (\S+) succeeded: delivery (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("submit --watch: %q, want the job to succeed", out)
	}
	delivery := m[2]
	if out := s.ok("anna", "deliveries", "--project", "cli-1"); !strings.Contains(out, delivery) {
		t.Errorf("deliveries: %q lacks %s", out, delivery)
	}
	s.fails("anna", "four eyes", "release", "cli-1", delivery)
	s.fails("forskare", "not released", "presign", "cli-1", delivery)
	s.ok("bo", "release", "cli-1", delivery)
	links := s.ok("forskare", "presign", "cli-1", delivery, "par_sluten.csv.zst.age", "--expiry", "1h")
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
	if out := s.ok("revisor", "audit", "list", "--project", "cli-1"); !strings.Contains(out, "delivery.release") || !strings.Contains(out, "denied") {
		t.Errorf("audit list lacks the refused release:\n%s", out)
	}
	s.ok("revisor", "audit", "verify")
	s.fails("anna", "PermissionDenied", "audit", "verify")

	// A changed byte in the audit log is named by the server's verify.
	b, _ := os.ReadFile(s.auditFile)
	i := strings.Index(string(b), `"outcome":"denied"`)
	b[i+len(`"outcome":"d`)] = 'D'
	os.WriteFile(s.auditFile, b, 0o600)
	s.fails("revisor", "altered", "audit", "verify")
}
