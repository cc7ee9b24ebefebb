package extract

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql/driver"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"filippo.io/age"
	"github.com/duckdb/duckdb-go/v2"
	"golang.org/x/text/encoding/charmap"

	"github.com/lopnr/lopnr/keystore"
	"github.com/lopnr/lopnr/linkage"
	"github.com/lopnr/lopnr/linkage/personnummer"
)

// Assigner gives persons their run numbers in a project, storing new ones
// before it returns; *keystore.Keystore is one.
type Assigner interface {
	Assign(ctx context.Context, project string, numbers []personnummer.Number) ([]keystore.RunNumber, error)
}

// Options are what a delivery needs besides the linked job.
type Options struct {
	Approval Approval
	Keys     Assigner
	// Recipients encrypt every file: the researchers' age public keys, or
	// a scrypt recipient made from a generated passphrase.
	Recipients []age.Recipient
	// Passphrase says the recipients are a passphrase (for the README and
	// the manifest); the passphrase itself is never stored.
	Passphrase bool
	Sink       Sink
	// Release publishes the delivery as soon as it is staged, for lopnr
	// run, where there is no second person to release it; a server
	// leaves it staged until an approver releases it.
	Release bool
	Signer  *Signer
	// SpecBytes is the job spec as submitted; the manifest keeps its digest.
	SpecBytes []byte
	// DeliveryID names the delivery; default the time and a random suffix.
	DeliveryID string
	Now        func() time.Time
	Progress   func(Progress)
}

// Progress is one step of a delivery, for a progress display.
type Progress struct {
	Stage string // assign, extract and guard (Parquet), file, publish
	File  string
	Rows  int64
	Bytes int64
	Done  bool
	Took  time.Duration
}

// Deliver extracts the approved variables of every source from a linked
// job, with LopNr in place of the identity, and stages them in the sink as
// one delivery, which Options.Release (or the sink's Release later)
// publishes. The variables are checked against the approval before
// anything runs; run numbers are assigned (and stored) before any output
// uses them; every output passes the leak guard before it is written; the
// manifest signature is written last, after every other file is complete;
// and a failure anywhere leaves nothing staged or published.
func Deliver(ctx context.Context, res *linkage.Result, opts Options) (_ *Manifest, err error) {
	spec := res.Spec()
	sources := res.Sources()
	plans, err := plan(spec, sources, res.HasIndexDate(), opts.Approval)
	if err != nil {
		return nil, err
	}
	if opts.Keys == nil || opts.Sink == nil || opts.Signer == nil {
		return nil, errors.New("deliver: keys, sink and signer are required")
	}
	if len(opts.Recipients) == 0 {
		return nil, errors.New("deliver: no recipients: register the researchers' age public keys on the project, or use a passphrase")
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	id := opts.DeliveryID
	if id == "" {
		var b [4]byte
		rand.Read(b[:])
		id = now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
	}
	progress := func(p Progress) {
		if opts.Progress != nil {
			opts.Progress(p)
		}
	}

	progress(Progress{Stage: "assign"})
	if err := assign(ctx, res, spec.Project, opts.Keys); err != nil {
		return nil, err
	}
	progress(Progress{Stage: "assign", Done: true})

	staging, err := opts.Sink.Begin(ctx, spec.Project, id)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			// A fresh context: a cancelled job must still clean up.
			actx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if aerr := staging.Abort(actx); aerr != nil {
				err = errors.Join(err, fmt.Errorf("cleaning up the staged delivery: %w", aerr))
			}
		}
	}()

	specSum := sha256.Sum256(opts.SpecBytes)
	m := &Manifest{Delivery: id, Project: spec.Project, Created: now().UTC(), SpecSHA256: hex.EncodeToString(specSum[:]), Recipients: "age public keys"}
	if opts.Passphrase {
		m.Recipients = "passphrase"
	}
	format := spec.Outputs.Format
	if format == "" {
		format = "csv"
	}
	var docs []staticFile
	for _, p := range plans {
		src := sourceNamed(sources, p.Source)
		f, err := writeOutput(ctx, res, staging, src, p, spec.Outputs, format, opts, progress)
		if err != nil {
			return nil, err
		}
		m.Files = append(m.Files, f)
		docs = append(docs, staticFile{f.Codebook, codebook(p)})
	}
	docs = append(docs, staticFile{readmeFile, readme(m, format)})
	for _, d := range docs {
		m.Documents = append(m.Documents, newManifestDocument(d.name, d.data))
	}
	manifest, sig, err := opts.Signer.sign(m)
	if err != nil {
		return nil, err
	}
	if err := writeStatic(ctx, staging, append(docs, staticFile{manifestFile, manifest})); err != nil {
		return nil, err
	}
	// The signature last: a staged set of files with it is a whole
	// delivery.
	if err := writeStatic(ctx, staging, []staticFile{{signatureFile, sig}}); err != nil {
		return nil, err
	}
	progress(Progress{Stage: "publish"})
	if err := staging.Commit(ctx); err != nil {
		return nil, err
	}
	if opts.Release {
		if err := opts.Sink.Release(ctx, spec.Project, id); err != nil {
			return nil, err
		}
	}
	progress(Progress{Stage: "publish", Done: true})
	return m, nil
}

