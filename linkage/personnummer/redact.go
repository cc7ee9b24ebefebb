package personnummer

import "regexp"

// separator is what may stand between digits of a written number: '-',
// '+', any dash (an editor's en dash, a minus sign) with or without a space
// on either side, or one space of any kind (a no-break space).
const separator = `(?:\p{Zs}?[-+\p{Pd}\x{2212}]\p{Zs}?|\p{Zs})`

// digitRun finds runs of digits (and capital letters among them, as in a
// reserve number's T123) joined by single separators: "18900101-9802",
// "0018900101 9802 42", "2026-01234-01".
var digitRun = regexp.MustCompile(`[0-9A-Z]*\d[0-9A-Z]*(?:` + separator + `[0-9A-Z]*\d[0-9A-Z]*)*`)

// identityShaped finds what is shaped like an identity number (10 or 12
// digits, with or without a separator), checked or not.
var identityShaped = regexp.MustCompile(`\d{6}(?:\d{2})?` + separator + `?[0-9A-Z]\d{3}`)

// Redact replaces every run of digits in s that holds anything shaped
// like an identity number, valid or not, with "[redacted]": the whole run,
// so that no digit of the number is left beside it, however the run is cut
// (a pattern for the number alone matches "0018900101-9802" out of step
// and leaves "-9802"). It is for free text on its way into a log, an audit
// entry or an error message, which are no place to test check digits.
// Numbers that are not identity-shaped, such as a diarienummer
// "2026-01234-01", are kept.
func Redact(s string) string {
	return digitRun.ReplaceAllStringFunc(s, func(run string) string {
		if identityShaped.MatchString(run) {
			return "[redacted]"
		}
		return run
	})
}
