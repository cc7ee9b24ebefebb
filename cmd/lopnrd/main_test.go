package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
)

func TestRunDevServesHealthAndStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, config{listen: "127.0.0.1:0", dev: true, dataDir: t.TempDir()}, slog.New(slog.NewTextHandler(io.Discard, nil)), ready)
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("run: %v", err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
	defer ccancel()
	if _, err := healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after cancel: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("run did not stop after cancel")
	}
}

func TestRunRefusesUnsafeConfigurations(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		cfg  config
		want string
	}{
		{config{listen: "0.0.0.0:0", dev: true}, "only on a loopback address"},
		{config{listen: "127.0.0.1:0"}, "mutual TLS needs"},
		{config{listen: "127.0.0.1:0", tlsCert: "c.pem", tlsKey: "k.pem", clientCA: "ca.pem"}, "--policy is required"},
		{config{listen: "127.0.0.1:0", tlsCert: "c.pem", tlsKey: "k.pem", clientCA: "/nonexistent/ca.pem", policy: "p.yaml"}, "c.pem"},
	} {
		err := run(context.Background(), tc.cfg, quiet, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run(%+v) = %v, want an error containing %q", tc.cfg, err, tc.want)
		}
	}
}

func TestParseFlagsReadsEnvironment(t *testing.T) {
	t.Setenv("LOPNRD_LISTEN", "127.0.0.1:9999")
	t.Setenv("LOPNRD_DEV", "true")
	cfg, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.listen != "127.0.0.1:9999" || !cfg.dev {
		t.Fatalf("cfg = %+v, want listen and dev from the environment", cfg)
	}
	cfg, err = parseFlags([]string{"--listen", "127.0.0.1:1"}, io.Discard)
	if err != nil || cfg.listen != "127.0.0.1:1" {
		t.Fatalf("flag should win over environment: %+v, %v", cfg, err)
	}
}

// TestLopnrdDoesNotStartOnACutAuditLog: an operator with the data
// directory stops lopnrd, drops the audit log's last entry (the chain still
// verifies) and starts it again: it refuses, naming the cut, because the
// checkpoint it signed at its stop is kept in the key store.
func TestLopnrdDoesNotStartOnACutAuditLog(t *testing.T) {
	dir := t.TempDir()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := config{listen: "127.0.0.1:0", dev: true, dataDir: dir, auditOrigin: "lopnrd.test/audit"}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, quiet, ready) }()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("run: %v", err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for range 2 { // refused calls are audited
		lopnrv1.NewProjectServiceClient(conn).GetProject(ctx, &lopnrv1.GetProjectRequest{Id: "nope"})
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	path := filepath.Join(dir, "audit.log")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(b), "\n")
	if len(lines) < 3 {
		t.Fatalf("audit log:\n%s", b)
	}
	if err := os.WriteFile(path, []byte(strings.Join(lines[:len(lines)-2], "")), 0o600); err != nil {
		t.Fatal(err)
	}
	err = run(context.Background(), cfg, quiet, nil)
	if err == nil || !strings.Contains(err.Error(), "cut: the log ends at entry") {
		t.Fatalf("run on a cut audit log = %v, want it refused naming the cut", err)
	}
}
