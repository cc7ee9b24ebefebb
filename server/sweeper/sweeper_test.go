package sweeper

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lopnr/lopnr/keystore"
	"github.com/lopnr/lopnr/keystore/keystoretest"
	"github.com/lopnr/lopnr/keystore/local"
	"github.com/lopnr/lopnr/server/audit"
)

func TestSweepIsAudited(t *testing.T) {
	dir := t.TempDir()
	store, err := local.Open(filepath.Join(dir, "ks"))
	if err != nil {
		t.Fatal(err)
	}
	clock := keystoretest.NewClock(time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC))
	keys := keystore.New(store, keystore.Options{Clock: clock})
	ctx := context.Background()
	for _, id := range []string{"short", "long"} {
		retain := 10 * 24 * time.Hour
		if id == "long" {
			retain = 400 * 24 * time.Hour
		}
		if _, err := keys.CreateProject(ctx, keystore.ProjectSpec{ID: id, EPMDnr: "x", RetainUntil: clock.Now().Add(retain)}); err != nil {
			t.Fatal(err)
		}
		if _, err := keys.Assign(ctx, id, keystoretest.Numbers(t, 30)); err != nil {
			t.Fatal(err)
		}
	}
	logPath := filepath.Join(dir, "audit.log")
	log, err := audit.Open(logPath, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := Once(ctx, keys, log); err != nil || len(r) != 0 {
		t.Fatalf("first sweep: %v, %v", r, err)
	}
	clock.Advance(11 * 24 * time.Hour)
	r, err := Once(ctx, keys, log)
	if err != nil || len(r) != 1 || r[0].Project != "short" {
		t.Fatalf("sweep after retention: %+v, %v", r, err)
	}
	log.Close()
	b, _ := os.ReadFile(logPath)
	text := string(b)
	// The intent first, then the receipt.
	ls := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(ls) != 2 || !strings.Contains(ls[0], `"action":"key.destroy","project":"short","outcome":"intent"`) ||
		!strings.Contains(ls[1], `"action":"key.destroy","project":"short","outcome":"ok"`) || !strings.Contains(ls[1], `"digest":"`+r[0].Digest+`"`) {
		t.Fatalf("audit log:\n%s", text)
	}
	for _, n := range keystoretest.Numbers(t, 30) {
		if strings.Contains(text, n.Canonical()) {
			t.Fatal("the audit log holds an identity number")
		}
	}
	f, _ := os.Open(logPath)
	defer f.Close()
	if _, err := audit.Verify(f); err != nil {
		t.Fatal(err)
	}
}

type failing struct{}

func (failing) Due(context.Context) ([]string, error) {
	return nil, errors.New("vault unreachable")
}

func (failing) SweepProject(context.Context, string) (keystore.Receipt, error) {
	return keystore.Receipt{}, errors.New("vault unreachable")
}

// TestSweeperCannotDestroyWhatTheLogCannotRecord: with the audit log
// unwritable, the sweep destroys nothing: the kodnyckel past its retention
// is still there, and destroyed by the next sweep once the log works.
func TestSweeperCannotDestroyWhatTheLogCannotRecord(t *testing.T) {
	dir := t.TempDir()
	store, err := local.Open(filepath.Join(dir, "ks"))
	if err != nil {
		t.Fatal(err)
	}
	clock := keystoretest.NewClock(time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC))
	keys := keystore.New(store, keystore.Options{Clock: clock})
	ctx := context.Background()
	if _, err := keys.CreateProject(ctx, keystore.ProjectSpec{ID: "short", EPMDnr: "x", RetainUntil: clock.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Hour)
	logPath := filepath.Join(dir, "audit.log")
	log, err := audit.Open(logPath, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	log.Close() // every write fails from here
	if r, err := Once(ctx, keys, log); err == nil || len(r) != 0 || !strings.Contains(err.Error(), "did not destroy short") {
		t.Fatalf("sweep with the audit log unwritable: %+v, %v", r, err)
	}
	if p, err := keys.Project(ctx, "short"); err != nil || p.Destroying {
		t.Fatalf("the project after a sweep that could not audit: %+v, %v", p, err)
	}
	if log, err = audit.Open(logPath, clock.Now); err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	if r, err := Once(ctx, keys, log); err != nil || len(r) != 1 {
		t.Fatalf("sweep with the log back: %+v, %v", r, err)
	}
}

func TestFailedSweepIsAuditedAndRunStops(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	log, _ := audit.Open(path, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		Run(ctx, failing{}, log, 10*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
		close(done)
	}()
	// Two failed sweeps audited: Run goes on after a failure. (A minute
	// bounds a hung test; the interval is 10 ms.)
	for deadline := time.Now().Add(time.Minute); log.Head().Seq < 2 && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
	}
	cancel()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("Run did not stop")
	}
	if h := log.Head(); h.Seq < 2 {
		t.Fatalf("%d audited sweeps, want several", h.Seq)
	}
	log.Close()
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), `"action":"key.sweep"`) || !strings.Contains(string(b), `"outcome":"failed"`) {
		t.Fatalf("audit log:\n%s", b)
	}
}
