package linkage

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/duckdb/duckdb-go/v2"

	"github.com/lopnr/lopnr/linkage/personnummer"
)

// Options tune a linkage run.
type Options struct {
	// WorkDir holds the run's temporary files and what DuckDB spills
	// beyond its memory limit; default a new directory under os.TempDir(),
	// removed by Close.
	WorkDir string
	// MemoryLimit caps DuckDB's memory, such as "4GB"; beyond it DuckDB
	// spills to WorkDir. Default 4GB.
	MemoryLimit string
	// Threads for DuckDB; default the number of CPUs.
	Threads int
	// Progress, when set, is told of each stage as it starts and ends.
	Progress func(Progress)
}

// Progress is one step of a run, for a progress display. It never carries
// an identity number.
type Progress struct {
	Stage  string // ingest, identities, cohort, link, report
	Source string // the source, when the stage is per source
	Rows   int64  // rows done, when known
	Done   bool
	Took   time.Duration
}

// Result is a finished linkage: the DuckDB database with every source, the
// resolved identities and the cohort, and the linkage-quality report.
// The extract stage continues from it; Close removes it.
type Result struct {
	Report *Report
	spec   *JobSpec
	db     *sql.DB
	conn   *sql.Conn
	work   string
	owned  bool
	src    []*source
}

// Close closes the database and removes it, with its spill files: it holds
// the sources' rows. A work directory that Link made is removed whole.
func (res *Result) Close() error {
	err := res.conn.Close()
	if e := res.db.Close(); err == nil {
		err = e
	}
	if res.owned {
		os.RemoveAll(res.work)
	} else {
		removeDatabase(res.work)
	}
	return err
}

// removeDatabase removes what a run leaves in a work directory.
func removeDatabase(work string) {
	for _, name := range []string{"spill", "out"} {
		os.RemoveAll(filepath.Join(work, name))
	}
}

// run is one linkage in progress.
type run struct {
	spec    *JobSpec
	opts    Options
	conn    *sql.Conn
	work    string
	sources []*source
	history *personnummer.History
	parser  *personnummer.Parser
}

// Link ingests every source of spec, resolves every identity, selects the
// cohort and links the sources to it, and reports on the quality of the
// linkage. Nothing is pseudonymised or delivered.
func Link(ctx context.Context, spec *JobSpec, opts Options) (*Result, error) {
	if opts.MemoryLimit == "" {
		opts.MemoryLimit = "4GB"
	}
	if opts.Threads <= 0 {
		opts.Threads = runtime.NumCPU()
	}
	owned := opts.WorkDir == ""
	work := opts.WorkDir
	if owned {
		var err error
		if work, err = os.MkdirTemp("", "lopnr-link-"); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(work, 0o700); err != nil {
		return nil, err
	}
	res, err := link(ctx, spec, opts, work)
	if err != nil {
		if owned {
			os.RemoveAll(work)
		} else {
			removeDatabase(work)
		}
		return nil, err
	}
	res.owned = owned
	return res, nil
}

func link(ctx context.Context, spec *JobSpec, opts Options, work string) (_ *Result, err error) {
	// An in-memory database: nothing of a run needs to outlive it, and
	// writing every ingested table into a database file made ingestion
	// three times slower than reading. Beyond the memory limit DuckDB
	// spills to the work directory all the same (temp_directory below).
	db, err := sql.Open("duckdb", "")
	if err != nil {
		return nil, err
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, err
	}
	defer func() {
		if err != nil {
			conn.Close()
			db.Close()
		}
	}()
	for _, q := range []string{
		fmt.Sprintf("SET memory_limit = %s", sqlString(opts.MemoryLimit)),
		fmt.Sprintf("SET threads = %d", opts.Threads),
		fmt.Sprintf("SET temp_directory = %s", sqlString(filepath.Join(work, "spill"))),
		// Tables may hold rows out of file order, which lets DuckDB read
		// a file in parallel without putting it back in order: nothing
		// reads them in order but the history and lists (see ingest).
		"SET preserve_insertion_order = false",
	} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			return nil, fmt.Errorf("duckdb: %s", sanitize(err))
		}
	}
	r := &run{spec: spec, opts: opts, conn: conn, work: work, parser: personnummer.NewParser(spec.RefDate())}
	for i, s := range spec.Sources {
		p, err := spec.Resolve(i)
		if err != nil {
			return nil, err
		}
		r.sources = append(r.sources, &source{index: i, name: s.Name, file: spec.File(i), profile: p, table: "src_" + s.Name})
	}
	for _, src := range r.sources {
		start := time.Now()
		r.progress(Progress{Stage: "ingest", Source: src.name})
		if err := r.openSource(src); err != nil {
			return nil, err
		}
		err := r.ingest(ctx, src)
		src.in.Close()
		src.in = nil
		if err != nil {
			return nil, err
		}
		r.progress(Progress{Stage: "ingest", Source: src.name, Rows: src.rows, Done: true, Took: time.Since(start)})
	}
	// Every source is in the database: from here DuckDB reads no file and
	// writes only into the work directory's out/, where deliveries are
	// staged.
	out := filepath.Join(work, "out") + string(filepath.Separator)
	if err := os.MkdirAll(out, 0o700); err != nil {
		return nil, err
	}
	for _, q := range []string{
		fmt.Sprintf("SET allowed_directories = [%s]", sqlString(out)),
		"SET enable_external_access = false",
		// And no statement of a later stage (nor anything that reaches
		// the connection) can set them back.
		"SET lock_configuration = true",
	} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			return nil, fmt.Errorf("duckdb: %s", sanitize(err))
		}
	}
	if err := r.stage(ctx, "identities", r.resolveIdentities); err != nil {
		return nil, err
	}
	if err := r.stage(ctx, "cohort", r.selectCohort); err != nil {
		return nil, err
	}
	var rep *Report
	if err := r.stage(ctx, "report", func(ctx context.Context) (err error) {
		rep, err = r.report(ctx)
		return err
	}); err != nil {
		return nil, err
	}
	return &Result{Report: rep, spec: spec, db: db, conn: conn, work: work, src: r.sources}, nil
}

