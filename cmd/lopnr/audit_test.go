package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lopnr/lopnr/server/audit"
)

func TestAuditVerify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := audit.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"project.create", "job.submit", "delivery.release"} {
		l.Append(audit.Entry{Identity: "CN=x", Action: a, Outcome: "ok"})
	}
	head := l.Head()
	l.Close()
	pin := fmt.Sprintf("%d:%s", head.Seq, head.Hash)
	if out, stderr, code := runLopnr(t, "", "audit", "verify", path, "--head", pin); code != 0 || !strings.Contains(out, "3 entries, chain intact") {
		t.Fatalf("verify: %d %s %s", code, out, stderr)
	}
	b, _ := os.ReadFile(path)
	lines := strings.SplitAfter(string(b), "\n")
	os.WriteFile(path, []byte(strings.Join(lines[:2], "")), 0o600) // truncate the last entry
	if _, stderr, code := runLopnr(t, "", "audit", "verify", path, "--head", pin); code != 1 || !strings.Contains(stderr, "truncated") {
		t.Fatalf("truncated log: %d %s", code, stderr)
	}
	os.WriteFile(path, []byte(lines[0]+lines[2]), 0o600) // remove the second
	if _, stderr, code := runLopnr(t, "", "audit", "verify", path); code != 1 || !strings.Contains(stderr, "line 2 (entry 2): removed") {
		t.Fatalf("removed entry: %d %s", code, stderr)
	}
}
