package extract

import (
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"strings"

	"filippo.io/age"
)

// ParseRecipients parses researchers' age public keys: X25519 (age1…) or
// hybrid post-quantum (age1pq1…).
func ParseRecipients(keys []string) ([]age.Recipient, error) {
	var out []age.Recipient
	for i, k := range keys {
		k = strings.TrimSpace(k)
		var r age.Recipient
		var err error
		if strings.HasPrefix(k, "age1pq1") {
			r, err = age.ParseHybridRecipient(k)
		} else {
			r, err = age.ParseX25519Recipient(k)
		}
		if err != nil {
			return nil, fmt.Errorf("recipient %d: not an age public key (age1… or age1pq1…)", i+1)
		}
		out = append(out, r)
	}
	return out, nil
}

// NewPassphrase returns a random passphrase of 130 bits, in groups of
// five letters and digits, for a delivery to a researcher without an age
// key. It is shown once to the operator, who sends it by another channel;
// it is never stored or logged.
func NewPassphrase() (string, error) {
	var b [17]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	s := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))[:26]
	var groups []string
	for i := 0; i < len(s); i += 5 {
		groups = append(groups, s[i:min(i+5, len(s))])
	}
	return strings.Join(groups, "-"), nil
}

// PassphraseRecipient returns the scrypt recipient of a passphrase.
func PassphraseRecipient(passphrase string) (age.Recipient, error) {
	return age.NewScryptRecipient(passphrase)
}
