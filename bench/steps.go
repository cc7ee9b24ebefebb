package main

import (
	"bufio"
	"context"
	"database/sql"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"filippo.io/age"
	_ "github.com/duckdb/duckdb-go/v2"
	"github.com/klauspost/compress/zstd"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"go.yaml.in/yaml/v3"

	"github.com/lopnr/lopnr/bench/internal/readcsv"
	"github.com/lopnr/lopnr/extract"
	"github.com/lopnr/lopnr/internal/synth"
	"github.com/lopnr/lopnr/keystore"
	"github.com/lopnr/lopnr/keystore/local"
	"github.com/lopnr/lopnr/keystore/vault"
	"github.com/lopnr/lopnr/linkage"
	"github.com/lopnr/lopnr/linkage/personnummer"
)

// baselineSQL is the team's script; see baseline.sql.
//
//go:embed baseline.sql
var baselineSQL string

// bucket holds everything bench uploads, each run under a prefix of its
// own.
const bucket = "lopnr-bench"

// Files in a size's work directory that the steps share.
const (
	plainFile  = "plain.csv"  // the delivery's plaintext, every file after another
	sealedFile = "sealed.age" // the delivery's encrypted files, one after another
)

// stepArgs are what the parent tells a step.
type stepArgs struct {
	data, work, memory string
	rows, plain        int64  // source rows; rows in the delivery's plaintext
	unique             string // a prefix for this run's keys in S3 and Vault
	recipient          string // lopnr: the researcher's age public key
	identity           string // fetch: the researcher's age identity file
	project, delivery  string // fetch: the delivery to fetch
	scenario           string // gen
	persons            int    // gen
	seed               uint64 // gen
	// delivered: lopnr reads only the sources that the cohort, the
	// variables and the identity resolution use, as the baseline does.
	delivered bool
}

func (a *stepArgs) register(fs *flag.FlagSet) {
	fs.StringVar(&a.data, "data", "", "internal: the data directory")
	fs.StringVar(&a.work, "work", "", "internal: the work directory")
	fs.StringVar(&a.memory, "step-memory", "2GB", "internal: DuckDB's memory limit")
	fs.Int64Var(&a.rows, "rows", 0, "internal: source rows")
	fs.Int64Var(&a.plain, "plain-rows", 0, "internal: rows of the delivery's plaintext")
	fs.StringVar(&a.unique, "unique", "", "internal: this run's prefix")
	fs.StringVar(&a.recipient, "recipient", "", "internal: the researcher's age public key")
	fs.StringVar(&a.identity, "identity", "", "internal: the researcher's age identity file")
	fs.StringVar(&a.scenario, "step-scenario", "", "internal: the scenario to generate")
	fs.IntVar(&a.persons, "persons", 0, "internal: persons to generate")
	fs.Uint64Var(&a.seed, "step-seed", 1, "internal: the generator's seed")
	fs.StringVar(&a.project, "project", "", "internal: the project of the delivery to fetch")
	fs.StringVar(&a.delivery, "delivery", "", "internal: the delivery to fetch")
}

func (a stepArgs) flags() []string {
	return []string{"-data", a.data, "-work", a.work, "-step-memory", a.memory, "-rows", strconv.FormatInt(a.rows, 10), "-plain-rows", strconv.FormatInt(a.plain, 10),
		"-unique", a.unique, "-recipient", a.recipient, "-identity", a.identity, "-project", a.project, "-delivery", a.delivery,
		"-step-scenario", a.scenario, "-persons", strconv.Itoa(a.persons), "-step-seed", strconv.FormatUint(a.seed, 10)}
}

// stepResult is what a step measured. MaxRSS is filled in by the parent.
type stepResult struct {
	Name   string           `json:"name"`
	Took   time.Duration    `json:"took"`
	Rows   int64            `json:"rows"`  // rows processed (delivered, for the whole job)
	Bytes  int64            `json:"bytes"` // bytes processed, for MB/s
	MaxRSS int64            `json:"max_rss"`
	Files  map[string]int64 `json:"files,omitempty"` // rows per delivered file
	// Stages is where lopnr's job spent its time, in order.
	Stages   []stageTime `json:"stages,omitempty"`
	Cohort   int         `json:"cohort,omitempty"`
	Project  string      `json:"project,omitempty"`
	Unique   string      `json:"unique,omitempty"` // lopnr: the prefix its delivery went under
	Delivery string      `json:"delivery,omitempty"`
	Note     string      `json:"note,omitempty"`
}

