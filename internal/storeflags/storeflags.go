// Package storeflags holds the flags that lopnr and lopnrd share to reach
// the key store (a local directory, or Vault/OpenBao) and the S3 bucket of
// deliveries, each with its environment variable. Secrets (the Vault token,
// AppRole secret, S3 keys) come only from the environment, never from
// flags that end up in shell history.
package storeflags

import (
	"context"
	"errors"
	"flag"
	"os"

	"github.com/lopnr/lopnr/extract"
	"github.com/lopnr/lopnr/keystore"
	"github.com/lopnr/lopnr/keystore/local"
	"github.com/lopnr/lopnr/keystore/vault"
)

// EnvOr returns the environment variable name, or def when it is unset or
// empty.
func EnvOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// Keystore chooses a key store: Vault when an address is given, else the
// local store in Dir.
type Keystore struct {
	Dir                           string
	VaultAddr, Mount, Prefix      string
	CACert, ClientCert, ClientKey string
}

// Register adds the key store flags to fs, the local directory defaulting
// to defaultDir.
func (f *Keystore) Register(fs *flag.FlagSet, defaultDir string) {
	fs.StringVar(&f.Dir, "keystore", EnvOr("LOPNR_KEYSTORE", defaultDir), "local key store directory ($LOPNR_KEYSTORE), used when no Vault address is set")
	fs.StringVar(&f.VaultAddr, "vault-addr", EnvOr("LOPNR_VAULT_ADDR", os.Getenv("VAULT_ADDR")), "Vault or OpenBao address ($LOPNR_VAULT_ADDR, $VAULT_ADDR); token from $LOPNR_VAULT_TOKEN or $VAULT_TOKEN, or AppRole from $LOPNR_VAULT_ROLE_ID and $LOPNR_VAULT_SECRET_ID")
	fs.StringVar(&f.Mount, "vault-mount", EnvOr("LOPNR_VAULT_MOUNT", "secret"), "KV v2 mount ($LOPNR_VAULT_MOUNT)")
	fs.StringVar(&f.Prefix, "vault-prefix", EnvOr("LOPNR_VAULT_PREFIX", "lopnr"), "folder in the mount ($LOPNR_VAULT_PREFIX)")
	fs.StringVar(&f.CACert, "vault-ca-cert", os.Getenv("LOPNR_VAULT_CACERT"), "CA certificate of Vault's TLS ($LOPNR_VAULT_CACERT)")
	fs.StringVar(&f.ClientCert, "vault-client-cert", os.Getenv("LOPNR_VAULT_CLIENT_CERT"), "client certificate for Vault's TLS ($LOPNR_VAULT_CLIENT_CERT)")
	fs.StringVar(&f.ClientKey, "vault-client-key", os.Getenv("LOPNR_VAULT_CLIENT_KEY"), "client key for Vault's TLS ($LOPNR_VAULT_CLIENT_KEY)")
}

// ErrVaultAuth is wrapped when Vault refuses the credentials; callers add
// a hint.
var ErrVaultAuth = vault.ErrAuth

// Open returns the chosen store and a short description of it for
// messages.
func (f *Keystore) Open(ctx context.Context) (keystore.Store, string, error) {
	if f.VaultAddr == "" {
		s, err := local.Open(f.Dir)
		return s, "local key store " + f.Dir, err
	}
	s, err := vault.New(ctx, vault.Config{
		Address: f.VaultAddr,
		Mount:   f.Mount,
		Prefix:  f.Prefix,
		Token:   EnvOr("LOPNR_VAULT_TOKEN", os.Getenv("VAULT_TOKEN")),
		AppRole: vault.AppRole{RoleID: os.Getenv("LOPNR_VAULT_ROLE_ID"), SecretID: os.Getenv("LOPNR_VAULT_SECRET_ID")},
		TLS:     vault.TLS{CACert: f.CACert, ClientCert: f.ClientCert, ClientKey: f.ClientKey},
	})
	return s, "Vault " + f.VaultAddr, err
}

// S3 says where deliveries go in S3.
type S3 struct {
	Endpoint, Bucket, Region, Prefix string
}

// Register adds the S3 flags to fs.
func (f *S3) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.Endpoint, "s3-endpoint", os.Getenv("LOPNR_S3_ENDPOINT"), "S3 endpoint URL ($LOPNR_S3_ENDPOINT); keys from $LOPNR_S3_ACCESS_KEY and $LOPNR_S3_SECRET_KEY")
	fs.StringVar(&f.Bucket, "s3-bucket", EnvOr("LOPNR_S3_BUCKET", "lopnr"), "S3 bucket ($LOPNR_S3_BUCKET)")
	fs.StringVar(&f.Region, "s3-region", EnvOr("LOPNR_S3_REGION", "us-east-1"), "S3 region ($LOPNR_S3_REGION)")
	fs.StringVar(&f.Prefix, "s3-prefix", os.Getenv("LOPNR_S3_PREFIX"), "folder in the bucket for this installation ($LOPNR_S3_PREFIX)")
}

// Open connects to the bucket; it fails when no endpoint is set.
func (f *S3) Open(ctx context.Context) (*extract.S3Sink, error) {
	if f.Endpoint == "" {
		return nil, errors.New("no S3 endpoint: set --s3-endpoint or $LOPNR_S3_ENDPOINT")
	}
	return extract.NewS3Sink(ctx, extract.S3Config{Endpoint: f.Endpoint, AccessKey: os.Getenv("LOPNR_S3_ACCESS_KEY"),
		SecretKey: os.Getenv("LOPNR_S3_SECRET_KEY"), Region: f.Region, Bucket: f.Bucket, Prefix: f.Prefix})
}
