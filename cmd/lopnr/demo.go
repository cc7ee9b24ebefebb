package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"filippo.io/age"

	"github.com/lopnr/lopnr/extract"
	"github.com/lopnr/lopnr/internal/synth"
	"github.com/lopnr/lopnr/keystore"
	"github.com/lopnr/lopnr/keystore/local"
	"github.com/lopnr/lopnr/linkage"
)

func init() {
	commands["demo"] = command{"run a complete linkage and delivery on synthetic data, on this machine", runDemo}
}

func runDemo(ctx context.Context, args []string, sio stdio) error {
	fs := flag.NewFlagSet("lopnr demo", flag.ContinueOnError)
	fs.SetOutput(sio.err)
	dir := fs.String("dir", "", "directory for the demo's data, key store and deliveries (default: a new temporary directory)")
	persons := fs.Int("persons", 5000, "persons in the synthetic population")
	seed := fs.Uint64("seed", 1, "seed of the synthetic data")
	fs.Usage = func() {
		fmt.Fprint(sio.err, `Usage: lopnr demo [flags]

Runs the whole job on this machine with the embedded defaults: generates
messy synthetic registry, VAL and TakeCare files (Skatteverket's test numbers
and numbers made up at run time), links them, checks the result against the
known truth, assigns LopNr in a local key store, delivers the approved
variables encrypted to a researcher's age key into a local directory, verifies
the signed manifest and decrypts a file as the researcher would. It ends with
the commands that run the same project through lopnrd, where a second person
approves the project's rules and releases the delivery.

Flags:
`)
		fs.PrintDefaults()
	}
	if rest, err := parseFlags(fs, args); err != nil {
		return err
	} else if len(rest) > 0 {
		return &usageError{"demo takes no arguments"}
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "lopnr-demo-")
		if err != nil {
			return err
		}
		*dir = d
	}
	// As a server's source root has them: each project's files in a
	// directory of its own (docs/server.md).
	data := filepath.Join(*dir, "sources", synth.ProjectID(*seed))
	say := func(format string, a ...any) { fmt.Fprintf(sio.out, format+"\n", a...) }

	say("1. Synthetic sources for %d persons in %s", *persons, data)
	truth, err := synth.Generate(data, synth.Options{Persons: *persons, Seed: *seed})
	if err != nil {
		return err
	}
	specPath := filepath.Join(data, "job.yaml")
	specRaw, err := os.ReadFile(specPath)
	if err != nil {
		return err
	}
	spec, err := linkage.ParseSpec(specRaw, specPath)
	if err != nil {
		return err
	}
	approvedPath := filepath.Join(*dir, "approved.yaml")
	if err := os.WriteFile(approvedPath, []byte(synth.Approved), 0o600); err != nil {
		return err
	}
	appr, err := loadApproval(approvedPath)
	if err != nil {
		return err
	}

	say("2. A local key store in %s, a project, a researcher's age key", filepath.Join(*dir, "keystore"))
	store, err := local.Open(filepath.Join(*dir, "keystore"))
	if err != nil {
		return err
	}
	keys := keystore.New(store, keystore.Options{})
	if _, err := keys.Project(ctx, spec.Project); err != nil {
		if _, err := keys.CreateProject(ctx, keystore.ProjectSpec{ID: spec.Project, EPMDnr: spec.EPMDnr}); err != nil {
			return err
		}
	}
	researcher, err := age.GenerateHybridIdentity()
	if err != nil {
		return err
	}
	keyFile := filepath.Join(*dir, "researcher-key.txt")
	if err := os.WriteFile(keyFile, []byte("# public key: "+researcher.Recipient().String()+"\n"+researcher.String()+"\n"), 0o600); err != nil {
		return err
	}
	pubFile := filepath.Join(*dir, "researcher.pub")
	if err := os.WriteFile(pubFile, []byte(researcher.Recipient().String()+"\n"), 0o644); err != nil {
		return err
	}
	sink, err := extract.NewDirSink(filepath.Join(*dir, "deliveries"))
	if err != nil {
		return err
	}
	signer, err := extract.LoadOrCreateSigner(filepath.Join(*dir, "signing.key"))
	if err != nil {
		return err
	}

	say("3. Link, pseudonymise, deliver")
	m, report, err := linkAndDeliver(ctx, sio, spec, extract.Options{
		Approval: appr, Keys: keys, Recipients: []age.Recipient{researcher.Recipient()}, Sink: sink, Signer: signer, SpecBytes: specRaw,
	}, "2GB", false)
	if err != nil {
		return err
	}
	fmt.Fprintln(sio.out)
	if err := report.WriteText(sio.out); err != nil {
		return err
	}
	if report.Cohort.Persons != int64(truth.Cohort.Persons) {
		return fmt.Errorf("the linkage found %d cohort members, the generator planted %d", report.Cohort.Persons, truth.Cohort.Persons)
	}
	fmt.Fprintln(sio.out)
	say("   The cohort matches the %d persons the generator planted.", truth.Cohort.Persons)
	fmt.Fprintln(sio.out)
	printDelivery(sio.out, m, sink, signer)

	delivery := filepath.Join(*dir, "deliveries", m.Project, m.Delivery)
	fmt.Fprintln(sio.out)
	say("4. As the researcher: verify and decrypt")
	if err := runVerify(ctx, []string{"--key", signer.PublicKey(), delivery}, sio); err != nil {
		return err
	}
	plain := filepath.Join(*dir, "decrypted")
	if err := os.MkdirAll(plain, 0o700); err != nil {
		return err
	}
	if err := runDecrypt(ctx, []string{"-i", keyFile, "-o", plain, filepath.Join(delivery, m.Files[0].Name)}, sio); err != nil {
		return err
	}
	say("   Decrypted %s into %s", m.Files[0].Name, plain)
	fmt.Fprintln(sio.out)
	enc := filepath.Join(delivery, m.Files[0].Name)
	say("To decrypt a file with the stock age tool instead, as a researcher without lopnr would:")
	say("  age -d -i %s %s | zstd -d > %s", keyFile, enc, strings.TrimSuffix(strings.TrimSuffix(m.Files[0].Name, ".age"), ".zst"))
	fmt.Fprintln(sio.out)
	say("Everything is in %s. Try:", *dir)
	say("  lopnr check %s --report report.json", specPath)
	say("  head %s/*.csv", plain)
	say("  lopnr verify --key %s %s", signer.PublicKey(), delivery)
	fmt.Fprintln(sio.out)
	say("On lopnrd the same project takes two people: one proposes its rules and submits")
	say("the job, another approves the rules and releases the delivery. On this machine")
	say("(lopnrd --dev, where --as plays the other people; DELIVERY is the id submit prints):")
	for _, step := range serviceSteps(*dir, spec.Project, spec.EPMDnr) {
		say("  %s", step)
	}
	return nil
}

// serviceSteps are the commands that run the demo's project through a
// lopnrd --dev with four eyes, as the demo prints them (a test runs them):
// DELIVERY stands for the id that submit prints.
func serviceSteps(dir, project, epmDnr string) []string {
	return []string{
		fmt.Sprintf("lopnrd --dev --data-dir %s --source-root %s &",
			filepath.Join(dir, "lopnrd"), filepath.Join(dir, "sources")),
		fmt.Sprintf("lopnr projects create %s --dev --epm-dnr %s --approved %s --recipients-file %s",
			project, epmDnr, filepath.Join(dir, "approved.yaml"), filepath.Join(dir, "researcher.pub")),
		fmt.Sprintf("lopnr projects approve %s c1 --dev --as approver", project),
		fmt.Sprintf("lopnr submit --dev %s --watch", filepath.Join(dir, "sources", project, "job.yaml")),
		fmt.Sprintf("lopnr release %s DELIVERY --dev --as approver", project),
		fmt.Sprintf("lopnr presign %s DELIVERY --dev --as researcher --download %s", project, filepath.Join(dir, "fetched")),
	}
}