type stageTime struct {
	Name string        `json:"name"`
	Took time.Duration `json:"took"`
}

func (r *stepResult) addStage(name string, d time.Duration) {
	for i := range r.Stages {
		if r.Stages[i].Name == name {
			r.Stages[i].Took += d
			return
		}
	}
	r.Stages = append(r.Stages, stageTime{name, d})
}

// runStep runs one step in this process and writes its result as JSON.
func runStep(name string, a stepArgs, out io.Writer) error {
	steps := map[string]func(context.Context, stepArgs) (stepResult, error){
		"gen":      stepGen,
		"baseline": stepBaseline,
		"lopnr":    stepLopnr,
		"lopnr-delivered": func(ctx context.Context, a stepArgs) (stepResult, error) {
			a.delivered = true
			return stepLopnr(ctx, a)
		},
		"fetch":   stepFetch,
		"link":    stepLink,
		"readcsv": stepReadCSV,
		"seal":    stepSeal,
		"zstd":    stepZstd,
		"age":     stepAge,
		"sink":    stepSink,
		"put":     stepPut,
	}
	f, ok := steps[name]
	if !ok {
		return fmt.Errorf("-step %q: no such step", name)
	}
	r, err := f(context.Background(), a)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return json.NewEncoder(out).Encode(r)
}

// s3Env is the S3 gateway from the environment.
type s3Env struct {
	endpoint, access, secret, region string
}

func envFromOS() (s3Env, error) {
	e := s3Env{os.Getenv("LOPNR_S3_ENDPOINT"), os.Getenv("LOPNR_S3_ACCESS_KEY"), os.Getenv("LOPNR_S3_SECRET_KEY"), os.Getenv("LOPNR_S3_REGION")}
	if e.endpoint == "" || e.access == "" || e.secret == "" {
		return e, errNoS3
	}
	if e.region == "" {
		e.region = "us-east-1"
	}
	return e, nil
}

func (e s3Env) client() (*minio.Client, error) {
	u, err := url.Parse(e.endpoint)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("LOPNR_S3_ENDPOINT %q: want a URL", e.endpoint)
	}
	return minio.New(u.Host, &minio.Options{Creds: credentials.NewStaticV4(e.access, e.secret, ""), Secure: u.Scheme == "https", Region: e.region})
}

func (e s3Env) sink(ctx context.Context, prefix string) (*extract.S3Sink, error) {
	return extract.NewS3Sink(ctx, extract.S3Config{Endpoint: e.endpoint, AccessKey: e.access, SecretKey: e.secret,
		Region: e.region, Bucket: bucket, Prefix: prefix})
}

// openDuckDB opens an in-memory database that spills into a new directory
// under work past the memory limit.
func openDuckDB(work, name, memory string) (*sql.DB, string, error) {
	dir, err := os.MkdirTemp(work, name+"-")
	if err != nil {
		return nil, "", err
	}
	// In memory, spilling to dir past the limit: as lopnr's linkage runs.
	db, err := sql.Open("duckdb", "")
	if err != nil {
		return nil, "", err
	}
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(fmt.Sprintf("SET memory_limit = '%s'; SET temp_directory = '%s'", memory, filepath.Join(dir, "tmp"))); err != nil {
		db.Close()
		return nil, "", err
	}
	return db, dir, nil
}

// stepGen writes the scenario's data.
func stepGen(ctx context.Context, a stepArgs) (stepResult, error) {
	var r stepResult
	sc, ok := scenarios[a.scenario]
	if !ok {
		return r, fmt.Errorf("no scenario %q", a.scenario)
	}
	start := time.Now()
	truth, err := synth.Generate(a.data, sc.options(a.persons, a.seed))
	if err != nil {
		return r, err
	}
	r.Took, r.Rows, r.Cohort = time.Since(start), truth.Rows(), truth.Cohort.Persons
	return r, nil
}

