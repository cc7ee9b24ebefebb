// Package server wires lopnr's domain packages to gRPC: it serves the
// lopnr.v1 API (projects, jobs, deliveries, keys, audit) beside the
// standard health service and server reflection, so that grpcurl works.
// It owns everything that exists only because of the network: transport
// security and identities, authorisation, the persistent job runner, the
// audit log and metrics. The domain packages (linkage, keystore, extract)
// know nothing of it.
//
// # Calls
//
// Every call goes through one interceptor that takes the caller's identity
// from the verified client certificate (mutual TLS), finds the action and
// the project the call acts on from a table with one rule per method, asks
// the policy ([authz.Policy]) whether the identity may take it, audits the
// outcome in the hash-chained log ([audit.Log]) and maps errors to status
// codes. Status messages name the field and what was expected; they never
// hold a record value or internal error text (internal errors are logged
// under a reference that the message gives).
//
// # Four eyes
//
// A job's delivery waits in the sink's staging place, where researchers'
// links do not reach; only its release by an approver who did not submit
// the job publishes it. A re-identification needs a second person's
// approval before the key holder who asked gets the answer, once.
//
// # State
//
// Projects' settings (EPM dnr, approved variables, recipients), jobs,
// deliveries and re-identification requests are JSON files in the data
// directory, written atomically and sealed with a key from the key store
// (Config.RecordKey), so that whoever can write the data directory but not
// the key store cannot change what a second person approved: a record
// whose seal does not verify is refused. The kodnyckel and its retention
// live in the key store.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"filippo.io/age"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/lopnr/lopnr/extract"
	"github.com/lopnr/lopnr/internal/atomicfile"
	"github.com/lopnr/lopnr/internal/buildinfo"
	"github.com/lopnr/lopnr/keystore"
	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
	"github.com/lopnr/lopnr/server/audit"
	"github.com/lopnr/lopnr/server/authz"
	"github.com/lopnr/lopnr/server/internal/seal"
	"github.com/lopnr/lopnr/server/jobs"
	"github.com/lopnr/lopnr/server/metrics"
)

// Sink is where the server keeps deliveries: an extract sink that can also
// remove a delivery from its staging place (Abandon) or its published one
// (Withdraw), and list what it holds, so that the server can make it agree
// with its records at start.
type Sink interface {
	extract.Sink
	Abandon(ctx context.Context, project, id string) error
	Withdraw(ctx context.Context, project, id string) error
	Deliveries(ctx context.Context) ([]extract.StoredDelivery, error)
}

var (
	_ Sink = (*extract.S3Sink)(nil)
	_ Sink = (*extract.DirSink)(nil)
)

// Config is what a Server needs to run.
type Config struct {
	// TLS is the server's transport configuration; nil serves plaintext
	// with every caller taken as DevIdentity, which only lopnrd --dev
	// allows.
	TLS *tls.Config
	// DataDir keeps projects, jobs, deliveries and work files.
	DataDir string
	// SourceRoot is the directory that job specs' source paths are
	// relative to; a source outside it is refused.
	SourceRoot string
	Policy     *authz.Policy
	Audit      *audit.Log
	Keys       *keystore.Keystore
	Sink       Sink
	Signer     *extract.Signer
	// RecordKey seals the records kept in DataDir (projects, jobs,
	// deliveries, grants, re-identifications, imports): lopnrd takes it
	// from the key store (Keys.ServiceKey(ctx, RecordKeyName,
	// NewRecordKey)), out of reach of whoever holds DataDir. Required.
	RecordKey []byte
	Metrics   *metrics.Registry // may be nil
	Logger    *slog.Logger      // may be nil
	// JobLimit is how many jobs run at once; default 2.
	JobLimit int
	// MemoryLimit is DuckDB's memory limit per job; default 2GB.
	MemoryLimit string
	// Clock tells the time; default the system clock.
	Clock func() time.Time
	// Limits bound connections, streams, requests and pings; default
	// DefaultLimits. lopnrd applies Limits.Listener to its listener.
	Limits Limits
	// ImportMaxLine bounds a line of a partner's upload, in bytes; default
	// 64 KiB. ImportRowsPerDay bounds the rows a partner uploads to a
	// project in a day (UTC); default 10 000 000.
	ImportMaxLine    int
	ImportRowsPerDay int64
}

// Server is the lopnr gRPC server.
type Server struct {
	cfg    Config
	log    *slog.Logger
	grpc   *grpc.Server
	health *health.Server
	jobs   *jobs.Runner
	// serviceID is the service's age identity: partners encrypt uploads
	// to it.
	serviceID *age.HybridIdentity

	// gate, when set (by tests), holds every job at its start until it is
	// closed or the job is cancelled.
	gate chan struct{}

	projects   *records[projectRecord]
	deliveries *records[deliveryRecord]
	reidents   *records[reidentRecord]
	grants     *records[keyFileGrant]
	imports    *records[importRecord]
	// cohort resolves partners' uploads to the projects' persons.
	cohort cohortIndexes
}

