package extract

import (
	"github.com/lopnr/lopnr/linkage/personnummer"
)

// csvGuard is the leak guard for CSV output, run on the stream as DuckDB
// writes it: it splits the CSV (DuckDB's dialect: one delimiter, '"' quotes
// doubled inside, '\n' between records) into values and checks every value
// with at least nine digits for an identity number in any form. The first
// hit stops the stream with a LeakError naming the column. It costs one pass
// over bytes that pass through Go anyway, instead of a query over every
// value.
type csvGuard struct {
	next    writer
	file    string
	delim   byte
	p       *personnummer.Parser
	header  []string
	inQuote bool
	quote   bool // the last byte was a quote inside a quoted value
	field   int
	line    int64
	val     []byte
	digits  int

	// seen, when set (by tests), is called with every value the guard
	// splits off: its record (0 is the header), its field, and what is
	// kept of it (the last maxValue bytes or fewer).
	seen func(record int64, field int, v []byte)
}

type writer interface{ Write([]byte) (int, error) }

// maxValue bounds what is kept of one value; longer values are checked in
// overlapping windows.
const maxValue = 4096

func newCSVGuard(next writer, file string, delim byte, p *personnummer.Parser) *csvGuard {
	return &csvGuard{next: next, file: file, delim: delim, p: p, val: make([]byte, 0, 256)}
}

func (g *csvGuard) Write(b []byte) (int, error) {
	for _, c := range b {
		if g.inQuote {
			if g.quote {
				g.quote = false
				if c == '"' { // a doubled quote: one quote in the value
					g.add(c)
					continue
				}
				g.inQuote = false // the closing quote; c is handled below
			} else {
				if c == '"' {
					g.quote = true
				} else {
					g.add(c)
				}
				continue
			}
		}
		switch c {
		case '"':
			if len(g.val) == 0 {
				g.inQuote = true
			} else {
				g.add(c)
			}
		case g.delim:
			if err := g.endValue(); err != nil {
				return 0, err
			}
			g.field++
		case '\n':
			if err := g.endValue(); err != nil {
				return 0, err
			}
			g.field = 0
			g.line++
		default:
			g.add(c)
		}
	}
	return g.next.Write(b)
}

// end checks the last record when the stream does not end with a line
// end (DuckDB's always does).
func (g *csvGuard) end() error {
	if !g.inQuote && g.field == 0 && len(g.val) == 0 && g.digits == 0 {
		return nil // nothing since the last line end
	}
	err := g.endValue()
	g.inQuote, g.quote, g.field = false, false, 0
	return err
}

func (g *csvGuard) add(c byte) {
	if c >= '0' && c <= '9' {
		g.digits++
	}
	if len(g.val) == maxValue {
		// Keep the tail: an identity number spans at most 13 bytes.
		if g.digits >= 9 && hasIdentity(g.p, string(g.val)) {
			g.val = g.val[:0]
			g.digits = 100 // checked again at the end, with the tail
			return
		}
		copy(g.val, g.val[maxValue-13:])
		g.val = g.val[:13]
	}
	g.val = append(g.val, c)
}

func (g *csvGuard) endValue() error {
	defer func() { g.val, g.digits = g.val[:0], 0 }()
	if g.seen != nil {
		g.seen(g.line, g.field, g.val)
	}
	if g.line == 0 {
		g.header = append(g.header, string(g.val))
		return nil
	}
	if g.digits < 9 {
		return nil
	}
	if g.digits >= 100 || hasIdentity(g.p, string(g.val)) {
		col := "?"
		if g.field < len(g.header) {
			col = g.header[g.field]
		}
		return &LeakError{File: g.file, Column: col, Values: 1}
	}
	return nil
}
