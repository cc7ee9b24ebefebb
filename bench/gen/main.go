// Command gen writes a synthetic data set for lopnr: one file for each
// built-in source profile, reused.csv, history.csv, job.yaml and
// truth.json (the report a correct linkage run gives); see
// internal/synth.
//
// Usage:
//
//	go run ./bench/gen -persons N -seed S -out DIR [flags]
//
// Flags:
//
//	-persons N         persons to make (required)
//	-seed S            random seed; the same seed gives the same files (default 1)
//	-out DIR           output directory, created if needed (required)
//	-ref-date D        reference (extraction) date, YYYY-MM-DD (default 2026-11-25)
//	-testdata DIR      Skatteverket's test numbers (default: testdata/skatteverket
//	                   found from the working directory upwards)
//	-rows-per-person F mean event rows per person over all sources, 3 to 1000 (default 15)
//	-invalid F         share of rows with an invalid identity (default 0.02)
//	-interim F         share of rows with an interim number (default 0.003)
//	-reserve F         share of rows with a reserve number (default 0.003)
//	-changed F         share of persons whose number changed (default 0.01)
//	-reused F          share of persons sharing a number (default 0.002)
//	-duplicate F       share of rows written twice (default 0.01)
//	-blanked F         share of code values written BLANKED (default 0.005)
//	-empty F           share of empty non-identity values (default 0.01)
//	-cohort F          share of persons planted as cohort candidates (default 0.10)
//	-decoy F           share of persons with AMI codes that must not match (default 0.03)
//	-workers N         files written at once (default GOMAXPROCS; the output does not change)
//	-source-rows S=F,… scale a source's rows per person (synth.Options.SourceRows),
//	                   such as val_oppen=3,lmed=0.12
//
// A rate of 0 means none (in synth.Options a zero rate means the default).
// It prints a one-line summary to stderr, for example
//
//	gen: 100000 persons, 1551004 rows in 7 sources, cohort 9477, seed 7, /tmp/g in 0.26s (5.98 M rows/s)
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/lopnr/lopnr/internal/synth"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("gen", flag.ContinueOnError)
	d := synth.Options{}.Defaults()
	var (
		o   synth.Options
		out = fs.String("out", "", "output `directory` (required)")
		ref = fs.String("ref-date", d.RefDate.Format(time.DateOnly), "reference (extraction) `date`, YYYY-MM-DD")
	)
	fs.IntVar(&o.Persons, "persons", 0, "persons to make (required)")
	fs.Uint64Var(&o.Seed, "seed", 1, "random seed; the same seed gives the same files")
	fs.StringVar(&o.TestData, "testdata", "", "`directory` of Skatteverket's test numbers (default: testdata/skatteverket above the working directory)")
	fs.Float64Var(&o.RowsPerPerson, "rows-per-person", d.RowsPerPerson, "mean event rows per person over all sources")
	rates := []struct {
		name, usage string
		p           *float64
		def         float64
	}{
		{"invalid", "share of rows with an invalid identity", &o.InvalidRate, d.InvalidRate},
		{"interim", "share of rows with an interim number", &o.InterimRate, d.InterimRate},
		{"reserve", "share of rows with a reserve number", &o.ReserveRate, d.ReserveRate},
		{"changed", "share of persons whose number changed", &o.ChangedRate, d.ChangedRate},
		{"reused", "share of persons sharing a number with another", &o.ReusedRate, d.ReusedRate},
		{"duplicate", "share of rows written twice", &o.DuplicateRate, d.DuplicateRate},
		{"blanked", "share of code values written BLANKED", &o.BlankedRate, d.BlankedRate},
		{"empty", "share of empty values in non-identity columns", &o.EmptyRate, d.EmptyRate},
		{"cohort", "share of persons planted as cohort candidates", &o.CohortRate, d.CohortRate},
		{"decoy", "share of persons with AMI codes that must not make them members", &o.DecoyRate, d.DecoyRate},
	}
	for _, r := range rates {
		fs.Float64Var(r.p, r.name, r.def, r.usage+" (0: none)")
	}
	fs.IntVar(&o.Workers, "workers", 0, "files written at once (default GOMAXPROCS; the output does not change)")
	shape := fs.String("source-rows", "", "scale a source's rows per person: `SOURCE=F,…`, such as val_oppen=3,lmed=0.12")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *shape != "" {
		o.SourceRows = map[string]float64{}
		for _, kv := range strings.Split(*shape, ",") {
			k, v, ok := strings.Cut(kv, "=")
			f, err := strconv.ParseFloat(v, 64)
			if !ok || err != nil {
				return fmt.Errorf("-source-rows %q: want SOURCE=F,…", *shape)
			}
			o.SourceRows[strings.TrimSpace(k)] = f
		}
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *out == "" || o.Persons <= 0 {
		return fmt.Errorf("-out and -persons are required")
	}
	t, err := time.Parse(time.DateOnly, *ref)
	if err != nil {
		return fmt.Errorf("-ref-date %q: want YYYY-MM-DD", *ref)
	}
	o.RefDate = t
	// In Options a zero rate means the default; on the command line it
	// means none.
	for _, r := range rates {
		if *r.p == 0 {
			*r.p = -1
		}
	}
	start := time.Now()
	truth, err := synth.Generate(*out, o)
	if err != nil {
		return err
	}
	el := time.Since(start)
	rows := truth.Rows()
	fmt.Fprintf(os.Stderr, "gen: %d persons, %d rows in %d sources, cohort %d, seed %d, %s in %.2fs (%.2f M rows/s)\n",
		o.Persons, rows, len(truth.Sources), truth.Cohort.Persons, o.Seed, *out, el.Seconds(), float64(rows)/el.Seconds()/1e6)
	return nil
}