// stepBaseline runs baseline.sql: the team's script.
func stepBaseline(ctx context.Context, a stepArgs) (stepResult, error) {
	r := stepResult{Files: map[string]int64{}}
	start := time.Now()
	db, dir, err := openDuckDB(a.work, "baseline", a.memory)
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	defer db.Close()
	out := filepath.Join(a.work, "baseline-out")
	if err := os.MkdirAll(out, 0o700); err != nil {
		return r, err
	}
	spec, err := linkage.LoadSpec(filepath.Join(a.data, synth.JobFile))
	if err != nil {
		return r, err
	}
	script := strings.NewReplacer("{{DATA}}", a.data, "{{OUT}}", out, "{{REF}}", strings.ReplaceAll(spec.ReferenceDate, "-", "")).Replace(baselineSQL)
	for _, st := range sqlStatements(script) {
		if !strings.HasPrefix(st, "COPY") {
			if _, err := db.ExecContext(ctx, st); err != nil {
				return r, fmt.Errorf("baseline.sql: %v", err)
			}
			continue
		}
		// COPY … TO answers with the rows it wrote.
		var n int64
		if err := db.QueryRowContext(ctx, st).Scan(&n); err != nil {
			return r, fmt.Errorf("baseline.sql: %v", err)
		}
		m := copyTarget.FindStringSubmatch(st)
		if m == nil {
			return r, fmt.Errorf("baseline.sql: no file in %.40q", st)
		}
		r.Files[strings.TrimSuffix(filepath.Base(m[1]), ".csv.zst")] = n
		r.Rows += n
	}
	r.Took = time.Since(start)
	r.Note = fmt.Sprintf("%d rows written", r.Rows)
	return r, nil
}

var copyTarget = regexp.MustCompile(`TO '([^']+)'`)

