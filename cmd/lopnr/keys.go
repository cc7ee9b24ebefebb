package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/lopnr/lopnr/internal/storeflags"
	"github.com/lopnr/lopnr/keystore"
	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
)

func init() {
	commands["keys"] = command{"the kodnyckel: sweep, extend, hold, reidentify", runKeys}
}

// keystoreFlags are the flags that choose a key store: Vault when an
// address is given, else the local store (storeflags has the flags, shared
// with lopnrd).
type keystoreFlags struct{ storeflags.Keystore }

func (f *keystoreFlags) register(fs *flag.FlagSet) { f.Register(fs, defaultKeystoreDir()) }

// open returns the chosen store and a short description of it.
func (f *keystoreFlags) open(ctx context.Context) (keystore.Store, string, error) {
	s, where, err := f.Open(ctx)
	if errors.Is(err, storeflags.ErrVaultAuth) {
		err = &hintError{err, "set LOPNR_VAULT_TOKEN, or LOPNR_VAULT_ROLE_ID and LOPNR_VAULT_SECRET_ID for AppRole"}
	}
	return s, where, err
}

var envOr = storeflags.EnvOr

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

const keysUsage = `Usage: lopnr keys SUBCOMMAND [flags] [args]

The kodnyckel of each project: its retention, and re-identification.

  sweep                                        destroy every kodnyckel past its retention
  extend ID --until YYYY-MM-DD --reason R      as lopnr projects extend
  hold ID --reason R [--release]               as lopnr projects hold
  reidentify request PROJECT LOPNR --reason R  ask for the identity number behind a LopNr
  reidentify approve PROJECT REQUEST_ID        approve another person's request
  reidentify get PROJECT REQUEST_ID            get the answer to your approved request, once

Run 'lopnr keys SUBCOMMAND -h' for its flags.
`

const keysSweepUsage = `Usage: lopnr keys sweep [flags]

sweep destroys the kodnyckel of every project past its retain_until that has
no legal hold, and prints a receipt for each as a line of JSON: project, when,
how many paths and mappings were destroyed, and a digest of what was
destroyed. The server runs the same sweep on a schedule.

When a server is configured (--server, $LOPNR_SERVER or server: in the client
config file) lopnrd sweeps (role admin). Otherwise lopnr sweeps the key store
itself: the local one, or Vault with --vault-addr; --keystore or --vault-addr
on the command line chooses this way even when a server is configured.
` + connectionHelp + `
Flags:
`

func runKeys(ctx context.Context, args []string, sio stdio) error {
	return subcommand(ctx, "keys", keysUsage, map[string]func(context.Context, []string, stdio) error{
		"sweep":      runKeysSweep,
		"extend":     func(ctx context.Context, args []string, sio stdio) error { return runExtend(ctx, "keys", args, sio) },
		"hold":       func(ctx context.Context, args []string, sio stdio) error { return runHold(ctx, "keys", args, sio) },
		"reidentify": runReidentify,
	}, args, sio)
}

