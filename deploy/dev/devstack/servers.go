package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	vault "github.com/hashicorp/vault/api"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// startTimeout bounds how long a server may take to answer after it starts.
const startTimeout = 60 * time.Second

// server is one started server process.
type server struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{}
	log    string
}

// start runs the binary in its own process group, with SIGKILL as its
// parent-death signal, logging to dir/name.log.
func start(name, dir string, env []string, bin string, args ...string) (*server, error) {
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	s := &server{name: name, cmd: cmd, exited: make(chan struct{}), log: logPath}
	go func() { cmd.Wait(); close(s.exited) }()
	return s, nil
}

// stop sends SIGTERM to the server's process group, waits up to ten seconds
// for the server to exit, then sends SIGKILL to whatever is left of the
// group, so no child it started outlives it.
func (s *server) stop() {
	pgid := s.cmd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
	}
	syscall.Kill(-pgid, syscall.SIGKILL)
	<-s.exited
}

// waitReady polls ready until it succeeds, the server exits, ctx ends or
// startTimeout passes.
func (s *server) waitReady(ctx context.Context, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	var last error
	for {
		attempt, cancelAttempt := context.WithTimeout(ctx, 2*time.Second)
		last = ready(attempt)
		cancelAttempt()
		if last == nil {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("%s exited before it answered (%v); the last lines of %s:\n%s", s.name, s.cmd.ProcessState, s.log, tail(s.log, 20))
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("%s did not answer within %s: %v; the last lines of %s:\n%s", s.name, startTimeout, last, s.log, tail(s.log, 20))
			}
			return fmt.Errorf("%s: interrupted while starting", s.name)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// freePort asks the kernel for a free port on 127.0.0.1.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port), nil
}

// startOpenBao starts an OpenBao dev server (in memory, KV v2 at secret/)
// and waits until sys/health answers.
func startOpenBao(ctx context.Context, bin, work string) (*server, []string, error) {
	addr, err := freePort()
	if err != nil {
		return nil, nil, err
	}
	token := "dev-" + randomHex(16)
	home := filepath.Join(work, "bao-home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, nil, err
	}
	// HOME keeps the dev server's token helper file out of the user's home.
	s, err := start("openbao", work, []string{"HOME=" + home}, bin,
		"server", "-dev", "-dev-root-token-id="+token, "-dev-listen-address="+addr, "-dev-no-store-token")
	if err != nil {
		return nil, nil, err
	}
	url := "http://" + addr
	cfg := vault.DefaultConfig()
	cfg.Address = url
	cfg.MaxRetries = 0
	client, err := vault.NewClient(cfg)
	if err != nil {
		return s, nil, err
	}
	err = s.waitReady(ctx, func(ctx context.Context) error {
		h, err := client.Sys().HealthWithContext(ctx)
		if err != nil {
			return err
		}
		if !h.Initialized || h.Sealed {
			return fmt.Errorf("initialized=%t sealed=%t", h.Initialized, h.Sealed)
		}
		return nil
	})
	if err != nil {
		return s, nil, err
	}
	return s, []string{"LOPNR_VAULT_ADDR=" + url, "LOPNR_VAULT_TOKEN=" + token}, nil
}

// startVersityGW starts the Versity S3 gateway over a fresh POSIX directory
// and waits until ListBuckets answers with the root credentials.
func startVersityGW(ctx context.Context, bin, work string) (*server, []string, error) {
	addr, err := freePort()
	if err != nil {
		return nil, nil, err
	}
	data := filepath.Join(work, "s3-data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, nil, err
	}
	access, secret := "lopnr-dev-"+randomHex(4), randomHex(20)
	s, err := start("versitygw", work, []string{"ROOT_ACCESS_KEY=" + access, "ROOT_SECRET_KEY=" + secret}, bin,
		"--port", addr, "posix", data)
	if err != nil {
		return nil, nil, err
	}
	const region = "us-east-1"
	client, err := minio.New(addr, &minio.Options{Creds: credentials.NewStaticV4(access, secret, ""), Region: region})
	if err != nil {
		return s, nil, err
	}
	err = s.waitReady(ctx, func(ctx context.Context) error {
		_, err := client.ListBuckets(ctx)
		return err
	})
	if err != nil {
		return s, nil, err
	}
	return s, []string{
		"LOPNR_S3_ENDPOINT=http://" + addr,
		"LOPNR_S3_ACCESS_KEY=" + access,
		"LOPNR_S3_SECRET_KEY=" + secret,
		"LOPNR_S3_REGION=" + region,
	}, nil
}
