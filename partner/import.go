package partner

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/lopnr/lopnr/internal/atomicfile"
)

// ImportError is a partner file or header that cannot be imported: Field
// names what is wrong (header.delimiter, data) and Want what was expected;
// neither holds a value from the file.
type ImportError struct {
	Field, Want string
}

func (e *ImportError) Error() string { return e.Field + ": " + e.Want }

// ParseDelimiter returns the delimiter a partner names for its file: one
// character other than a quote or a line break; "" is ';'.
func ParseDelimiter(d string) (rune, error) {
	if d == "" {
		return ';', nil
	}
	r, size := utf8.DecodeRuneInString(d)
	if size != len(d) || !validComma(r) {
		return 0, &ImportError{"header.delimiter", "one character other than a quote or a line break"}
	}
	return r, nil
}

// validComma is what encoding/csv takes as a delimiter.
func validComma(r rune) bool {
	return r != 0 && r != '"' && r != '\r' && r != '\n' && utf8.ValidRune(r) && r != utf8.RuneError
}

// ImportCounts says what an import found. They are for the extraction
// team, never for the partner: how many of its rows were of the project's
// persons would tell it who is in the cohort.
type ImportCounts struct {
	Rows    int64 // data rows read
	Matched int64 // rows of the project's persons
	Persons int64 // distinct persons among them
}

// ImportOptions say how to read a partner's file.
type ImportOptions struct {
	// IdentityColumn is the column with the LopNr or pseudonym.
	IdentityColumn string
	// Delimiter is the file's delimiter (ParseDelimiter).
	Delimiter rune
	// Resolve returns a row key's canonical number, or "" for a key of
	// nobody in the project.
	Resolve func(string) string
	// MaxLine bounds a line of the file, in bytes (0: no bound).
	MaxLine int
	// MaxRows bounds the data rows (0: no bound); more is a
	// *RowLimitError.
	MaxRows int64
}

// RowLimitError is a file with more rows than ImportOptions.MaxRows.
type RowLimitError struct{ Max int64 }

func (e *RowLimitError) Error() string { return fmt.Sprintf("data: at most %d rows", e.Max) }

// ConvertImport reads a partner's CSV file and writes, into dir, the rows
// of the project's persons with their canonical number in a PNR column in
// place of the identity column (partner.csv, ';'-delimited), and the
// persons found (cohort.csv): the source and the cohort of the
// supplementary job. Both files hold identity numbers, like any source in
// the trusted zone; they belong in a job's work directory and go with it.
// A line longer than MaxLine is refused naming the line.
func ConvertImport(in io.Reader, dir string, o ImportOptions) (ImportCounts, error) {
	var res ImportCounts
	lines := &lineLimit{r: in, max: o.MaxLine, line: 1}
	r := csv.NewReader(bufio.NewReaderSize(lines, 1<<20))
	r.Comma, r.ReuseRecord = o.Delimiter, true
	header, err := r.Read()
	if lines.err != nil {
		return res, lines.err
	}
	if err != nil {
		return res, &ImportError{"data", "a CSV file with a header row"}
	}
	idCol := slices.IndexFunc(header, func(h string) bool { return strings.EqualFold(strings.TrimSpace(h), o.IdentityColumn) })
	if idCol < 0 {
		return res, &ImportError{"header.identity_column", fmt.Sprintf("a column of the file's header (it has %d columns)", len(header))}
	}
	row := append([]string{"PNR"}, slices.Delete(slices.Clone(header), idCol, idCol+1)...)
	if slices.ContainsFunc(row[1:], func(c string) bool { return strings.EqualFold(c, "PNR") || c == "" }) {
		return res, &ImportError{"data", "column names that are not empty and not PNR"}
	}
	out, err := os.OpenFile(filepath.Join(dir, "partner.csv"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return res, err
	}
	defer out.Close()
	bw := bufio.NewWriterSize(out, 1<<20)
	w := csv.NewWriter(bw)
	w.Comma = ';'
	if err := w.Write(row); err != nil {
		return res, err
	}
	seen := map[string]struct{}{}
	for {
		rec, err := r.Read()
		if lines.err != nil {
			return res, lines.err
		}
		if errors.Is(err, io.EOF) {
			break
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			return res, &ImportError{"data", fmt.Sprintf("valid CSV (line %d: %v)", pe.Line, pe.Err)}
		}
		if err != nil {
			return res, err
		}
		if res.Rows++; o.MaxRows > 0 && res.Rows > o.MaxRows {
			return res, &RowLimitError{o.MaxRows}
		}
		canonical := o.Resolve(rec[idCol])
		if canonical == "" {
			continue
		}
		res.Matched++
		seen[canonical] = struct{}{}
		row = append(row[:0], canonical)
		row = append(row, rec[:idCol]...)
		row = append(row, rec[idCol+1:]...)
		if err := w.Write(row); err != nil {
			return res, err
		}
	}
	w.Flush()
	if err := errors.Join(w.Error(), bw.Flush(), out.Sync()); err != nil {
		return res, err
	}
	res.Persons = int64(len(seen))
	var cohort strings.Builder
	cohort.WriteString("PNR\n")
	for c := range seen {
		cohort.WriteString(c + "\n")
	}
	return res, atomicfile.Write(filepath.Join(dir, "cohort.csv"), []byte(cohort.String()))
}

// lineLimit passes a reader through, failing with an ImportError that
// names the line when a line is longer than max bytes. The error is kept
// in err too: encoding/csv may report it as its own.
type lineLimit struct {
	r    io.Reader
	max  int
	line int64 // the line being read, from 1
	n    int   // bytes of it read so far
	err  error
}

func (l *lineLimit) Read(p []byte) (int, error) {
	if l.err != nil {
		return 0, l.err
	}
	n, err := l.r.Read(p)
	if l.max <= 0 {
		return n, err
	}
	for i, b := range p[:n] {
		if b == '\n' {
			l.line, l.n = l.line+1, 0
			continue
		}
		if l.n++; l.n > l.max {
			l.err = &ImportError{"data", fmt.Sprintf("lines of at most %d bytes (line %d is longer)", l.max, l.line)}
			return i, l.err
		}
	}
	return n, err
}
