package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"

	"github.com/lopnr/lopnr/extract"
	"github.com/lopnr/lopnr/internal/storeflags"
	"github.com/lopnr/lopnr/keystore"
	"github.com/lopnr/lopnr/linkage"
)

func init() {
	commands["run"] = command{"run a job locally: link, assign LopNr, deliver encrypted files", runRun}
	commands["decrypt"] = command{"decrypt delivered files with an age identity or a passphrase", runDecrypt}
	commands["verify"] = command{"verify a delivery's signed manifest and files", runVerify}
}

const runUsage = `Usage: lopnr run [flags] JOB.yaml [--out DIR] [--recipient AGE_PUBLIC_KEY]…

Runs a job on this machine, without a server: links the sources, assigns LopNr
in the key store (local by default, Vault with --vault-addr), and delivers the
approved variables, compressed and encrypted with age, to a local directory
(--out) or an S3 bucket (--s3-endpoint, --s3-bucket; keys from
$LOPNR_S3_ACCESS_KEY and $LOPNR_S3_SECRET_KEY).

Files are encrypted to the researchers' age public keys: the job spec's
recipients plus each --recipient (or only these with --replace-recipients).
Without any, or with --passphrase, they are encrypted to a generated
passphrase, shown once here and never stored: send it by another channel.

The approved variable list is --approved, or approved.yaml beside the job spec.

Flags:
`

// stringsFlag is a repeatable string flag.
type stringsFlag []string

func (s *stringsFlag) String() string     { return strings.Join(*s, ",") }
func (s *stringsFlag) Set(v string) error { *s = append(*s, v); return nil }

func defaultDataDir(name string) string {
	return filepath.Join(filepath.Dir(defaultKeystoreDir()), name)
}

func runRun(ctx context.Context, args []string, sio stdio) error {
	fs := flag.NewFlagSet("lopnr run", flag.ContinueOnError)
	fs.SetOutput(sio.err)
	var kf keystoreFlags
	kf.register(fs)
	approvedPath := fs.String("approved", "", "the project's approved variable list (YAML: sources, variables, allow_personnummer); default approved.yaml beside the job spec")
	var recipients stringsFlag
	fs.Var(&recipients, "recipient", "a researcher's age public key, age1… or age1pq1…, added to the job spec's recipients (repeatable)")
	replace := fs.Bool("replace-recipients", false, "encrypt to the --recipient keys only, not to the job spec's")
	passphrase := fs.Bool("passphrase", false, "encrypt to a generated passphrase, printed once on standard error, even when there are recipients")
	out := fs.String("out", "deliveries", "local directory for deliveries, when no S3 endpoint is given")
	var s3 storeflags.S3
	s3.Register(fs)
	signingKey := fs.String("signing-key", envOr("LOPNR_SIGNING_KEY", defaultDataDir("signing.key")), "Ed25519 key that signs manifests, created on first use ($LOPNR_SIGNING_KEY)")
	memory := fs.String("memory", "2GB", "DuckDB's memory limit; beyond it, it spills to disk")
	quiet := fs.Bool("q", false, "no progress on standard error")
	fs.Usage = func() { fmt.Fprint(sio.err, runUsage); fs.PrintDefaults() }
	files, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(files) != 1 {
		return &usageError{"run takes one job spec file"}
	}
	if *replace && len(recipients) == 0 {
		return &usageError{"--replace-recipients needs at least one --recipient"}
	}
	if *passphrase && len(recipients) > 0 {
		return &usageError{"give --recipient or --passphrase, not both"}
	}
	specRaw, err := os.ReadFile(files[0])
	if err != nil {
		return err
	}
	spec, err := linkage.ParseSpec(specRaw, files[0])
	if err != nil {
		return err
	}
	if *approvedPath == "" {
		*approvedPath = filepath.Join(filepath.Dir(files[0]), "approved.yaml")
		if _, err := os.Stat(*approvedPath); err != nil {
			return &hintError{fmt.Errorf("no approved variable list: %s does not exist", *approvedPath),
				"give --approved FILE: the project's approved variable list (docs/delivery.md)"}
		}
	}
	appr, err := loadApproval(*approvedPath)
	if err != nil {
		return err
	}
	// Before anything runs: the sources read with their approved
	// profiles, the variables on the list.
	if err := extract.CheckApproval(spec, appr); err != nil {
		return err
	}
	keys := slices.Concat(spec.Recipients, recipients)
	if *replace {
		keys = recipients
	}
	var recips []age.Recipient
	var pass string
	if *passphrase || len(keys) == 0 {
		if pass, err = extract.NewPassphrase(); err != nil {
			return err
		}
		r, err := extract.PassphraseRecipient(pass)
		if err != nil {
			return err
		}
		recips = []age.Recipient{r}
	} else if recips, err = extract.ParseRecipients(keys); err != nil {
		return err
	}
	store, where, err := kf.open(ctx)
	if err != nil {
		return err
	}
	ks := keystore.New(store, keystore.Options{})
	if _, err := ks.Project(ctx, spec.Project); errors.Is(err, keystore.ErrNotFound) {
		p, err := ks.CreateProject(ctx, keystore.ProjectSpec{ID: spec.Project, EPMDnr: spec.EPMDnr})
		if err != nil {
			return err
		}
		fmt.Fprintf(sio.err, "lopnr: created project %s in %s; its kodnyckel is kept until %s\n", p.ID, where, p.RetainUntil.Format("2006-01-02"))
	} else if err != nil {
		return err
	}
	var sink extract.Sink
	if s3.Endpoint != "" {
		sink, err = s3.Open(ctx)
	} else {
		sink, err = extract.NewDirSink(*out)
	}
	if err != nil {
		return err
	}
	signer, err := extract.LoadOrCreateSigner(*signingKey)
	if err != nil {
		return err
	}

	dopts := extract.Options{Approval: appr, Keys: ks, Recipients: recips, Passphrase: pass != "", Sink: sink, Signer: signer, SpecBytes: specRaw}
	m, _, err := linkAndDeliver(ctx, sio, spec, dopts, *memory, *quiet)
	if err != nil {
		return err
	}
	printDelivery(sio.out, m, sink, signer)
	if pass != "" {
		fmt.Fprintf(sio.err, "\nlopnr: the files are encrypted to this passphrase. Send it to the researcher by\n"+
			"another channel than the files. It is shown once and is not stored anywhere:\n\n    %s\n\n", pass)
	}
	return nil
}

