package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lopnr/lopnr/keystore"
	"github.com/lopnr/lopnr/keystore/keystoretest"
	"github.com/lopnr/lopnr/keystore/local"
)

func TestKeysSweepLocal(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ks")
	s, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Projects created a year ago: one kept 90 days (now past), one held.
	past := keystoretest.NewClock(time.Now().AddDate(-1, 0, 0))
	ks := keystore.New(s, keystore.Options{Clock: past})
	ctx := context.Background()
	for _, id := range []string{"old", "held"} {
		if _, err := ks.CreateProject(ctx, keystore.ProjectSpec{ID: id, EPMDnr: "2025-1"}); err != nil {
			t.Fatal(err)
		}
		if _, err := ks.Assign(ctx, id, keystoretest.Numbers(t, 10)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ks.Hold(ctx, "held", "inquiry"); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LOPNR_VAULT_ADDR", "")
	t.Setenv("VAULT_ADDR", "")
	out, stderr, code := runLopnr(t, "", "keys", "sweep", "--keystore", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var r keystore.Receipt
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Project != "old" || r.Mappings != 10 {
		t.Fatalf("receipt %q (%v)", out, err)
	}
	if !strings.Contains(stderr, "1 project(s) destroyed") {
		t.Fatalf("stderr %q", stderr)
	}
	for _, n := range keystoretest.Numbers(t, 10) {
		if strings.Contains(out+stderr, n.Canonical()) {
			t.Fatal("sweep output holds an identity number")
		}
	}
	if _, stderr, code := runLopnr(t, "", "keys"); code != 2 || !strings.Contains(stderr, "sweep") {
		t.Fatalf("keys without subcommand: %d %q", code, stderr)
	}
}