// openSource opens a source's file, with the spec's opener or os.Open,
// for ingest to read it through: Go reads the open file, and DuckDB reads
// it through /proc/self/fd/N, which opens the same file again (not the
// path: a file swapped in under the path after it was opened, or a link
// put there, is never read). Only a regular file is read.
func (r *run) openSource(src *source) error {
	open := r.spec.open
	if open == nil {
		open = func(i int) (*os.File, error) { return os.Open(r.spec.File(i)) }
	} else if runtime.GOOS != "linux" {
		return &FileError{File: src.file, Msg: "sources opened through a source root are read through /proc/self/fd, which this system lacks"}
	}
	f, err := open(src.index)
	if err != nil {
		return fileErr(src.file, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fileErr(src.file, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return &FileError{File: src.file, Msg: "not a regular file"}
	}
	src.in, src.size, src.read = f, fi.Size(), src.file
	if runtime.GOOS == "linux" {
		src.read = fmt.Sprintf("/proc/self/fd/%d", f.Fd())
	}
	return nil
}

func (r *run) progress(p Progress) {
	if r.opts.Progress != nil {
		r.opts.Progress(p)
	}
}

func (r *run) stage(ctx context.Context, name string, fn func(context.Context) error) error {
	start := time.Now()
	r.progress(Progress{Stage: name})
	if err := fn(ctx); err != nil {
		return err
	}
	r.progress(Progress{Stage: name, Done: true, Took: time.Since(start)})
	return nil
}

func (r *run) sourceNamed(name string) *source {
	i := slices.IndexFunc(r.sources, func(s *source) bool { return s.name == name })
	if i < 0 {
		return nil
	}
	return r.sources[i]
}

// dataSources are the sources reported on and linked: all but the history
// and the list of re-used numbers.
func (r *run) dataSources() []*source {
	var out []*source
	for _, s := range r.sources {
		if s.name != r.spec.Identity.History && s.name != r.spec.Identity.Reused {
			out = append(out, s)
		}
	}
	return out
}

// resolveIdentities builds the history, then parses every distinct raw
// identity of every data source once, in Go, with the same code as
// everywhere else, and stores the results in the table ids. Rows are then
// joined to ids in DuckDB: a source's rows never pass through Go one by
// one.
func (r *run) resolveIdentities(ctx context.Context) error {
	var changes []personnummer.Change
	var reused []personnummer.Number
	if h := r.sourceNamed(r.spec.Identity.History); h != nil {
		var err error
		if changes, err = r.readHistory(ctx, h); err != nil {
			return err
		}
	}
	if l := r.sourceNamed(r.spec.Identity.Reused); l != nil {
		var err error
		if reused, err = r.readList(ctx, l); err != nil {
			return err
		}
	}
	r.history = personnummer.NewHistory(changes, reused)

	// Each distinct value is parsed once, by a Go function that DuckDB
	// calls; its answer comes back packed in one number (see pack), far
	// cheaper to hand over and to take apart than a struct or a string,
	// and is unpacked into the table ids: one row per distinct value, with
	// the current number as a BIGINT (a table of numbers is built, joined
	// and counted at a fraction of the cost of the same as text), and n_0,
	// n_1, ...: the value's rows in each data source, from which the report
	// counts without going back to the sources.
	if err := duckdb.RegisterScalarUDF(r.conn, "lopnr_identity", identityUDF{r.parser, r.history}); err != nil {
		return fmt.Errorf("identities: %w", err)
	}
	if err := duckdb.RegisterScalarUDF(r.conn, "lopnr_changed_from", changedFromUDF{r.parser}); err != nil {
		return fmt.Errorf("identities: %w", err)
	}
	sources := r.dataSources()
	var parts, counts, cols []string
	for i, s := range sources {
		parts = append(parts, fmt.Sprintf("SELECT %s AS raw, %d AS src FROM %s", ident(s.profile.Identity), i, ident(s.table)))
		counts = append(counts, fmt.Sprintf("count(*) FILTER (WHERE src = %d) AS n_%d", i, i))
		cols = append(cols, fmt.Sprintf("n_%d", i))
	}
	q := fmt.Sprintf(`CREATE TABLE ids AS SELECT %s, %s
		FROM (SELECT raw, lopnr_identity(raw) AS p, %s FROM (
			SELECT raw, %s FROM (%s) WHERE raw IS NOT NULL GROUP BY raw))`,
		unpackSQL, strings.Join(cols, ", "), strings.Join(cols, ", "), strings.Join(counts, ", "), strings.Join(parts, " UNION ALL "))
	if _, err := r.exec(ctx, q); err != nil {
		return fmt.Errorf("identities: %s", sanitize(err))
	}
	// Rows without an identity value are not in ids: counted here.
	var empty []string
	for i, s := range sources {
		empty = append(empty, fmt.Sprintf("SELECT %d, count(*) FROM %s WHERE %s IS NULL", i, ident(s.table), ident(s.profile.Identity)))
	}
	rows, err := r.conn.QueryContext(ctx, strings.Join(empty, " UNION ALL "))
	if err != nil {
		return fmt.Errorf("identities: %s", sanitize(err))
	}
	defer rows.Close()
	for rows.Next() {
		var i int
		var n int64
		if err := rows.Scan(&i, &n); err != nil {
			return err
		}
		sources[i].emptyRows = n
	}
	return rows.Err()
}

// identityUDF is the scalar function lopnr_identity(raw): the raw value
// parsed and resolved through the history, packed in a UBIGINT (see
// pack). Parser and History are immutable, so DuckDB may call it from any
// number of threads.
type identityUDF struct {
	parser  *personnummer.Parser
	history *personnummer.History
}

func (u identityUDF) Config() duckdb.ScalarFuncConfig {
	v, _ := duckdb.NewTypeInfo(duckdb.TYPE_VARCHAR)
	n, _ := duckdb.NewTypeInfo(duckdb.TYPE_UBIGINT)
	return duckdb.ScalarFuncConfig{InputTypeInfos: []duckdb.TypeInfo{v}, ResultTypeInfo: n}
}

// Executor answers row by row: a number goes into DuckDB's result vector
// without a call into C, which a string needs for every row (measured on
// 2.8 million values: 0.31 s with the unpacking below, against 0.93 s for
// a packed string cut apart with substr).
func (u identityUDF) Executor() duckdb.ScalarFuncExecutor {
	return duckdb.ScalarFuncExecutor{RowExecutor: func(values []driver.Value) (any, error) {
		raw, _ := values[0].(string)
		return u.pack(raw), nil
	}}
}

// The places of pack's fields in its number.
const (
	packNumber       = 1<<40 - 1 // bits 0-39: the current number, canonical, when it links; else 0
	packReasonShift  = 40        // bits 40-43: why it does not link (a Reason), 0 when it does
	packReasonMask   = 1<<4 - 1
	packSexShift     = 44 // bits 44-45: sex, 1 male, 2 female, 0 when it does not link
	packSexMask      = 1<<2 - 1
	packBirthShift   = 46 // bits 46-62: the birth date as days since 1800-01-01 plus one; 0 unknown
	packBirthMask    = 1<<17 - 1
	packChangedShift = 63 // bit 63: the history changed the number to another
)

// unpackSQL takes apart p, pack's answer for raw, into the columns of ids:
// raw, canonical (BIGINT), reason (the Reason as a number; NULL when it
// links), changed_from (VARCHAR), sex (1 male, 2 female) and birth (DATE).
var unpackSQL = fmt.Sprintf(`raw,
	nullif(p & %d, 0)::BIGINT AS canonical,
	nullif((p >> %d) & %d, 0)::UTINYINT AS reason,
	CASE WHEN p >> %d = 1 THEN lopnr_changed_from(raw) END AS changed_from,
	nullif((p >> %d) & %d, 0)::UTINYINT AS sex,
	CASE WHEN (p >> %d) & %d > 0 THEN DATE '1800-01-01' + (((p >> %d) & %d)::INTEGER - 1) END AS birth`,
	packNumber, packReasonShift, packReasonMask, packChangedShift, packSexShift, packSexMask,
	packBirthShift, packBirthMask, packBirthShift, packBirthMask)

// birthEpoch is the day that birth dates are counted from in pack.
var birthEpoch = time.Date(1800, 1, 1, 0, 0, 0, 0, time.UTC)

// pack is the answer for raw, its fields in the bits the pack constants
// name.
func (u identityUDF) pack(raw string) uint64 {
	n := u.parser.Parse(raw)
	cur, reason := u.history.Resolve(n)
	if reason == personnummer.OK {
		reason = cur.LinkReason()
	}
	if reason != personnummer.OK {
		return uint64(reason) << packReasonShift
	}
	v := canonicalKey(cur)
	switch cur.Sex() {
	case personnummer.Male:
		v |= 1 << packSexShift
	case personnummer.Female:
		v |= 2 << packSexShift
	}
	if b, ok := cur.BirthDate(); ok && !b.Before(birthEpoch) {
		// In seconds: a time.Duration from 1800 overflows after 2092.
		if days := uint64((b.Unix()-birthEpoch.Unix())/86400) + 1; days <= packBirthMask {
			v |= days << packBirthShift
		}
	}
	if cur.Key() != n.Key() {
		v |= 1 << packChangedShift
	}
	return v
}

// changedFromUDF is lopnr_changed_from(raw): the number as written,
// canonical, for the few values that the history changed to another.
type changedFromUDF struct{ parser *personnummer.Parser }

func (u changedFromUDF) Config() duckdb.ScalarFuncConfig {
	v, _ := duckdb.NewTypeInfo(duckdb.TYPE_VARCHAR)
	return duckdb.ScalarFuncConfig{InputTypeInfos: []duckdb.TypeInfo{v}, ResultTypeInfo: v}
}

func (u changedFromUDF) Executor() duckdb.ScalarFuncExecutor {
	return duckdb.ScalarFuncExecutor{RowExecutor: func(values []driver.Value) (any, error) {
		raw, _ := values[0].(string)
		return string(u.parser.Parse(raw).AppendCanonical(nil)), nil
	}}
}

// readHistory reads the history source into changes. An invalid number is
// an error naming the line, never the number.
func (r *run) readHistory(ctx context.Context, src *source) ([]personnummer.Change, error) {
	h := src.profile.History
	date := "NULL"
	if h.Date != "" {
		date = ident(h.Date)
	}
	rows, err := r.conn.QueryContext(ctx, fmt.Sprintf(`SELECT %s, %s, %s FROM %s`, ident(h.Old), ident(h.New), date, ident(src.table)))
	if err != nil {
		return nil, fmt.Errorf("%s: %s", src.file, sanitize(err))
	}
	defer rows.Close()
	var out []personnummer.Change
	line := src.headerLines()
	for rows.Next() {
		line++
		var old, nw, d sql.NullString
		if err := rows.Scan(&old, &nw, &d); err != nil {
			return nil, err
		}
		c := personnummer.Change{Old: r.parser.Parse(old.String), New: r.parser.Parse(nw.String)}
		for _, f := range []struct {
			col string
			n   personnummer.Number
		}{{h.Old, c.Old}, {h.New, c.New}} {
			if !f.n.Valid() {
				return nil, &FileError{File: src.file, Line: line, Column: f.col, Msg: "invalid identity number (" + f.n.Reason().String() + ")"}
			}
		}
		if d.Valid && strings.TrimSpace(d.String) != "" {
			t, err := personnummer.ParseDate(strings.TrimSpace(d.String))
			if err != nil {
				return nil, &FileError{File: src.file, Line: line, Column: h.Date, Msg: "not a date (want YYYY-MM-DD or YYYYMMDD)"}
			}
			c.Date = t
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// headerLines is the number of lines before the first data row.
func (s *source) headerLines() int64 {
	if s.profile.header {
		return 1
	}
	return 0
}

// readList reads a list source of identity numbers (the re-used numbers).
func (r *run) readList(ctx context.Context, src *source) ([]personnummer.Number, error) {
	rows, err := r.conn.QueryContext(ctx, fmt.Sprintf(`SELECT %s FROM %s`, ident(src.profile.Identity), ident(src.table)))
	if err != nil {
		return nil, fmt.Errorf("%s: %s", src.file, sanitize(err))
	}
	defer rows.Close()
	var out []personnummer.Number
	line := src.headerLines()
	for rows.Next() {
		line++
		var s sql.NullString
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		n := r.parser.Parse(s.String)
		if !n.Valid() {
			return nil, &FileError{File: src.file, Line: line, Column: src.profile.Identity, Msg: "invalid identity number (" + n.Reason().String() + ")"}
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// reasonSQL is a row's reason for not linking, by name, from its LEFT
// JOIN to ids as i: NULL when it links.
var reasonSQL = `coalesce(` + reasonNamesSQL + `[i.reason], CASE WHEN i.raw IS NULL THEN 'empty' END)`

// reasonNamesSQL is an SQL list of the reasons' names: element r (from 1)
// names Reason(r), as ids.reason holds it.
var reasonNamesSQL = func() string {
	var names []string
	for i, r := range personnummer.Reasons() {
		if int(r) != i+1 {
			panic("personnummer.Reasons is not 1, 2, ...")
		}
		names = append(names, sqlString(r.String()))
	}
	return "[" + strings.Join(names, ", ") + "]"
}()

// sexSQL is the sex of ids as i, as M or F.
const sexSQL = `CASE i.sex WHEN 1 THEN 'M' WHEN 2 THEN 'F' END`

// normView is the SQL of a source's rows with their identity resolved:
// every column, and _canonical (the current number as a BIGINT, NULL when
// not linkable), _reason (why not linkable, NULL when linkable),
// _changed_from (the number as written when the history changed it to
// another, canonical; else NULL), _sex (M or F) and _birth.
func normView(s *source) string {
	return fmt.Sprintf(`(SELECT s.*, i.canonical AS _canonical, %s AS _reason, i.changed_from AS _changed_from,
		%s AS _sex, i.birth AS _birth
		FROM %s s LEFT JOIN ids i ON s.%s = i.raw)`, reasonSQL, sexSQL, ident(s.table), ident(s.profile.Identity))
}

// cohortView is normView of the rows of cohort members only. It joins the
// source to cohort_ids, the identity values of cohort members, which is
// far smaller than ids: the extract reads a source once and builds its
// join on a table the size of the cohort.
func cohortView(s *source) string {
	return fmt.Sprintf(`(SELECT s.*, i.canonical AS _canonical, NULL::VARCHAR AS _reason, i.changed_from AS _changed_from,
		%s AS _sex, i.birth AS _birth
		FROM %s s JOIN cohort_ids i ON s.%s = i.raw)`, sexSQL, ident(s.table), ident(s.profile.Identity))
}

// traceSQL, set by LOPNR_TRACE_SQL=1 in the environment, prints each
// statement of a run with its time on standard error: for finding where
// a run's time goes (bench/README.md). Statements hold names, paths and
// SQL, never a value from a file: values are bound parameters.
var traceSQL = os.Getenv("LOPNR_TRACE_SQL") != ""

// exec runs one statement on the run's connection.
func (r *run) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if traceSQL {
		defer r.trace(time.Now(), q)
	}
	return r.conn.ExecContext(ctx, q, args...)
}

// trace prints a statement and the time since start, for traceSQL.
func (r *run) trace(start time.Time, q string) {
	fmt.Fprintf(os.Stderr, "lopnr: sql %7.3f s  %s\n", time.Since(start).Seconds(), strings.Join(strings.Fields(q), " "))
}
