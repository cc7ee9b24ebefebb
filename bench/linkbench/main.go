// Command linkbench measures lopnr's linkage (ingest, normalise, link and
// report, as `lopnr check` runs it) against a bare DuckDB read_csv of the
// same files into a table, on data made by bench/gen.
//
//	go run ./bench/gen -persons 700000 -seed 1 -out /tmp/lopnr-bench
//	go run ./bench/linkbench -job /tmp/lopnr-bench/job.yaml
//
// Each side runs in a child process of its own, so that its peak memory
// (maximum resident set size) is its own; the table shows time, rows per
// second, peak memory and lopnr's ratio to the baseline.
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"

	"github.com/lopnr/lopnr/bench/internal/readcsv"
	"github.com/lopnr/lopnr/linkage"
)

func main() {
	job := flag.String("job", "", "the job spec that bench/gen wrote")
	mode := flag.String("mode", "", "internal: baseline or lopnr, run in a child process")
	runs := flag.Int("runs", 1, "runs of each side; the best is reported")
	flag.Parse()
	if *job == "" {
		fmt.Fprintln(os.Stderr, "usage: linkbench -job DIR/job.yaml")
		os.Exit(2)
	}
	spec, err := linkage.LoadSpec(*job)
	if err != nil {
		fail(err)
	}
	switch *mode {
	case "baseline":
		rows, err := baseline(spec)
		if err != nil {
			fail(err)
		}
		fmt.Println(rows)
		return
	case "lopnr":
		res, err := linkage.Link(context.Background(), spec, linkage.Options{})
		if err != nil {
			fail(err)
		}
		var rows int64
		for _, s := range res.Report.Sources {
			rows += s.Rows
		}
		res.Close()
		fmt.Println(rows)
		return
	}
	var results []result
	for _, m := range []string{"baseline", "lopnr"} {
		best := result{name: m}
		for i := 0; i < *runs; i++ {
			r, err := child(m, *job)
			if err != nil {
				fail(err)
			}
			if best.took == 0 || r.took < best.took {
				best = r
			}
		}
		results = append(results, best)
	}
	fmt.Printf("| side | rows | time | rows/s | peak memory | ratio |\n|---|---|---|---|---|---|\n")
	for _, r := range results {
		fmt.Printf("| %s | %d | %.2f s | %.2f M | %d MB | %.2f |\n", r.name, r.rows, r.took.Seconds(),
			float64(r.rows)/r.took.Seconds()/1e6, r.maxRSS>>20, r.took.Seconds()/results[0].took.Seconds())
	}
}

type result struct {
	name   string
	rows   int64
	took   time.Duration
	maxRSS int64
}

// child runs one side in a child process and measures it.
func child(mode, job string) (result, error) {
	exe, err := os.Executable()
	if err != nil {
		return result{}, err
	}
	cmd := exec.Command(exe, "-mode", mode, "-job", job)
	cmd.Stderr = os.Stderr
	start := time.Now()
	out, err := cmd.Output()
	took := time.Since(start)
	if err != nil {
		return result{}, fmt.Errorf("%s: %w", mode, err)
	}
	r := result{name: mode, took: took}
	fmt.Sscan(strings.TrimSpace(string(out)), &r.rows)
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.maxRSS = ru.Maxrss << 10 // kilobytes on Linux
	}
	return r, nil
}

// baseline reads every source into a table with DuckDB's own CSV reader,
// as a team's script would: no identity handling, no linking.
func baseline(spec *linkage.JobSpec) (int64, error) {
	dir, err := os.MkdirTemp("", "linkbench-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	db, err := sql.Open("duckdb", "") // in memory, as lopnr's linkage runs
	if err != nil {
		return 0, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(fmt.Sprintf("SET temp_directory = '%s'", dir)); err != nil { // spill as lopnr does
		return 0, err
	}
	return readcsv.Sources(context.Background(), db, spec, dir)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "linkbench:", err)
	os.Exit(1)
}