// sqlStatements splits a script at lines that end with ';', leaving out
// comments.
func sqlStatements(script string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(script, "\n") {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "--") {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(t, ";") {
			out = append(out, strings.TrimSpace(cur.String()))
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out
}

// stepLopnr runs the whole job as `lopnr run --s3-endpoint` does: the key
// store in OpenBao when LOPNR_VAULT_ADDR is set (else a local one), the
// delivery to the S3 gateway.
func stepLopnr(ctx context.Context, a stepArgs) (stepResult, error) {
	r := stepResult{Files: map[string]int64{}}
	env, err := envFromOS()
	if err != nil {
		return r, err
	}
	start := time.Now()
	jobFile := filepath.Join(a.data, synth.JobFile)
	specRaw, err := os.ReadFile(jobFile)
	if err != nil {
		return r, err
	}
	if a.delivered {
		if specRaw, err = deliveredOnly(specRaw); err != nil {
			return r, err
		}
		a.unique += "-delivered"
	}
	spec, err := linkage.ParseSpec(specRaw, jobFile)
	if err != nil {
		return r, err
	}
	var appr extract.Approval
	dec := yaml.NewDecoder(strings.NewReader(synth.Approved))
	dec.KnownFields(true)
	if err := dec.Decode(&appr); err != nil {
		return r, err
	}
	recips, err := extract.ParseRecipients([]string{a.recipient})
	if err != nil {
		return r, err
	}
	var store keystore.Store
	if addr := os.Getenv("LOPNR_VAULT_ADDR"); addr != "" {
		store, err = vault.New(ctx, vault.Config{Address: addr, Token: os.Getenv("LOPNR_VAULT_TOKEN"), Prefix: a.unique})
		r.Note = "key store: OpenBao"
	} else {
		store, err = local.Open(filepath.Join(a.work, "keystore"))
		r.Note = "key store: local"
	}
	if err != nil {
		return r, err
	}
	ks := keystore.New(store, keystore.Options{})
	if _, err := ks.CreateProject(ctx, keystore.ProjectSpec{ID: spec.Project, EPMDnr: spec.EPMDnr}); err != nil {
		return r, err
	}
	sink, err := env.sink(ctx, a.unique)
	if err != nil {
		return r, err
	}
	signer, err := extract.LoadOrCreateSigner(filepath.Join(a.work, "signing.key"))
	if err != nil {
		return r, err
	}
	r.addStage("setup", time.Since(start))
	lopts := linkage.Options{MemoryLimit: a.memory, Progress: func(p linkage.Progress) {
		if p.Done {
			r.addStage(p.Stage, p.Took)
		}
	}}
	res, err := linkage.Link(ctx, spec, lopts)
	if err != nil {
		return r, err
	}
	defer res.Close()
	// assign and publish say when they start and end, without a time.
	began := map[string]time.Time{}
	m, err := extract.Deliver(ctx, res, extract.Options{Approval: appr, Keys: ks, Recipients: recips, Sink: sink, Signer: signer, SpecBytes: specRaw,
		Release: true, // as lopnr run: the publish stage includes the release's copy
		Progress: func(p extract.Progress) {
			key := p.Stage + "\x00" + p.File
			if !p.Done {
				began[key] = time.Now()
				return
			}
			d := p.Took
			if t, ok := began[key]; ok && d == 0 {
				d = time.Since(t)
			}
			name := p.Stage
			switch name {
			case "extract":
				name = "extract into a table (Parquet only)"
			case "file":
				name = "extract, leak guard, zstd, age, upload"
			case "assign":
				name = "assign LopNr (key store)"
			case "publish":
				name = "publish (server-side copy, manifest)"
			}
			r.addStage(name, d)
		}})
	if err != nil {
		return r, err
	}
	closeStart := time.Now()
	if err := res.Close(); err != nil {
		return r, err
	}
	r.addStage("close (remove the work database)", time.Since(closeStart))
	r.Took = time.Since(start)
	var staged time.Duration
	for _, st := range r.Stages {
		staged += st.Took
	}
	if r.Took > staged {
		r.addStage("other (codebooks, README, manifest)", r.Took-staged)
	}
	for _, f := range m.Files {
		r.Files[strings.TrimSuffix(f.Name, ".csv.zst.age")] = f.Rows
		r.Rows += f.Rows
		r.Bytes += f.Size
	}
	r.Project, r.Delivery, r.Unique = m.Project, m.Delivery, a.unique
	r.Note += fmt.Sprintf(", %d rows delivered in %d files", r.Rows, len(m.Files))
	return r, nil
}

// deliveredOnly rewrites a job spec without the sources that neither the
// cohort, the variables nor the identity resolution use.
func deliveredOnly(specRaw []byte) ([]byte, error) {
	var spec linkage.JobSpec
	if err := yaml.Unmarshal(specRaw, &spec); err != nil {
		return nil, err
	}
	used := map[string]bool{spec.Identity.History: true, spec.Identity.Reused: true, spec.Cohort.List: true}
	for _, c := range spec.Cohort.Criteria {
		used[c.Source] = true
	}
	for _, v := range spec.Variables {
		used[v.Source] = true
	}
	var kept []linkage.SourceSpec
	for _, s := range spec.Sources {
		if used[s.Name] {
			kept = append(kept, s)
		}
	}
	spec.Sources = kept
	return yaml.Marshal(&spec)
}

// identityShaped finds what could be an identity number; each is then
// parsed.
var identityShaped = regexp.MustCompile(`\b\d{6,8}[-+]?\d{4}\b`)

// stepFetch downloads the delivery from S3, decrypts and decompresses
// every file with the researcher's key, counts its rows and looks for
// identity numbers; it leaves the plaintext and the encrypted bytes in the
// work directory for the stage steps.
func stepFetch(ctx context.Context, a stepArgs) (stepResult, error) {
	var r stepResult
	env, err := envFromOS()
	if err != nil {
		return r, err
	}
	client, err := env.client()
	if err != nil {
		return r, err
	}
	idf, err := os.Open(a.identity)
	if err != nil {
		return r, err
	}
	ids, err := age.ParseIdentities(idf)
	idf.Close()
	if err != nil {
		return r, err
	}
	plain, err := os.Create(filepath.Join(a.work, plainFile))
	if err != nil {
		return r, err
	}
	defer plain.Close()
	sealed, err := os.Create(filepath.Join(a.work, sealedFile))
	if err != nil {
		return r, err
	}
	defer sealed.Close()
	start := time.Now()
	prefix := a.unique + "/deliveries/" + a.project + "/" + a.delivery + "/"
	var files, leaks int
	for obj := range client.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return r, obj.Err
		}
		if !strings.HasSuffix(obj.Key, ".csv.zst.age") {
			continue
		}
		files++
		o, err := client.GetObject(ctx, bucket, obj.Key, minio.GetObjectOptions{})
		if err != nil {
			return r, err
		}
		dr, err := age.Decrypt(io.TeeReader(o, sealed), ids...)
		if err != nil {
			return r, fmt.Errorf("%s: %w", filepath.Base(obj.Key), err)
		}
		zr, err := zstd.NewReader(dr)
		if err != nil {
			return r, err
		}
		sc := bufio.NewScanner(io.TeeReader(zr, plain))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var lines int64
		for sc.Scan() {
			lines++
			for _, m := range identityShaped.FindAll(sc.Bytes(), -1) {
				if personnummer.Parse(string(m), time.Now()).Valid() {
					leaks++
				}
			}
		}
		zr.Close()
		o.Close()
		if err := sc.Err(); err != nil {
			return r, fmt.Errorf("%s: %w", filepath.Base(obj.Key), err)
		}
		r.Rows += lines - 1 // the header
	}
	r.Took = time.Since(start)
	if files == 0 {
		return r, fmt.Errorf("no delivered files under %s", prefix)
	}
	if leaks > 0 {
		return r, fmt.Errorf("the delivery holds %d valid identity numbers", leaks)
	}
	fi, err := plain.Stat()
	if err != nil {
		return r, err
	}
	r.Bytes = fi.Size()
	r.Note = fmt.Sprintf("%d files decrypted, %d rows, no identity numbers", files, r.Rows)
	return r, nil
}

