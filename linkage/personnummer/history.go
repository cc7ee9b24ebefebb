package personnummer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"
)

// Change is one number change: a person's identity number Old was replaced
// by New on Date. An interim or reserve number that changes to the person's
// personnummer once it is known is a change too.
type Change struct {
	Old, New Number
	Date     time.Time
}

// History resolves identity numbers to the current number through chains
// of changes. It reports cycles and conflicts (one old number changed to
// two different numbers) instead of guessing, and flags numbers known to
// have been used by two persons. A History is immutable and safe for
// concurrent use.
type History struct {
	resolved map[[12]byte]resolution
	reused   map[[12]byte]struct{}
}

type resolution struct {
	current Number
	reason  Reason
}

// NewHistory builds a History from changes and from numbers known to be
// re-used. Invalid numbers among them are ignored: ReadHistory and
// ReadNumbers refuse them with the line.
func NewHistory(changes []Change, reused []Number) *History {
	h := &History{resolved: make(map[[12]byte]resolution, len(changes)), reused: make(map[[12]byte]struct{}, len(reused))}
	for _, n := range reused {
		if n.Valid() {
			h.reused[n.canon] = struct{}{}
		}
	}
	next := make(map[[12]byte]Number, len(changes))
	conflict := make(map[[12]byte]bool)
	for _, c := range changes {
		if !c.Old.Valid() || !c.New.Valid() {
			continue
		}
		if prev, ok := next[c.Old.canon]; ok && prev.canon != c.New.canon {
			conflict[c.Old.canon] = true
		}
		next[c.Old.canon] = c.New
	}

	// Walk each chain once, memoising every number on it.
	const onPath = Reason(255)
	var path [][12]byte
	for start := range next {
		if _, done := h.resolved[start]; done {
			continue
		}
		path = path[:0]
		cur := start
		var res resolution
		for {
			if r, done := h.resolved[cur]; done {
				if r.reason == onPath {
					res = resolution{reason: HistoryCycle}
				} else {
					res = r
				}
				break
			}
			if conflict[cur] {
				res = resolution{reason: HistoryConflict}
				h.resolved[cur] = res
				break
			}
			n, ok := next[cur]
			if !ok {
				res = resolution{current: Number{}, reason: OK}
				break
			}
			h.resolved[cur] = resolution{reason: onPath}
			path = append(path, cur)
			cur = n.canon
			if _, more := next[cur]; !more {
				res = resolution{current: n}
				break
			}
		}
		for _, p := range path {
			h.resolved[p] = res
		}
	}
	return h
}

// Resolve returns the current number of n and OK, or n and the reason it
// cannot be resolved: Reused, HistoryCycle or HistoryConflict. A number with
// no change is its own current number.
func (h *History) Resolve(n Number) (Number, Reason) {
	if !n.Valid() {
		return n, n.reason
	}
	if _, ok := h.reused[n.canon]; ok {
		return n, Reused
	}
	r, ok := h.resolved[n.canon]
	if !ok {
		return n, OK
	}
	if r.reason != OK {
		return n, r.reason
	}
	if _, ok := h.reused[r.current.canon]; ok {
		return n, Reused
	}
	return r.current, OK
}

// Len returns the number of changed numbers the history knows.
func (h *History) Len() int { return len(h.resolved) }

// LineError is an error in one line of an input file. It never carries the
// line's content, which may hold an identity number.
type LineError struct {
	File  string
	Line  int
	Field string // the column, when the error is in one
	Err   error
}

func (e *LineError) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s:%d: %s: %v", e.File, e.Line, e.Field, e.Err)
	}
	return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err)
}

func (e *LineError) Unwrap() error { return e.Err }

// ErrInvalidNumber is wrapped by a LineError for an identity number that
// does not parse; the error names the reason, never the number.
var ErrInvalidNumber = errors.New("invalid identity number")

// ReadHistory reads number changes, one a line: old number, new number and
// the date of the change (YYYY-MM-DD or YYYYMMDD), separated by ';', tab or
// ','. A first line whose first field is not a number is a header. Blank
// lines are skipped. name is the file name for errors.
func ReadHistory(r io.Reader, name string, p *Parser) ([]Change, error) {
	var changes []Change
	err := eachLine(r, name, func(line int, text []byte) error {
		fields := splitFields(text)
		if len(fields) != 3 {
			if line == 1 && isHeader(fields) {
				return nil
			}
			return &LineError{File: name, Line: line, Err: fmt.Errorf("%d fields, want 3 (old; new; date)", len(fields))}
		}
		old := p.ParseBytes(fields[0])
		if !old.Valid() {
			if line == 1 && isHeader(fields) {
				return nil
			}
			return &LineError{File: name, Line: line, Field: "old", Err: fmt.Errorf("%w (%s)", ErrInvalidNumber, old.reason)}
		}
		nw := p.ParseBytes(fields[1])
		if !nw.Valid() {
			return &LineError{File: name, Line: line, Field: "new", Err: fmt.Errorf("%w (%s)", ErrInvalidNumber, nw.reason)}
		}
		date, err := ParseDate(string(bytes.TrimSpace(fields[2])))
		if err != nil {
			return &LineError{File: name, Line: line, Field: "date", Err: err}
		}
		changes = append(changes, Change{Old: old, New: nw, Date: date})
		return nil
	})
	return changes, err
}

// ReadNumbers reads identity numbers, one a line (a list of re-used numbers,
// say). Blank lines are skipped; a first line that is not a number and has a
// letter is a header.
func ReadNumbers(r io.Reader, name string, p *Parser) ([]Number, error) {
	var ns []Number
	err := eachLine(r, name, func(line int, text []byte) error {
		n := p.ParseBytes(text)
		if !n.Valid() {
			if line == 1 && isHeader([][]byte{text}) {
				return nil
			}
			return &LineError{File: name, Line: line, Err: fmt.Errorf("%w (%s)", ErrInvalidNumber, n.reason)}
		}
		ns = append(ns, n)
		return nil
	})
	return ns, err
}

// ParseDate parses YYYY-MM-DD or YYYYMMDD.
func ParseDate(s string) (time.Time, error) {
	layout := "20060102"
	if len(s) == 10 {
		layout = "2006-01-02"
	}
	t, err := time.Parse(layout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("date %q: want YYYY-MM-DD or YYYYMMDD", s)
	}
	return t, nil
}

// eachLine calls fn for every non-blank line of r, without its line ending.
func eachLine(r io.Reader, name string, fn func(line int, text []byte) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		text := bytes.TrimRight(sc.Bytes(), "\r")
		if len(bytes.TrimSpace(text)) == 0 {
			continue
		}
		if err := fn(line, text); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return &LineError{File: name, Line: line + 1, Err: err}
	}
	return nil
}

// splitFields splits a line on the first of ';', tab or ',' that it holds.
func splitFields(text []byte) [][]byte {
	for _, sep := range []byte{';', '\t', ','} {
		if bytes.IndexByte(text, sep) >= 0 {
			return bytes.Split(text, []byte{sep})
		}
	}
	return [][]byte{text}
}

// isHeader reports whether a first line looks like column names: its first
// field has a letter that no identity number would have there.
func isHeader(fields [][]byte) bool {
	if len(fields) == 0 {
		return false
	}
	f := bytes.TrimSpace(fields[0])
	letters := 0
	for _, c := range f {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' {
			letters++
		}
	}
	return letters >= 2
}
