package vault_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/lopnr/lopnr/internal/testenv"
	"github.com/lopnr/lopnr/keystore"
	"github.com/lopnr/lopnr/keystore/keystoretest"
	"github.com/lopnr/lopnr/keystore/vault"
)

// root returns a client with the dev server's root token, for setting up
// what an operator would: the policy, tokens, AppRole.
func root(t testing.TB) (*vaultapi.Client, testenv.VaultEnv) {
	t.Helper()
	env := testenv.Vault(t)
	cfg := vaultapi.DefaultConfig()
	cfg.Address = env.Addr
	c, err := vaultapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(env.Token)
	return c, env
}

// policyToken installs deploy/vault/lopnr.hcl and returns a token limited
// to it: the suite runs with least privilege, not the root token.
func policyToken(t testing.TB, c *vaultapi.Client) string {
	t.Helper()
	hcl, err := os.ReadFile("../../deploy/vault/lopnr.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Sys().PutPolicy("lopnr", string(hcl)); err != nil {
		t.Fatalf("put policy: %v", err)
	}
	s, err := c.Auth().Token().Create(&vaultapi.TokenCreateRequest{Policies: []string{"lopnr"}, TTL: "1h"})
	if err != nil {
		t.Fatalf("create token: %v", err)
	}
	return s.Auth.ClientToken
}

var namespaces atomic.Int64