// linkAndDeliver links a job and delivers it, with progress on standard
// error unless quiet. It returns the manifest and the linkage report.
func linkAndDeliver(ctx context.Context, sio stdio, spec *linkage.JobSpec, dopts extract.Options, memory string, quiet bool) (*extract.Manifest, *linkage.Report, error) {
	lopts := linkage.Options{MemoryLimit: memory}
	if !quiet {
		lopts.Progress = progressPrinter(sio)
		dopts.Progress = func(p extract.Progress) {
			switch {
			case p.Done && p.Stage == "guard":
				fmt.Fprintf(sio.err, "lopnr: leak guard %-27s %12d rows  %s\n", p.File, p.Rows, p.Took.Round(time.Millisecond))
			case p.Done && p.Stage == "extract":
				fmt.Fprintf(sio.err, "lopnr: extracted %-28s %12d rows  %s\n", p.File, p.Rows, p.Took.Round(time.Millisecond))
			case p.Done && p.Stage == "file":
				fmt.Fprintf(sio.err, "lopnr: delivered %-28s %12d rows  %s, %d bytes\n", p.File, p.Rows, p.Took.Round(time.Millisecond), p.Bytes)
			}
		}
	}
	res, err := linkage.Link(ctx, spec, lopts)
	if err != nil {
		return nil, nil, err
	}
	defer res.Close()
	// No server, no second person: what lopnr run and the demo deliver is
	// published at once (a server leaves it staged until an approver
	// releases it).
	dopts.Release = true
	m, err := extract.Deliver(ctx, res, dopts)
	if err != nil {
		return nil, nil, err
	}
	return m, res.Report, nil
}

func printDelivery(w io.Writer, m *extract.Manifest, sink extract.Sink, signer *extract.Signer) {
	fmt.Fprintf(w, "Delivery %s of project %s: %d files at %s\n", m.Delivery, m.Project, len(m.Files), sink.Location(m.Project, m.Delivery))
	for _, f := range m.Files {
		fmt.Fprintf(w, "  %-32s %10d rows %14d bytes\n", f.Name, f.Rows, f.Size)
	}
	fmt.Fprintf(w, "Manifest signed by %s\n", signer.PublicKey())
}

// loadApproval reads an approved variable list.
func loadApproval(path string) (extract.Approval, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return extract.Approval{}, err
	}
	return extract.ParseApproval(b, path)
}