func sourceNamed(sources []linkage.LinkedSource, name string) *linkage.LinkedSource {
	for i := range sources {
		if sources[i].Name == name {
			return &sources[i]
		}
	}
	return nil
}

// assign gets every cohort member's LopNr from the key store and puts them
// in the table lopnr(canonical, lopnr).
func assign(ctx context.Context, res *linkage.Result, project string, keys Assigner) error {
	numbers, err := res.CohortNumbers(ctx)
	if err != nil {
		return err
	}
	if len(numbers) == 0 {
		return errors.New("the cohort is empty: nothing to deliver")
	}
	rs, err := keys.Assign(ctx, project, numbers)
	if err != nil {
		return fmt.Errorf("run numbers: %w", err)
	}
	conn := res.Conn()
	if _, err := conn.ExecContext(ctx, `CREATE OR REPLACE TEMP TABLE lopnr (canonical BIGINT, lopnr BIGINT)`); err != nil {
		return err
	}
	return conn.Raw(func(dc any) error {
		app, err := duckdb.NewAppender(dc.(driver.Conn), "temp", "main", "lopnr")
		if err != nil {
			return err
		}
		for i, n := range numbers {
			key, err := linkage.CanonicalKey(n)
			if err != nil {
				app.Close()
				return err
			}
			if err := app.AppendRow(key, int64(rs[i])); err != nil {
				app.Close()
				return err
			}
		}
		return app.Close()
	})
}

// closeWithError is what a staged file's writer offers to abort it.
type closeWithError interface{ CloseWithError(error) error }

// abortFile closes a staged file's writer with an error, so that the sink
// abandons it.
func abortFile(w io.WriteCloser, err error) {
	if c, ok := w.(closeWithError); ok {
		c.CloseWithError(err)
		return
	}
	w.Close()
}

// staticFile is a small plaintext file of a delivery: a codebook, the
// README, the manifest or its signature.
type staticFile struct {
	name string
	data []byte
}

