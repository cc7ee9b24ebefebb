package synth

import (
	"fmt"

	"github.com/lopnr/lopnr/linkage/personnummer"
)

// appendForm appends number c in a form; plus says the person is 100 or
// older in the reference year (10-digit forms take '+', and there is no
// 10-digit form without a separator).
func appendForm(buf []byte, c *number, form uint8, plus bool) []byte {
	switch form {
	case form12Dash:
		buf = append(buf, c[:8]...)
		buf = append(buf, '-')
		return append(buf, c[8:]...)
	case form10Sep, form10:
		if form == form10 && !plus {
			return append(buf, c[2:]...)
		}
		buf = append(buf, c[2:8]...)
		if plus {
			buf = append(buf, '+')
		} else {
			buf = append(buf, '-')
		}
		return append(buf, c[8:]...)
	}
	return append(buf, c[:]...)
}

// reasonShares are invalid reasons with their shares, in percent.
type reasonShares []struct {
	reason personnummer.Reason
	pct    int
}

// Shares of the invalid reasons, in percent.
var invalidMix = reasonShares{
	{personnummer.Checksum, 30},
	{personnummer.Format, 25},
	{personnummer.Empty, 20},
	{personnummer.Date, 15},
	{personnummer.Future, 4},
	{personnummer.BirthNumber, 3},
	{personnummer.Organisationsnummer, 3},
}

// identity appends a row's identity value and returns what a correct
// reader makes of it: the reason it is quarantined (OK for a linkable
// number that resolves) and which of the person's numbers it is (0 the
// current one, 1 or 2 an old one, -1 none of them).
func (s *srcGen) identity(p *person, rs *rowSpec) (personnummer.Reason, int, error) {
	start := len(s.buf)
	if !rs.clean && !rs.special {
		if u := s.r.Uint64(); u < s.tReserve {
			switch {
			case u < s.tInvalid:
				reason, err := s.invalid(p)
				return reason, -1, err
			case u < s.tInterim:
				return personnummer.NotLinkableInterim, -1, s.interim(p)
			default:
				return personnummer.NotLinkableReserve, -1, s.reserve(p)
			}
		}
	}
	c, res, which := &p.num, p.curRes, 0
	if p.ext >= 0 {
		e := &s.g.extras[p.ext]
		switch {
		case rs.special:
			which = 1
		case rs.clean && p.flags&fSpecial != 0 && e.oldRes[0] == personnummer.OK:
			which = 1 // the chain's: under an old number
		case rs.clean:
			// A number that resolves: the current one unless an old one
			// does too.
			if w := s.n(int(e.nOld) + 1); w > 0 && e.oldRes[w-1] == personnummer.OK {
				which = w
			}
		default:
			which = s.n(int(e.nOld) + 1)
		}
		if which > 0 {
			c, res = &e.old[which-1], e.oldRes[which-1]
		}
	}
	form := s.d.form
	if s.r.Uint64() >= s.tPref {
		form = uint8(s.n(int(numForms)))
	}
	space := s.r.Uint64() < s.tSpace
	if space {
		s.buf = append(s.buf, ' ')
	}
	s.buf = appendForm(s.buf, c, form, s.g.refYear-int(p.byear) >= 100)
	if space && s.n(2) == 0 {
		s.buf = append(s.buf, ' ')
	}
	// The self-check: the value parses as the number intended.
	if n := s.g.parser.ParseBytes(s.buf[start:]); !n.Linkable() || n.Key() != *c {
		return 0, 0, fmt.Errorf("synth: internal error: an identity in form %d parses as %v, not as the number intended", form, n)
	}
	return res, which, nil
}

// invalid appends an invalid identity value and returns its reason.
func (s *srcGen) invalid(p *person) (personnummer.Reason, error) {
	return s.invalidFrom(p, invalidMix)
}

// invalidFrom appends an invalid identity value made from p's number, with
// a reason drawn from mix, and returns the reason.
func (s *srcGen) invalidFrom(p *person, mix reasonShares) (personnummer.Reason, error) {
	u := s.n(100)
	want := personnummer.Checksum
	for _, m := range mix {
		if u < m.pct {
			want = m.reason
			break
		}
		u -= m.pct
	}
	start := len(s.buf)
	for range 20 {
		s.buf = s.buf[:start]
		s.invalidValue(p, want)
		if n := s.g.parser.ParseBytes(s.buf[start:]); n.Kind() == personnummer.Invalid && n.Reason() == want {
			return want, nil
		}
	}
	return 0, fmt.Errorf("synth: internal error: cannot make an identity with reason %s", want)
}

// impossibleDates are MMDD that no personnummer has.
var impossibleDates = []string{"1301", "1712", "0230", "0431", "0931", "1131", "0000", "0532", "1100", "0229"}

