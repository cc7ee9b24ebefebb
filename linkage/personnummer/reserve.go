package personnummer

import "strings"

// ReserveFormat describes one region's reserve numbers (reservnummer), the
// numbers a region gives a patient whose identity number is not known. A
// reserve number is never linked; what matters is that it is recognised and
// reported as a reserve number, not as an invalid number or, worse, as a
// person.
//
// To add a region, append a ReserveFormat to [ReserveFormats] (or pass a
// table to [Parser.WithReserveFormats]) and add a known-answer test; see
// docs/identity.md.
type ReserveFormat struct {
	// Region names the issuer, for documentation and reports.
	Region string
	// Pattern is the number's 12 characters, one rule each:
	//   '0'…'9'  that digit
	//   'Y','M','D'  a digit of the birth date YYYYMMDD (validated as a date
	//            when all eight are present)
	//   '#'      any digit
	//   'L'      a letter from Letters
	//   'C'      the check digit
	Pattern string
	// Letters gives the value that each allowed letter counts as in the
	// check digit.
	Letters map[byte]int
	// Check lists the spans (1-based, inclusive positions of the pattern)
	// that the Luhn check digit may cover; a number matches if any span's
	// check holds. Public sources disagree on Stockholm's span, so both are
	// accepted.
	Check [][2]int
}

// ReserveFormats are the reserve-number formats a Parser knows by default.
var ReserveFormats = []ReserveFormat{
	{
		// "99" + a four-digit year + a five-digit serial + a check digit.
		// One public description has the check digit over positions 5–11,
		// another over 3–11.
		Region:  "Region Stockholm",
		Pattern: "99####" + "#####C",
		Check:   [][2]int{{5, 11}, {3, 11}},
	},
	{
		// The birth date, then K, M or X and two digits, then a check digit
		// over YYMMDD, the letter (K=5, M=7, X=8) and the two digits.
		Region:  "Västra Götalandsregionen",
		Pattern: "YYYYMMDDL##C",
		Letters: map[byte]int{'K': 5, 'M': 7, 'X': 8},
		Check:   [][2]int{{3, 11}},
	},
}

// parseReserve matches a 12-character input against the parser's reserve
// formats.
func parseReserve(p *Parser, s string) (Number, bool) {
	var b [12]byte
	for i := range b {
		b[i] = s[i]
		if b[i] >= 'a' && b[i] <= 'z' {
			b[i] -= 'a' - 'A'
		}
	}
	for i := range p.reserve {
		if n, ok := p.reserve[i].match(p, &b); ok {
			return n, true
		}
	}
	return Number{}, false
}

// match reports whether b is a reserve number of format f.
func (f *ReserveFormat) match(p *Parser, b *[12]byte) (Number, bool) {
	if len(f.Pattern) != 12 {
		return Number{}, false
	}
	var vals [12]int
	var date [8]int
	dateDigits := 0
	for i := 0; i < 12; i++ {
		c, r := b[i], f.Pattern[i]
		switch r {
		case 'L':
			v, ok := f.Letters[c]
			if !ok {
				return Number{}, false
			}
			vals[i] = v
			continue
		}
		d, ok := digit(c)
		if !ok {
			return Number{}, false
		}
		vals[i] = d
		switch r {
		case 'Y', 'M', 'D':
			date[dateDigits%8] = d
			dateDigits++
		case '#', 'C':
		default:
			if r != c {
				return Number{}, false
			}
		}
	}
	n := Number{kind: Reserve, canon: *b}
	if dateDigits == 8 {
		year := date[0]*1000 + date[1]*100 + date[2]*10 + date[3]
		month, day := date[4]*10+date[5], date[6]*10+date[7]
		if !validDate(Reserve, year, month, day) || p.after(year, month, day) {
			return Number{}, false
		}
		n.year, n.month, n.day = uint16(year), uint8(month), uint8(day)
	}
	check := strings.IndexByte(f.Pattern, 'C')
	if check < 0 {
		return n, true
	}
	for _, span := range f.Check {
		if luhnOver(vals[span[0]-1:span[1]]) == vals[check] {
			return n, true
		}
	}
	return Number{}, false
}

// luhnOver returns the Luhn check digit of vals, doubling the rightmost
// value and every second one leftwards. A value above 9 (a letter's)
// contributes the digit sum of its double.
func luhnOver(vals []int) int {
	sum := 0
	for i := len(vals) - 1; i >= 0; i -= 2 {
		d := 2 * vals[i]
		sum += d/10 + d%10
		if i > 0 {
			sum += vals[i-1]/10 + vals[i-1]%10
		}
	}
	return (10 - sum%10) % 10
}