// writeStatic writes the small files of a delivery, all at once: each is
// one request, and one after another they took longer than the data.
func writeStatic(ctx context.Context, staging Staging, files []staticFile) error {
	ws := make([]io.WriteCloser, 0, len(files))
	var err error
	for _, f := range files {
		var w io.WriteCloser
		if w, err = staging.Create(ctx, f.name); err != nil {
			break
		}
		ws = append(ws, w)
		if _, err = w.Write(f.data); err != nil {
			break
		}
	}
	if err != nil {
		for _, w := range ws {
			abortFile(w, err)
		}
		return err
	}
	errs := make([]error, len(ws))
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = w.Close()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// writeOutput extracts one output and streams it through the leak guard,
// the writer, zstd and age into the staging area. A CSV output goes
// straight from the query, sorted, to the stream, and its rows are counted
// there; a Parquet output is first materialised, for the leak guard's
// query.
func writeOutput(ctx context.Context, res *linkage.Result, staging Staging, src *linkage.LinkedSource, p sourcePlan,
	out linkage.OutputSpec, format string, opts Options, progress func(Progress)) (ManifestFile, error) {
	conn := res.Conn()
	q, args := p.selectSQL(src)
	f := ManifestFile{Source: src.Name, Codebook: src.Name + ".codebook.csv"}
	switch format {
	case "parquet":
		f.Name, f.Format = src.Name+".parquet.age", "parquet+age"
	default:
		f.Name, f.Format = src.Name+".csv.zst.age", "csv+zstd+age"
	}
	// By LopNr, ties broken by a hash of the whole row: rows never follow
	// the source's order, and a delivery made again from the same data is
	// the same bytes. (ORDER BY ALL does the same but sorts on every column
	// and took a quarter more memory on a 5 GB delivery.)
	var cols []string
	for _, c := range p.Columns {
		cols = append(cols, linkage.Ident(c.Name))
	}
	order := fmt.Sprintf(`ORDER BY "LopNr", hash(%s)`, strings.Join(cols, ", "))
	ordered := fmt.Sprintf("(SELECT * FROM (%s) %s)", q, order)

	if format == "parquet" {
		table := "out_" + src.Name
		progress(Progress{Stage: "extract", File: src.Name})
		began := time.Now()
		if _, err := conn.ExecContext(ctx, fmt.Sprintf("CREATE OR REPLACE TEMP TABLE %s AS %s", linkage.Ident(table), q), args...); err != nil {
			return ManifestFile{}, fmt.Errorf("extract %s: %s", src.Name, linkage.Sanitize(err))
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS "+linkage.Ident(table))
		if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM "+linkage.Ident(table)).Scan(&f.Rows); err != nil {
			return ManifestFile{}, err
		}
		progress(Progress{Stage: "extract", File: src.Name, Rows: f.Rows, Done: true, Took: time.Since(began)})
		if !opts.Approval.AllowPersonnummer {
			start := time.Now()
			if err := guard(ctx, conn, table, f.Name, p.Columns); err != nil {
				return ManifestFile{}, err
			}
			progress(Progress{Stage: "guard", File: f.Name, Rows: f.Rows, Done: true, Took: time.Since(start)})
		}
		ordered, args = fmt.Sprintf("(SELECT * FROM %s %s)", linkage.Ident(table), order), nil
	}
	progress(Progress{Stage: "file", File: f.Name, Rows: f.Rows})
	start := time.Now()

	w, err := staging.Create(ctx, f.Name)
	if err != nil {
		return ManifestFile{}, err
	}
	s, err := seal(w, opts.Recipients, format != "parquet")
	if err != nil {
		abortFile(w, err)
		return ManifestFile{}, err
	}
	if format == "parquet" {
		err = copyParquet(ctx, res, ordered, src.Name, s)
	} else {
		// The leak guard runs on the stream, as DuckDB writes it.
		f.Rows, err = copyCSV(ctx, res, ordered, args, f.Name, out, !opts.Approval.AllowPersonnummer, s)
	}
	if err == nil {
		f.Sums, err = s.Close()
	}
	if err != nil {
		abortFile(w, err)
		return ManifestFile{}, fmt.Errorf("%s: %w", f.Name, err)
	}
	if err := w.Close(); err != nil {
		return ManifestFile{}, fmt.Errorf("%s: %w", f.Name, err)
	}
	progress(Progress{Stage: "file", File: f.Name, Rows: f.Rows, Bytes: f.Size, Done: true, Took: time.Since(start)})
	return f, nil
}

// copyParquet has DuckDB write the output as Parquet (zstd inside) into
// the work directory, then streams the file into dst and removes it.
func copyParquet(ctx context.Context, res *linkage.Result, query, name string, dst io.Writer) error {
	path := filepath.Join(res.OutDir(), name+".parquet")
	defer os.Remove(path)
	if _, err := res.Conn().ExecContext(ctx, fmt.Sprintf("COPY %s TO %s (FORMAT parquet, COMPRESSION zstd)", query, linkage.SQLString(path))); err != nil {
		return errors.New(linkage.Sanitize(err))
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(dst, f)
	return err
}

// copyCSV has DuckDB write the output of query (with its parameters) as
// CSV into a named pipe in the work directory while Go reads it, counts its
// records, converts line endings and encoding, and streams it into dst:
// nothing is held in memory or written to disk. It returns the number of
// rows, the header not counted.
func copyCSV(ctx context.Context, res *linkage.Result, query string, args []any, name string, out linkage.OutputSpec, guarded bool, dst io.Writer) (int64, error) {
	fifo := filepath.Join(res.OutDir(), name+".pipe")
	os.Remove(fifo)
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		return 0, fmt.Errorf("named pipe: %w", err)
	}
	defer os.Remove(fifo)
	delim := out.Delim()
	readErr := make(chan error, 1)
	var records recordCounter
	go func() {
		f, err := os.Open(fifo) // blocks until DuckDB opens it for writing
		if err != nil {
			readErr <- err
			return
		}
		defer f.Close()
		var w io.Writer = dst
		var enc *encodeWriter
		if out.Encoding == linkage.EncodingCP {
			enc = &encodeWriter{w: dst, line: 1}
			w = enc
		}
		if out.LineEnding == "crlf" {
			w = &crlfWriter{w: w}
		}
		var guard *csvGuard
		if guarded {
			guard = newCSVGuard(w, name, delim, personnummer.NewParser(time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)))
			w = guard
		}
		records.next = w
		_, err = io.Copy(&records, bufio.NewReaderSize(f, 256<<10))
		if guard != nil && err == nil {
			err = guard.end()
		}
		if err == nil && enc != nil {
			err = enc.flush()
		}
		if err != nil {
			io.Copy(io.Discard, f) // let DuckDB finish
		}
		readErr <- err
	}()
	_, err := res.Conn().ExecContext(ctx, fmt.Sprintf("COPY %s TO %s (FORMAT csv, HEADER true, DELIMITER %s, QUOTE '\"')",
		query, linkage.SQLString(fifo), linkage.SQLString(string(delim))), args...)
	if err != nil {
		// DuckDB may have failed before opening the pipe: open it for
		// writing so that the reader wakes up and sees its end.
		if wf, oerr := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); oerr == nil {
			wf.Close()
		}
		<-readErr
		return 0, errors.New(linkage.Sanitize(err))
	}
	if err := <-readErr; err != nil {
		return 0, err
	}
	n := records.records()
	if n == 0 {
		return 0, errors.New("the CSV has no header line")
	}
	return n - 1, nil
}

