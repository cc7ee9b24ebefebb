package extract

import (
	"fmt"

	"github.com/lopnr/lopnr/linkage/personnummer"
)

// csvGuard is the leak guard for CSV output, run on the stream as DuckDB
// writes it. It finds identity numbers in the bytes, header and rows
// alike, without splitting them into values: every run of the characters
// an identity number is written with (digits, - and +, the interim and
// reserve letters) that starts after a non-digit is tried in each length
// of a number, as hasIdentity tries a value. Values in a CSV file are
// separated by a delimiter, quotes and line ends, none of which a number
// holds (a job spec's delimiter is never a digit, a letter, - or +), so
// this finds every number any CSV reader finds in a value, whatever the
// delimiter and however the values are quoted: the guard does not depend
// on the spec's format, nor on DuckDB quoting as it should. The first hit
// stops the stream with a LeakError.
//
// To name the column of a hit, it also splits the stream as DuckDB writes
// CSV (one delimiter, '"' quotes doubled inside, '\n' between records) and
// keeps the header's names; a split that went wrong names the wrong
// column, never lets a number through. It costs one pass over bytes that
// pass through Go anyway, instead of a query over every value.
type csvGuard struct {
	next  writer
	file  string
	delim byte
	p     *personnummer.Parser

	// The scan.
	ring   [16]byte // the last bytes, by position mod 16
	pos    uint64   // the position of the next byte
	run    int      // the bytes before pos that can be part of a number, up to 14
	starts uint16   // bit k: the byte at pos-k starts a run of digits
	digit  bool     // the byte before pos is a digit

	// The split, for names.
	header  []string
	inQuote bool
	quote   bool // the last byte was a quote inside a quoted value
	field   int
	line    int64
	n       int    // the bytes of the value so far
	val     []byte // what is kept of it, on the header line or when seen is set

	// seen, when set (by tests), is called with every value the guard
	// splits off: its record (0 is the header), its field, and what is
	// kept of it (the last maxValue bytes or fewer).
	seen func(record int64, field int, v []byte)
}

type writer interface{ Write([]byte) (int, error) }

// maxValue bounds what is kept of one value (a header's name, or a value
// for seen).
const maxValue = 4096

// byteClass: what a byte can be in an identity number.
const (
	other = iota
	digit
	part // - + and the interim and reserve letters
)

var byteClass = func() (c [256]uint8) {
	for b := '0'; b <= '9'; b++ {
		c[b] = digit
	}
	for _, b := range "-+TRSUWXJKLMN" {
		c[b] = part
	}
	return c
}()

func newCSVGuard(next writer, file string, delim byte, p *personnummer.Parser) *csvGuard {
	return &csvGuard{next: next, file: file, delim: delim, p: p, val: make([]byte, 0, 256)}
}

func (g *csvGuard) Write(b []byte) (int, error) {
	for _, c := range b {
		if err := g.scan(c); err != nil {
			return 0, err
		}
		g.split(c)
	}
	return g.next.Write(b)
}

// end checks what the stream ends with: a number at its very end, and a
// last record without a line end (DuckDB's always has one).
func (g *csvGuard) end() error {
	if err := g.scan(0); err != nil { // a NUL is no part of a number
		return err
	}
	if !g.inQuote && g.field == 0 && g.n == 0 {
		return nil
	}
	g.endValue()
	g.inQuote, g.quote, g.field = false, false, 0
	return nil
}

// scan takes the next byte c, and first checks the candidates that c
// ends: the runs of 10 to 13 bytes before it, when c is not a digit.
func (g *csvGuard) scan(c byte) error {
	class := byteClass[c]
	if class != digit && g.run >= 10 {
		var cand [13]byte
		for n := 10; n <= min(g.run, 13); n++ {
			if g.starts&(1<<n) == 0 {
				continue
			}
			for k := range n {
				cand[k] = g.ring[(g.pos-uint64(n)+uint64(k))&15]
			}
			if g.p.Parse(string(cand[:n])).Valid() {
				return g.leak()
			}
		}
	}
	var start uint16
	if class == digit && !g.digit {
		start = 1
	}
	g.starts = (g.starts | start) << 1
	g.digit = class == digit
	if class == other {
		g.run = 0
	} else if g.run < 14 {
		g.run++
	}
	g.ring[g.pos&15] = c
	g.pos++
	return nil
}

// leak is the error for a number in the current field.
func (g *csvGuard) leak() error {
	if g.line == 0 {
		return &LeakError{File: g.file, Column: fmt.Sprintf("%d", g.field+1), Header: true, Values: 1}
	}
	col := "?"
	if g.field < len(g.header) {
		col = g.header[g.field]
	}
	return &LeakError{File: g.file, Column: col, Values: 1}
}

// split follows the CSV's values, for the header's names.
func (g *csvGuard) split(c byte) {
	if g.inQuote {
		if g.quote {
			g.quote = false
			if c == '"' { // a doubled quote: one quote in the value
				g.add(c)
				return
			}
			g.inQuote = false // the closing quote; c is handled below
		} else {
			if c == '"' {
				g.quote = true
			} else {
				g.add(c)
			}
			return
		}
	}
	switch c {
	case '"':
		if g.n == 0 {
			g.inQuote = true
		} else {
			g.add(c)
		}
	case g.delim:
		g.endValue()
		g.field++
	case '\n':
		g.endValue()
		g.field = 0
		g.line++
	default:
		g.add(c)
	}
}

func (g *csvGuard) add(c byte) {
	g.n++
	if g.line != 0 && g.seen == nil {
		return
	}
	if len(g.val) == maxValue { // keep the tail
		copy(g.val, g.val[maxValue/2:])
		g.val = g.val[:maxValue/2]
	}
	g.val = append(g.val, c)
}

func (g *csvGuard) endValue() {
	if g.seen != nil {
		g.seen(g.line, g.field, g.val)
	}
	if g.line == 0 {
		g.header = append(g.header, string(g.val))
	}
	g.val, g.n = g.val[:0], 0
}