// stepLink is lopnr's normalisation alone: ingest every source, resolve
// the identities, select the cohort, report (linkage.Link, as `lopnr
// check`).
func stepLink(ctx context.Context, a stepArgs) (stepResult, error) {
	var r stepResult
	start := time.Now()
	spec, err := linkage.LoadSpec(filepath.Join(a.data, synth.JobFile))
	if err != nil {
		return r, err
	}
	res, err := linkage.Link(ctx, spec, linkage.Options{MemoryLimit: a.memory})
	if err != nil {
		return r, err
	}
	for _, s := range res.Report.Sources {
		r.Rows += s.Rows
	}
	if err := res.Close(); err != nil {
		return r, err
	}
	r.Took = time.Since(start)
	r.Bytes, err = dirSize(a.data)
	return r, err
}

// stepReadCSV reads every source into a table with DuckDB's own CSV
// reader, sniffing the dialect, as a team's script first does
// (bench/linkbench's baseline).
func stepReadCSV(ctx context.Context, a stepArgs) (stepResult, error) {
	var r stepResult
	start := time.Now()
	spec, err := linkage.LoadSpec(filepath.Join(a.data, synth.JobFile))
	if err != nil {
		return r, err
	}
	db, dir, err := openDuckDB(a.work, "readcsv", a.memory)
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	defer db.Close()
	if r.Rows, err = readcsv.Sources(ctx, db, spec, dir); err != nil {
		return r, err
	}
	r.Took = time.Since(start)
	r.Bytes, err = dirSize(a.data)
	return r, err
}

// pump copies a file in the work directory through w and measures it.
func pump(a stepArgs, file string, rows int64, mk func(io.Writer) (io.Writer, func() error, error)) (stepResult, error) {
	var r stepResult
	f, err := os.Open(filepath.Join(a.work, file))
	if err != nil {
		return r, err
	}
	defer f.Close()
	start := time.Now()
	w, done, err := mk(io.Discard)
	if err != nil {
		return r, err
	}
	n, err := io.Copy(w, bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return r, err
	}
	if err := done(); err != nil {
		return r, err
	}
	r.Took, r.Bytes, r.Rows = time.Since(start), n, rows
	return r, nil
}

