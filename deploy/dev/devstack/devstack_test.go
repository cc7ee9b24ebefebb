package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestStopEndsTheWholeProcessGroup(t *testing.T) {
	dir := t.TempDir()
	// A shell that starts a child which ignores SIGTERM: stop must still
	// end both, the child by SIGKILL to the group.
	s, err := start("sh", dir, nil, "/bin/sh", "-c", `sh -c 'trap "" TERM; sleep 300' & echo $! > child.pid; wait`)
	if err != nil {
		t.Fatal(err)
	}
	var child int
	for deadline := time.Now().Add(30 * time.Second); child == 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(filepath.Join(dir, "child.pid")); err == nil && len(b) > 1 {
			child, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
	}
	if child == 0 {
		t.Fatal("child did not start")
	}
	s.stop()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if syscall.Kill(child, 0) != nil {
			return
		}
	}
	t.Fatalf("child %d still running after stop", child)
}

func TestEnsureBuildsOnceAndCaches(t *testing.T) {
	cache := t.TempDir()
	tc := &toolchain{cache: cache, log: t.Logf}
	builds := 0
	build := func(out string) *exec.Cmd {
		builds++
		return exec.Command("/bin/sh", "-c", "echo built > "+out)
	}
	for i := 0; i < 2; i++ {
		path, err := tc.ensure("tool-v1", "tool", "tool v1", build)
		if err != nil {
			t.Fatal(err)
		}
		if path != filepath.Join(cache, "tool-v1", "tool") {
			t.Fatalf("path %s", path)
		}
	}
	if builds != 1 {
		t.Fatalf("built %d times, want once", builds)
	}
	// A failed build leaves nothing behind that looks like a binary and
	// reports its log.
	_, err := tc.ensure("broken-v1", "broken", "broken v1", func(out string) *exec.Cmd {
		return exec.Command("/bin/sh", "-c", "echo compile error >&2; exit 3")
	})
	if err == nil {
		t.Fatal("failed build reported success")
	}
	if _, statErr := os.Stat(filepath.Join(cache, "broken-v1")); !os.IsNotExist(statErr) {
		t.Fatalf("failed build left %s behind", filepath.Join(cache, "broken-v1"))
	}
	if got := err.Error(); !strings.Contains(got, "compile error") {
		t.Fatalf("error %q does not show the build log", got)
	}
}
