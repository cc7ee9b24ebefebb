package testenv

import (
	"regexp"
	"testing"
	"time"

	"github.com/lopnr/lopnr/linkage/personnummer"
)

// identityShaped finds digit groups shaped like identity numbers: 10 or 12
// digits, with or without a separator.
var identityShaped = regexp.MustCompile(`\d{6,8}[-+]?\d{4}`)

// NoIdentityNumbers fails the test for every valid identity number (a
// valid date and check digit) in text, a log or a file named by what. It
// reports how long each is, never its digits.
func NoIdentityNumbers(t testing.TB, what, text string) {
	t.Helper()
	for _, m := range identityShaped.FindAllString(text, -1) {
		if personnummer.Parse(m, time.Now()).Valid() {
			t.Errorf("%s holds a valid identity number (%d characters)", what, len(m))
		}
	}
}
