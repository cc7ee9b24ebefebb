package personnummer

import "regexp"

// identityShaped finds digit groups shaped like an identity number (10 or
// 12 digits, with or without a separator), checked or not.
var identityShaped = regexp.MustCompile(`\d{6}(\d{2})?[-+ ]?[0-9A-Z]\d{3}`)

// Redact replaces everything in s shaped like an identity number, valid or
// not, with "[redacted]": for free text on its way into a log, an audit
// entry or an error message, which are no place to test check digits.
func Redact(s string) string {
	return identityShaped.ReplaceAllString(s, "[redacted]")
}
