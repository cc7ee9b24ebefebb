package server

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/lopnr/lopnr/extract"
	"github.com/lopnr/lopnr/internal/testenv"
	"github.com/lopnr/lopnr/internal/testpki"
	"github.com/lopnr/lopnr/keystore"
	"github.com/lopnr/lopnr/keystore/local"
	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
	"github.com/lopnr/lopnr/server/audit"
	"github.com/lopnr/lopnr/server/authz"
)

// fixture is a server with a local key store and a directory sink, served
// on a loopback port, and the CA that signs its callers' certificates.
type fixture struct {
	t       *testing.T
	dir     string
	addr    string
	ca      *testpki.CA
	srv     *Server
	logs    *testenv.SyncBuffer
	auditFn string
}

// testPolicy gives roles to the test's identities.
const testPolicy = `identities:
  "CN=anna,O=Region Test":   {roles: {p1: [extractor]}}
  "CN=bo,O=Region Test":     {roles: {p1: [approver, keyholder]}}
  "CN=cecilia,O=Region Test": {roles: {p1: [keyholder, approver]}}
  "CN=forskare,O=Region Test": {roles: {p1: [researcher]}}
  "CN=annan,O=Region Test":  {roles: {p2: [researcher]}}
  "CN=revisor,O=Region Test": {global: [auditor]}
  "CN=drift,O=Region Test":  {global: [admin]}
  "CN=scb,O=Region Test":    {roles: {p1: [partner]}}
  "CN=sos,O=Region Test":    {roles: {p1: [partner]}}
`

// newFixture starts a server over mutual TLS (plaintext with dev).
func newFixture(t *testing.T, dev bool) *fixture {
	t.Helper()
	return newFixtureWith(t, dev, testPolicy, nil)
}

// newFixtureWith starts a server with a policy, and edit (when not nil)
// changes its configuration first.
func newFixtureWith(t *testing.T, dev bool, policyText string, edit func(*Config)) *fixture {
	t.Helper()
	f := &fixture{t: t, dir: t.TempDir(), ca: testpki.NewCA(t), logs: &testenv.SyncBuffer{}}
	policyFile := filepath.Join(f.dir, "policy.yaml")
	if err := os.WriteFile(policyFile, []byte(policyText), 0o600); err != nil {
		t.Fatal(err)
	}
	policy, err := authz.Load(policyFile)
	if err != nil {
		t.Fatal(err)
	}
	f.auditFn = filepath.Join(f.dir, "audit.log")
	alog, err := audit.Open(f.auditFn, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { alog.Close() })
	store, err := local.Open(filepath.Join(f.dir, "keystore"))
	if err != nil {
		t.Fatal(err)
	}
	sink, err := extract.NewDirSink(filepath.Join(f.dir, "deliveries"))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := extract.LoadOrCreateSigner(filepath.Join(f.dir, "signing.key"))
	if err != nil {
		t.Fatal(err)
	}
	keys := keystore.New(store, keystore.Options{})
	cfg := Config{DataDir: filepath.Join(f.dir, "data"), SourceRoot: filepath.Join(f.dir, "sources"), Policy: policy, Audit: alog,
		Keys: keys, Sink: sink, Signer: signer, RecordKey: recordKey(t, keys), MemoryLimit: "1GB",
		Logger: slog.New(slog.NewJSONHandler(f.logs, nil))}
	if !dev {
		cert := f.ca.Issue(t, "lopnrd", true)
		cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: f.ca.Pool(),
			ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}
	}
	if edit != nil {
		edit(&cfg)
	}
	if f.srv, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = l.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return f
}

