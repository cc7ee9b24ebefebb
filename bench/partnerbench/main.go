// Command partnerbench prepares and runs the blind-linkage benchmark: a
// partner authority's file of about a million rows linked end to end
// against a project's cohort through the real lopnrd and lopnr — blinding
// at the partner, the service's Evaluate, the upload, the service's
// matching and the supplementary delivery.
//
//	bench/partnerbench/run.sh            # builds, prepares, runs, prints the times
//
// By hand, the steps the script runs:
//
//	go run ./bench/partnerbench -prepare -out DIR -cohort 100000 -members 100000 -others 400000 -rows-per-person 2
//	lopnrd --dev --policy DIR/policy.yaml --data-dir DIR/data &
//	lopnr projects create partnerbench --dev --epm-dnr 2026-00000-01 --approved DIR/approved.yaml --recipient "$(cat DIR/recipient.txt)"
//	lopnr projects approve partnerbench c1 --dev --as approver     # the second person approves the rules
//	go run ./bench/partnerbench -assign -out DIR                    # the cohort's LopNr, into lopnrd's local key store
//	lopnr partners register partnerbench "CN=dev-partner,O=lopnrd --dev" --dev --recipient "$(cat DIR/recipient.txt)" \
//	    --exchange blind --budget 10000000 --reason "partnerbench"  # prints the change, CHANGE
//	lopnr projects approve partnerbench CHANGE --dev --as approver  # the second person approves the registration
//	lopnr partner blind --dev --as partner --project partnerbench DIR/partner.csv DIR/partner.pseud.csv
//	lopnr partner upload --dev --as partner --project partnerbench --source scb_inkomst --keyed-by pseudonym --variable INKOMST --variable AR --variable KOMMUN DIR/partner.pseud.csv
//	lopnr watch --dev JOB
//
// The policy gives each dev identity only what its step needs, as lopnrd
// requires of a real policy: the default identity creates the project,
// registers the partner and follows the job (admin, extractor), another
// approves (approver), and the partner is nothing else in the project.
//
// The cohort's identity numbers are made up at run time (as the synthetic
// generator's are) and written only into DIR.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/lopnr/lopnr/internal/synth"
	"github.com/lopnr/lopnr/keystore"
	"github.com/lopnr/lopnr/keystore/local"
	"github.com/lopnr/lopnr/linkage/personnummer"
	"github.com/lopnr/lopnr/server"
)

const project = "partnerbench"

func main() {
	prepare := flag.Bool("prepare", false, "write the cohort, the partner's file, the policy and the approved list into -out")
	assign := flag.Bool("assign", false, "give the cohort LopNr in lopnrd's local key store (-out/data/keystore)")
	out := flag.String("out", "", "the benchmark's directory")
	cohort := flag.Int("cohort", 100_000, "prepare: persons in the project's cohort")
	members := flag.Int("members", 100_000, "prepare: of them, persons in the partner's file")
	others := flag.Int("others", 400_000, "prepare: persons in the partner's file that the region does not have")
	rowsPer := flag.Int("rows-per-person", 2, "prepare: rows per person in the partner's file")
	flag.Parse()
	var err error
	switch {
	case *out == "":
		err = fmt.Errorf("-out is required")
	case *prepare:
		err = prepareData(*out, *cohort, *members, *others, *rowsPer)
	case *assign:
		err = assignCohort(*out)
	default:
		err = fmt.Errorf("give -prepare or -assign")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "partnerbench:", err)
		os.Exit(1)
	}
}

func prepareData(dir string, cohort, members, others, rowsPer int) error {
	if members > cohort {
		return fmt.Errorf("-members %d is more than the cohort's %d", members, cohort)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	start := time.Now()
	// The cohort: persons made up by the partner-file generator, read back.
	cohortFile := filepath.Join(dir, "cohort-source.csv")
	if _, err := synth.WritePartnerFile(cohortFile, synth.PartnerOptions{Others: cohort, Seed: 1}); err != nil {
		return err
	}
	numbers, err := readNumbers(cohortFile)
	if err != nil {
		return err
	}
	os.Remove(cohortFile)
	if err := os.WriteFile(filepath.Join(dir, "cohort.txt"), []byte(strings.Join(numbers, "\n")+"\n"), 0o600); err != nil {
		return err
	}
	truth, err := synth.WritePartnerFile(filepath.Join(dir, "partner.csv"), synth.PartnerOptions{
		Members: numbers[:members], Others: others, RowsPerPerson: rowsPer, Seed: 2})
	if err != nil {
		return err
	}
	researcher, err := age.GenerateX25519Identity()
	if err != nil {
		return err
	}
	files := map[string]string{
		"recipient.txt": researcher.Recipient().String() + "\n",
		"policy.yaml": fmt.Sprintf("identities:\n  %q: {global: [admin, extractor]}\n  %q: {roles: {%s: [approver]}}\n  %q: {roles: {%s: [partner]}}\n",
			server.DevIdentity, devIdentity("approver"), project, devIdentity("partner"), project),
		"approved.yaml": synth.ApprovedWithPartner("scb_inkomst", "INKOMST", "AR", "KOMMUN"),
		"truth.txt": fmt.Sprintf("rows %d, member rows %d, other rows %d, member persons %d, other persons %d\n",
			truth.Rows, truth.MemberRows, truth.OtherRows, truth.MemberPersons, truth.OtherPersons),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			return err
		}
	}
	fmt.Printf("partnerbench: cohort of %d; partner file of %d rows (%d of the cohort's persons, %d others) in %s\n",
		len(numbers), truth.Rows, truth.MemberPersons, truth.OtherPersons, time.Since(start).Round(time.Millisecond))
	return nil
}

// devIdentity is the identity lopnrd --dev gives a caller that claims name
// (lopnr --dev --as NAME).
func devIdentity(name string) string { return "CN=dev-" + name + ",O=lopnrd --dev" }

// readNumbers reads the canonical numbers of a partner file's persons.
func readNumbers(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p := personnummer.NewParser(time.Now())
	seen := map[string]bool{}
	var out []string
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		id, _, _ := strings.Cut(sc.Text(), ";")
		if n := p.Parse(id); n.Linkable() && !seen[n.Canonical()] {
			seen[n.Canonical()] = true
			out = append(out, n.Canonical())
		}
	}
	return out, sc.Err()
}

func assignCohort(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "cohort.txt"))
	if err != nil {
		return err
	}
	p := personnummer.NewParser(time.Now())
	var numbers []personnummer.Number
	for _, line := range strings.Fields(string(b)) {
		numbers = append(numbers, p.Parse(line))
	}
	store, err := local.Open(filepath.Join(dir, "data", "keystore"))
	if err != nil {
		return err
	}
	start := time.Now()
	if _, err := keystore.New(store, keystore.Options{}).Assign(context.Background(), project, numbers); err != nil {
		return err
	}
	fmt.Printf("partnerbench: %d persons of the cohort have LopNr in %s\n", len(numbers), time.Since(start).Round(time.Millisecond))
	return nil
}