func runKeysSweep(ctx context.Context, args []string, sio stdio) error {
	fs := flag.NewFlagSet("lopnr keys sweep", flag.ContinueOnError)
	fs.SetOutput(sio.err)
	var kf keystoreFlags
	kf.register(fs)
	var sf serverFlags
	sf.register(fs)
	fs.Usage = func() { fmt.Fprint(sio.err, keysSweepUsage); fs.PrintDefaults() }
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return &usageError{"keys sweep takes no arguments"}
	}
	viaServer, err := sf.configured()
	if err != nil {
		return err
	}
	var storeFlag bool
	fs.Visit(func(f *flag.Flag) { storeFlag = storeFlag || f.Name == "keystore" || f.Name == "vault-addr" })
	if viaServer && storeFlag {
		if sf.explicit() {
			return &usageError{"give --server or a key store (--keystore, --vault-addr), not both"}
		}
		viaServer = false
	}
	if viaServer {
		c, err := sf.dial()
		if err != nil {
			return err
		}
		defer c.Close()
		resp, err := lopnrv1.NewKeyServiceClient(c.conn).Sweep(ctx, &lopnrv1.SweepRequest{})
		if err != nil {
			return c.check(err)
		}
		if err := printReceipts(sio.out, resp.Receipts); err != nil {
			return err
		}
		fmt.Fprintf(sio.err, "lopnr keys sweep: lopnrd %s: %d project(s) destroyed\n", c.addr, len(resp.Receipts))
		return nil
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

const reidentifyUsage = `Usage: lopnr keys reidentify request PROJECT LOPNR --reason R [flags]
       lopnr keys reidentify approve PROJECT REQUEST_ID [flags]
       lopnr keys reidentify get PROJECT REQUEST_ID [flags]

Finds the identity number behind a LopNr, with two people: a key holder
requests it with a reason; a second person, an approver or another key
holder, approves; then the one who asked gets it, once. Every step is in the
audit log. request prints the request's id; get prints the identity number
on standard output, and nothing else there.
`

func runReidentify(ctx context.Context, args []string, sio stdio) error {
	return subcommand(ctx, "keys reidentify", reidentifyUsage, map[string]func(context.Context, []string, stdio) error{
		"request": runReidentifyRequest,
		"approve": runReidentifyApprove,
		"get":     runReidentifyGet,
	}, args, sio)
}

func runReidentifyRequest(ctx context.Context, args []string, sio stdio) error {
	cmd := newClientCmd(sio, "lopnr keys reidentify request", reidentifyUsage)
	reason := cmd.fs.String("reason", "", "why the person must be identified; kept in the audit log; required")
	pos, err := cmd.parse(args, 2, "keys reidentify request takes PROJECT and LOPNR")
	if err != nil {
		return err
	}
	if err := required("reason", *reason); err != nil {
		return err
	}
	run, err := strconv.ParseInt(pos[1], 10, 64)
	if err != nil || run <= 0 {
		return &usageError{fmt.Sprintf("LOPNR %q: want a LopNr, a positive whole number", pos[1])}
	}
	c, err := cmd.sf.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	r, err := lopnrv1.NewKeyServiceClient(c.conn).RequestReidentification(ctx, &lopnrv1.RequestReidentificationRequest{
		Project: pos[0], RunNumber: run, Reason: *reason})
	if err != nil {
		return c.check(err)
	}
	fmt.Fprintln(sio.out, r.Id)
	fmt.Fprintf(sio.err, "lopnr: request %s for LopNr %d of project %s is pending; a second person approves it with\n    lopnr keys reidentify approve %s %s\n",
		r.Id, r.RunNumber, r.Project, r.Project, r.Id)
	return nil
}

func runReidentifyApprove(ctx context.Context, args []string, sio stdio) error {
	cmd := newClientCmd(sio, "lopnr keys reidentify approve", reidentifyUsage)
	pos, c, err := cmd.connect(args, 2, "keys reidentify approve takes PROJECT and REQUEST_ID")
	if err != nil {
		return err
	}
	defer c.Close()
	r, err := lopnrv1.NewKeyServiceClient(c.conn).ApproveReidentification(ctx, &lopnrv1.ApproveReidentificationRequest{Project: pos[0], Id: pos[1]})
	if err != nil {
		return c.check(err)
	}
	fmt.Fprintf(sio.out, "Request %s for LopNr %d of project %s approved by %s; %s gets the answer with\n    lopnr keys reidentify get %s %s\n",
		r.Id, r.RunNumber, r.Project, orDash(r.ApprovedBy), orDash(r.RequestedBy), r.Project, r.Id)
	return nil
}

func runReidentifyGet(ctx context.Context, args []string, sio stdio) error {
	cmd := newClientCmd(sio, "lopnr keys reidentify get", reidentifyUsage)
	pos, c, err := cmd.connect(args, 2, "keys reidentify get takes PROJECT and REQUEST_ID")
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := lopnrv1.NewKeyServiceClient(c.conn).Reidentify(ctx, &lopnrv1.ReidentifyRequest{Project: pos[0], Id: pos[1]})
	if err != nil {
		return c.check(err)
	}
	// The one place lopnr prints an identity number: standard output only.
	fmt.Fprintln(sio.out, resp.Personnummer)
	fmt.Fprintf(sio.err, "lopnr: the identity number behind LopNr %d of project %s; it is given once, and the audit log records that it was\n", resp.RunNumber, pos[0])
	return nil
}
