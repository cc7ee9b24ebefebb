package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lopnr/lopnr/internal/testenv"
)

// TestDemoServiceSteps runs the lopnrd steps that lopnr demo prints (and
// the README shows), as printed, against a real lopnrd --dev: the project's
// rules take a second person before the job runs, and the delivery is
// reachable only once a second person releases it.
func TestDemoServiceSteps(t *testing.T) {
	if testing.Short() {
		t.Skip("builds lopnrd")
	}
	dir := t.TempDir()
	out, stderr, code := runLopnr(t, "", "demo", "--dir", dir, "--persons", "600")
	if code != 0 {
		t.Fatalf("demo: exit %d\n%s\n%s", code, out, stderr)
	}
	_, block, ok := strings.Cut(out, "(lopnrd --dev, where --as plays the other people; DELIVERY is the id submit prints):\n")
	if !ok {
		t.Fatalf("the demo prints no lopnrd steps:\n%s", out)
	}
	var steps [][]string
	for _, line := range strings.Split(strings.TrimRight(block, "\n"), "\n") {
		if !strings.HasPrefix(line, "  ") {
			break
		}
		steps = append(steps, strings.Fields(line))
	}
	if len(steps) < 5 || steps[0][0] != "lopnrd" || steps[0][len(steps[0])-1] != "&" {
		t.Fatalf("steps %q: want lopnrd … & first, then lopnr commands", steps)
	}

	bin := filepath.Join(t.TempDir(), "lopnrd")
	if b, err := exec.Command("go", "build", "-o", bin, "../lopnrd").CombinedOutput(); err != nil {
		t.Fatalf("go build lopnrd: %v\n%s", err, b)
	}
	args := append(steps[0][1:len(steps[0])-1], "--listen", "127.0.0.1:0", "--metrics-listen", "")
	addr, logs := startLopnrd(t, bin, args)
	clientEnv(t)
	t.Setenv("LOPNR_SERVER", addr)

	delivery, project := "", steps[1][3]
	for _, step := range steps[1:] {
		if step[0] != "lopnr" {
			t.Fatalf("step %q: want a lopnr command", step)
		}
		args := step[1:]
		for i, a := range args {
			if a == "DELIVERY" {
				args[i] = delivery
			}
		}
		out, stderr, code := runLopnr(t, "", args...)
		if code != 0 {
			t.Fatalf("lopnr %s: exit %d\n%s%s\nlopnrd's log:\n%s", strings.Join(args, " "), code, out, stderr, logs.String())
		}
		switch args[0] {
		case "projects":
			if args[1] == "create" {
				// Until the second person approves the rules, no job runs.
				spec := filepath.Join(dir, "sources", args[2], "job.yaml")
				if _, stderr, code := runLopnr(t, "", "submit", "--dev", spec); code != 1 || !strings.Contains(stderr, "no approved rules") {
					t.Errorf("submit before the rules are approved: exit %d, %q; want refused", code, stderr)
				}
			}
		case "submit":
			m := regexp.MustCompile(`succeeded: delivery (\S+)`).FindStringSubmatch(out + stderr)
			if m == nil {
				t.Fatalf("submit printed no delivery id:\n%s%s", out, stderr)
			}
			delivery = m[1]
			// Staged: the researcher gets no link before the release.
			if _, stderr, code := runLopnr(t, "", "presign", project, delivery, "--dev", "--as", "researcher"); code == 0 {
				t.Errorf("presign before release succeeded; want refused (%q)", stderr)
			}
		}
	}
	fetched := filepath.Join(dir, "fetched")
	entries, err := os.ReadDir(fetched)
	if err != nil || len(entries) < 4 {
		t.Fatalf("fetched %d files, %v; want the data files, manifest, signature and README", len(entries), err)
	}
	testenv.NoIdentityNumbers(t, "lopnrd's log", logs.String())
}

// startLopnrd runs lopnrd with args until the test ends and returns the
// address it serves on and its log.
func startLopnrd(t *testing.T, bin string, args []string) (string, *testenv.SyncBuffer) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	logs := &testenv.SyncBuffer{}
	s := testenv.StartLopnrd(t, cmd, logs, 2*time.Minute, logs.String)
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-s.Exited:
		case <-time.After(time.Minute):
			cmd.Process.Kill()
		}
		cmd.Wait()
	})
	return s.Addr, logs
}
