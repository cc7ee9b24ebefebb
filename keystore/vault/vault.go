// Package vault is the production keystore backend: HashiCorp Vault or
// OpenBao, KV secrets engine version 2.
//
// Every entry is a KV v2 secret at <mount>/data/<prefix>/<path> holding its
// bytes base64-encoded under the key "b". Every write is a check-and-set
// (the metadata also sets cas_required, so no other writer can overwrite
// blindly), and every path carries the project and its retain_until in
// custom metadata, with delete_version_after as a backstop should the
// sweeper never run. Destroy is a metadata delete, which removes every
// version: a KV soft delete is not destruction.
//
// The policy the service needs is deploy/vault/lopnr.hcl: its prefix only,
// and only the capabilities used here.
package vault

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/lopnr/lopnr/keystore"
)

var _ keystore.Store = (*Store)(nil)

// Config says how to reach and authenticate to Vault.
type Config struct {
	Address string // https://vault.region.example:8200
	Mount   string // the KV v2 mount; default "secret"
	Prefix  string // the service's folder in the mount; default "lopnr"

	// Token authentication, or AppRole when AppRole.RoleID is set.
	Token   string
	AppRole AppRole

	TLS     TLS
	Timeout time.Duration // per request; default 60 s
}

// AppRole is AppRole authentication.
type AppRole struct {
	RoleID, SecretID string
	Mount            string // default "approle"
}

// TLS is the client's TLS configuration.
type TLS struct {
	CACert     string // PEM file of the CA that signed Vault's certificate
	ClientCert string // PEM files of a client certificate, for TLS client auth
	ClientKey  string
	ServerName string
}

// Store is a keystore.Store over Vault KV v2.
type Store struct {
	client *vault.Client
	kv     *vault.KVv2
	cfg    Config
	mu     sync.Mutex // serialises AppRole re-login
}

// ErrAuth is wrapped by errors from missing or rejected credentials.
var ErrAuth = errors.New("vault credentials")

// New connects to Vault, authenticates and checks the credentials.
func New(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Address == "" {
		return nil, errors.New("vault: no address (set LOPNR_VAULT_ADDR or --vault-addr)")
	}
	if cfg.Mount == "" {
		cfg.Mount = "secret"
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "lopnr"
	}
	cfg.Prefix = strings.Trim(cfg.Prefix, "/")
	if cfg.AppRole.Mount == "" {
		cfg.AppRole.Mount = "approle"
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 60 * time.Second
	}
	vc := vault.DefaultConfig()
	vc.Address = cfg.Address
	vc.Timeout = cfg.Timeout
	if cfg.TLS != (TLS{}) {
		if err := vc.ConfigureTLS(&vault.TLSConfig{
			CACert: cfg.TLS.CACert, ClientCert: cfg.TLS.ClientCert, ClientKey: cfg.TLS.ClientKey, TLSServerName: cfg.TLS.ServerName,
		}); err != nil {
			return nil, fmt.Errorf("vault %s: TLS: %w", cfg.Address, err)
		}
	}
	if vc.Error != nil {
		return nil, fmt.Errorf("vault %s: %w", cfg.Address, vc.Error)
	}
	client, err := vault.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("vault %s: %w", cfg.Address, err)
	}
	client.ClearToken() // never a token from the environment by accident
	s := &Store{client: client, kv: client.KVv2(cfg.Mount), cfg: cfg}
	switch {
	case cfg.AppRole.RoleID != "":
		if err := s.login(ctx); err != nil {
			return nil, err
		}
	case cfg.Token != "":
		client.SetToken(cfg.Token)
	default:
		return nil, fmt.Errorf("vault %s: %w: no token and no AppRole role id (set LOPNR_VAULT_TOKEN)", cfg.Address, ErrAuth)
	}
	if _, err := client.Auth().Token().LookupSelfWithContext(ctx); err != nil {
		if isStatus(err, http.StatusForbidden) {
			return nil, fmt.Errorf("vault %s: %w: the token was rejected (expired, revoked or wrong)", cfg.Address, ErrAuth)
		}
		return nil, fmt.Errorf("vault %s: %w", cfg.Address, err)
	}
	return s, nil
}

// login authenticates with AppRole and sets the token.
func (s *Store) login(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.client.ClearToken()
	secret, err := s.client.Logical().WriteWithContext(ctx, "auth/"+s.cfg.AppRole.Mount+"/login", map[string]any{
		"role_id": s.cfg.AppRole.RoleID, "secret_id": s.cfg.AppRole.SecretID,
	})
	if err != nil {
		if isStatus(err, http.StatusBadRequest) || isStatus(err, http.StatusForbidden) {
			return fmt.Errorf("vault %s: %w: AppRole login refused: check the role id and secret id", s.cfg.Address, ErrAuth)
		}
		return fmt.Errorf("vault %s: AppRole login: %w", s.cfg.Address, err)
	}
	if secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "" {
		return fmt.Errorf("vault %s: AppRole login returned no token", s.cfg.Address)
	}
	s.client.SetToken(secret.Auth.ClientToken)
	return nil
}

