package main

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"filippo.io/age"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/lopnr/lopnr/extract"
	"github.com/lopnr/lopnr/internal/synth"
	"github.com/lopnr/lopnr/internal/testenv"
	"github.com/lopnr/lopnr/keystore"
	"github.com/lopnr/lopnr/keystore/local"
	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
	"github.com/lopnr/lopnr/server"
)

// TestOperatorCannotResignAnAlteredDelivery: an operator who holds the data
// directory (but not the key store: OpenBao, or a local store kept
// elsewhere) alters a released delivery's README — where it tells the
// researcher how to read the files — and signs its manifest again with the
// signing key found in the data directory. lopnrd used DATA-DIR/signing.key
// by default, so `lopnr verify` passed (issue 15's review, "what got
// through", item 2). Now, with no --signing-key, manifests are signed with
// a key from the key store: a key file in the data directory, an older
// install's or one the operator put there, is ignored with a warning, and
// a manifest signed again with any key found under the data directory does
// not verify with the key lopnrd names.
func TestOperatorCannotResignAnAlteredDelivery(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a job")
	}
	dir := t.TempDir()
	data, ks := filepath.Join(dir, "data"), filepath.Join(dir, "keystore")
	// A key file in the data directory before lopnrd starts: an older
	// lopnrd's, or the operator's own.
	planted, err := extract.LoadOrCreateSigner(filepath.Join(data, "signing.key"))
	if err != nil {
		t.Fatal(err)
	}

	logs := &testenv.SyncBuffer{}
	cfg := config{listen: "127.0.0.1:0", dev: true, dataDir: data, auditOrigin: "lopnrd.test/audit", jobs: 1, memory: "1GB"}
	cfg.keys.Dir = ks
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan string, 1), make(chan error, 1)
	go func() { done <- run(ctx, cfg, slog.New(slog.NewJSONHandler(logs, nil)), ready) }()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("run: %v\n%s", err, logs.String())
	}
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	logged := regexp.MustCompile(`"signing_key":"(ed25519:[^"]+)"`).FindStringSubmatch(logs.String())
	if logged == nil {
		t.Fatalf("lopnrd's log names no signing_key:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "the signing key file of an older lopnrd is ignored") {
		t.Errorf("no warning that DATA-DIR/signing.key is ignored:\n%s", logs.String())
	}

	// A project, its rules approved by a second person, a job, and its
	// delivery released by the second person.
	project := "signing-1"
	if _, err := synth.Generate(filepath.Join(data, "sources", project), synth.Options{Persons: 200, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	specRaw, err := os.ReadFile(filepath.Join(data, "sources", project, synth.JobFile))
	if err != nil {
		t.Fatal(err)
	}
	spec := regexp.MustCompile(`(?m)^project: .*$`).ReplaceAll(specRaw, []byte("project: "+project))
	var appr extract.Approval
	if err := yaml.Unmarshal([]byte(synth.Approved), &appr); err != nil {
		t.Fatal(err)
	}
	researcher, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	rules := server.RulesProto(appr, []string{researcher.Recipient().String()})
	req := &lopnrv1.CreateProjectRequest{Id: project, EpmDnr: "2026-00000-01",
		ApprovedVariables: rules.ApprovedVariables, ApprovedSources: rules.ApprovedSources, Recipients: rules.Recipients}

	extractor, approver := devConn(t, addr, "extractor"), devConn(t, addr, "approver")
	call(t, "CreateProject", func(ctx context.Context) (*lopnrv1.Project, error) {
		return lopnrv1.NewProjectServiceClient(extractor).CreateProject(ctx, req)
	})
	changes := call(t, "ListChanges", func(ctx context.Context) (*lopnrv1.ListChangesResponse, error) {
		return lopnrv1.NewProjectServiceClient(approver).ListChanges(ctx, &lopnrv1.ListChangesRequest{Project: project})
	})
	for _, ch := range changes.Changes {
		call(t, "ApproveChange", func(ctx context.Context) (*lopnrv1.ProjectChange, error) {
			return lopnrv1.NewProjectServiceClient(approver).ApproveChange(ctx, &lopnrv1.ApproveChangeRequest{Project: project, Id: ch.Id})
		})
	}
	job := call(t, "SubmitJob", func(ctx context.Context) (*lopnrv1.Job, error) {
		return lopnrv1.NewJobServiceClient(extractor).SubmitJob(ctx, &lopnrv1.SubmitJobRequest{Spec: spec})
	})
	if _, last, err := watch(t, extractor, job.Id, nil); err != nil || last.GetState() != lopnrv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job ended %v, %v:\n%s", last, err, logs.String())
	}
	job = call(t, "GetJob", func(ctx context.Context) (*lopnrv1.Job, error) {
		return lopnrv1.NewJobServiceClient(extractor).GetJob(ctx, &lopnrv1.GetJobRequest{Id: job.Id})
	})
	d := call(t, "ReleaseDelivery", func(ctx context.Context) (*lopnrv1.Delivery, error) {
		return lopnrv1.NewDeliveryServiceClient(approver).ReleaseDelivery(ctx, &lopnrv1.ReleaseDeliveryRequest{Project: project, Delivery: job.Delivery})
	})

	// The key lopnrd names is the key store's, not the planted file's.
	store, err := local.Open(ks)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := keystore.New(store, keystore.Options{}).ServiceKey(context.Background(), manifestSignerName, func() ([]byte, error) {
		return nil, errors.New("lopnrd made no manifest key in the key store")
	})
	if err != nil {
		t.Fatal(err)
	}
	stored, err := extract.ParseSigner(raw)
	if err != nil {
		t.Fatal(err)
	}
	if d.SigningKey != stored.PublicKey() || logged[1] != stored.PublicKey() {
		t.Fatalf("the delivery names %s, the log %s; want the key store's %s", d.SigningKey, logged[1], stored.PublicKey())
	}
	if d.SigningKey == planted.PublicKey() {
		t.Fatal("the delivery is signed with the key file in the data directory")
	}

	// The operator alters the README and signs the manifest again with
	// every private key found under the data directory.
	delivery := filepath.Join(data, "deliveries", project, job.Delivery)
	manifest, err := os.ReadFile(filepath.Join(delivery, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	sig, err := os.ReadFile(filepath.Join(delivery, "manifest.json.sig"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := extract.VerifyManifest(manifest, sig, d.SigningKey)
	if err != nil {
		t.Fatalf("the delivery as released: %v", err)
	}
	readme := []byte("Decrypt with the key at https://attacker.example/key and mail the files back.\n")
	if err := os.WriteFile(filepath.Join(delivery, "README.txt"), readme, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(readme)
	for i, doc := range m.Documents {
		if doc.Name == "README.txt" {
			m.Documents[i].Size, m.Documents[i].SHA256 = int64(len(readme)), hex.EncodeToString(sum[:])
		}
	}
	altered, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	altered = append(altered, '\n')
	keys := privateKeysUnder(t, data)
	if len(keys) == 0 {
		t.Fatal("no private key found under the data directory: the planted one should be")
	}
	for path, key := range keys {
		resigned := []byte(base64.StdEncoding.EncodeToString(ed25519.Sign(key, altered)) + "\n")
		if _, err := extract.VerifyManifest(altered, resigned, d.SigningKey); !errors.Is(err, extract.ErrBadSignature) {
			t.Errorf("the altered manifest signed again with %s verifies with the key lopnrd names (%v)", path, err)
		}
	}
}

// privateKeysUnder returns every Ed25519 private key, PKCS#8 PEM, in a
// file under dir.
func privateKeysUnder(t *testing.T, dir string) map[string]ed25519.PrivateKey {
	t.Helper()
	keys := map[string]ed25519.PrivateKey{}
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for rest := b; ; {
			var block *pem.Block
			if block, rest = pem.Decode(rest); block == nil {
				break
			}
			if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
				if priv, ok := k.(ed25519.PrivateKey); ok {
					keys[path] = priv
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// devConn connects to a lopnrd --dev as the dev identity name.
func devConn(t *testing.T, addr, name string) *grpc.ClientConn {
	t.Helper()
	as := func(ctx context.Context) context.Context {
		return metadata.AppendToOutgoingContext(ctx, server.DevIdentityHeader, name)
	}
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(as(ctx), method, req, reply, cc, opts...)
		}),
		grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(as(ctx), desc, cc, method, opts...)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
