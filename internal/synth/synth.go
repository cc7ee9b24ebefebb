// Package synth writes synthetic source files for lopnr, and the exact
// answer a correct linkage run must give for them.
//
// [Generate] writes into a directory one file for each built-in source
// profile — VAL inpatient and outpatient care, a TakeCare export, the
// National Patient Register (inpatient and outpatient), the Prescribed Drug
// Register, the Cause of Death Register — plus a list of re-used numbers, a
// history of number changes, a job spec (job.yaml) that reads them all, and
// truth.json: the counts the engine's linkage-quality report must show
// (rows, quarantined rows by reason, persons, the cohort, the overlap
// between sources). It exists so that the engine can be tested end to end
// and benchmarked at scale without any real person's data.
//
// # What the files hold
//
// Persons carry Skatteverket's test personnummer and samordningsnummer
// (testdata/skatteverket) while they last, and beyond that personnummer
// made at run time (a valid date, birth number 1–999, the Luhn check digit)
// that are not on the test list. Generated numbers are written only into the
// output directory, never into the repository.
//
// The files are messy the way real extractions are: identity numbers in
// all four accepted forms (12 digits, 12 with '-', 10 with '-' or '+' by
// age, 10 without a separator), sometimes with spaces around; invalid
// numbers (wrong check digit, impossible date, wrong length or letters,
// empty, and a few future, birth-number-000 and organisation numbers);
// interim and Region Stockholm reserve numbers; persons whose number
// changed (in history.csv, with a chain of two changes, a conflict and a
// cycle); numbers used by two persons (reused.csv); duplicated rows;
// BLANKED and empty code values; ICD-10 codes with and without a dot;
// windows-1252 with CRLF, latin-1 with quoted free text, gzip and zstd.
// Every identity written is parsed again with linkage/personnummer as it
// is generated, and Generate fails if one is not what was intended.
//
// About a tenth of the persons are planted into the job's cohort
// (I21/I22 in par_sluten's HDIA or DIA1..DIA30, admitted 2015–2024, aged
// at least 18 then), with decoys around every edge of the criterion:
// events just outside the window, AMI codes in the OP column or in other
// sources, persons under 18 or with an unknown birth date, the 18th
// birthday itself and the day before it.
//
// # A partner authority's file
//
// [WritePartnerFile] writes the other side of a blind linkage: a partner
// authority's file (an income register, say) holding the region's cohort
// members among persons the region does not have, with invalid identities
// besides, and returns a [PartnerTruth] of what the region must find.
//
// # Determinism and scale
//
// The output depends only on [Options]: the same seed gives byte-identical
// files, whatever the number of workers. The generator keeps a few dozen
// bytes per person and streams rows; on two cores it writes well over a
// million rows a second.
package synth

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"
)

// Options controls Generate. A zero rate means its default; a negative
// rate means none at all.
type Options struct {
	// Persons is the number of persons (required, at least 1).
	Persons int
	// Seed makes the output; the same seed gives the same files.
	Seed uint64
	// RefDate is the extraction date: no date after it, and the century of
	// 10-digit numbers is inferred against it. Default 2026-11-25; at least
	// 2012-01-01.
	RefDate time.Time
	// TestData is the directory with Skatteverket's test numbers. Default:
	// testdata/skatteverket found from the working directory upwards.
	TestData string

	// RowsPerPerson is the mean number of event rows per person over all
	// sources, roughly (default 15; at least 3, at most 1000). Not a rate:
	// zero means the default, and it cannot be turned off.
	RowsPerPerson float64
	// InvalidRate is the share of rows whose identity is invalid (default
	// 0.02): checksum, format, date and empty mostly, and a few future,
	// birthnumber and organisationsnummer.
	InvalidRate float64
	// InterimRate and ReserveRate are the shares of rows with an interim
	// or a reserve number (default 0.003 each).
	InterimRate float64
	ReserveRate float64
	// ChangedRate is the share of persons whose number changed (default
	// 0.01); at least one chain, one conflict and one cycle are included
	// whenever it is not negative.
	ChangedRate float64
	// ReusedRate is the share of persons sharing a number with another
	// person (default 0.002; in pairs, at least one pair).
	ReusedRate float64
	// DuplicateRate is the share of rows written twice (default 0.01).
	DuplicateRate float64
	// BlankedRate is the share of code values written as BLANKED (default
	// 0.005).
	BlankedRate float64
	// EmptyRate is the share of empty values in non-identity columns that
	// are not event dates (default 0.01).
	EmptyRate float64
	// CohortRate is the share of persons planted as cohort candidates
	// (default 0.10); a few of them fail the age criterion on purpose.
	CohortRate float64
	// DecoyRate is the share of persons given I21/I22 codes that must not
	// make them cohort members (default 0.03).
	DecoyRate float64

	// SourceRows scales, by events source name (val_sluten, val_oppen,
	// takecare, par_sluten, par_oppen, lmed), the mean number of rows of a
	// person who appears in that source, to give a data set another shape
	// (more VAL rows and fewer registry rows, say). A person who appears
	// has at least one row whatever the scale, and a cohort candidate's
	// planted rows are written besides. Nil, or a source left out, keeps
	// the default shape.
	SourceRows map[string]float64

	// Workers is how many source files are written at once (default
	// GOMAXPROCS). It does not change the output.
	Workers int
}

// DefaultRefDate is the default reference date.
var DefaultRefDate = time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)

