package extract

import (
	"fmt"
	"unicode"
	"unicode/utf8"

	"github.com/lopnr/lopnr/linkage/personnummer"
)

// csvGuard is the leak guard for CSV output, run on the stream as DuckDB
// writes it. It finds identity numbers in the bytes, header and rows
// alike, without splitting them into values: every run of the characters
// an identity number is written with (digits, - and +, the interim and
// reserve letters) that starts after a non-digit is tried in each length
// of a number, as hasIdentity tries a value. A character other than ASCII
// is read as fold reads it, so that a number written with an en dash, a
// minus sign or fullwidth digits is a number to the guard as to a
// reader; it costs nothing on bytes below 0x80. Values in a CSV file are
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

	// The scan: the current run of bytes that can be part of a number
	// (its last 14 at most), which of them start a run of digits, and
	// whether the last byte was a digit.
	run    [14]byte
	rn     int
	starts uint16 // bit k: run[k] is a digit after a non-digit
	digit  bool
	// A character other than ASCII so far: its bytes, how many there
	// are, and how many it has.
	u     [4]byte
	un    int
	uneed int

	// The split, for names.
	header  []string
	inQuote bool
	quote   bool // the last byte was a quote inside a quoted value
	field   int
	line    int64
	n       int    // the bytes of the value so far
	keep    bool   // keep the value's bytes: on the header line, or when seen is set
	val     []byte // what is kept of it

	// seen, when set (by tests), is called with every value the guard
	// splits off: its record (0 is the header), its field, and what is
	// kept of it (the last maxValue bytes or fewer).
	seen func(record int64, field int, v []byte)
}

type writer interface{ Write([]byte) (int, error) }

// maxValue bounds what is kept of one value (a header's name, or a value
// for seen).
const maxValue = 4096

// What a byte is, to the scan and the split: a bit set.
const (
	digit   = 1 << iota // 0-9
	part                // - + and the interim and reserve letters
	special             // '"', '\n' or the delimiter
	wide                // the first byte of a character that fold may change
	cont                // a byte after the first of a character other than ASCII
)

var numberClass = func() (c [256]uint8) {
	for b := '0'; b <= '9'; b++ {
		c[b] = digit
	}
	// The letters in either case: the parser reads a lower-case interim
	// or reserve letter too.
	for _, b := range "-+TRSUWXJKLMNtrsuwxjklmn" {
		c[b] = part
	}
	// Of the bytes of a character other than ASCII, the scan sees
	// only the first bytes of the characters fold changes, and the
	// bytes after the first (which it skips unless they follow such a
	// first byte): other characters are taken as the common byte.
	for b := 0x80; b < 0xc0; b++ {
		c[b] = cont
	}
	for _, t := range []*unicode.RangeTable{foldedDigits, foldedParts} {
		for _, g := range t.R16 {
			for r := rune(g.Lo); r <= rune(g.Hi); r += rune(g.Stride) {
				if r >= 0x80 {
					c[firstByte(r)] = wide
				}
			}
		}
		for _, g := range t.R32 {
			for r := rune(g.Lo); r <= rune(g.Hi); r += rune(g.Stride) {
				c[firstByte(r)] = wide
			}
		}
	}
	return c
}()

// firstByte is the first byte of r in UTF-8: r itself if ASCII.
func firstByte(r rune) byte {
	var b [utf8.UTFMax]byte
	utf8.EncodeRune(b[:], r)
	return b[0]
}

func newCSVGuard(next writer, file string, delim byte, p *personnummer.Parser) *csvGuard {
	return &csvGuard{next: next, file: file, delim: delim, p: p, keep: true, val: make([]byte, 0, 256)}
}

func (g *csvGuard) Write(b []byte) (int, error) {
	class := numberClass
	class['"'] |= special
	class['\n'] |= special
	class[g.delim] |= special
	un := g.un // kept in a register; g.un for the methods
	for _, c := range b {
		k := class[c]
		if k&(digit|part) != 0 && un == 0 {
			if err := g.scan(c, k&digit != 0); err != nil {
				return 0, err
			}
		} else if k&(digit|part|wide|cont) == 0 || k == cont && un == 0 {
			// The common case: the end of a run, if any.
			if g.rn >= 10 {
				if err := g.check(); err != nil {
					return 0, err
				}
			}
			g.rn, g.digit, un = 0, false, 0
		} else {
			g.un = un
			if err := g.scanWide(c, k); err != nil {
				return 0, err
			}
			un = g.un
		}
		if k&special != 0 || g.quote {
			g.split(c)
			continue
		}
		g.n++ // a byte of the value
		if g.keep {
			g.add(c)
		}
	}
	g.un = un
	return g.next.Write(b)
}

