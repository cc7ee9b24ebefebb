// Command lopnrd is the lopnr gRPC server. Flags (each also an environment
// variable) fill a [config]; run opens the audit log, the key store, the
// delivery sink and the job runner, serves the API until SIGINT or SIGTERM,
// runs the retention sweeper on a schedule and serves Prometheus metrics.
//
// By default it requires mutual TLS (--tls-cert, --tls-key, --client-ca)
// and a policy file (--policy) that gives the client certificates' subjects
// their roles. --dev serves plaintext on a loopback address, for a laptop,
// with every caller taken as one of a few fixed identities, each with
// every role (lopnr --dev --as NAME plays the second person).
package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/lopnr/lopnr/extract"
	"github.com/lopnr/lopnr/internal/buildinfo"
	"github.com/lopnr/lopnr/internal/storeflags"
	"github.com/lopnr/lopnr/keystore"
	"github.com/lopnr/lopnr/server"
	"github.com/lopnr/lopnr/server/audit"
	"github.com/lopnr/lopnr/server/authz"
	"github.com/lopnr/lopnr/server/metrics"
	"github.com/lopnr/lopnr/server/sweeper"
)

type config struct {
	listen                    string
	dev                       bool
	tlsCert, tlsKey, clientCA string
	dataDir, sourceRoot       string
	policy, auditLog          string
	auditOrigin               string
	checkpointEvery           time.Duration
	signingKey                string
	out                       string // local delivery directory when no S3 endpoint
	keys                      storeflags.Keystore
	s3                        storeflags.S3
	jobs                      int
	limits                    server.Limits
	memory                    string
	sweepEvery                time.Duration
	metricsListen             string
	logLevel                  string
	version                   bool
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "lopnrd: %v\n", err)
		os.Exit(2)
	}
	if cfg.version {
		fmt.Println("lopnrd", buildinfo.Read())
		return
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "lopnrd: --log-level %q: want debug, info, warn or error\n", cfg.logLevel)
		os.Exit(2)
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, logger, nil); err != nil {
		logger.Error("lopnrd stopped", "err", err)
		os.Exit(1)
	}
}

// env returns the value of an environment variable or a default, so that
// every flag can also be set as LOPNRD_<NAME>.
func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

// defaultOrigin names the audit log after the host: HOST/lopnrd/audit.
func defaultOrigin() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return host + "/lopnrd/audit"
}

// defaultDataDir is $XDG_STATE_HOME/lopnrd or ~/.local/state/lopnrd.
func defaultDataDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "lopnrd")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "state", "lopnrd")
	}
	return "lopnrd-data"
}

