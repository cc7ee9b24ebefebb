package testenv

import (
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lopnr/lopnr/linkage/personnummer"
)

// identityShaped finds digit groups shaped like identity numbers: 10 or 12
// digits, with or without a separator, standing alone (not inside a hex
// digest or pseudonym, whose digit runs can look like anything).
var identityShaped = regexp.MustCompile(`\b\d{6,8}[-+]?\d{4}\b`)

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

// SyncBuffer collects a server's log lines, from any goroutine, for a test
// to read.
type SyncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
