package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const (
	// versitygwVersion is the pinned Versity S3 gateway release.
	versitygwVersion = "v1.8.0"
	versitygwModule  = "github.com/versity/versitygw/cmd/versitygw"
	// baoVersion names the OpenBao release that deploy/bao/go.mod pins
	// (github.com/openbao/openbao v0.0.0-20250828202315-f9407a27fbee).
	baoVersion = "v2.4.0"
)

// toolchain builds the server binaries once and caches them by version.
type toolchain struct {
	root  string // the lopnr checkout
	cache string // where built binaries live
	log   logf
}

// bao returns the path of the OpenBao binary, building it on first use.
// The cache key is the pinned version plus a hash of the build module's
// files, so editing deploy/bao rebuilds.
func (tc *toolchain) bao() (string, error) {
	src := filepath.Join(tc.root, "deploy", "bao")
	h := sha256.New()
	for _, name := range []string{"go.mod", "go.sum", "main.go"} {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			return "", fmt.Errorf("read OpenBao build module: %w", err)
		}
		fmt.Fprintf(h, "%s\x00%d\x00", name, len(b))
		h.Write(b)
	}
	key := "bao-" + baoVersion + "-" + hex.EncodeToString(h.Sum(nil))[:12]
	return tc.ensure(key, "bao", "OpenBao "+baoVersion+" (3 to 5 minutes on 2 cores, once)", func(out string) *exec.Cmd {
		cmd := exec.Command("go", "build", "-trimpath", "-o", out, ".")
		cmd.Dir = src
		// Some of OpenBao's modules are missing from the checksum database;
		// go.sum in deploy/bao pins what was verified when it was written.
		cmd.Env = append(os.Environ(), "GONOSUMDB=github.com/openbao", "GOFLAGS=-mod=mod", "GOWORK=off")
		return cmd
	})
}

// versitygw returns the path of the versitygw binary, building it on first use.
func (tc *toolchain) versitygw() (string, error) {
	key := "versitygw-" + versitygwVersion
	return tc.ensure(key, "versitygw", "versitygw "+versitygwVersion+" (about 1 minute, once)", func(out string) *exec.Cmd {
		cmd := exec.Command("go", "install", "-trimpath", versitygwModule+"@"+versitygwVersion)
		cmd.Dir = os.TempDir()
		cmd.Env = append(os.Environ(), "GOBIN="+filepath.Dir(out), "GOFLAGS=", "GOWORK=off")
		return cmd
	})
}

// ensure returns cache/key/name, running build into a fresh directory and
// renaming it into place when it is missing. A file lock serialises
// concurrent builds of the same tool.
func (tc *toolchain) ensure(key, name, what string, build func(out string) *exec.Cmd) (string, error) {
	final := filepath.Join(tc.cache, key, name)
	if fi, err := os.Stat(final); err == nil && fi.Mode().IsRegular() {
		return final, nil
	}
	if err := os.MkdirAll(tc.cache, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(tc.cache, key+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(final); err == nil {
		return final, nil // another devstack built it while we waited
	}

	tmp, err := os.MkdirTemp(tc.cache, key+".build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, name)
	tc.log("building %s into %s", what, filepath.Dir(final))
	start := time.Now()
	cmd := build(out)
	logPath := filepath.Join(tc.cache, key+".build.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return "", err
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build %s: %w; the last lines of %s:\n%s", name, err, logPath, tail(logPath, 20))
	}
	if err := os.Rename(tmp, filepath.Dir(final)); err != nil {
		return "", err
	}
	tc.log("built %s in %s", name, time.Since(start).Round(time.Second))
	return final, nil
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}
