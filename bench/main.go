// Command bench measures a whole lopnr job against the DuckDB script a
// team would otherwise write, and each stage of the job against its raw
// tool, on a named scenario that internal/synth generates.
//
//	go run ./bench -scenario small              # seconds; the smoke test runs it
//	deploy/dev/run go run ./bench -scenario standard -growth 0.1,1,3 -runs 3
//	deploy/dev/run go run ./bench -scenario large -runs 2
//
// Under deploy/dev/run (or with the LOPNR_S3_* and LOPNR_VAULT_* variables
// set) lopnr delivers to the S3 gateway and keeps its run numbers in
// OpenBao, as in production; without them it stops with an error.
//
// In one run, on the same files:
//
//   - the baseline: bench/baseline.sql through duckdb-go — the same cohort,
//     joins and variables, COPY … TO CSV with zstd; no pseudonymisation, no
//     encryption, no upload;
//   - lopnr's job end to end, as `lopnr run --s3-endpoint` does it: ingest,
//     identity resolution, cohort, report, run numbers in the key store,
//     extract, leak guard, zstd, age, S3 multipart upload, signed manifest;
//     once with the generated job spec (seven event sources, three of them
//     delivered) and once with a spec of only the sources the baseline
//     reads, on which the goal (1.5 times the baseline) is judged;
//   - each stage against its raw tool: normalisation (linkage.Link) against
//     a bare read_csv of the same files; lopnr's sealer (SHA-256, zstd, age)
//     against zstd alone and age alone, on the delivery's plaintext;
//     lopnr's S3 sink against a plain minio-go PutObject of the same bytes.
//
// Every step runs in a child process (the bench binary again, with
// -step), so that its peak memory — the child's maximum resident set size
// — is its own; the time is the step's work, measured in the child. With
// -runs N the steps compared with each other run N times in rounds (the
// baseline, lopnr's jobs; then each stage with its raw tools), and each
// keeps its fastest run, with the highest peak of the N: two runs in a row
// on a shared machine can differ by a third, and a slow spell should fall
// on both sides. The
// delivery is fetched back from S3, decrypted with the researcher's key and
// checked: its rows must equal what the job reported, and it must hold no
// valid identity number.
//
// The tables are printed and written as markdown to -md (default
// bench/out/<scenario>.md). Data and outputs go to -dir (default a
// directory under /tmp), removed afterwards unless -keep.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"filippo.io/age"

	"github.com/lopnr/lopnr/internal/synth"
)

// scenario is a named data set.
type scenario struct {
	name    string
	persons int
	// sourceRows is the shape (synth.Options.SourceRows).
	sourceRows map[string]float64
	// clean turns the identity noise off (invalid, interim and reserve
	// numbers, changes, re-use), so that the baseline's naive script must
	// deliver exactly lopnr's rows.
	clean bool
	about string
}

// standardShape gives, per person, about 10 VAL rows, 3 TakeCare rows and
// 2 registry rows (par_sluten, par_oppen, lmed, dors).
var standardShape = map[string]float64{
	"val_sluten": 3.0,
	"val_oppen":  3.0,
	"takecare":   1.7,
	"par_oppen":  0.18,
	"lmed":       0.12,
}

var scenarios = map[string]scenario{
	"small": {name: "small", persons: 4000, sourceRows: standardShape, clean: true,
		about: "4,000 persons in the standard shape, identity noise off (the smoke test)"},
	"standard": {name: "standard", persons: 1_000_000, sourceRows: standardShape,
		about: "1,000,000 persons: about 10 M VAL rows, 3 M TakeCare rows, 2 M registry rows (15.3 M in all), a cohort of about 95,000"},
	"large": {name: "large", persons: 3_300_000, sourceRows: standardShape,
		about: "3,300,000 persons in the standard shape: about 50 M source rows"},
}

// options are the generator's options for persons of the scenario.
func (sc scenario) options(persons int, seed uint64) synth.Options {
	o := synth.Options{Persons: persons, Seed: seed, SourceRows: sc.sourceRows}
	if sc.clean {
		// One re-used pair and one chain of changes at least: the job needs
		// both files to have rows.
		o.InvalidRate, o.InterimRate, o.ReserveRate, o.ChangedRate, o.ReusedRate = -1, -1, -1, 1e-9, 1e-9
	}
	return o
}

// config is what a run needs.
type config struct {
	scenario scenario
	growth   []float64
	dir      string
	md       string
	memory   string
	seed     uint64
	keep     bool
	runs     int // of each measured step; the fastest is kept
	log      io.Writer
}

