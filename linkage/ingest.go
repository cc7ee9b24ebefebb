package linkage

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/text/encoding/charmap"
)

// maxLineSize is the longest line a source may have: 4 MiB. A longer line
// is an error naming its line, not a crash.
const maxLineSize = 4 << 20

// source is one ingested source: its spec, resolved profile, file columns
// and table.
type source struct {
	index   int
	name    string
	file    string // the spec's path, for errors and the report
	profile resolved
	// in is the open file, while it is ingested; read is what DuckDB
	// reads: that open file, through /proc/self/fd (see openSource).
	in      *os.File
	size    int64
	read    string
	columns []string // as in the file
	used    []string // the columns in the table: those the job reads
	table   string   // src_<name>
	rows    int64
	// emptyRows are the rows with no identity value (NULL), which ids
	// does not hold; set by resolveIdentities for data sources.
	emptyRows int64
}

// FileError is a problem with a source file, at a line and column where
// known. It never carries a value from the file.
type FileError struct {
	File   string
	Line   int64  // 0 when not known
	Column string // "" when not one column
	Msg    string
}

func (e *FileError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Column != "" {
		fmt.Fprintf(&b, ": column %s", e.Column)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// compressionOf returns the compression of a file: the profile's, or from
// the name.
func compressionOf(p resolved, file string) string {
	if p.Compression != "auto" {
		return p.Compression
	}
	switch strings.ToLower(filepath.Ext(file)) {
	case ".gz", ".gzip":
		return "gzip"
	case ".zst", ".zstd":
		return "zstd"
	}
	return "none"
}

// openPlain reads a source's open file from its start, decompressed and
// decoded to UTF-8.
func openPlain(src *source) (io.ReadCloser, error) {
	file, p := src.file, src.profile
	var r io.Reader = io.NewSectionReader(src.in, 0, src.size)
	var closers []io.Closer
	switch compressionOf(p, file) {
	case "gzip":
		gz, err := gzip.NewReader(r)
		if err != nil {
			return nil, &FileError{File: file, Msg: "not a gzip file: " + err.Error()}
		}
		r, closers = gz, append(closers, gz)
	case "zstd":
		zr, err := zstd.NewReader(r, zstd.WithDecoderMaxMemory(256<<20))
		if err != nil {
			return nil, &FileError{File: file, Msg: "not a zstd file: " + err.Error()}
		}
		r = zr
		closers = append(closers, closerFunc(func() error { zr.Close(); return nil }))
	}
	switch p.Encoding {
	case EncodingLatin:
		r = &singleByteReader{r: r, table: &latin1Table, name: EncodingLatin, line: 1}
	case EncodingCP:
		r = &singleByteReader{r: r, table: &cp1252Table, name: EncodingCP, line: 1}
	}
	return readCloser{r, closers}, nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

type readCloser struct {
	io.Reader
	closers []io.Closer
}

func (rc readCloser) Close() error {
	var err error
	for i := len(rc.closers) - 1; i >= 0; i-- {
		if e := rc.closers[i].Close(); err == nil {
			err = e
		}
	}
	return err
}

// singleByteReader decodes a single-byte encoding (latin-1, windows-1252)
// to UTF-8: runs of ASCII are copied as they are, found eight bytes at a
// time, and other bytes go through the table. Transcoding the benchmark's
// 182 MB TakeCare export (latin-1) takes 0.35 s, 0.63 s with
// golang.org/x/text's decoder (BenchmarkSingleByteReader compares the two
// alone). A byte the table leaves undefined is an error naming its line.
type singleByteReader struct {
	r     io.Reader
	table *[256]rune // -1 where the encoding defines no character
	name  string     // the encoding, for the error
	line  int64      // of the start of in
	in    [64 << 10]byte
	out   []byte
	pos   int
	err   error
}

var latin1Table, cp1252Table = func() (l, c [256]rune) {
	for b := range 256 {
		l[b] = rune(b)
		c[b] = charmap.Windows1252.DecodeByte(byte(b))
	}
	for _, b := range []byte{0x81, 0x8D, 0x8F, 0x90, 0x9D} { // undefined in windows-1252
		c[b] = -1
	}
	return l, c
}()

func (c *singleByteReader) Read(p []byte) (int, error) {
	for c.pos == len(c.out) {
		if c.err != nil {
			return 0, c.err
		}
		n, err := c.r.Read(c.in[:])
		c.err = err
		c.out, c.pos = c.out[:0], 0
		in := c.in[:n]
		for i := 0; i < n; {
			j := i
			for j+8 <= n && binary.LittleEndian.Uint64(in[j:])&0x8080808080808080 == 0 {
				j += 8
			}
			for j < n && in[j] < 0x80 {
				j++
			}
			c.out = append(c.out, in[i:j]...)
			if j == n {
				break
			}
			r := c.table[in[j]]
			if r < 0 {
				line := c.line + int64(bytes.Count(in[:j], []byte{'\n'}))
				c.err = &FileError{Line: line, Msg: fmt.Sprintf("byte 0x%02X is not a %s character (is the encoding right?)", in[j], c.name)}
				c.out = c.out[:0]
				return 0, c.err
			}
			c.out = utf8.AppendRune(c.out, r)
			i = j + 1
		}
		c.line += int64(bytes.Count(in, []byte{'\n'}))
	}
	n := copy(p, c.out[c.pos:])
	c.pos += n
	return n, nil
}

// readHeader returns the column names of a file's first line, and whether
// the file has any byte at all.
func readHeader(src *source) ([]string, error) {
	file, p := src.file, src.profile
	rc, err := openPlain(src)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	br := bufio.NewReaderSize(rc, 64<<10)
	line, err := br.ReadSlice('\n')
	if len(line) == 0 && errors.Is(err, io.EOF) {
		return nil, &FileError{File: file, Msg: "empty file"}
	}
	if errors.Is(err, bufio.ErrBufferFull) {
		return nil, &FileError{File: file, Line: 1, Msg: "header line longer than 64 KiB: is this the right file?"}
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fileErr(file, err)
	}
	line = []byte(strings.TrimRight(string(line), "\r\n"))
	line = []byte(strings.TrimPrefix(string(line), "\uFEFF"))
	if !utf8.Valid(line) {
		return nil, &FileError{File: file, Line: 1, Msg: "the header is not valid " + p.Encoding + " (set the source's encoding)"}
	}
	return splitHeader(string(line), p.Delimiter[0], p.Quote[0]), nil
}

// fileErr names the file in an error from reading it.
func fileErr(file string, err error) error {
	var fe *FileError
	if errors.As(err, &fe) {
		if fe.File == "" {
			c := *fe
			c.File = file
			return &c
		}
		return fe
	}
	return &FileError{File: file, Msg: err.Error()}
}

// splitHeader splits a header line on delim, honouring quotes.
func splitHeader(line string, delim, quote byte) []string {
	var cols []string
	var cur strings.Builder
	inQuote := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == quote && inQuote && i+1 < len(line) && line[i+1] == quote:
			cur.WriteByte(quote)
			i++
		case c == quote:
			inQuote = !inQuote
		case c == delim && !inQuote:
			cols = append(cols, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	return append(cols, strings.TrimSpace(cur.String()))
}

// headerMatches checks that a profile which names a file's columns names
// them as the file's header (or a Parquet file's schema) does: the names
// delivered are the file's own. The error names the profile's column,
// never the header's (a header is the file's, and may hold anything).
func headerMatches(file string, header []string, p resolved) error {
	if len(p.Columns) == 0 || slices.Equal(header, p.Columns) {
		return nil
	}
	for i, c := range p.Columns {
		if i >= len(header) || header[i] != c {
			return &FileError{File: file, Line: 1, Column: c,
				Msg: fmt.Sprintf("the profile's name of column %d, which the header names otherwise: a file with a header is read by its header (leave out the profile's columns, or name them as the header does)", i+1)}
		}
	}
	return &FileError{File: file, Line: 1, Msg: fmt.Sprintf("the header has %d columns, the profile names %d: a file with a header is read by its header (leave out the profile's columns, or name them as the header does)", len(header), len(p.Columns))}
}

// checkColumns checks that the file has every column the profile needs.
func checkColumns(file string, cols []string, p resolved) error {
	seen := map[string]bool{}
	for _, c := range cols {
		if c == "" {
			return &FileError{File: file, Line: 1, Msg: "the header has an empty column name"}
		}
		if strings.ContainsFunc(c, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return &FileError{File: file, Line: 1, Msg: "a column name has a control character"}
		}
		if seen[c] {
			return &FileError{File: file, Line: 1, Column: c, Msg: "appears twice in the header"}
		}
		seen[c] = true
	}
	for _, need := range p.required() {
		if !seen[need] {
			hint := ""
			if len(cols) == 1 {
				hint = fmt.Sprintf(" (the header has one column: is the delimiter %q right?)", p.Delimiter)
			}
			return &FileError{File: file, Line: 1, Column: need, Msg: "missing from the header" + hint}
		}
	}
	return nil
}

// sqlString quotes s as an SQL string literal.
func sqlString(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// ident quotes s as an SQL identifier.
func ident(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// ingest reads one source into its table.
func (r *run) ingest(ctx context.Context, src *source) error {
	p := src.profile
	if p.Kind != KindEvents {
		// The history and lists are read back row by row, their errors
		// naming lines: they keep the file's order.
		if _, err := r.exec(ctx, "SET preserve_insertion_order = true"); err != nil {
			return err
		}
		defer r.exec(ctx, "SET preserve_insertion_order = false")
	}
	if src.size == 0 {
		return &FileError{File: src.file, Msg: "empty file"}
	}
	if p.Format == "parquet" {
		return r.ingestParquet(ctx, src)
	}
	// Columns are named by the file's own header when it has one (a
	// profile that names them too must name them as the header does),
	// and only by the profile when it has none.
	cols := p.Columns
	if p.header {
		var err error
		if cols, err = readHeader(src); err != nil {
			return err
		}
		if err := headerMatches(src.file, cols, p); err != nil {
			return err
		}
	}
	if err := checkColumns(src.file, cols, p); err != nil {
		return err
	}
	src.columns = cols

	// DuckDB reads UTF-8 itself, compressed or not; other encodings are
	// decoded in Go, streaming, into a UTF-8 file in the work directory.
	path, compression := src.read, compressionOf(p, src.file)
	if p.Encoding != EncodingUTF8 {
		path, compression = filepath.Join(r.work, src.name+".utf8.csv"), "none"
		if err := transcode(src, path); err != nil {
			return err
		}
		defer os.Remove(path)
	}

	var types []string
	for _, c := range cols {
		types = append(types, sqlString(c)+": 'VARCHAR'")
	}
	rejects := "rej_" + src.name
	q := fmt.Sprintf(`CREATE TABLE %s AS SELECT %s FROM read_csv(%s,
		auto_detect = false, header = %t, delim = %s, quote = %s, escape = %s,
		columns = {%s}, compression = %s, strict_mode = true, null_padding = false,
		max_line_size = %d, store_rejects = true, rejects_table = %s, rejects_scan = %s)`,
		ident(src.table), r.selectList(src), sqlString(path), p.header, sqlString(p.Delimiter), sqlString(p.Quote), sqlString(p.Quote),
		strings.Join(types, ", "), sqlString(compression), maxLineSize, sqlString(rejects), sqlString("rejscan_"+src.name))
	if _, err := r.exec(ctx, q); err != nil {
		return &FileError{File: src.file, Msg: sanitize(err)}
	}
	if err := r.checkRejects(ctx, src, rejects); err != nil {
		return err
	}
	if err := r.conn.QueryRowContext(ctx, `SELECT count(*) FROM `+ident(src.table)).Scan(&src.rows); err != nil {
		return err
	}
	if src.rows == 0 {
		return &FileError{File: src.file, Msg: "no data rows (only a header)"}
	}
	return nil
}

func (r *run) ingestParquet(ctx context.Context, src *source) error {
	rows, err := r.conn.QueryContext(ctx, fmt.Sprintf(`SELECT column_name FROM (DESCRIBE SELECT * FROM read_parquet(%s))`, sqlString(src.read)))
	if err != nil {
		return &FileError{File: src.file, Msg: sanitize(err)}
	}
	defer rows.Close()
	var cols []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return err
		}
		cols = append(cols, c)
	}
	if err := rows.Err(); err != nil {
		return &FileError{File: src.file, Msg: sanitize(err)}
	}
	if err := headerMatches(src.file, cols, src.profile); err != nil {
		return err
	}
	if err := checkColumns(src.file, cols, src.profile); err != nil {
		return err
	}
	src.columns = cols
	q := fmt.Sprintf(`CREATE TABLE %s AS SELECT %s FROM read_parquet(%s)`, ident(src.table), r.selectList(src), sqlString(src.read))
	if _, err := r.exec(ctx, q); err != nil {
		return &FileError{File: src.file, Msg: sanitize(err)}
	}
	// Identities, dates and codes are compared as text.
	for _, c := range src.profile.required() {
		if !slices.Contains(src.used, c) {
			continue
		}
		if _, err := r.exec(ctx, fmt.Sprintf(`ALTER TABLE %s ALTER %s TYPE VARCHAR`, ident(src.table), ident(c))); err != nil {
			return &FileError{File: src.file, Column: c, Msg: sanitize(err)}
		}
	}
	return r.conn.QueryRowContext(ctx, `SELECT count(*) FROM `+ident(src.table)).Scan(&src.rows)
}

// selectList sets src.used to the columns UsedColumns keeps and returns
// them as an SQL select list.
func (r *run) selectList(src *source) string {
	src.used = UsedColumns(r.spec, src.index, src.columns)
	list := make([]string, len(src.used))
	for i, c := range src.used {
		list[i] = ident(c)
	}
	return strings.Join(list, ", ")
}

// UsedColumns returns the columns of source i, whose file has the given
// columns, that a run keeps: up to the last one the job reads (the
// source's identity, the history's columns, the columns of the cohort's
// criteria and the variables'). Only they become the source's table: the
// reader still parses and checks every line whole (column count, quoting,
// line length), but columns no step reads are not kept, which on wide
// registers is most of the work (nor are they checked for UTF-8: no step
// reads them).
func UsedColumns(spec *JobSpec, i int, columns []string) []string {
	p, err := spec.Resolve(i)
	if err != nil {
		return columns
	}
	name := spec.Sources[i].Name
	want := map[string]bool{p.Identity: true}
	if h := p.History; h != nil {
		want[h.Old], want[h.New], want[h.Date] = true, true, true
	}
	for _, cr := range spec.Cohort.Criteria {
		if cr.Source != name {
			continue
		}
		want[p.EventDate] = true
		for _, g := range p.codes {
			if len(cr.Groups) == 0 || slices.Contains(cr.Groups, g.Group) {
				for _, c := range g.Columns {
					want[c] = true
				}
			}
		}
	}
	for _, v := range spec.Variables {
		if v.Source != name {
			continue
		}
		cols, err := ExpandColumns(v.Column)
		if err != nil {
			cols = []string{v.Column} // the extract names the error
		}
		for _, c := range cols {
			want[c] = true
		}
	}
	// Up to the last column wanted: DuckDB (1.5) fails with an internal
	// error, which ends the database, when it finds bytes that are not
	// UTF-8 in a kept column while columns before it are left out; with a
	// prefix it names the line and column as it should.
	last := 0
	for i, c := range columns {
		if want[c] {
			last = i
		}
	}
	return columns[:last+1]
}

// checkRejects turns the rows DuckDB could not read into an error naming
// the first few lines and columns, never their content.
func (r *run) checkRejects(ctx context.Context, src *source, table string) error {
	rows, err := r.conn.QueryContext(ctx, fmt.Sprintf(
		`SELECT line, coalesce(column_name, ''), error_type::VARCHAR, error_message, count(*) OVER () FROM %s ORDER BY line LIMIT 5`, ident(table)))
	if err != nil {
		return err
	}
	defer rows.Close()
	var errs []error
	var total int64
	for rows.Next() {
		var line int64
		var col, typ, msg string
		if err := rows.Scan(&line, &col, &typ, &msg, &total); err != nil {
			return err
		}
		errs = append(errs, &FileError{File: src.file, Line: line, Column: col, Msg: rejectMessage(typ, msg, src.profile)})
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if total == 0 {
		return nil
	}
	if total > int64(len(errs)) {
		errs = append(errs, fmt.Errorf("%s: %d bad lines in all", src.file, total))
	}
	return errors.Join(errs...)
}

var (
	reDigits      = regexp.MustCompile(`\d{6,}`)
	reColumnCount = regexp.MustCompile(`Expected Number of Columns: (\d+) Found: (\d+)`)
)

// rejectMessage explains one of DuckDB's reject types.
func rejectMessage(typ, msg string, p resolved) string {
	switch typ {
	case "MISSING COLUMNS", "TOO MANY COLUMNS":
		detail := "wrong number of columns"
		if m := reColumnCount.FindStringSubmatch(msg); m != nil {
			detail = fmt.Sprintf("%s columns, the header has %s", m[2], m[1])
		}
		return fmt.Sprintf("ragged row: %s (is the delimiter %q and the quote %q right?)", detail, p.Delimiter, p.Quote)
	case "UNQUOTED VALUE":
		return "a quote is not closed, or a value has a stray quote"
	case "LINE SIZE OVER MAXIMUM":
		return fmt.Sprintf("line longer than %d bytes", maxLineSize)
	case "INVALID ENCODING", "INVALID UNICODE":
		return "bytes that are not UTF-8: set the source's encoding (latin-1 or windows-1252)"
	}
	return strings.ToLower(typ)
}

// sanitize returns the first line of a DuckDB error without anything that
// could be a value from a file.
func sanitize(err error) string {
	msg := err.Error()
	for _, cut := range []string{"\nOriginal Line", "\n\nLINE ", "\n"} {
		if i := strings.Index(msg, cut); i >= 0 {
			msg = msg[:i]
		}
	}
	return reDigits.ReplaceAllString(msg, "…")
}

// transcode writes a source's file, decompressed and decoded to UTF-8, to
// out.
func transcode(src *source, out string) error {
	file := src.file
	in, err := openPlain(src)
	if err != nil {
		return err
	}
	defer in.Close()
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 256<<10)
	if _, err := io.Copy(w, in); err != nil {
		f.Close()
		return fileErr(file, err)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