func runDecrypt(ctx context.Context, args []string, sio stdio) error {
	fs := flag.NewFlagSet("lopnr decrypt", flag.ContinueOnError)
	fs.SetOutput(sio.err)
	identity := fs.String("i", "", "age identity file (the researcher's private key)")
	passFile := fs.String("passphrase-file", "", "file holding the passphrase (- for standard input)")
	outDir := fs.String("o", "", "directory for the decrypted files (default: beside each file); - writes one file to standard output")
	fs.Usage = func() {
		fmt.Fprint(sio.err, "Usage: lopnr decrypt (-i IDENTITY | --passphrase-file FILE) [-o DIR] FILE.csv.zst.age|FILE.parquet.age …\n\nDecrypts delivered files and, for .zst, decompresses them.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	files, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(files) == 0 || (*identity == "") == (*passFile == "") {
		return &usageError{"give -i IDENTITY or --passphrase-file, and the files"}
	}
	var ids []age.Identity
	if *identity != "" {
		f, err := os.Open(*identity)
		if err != nil {
			return err
		}
		ids, err = age.ParseIdentities(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", *identity, err)
		}
	} else {
		var r io.Reader = sio.in
		if *passFile != "-" {
			f, err := os.Open(*passFile)
			if err != nil {
				return err
			}
			defer f.Close()
			r = f
		}
		line, err := bufio.NewReader(r).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		id, err := age.NewScryptIdentity(strings.TrimSpace(line))
		if err != nil {
			return err
		}
		ids = []age.Identity{id}
	}
	if *outDir == "-" && len(files) != 1 {
		return &usageError{"-o - writes one file"}
	}
	for _, name := range files {
		if err := decryptFile(name, *outDir, ids, sio.out); err != nil {
			return err
		}
	}
	return nil
}

func decryptFile(name, outDir string, ids []age.Identity, stdout io.Writer) (err error) {
	in, err := os.Open(name)
	if err != nil {
		return err
	}
	defer in.Close()
	r, err := age.Decrypt(in, ids...)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	target := strings.TrimSuffix(name, ".age")
	if strings.HasSuffix(target, ".zst") {
		zr, err := zstd.NewReader(r)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		defer zr.Close()
		r, target = zr, strings.TrimSuffix(target, ".zst")
	}
	var w io.Writer = stdout
	if outDir != "-" {
		if outDir != "" {
			target = filepath.Join(outDir, filepath.Base(target))
		}
		f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		defer func() {
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(target)
			}
		}()
		w = f
	}
	if _, err := io.Copy(w, r); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func runVerify(ctx context.Context, args []string, sio stdio) error {
	fs := flag.NewFlagSet("lopnr verify", flag.ContinueOnError)
	fs.SetOutput(sio.err)
	key := fs.String("key", os.Getenv("LOPNR_SIGNING_PUBKEY"), "the service's public key, ed25519:<base64> ($LOPNR_SIGNING_PUBKEY), or @FILE")
	fs.Usage = func() {
		fmt.Fprint(sio.err, "Usage: lopnr verify --key KEY DIR\n\nChecks the signature of DIR/manifest.json and the size and SHA-256 of every file it lists:\nthe data files, the README and the codebooks.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	dirs, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(dirs) != 1 || *key == "" {
		return &usageError{"give --key and one delivery directory"}
	}
	pub := *key
	if strings.HasPrefix(pub, "@") {
		b, err := os.ReadFile(pub[1:])
		if err != nil {
			return err
		}
		pub = strings.TrimSpace(string(b))
	}
	manifest, err := os.ReadFile(filepath.Join(dirs[0], "manifest.json"))
	if err != nil {
		return err
	}
	sig, err := os.ReadFile(filepath.Join(dirs[0], "manifest.json.sig"))
	if err != nil {
		return err
	}
	m, err := extract.VerifyManifest(manifest, sig, pub)
	if err != nil {
		return err
	}
	var bad []string
	for _, c := range m.Check(os.DirFS(dirs[0])) {
		switch {
		case c.Err == nil && c.Document:
			fmt.Fprintf(sio.out, "ok       %s\n", c.Name)
		case c.Err == nil:
			fmt.Fprintf(sio.out, "ok       %s (%d rows)\n", c.Name, c.Rows)
		case errors.Is(c.Err, extract.ErrFileAltered):
			fmt.Fprintf(sio.out, "ALTERED  %s\n", c.Name)
		case errors.Is(c.Err, extract.ErrFileUnlisted):
			fmt.Fprintf(sio.out, "UNLISTED %s: %v\n", c.Name, c.Err)
		default:
			fmt.Fprintf(sio.out, "MISSING  %s: %v\n", c.Name, c.Err)
		}
		if c.Err != nil {
			bad = append(bad, c.Name)
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%d of the delivery's files do not match the signed manifest: %s", len(bad), strings.Join(bad, ", "))
	}
	if len(m.Documents) == 0 {
		fmt.Fprintf(sio.out, "Delivery %s of project %s: signature and all %d files verified (its manifest, made by an older lopnr, does not list the README and codebooks: they were not checked)\n", m.Delivery, m.Project, len(m.Files))
		return nil
	}
	fmt.Fprintf(sio.out, "Delivery %s of project %s: signature and all %d files verified, and the README and codebooks\n", m.Delivery, m.Project, len(m.Files))
	return nil
}