func newRecipient() (age.Recipient, error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, err
	}
	return id.Recipient(), nil
}

// stepSeal is lopnr's sealer on the delivery's plaintext: SHA-256, zstd
// (SpeedFastest, concurrent blocks), age, SHA-256.
func stepSeal(ctx context.Context, a stepArgs) (stepResult, error) {
	rc, err := newRecipient()
	if err != nil {
		return stepResult{}, err
	}
	return pump(a, plainFile, a.plain, func(w io.Writer) (io.Writer, func() error, error) {
		s, err := extract.SealForBenchmark(w, []age.Recipient{rc})
		if err != nil {
			return nil, nil, err
		}
		return s, s.Close, nil
	})
}

// stepZstd is klauspost's zstd alone, as lopnr sets it.
func stepZstd(ctx context.Context, a stepArgs) (stepResult, error) {
	return pump(a, plainFile, a.plain, func(w io.Writer) (io.Writer, func() error, error) {
		zw, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithConcurrentBlocks(true))
		if err != nil {
			return nil, nil, err
		}
		return zw, zw.Close, nil
	})
}

// stepAge is age alone, to one X25519 recipient.
func stepAge(ctx context.Context, a stepArgs) (stepResult, error) {
	rc, err := newRecipient()
	if err != nil {
		return stepResult{}, err
	}
	return pump(a, plainFile, a.plain, func(w io.Writer) (io.Writer, func() error, error) {
		aw, err := age.Encrypt(w, rc)
		if err != nil {
			return nil, nil, err
		}
		return aw, aw.Close, nil
	})
}

// stepSink uploads the delivery's encrypted bytes through lopnr's S3 sink:
// a staged multipart upload of unknown size, published by a server-side
// copy.
func stepSink(ctx context.Context, a stepArgs) (stepResult, error) {
	var r stepResult
	env, err := envFromOS()
	if err != nil {
		return r, err
	}
	f, err := os.Open(filepath.Join(a.work, sealedFile))
	if err != nil {
		return r, err
	}
	defer f.Close()
	start := time.Now()
	sink, err := env.sink(ctx, a.unique+"-sink")
	if err != nil {
		return r, err
	}
	st, err := sink.Begin(ctx, "bench", "sink")
	if err != nil {
		return r, err
	}
	w, err := st.Create(ctx, "delivery.csv.zst.age")
	if err != nil {
		return r, err
	}
	n, err := io.Copy(w, f)
	if err != nil {
		return r, errors.Join(err, st.Abort(ctx))
	}
	if err := w.Close(); err != nil {
		return r, errors.Join(err, st.Abort(ctx))
	}
	// A delivery is released only with its manifest signature.
	if w, err = st.Create(ctx, "manifest.json.sig"); err == nil {
		err = w.Close()
	}
	if err == nil {
		err = st.Commit(ctx)
	}
	if err == nil {
		err = sink.Release(ctx, "bench", "sink")
	}
	if err != nil {
		return r, errors.Join(err, st.Abort(ctx))
	}
	r.Took, r.Bytes, r.Rows = time.Since(start), n, a.plain
	return r, nil
}

// stepPut uploads the same bytes with a plain minio-go PutObject of known
// size.
func stepPut(ctx context.Context, a stepArgs) (stepResult, error) {
	var r stepResult
	env, err := envFromOS()
	if err != nil {
		return r, err
	}
	f, err := os.Open(filepath.Join(a.work, sealedFile))
	if err != nil {
		return r, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return r, err
	}
	start := time.Now()
	client, err := env.client()
	if err != nil {
		return r, err
	}
	info, err := client.PutObject(ctx, bucket, a.unique+"-put/delivery.csv.zst.age", f, fi.Size(), minio.PutObjectOptions{PartSize: extract.DefaultPartSize})
	if err != nil {
		return r, err
	}
	r.Took, r.Bytes, r.Rows = time.Since(start), info.Size, a.plain
	return r, nil
}