// recordCounter counts the records of DuckDB's CSV on its way to next:
// the line ends outside quotes (a quote inside a value is doubled, which
// toggles twice).
type recordCounter struct {
	next    io.Writer
	n       int64 // line ends outside quotes
	inQuote bool
	open    bool // bytes since the last line end
}

// records returns the number of records, a last one without a line end
// included.
func (c *recordCounter) records() int64 {
	if c.open {
		return c.n + 1
	}
	return c.n
}

func (c *recordCounter) Write(p []byte) (int, error) {
	for _, b := range p {
		switch b {
		case '"':
			c.inQuote = !c.inQuote
		case '\n':
			if !c.inQuote {
				c.n++
			}
		}
	}
	if len(p) > 0 {
		c.open = c.inQuote || p[len(p)-1] != '\n'
	}
	return c.next.Write(p)
}

// crlfWriter turns every \n into \r\n (values never hold line breaks:
// the plan replaces them with spaces).
type crlfWriter struct {
	w   io.Writer
	buf []byte
}

func (c *crlfWriter) Write(p []byte) (int, error) {
	n := len(p)
	c.buf = c.buf[:0]
	for {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			c.buf = append(c.buf, p...)
			break
		}
		c.buf = append(append(c.buf, p[:i]...), '\r', '\n')
		p = p[i+1:]
	}
	if _, err := c.w.Write(c.buf); err != nil {
		return 0, err
	}
	return n, nil
}