func main() {
	if err := mainErr(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func mainErr(args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	name := fs.String("scenario", "small", "small, standard or large")
	growth := fs.String("growth", "", "comma-separated scales of the scenario to run for the growth table, such as 0.1,1,3 (default: the scenario once)")
	dir := fs.String("dir", "", "work directory for data and outputs (default a new directory under /tmp)")
	md := fs.String("md", "", "markdown file for the tables (default bench/out/SCENARIO.md)")
	memory := fs.String("memory", "2GB", "DuckDB's memory limit, for lopnr and the baseline alike")
	runs := fs.Int("runs", 1, "runs of each measured step; the fastest is kept (its peak memory is the highest of all runs)")
	seed := fs.Uint64("seed", 1, "the generator's seed")
	keep := fs.Bool("keep", false, "keep the work directory")
	step := fs.String("step", "", "internal: run one measured step in this process and print its result")
	var sa stepArgs
	sa.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *step != "" {
		return runStep(*step, sa, os.Stdout)
	}
	sc, ok := scenarios[*name]
	if !ok {
		return fmt.Errorf("-scenario %q: want small, standard or large", *name)
	}
	cfg := config{scenario: sc, dir: *dir, md: *md, memory: *memory, seed: *seed, keep: *keep, runs: *runs, log: os.Stderr}
	if *growth == "" {
		cfg.growth = []float64{1}
	} else {
		for _, s := range strings.Split(*growth, ",") {
			f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
			if err != nil || f <= 0 {
				return fmt.Errorf("-growth %q: want positive numbers such as 0.1,1,3", *growth)
			}
			cfg.growth = append(cfg.growth, f)
		}
	}
	if cfg.md == "" {
		cfg.md = filepath.Join("bench", "out", sc.name+".md")
	}
	rep, err := run(context.Background(), cfg)
	if err != nil {
		return err
	}
	text := rep.markdown()
	fmt.Print(text)
	if err := os.MkdirAll(filepath.Dir(cfg.md), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(cfg.md, []byte(text), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: tables written to %s\n", cfg.md)
	return nil
}

// sizeRun is everything measured at one size of a scenario.
type sizeRun struct {
	scale    float64
	persons  int
	rows     int64 // source rows
	bytes    int64 // source files on disk
	cohort   int
	baseline stepResult
	lopnr    stepResult
	// lopnrDelivered is lopnr with a job spec of only the sources the
	// delivery reads.
	lopnrDelivered stepResult
	stages         []stageRow
	plainRows      int64
	plainSize      int64
}

// stageRow is one stage against its raw tool.
type stageRow struct {
	stage string
	lopnr stepResult
	raw   []stepResult
}

type report struct {
	cfg     config
	machine string
	sizes   []*sizeRun
}

// run generates each size, runs every step and checks the delivery.
func run(ctx context.Context, cfg config) (*report, error) {
	if _, err := envFromOS(); err != nil {
		return nil, err
	}
	dir := cfg.dir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "lopnr-bench-"); err != nil {
			return nil, err
		}
	}
	if !cfg.keep {
		defer os.RemoveAll(dir)
	}
	rep := &report{cfg: cfg, machine: machine()}
	for _, scale := range cfg.growth {
		sr, err := runSize(ctx, cfg, filepath.Join(dir, "x"+strconv.FormatFloat(scale, 'f', -1, 64)), scale)
		if err != nil {
			return nil, err
		}
		rep.sizes = append(rep.sizes, sr)
	}
	return rep, nil
}

func runSize(ctx context.Context, cfg config, dir string, scale float64) (*sizeRun, error) {
	sc := cfg.scenario
	sr := &sizeRun{scale: scale, persons: max(1, int(float64(sc.persons)*scale+0.5))}
	data := filepath.Join(dir, "data")
	logf := func(format string, a ...any) { fmt.Fprintf(cfg.log, "bench: "+format+"\n", a...) }

	// The generator runs in a child too: it holds the population in
	// memory, and a child forked from a large parent starts with the
	// parent's resident set in its peak.
	unique := fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), os.Getpid())
	base := stepArgs{data: data, work: dir, memory: cfg.memory, unique: unique, scenario: sc.name, persons: sr.persons, seed: cfg.seed}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	gen, err := child(ctx, "gen", base)
	if err != nil {
		return nil, fmt.Errorf("step gen: %w", err)
	}
	sr.rows, sr.cohort, base.rows = gen.Rows, gen.Cohort, gen.Rows
	if sr.bytes, err = dirSize(data); err != nil {
		return nil, err
	}
	logf("%s ×%g: %d persons, %d source rows (%.0f MB), cohort %d, generated in %s",
		sc.name, scale, sr.persons, sr.rows, mb(sr.bytes), sr.cohort, gen.Took.Round(time.Millisecond))

	id, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, err
	}
	idFile := filepath.Join(dir, "researcher-key.txt")
	if err := os.WriteFile(idFile, []byte(id.String()+"\n"), 0o600); err != nil {
		return nil, err
	}
	// once runs a step once.
	once := func(name string, mod func(*stepArgs)) (stepResult, error) {
		a := base
		mod(&a)
		r, err := child(ctx, name, a)
		if err != nil {
			return r, fmt.Errorf("step %s: %w", name, err)
		}
		logf("  %-15s %8.2f s  peak %5.0f MB  %s", name, r.Took.Seconds(), mb(r.MaxRSS), r.Note)
		return r, nil
	}

	// measure runs steps that are compared with each other cfg.runs times,
	// in rounds (each step once a round, so that a slow spell of a shared
	// machine falls on all of them alike), and keeps each step's fastest
	// run, with the highest peak memory of its runs: the fastest run is
	// the least disturbed, and memory is not noisy.
	type measured struct {
		name string
		mod  func(*stepArgs)
		out  *stepResult
	}
	measure := func(steps ...measured) error {
		peaks := make([]int64, len(steps))
		for run := range max(1, cfg.runs) {
			for i, st := range steps {
				r, err := once(st.name, func(a *stepArgs) {
					a.unique += fmt.Sprintf("-run%d", run)
					if st.mod != nil {
						st.mod(a)
					}
				})
				if err != nil {
					return err
				}
				peaks[i] = max(peaks[i], r.MaxRSS)
				if run == 0 || r.Took < st.out.Took {
					*st.out = r
				}
			}
		}
		for i, st := range steps {
			st.out.MaxRSS = peaks[i]
		}
		return nil
	}

	// The whole job, both ways.
	recipient := func(a *stepArgs) { a.recipient = id.Recipient().String() }
	if err := measure(measured{"baseline", nil, &sr.baseline}, measured{"lopnr", recipient, &sr.lopnr},
		measured{"lopnr-delivered", recipient, &sr.lopnrDelivered}); err != nil {
		return nil, err
	}
	// Fetch the delivery back, decrypt and check it; its plaintext and its
	// encrypted bytes feed the stage steps.
	fetched, err := once("fetch", func(a *stepArgs) {
		a.identity, a.delivery, a.project, a.unique = idFile, sr.lopnr.Delivery, sr.lopnr.Project, sr.lopnr.Unique
	})
	if err != nil {
		return nil, err
	}
	if fetched.Rows != sr.lopnr.Rows {
		return nil, fmt.Errorf("the delivery fetched back has %d rows, the job reported %d", fetched.Rows, sr.lopnr.Rows)
	}
	sr.plainRows, sr.plainSize = fetched.Rows, fetched.Bytes
	base.plain = fetched.Rows

	// Each stage against its raw tool.
	var norm, readCSV, seal, zst, ag, sink, put stepResult
	if err := measure(measured{"link", nil, &norm}, measured{"readcsv", nil, &readCSV}); err != nil {
		return nil, err
	}
	sr.stages = append(sr.stages, stageRow{stage: "normalisation: ingest and identity resolution (linkage.Link) / bare `read_csv` of the same files and columns", lopnr: norm, raw: []stepResult{readCSV}})
	if err := measure(measured{"seal", nil, &seal}, measured{"zstd", nil, &zst}, measured{"age", nil, &ag}); err != nil {
		return nil, err
	}
	sr.stages = append(sr.stages, stageRow{stage: "compression and encryption: lopnr's sealer (SHA-256, zstd, age, SHA-256) / zstd alone, age alone", lopnr: seal, raw: []stepResult{zst, ag}})
	if err := measure(measured{"sink", nil, &sink}, measured{"put", nil, &put}); err != nil {
		return nil, err
	}
	sr.stages = append(sr.stages, stageRow{stage: "upload: lopnr's S3 sink (staged multipart upload, published by server-side copy) / minio-go PutObject", lopnr: sink, raw: []stepResult{put}})
	return sr, nil
}

// child runs one step in a child process and returns what it measured,
// with the child's peak memory.
func child(ctx context.Context, name string, a stepArgs) (stepResult, error) {
	exe, err := os.Executable()
	if err != nil {
		return stepResult{}, err
	}
	cmd := exec.CommandContext(ctx, exe, append([]string{"-step", name}, a.flags()...)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return stepResult{}, err
	}
	var r stepResult
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("reading its result: %w", err)
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.MaxRSS = ru.Maxrss << 10 // kilobytes on Linux
	}
	r.Name = name
	return r, nil
}

func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	return n, err
}

func mb(n int64) float64 { return float64(n) / 1e6 }

// machine describes this machine for the tables.
func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			mem = fmt.Sprintf(", %.0f GiB", float64(kb)/(1<<20))
		}
	}
	return fmt.Sprintf("%d cores (%s)%s, %s %s/%s", runtime.NumCPU(), cpu, mem, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

var errNoS3 = errors.New("no S3 gateway: run under deploy/dev/run, or set LOPNR_S3_ENDPOINT, LOPNR_S3_ACCESS_KEY and LOPNR_S3_SECRET_KEY")
