// Package personnummer parses, validates and normalises Swedish identity
// numbers: personnummer, samordningsnummer, interim numbers and regional
// reserve numbers, and resolves number changes through a history.
//
// Linkage is only as good as identity handling: a wrong link or a silently
// dropped patient corrupts a study. Every input therefore gets a [Number]
// with a [Kind] and, when it cannot be linked, a [Reason] that a report can
// count — never a guess.
//
// # Forms and rules
//
// [Parser.Parse] accepts 10 or 12 digits with `-`, `+` or no separator
// before the last four, surrounding spaces trimmed. A 12-digit number carries
// its century. For 10 digits the century is inferred against the parser's
// reference date (the extraction date, never the wall clock): with `-` or no
// separator the birth year is the one ending in YY within the 100 years up to
// the reference year; with `+` (from the calendar year a person turns 100) it
// is a century earlier. A birth date after the reference date is invalid.
//
// The date is checked with leap years, the birth number (the three digits
// after the date) must not be 000, and the last digit is the Luhn check digit
// over the ten digits YYMMDDNNNC. A samordningsnummer has 60 added to the
// day; Skatteverket also issues day 60 (unknown day) and month 00 (unknown
// month). An interim number has one of the letters TRSUWXJKLMN as the first
// of the last four characters, counted as 1 in the check digit. Reserve
// numbers follow the regional formats of [ReserveFormats]. A number whose
// month digits are 20 or more is an organisationsnummer, never a person.
//
// The canonical form is 12 characters YYYYMMDDNNNC (interim and reserve
// numbers keep their letter). Personnummer and samordningsnummer are
// linkable; interim, reserve and invalid numbers are not.
//
// # No identity numbers in logs
//
// A [Number] formats as its kind only (`personnummer`, never the digits)
// with %v, %s and %#v, so that it cannot leak into a log line or an error
// by accident; [Number.Canonical] is the one explicit way to the digits.
//
// # Speed
//
// Parse does not allocate. On this project's machine (2 cores of an Intel
// Xeon, go1.26.8) it parses and validates about 50 million numbers a second
// on one core, 12-digit and separated 10-digit alike (20 ns each); the
// command and the recorded figures are in bench/README.md.
package personnummer

import (
	"time"
)

// Kind is what sort of identity number a string is.
type Kind uint8

// The kinds of identity number. Only Personnummer and Samordningsnummer are
// linkable.
const (
	Invalid Kind = iota
	Personnummer
	Samordningsnummer
	Interim
	Reserve
)

var kindNames = [...]string{"invalid", "personnummer", "samordningsnummer", "interim", "reserve"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "invalid"
}

// Linkable reports whether numbers of this kind identify a person across
// sources.
func (k Kind) Linkable() bool { return k == Personnummer || k == Samordningsnummer }

// Reason says why a number is invalid or cannot be linked. The zero Reason
// means none.
type Reason uint8

// Reasons a report can count.
const (
	OK                  Reason = iota
	Empty                      // nothing but spaces
	Format                     // wrong length, a character out of place, a space inside
	Date                       // no such date
	Future                     // birth date after the reference date
	BirthNumber                // the birth number is 000, which is never issued
	Checksum                   // the check digit does not match
	Organisationsnummer        // month digits 20 or more: a legal entity, not a person
	NotLinkableInterim         // an interim number: valid, but never linked
	NotLinkableReserve         // a regional reserve number: valid, but never linked
	Reused                     // known to have been used by two persons
	HistoryCycle               // number changes lead back to themselves
	HistoryConflict            // one old number changed to two different numbers
)

var reasonNames = [...]string{
	"", "empty", "format", "date", "future", "birthnumber", "checksum", "organisationsnummer",
	"interim", "reserve", "reused", "history-cycle", "history-conflict",
}

// String returns the reason's short code, such as "checksum"; "" for OK.
func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "unknown"
}