// New opens the server's state in cfg.DataDir (failing cleanly any job
// that was running when the server last stopped, and making what the sink
// holds agree with the delivery records) and registers every service.
// Close stops it.
func New(cfg Config) (*Server, error) {
	if cfg.DataDir == "" || cfg.Policy == nil || cfg.Audit == nil || cfg.Keys == nil || cfg.Sink == nil || cfg.Signer == nil || cfg.RecordKey == nil {
		return nil, errors.New("server: DataDir, Policy, Audit, Keys, Sink, Signer and RecordKey are required")
	}
	sealer, err := seal.New(cfg.RecordKey)
	if err != nil {
		return nil, fmt.Errorf("server: RecordKey: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New()
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.MemoryLimit == "" {
		cfg.MemoryLimit = "2GB"
	}
	if cfg.SourceRoot == "" {
		cfg.SourceRoot = filepath.Join(cfg.DataDir, "sources")
	}
	s := &Server{cfg: cfg, log: cfg.Logger}
	if err := s.adoptUnsealed(sealer); err != nil {
		return nil, err
	}
	if s.projects, err = openRecords[projectRecord]("project", filepath.Join(cfg.DataDir, "projects"), sealer, s.log); err != nil {
		return nil, err
	}
	if s.deliveries, err = openRecords[deliveryRecord]("delivery", filepath.Join(cfg.DataDir, "deliveries"), sealer, s.log); err != nil {
		return nil, err
	}
	if s.reidents, err = openRecords[reidentRecord]("re-identification", filepath.Join(cfg.DataDir, "reidentifications"), sealer, s.log); err != nil {
		return nil, err
	}
	if s.grants, err = openRecords[keyFileGrant]("key-file grant", filepath.Join(cfg.DataDir, "keyfile-grants"), sealer, s.log); err != nil {
		return nil, err
	}
	if s.imports, err = openRecords[importRecord]("import", filepath.Join(cfg.DataDir, "imports"), sealer, s.log); err != nil {
		return nil, err
	}
	if s.serviceID, err = loadOrCreateIdentity(filepath.Join(cfg.DataDir, "service-age.key")); err != nil {
		return nil, err
	}
	if s.jobs, err = jobs.Open(jobs.Options{Dir: cfg.DataDir, Limit: cfg.JobLimit, Work: s.work, Seal: sealer,
		Refused: func(err error) { s.log.Error("record refused", "err", err) },
		Cleanup: s.cleanup, Recover: s.reconcile, Clock: cfg.Clock, Notify: s.jobChanged}); err != nil {
		return nil, err
	}
	s.removeStaleWork()
	var opts []grpc.ServerOption
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	opts = append(opts, grpc.UnaryInterceptor(s.unary), grpc.StreamInterceptor(s.stream))
	opts = append(opts, cfg.Limits.serverOptions()...)
	s.grpc, s.health = grpc.NewServer(opts...), health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	lopnrv1.RegisterSystemServiceServer(s.grpc, systemService{})
	lopnrv1.RegisterProjectServiceServer(s.grpc, projectService{s: s})
	lopnrv1.RegisterJobServiceServer(s.grpc, jobService{s: s})
	lopnrv1.RegisterDeliveryServiceServer(s.grpc, deliveryService{s: s})
	lopnrv1.RegisterKeyServiceServer(s.grpc, keyService{s: s})
	lopnrv1.RegisterAuditServiceServer(s.grpc, auditService{s: s})
	lopnrv1.RegisterPartnerServiceServer(s.grpc, partnerService{s: s})
	reflection.Register(s.grpc)
	return s, nil
}

// RecordKeyName is the name of the key-store service key that seals the
// records in the data directory (Config.RecordKey); NewRecordKey makes it
// on first use.
const RecordKeyName = "records"

// NewRecordKey returns a new key for Config.RecordKey.
func NewRecordKey() ([]byte, error) { return seal.NewKey() }

// sealedMarker is the key-store service record that says the records in
// the data directory are sealed: set at the first start that sealed them.
const sealedMarker = "records-sealed"

// recordKinds are the directories of the data directory whose records are
// sealed.
var recordKinds = []string{"projects", "deliveries", "reidentifications", "keyfile-grants", "imports", jobs.Kind}

// adoptUnsealed seals, once, the records that a lopnrd before sealing
// wrote: only while the key store has no sealedMarker, which it sets when
// they are sealed. After that a record without a seal is refused like an
// edited one, so that stripping a seal does not get a record adopted.
func (s *Server) adoptUnsealed(sealer *seal.Sealer) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := s.cfg.Keys.ServiceRecord(ctx, sealedMarker)
	if err == nil {
		return nil
	}
	if !errors.Is(err, keystore.ErrNotFound) {
		return fmt.Errorf("server: whether the records are sealed: %w", err)
	}
	n := 0
	for _, kind := range recordKinds {
		ids, err := sealer.Adopt(filepath.Join(s.cfg.DataDir, kind), kind)
		n += len(ids)
		if err != nil {
			return fmt.Errorf("server: sealing the records written before lopnrd sealed them: %w", err)
		}
	}
	now := s.cfg.Clock().UTC().Format(time.RFC3339)
	if err := s.cfg.Keys.UpdateServiceRecord(ctx, sealedMarker, func(old []byte) ([]byte, error) {
		if old != nil {
			return nil, nil
		}
		return []byte(`{"sealed_since":"` + now + `"}`), nil
	}); err != nil {
		return fmt.Errorf("server: marking the records sealed: %w", err)
	}
	s.log.Info("records sealed: the data directory's records are sealed with the key store's record key from now on",
		"adopted", n)
	return nil
}

// Serve serves on l until ctx ends, then drains in-flight calls, stops
// running jobs (they fail as interrupted; nothing is released) and
// returns.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		s.health.Shutdown()
		s.jobs.Close() // ends watch streams with the jobs' final state
		s.grpc.GracefulStop()
	}()
	err := s.grpc.Serve(l)
	if errors.Is(err, grpc.ErrServerStopped) {
		err = nil
	}
	if ctx.Err() != nil {
		<-stopped
	}
	return err
}

