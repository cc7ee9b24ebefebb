//go:build attack_open

// Attacks of issue 15's review that still get through: each test replays
// one and fails until it is stopped (go test -tags attack_open). See
// /tmp/trust/security-attacker.md (the report) for where each fix belongs.
package extract

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lopnr/lopnr/internal/synth"
)

// TestExtractorCannotChooseTheCohortByAnUnapprovedSource: the approved
// list binds what is delivered of each person, not who is delivered. A
// job whose cohort is the persons with a diagnosis the project may not
// have (criteria on a source, or codes, or a date window the list does
// not approve) passes every check, and each delivered LopNr says that
// person has it; jobs with other criteria, joined on LopNr by the
// researcher, give it per person. age-at-index is the age at that
// unapproved event. Only the releasing approver, reading the job's spec,
// could notice.
func TestExtractorCannotChooseTheCohortByAnUnapprovedSource(t *testing.T) {
	dir := t.TempDir()
	if _, err := synth.Generate(dir, synth.Options{Persons: 50, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, synth.JobFile))
	if err != nil {
		t.Fatal(err)
	}
	spec := strings.Replace(string(raw), "codes: [I21, I22]", "codes: [F20]", 1) // schizophrenia
	// The list approves the drug register only: not par_sluten, which the
	// cohort reads.
	appr := mustApproval(t, "sources:\n  - {name: lmed, profile: lmed}\nvariables:\n  - {source: lmed, column: ATC}\n")
	js := attack(t, dir, spec[:strings.Index(spec, "variables:")]+"variables:\n  - {source: lmed, column: ATC, transform: keep}\n")
	if err := CheckApproval(js, appr); err == nil {
		t.Errorf("a job whose cohort is chosen by a diagnosis in a source the approved list does not name passes CheckApproval")
	}
}