// Reasons lists every reason code but OK, in a stable order, for reports.
func Reasons() []Reason {
	rs := make([]Reason, 0, len(reasonNames)-1)
	for r := Empty; int(r) < len(reasonNames); r++ {
		rs = append(rs, r)
	}
	return rs
}

// Sex is derived from the birth number's last digit: odd male, even female.
type Sex uint8

// The sexes an identity number can tell.
const (
	SexUnknown Sex = iota
	Male
	Female
)

// String returns "M", "F" or "".
func (s Sex) String() string {
	switch s {
	case Male:
		return "M"
	case Female:
		return "F"
	}
	return ""
}

// Number is a parsed identity number. The zero Number is invalid.
type Number struct {
	canon  [12]byte
	kind   Kind
	reason Reason
	sex    Sex
	// birth date; month or day 0 when unknown, year 0 when no date at all
	year       uint16
	month, day uint8
}

// Kind returns the number's kind.
func (n Number) Kind() Kind { return n.kind }

// Reason returns why the number is invalid, or OK for a valid number of
// any kind. See [Number.LinkReason] for why a valid number is not linkable.
func (n Number) Reason() Reason { return n.reason }

// Valid reports whether the input is an identity number of some kind.
func (n Number) Valid() bool { return n.kind != Invalid }

// Linkable reports whether the number identifies a person across sources.
func (n Number) Linkable() bool { return n.kind.Linkable() && n.reason == OK }

// LinkReason returns why the number cannot be linked: its invalidity reason,
// NotLinkableInterim or NotLinkableReserve for those kinds, or OK when it is
// linkable.
func (n Number) LinkReason() Reason {
	switch {
	case n.reason != OK:
		return n.reason
	case n.kind == Interim:
		return NotLinkableInterim
	case n.kind == Reserve:
		return NotLinkableReserve
	}
	return OK
}

// Canonical returns the 12-character canonical form, or "" for an invalid
// number. It allocates; see [Number.AppendCanonical].
func (n Number) Canonical() string {
	if n.kind == Invalid {
		return ""
	}
	return string(n.canon[:])
}

// AppendCanonical appends the canonical form to dst (nothing for an invalid
// number).
func (n Number) AppendCanonical(dst []byte) []byte {
	if n.kind == Invalid {
		return dst
	}
	return append(dst, n.canon[:]...)
}

// Key returns the canonical form as a comparable array, for maps. It is
// all zero bytes for an invalid number.
func (n Number) Key() [12]byte {
	if n.kind == Invalid {
		return [12]byte{}
	}
	return n.canon
}

// Sex returns the sex the number records, or SexUnknown.
func (n Number) Sex() Sex { return n.sex }

// BirthDate returns the birth date and true, or false when the number does
// not tell the whole date (a samordningsnummer with an unknown month or day,
// a Stockholm reserve number, an invalid number).
func (n Number) BirthDate() (time.Time, bool) {
	if n.year == 0 || n.month == 0 || n.day == 0 {
		return time.Time{}, false
	}
	return time.Date(int(n.year), time.Month(n.month), int(n.day), 0, 0, 0, 0, time.UTC), true
}

// AppendBirthDate appends the birth date as YYYY-MM-DD, or nothing when it is
// not known.
func (n Number) AppendBirthDate(dst []byte) []byte {
	if n.year == 0 || n.month == 0 || n.day == 0 {
		return dst
	}
	y := int(n.year)
	return append(dst,
		byte('0'+y/1000), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10), '-',
		byte('0'+n.month/10), byte('0'+n.month%10), '-',
		byte('0'+n.day/10), byte('0'+n.day%10))
}

// String returns the kind and, for an invalid number, the reason — never
// the digits, so a Number cannot leak into a log line.
func (n Number) String() string {
	if n.reason != OK {
		return n.kind.String() + "(" + n.reason.String() + ")"
	}
	return n.kind.String()
}

// GoString is String, so that %#v does not print the digits either.
func (n Number) GoString() string { return "personnummer.Number{" + n.String() + "}" }

// invalid returns an invalid Number with a reason.
func invalid(r Reason) Number { return Number{reason: r} }