// Close stops the job runner; for a Server that never served.
func (s *Server) Close() { s.jobs.Close() }

// jobChanged is told of every state a job reaches: metrics, log, and an
// audit entry for the final state.
//
// A partner's import is left out of the metrics: whether its job succeeds,
// how long it takes and how many rows it delivers depend on how many of the
// partner's rows are of the cohort, which whoever reads /metrics (a
// Prometheus outside the operator's reach) must not learn, the partner
// least of all.
func (s *Server) jobChanged(j jobs.Job) {
	counted := !s.isImport(j.ID)
	if counted {
		s.cfg.Metrics.JobState(string(j.State))
	}
	s.log.Info("job", "job", j.ID, "project", j.Project, "state", string(j.State))
	if !j.State.Final() {
		return
	}
	os.RemoveAll(s.workDir(j.ID)) // a job cancelled while queued, or an import's files
	if !j.Started.IsZero() && counted {
		s.cfg.Metrics.JobDuration(j.Finished.Sub(j.Started).Seconds())
	}
	outcome := map[jobs.State]string{jobs.Succeeded: "ok", jobs.Failed: "failed", jobs.Cancelled: "cancelled"}[j.State]
	if _, err := s.cfg.Audit.Append(audit.Entry{Identity: "lopnrd/jobs", Action: "job.finish", Project: j.Project, Job: j.ID,
		Outcome: outcome, Reason: j.Error}); err != nil {
		s.log.Error("audit log append failed", "err", err, "job", j.ID)
	}
}

// loadOrCreateIdentity reads the service's age identity, creating it (mode
// 0600) on first use.
func loadOrCreateIdentity(path string) (*age.HybridIdentity, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		id, err := age.GenerateHybridIdentity()
		if err != nil {
			return nil, err
		}
		if err := atomicfile.Write(path, []byte(id.String()+"\n")); err != nil {
			return nil, fmt.Errorf("service identity %s: %w", path, err)
		}
		return id, nil
	}
	if err != nil {
		return nil, fmt.Errorf("service identity %s: %w", path, err)
	}
	id, err := age.ParseHybridIdentity(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("service identity %s: not an age hybrid identity", path)
	}
	return id, nil
}

// removeStaleWork removes work directories that no queued or running job
// owns: what a server killed in the middle of an import, before its job was
// kept, left behind. They may hold identity numbers.
func (s *Server) removeStaleWork() {
	entries, err := os.ReadDir(filepath.Join(s.cfg.DataDir, "work"))
	if err != nil {
		return
	}
	for _, e := range entries {
		if j, err := s.jobs.Get(e.Name()); err == nil && !j.State.Final() {
			continue
		}
		if err := os.RemoveAll(filepath.Join(s.cfg.DataDir, "work", e.Name())); err != nil {
			s.log.Error("removing a stale work directory", "dir", e.Name(), "err", err)
		}
	}
}

func (s *Server) workDir(job string) string { return filepath.Join(s.cfg.DataDir, "work", job) }

type systemService struct {
	lopnrv1.UnimplementedSystemServiceServer
}

func (systemService) GetInfo(context.Context, *lopnrv1.GetInfoRequest) (*lopnrv1.GetInfoResponse, error) {
	bi := buildinfo.Read()
	return &lopnrv1.GetInfoResponse{Version: bi.Version, Revision: bi.Revision, GoVersion: bi.GoVersion}, nil
}

// DevPolicy is the policy of lopnrd --dev without a policy file: every
// dev identity (DevIdentity and those of DevIdentities) has every role in
// every project, so that one person at a laptop can play the second person
// of each four-eyes step with lopnr --dev --as NAME. A dev server is
// insecure by design: it has no TLS and trusts what a caller says it is.
func DevPolicy() *authz.Policy {
	all := []authz.Role{authz.Extractor, authz.Approver, authz.Keyholder, authz.Researcher, authz.Partner, authz.Auditor, authz.Admin}
	p := &authz.Policy{Identities: map[string]authz.IdentityRoles{DevIdentity: {Global: all}}}
	for _, name := range DevIdentities {
		p.Identities[devIdentity(name)] = authz.IdentityRoles{Global: all}
	}
	return p
}