// Defaults returns the options with every default filled in (Persons and
// Seed as given).
func (o Options) Defaults() Options {
	rate := func(v *float64, def float64) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			*v = 0
		}
	}
	if o.RowsPerPerson == 0 {
		o.RowsPerPerson = 15
	}
	rate(&o.InvalidRate, 0.02)
	rate(&o.InterimRate, 0.003)
	rate(&o.ReserveRate, 0.003)
	rate(&o.ChangedRate, 0.01)
	rate(&o.ReusedRate, 0.002)
	rate(&o.DuplicateRate, 0.01)
	rate(&o.BlankedRate, 0.005)
	rate(&o.EmptyRate, 0.01)
	rate(&o.CohortRate, 0.10)
	rate(&o.DecoyRate, 0.03)
	if o.RefDate.IsZero() {
		o.RefDate = DefaultRefDate
	}
	y, m, d := o.RefDate.Date()
	o.RefDate = time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	return o
}

func (o Options) validate() error {
	switch {
	case o.Persons < 1:
		return errors.New("synth: Persons must be at least 1")
	case o.Persons > 50_000_000:
		return errors.New("synth: Persons must be at most 50,000,000")
	case o.RefDate.Before(time.Date(2012, 1, 1, 0, 0, 0, 0, time.UTC)):
		return errors.New("synth: RefDate must be 2012-01-01 or later")
	case o.RefDate.Year() > 2099:
		return errors.New("synth: RefDate must be before 2100")
	case o.RowsPerPerson < 3 || o.RowsPerPerson > 1000:
		return errors.New("synth: RowsPerPerson must be from 3 to 1000")
	}
	for name, f := range o.SourceRows {
		if i := srcIndex(name); i < 0 || name == srcDors {
			return fmt.Errorf("synth: SourceRows: no events source %q with rows per person", name)
		}
		if !(f > 0 && f <= 100) {
			return fmt.Errorf("synth: SourceRows[%s] %g: want more than 0 and at most 100", name, f)
		}
	}
	for _, r := range []struct {
		name string
		v    float64
	}{
		{"InvalidRate", o.InvalidRate}, {"InterimRate", o.InterimRate}, {"ReserveRate", o.ReserveRate},
		{"ChangedRate", o.ChangedRate}, {"ReusedRate", o.ReusedRate}, {"DuplicateRate", o.DuplicateRate},
		{"BlankedRate", o.BlankedRate}, {"EmptyRate", o.EmptyRate}, {"CohortRate", o.CohortRate},
		{"DecoyRate", o.DecoyRate},
	} {
		if r.v > 1 {
			return fmt.Errorf("synth: %s %g: want at most 1", r.name, r.v)
		}
	}
	if o.InvalidRate+o.InterimRate+o.ReserveRate > 1 {
		return errors.New("synth: InvalidRate+InterimRate+ReserveRate must be at most 1")
	}
	if o.ChangedRate+2*o.ReusedRate+o.CohortRate+o.DecoyRate > 0.9 {
		return errors.New("synth: ChangedRate+2*ReusedRate+CohortRate+DecoyRate must be at most 0.9")
	}
	return nil
}

// Truth is what a correct linkage run reports for the generated files: the
// same shape as the engine's report (truth.json).
type Truth struct {
	Cohort  CohortTruth   `json:"cohort"`
	Sources []SourceTruth `json:"sources"`
	// Overlap counts cohort members by the set of sources they appear in
	// (source names in job order joined by '+', "(none)" for none).
	Overlap map[string]int `json:"overlap"`
}

// CohortTruth is the cohort's size.
type CohortTruth struct {
	Persons int `json:"persons"`
}

// SourceTruth is one events source's counts.
type SourceTruth struct {
	Name         string `json:"name"`
	Rows         int64  `json:"rows"`
	LinkableRows int64  `json:"linkable_rows"`
	// Quarantined counts rows by reason code; only reasons with rows.
	Quarantined map[string]int64 `json:"quarantined"`
	// Persons is the number of distinct current numbers among the
	// linkable rows.
	Persons       int `json:"persons"`
	CohortPersons int `json:"cohort_persons"`
	// ChangedNumbersResolved is the number of distinct numbers in the
	// linkable rows that the history changed to another current number.
	ChangedNumbersResolved int `json:"changed_numbers_resolved"`
}

// Rows returns the number of data rows over all sources.
func (t *Truth) Rows() int64 {
	var n int64
	for _, s := range t.Sources {
		n += s.Rows
	}
	return n
}

// Files written by Generate besides the sources.
const (
	JobFile   = "job.yaml"
	TruthFile = "truth.json"
)

// Generate writes the synthetic sources, job.yaml and truth.json into dir
// (created if needed) and returns the truth.
func Generate(dir string, opts Options) (*Truth, error) {
	o := opts.Defaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	if o.TestData == "" {
		td, err := findTestData()
		if err != nil {
			return nil, err
		}
		o.TestData = td
	}
	g, err := newGenerator(o)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := g.writeIdentityFiles(dir); err != nil {
		return nil, err
	}
	results, err := g.writeSources(dir)
	if err != nil {
		return nil, err
	}
	truth := g.truth(results)
	b, err := json.MarshalIndent(truth, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, TruthFile), append(b, '\n'), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, JobFile), g.jobSpec(), 0o600); err != nil {
		return nil, err
	}
	return truth, nil
}
