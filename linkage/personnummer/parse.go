package personnummer

import (
	"time"
	"unsafe"
)

// Parser parses identity numbers against a reference date, the date of the
// extraction, which decides the century of 10-digit numbers and which birth
// dates lie in the future. A Parser is immutable and safe for concurrent use.
type Parser struct {
	refYear, refMonth, refDay int
	reserve                   []ReserveFormat
}

// NewParser returns a Parser for the reference date ref (its calendar date
// in its own location) that knows the reserve-number formats of
// [ReserveFormats].
func NewParser(ref time.Time) *Parser {
	y, m, d := ref.Date()
	return &Parser{refYear: y, refMonth: int(m), refDay: d, reserve: ReserveFormats}
}

// WithReserveFormats returns a copy of p that recognises formats instead of
// [ReserveFormats], for a region whose reserve numbers are not built in.
func (p *Parser) WithReserveFormats(formats []ReserveFormat) *Parser {
	q := *p
	q.reserve = formats
	return &q
}

// Parse parses s. It never fails: an input that is no identity number gives
// a Number of kind Invalid with the reason.
func (p *Parser) Parse(s string) (n Number) {
	parse(p, s, &n) // writes into the caller's frame: no copy of the result
	return n
}

// ParseBytes is Parse for a byte slice, without converting it to a string.
func (p *Parser) ParseBytes(b []byte) (n Number) {
	// parse keeps nothing of its input, so a string view of b is safe
	// and saves a copy.
	parse(p, unsafe.String(unsafe.SliceData(b), len(b)), &n)
	return n
}

// Parse parses s against the reference date ref; see [Parser.Parse].
func Parse(s string, ref time.Time) Number { return NewParser(ref).Parse(s) }

// interimLetter marks the letters that may open the last four characters
// of an interim number; each counts as 1 in the check digit.
var interimLetter = [256]bool{
	'T': true, 'R': true, 'S': true, 'U': true, 'W': true, 'X': true,
	'J': true, 'K': true, 'L': true, 'M': true, 'N': true,
}

// luhnDouble[d] is the digit sum of 2*d.
var luhnDouble = [10]uint8{0, 2, 4, 6, 8, 1, 3, 5, 7, 9}

func isSpace(c byte) bool { return c == ' ' || c == '\t' }

func digit(c byte) (int, bool) {
	v := int(c) - '0'
	return v, uint(v) < 10
}

// parse parses s into n, which must be the zero Number.
func parse(p *Parser, s string, n *Number) {
	i, j := 0, len(s)
	for i < j && isSpace(s[i]) {
		i++
	}
	for j > i && isSpace(s[j-1]) {
		j--
	}
	s = s[i:j]

	// Split into an optional century, YYMMDD, a separator and the last four.
	var (
		century = -1
		date    string
		sep     byte
		last    string
	)
	switch len(s) {
	case 0:
		n.reason = Empty
		return
	case 10:
		date, last = s[:6], s[6:]
	case 11:
		date, sep, last = s[:6], s[6], s[7:]
	case 12:
		c1, ok1 := digit(s[0])
		c2, ok2 := digit(s[1])
		if !ok1 || !ok2 {
			n.reason = Format
			return
		}
		century, date, last = c1*10+c2, s[2:8], s[8:]
	case 13:
		c1, ok1 := digit(s[0])
		c2, ok2 := digit(s[1])
		if !ok1 || !ok2 {
			n.reason = Format
			return
		}
		century, date, sep, last = c1*10+c2, s[2:8], s[8], s[9:]
	default:
		n.reason = Format
		return
	}
	if len(s)%2 == 1 && sep != '-' && sep != '+' {
		n.reason = Format
		return
	}

	parseDigits(p, century, date, sep, last, n)
	if n.kind == Invalid && len(s) == 12 && len(p.reserve) > 0 {
		if r, ok := parseReserve(p, s); ok {
			*n = r
		}
	}
}

// parseDigits validates a number split into an optional century (-1 when
// absent), YYMMDD, a separator (0 when absent) and the last four characters.
func parseDigits(p *Parser, century int, date string, sep byte, last string, n *Number) {
	var v [6]int
	for k := 0; k < 6; k++ {
		d, ok := digit(date[k])
		if !ok {
			n.reason = Format
			return
		}
		v[k] = d
	}
	yy, month, day := v[0]*10+v[1], v[2]*10+v[3], v[4]*10+v[5]

	// The last four: three digits (or an interim letter and two digits) and
	// the check digit.
	kind := Personnummer
	l0 := last[0]
	if l0 >= 'a' && l0 <= 'z' {
		l0 -= 'a' - 'A'
	}
	n1, ok1 := digit(l0)
	n2, ok2 := digit(last[1])
	n3, ok3 := digit(last[2])
	check, ok4 := digit(last[3])
	if !ok2 || !ok3 || !ok4 {
		n.reason = Format
		return
	}
	if !ok1 {
		if !interimLetter[l0] {
			n.reason = Format
			return
		}
		kind, n1 = Interim, 1
	}

	if month >= 20 {
		n.reason = Organisationsnummer
		return
	}
	if day >= 60 {
		if kind == Interim {
			n.reason = Date
			return
		}
		kind, day = Samordningsnummer, day-60
	}

	year := yy
	if century >= 0 {
		year += century * 100
	} else {
		// The year ending in yy within the 100 years up to the reference
		// year; a century earlier with '+'.
		year = p.refYear - (p.refYear-yy)%100
		if sep == '+' {
			year -= 100
		}
	}
	if !validDate(kind, year, month, day) {
		n.reason = Date
		return
	}
	if p.after(year, month, day) {
		n.reason = Future
		return
	}
	if kind != Interim && n1 == 0 && n2 == 0 && n3 == 0 {
		n.reason = BirthNumber
		return
	}
	sum := int(luhnDouble[v[0]]) + v[1] + int(luhnDouble[v[2]]) + v[3] + int(luhnDouble[v[4]]) + v[5] +
		int(luhnDouble[n1]) + n2 + int(luhnDouble[n3])
	if (10-sum%10)%10 != check {
		n.reason = Checksum
		return
	}

	n.kind, n.year, n.month, n.day = kind, uint16(year), uint8(month), uint8(day)
	if month > 0 && day > daysIn(year, month) {
		n.day = 0 // a samordningsnummer's day that no calendar has: unknown
	}
	if n3%2 == 1 {
		n.sex = Male
	} else {
		n.sex = Female
	}
	c := &n.canon
	c[0], c[1] = byte('0'+year/1000), byte('0'+year/100%10)
	for k := 0; k < 6; k++ {
		c[2+k] = date[k]
	}
	c[8], c[9], c[10], c[11] = l0, last[1], last[2], last[3]
}

// validDate checks year, month and day (day already without the 60 of a
// samordningsnummer). A samordningsnummer may have month 0 (unknown month)
// and day 0 (unknown day), and any day up to 31 in any month: Skatteverket's
// own test samordningsnummer include 30 February and 31 April.
func validDate(kind Kind, year, month, day int) bool {
	if year < 1800 || month > 12 || day > 31 {
		return false
	}
	if kind == Samordningsnummer {
		return true
	}
	return month > 0 && day > 0 && day <= daysIn(year, month)
}

func daysIn(year, month int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// after reports whether the (possibly partly unknown) date lies after the
// reference date; unknown parts compare as early as possible.
func (p *Parser) after(year, month, day int) bool {
	if year != p.refYear {
		return year > p.refYear
	}
	if month != p.refMonth {
		return month > p.refMonth
	}
	return day > p.refDay
}
