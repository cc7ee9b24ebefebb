package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/lopnr/lopnr/extract"
	"github.com/lopnr/lopnr/internal/synth"
	"github.com/lopnr/lopnr/internal/testenv"
	"github.com/lopnr/lopnr/internal/testpki"
	"github.com/lopnr/lopnr/linkage/personnummer"
	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
	"github.com/lopnr/lopnr/server"
)

// The end-to-end test runs lopnrd as a child process: this test binary,
// re-executed with childEnv set, runs main with its arguments, so that the
// test can kill it with SIGKILL and start it again.
const childEnv = "LOPNRD_E2E_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// e2e is one run of the end-to-end test: certificates, a policy, the
// child's directories and its log.
type e2e struct {
	t          *testing.T
	dir        string
	ca         *testpki.CA
	args       []string
	logs       *os.File
	cmd        *exec.Cmd
	addr       string
	metrics    string
	s3         *minio.Client
	bucket     string
	prefix     string
	sourceRoot string
}

// start runs lopnrd and waits until it serves.
func (e *e2e) start() {
	e.t.Helper()
	cmd := exec.Command(os.Args[0], e.args...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	e.cmd = cmd
	s := testenv.StartLopnrd(e.t, cmd, e.logs, time.Minute, e.logText)
	e.addr, e.metrics = s.Addr, s.Metrics
}

// stop ends lopnrd: SIGTERM, or SIGKILL to kill it mid-job.
func (e *e2e) stop(sig syscall.Signal) {
	e.t.Helper()
	if e.cmd == nil {
		return
	}
	e.cmd.Process.Signal(sig)
	e.cmd.Wait()
	e.cmd = nil
}

func (e *e2e) logText() string {
	b, _ := os.ReadFile(e.logs.Name())
	return string(b)
}

// conn connects as the named person, over mutual TLS.
func (e *e2e) conn(name string) *grpc.ClientConn {
	e.t.Helper()
	c, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(grpccreds.NewTLS(e.ca.ClientTLS(e.ca.Issue(e.t, name, false)))))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// stallingProxy forwards to the S3 gateway, and while stalling holds every
// request for a key that contains match until released.
type stallingProxy struct {
	proxy   *httputil.ReverseProxy
	match   string
	on      atomic.Bool
	stalled chan struct{} // a request is held
	release chan struct{}
	once    sync.Once
}

func (p *stallingProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p.on.Load() && strings.Contains(r.URL.Path, p.match) {
		p.once.Do(func() { close(p.stalled) })
		select {
		case <-p.release:
		case <-r.Context().Done():
		}
		http.Error(w, "stalled by the test", http.StatusBadGateway)
		return
	}
	p.proxy.ServeHTTP(w, r)
}

const e2ePolicy = `identities:
  "CN=drift,O=Region Test":    {global: [admin]}
  "CN=anna,O=Region Test":     {roles: {%[1]s: [extractor, approver]}}
  "CN=bo,O=Region Test":       {roles: {%[1]s: [approver, keyholder]}}
  "CN=cecilia,O=Region Test":  {roles: {%[1]s: [approver, keyholder]}}
  "CN=forskare,O=Region Test": {roles: {%[1]s: [researcher]}}
  "CN=annan,O=Region Test":    {roles: {other-project: [researcher]}}
  "CN=revisor,O=Region Test":  {global: [auditor]}
`

// approve approves every pending change of a project as who: the second
// person each project and partner registration needs.
func (e *e2e) approve(project, who string) {
	e.t.Helper()
	c := lopnrv1.NewProjectServiceClient(e.conn(who))
	changes := call(e.t, "ListChanges", func(ctx context.Context) (*lopnrv1.ListChangesResponse, error) {
		return c.ListChanges(ctx, &lopnrv1.ListChangesRequest{Project: project})
	})
	for _, ch := range changes.Changes {
		if ch.State == lopnrv1.ChangeState_CHANGE_STATE_PENDING {
			call(e.t, "ApproveChange "+ch.Id, func(ctx context.Context) (*lopnrv1.ProjectChange, error) {
				return c.ApproveChange(ctx, &lopnrv1.ApproveChangeRequest{Project: project, Id: ch.Id})
			})
		}
	}
}

func call[T any](t *testing.T, what string, f func(context.Context) (T, error)) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	v, err := f(ctx)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

func refused(t *testing.T, what string, code codes.Code, want string, f func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := f(ctx)
	if st := status.Convert(err); st.Code() != code || !strings.Contains(st.Message(), want) {
		t.Fatalf("%s: %v, want %v with a message containing %q", what, err, code, want)
	}
}

// watch follows a job to its end and returns the stages seen and the last
// event; onEvent, when set, sees each event first.
func watch(t *testing.T, c *grpc.ClientConn, job string, onEvent func(*lopnrv1.JobEvent)) (map[string]bool, *lopnrv1.JobEvent, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	stream, err := lopnrv1.NewJobServiceClient(c).WatchJob(ctx, &lopnrv1.WatchJobRequest{Id: job})
	if err != nil {
		return nil, nil, err
	}
	stages := map[string]bool{}
	var last *lopnrv1.JobEvent
	for {
		ev, err := stream.Recv()
		if err == io.EOF {
			return stages, last, nil
		}
		if err != nil {
			return stages, last, err
		}
		stages[ev.Stage], last = true, ev
		if onEvent != nil {
			onEvent(ev)
		}
	}
}

// TestEndToEnd is issue 6's proof, against the real OpenBao and S3 gateway
// over mutual TLS: projects, a job watched to completion, four-eyes
// release, a researcher's pre-signed download decrypted with age,
// re-identification with a reason, the audit chain, a server killed during
// a job, and logs without a personnummer.
func TestEndToEnd(t *testing.T) {
	vault, s3env := testenv.Vault(t), testenv.S3(t)
	var rnd [4]byte
	rand.Read(rnd[:])
	run := "e2e-" + hex.EncodeToString(rnd[:])
	project := run + "-hjarta"

	dir := t.TempDir()
	e := &e2e{t: t, dir: dir, ca: testpki.NewCA(t), bucket: "lopnr-e2e", prefix: run, sourceRoot: filepath.Join(dir, "sources")}
	var err error
	if e.logs, err = os.Create(filepath.Join(dir, "lopnrd.log")); err != nil {
		t.Fatal(err)
	}
	defer func() {
		e.stop(syscall.SIGTERM)
		if t.Failed() {
			t.Logf("lopnrd's log:\n%s", e.logText())
		}
	}()

	// Certificates and the policy.
	certs := filepath.Join(dir, "certs")
	os.Mkdir(certs, 0o700)
	caFile := e.ca.WriteCA(t, certs)
	serverCert, serverKey := testpki.WriteKeyPair(t, certs, "lopnrd", e.ca.Issue(t, "lopnrd", true))
	policy := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policy, fmt.Appendf(nil, e2ePolicy, project), 0o600); err != nil {
		t.Fatal(err)
	}

	// The S3 gateway, behind a proxy the test can stall.
	scheme := "http"
	if s3env.Secure {
		scheme = "https"
	}
	target, _ := url.Parse(scheme + "://" + s3env.Endpoint)
	proxy := &stallingProxy{proxy: httputil.NewSingleHostReverseProxy(target), match: "/lmed", stalled: make(chan struct{}), release: make(chan struct{})}
	director := proxy.proxy.Director
	proxy.proxy.Director = func(r *http.Request) { host := r.Host; director(r); r.Host = host } // keep the signed Host
	ps := &http.Server{Handler: proxy}
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go ps.Serve(pl)
	defer ps.Close()
	if e.s3, err = minio.New(s3env.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(s3env.AccessKey, s3env.SecretKey, ""),
		Secure: s3env.Secure, Region: s3env.Region}); err != nil {
		t.Fatal(err)
	}

	e.args = []string{"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--tls-cert", serverCert, "--tls-key", serverKey,
		"--client-ca", caFile, "--policy", policy, "--data-dir", filepath.Join(dir, "data"), "--source-root", e.sourceRoot,
		"--vault-addr", vault.Addr, "--vault-prefix", run, "--s3-endpoint", "http://" + pl.Addr().String(),
		"--s3-bucket", e.bucket, "--s3-prefix", run, "--memory", "1GB", "--sweep-interval", "1h"}
	t.Setenv("LOPNR_VAULT_TOKEN", vault.Token)
	t.Setenv("LOPNR_S3_ACCESS_KEY", s3env.AccessKey)
	t.Setenv("LOPNR_S3_SECRET_KEY", s3env.SecretKey)
	t.Setenv("LOPNR_S3_REGION", s3env.Region)
	e.start()

	// Synthetic sources in the project's directory of the server's source
	// root.
	truth, err := synth.Generate(filepath.Join(e.sourceRoot, project), synth.Options{Persons: 600, Seed: 11})
	if err != nil {
		t.Fatal(err)
	}
	specRaw, err := os.ReadFile(filepath.Join(e.sourceRoot, project, synth.JobFile))
	if err != nil {
		t.Fatal(err)
	}
	spec := regexp.MustCompile(`(?m)^project: .*$`).ReplaceAll(specRaw, []byte("project: "+project))
	var appr extract.Approval
	if err := yaml.Unmarshal([]byte(synth.Approved), &appr); err != nil {
		t.Fatal(err)
	}
	rules := server.RulesProto(appr, nil)
	approved, approvedSources := rules.ApprovedVariables, rules.ApprovedSources
	researcher, err := age.GenerateHybridIdentity()
	if err != nil {
		t.Fatal(err)
	}

	// An admin creates the project.
	drift, anna, bo, cecilia := e.conn("drift"), e.conn("anna"), e.conn("bo"), e.conn("cecilia")
	forskare, annan, revisor := e.conn("forskare"), e.conn("annan"), e.conn("revisor")
	call(t, "CreateProject", func(ctx context.Context) (*lopnrv1.Project, error) {
		return lopnrv1.NewProjectServiceClient(drift).CreateProject(ctx, &lopnrv1.CreateProjectRequest{Id: project, EpmDnr: "2026-00000-01",
			ApprovedVariables: approved, ApprovedSources: approvedSources, Recipients: []string{researcher.Recipient().String()}})
	})
	e.approve(project, "bo")

	// The extractor submits the generated job and watches it to the end.
	job := call(t, "SubmitJob", func(ctx context.Context) (*lopnrv1.Job, error) {
		return lopnrv1.NewJobServiceClient(anna).SubmitJob(ctx, &lopnrv1.SubmitJobRequest{Spec: spec})
	})
	stages, last, err := watch(t, anna, job.Id, nil)
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	if last.GetState() != lopnrv1.JobState_JOB_STATE_SUCCEEDED || !stages["ingest"] || !stages["file"] || !stages["publish"] {
		t.Fatalf("job ended %v after stages %v", last.GetState(), stages)
	}
	done := call(t, "GetJob", func(ctx context.Context) (*lopnrv1.Job, error) {
		return lopnrv1.NewJobServiceClient(anna).GetJob(ctx, &lopnrv1.GetJobRequest{Id: job.Id})
	})

	// Four eyes: the extractor's own release is refused; an approver's is not.
	rel := &lopnrv1.ReleaseDeliveryRequest{Project: project, Delivery: done.Delivery}
	refused(t, "the extractor's own release", codes.PermissionDenied, "four eyes", func(ctx context.Context) error {
		_, err := lopnrv1.NewDeliveryServiceClient(anna).ReleaseDelivery(ctx, rel)
		return err
	})
	call(t, "approver's release", func(ctx context.Context) (*lopnrv1.Delivery, error) {
		return lopnrv1.NewDeliveryServiceClient(bo).ReleaseDelivery(ctx, rel)
	})

	// A researcher of another project is refused; the project's
	// researcher downloads with a plain HTTP client and decrypts.
	presign := &lopnrv1.PresignDeliveryRequest{Project: project, Delivery: done.Delivery, Expiry: durationpb.New(10 * time.Minute)}
	refused(t, "a researcher of another project", codes.PermissionDenied, "delivery.presign", func(ctx context.Context) error {
		_, err := lopnrv1.NewDeliveryServiceClient(annan).PresignDelivery(ctx, presign)
		return err
	})
	links := call(t, "PresignDelivery", func(ctx context.Context) (*lopnrv1.PresignDeliveryResponse, error) {
		return lopnrv1.NewDeliveryServiceClient(forskare).PresignDelivery(ctx, presign)
	})
	var rows int64
	for _, f := range links.Files {
		if !strings.HasSuffix(f.Name, ".csv.zst.age") {
			continue
		}
		resp, err := http.Get(f.Url)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("download %s: %s, %v", f.Name, resp.Status, err)
		}
		r, err := age.Decrypt(bytes.NewReader(body), researcher)
		if err != nil {
			t.Fatalf("decrypt %s: %v", f.Name, err)
		}
		zr, err := zstd.NewReader(r)
		if err != nil {
			t.Fatal(err)
		}
		plain, err := io.ReadAll(zr)
		zr.Close()
		if err != nil {
			t.Fatalf("decompress %s: %v", f.Name, err)
		}
		if !bytes.HasPrefix(plain, []byte("LopNr;")) {
			t.Errorf("%s starts %q, want the LopNr column", f.Name, plain[:min(len(plain), 30)])
		}
		testenv.NoIdentityNumbers(t, f.Name, string(plain))
		rows += int64(bytes.Count(plain, []byte("\n")) - 1)
	}
	var want int64
	d := call(t, "ListDeliveries", func(ctx context.Context) (*lopnrv1.ListDeliveriesResponse, error) {
		return lopnrv1.NewDeliveryServiceClient(forskare).ListDeliveries(ctx, &lopnrv1.ListDeliveriesRequest{Project: project})
	})
	if len(d.Deliveries) != 1 {
		t.Fatalf("the researcher sees %d deliveries, want the released one", len(d.Deliveries))
	}
	for _, f := range d.Deliveries[0].Files {
		want += f.Rows
	}
	if rows == 0 || rows != want {
		t.Errorf("downloaded %d rows, the delivery lists %d", rows, want)
	}

	// Re-identification: refused without a reason, audited with one.
	keysBo := lopnrv1.NewKeyServiceClient(bo)
	refused(t, "re-identification without a reason", codes.InvalidArgument, "reason", func(ctx context.Context) error {
		_, err := keysBo.RequestReidentification(ctx, &lopnrv1.RequestReidentificationRequest{Project: project, RunNumber: 2})
		return err
	})
	req := call(t, "RequestReidentification", func(ctx context.Context) (*lopnrv1.Reidentification, error) {
		return keysBo.RequestReidentification(ctx, &lopnrv1.RequestReidentificationRequest{Project: project, RunNumber: 2,
			Reason: "the researcher reports an implausible date for LopNr 2"})
	})
	call(t, "ApproveReidentification", func(ctx context.Context) (*lopnrv1.Reidentification, error) {
		return lopnrv1.NewKeyServiceClient(cecilia).ApproveReidentification(ctx, &lopnrv1.ApproveReidentificationRequest{Project: project, Id: req.Id})
	})
	answer := call(t, "Reidentify", func(ctx context.Context) (*lopnrv1.ReidentifyResponse, error) {
		return keysBo.Reidentify(ctx, &lopnrv1.ReidentifyRequest{Project: project, Id: req.Id})
	})
	if !personnummer.Parse(answer.Personnummer, time.Now()).Linkable() {
		t.Error("re-identification answered something that is not an identity number")
	}

	// The server is killed in the middle of a job's upload, and started
	// again: the job ends failed, with nothing staged or published.
	proxy.on.Store(true)
	job2 := call(t, "SubmitJob (to be killed)", func(ctx context.Context) (*lopnrv1.Job, error) {
		return lopnrv1.NewJobServiceClient(anna).SubmitJob(ctx, &lopnrv1.SubmitJobRequest{Spec: spec})
	})
	select {
	case <-proxy.stalled:
	case <-time.After(3 * time.Minute):
		t.Fatal("the second job never reached its lmed upload")
	}
	staged := e.objects("staging/" + project + "/" + job2.Id + "/")
	if len(staged) == 0 {
		t.Fatal("nothing staged before the kill: the test would prove nothing")
	}
	e.stop(syscall.SIGKILL)
	close(proxy.release)
	proxy.on.Store(false)
	e.start()
	anna, revisor, bo = e.conn("anna"), e.conn("revisor"), e.conn("bo")
	_, last, err = watch(t, anna, job2.Id, nil)
	if err != nil {
		t.Fatal(err)
	}
	killed := call(t, "GetJob (killed)", func(ctx context.Context) (*lopnrv1.Job, error) {
		return lopnrv1.NewJobServiceClient(anna).GetJob(ctx, &lopnrv1.GetJobRequest{Id: job2.Id})
	})
	if killed.State != lopnrv1.JobState_JOB_STATE_FAILED || !strings.Contains(killed.Error, "interrupted") {
		t.Errorf("killed job: %v %q, want failed as interrupted", killed.State, killed.Error)
	}
	if got := e.objects("staging/" + project + "/" + job2.Id + "/"); len(got) != 0 {
		t.Errorf("after restart, the killed job's staging holds %v", got)
	}
	if got := e.objects("deliveries/" + project + "/" + job2.Id + "/"); len(got) != 0 {
		t.Errorf("the killed job published %v", got)
	}
	// The mapping is consistent: a new run gives the same persons the
	// same count of LopNr, and succeeds.
	job3 := call(t, "SubmitJob (after restart)", func(ctx context.Context) (*lopnrv1.Job, error) {
		return lopnrv1.NewJobServiceClient(anna).SubmitJob(ctx, &lopnrv1.SubmitJobRequest{Spec: spec})
	})
	if _, last, err = watch(t, anna, job3.Id, nil); err != nil || last.GetState() != lopnrv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job after restart: %v, %v", last.GetState(), err)
	}
	p := call(t, "GetProject", func(ctx context.Context) (*lopnrv1.Project, error) {
		return lopnrv1.NewProjectServiceClient(bo).GetProject(ctx, &lopnrv1.GetProjectRequest{Id: project})
	})
	if p.Persons != int64(truth.Cohort.Persons) {
		t.Errorf("the kodnyckel holds %d persons after three jobs, want the cohort's %d", p.Persons, truth.Cohort.Persons)
	}

	// Metrics count the jobs.
	resp, err := http.Get(e.metrics)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(m, []byte(`lopnr_jobs_total{state="succeeded"} 1`)) || !bytes.Contains(m, []byte(`lopnr_jobs_total{state="failed"} 1`)) {
		t.Errorf("metrics after restart do not count one succeeded and one failed job:\n%s", m)
	}

	// The audit chain verifies, holds the re-identification with its
	// reason, and breaks when one byte of its file changes.
	auditor := lopnrv1.NewAuditServiceClient(revisor)
	v := call(t, "VerifyAudit", func(ctx context.Context) (*lopnrv1.VerifyAuditResponse, error) {
		return auditor.VerifyAudit(ctx, &lopnrv1.VerifyAuditRequest{})
	})
	if !v.Ok {
		t.Fatalf("audit chain does not verify: %s", v.Problem)
	}
	entries := call(t, "ListAudit", func(ctx context.Context) (*lopnrv1.ListAuditResponse, error) {
		return auditor.ListAudit(ctx, &lopnrv1.ListAuditRequest{Project: project})
	})
	var sawReident, sawRefusal bool
	for _, en := range entries.Entries {
		sawReident = sawReident || en.Action == "key.reidentify" && en.Outcome == "ok" && strings.Contains(en.Reason, "implausible date")
		sawRefusal = sawRefusal || en.Action == "key.reidentify" && en.Outcome == "failed" && strings.Contains(en.Reason, "reason")
	}
	if !sawReident || !sawRefusal {
		t.Errorf("audit: re-identification with its reason %v, refusal without one %v; want both", sawReident, sawRefusal)
	}
	logFile := filepath.Join(dir, "data", "audit.log")
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	testenv.NoIdentityNumbers(t, "the audit log", string(b))
	i := bytes.Index(b, []byte(`"action":"delivery.release"`))
	b[i+len(`"action":"d`)] = 'D'
	if err := os.WriteFile(logFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	v = call(t, "VerifyAudit after one byte changed", func(ctx context.Context) (*lopnrv1.VerifyAuditResponse, error) {
		return auditor.VerifyAudit(ctx, &lopnrv1.VerifyAuditRequest{})
	})
	if v.Ok || !strings.Contains(v.Problem, "altered") {
		t.Errorf("VerifyAudit after one byte changed: ok %v, %q; want the altered entry named", v.Ok, v.Problem)
	}
	e.stop(syscall.SIGTERM)
	e.startExpectingFailure("altered")

	testenv.NoIdentityNumbers(t, "lopnrd's log", e.logText())
}

// objects lists the keys under the run's prefix plus rel, and incomplete
// uploads there.
func (e *e2e) objects(rel string) []string {
	e.t.Helper()
	ctx := context.Background()
	prefix := e.prefix + "/" + rel
	var out []string
	for o := range e.s3.ListObjects(ctx, e.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			e.t.Fatal(o.Err)
		}
		out = append(out, o.Key)
	}
	for u := range e.s3.ListIncompleteUploads(ctx, e.bucket, prefix, true) {
		if u.Err != nil {
			e.t.Fatal(u.Err)
		}
		out = append(out, "(incomplete) "+u.Key)
	}
	return out
}

// startExpectingFailure starts lopnrd and expects it to refuse to start,
// with want in its log: a tampered audit log stops the server.
func (e *e2e) startExpectingFailure(want string) {
	e.t.Helper()
	cmd := exec.Command(os.Args[0], e.args...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	e.logs.Write(stderr.Bytes())
	var exit *exec.ExitError
	if !errors.As(err, &exit) || !strings.Contains(stderr.String(), want) {
		e.t.Fatalf("lopnrd with a tampered audit log: %v, log %q; want a refusal naming %q", err, stderr.String(), want)
	}
}
