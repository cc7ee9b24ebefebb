package vault_test

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lopnr/lopnr/internal/testenv"
	"github.com/lopnr/lopnr/keystore"
	"github.com/lopnr/lopnr/keystore/keystoretest"
	"github.com/lopnr/lopnr/keystore/vault"
)

// startTLSBao starts an OpenBao dev server with TLS (-dev-tls makes a CA
// and a certificate) and returns its address and the CA file.
func startTLSBao(t *testing.T) (addr, ca, token string) {
	t.Helper()
	bin := testenv.BaoBinary(t)
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	token = "tls-test-token"
	cmd := exec.Command(bin, "server", "-dev", "-dev-tls", "-dev-tls-cert-dir="+dir, "-dev-root-token-id="+token,
		"-dev-listen-address=127.0.0.1:"+strconv.Itoa(port), "-dev-no-store-token")
	cmd.Env = append(os.Environ(), "HOME="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	logf, _ := os.Create(filepath.Join(dir, "bao.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		logf.Close()
	})
	addr, ca = "https://127.0.0.1:"+strconv.Itoa(port), filepath.Join(dir, "vault-ca.pem")
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(ca); err == nil {
			if s, err := vault.New(context.Background(), vault.Config{Address: addr, Token: token, TLS: vault.TLS{CACert: ca}}); err == nil {
				_ = s
				return addr, ca, token
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "bao.log"))
			t.Fatalf("OpenBao with TLS did not come up:\n%s", b)
		}
	}
}

// TestTLS runs the key store over TLS against a real OpenBao: with the CA
// it works, without it the certificate is refused, and bad TLS files give
// a clear error.
func TestTLS(t *testing.T) {
	addr, ca, token := startTLSBao(t)
	ctx := context.Background()
	s, err := vault.New(ctx, vault.Config{Address: addr, Token: token, TLS: vault.TLS{CACert: ca, ServerName: "localhost"}})
	if err != nil {
		t.Fatalf("with the CA: %v", err)
	}
	ks := keystore.New(s, keystore.Options{})
	if _, err := ks.CreateProject(ctx, keystore.ProjectSpec{ID: "tls", EPMDnr: "2026-1"}); err != nil {
		t.Fatal(err)
	}
	if rs, err := ks.Assign(ctx, "tls", keystoretest.Numbers(t, 20)); err != nil || len(rs) != 20 {
		t.Fatalf("assign over TLS: %v", err)
	}
	if _, err := vault.New(ctx, vault.Config{Address: addr, Token: token}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("without the CA: %v, want a certificate error", err)
	}
	// The dev server's own certificate and key stand in for a client
	// certificate: the files load and the connection works.
	dir := filepath.Dir(ca)
	if _, err := vault.New(ctx, vault.Config{Address: addr, Token: token, TLS: vault.TLS{CACert: ca, ClientCert: filepath.Join(dir, "vault-cert.pem"), ClientKey: filepath.Join(dir, "vault-key.pem")}}); err != nil {
		t.Fatalf("with a client certificate: %v", err)
	}
	_, err = vault.New(ctx, vault.Config{Address: addr, Token: token, TLS: vault.TLS{CACert: ca, ClientCert: filepath.Join(dir, "vault-cert.pem"), ClientKey: "/nonexistent/key.pem"}})
	if err == nil || !strings.Contains(err.Error(), "TLS") || errors.Is(err, vault.ErrAuth) {
		t.Fatalf("a missing client key: %v", err)
	}
}