func newStore(t testing.TB, env testenv.VaultEnv, token, prefix string) *vault.Store {
	t.Helper()
	s, err := vault.New(context.Background(), vault.Config{Address: env.Addr, Token: token, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSuite(t *testing.T) {
	c, env := root(t)
	token := policyToken(t, c)
	keystoretest.Run(t, func(t *testing.T) func() keystore.Store {
		prefix := fmt.Sprintf("lopnr/test-%d-%d", time.Now().UnixNano(), namespaces.Add(1))
		return func() keystore.Store { return newStore(t, env, token, prefix) }
	})
}

func TestPathsCarryRetentionAndDestructionRemovesEveryVersion(t *testing.T) {
	c, env := root(t)
	prefix := fmt.Sprintf("lopnr/meta-%d", time.Now().UnixNano())
	clock := keystoretest.NewClock(time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC))
	ks := keystore.New(newStore(t, env, policyToken(t, c), prefix), keystore.Options{Clock: clock})
	ctx := context.Background()
	p, err := ks.CreateProject(ctx, keystore.ProjectSpec{ID: "p", EPMDnr: "2026-1"})
	if err != nil {
		t.Fatal(err)
	}
	ns := keystoretest.Numbers(t, 100)
	if _, err := ks.Assign(ctx, "p", ns[:50]); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.Assign(ctx, "p", ns); err != nil { // head gets a second version
		t.Fatal(err)
	}
	kv := c.KVv2("secret")
	paths := []string{"meta", "secrets", "head"}
	for _, path := range paths {
		m, err := kv.GetMetadata(ctx, prefix+"/projects/p/"+path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if m.CustomMetadata["retain_until"] != p.RetainUntil.Format(time.RFC3339) || m.CustomMetadata["project"] != "p" {
			t.Errorf("%s: custom metadata %v, want project and retain_until %s", path, m.CustomMetadata, p.RetainUntil.Format(time.RFC3339))
		}
		if m.DeleteVersionAfter < p.RetainUntil.Sub(p.Created) || !m.CASRequired {
			t.Errorf("%s: delete_version_after %s, cas_required %t", path, m.DeleteVersionAfter, m.CASRequired)
		}
	}
	if m, _ := kv.GetMetadata(ctx, prefix+"/projects/p/head"); m == nil || len(m.Versions) < 2 {
		t.Fatalf("head should have two versions before destruction")
	}
	clock.Advance(91 * 24 * time.Hour)
	if _, err := ks.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	// Every version is gone, not soft-deleted: not even the root token
	// finds metadata or an old version.
	for _, path := range paths {
		if _, err := kv.GetMetadata(ctx, prefix+"/projects/p/"+path); err == nil {
			t.Errorf("%s: metadata survives destruction", path)
		}
		if _, err := kv.GetVersion(ctx, prefix+"/projects/p/"+path, 1); !errors.Is(err, vaultapi.ErrSecretNotFound) {
			t.Errorf("%s: version 1 readable after destruction: %v", path, err)
		}
	}
	if l, err := c.Logical().List("secret/metadata/" + prefix + "/projects/p/map"); err != nil || l != nil {
		t.Errorf("mapping chunks survive destruction: %v %v", l, err)
	}
}

func TestPolicyIsLeastPrivilege(t *testing.T) {
	c, env := root(t)
	token := policyToken(t, c)
	limited, err := vaultapi.NewClient(&vaultapi.Config{Address: env.Addr})
	if err != nil {
		t.Fatal(err)
	}
	limited.SetToken(token)
	ctx := context.Background()
	if _, err := c.KVv2("secret").Put(ctx, "other-service/x", map[string]any{"a": "b"}); err != nil {
		t.Fatal(err)
	}
	for name, call := range map[string]func() error{
		"read outside prefix": func() error { _, err := limited.KVv2("secret").Get(ctx, "other-service/x"); return err },
		"write outside prefix": func() error {
			_, err := limited.KVv2("secret").Put(ctx, "other-service/y", map[string]any{"a": "b"})
			return err
		},
		"soft delete in prefix": func() error {
			return limited.KVv2("secret").Delete(ctx, "lopnr/anything")
		},
		"sys": func() error { _, err := limited.Sys().ListPolicies(); return err },
	} {
		var re *vaultapi.ResponseError
		if err := call(); !errors.As(err, &re) || re.StatusCode != 403 {
			t.Errorf("%s: %v, want 403", name, err)
		}
	}
}

func TestAppRole(t *testing.T) {
	c, env := root(t)
	policyToken(t, c) // installs the policy
	if err := c.Sys().EnableAuthWithOptions("approle", &vaultapi.EnableAuthOptions{Type: "approle"}); err != nil && !strings.Contains(err.Error(), "already in use") {
		t.Fatal(err)
	}
	if _, err := c.Logical().Write("auth/approle/role/lopnr", map[string]any{"token_policies": "lopnr", "token_ttl": "10m"}); err != nil {
		t.Fatal(err)
	}
	rid, err := c.Logical().Read("auth/approle/role/lopnr/role-id")
	if err != nil {
		t.Fatal(err)
	}
	sid, err := c.Logical().Write("auth/approle/role/lopnr/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	roleID, secretID := rid.Data["role_id"].(string), sid.Data["secret_id"].(string)
	ctx := context.Background()
	s, err := vault.New(ctx, vault.Config{Address: env.Addr, Prefix: fmt.Sprintf("lopnr/approle-%d", time.Now().UnixNano()), AppRole: vault.AppRole{RoleID: roleID, SecretID: secretID}})
	if err != nil {
		t.Fatalf("AppRole login: %v", err)
	}
	ks := keystore.New(s, keystore.Options{})
	if _, err := ks.CreateProject(ctx, keystore.ProjectSpec{ID: "p", EPMDnr: "2026-1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := vault.New(ctx, vault.Config{Address: env.Addr, AppRole: vault.AppRole{RoleID: roleID, SecretID: "wrong"}}); !errors.Is(err, vault.ErrAuth) || !strings.Contains(err.Error(), "AppRole login refused") {
		t.Fatalf("wrong secret id: %v", err)
	}
}

func TestWrongOrMissingCredentials(t *testing.T) {
	_, env := root(t)
	ctx := context.Background()
	for name, cfg := range map[string]vault.Config{
		"wrong token": {Address: env.Addr, Token: "hvs.not-a-token"},
		"no token":    {Address: env.Addr},
	} {
		_, err := vault.New(ctx, cfg)
		if !errors.Is(err, vault.ErrAuth) || !strings.Contains(err.Error(), env.Addr) {
			t.Errorf("%s: %v; want ErrAuth naming the address", name, err)
		}
	}
	if _, err := vault.New(ctx, vault.Config{}); err == nil || !strings.Contains(err.Error(), "no address") {
		t.Errorf("no address: %v", err)
	}
	if _, err := vault.New(ctx, vault.Config{Address: env.Addr, Token: "x", TLS: vault.TLS{CACert: "/nonexistent/ca.pem"}}); err == nil || !strings.Contains(err.Error(), "TLS") {
		t.Errorf("missing CA file: %v", err)
	}
}