// encodeWriter converts UTF-8 to windows-1252, failing on a character the
// code page lacks with the line it is on (never the value).
type encodeWriter struct {
	w       io.Writer
	line    int64
	pending []byte // an incomplete UTF-8 sequence from the last write
	out     []byte
}

var cp1252Enc = charmap.Windows1252

func (e *encodeWriter) Write(p []byte) (int, error) {
	data := p
	if len(e.pending) > 0 {
		data = append(e.pending, p...)
		e.pending = nil
	}
	e.out = e.out[:0]
	for i := 0; i < len(data); {
		c := data[i]
		if c < 0x80 {
			if c == '\n' {
				e.line++
			}
			e.out = append(e.out, c)
			i++
			continue
		}
		if !utf8.FullRune(data[i:]) { // incomplete at the end: keep for the next write
			e.pending = append([]byte(nil), data[i:]...)
			break
		}
		r, size := utf8.DecodeRune(data[i:])
		b, ok := cp1252Enc.EncodeRune(r)
		if !ok {
			return 0, fmt.Errorf("line %d: a character that windows-1252 cannot hold (deliver as utf-8, or clean the source)", e.line)
		}
		e.out = append(e.out, b)
		i += size
	}
	if _, err := e.w.Write(e.out); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (e *encodeWriter) flush() error {
	if len(e.pending) > 0 {
		return fmt.Errorf("line %d: output ends inside a UTF-8 character", e.line)
	}
	return nil
}

// codebook returns a file's codebook: variable, type, transform,
// description.
func codebook(p sourcePlan) []byte {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	w.Comma = ';'
	w.Write([]string{"variable", "type", "transform", "source_column", "description"})
	for _, c := range p.Columns {
		t := c.Transform.String()
		if c.Name == "LopNr" {
			t = "run number"
		}
		w.Write([]string{c.Name, c.Type, t, c.Source, c.Desc})
	}
	w.Flush()
	return b.Bytes()
}

// readme tells the researcher what the files are and how to open them.
func readme(m *Manifest, format string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "Delivery %s of project %s, made %s.\n\n", m.Delivery, m.Project, m.Created.Format("2006-01-02 15:04 MST"))
	b.WriteString("The data files are encrypted with age (https://age-encryption.org). Persons are\n")
	b.WriteString("identified by LopNr, a run number that is the same for a person in every file\n")
	b.WriteString("of this project and means nothing outside it.\n\nFiles:\n")
	for _, f := range m.Files {
		fmt.Fprintf(&b, "  %-32s %d rows; codebook in %s\n", f.Name, f.Rows, f.Codebook)
	}
	b.WriteString("\nTo decrypt")
	if m.Recipients == "passphrase" {
		b.WriteString(" (age asks for the passphrase, which you received separately):\n\n")
		if format == "parquet" {
			b.WriteString("  age -d -o FILE.parquet FILE.parquet.age\n")
		} else {
			b.WriteString("  age -d FILE.csv.zst.age | zstd -d > FILE.csv\n")
		}
	} else {
		b.WriteString(" with your age identity (the private key whose public key you registered):\n\n")
		if format == "parquet" {
			b.WriteString("  age -d -i key.txt -o FILE.parquet FILE.parquet.age\n")
		} else {
			b.WriteString("  age -d -i key.txt FILE.csv.zst.age | zstd -d > FILE.csv\n")
		}
	}
	b.WriteString("\nor `lopnr decrypt` with the same identity or passphrase. manifest.json lists every\n")
	b.WriteString("data file with its rows and SHA-256 sums before and after encryption, and this\n")
	b.WriteString("README and every codebook with their SHA-256; it is signed (manifest.json.sig):\n")
	b.WriteString("`lopnr verify --key <the service's public key> DIR` checks the signature and\n")
	b.WriteString("every file.\n")
	return []byte(b.String())
}