// recordKey is the key that seals a test server's records, taken from its
// key store as lopnrd takes it.
func recordKey(t *testing.T, keys *keystore.Keystore) []byte {
	t.Helper()
	k, err := keys.ServiceKey(context.Background(), RecordKeyName, NewRecordKey)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// conn returns a connection as the named identity ("" for plaintext).
func (f *fixture) conn(name string) *grpc.ClientConn {
	f.t.Helper()
	creds := insecure.NewCredentials()
	if name != "" {
		creds = credentials.NewTLS(f.ca.ClientTLS(f.ca.Issue(f.t, name, false)))
	}
	c, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { c.Close() })
	return c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

func wantCode(t *testing.T, what string, err error, code codes.Code, msg string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code || !strings.Contains(st.Message(), msg) {
		t.Fatalf("%s: %v, want %v with a message containing %q", what, err, code, msg)
	}
}

// approve approves every pending change of a project as the named
// approver: the second person each test that creates a project or
// registers a partner needs.
func (f *fixture) approve(project, approver string) {
	f.t.Helper()
	c := lopnrv1.NewProjectServiceClient(f.conn(approver))
	changes, err := c.ListChanges(ctx(f.t), &lopnrv1.ListChangesRequest{Project: project})
	if err != nil {
		f.t.Fatalf("ListChanges as %s: %v", approver, err)
	}
	for _, ch := range changes.Changes {
		if ch.State != lopnrv1.ChangeState_CHANGE_STATE_PENDING {
			continue
		}
		if _, err := c.ApproveChange(ctx(f.t), &lopnrv1.ApproveChangeRequest{Project: project, Id: ch.Id}); err != nil {
			f.t.Fatalf("ApproveChange %s as %s: %v", ch.Id, approver, err)
		}
	}
}

func researcherKey(t *testing.T) *age.HybridIdentity {
	id, err := age.GenerateHybridIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestHealthAndInfoPlaintext(t *testing.T) {
	f := newFixture(t, true)
	c := f.conn("")
	h, err := healthpb.NewHealthClient(c).Check(ctx(t), &healthpb.HealthCheckRequest{})
	if err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health check: %v, %v", h, err)
	}
	// Without TLS every caller is DevIdentity, which the policy does not
	// know: the system service needs no role, the others are refused.
	info, err := lopnrv1.NewSystemServiceClient(c).GetInfo(ctx(t), &lopnrv1.GetInfoRequest{})
	if err != nil || info.Version == "" || info.GoVersion == "" {
		t.Fatalf("GetInfo = %v, %v; want a version and a Go version", info, err)
	}
	_, err = lopnrv1.NewProjectServiceClient(c).GetProject(ctx(t), &lopnrv1.GetProjectRequest{Id: "p1"})
	wantCode(t, "GetProject as the unknown dev identity", err, codes.PermissionDenied, DevIdentity)
}

func TestMutualTLSRequiresClientCertificate(t *testing.T) {
	f := newFixture(t, false)
	check := func(creds credentials.TransportCredentials) error {
		c, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = healthpb.NewHealthClient(c).Check(ctx(t), &healthpb.HealthCheckRequest{})
		return err
	}
	if err := check(credentials.NewTLS(&tls.Config{RootCAs: f.ca.Pool()})); err == nil {
		t.Fatal("a client without a certificate was served")
	}
	if err := check(credentials.NewTLS(f.ca.ClientTLS(f.ca.Issue(t, "anna", false)))); err != nil {
		t.Fatalf("a client with a certificate from the CA was refused: %v", err)
	}
	other := testpki.NewCA(t)
	if err := check(credentials.NewTLS(&tls.Config{RootCAs: f.ca.Pool(), Certificates: []tls.Certificate{other.Issue(t, "anna", false)}})); err == nil {
		t.Fatal("a client with a certificate from another CA was served")
	}
}

func TestMutualTLSErrorsNameTheFile(t *testing.T) {
	_, err := MutualTLS("/nonexistent/cert.pem", "/nonexistent/key.pem", "/nonexistent/ca.pem")
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/cert.pem") {
		t.Fatalf("err = %v, want one naming the certificate file", err)
	}
}

// TestEveryMethodHasARule fails when a method is served that the
// interceptor has no authorisation rule for (it would refuse every call).
func TestEveryMethodHasARule(t *testing.T) {
	f := newFixture(t, true)
	n := 0
	for svc, info := range f.srv.grpc.GetServiceInfo() {
		if !strings.HasPrefix(svc, "lopnr.") {
			continue
		}
		for _, m := range info.Methods {
			n++
			full := "/" + svc + "/" + m.Name
			r, ok := rules[full]
			if !ok {
				t.Errorf("%s has no rule", full)
				continue
			}
			if !strings.Contains(strings.Join(func() []string {
				var out []string
				for _, a := range authz.Actions() {
					out = append(out, string(a))
				}
				return out
			}(), " "), string(r.action)) {
				t.Errorf("%s: action %q is not one authz knows", full, r.action)
			}
		}
	}
	if n < 20 {
		t.Errorf("found %d lopnr methods, want the whole API", n)
	}
}

// TestReflectionListsTheAPI is what grpcurl's `list` asks: server
// reflection names every lopnr service, health among them.
func TestReflectionListsTheAPI(t *testing.T) {
	f := newFixture(t, false)
	stream, err := reflectionpb.NewServerReflectionClient(f.conn("anna")).ServerReflectionInfo(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.Name)
	}
	for _, want := range []string{"grpc.health.v1.Health", "lopnr.v1.ProjectService", "lopnr.v1.JobService", "lopnr.v1.DeliveryService",
		"lopnr.v1.KeyService", "lopnr.v1.AuditService", "lopnr.v1.PartnerService", "lopnr.v1.SystemService"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v, without %s", names, want)
		}
	}
}