// end checks what the stream ends with: a number at its very end, and a
// last record without a line end (DuckDB's always has one).
func (g *csvGuard) end() error {
	if err := g.endRun(); err != nil {
		return err
	}
	if !g.inQuote && g.field == 0 && g.n == 0 {
		return nil
	}
	g.endValue()
	g.inQuote, g.quote, g.field = false, false, 0
	return nil
}

// scanWide takes a byte of a character other than ASCII whose first byte
// is one of those fold may change, or an ASCII byte of a number after such
// a first byte (a character cut short, which ends the run): the
// character's bytes wait for the last, and the character is then taken as
// fold reads it.
func (g *csvGuard) scanWide(c byte, k uint8) error {
	if k&(wide|cont) == 0 { // ASCII after a character cut short
		if err := g.endRun(); err != nil {
			return err
		}
		return g.scan(c, k&digit != 0)
	}
	if k&wide != 0 { // the first byte of a character
		if g.un > 0 {
			if err := g.endRun(); err != nil {
				return err
			}
		}
		g.u[0], g.un, g.uneed = c, 1, 2
		if c >= 0xe0 {
			g.uneed++
		}
		if c >= 0xf0 {
			g.uneed++
		}
		return nil
	}
	g.u[g.un] = c
	g.un++
	if g.un < g.uneed {
		return nil
	}
	r, _ := utf8.DecodeRune(g.u[:g.un])
	g.un = 0
	switch f := fold(r); {
	case f < 0:
		return nil // shows nothing: the run goes on
	case f >= '0' && f <= '9':
		return g.scan(byte(f), true)
	case f == '-' || f == '+':
		return g.scan(byte(f), false)
	}
	return g.endRun()
}

// endRun ends the run before a byte that is no part of a number.
func (g *csvGuard) endRun() error {
	if g.rn >= 10 {
		if err := g.check(); err != nil {
			return err
		}
	}
	g.rn, g.digit, g.un = 0, false, 0
	return nil
}

// scan takes the next byte c of a run (ASCII: a digit when isDigit, else
// - + or a letter): a byte other than a digit ends the candidates before
// it, which it checks first.
func (g *csvGuard) scan(c byte, isDigit bool) error {
	if !isDigit && g.rn >= 10 {
		if err := g.check(); err != nil {
			return err
		}
	}
	if g.rn == len(g.run) { // a longer run: keep its last bytes
		copy(g.run[:], g.run[1:])
		g.starts >>= 1
		g.rn--
	}
	if isDigit && !g.digit {
		g.starts |= 1 << g.rn
	}
	g.run[g.rn] = c
	g.rn++
	g.digit = isDigit
	return nil
}

// check tries the candidates that end at the end of the run: the last 10
// to 13 bytes, each starting with a digit after a non-digit.
func (g *csvGuard) check() error {
	for n := 10; n <= min(g.rn, 13); n++ {
		if g.starts&(1<<(g.rn-n)) != 0 && g.p.Parse(string(g.run[g.rn-n:g.rn])).Valid() {
			return g.leak()
		}
	}
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
				g.addByte(c)
				return
			}
			g.inQuote = false // the closing quote; c is handled below
		} else {
			if c == '"' {
				g.quote = true
			} else {
				g.addByte(c)
			}
			return
		}
	}
	switch c {
	case '"':
		if g.n == 0 {
			g.inQuote = true
		} else {
			g.addByte(c)
		}
	case g.delim:
		g.endValue()
		g.field++
	case '\n':
		g.endValue()
		g.field = 0
		g.line++
		g.keep = g.seen != nil
	default:
		g.addByte(c)
	}
}

// addByte adds a byte to the current value.
func (g *csvGuard) addByte(c byte) {
	g.n++
	if g.keep {
		g.add(c)
	}
}

func (g *csvGuard) add(c byte) {
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
