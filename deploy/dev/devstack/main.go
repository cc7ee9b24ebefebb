// Command devstack builds, caches and runs the real servers that lopnr's
// integration tests and a developer's laptop need: an OpenBao dev server (the
// key store) and the Versity S3 gateway (the object store), both on free ports
// on 127.0.0.1.
//
// Usage:
//
//	devstack run [-only vault,s3] -- COMMAND [ARG…]   start the stack, run COMMAND with its addresses in the environment, stop the stack
//	devstack up  [-only vault,s3]                     start the stack and print how to reach it; Ctrl-C stops it
//	devstack tools                                    build the server binaries into the cache and print their paths
//
// The binaries are built from the Go module proxy at pinned versions (OpenBao
// from the small module in deploy/bao, versitygw with go install) and cached
// outside the repository, keyed by version, in $LOPNR_TOOLS_CACHE (default
// $XDG_CACHE_HOME/lopnr/tools or ~/.cache/lopnr/tools).
//
// The servers run in their own process groups with a parent-death signal, so
// they are stopped by PID when the command ends, when it fails, when it is
// interrupted, and even when devstack itself is killed.
//
// The environment given to COMMAND (and printed by up):
//
//	LOPNR_VAULT_ADDR, LOPNR_VAULT_TOKEN                          OpenBao (KV v2 mounted at secret/)
//	LOPNR_BAO_BIN                                                the bao binary, for tests that start their own
//	LOPNR_S3_ENDPOINT, LOPNR_S3_ACCESS_KEY, LOPNR_S3_SECRET_KEY, LOPNR_S3_REGION
//	LOPNR_INTEGRATION=1                                          integration tests must run: a missing server fails them
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

func init() {
	// Servers are started from the main goroutine with Pdeathsig, which the
	// kernel ties to the starting OS thread: keep main on one thread for the
	// whole run so the signal fires only when the process dies.
	runtime.LockOSThread()
}

func main() {
	log := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "devstack: "+format+"\n", args...) }
	if err := run(os.Args[1:], log); err != nil {
		var exit *exitError
		if errors.As(err, &exit) {
			os.Exit(exit.code)
		}
		log("%v", err)
		os.Exit(1)
	}
}

// exitError carries the exit status of the wrapped command through run.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func usage() error {
	return errors.New("usage: devstack run [-only vault,s3] -- COMMAND [ARG…] | devstack up [-only vault,s3] | devstack tools")
}

func run(args []string, log logf) error {
	if len(args) == 0 {
		return usage()
	}
	verb, args := args[0], args[1:]
	fs := flag.NewFlagSet("devstack "+verb, flag.ContinueOnError)
	only := fs.String("only", "vault,s3", "which servers to start: vault, s3 or both, comma-separated")
	if err := fs.Parse(args); err != nil {
		return err
	}
	want := map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		switch s = strings.TrimSpace(s); s {
		case "vault", "s3":
			want[s] = true
		case "":
		default:
			return fmt.Errorf("-only: unknown server %q, want vault or s3", s)
		}
	}
	root, err := repoRoot()
	if err != nil {
		return err
	}
	cache, err := cacheDir()
	if err != nil {
		return err
	}
	tools := &toolchain{root: root, cache: cache, log: log}

	switch verb {
	case "tools":
		bao, err := tools.bao()
		if err != nil {
			return err
		}
		gw, err := tools.versitygw()
		if err != nil {
			return err
		}
		fmt.Println(bao)
		fmt.Println(gw)
		return nil
	case "run":
		if fs.NArg() == 0 {
			return usage()
		}
		return withStack(tools, want, log, func(env []string) error { return runCommand(fs.Args(), env, log) })
	case "up":
		return withStack(tools, want, log, func(env []string) error {
			fmt.Println("# The dev stack is up. Paste these lines into another shell, then run go test ./... there:")
			for _, kv := range env {
				fmt.Printf("export %s\n", kv)
			}
			fmt.Println("# Ctrl-C stops the servers and removes their data.")
			ch := make(chan os.Signal, 1)
			signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
			<-ch
			return nil
		})
	default:
		return usage()
	}
}

type logf func(format string, args ...any)

// withStack starts the wanted servers, calls fn with their environment, and
// stops them whatever fn returns.
func withStack(tools *toolchain, want map[string]bool, log logf, fn func(env []string) error) (err error) {
	// Build before starting anything, so a slow first build does not eat into
	// a server's start-up timeout.
	var baoBin, gwBin string
	if want["vault"] {
		if baoBin, err = tools.bao(); err != nil {
			return err
		}
	}
	if want["s3"] {
		if gwBin, err = tools.versitygw(); err != nil {
			return err
		}
	}

	work, err := os.MkdirTemp("", "lopnr-devstack-")
	if err != nil {
		return err
	}
	var servers []*server
	defer func() {
		for i := len(servers) - 1; i >= 0; i-- {
			servers[i].stop()
		}
		var exit *exitError
		if err == nil || errors.As(err, &exit) {
			os.RemoveAll(work)
		} else {
			log("server logs kept in %s", work)
		}
	}()

	// Interrupts while servers start must still stop them: the deferred
	// stop above runs only if we return, so turn signals into a cancel.
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()

	env := []string{"LOPNR_INTEGRATION=1"}
	if want["vault"] {
		s, e, err := startOpenBao(ctx, baoBin, work)
		if s != nil {
			servers = append(servers, s)
		}
		if err != nil {
			return err
		}
		log("OpenBao %s up at %s", baoVersion, e[0][len("LOPNR_VAULT_ADDR="):])
		// The binary too, for tests that start a server of their own
		// (with TLS, say).
		env = append(env, e...)
		env = append(env, "LOPNR_BAO_BIN="+baoBin)
	}
	if want["s3"] {
		s, e, err := startVersityGW(ctx, gwBin, work)
		if s != nil {
			servers = append(servers, s)
		}
		if err != nil {
			return err
		}
		log("versitygw %s up at %s", versitygwVersion, e[0][len("LOPNR_S3_ENDPOINT="):])
		env = append(env, e...)
	}
	cancel()
	return fn(env)
}

// runCommand runs the wrapped command in devstack's own process group, so a
// terminal Ctrl-C reaches it directly; devstack waits for it to finish and
// then stops the servers.
func runCommand(argv, env []string, log logf) error {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", argv[0], err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case err := <-done:
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				code := exit.ExitCode()
				if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					code = 128 + int(ws.Signal())
					log("%s was stopped by %v; stopping the servers", argv[0], ws.Signal())
				} else {
					log("%s exited with status %d; stopping the servers", argv[0], code)
				}
				return &exitError{code: code}
			}
			return err
		case sig := <-sigs:
			log("%v: waiting for %s to stop, then stopping the servers", sig, argv[0])
			cmd.Process.Signal(sig)
			go func() {
				time.Sleep(30 * time.Second)
				cmd.Process.Kill()
			}()
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// repoRoot finds the lopnr checkout from the working directory upwards.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "deploy", "bao", "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no lopnr checkout (deploy/bao/go.mod) at or above %s", dir)
		}
	}
}

func cacheDir() (string, error) {
	if d := os.Getenv("LOPNR_TOOLS_CACHE"); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory (set LOPNR_TOOLS_CACHE): %w", err)
	}
	return filepath.Join(d, "lopnr", "tools"), nil
}