func (s *srcGen) invalidValue(p *person, want personnummer.Reason) {
	c := p.num
	plus := s.g.refYear-int(p.byear) >= 100
	form := uint8(s.n(int(numForms)))
	switch want {
	case personnummer.Checksum:
		c[11] = byte('0' + (int(c[11]-'0')+1+s.n(9))%10)
		s.buf = appendForm(s.buf, &c, form, plus)
	case personnummer.Date:
		d := impossibleDates[s.n(len(impossibleDates))]
		if d == "0229" {
			// 29 February of a year that is not a leap year.
			y := 1901 + 4*s.n(20) + s.n(3)
			c[0], c[1], c[2], c[3] = byte('0'+y/1000), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10)
			form = form12
		}
		copy(c[4:8], d)
		setCheck(&c)
		s.buf = appendForm(s.buf, &c, form, plus)
	case personnummer.Empty:
		if s.n(4) == 0 {
			s.buf = append(s.buf, "   "...)
		}
	case personnummer.Future:
		if y := int(p.byear) + 100; y > s.g.refYear && p.flags&fFeb29 == 0 {
			// The century mistyped: 2085 for 1985.
			c[0], c[1] = byte('0'+y/1000), byte('0'+y/100%10)
		} else {
			day := s.g.ref + 1 + int32(s.n(1000))
			y, m, d := civil(day)
			c = makeNumber(y, int(m), d, 1+s.n(999), false)
		}
		s.buf = appendForm(s.buf, &c, uint8(s.n(2)), false) // a form with the century
	case personnummer.BirthNumber:
		copy(c[8:11], "000")
		setCheck(&c)
		s.buf = appendForm(s.buf, &c, form, plus)
	case personnummer.Organisationsnummer:
		// A company: the third digit 2 or more makes "month" 20 or more.
		var o number
		copy(o[:2], "16")
		o[2] = "25789"[s.n(5)]
		o[3] = byte('0' + s.n(10))
		o[4] = byte('2' + s.n(8))
		for i := 5; i < 11; i++ {
			o[i] = byte('0' + s.n(10))
		}
		setCheck(&o)
		switch s.n(3) {
		case 0:
			s.buf = append(s.buf, o[:]...)
		case 1:
			s.buf = append(s.buf, o[2:]...)
		default:
			s.buf = append(s.buf, o[2:8]...)
			s.buf = append(s.buf, '-')
			s.buf = append(s.buf, o[8:]...)
		}
	default: // Format
		v := s.n(8)
		if s.nonASCII != nil && s.n(2) == 0 {
			// A file in a single-byte encoding: letters only it can
			// write, so that a reader that takes it for UTF-8 shows.
			v = 6 + s.n(2)
		}
		switch v {
		case 0: // a digit short
			s.buf = append(s.buf, c[:11]...)
		case 1: // a digit too many
			s.buf = append(s.buf, c[2:]...)
			s.buf = append(s.buf, byte('0'+s.n(10)))
		case 2: // nine digits
			s.buf = append(s.buf, c[2:11]...)
		case 3: // the letter O for a zero
			s.buf = append(s.buf, c[:8]...)
			s.buf = append(s.buf, '-', c[8], 'O')
			s.buf = append(s.buf, c[10:]...)
		case 4: // a space inside
			s.buf = append(s.buf, c[:8]...)
			s.buf = append(s.buf, ' ')
			s.buf = append(s.buf, c[8:]...)
		case 5: // two dashes
			s.buf = append(s.buf, c[:8]...)
			s.buf = append(s.buf, "--"...)
			s.buf = append(s.buf, c[8:]...)
		case 6: // an en dash, where the encoding has one
			if s.endash != nil {
				s.buf = append(s.buf, c[:8]...)
				s.buf = append(s.buf, s.endash...)
				s.buf = append(s.buf, c[8:]...)
				break
			}
			fallthrough
		case 7:
			if s.nonASCII != nil {
				s.buf = append(s.buf, s.nonASCII[s.n(len(s.nonASCII))]...)
				break
			}
			fallthrough
		default:
			s.buf = append(s.buf, s.junk[s.n(len(s.junk))]...)
		}
	}
}

// interimLetters open the last four of an interim number.
const interimLetters = "TRSUWXJKLMN"

// interim appends an interim number: a birth date (the person's when the
// number tells it), a letter, two digits and the check digit with the
// letter counted as 1.
func (s *srcGen) interim(p *person) error {
	var c number
	if p.flags&fKnownBirth != 0 && p.flags&fSN == 0 {
		c = p.num
	} else {
		c = makeNumber(1930+s.n(s.g.refYear-1930), 1+s.n(12), 1+s.n(28), 1, false)
	}
	c[8] = '1'
	c[9], c[10] = byte('0'+s.n(10)), byte('0'+s.n(10))
	setCheck(&c)
	c[8] = interimLetters[s.n(len(interimLetters))]
	start := len(s.buf)
	plus := s.g.refYear-numYear(&c) >= 100
	switch s.n(3) {
	case 0:
		s.buf = append(s.buf, c[:]...)
	case 1:
		s.buf = appendForm(s.buf, &c, form12Dash, plus)
	default:
		s.buf = appendForm(s.buf, &c, form10Sep, plus)
	}
	if n := s.g.parser.ParseBytes(s.buf[start:]); n.LinkReason() != personnummer.NotLinkableInterim {
		return fmt.Errorf("synth: internal error: an interim number parses as %v", n)
	}
	return nil
}

// reserve appends a Region Stockholm reserve number: 99, a year, a
// five-digit serial and a Luhn check digit over positions 5–11.
func (s *srcGen) reserve(p *person) error {
	var c number
	y := int(p.byear)
	if y < 1900 || s.n(2) == 0 {
		y = 2010 + s.n(s.g.refYear-2010+1) // the year it was issued
	}
	c[0], c[1] = '9', '9'
	c[2], c[3], c[4], c[5] = byte('0'+y/1000), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10)
	var vals [7]int
	vals[0], vals[1] = int(c[4]-'0'), int(c[5]-'0')
	for i := 6; i < 11; i++ {
		d := s.n(10)
		c[i] = byte('0' + d)
		vals[i-4] = d
	}
	c[11] = byte('0' + luhnOver(vals[:]))
	start := len(s.buf)
	s.buf = append(s.buf, c[:]...)
	if n := s.g.parser.ParseBytes(s.buf[start:]); n.LinkReason() != personnummer.NotLinkableReserve {
		return fmt.Errorf("synth: internal error: a reserve number parses as %v", n)
	}
	return nil
}
