package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/lopnr/lopnr/linkage"
)

const checkUsage = `Usage: lopnr check [flags] JOB.yaml

Runs ingestion, cohort selection and linking of a job — nothing is
pseudonymised or delivered — and prints the linkage-quality report: rows per
source, linkable rows, quarantined rows by reason, persons, cohort members
found, numbers resolved through the history, and the overlap of the cohort
across sources. The report holds counts only, never an identity number.

Flags:
`

func init() {
	commands["check"] = command{"dry-run a job: link it and report on linkage quality", runCheck}
}

func runCheck(ctx context.Context, args []string, sio stdio) error {
	fs := flag.NewFlagSet("lopnr check", flag.ContinueOnError)
	fs.SetOutput(sio.err)
	reportPath := fs.String("report", "", "also write the report as JSON to this file")
	quarantinePath := fs.String("quarantine", "", "write the quarantine — every identity value that could not be linked, by source and reason, with its rows — as CSV to this file (mode 0600; it holds identity values: keep it inside the trusted zone)")
	work := fs.String("work", "", "directory for DuckDB's database and spill files, which are removed when done (default: a new temporary directory)")
	memory := fs.String("memory", "4GB", "DuckDB's memory limit; beyond it, it spills to the work directory")
	quiet := fs.Bool("q", false, "no progress on standard error")
	fs.Usage = func() { fmt.Fprint(sio.err, checkUsage); fs.PrintDefaults() }
	files, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(files) != 1 {
		return &usageError{"check takes one job spec file"}
	}
	spec, err := linkage.LoadSpec(files[0])
	if err != nil {
		return err
	}
	opts := linkage.Options{WorkDir: *work, MemoryLimit: *memory}
	if !*quiet {
		opts.Progress = progressPrinter(sio)
	}
	res, err := linkage.Link(ctx, spec, opts)
	if err != nil {
		return err
	}
	defer res.Close()
	if *reportPath != "" {
		b, err := json.MarshalIndent(res.Report, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*reportPath, append(b, '\n'), 0o600); err != nil {
			return err
		}
	}
	if *quarantinePath != "" {
		f, err := os.OpenFile(*quarantinePath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		err = res.WriteQuarantine(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("%s: %w", *quarantinePath, err)
		}
	}
	return res.Report.WriteText(sio.out)
}

// progressPrinter prints each finished stage on standard error.
func progressPrinter(sio stdio) func(linkage.Progress) {
	return func(p linkage.Progress) {
		if !p.Done {
			return
		}
		what := p.Stage
		if p.Source != "" {
			what += " " + p.Source
		}
		if p.Rows > 0 {
			fmt.Fprintf(sio.err, "lopnr: %-28s %12d rows  %s\n", what, p.Rows, p.Took.Round(time.Millisecond))
		} else {
			fmt.Fprintf(sio.err, "lopnr: %-28s %18s  %s\n", what, "", p.Took.Round(time.Millisecond))
		}
	}
}