// do runs fn, logging in again once if an AppRole token has expired.
func (s *Store) do(ctx context.Context, fn func() error) error {
	err := fn()
	if err != nil && s.cfg.AppRole.RoleID != "" && isStatus(err, http.StatusForbidden) {
		if lerr := s.login(ctx); lerr != nil {
			return lerr
		}
		err = fn()
	}
	return err
}

func isStatus(err error, code int) bool {
	var re *vault.ResponseError
	return errors.As(err, &re) && re.StatusCode == code
}

func (s *Store) full(path string) string { return s.cfg.Prefix + "/" + path }

// Read implements keystore.Store.
func (s *Store) Read(ctx context.Context, path string) (keystore.Entry, error) {
	var secret *vault.KVSecret
	err := s.do(ctx, func() (err error) {
		secret, err = s.kv.Get(ctx, s.full(path))
		return err
	})
	if errors.Is(err, vault.ErrSecretNotFound) {
		return keystore.Entry{}, fmt.Errorf("%s: %w", path, keystore.ErrNotFound)
	}
	if err != nil {
		return keystore.Entry{}, err
	}
	b64, ok := secret.Data["b"].(string)
	if !ok || secret.VersionMetadata == nil {
		return keystore.Entry{}, fmt.Errorf("%s: not a lopnr entry", path)
	}
	data, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return keystore.Entry{}, fmt.Errorf("%s: not a lopnr entry: %v", path, err)
	}
	return keystore.Entry{Data: data, Version: secret.VersionMetadata.Version}, nil
}

// Write implements keystore.Store.
func (s *Store) Write(ctx context.Context, path string, data []byte, cas int, meta keystore.PathMeta) (int, error) {
	var secret *vault.KVSecret
	err := s.do(ctx, func() (err error) {
		secret, err = s.kv.Put(ctx, s.full(path), map[string]any{"b": base64.StdEncoding.EncodeToString(data)}, vault.WithCheckAndSet(cas))
		return err
	})
	if err != nil {
		var re *vault.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusBadRequest && strings.Contains(strings.Join(re.Errors, " "), "check-and-set") {
			return 0, fmt.Errorf("%s: %w", path, keystore.ErrConflict)
		}
		return 0, err
	}
	if err := s.SetMeta(ctx, path, meta); err != nil {
		return 0, err
	}
	return secret.VersionMetadata.Version, nil
}

// SetMeta implements keystore.Store.
func (s *Store) SetMeta(ctx context.Context, path string, meta keystore.PathMeta) error {
	custom := map[string]any{"managed_by": "lopnr"}
	if meta.Project != "" { // Vault refuses an empty value; service records have no project
		custom["project"] = meta.Project
	}
	if !meta.RetainUntil.IsZero() {
		custom["retain_until"] = meta.RetainUntil.UTC().Format(time.RFC3339)
	}
	return s.do(ctx, func() error {
		return s.kv.PutMetadata(ctx, s.full(path), vault.KVMetadataPutInput{
			CASRequired:        true,
			CustomMetadata:     custom,
			DeleteVersionAfter: meta.DeleteAfter,
		})
	})
}

// List implements keystore.Store.
func (s *Store) List(ctx context.Context, prefix string) ([]string, error) {
	// prefix may end in the middle of a name ("projects/p1/m"): list its
	// folder and filter.
	dir := prefix[:strings.LastIndex(prefix, "/")+1]
	var out []string
	var walk func(folder string) error
	walk = func(folder string) error {
		var secret *vault.Secret
		err := s.do(ctx, func() (err error) {
			secret, err = s.client.Logical().ListWithContext(ctx, s.cfg.Mount+"/metadata/"+s.full(folder))
			return err
		})
		if err != nil {
			return err
		}
		if secret == nil || secret.Data == nil {
			return nil
		}
		keys, _ := secret.Data["keys"].([]any)
		for _, k := range keys {
			name, _ := k.(string)
			p := folder + name
			if !strings.HasPrefix(p, prefix) && !strings.HasPrefix(prefix, p) {
				continue
			}
			if strings.HasSuffix(name, "/") {
				if err := walk(p); err != nil {
					return err
				}
			} else if strings.HasPrefix(p, prefix) {
				out = append(out, p)
			}
		}
		return nil
	}
	return out, walk(dir)
}

// Destroy implements keystore.Store.
func (s *Store) Destroy(ctx context.Context, path string) error {
	return s.do(ctx, func() error { return s.kv.DeleteMetadata(ctx, s.full(path)) })
}
