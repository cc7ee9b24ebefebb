package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/lopnr/lopnr/keystore"
	"github.com/lopnr/lopnr/keystore/local"
	"github.com/lopnr/lopnr/keystore/vault"
)

func init() {
	commands["keys"] = command{"manage the kodnyckel store: sweep", runKeys}
}

// keystoreFlags are the flags that choose a key store: Vault when an
// address is given, else the local store. Tokens and AppRole secrets come
// only from the environment, never from flags that end up in shell history.
type keystoreFlags struct {
	dir                           string
	vaultAddr, mount, prefix      string
	caCert, clientCert, clientKey string
}

func (f *keystoreFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.dir, "keystore", envOr("LOPNR_KEYSTORE", defaultKeystoreDir()), "local key store directory ($LOPNR_KEYSTORE), used when no Vault address is set")
	fs.StringVar(&f.vaultAddr, "vault-addr", envOr("LOPNR_VAULT_ADDR", os.Getenv("VAULT_ADDR")), "Vault or OpenBao address ($LOPNR_VAULT_ADDR, $VAULT_ADDR); token from $LOPNR_VAULT_TOKEN or $VAULT_TOKEN, or AppRole from $LOPNR_VAULT_ROLE_ID and $LOPNR_VAULT_SECRET_ID")
	fs.StringVar(&f.mount, "vault-mount", envOr("LOPNR_VAULT_MOUNT", "secret"), "KV v2 mount ($LOPNR_VAULT_MOUNT)")
	fs.StringVar(&f.prefix, "vault-prefix", envOr("LOPNR_VAULT_PREFIX", "lopnr"), "folder in the mount ($LOPNR_VAULT_PREFIX)")
	fs.StringVar(&f.caCert, "vault-ca-cert", os.Getenv("LOPNR_VAULT_CACERT"), "CA certificate of Vault's TLS ($LOPNR_VAULT_CACERT)")
	fs.StringVar(&f.clientCert, "vault-client-cert", os.Getenv("LOPNR_VAULT_CLIENT_CERT"), "client certificate for Vault's TLS ($LOPNR_VAULT_CLIENT_CERT)")
	fs.StringVar(&f.clientKey, "vault-client-key", os.Getenv("LOPNR_VAULT_CLIENT_KEY"), "client key for Vault's TLS ($LOPNR_VAULT_CLIENT_KEY)")
}

// open returns the chosen store and a short description of it.
func (f *keystoreFlags) open(ctx context.Context) (keystore.Store, string, error) {
	if f.vaultAddr == "" {
		s, err := local.Open(f.dir)
		return s, "local key store " + f.dir, err
	}
	s, err := vault.New(ctx, vault.Config{
		Address: f.vaultAddr,
		Mount:   f.mount,
		Prefix:  f.prefix,
		Token:   envOr("LOPNR_VAULT_TOKEN", os.Getenv("VAULT_TOKEN")),
		AppRole: vault.AppRole{RoleID: os.Getenv("LOPNR_VAULT_ROLE_ID"), SecretID: os.Getenv("LOPNR_VAULT_SECRET_ID")},
		TLS:     vault.TLS{CACert: f.caCert, ClientCert: f.clientCert, ClientKey: f.clientKey},
	})
	if errors.Is(err, vault.ErrAuth) {
		err = &hintError{err, "set LOPNR_VAULT_TOKEN, or LOPNR_VAULT_ROLE_ID and LOPNR_VAULT_SECRET_ID for AppRole"}
	}
	return s, "Vault " + f.vaultAddr, err
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// defaultKeystoreDir is $XDG_DATA_HOME/lopnr/keystore or
// ~/.local/share/lopnr/keystore.
func defaultKeystoreDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "lopnr", "keystore")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "lopnr-keystore"
	}
	return filepath.Join(home, ".local", "share", "lopnr", "keystore")
}

const keysUsage = `Usage: lopnr keys sweep [flags]

sweep destroys the kodnyckel of every project past its retain_until that has
no legal hold, and prints a receipt for each as a line of JSON: project, when,
how many paths and mappings were destroyed, and a digest of what was
destroyed. The server runs the same sweep on a schedule.

Flags:
`

func runKeys(ctx context.Context, args []string, sio stdio) error {
	if len(args) == 0 || args[0] != "sweep" {
		fmt.Fprint(sio.err, keysUsage)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			return flag.ErrHelp
		}
		return &usageError{"keys: want a subcommand: sweep"}
	}
	fs := flag.NewFlagSet("lopnr keys sweep", flag.ContinueOnError)
	fs.SetOutput(sio.err)
	var kf keystoreFlags
	kf.register(fs)
	fs.Usage = func() { fmt.Fprint(sio.err, keysUsage); fs.PrintDefaults() }
	rest, err := parseFlags(fs, args[1:])
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return &usageError{"keys sweep takes no arguments"}
	}
	store, where, err := kf.open(ctx)
	if err != nil {
		return err
	}
	receipts, err := keystore.New(store, keystore.Options{}).Sweep(ctx)
	enc := json.NewEncoder(sio.out)
	for _, r := range receipts {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	fmt.Fprintf(sio.err, "lopnr keys sweep: %s: %d project(s) destroyed\n", where, len(receipts))
	return err
}