const usage = `Usage: lopnrd [flags]

The lopnr gRPC server: projects, jobs, deliveries, four-eyes release,
re-identification, partner authorities and the audit log, for the extraction
team, approvers, researchers, partners and auditors (see docs/server.md).

Mutual TLS is required unless --dev is given: callers are known by the
subject of their client certificate ("CN=anna,O=Region Exempel"), and the
policy file gives each subject its roles per project. The data directory
keeps projects, jobs, deliveries and the audit log; the kodnyckel, and the
keys that sign manifests and the log's checkpoints, live in the key store
(Vault with --vault-addr, else a local store). Deliveries go to S3 with
--s3-endpoint, else to --out.

Every flag can also be set in the environment, named in its description.

Flags:
`

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("lopnrd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.listen, "listen", env("LOPNRD_LISTEN", "127.0.0.1:7443"), "address to serve gRPC on ($LOPNRD_LISTEN)")
	fs.BoolVar(&cfg.dev, "dev", env("LOPNRD_DEV", "") == "true", "serve plaintext on a loopback address without client certificates, every caller "+server.DevIdentity+" or the dev identity it names (lopnr --dev --as NAME), each with every role, for a laptop and synthetic data ($LOPNRD_DEV=true)")
	fs.StringVar(&cfg.tlsCert, "tls-cert", env("LOPNRD_TLS_CERT", ""), "server certificate, PEM ($LOPNRD_TLS_CERT)")
	fs.StringVar(&cfg.tlsKey, "tls-key", env("LOPNRD_TLS_KEY", ""), "server private key, PEM ($LOPNRD_TLS_KEY)")
	fs.StringVar(&cfg.clientCA, "client-ca", env("LOPNRD_CLIENT_CA", ""), "CA certificates that sign client certificates, PEM ($LOPNRD_CLIENT_CA)")
	fs.StringVar(&cfg.dataDir, "data-dir", env("LOPNRD_DATA_DIR", defaultDataDir()), "directory for projects, jobs, deliveries' records and the audit log ($LOPNRD_DATA_DIR)")
	fs.StringVar(&cfg.sourceRoot, "source-root", env("LOPNRD_SOURCE_ROOT", ""), "directory of each project's source files, in SOURCE-ROOT/<project>/, which a job's source paths are relative to and may not lead out of (default DATA-DIR/sources) ($LOPNRD_SOURCE_ROOT)")
	fs.StringVar(&cfg.policy, "policy", env("LOPNRD_POLICY", ""), "policy file: identities and their roles per project; required unless --dev ($LOPNRD_POLICY)")
	fs.StringVar(&cfg.auditLog, "audit-log", env("LOPNRD_AUDIT_LOG", ""), "the hash-chained audit log (default DATA-DIR/audit.log) ($LOPNRD_AUDIT_LOG)")
	fs.StringVar(&cfg.auditOrigin, "audit-origin", env("LOPNRD_AUDIT_ORIGIN", defaultOrigin()), "the audit log's name in its signed checkpoints, given to the checkpoint key when lopnrd first creates it in the key store; later the key's name holds ($LOPNRD_AUDIT_ORIGIN)")
	fs.DurationVar(&cfg.checkpointEvery, "checkpoint-interval", time.Minute, "how often the audit log signs a checkpoint when it has grown (it also signs one before every sensitive act); 0 turns the periodic ones off")
	fs.StringVar(&cfg.signingKey, "signing-key", env("LOPNRD_SIGNING_KEY", ""), "file of the Ed25519 key that signs manifests, created on first use; by default the key is kept in the key store, out of reach of whoever holds the data directory ($LOPNRD_SIGNING_KEY)")
	fs.StringVar(&cfg.out, "out", env("LOPNRD_OUT", ""), "local directory of released deliveries when no S3 endpoint is set (default DATA-DIR/deliveries); deliveries wait for release in DATA-DIR/staging, which must be on the same file system ($LOPNRD_OUT)")
	cfg.keys.Register(fs, "")
	cfg.s3.Register(fs)
	fs.IntVar(&cfg.jobs, "jobs", 2, "jobs run at once; more wait in the queue")
	fs.IntVar(&cfg.limits.Connections, "max-connections", server.DefaultLimits.Connections, "connections served at once; more wait until one closes")
	fs.IntVar(&cfg.limits.Streams, "max-streams", server.DefaultLimits.Streams, "calls open at once on one connection; the client queues more")
	fs.StringVar(&cfg.memory, "memory", env("LOPNRD_MEMORY", "2GB"), "DuckDB's memory limit per job; beyond it, it spills to disk ($LOPNRD_MEMORY)")
	fs.DurationVar(&cfg.sweepEvery, "sweep-interval", time.Hour, "how often the retention sweeper destroys kodnycklar past their retention; 0 turns it off")
	fs.StringVar(&cfg.metricsListen, "metrics-listen", env("LOPNRD_METRICS_LISTEN", "127.0.0.1:9464"), "address for Prometheus metrics at /metrics; empty turns them off ($LOPNRD_METRICS_LISTEN)")
	fs.StringVar(&cfg.logLevel, "log-level", env("LOPNRD_LOG_LEVEL", "info"), "debug, info, warn or error; logs are JSON lines on standard error ($LOPNRD_LOG_LEVEL)")
	fs.BoolVar(&cfg.version, "version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return cfg, nil
}

// orIn returns path, or name in dir when path is empty.
func orIn(path, dir, name string) string {
	if path != "" {
		return path
	}
	return filepath.Join(dir, name)
}

// manifestSignerName is the service key, in the key store, that signs
// deliveries' manifests unless --signing-key names a file.
const manifestSignerName = "manifest-signer"

// manifestSigner returns the signer of deliveries' manifests: the key in
// the file --signing-key names, or by default the key store's, out of
// reach of whoever holds the data directory, who could otherwise alter a
// delivery's README or codebook and sign its manifest again. The
// DATA-DIR/signing.key of an older lopnrd is not used unless named: the
// deliveries it signed verify with its public key (signing.key.pub) as
// before, new ones with the key lopnrd logs at start and each delivery
// names.
func manifestSigner(ctx context.Context, cfg config, keys *keystore.Keystore, logger *slog.Logger) (*extract.Signer, error) {
	if cfg.signingKey != "" {
		if inside(cfg.signingKey, cfg.dataDir) {
			logger.Warn("--signing-key is in the data directory: whoever can write there can alter a delivery's README or codebook and sign its manifest again; leave --signing-key out to keep the key in the key store", "signing_key_file", cfg.signingKey)
		}
		return extract.LoadOrCreateSigner(cfg.signingKey)
	}
	key, err := keys.ServiceKey(ctx, manifestSignerName, extract.NewSignerKey)
	if err != nil {
		return nil, fmt.Errorf("the manifest signing key: %w", err)
	}
	s, err := extract.ParseSigner(key)
	if err != nil {
		return nil, fmt.Errorf("the manifest signing key %q in the key store: %w", manifestSignerName, err)
	}
	if old := filepath.Join(cfg.dataDir, "signing.key"); fileExists(old) {
		logger.Warn("the signing key file of an older lopnrd is ignored: manifests are signed with the key store's key; deliveries signed before verify with the old public key, new ones with signing_key", "ignored", old, "old_public_key", old+".pub", "signing_key", s.PublicKey())
	}
	return s, nil
}

// inside says whether path is dir or lies under it.
func inside(path, dir string) bool {
	p, err1 := filepath.Abs(path)
	d, err2 := filepath.Abs(dir)
	if err1 != nil || err2 != nil {
		return false
	}
	rel, err := filepath.Rel(d, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

func fileExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// run serves until ctx ends. ready, when not nil, receives the address once
// the server listens (for tests).
func run(ctx context.Context, cfg config, logger *slog.Logger, ready chan<- string) error {
	if err := harden(); err != nil {
		return err
	}
	scfg := server.Config{Logger: logger, JobLimit: cfg.jobs, MemoryLimit: cfg.memory, Limits: cfg.limits}
	if cfg.dev {
		host, _, err := net.SplitHostPort(cfg.listen)
		if err != nil {
			return fmt.Errorf("--listen %q: %w", cfg.listen, err)
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return fmt.Errorf("--listen %q: --dev serves without TLS and only on a loopback address", cfg.listen)
		}
		logger.Warn("DEVELOPMENT MODE: no TLS, no client certificates, every caller is " + server.DevIdentity + " or the dev identity it claims, each with every role; never use with real data")
	} else {
		if cfg.tlsCert == "" || cfg.tlsKey == "" || cfg.clientCA == "" {
			return errors.New("mutual TLS needs --tls-cert, --tls-key and --client-ca (or --dev on a laptop)")
		}
		if cfg.policy == "" {
			return errors.New("--policy is required: the file that gives client certificates their roles")
		}
		tlsCfg, err := server.MutualTLS(cfg.tlsCert, cfg.tlsKey, cfg.clientCA)
		if err != nil {
			return err
		}
		scfg.TLS = tlsCfg
	}
	if err := os.MkdirAll(cfg.dataDir, 0o700); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	scfg.DataDir = cfg.dataDir
	scfg.SourceRoot = orIn(cfg.sourceRoot, cfg.dataDir, "sources")
	if err := os.MkdirAll(scfg.SourceRoot, 0o700); err != nil {
		return fmt.Errorf("--source-root: %w", err)
	}

	var err error
	if cfg.policy != "" {
		if scfg.Policy, err = authz.Load(cfg.policy); err != nil {
			return err
		}
	} else {
		scfg.Policy = server.DevPolicy()
	}
	if scfg.Audit, err = audit.Open(orIn(cfg.auditLog, cfg.dataDir, "audit.log"), nil); err != nil {
		return err
	}
	defer scfg.Audit.Close()
	if cfg.keys.Dir == "" {
		cfg.keys.Dir = filepath.Join(cfg.dataDir, "keystore")
	}
	store, where, err := cfg.keys.Open(ctx)
	if err != nil {
		return err
	}
	scfg.Keys = keystore.New(store, keystore.Options{})
	// The audit log's checkpoints are signed with a key from the key store
	// and the newest is kept there: out of reach of whoever holds the data
	// directory. lopnrd does not start on a log that does not extend it.
	if cfg.auditOrigin == "" {
		cfg.auditOrigin = defaultOrigin()
	}
	skey, err := scfg.Keys.ServiceKey(ctx, audit.SignerName, func() ([]byte, error) { return audit.NewSignerKey(cfg.auditOrigin) })
	if err != nil {
		return fmt.Errorf("the audit log's checkpoint key: %w", err)
	}
	if err := scfg.Audit.EnableCheckpoints(ctx, skey, scfg.Keys); err != nil {
		return err
	}
	if _, err := scfg.Audit.Checkpoint(ctx); err != nil {
		return err
	}
	if origin := scfg.Audit.Signed().Origin; origin != cfg.auditOrigin {
		logger.Warn("the audit log's checkpoints keep the origin of their key, not --audit-origin", "origin", origin, "audit_origin", cfg.auditOrigin)
	}
	// The records in the data directory are sealed with a key from the
	// key store: whoever holds the data directory cannot change what a
	// second person approved.
	if scfg.RecordKey, err = scfg.Keys.ServiceKey(ctx, server.RecordKeyName, server.NewRecordKey); err != nil {
		return fmt.Errorf("the records' sealing key: %w", err)
	}
	if cfg.s3.Endpoint != "" {
		scfg.Sink, err = cfg.s3.Open(ctx)
	} else {
		// Deliveries wait for release in the data directory, out of the
		// researchers' reach; a release renames one into --out.
		scfg.Sink, err = extract.NewStagedDirSink(orIn(cfg.out, cfg.dataDir, "deliveries"), filepath.Join(cfg.dataDir, "staging"))
	}
	if err != nil {
		return err
	}
	if scfg.Signer, err = manifestSigner(ctx, cfg, scfg.Keys, logger); err != nil {
		return err
	}
	scfg.Metrics = metrics.New()
	scfg.Metrics.Audit(func() metrics.AuditHead {
		h, cp := scfg.Audit.Head(), scfg.Audit.Signed()
		m := metrics.AuditHead{Entries: h.Seq, Hash: h.Hash, Checkpoint: cp.Size}
		if cp.Size > 0 {
			m.Root = base64.StdEncoding.EncodeToString(cp.Root[:])
		}
		return m
	})

	srv, err := server.New(scfg)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		srv.Close()
		return err
	}
	l = scfg.Limits.Listener(l)
	var ml net.Listener
	if cfg.metricsListen != "" {
		if ml, err = net.Listen("tcp", cfg.metricsListen); err != nil {
			l.Close()
			srv.Close()
			return fmt.Errorf("--metrics-listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", scfg.Metrics.Handler())
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go hs.Serve(ml)
		defer hs.Close()
	}
	if cfg.sweepEvery > 0 {
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go sweeper.Run(sctx, srv, scfg.Audit, cfg.sweepEvery, logger) // srv: the key store's sweep, then the destroyed projects' records
	}
	if cfg.checkpointEvery > 0 {
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go scfg.Audit.SignEvery(cctx, cfg.checkpointEvery, func(err error) { logger.Error("audit checkpoint failed", "err", err) })
	}
	head, cp := scfg.Audit.Head(), scfg.Audit.Signed()
	attrs := []any{"addr", l.Addr().String(), "version", buildinfo.Read().Version, "mtls", scfg.TLS != nil,
		"keystore", where, "deliveries", scfg.Sink.Location("PROJECT", "DELIVERY"), "signing_key", scfg.Signer.PublicKey(),
		"audit_head_seq", head.Seq, "audit_head_hash", head.Hash, "audit_checkpoint_size", cp.Size,
		"audit_verifier_key", scfg.Audit.VerifierKey()}
	if ml != nil {
		attrs = append(attrs, "metrics", "http://"+ml.Addr().String()+"/metrics")
	}
	logger.Info("lopnrd serving", attrs...)
	if ready != nil {
		ready <- l.Addr().String()
	}
	err = srv.Serve(ctx, l)
	// A last checkpoint, so that what was entered since the last one is
	// signed too before lopnrd stops.
	cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, cerr := scfg.Audit.Checkpoint(cctx); cerr != nil {
		err = errors.Join(err, cerr)
	}
	return err
}
