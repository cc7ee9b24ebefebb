package main

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nobody is the user the processes of the hardening test run as when the
// test runs as root, who may read any process's memory.
const nobody = 65534

// asUser runs cmd as the test's user, or as nobody when that is root.
func asUser(cmd *exec.Cmd) *exec.Cmd {
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	}
	return cmd
}

// TestSameUserCannotReadLopnrdMemory replays another process of lopnrd's
// user (a compromised tool, a debugger) reaching for lopnrd's memory,
// which holds the key store's identity and identity numbers in flight: it
// can read /proc/PID/environ and open /proc/PID/mem of an ordinary process
// of the user, and not of lopnrd; and lopnrd writes no core file.
func TestSameUserCannotReadLopnrdMemory(t *testing.T) {
	for _, tool := range []string{"cat", "dd", "sleep"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found", tool)
		}
	}
	dir := t.TempDir()
	bin := os.Args[0]
	if os.Geteuid() == 0 {
		// nobody must be able to run the test binary and write lopnrd's
		// data directory.
		os.Chmod(filepath.Dir(dir), 0o755)
		os.Chmod(dir, 0o755)
		bin = filepath.Join(dir, "lopnrd.test")
		b, err := os.ReadFile(os.Args[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bin, b, 0o755); err != nil {
			t.Fatal(err)
		}
		os.Mkdir(filepath.Join(dir, "data"), 0o700)
		os.Chown(filepath.Join(dir, "data"), nobody, nobody)
	}

	// An ordinary process of the user: the attack works.
	sleeper := asUser(exec.Command("sleep", "120"))
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sleeper.Process.Kill(); sleeper.Wait() }()
	if out, err := asUser(exec.Command("cat", "/proc/"+strconv.Itoa(sleeper.Process.Pid)+"/environ")).CombinedOutput(); err != nil {
		t.Fatalf("the attack does not work here even on an ordinary process: %v: %s", err, out)
	}

	lopnrd := asUser(exec.Command(bin, "--dev", "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "data"),
		"--metrics-listen", "", "--sweep-interval", "0"))
	// Its own local key store and directory, whatever the environment
	// says (deploy/dev/run sets a Vault and an S3 endpoint).
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LOPNR") && !strings.HasPrefix(kv, "VAULT_") {
			lopnrd.Env = append(lopnrd.Env, kv)
		}
	}
	lopnrd.Env = append(lopnrd.Env, childEnv+"=1", "LOPNRD_TEST_SECRET=in-the-environment")
	stderr, err := lopnrd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := lopnrd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { lopnrd.Process.Kill(); lopnrd.Wait() }()
	serving := make(chan bool, 1)
	var log strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line struct{ Msg string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "lopnrd serving" {
				serving <- true
				io.Copy(io.Discard, stderr)
				return
			}
			log.Write(append(sc.Bytes(), '\n'))
		}
		serving <- false
	}()
	select {
	case ok := <-serving:
		if !ok {
			t.Fatalf("lopnrd stopped before it served:\n%s", log.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("lopnrd did not start")
	}
	proc := "/proc/" + strconv.Itoa(lopnrd.Process.Pid)

	out, err := asUser(exec.Command("cat", proc+"/environ")).CombinedOutput()
	if err == nil || strings.Contains(string(out), "in-the-environment") || !strings.Contains(string(out), "Permission denied") {
		t.Errorf("another process of lopnrd's user reads its environment: %v, %d bytes", err, len(out))
	}
	out, err = asUser(exec.Command("dd", "if="+proc+"/mem", "of=/dev/null", "count=0")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Permission denied") {
		t.Errorf("another process of lopnrd's user opens its memory: %v: %s", err, out)
	}
	limits, err := os.ReadFile(proc + "/limits")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^Max core file size +0 +0 `).Match(limits) {
		t.Errorf("lopnrd may write a core file:\n%s", limits)
	}
}
