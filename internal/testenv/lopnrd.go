package testenv

import (
	"bufio"
	"encoding/json"
	"io"
	"os/exec"
	"testing"
	"time"
)

// Serving is a lopnrd that StartLopnrd started: what its "lopnrd serving"
// log line names, and a channel closed when its standard error closes
// (it exited).
type Serving struct {
	Addr, Metrics string
	Exited        <-chan struct{}
}

// StartLopnrd starts cmd, a lopnrd that logs JSON lines on standard error,
// writes each line to logs, and waits up to timeout for the line that says
// it serves. When lopnrd exits first, or the time passes, it fails the
// test with logText (the log so far, as the caller keeps it).
func StartLopnrd(t testing.TB, cmd *exec.Cmd, logs io.Writer, timeout time.Duration, logText func() string) Serving {
	t.Helper()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready, exited := make(chan Serving, 1), make(chan struct{})
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			logs.Write(append(sc.Bytes(), '\n'))
			var line struct{ Msg, Addr, Metrics string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "lopnrd serving" {
				ready <- Serving{Addr: line.Addr, Metrics: line.Metrics}
			}
		}
	}()
	select {
	case s := <-ready:
		s.Exited = exited
		return s
	case <-exited:
		cmd.Wait()
		t.Fatalf("lopnrd exited at start; its log:\n%s", logText())
	case <-time.After(timeout):
		cmd.Process.Kill()
		t.Fatalf("lopnrd did not start in %v; its log:\n%s", timeout, logText())
	}
	return Serving{}
}
