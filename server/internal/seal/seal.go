// Package seal keeps lopnrd's records from being changed by whoever can
// write its data directory but not its key store. Each record is kept in an
// envelope beside an HMAC-SHA256 over its kind (the directory it is kept
// in), its id (its file's name) and its JSON, keyed by a secret that lives
// in the key store. A record whose MAC does not verify — edited, copied
// under another id or kind, or stripped of its seal — is refused with an
// [AlteredError].
//
// A MAC does not stop a rollback: an older envelope of the same record,
// put back in its place, verifies.
package seal

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/lopnr/lopnr/internal/atomicfile"
)

// KeySize is the size of a sealing key, in bytes.
const KeySize = 32

// NewKey returns a new random sealing key.
func NewKey() ([]byte, error) {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	return k, nil
}

// ErrAltered is what every refusal wraps.
var ErrAltered = errors.New("altered outside lopnrd")

// AlteredError refuses a record: Kind and ID name it, Why says what is
// wrong with its seal. It never holds the record's content.
type AlteredError struct {
	Kind, ID, Why string
}

func (e *AlteredError) Error() string {
	return fmt.Sprintf("%s/%s.json was altered outside lopnrd (%s) and is refused; restore the record lopnrd wrote, from a backup", e.Kind, e.ID, e.Why)
}

func (e *AlteredError) Unwrap() error { return ErrAltered }

// Sealer seals and opens records with one key.
type Sealer struct {
	key []byte
}

// New returns a Sealer with key, which must be KeySize bytes or more.
func New(key []byte) (*Sealer, error) {
	if len(key) < KeySize {
		return nil, fmt.Errorf("seal: a key of %d bytes, want %d or more", len(key), KeySize)
	}
	return &Sealer{key: bytes.Clone(key)}, nil
}

// envelope is a sealed record as kept on disk: the record's JSON as it is,
// readable, and its seal.
type envelope struct {
	Seal   *stamp          `json:"seal"`
	Record json.RawMessage `json:"record"`
}

type stamp struct {
	Kind string `json:"kind"`
	ID   string `json:"id"`
	MAC  string `json:"hmac_sha256"` // unpadded base64url: few digits, never read as an identity number
}

// mac is HMAC-SHA256 over the kind, the id and the record's compact JSON,
// each preceded by its length.
func (s *Sealer) mac(kind, id string, compact []byte) []byte {
	h := hmac.New(sha256.New, s.key)
	var b []byte
	b = append(b, "lopnr sealed record v1\n"...)
	for _, part := range [][]byte{[]byte(kind), []byte(id), compact} {
		b = binary.AppendUvarint(b, uint64(len(part)))
		b = append(b, part...)
	}
	h.Write(b)
	return h.Sum(nil)
}

// Marshal returns v, as JSON, sealed as the record id of kind.
func (s *Sealer) Marshal(kind, id string, v any) ([]byte, error) {
	rec, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return s.seal(kind, id, rec)
}

func (s *Sealer) seal(kind, id string, rec []byte) ([]byte, error) {
	c, err := canonical(rec)
	if err != nil {
		return nil, err
	}
	return json.MarshalIndent(envelope{Seal: &stamp{Kind: kind, ID: id, MAC: base64.RawURLEncoding.EncodeToString(s.mac(kind, id, c))},
		Record: c}, "", "  ")
}

// canonical is JSON as json.Marshal writes it inside the envelope: without
// spaces, and with <, >, & and the line and paragraph separators escaped in
// strings. Indenting the envelope does not change it.
func canonical(rec []byte) ([]byte, error) {
	var compact, escaped bytes.Buffer
	if err := json.Compact(&compact, rec); err != nil {
		return nil, err
	}
	json.HTMLEscape(&escaped, compact.Bytes())
	return escaped.Bytes(), nil
}

// Unmarshal opens b, which must be sealed as the record id of kind, into
// v. It returns an *AlteredError when it is not.
func (s *Sealer) Unmarshal(kind, id string, b []byte, v any) error {
	rec, err := s.open(kind, id, b)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(rec, v); err != nil {
		// Sealed by lopnrd, yet not its record: another version's.
		return fmt.Errorf("%s/%s.json: a sealed record this lopnrd cannot read: %v", kind, id, err)
	}
	return nil
}

func (s *Sealer) open(kind, id string, b []byte) ([]byte, error) {
	var e envelope
	if err := json.Unmarshal(b, &e); err != nil || e.Seal == nil {
		return nil, &AlteredError{Kind: kind, ID: id, Why: "it has no seal"}
	}
	c, err := canonical(e.Record)
	if err != nil {
		return nil, &AlteredError{Kind: kind, ID: id, Why: "it has no seal"}
	}
	got, err := base64.RawURLEncoding.DecodeString(e.Seal.MAC)
	if err != nil || !hmac.Equal(got, s.mac(kind, id, c)) {
		why := "its seal does not verify"
		if e.Seal.Kind != kind || e.Seal.ID != id {
			why = fmt.Sprintf("it is sealed as %s/%s: a record copied under another name", e.Seal.Kind, e.Seal.ID)
		}
		return nil, &AlteredError{Kind: kind, ID: id, Why: why}
	}
	return c, nil
}

// Adopt seals, in place, every record in dir (kind: its records' kind)
// that has no seal: the records written before lopnrd sealed them. It
// returns the ids it sealed. A record sealed already is left as it is. Call
// it only once, when sealing is first turned on: after that, a record
// without a seal is one whose seal was stripped.
func (s *Sealer) Adopt(dir, kind string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var adopted []string
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || strings.HasPrefix(id, ".") || !e.Type().IsRegular() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			return adopted, err
		}
		var env envelope
		if json.Unmarshal(b, &env) == nil && env.Seal != nil {
			continue
		}
		if !json.Valid(b) {
			return adopted, fmt.Errorf("%s/%s.json: a damaged record, not JSON: cannot adopt it", kind, id)
		}
		sealed, err := s.seal(kind, id, b)
		if err != nil {
			return adopted, err
		}
		if err := atomicfile.Write(p, sealed); err != nil {
			return adopted, fmt.Errorf("%s/%s.json: %w", kind, id, err)
		}
		adopted = append(adopted, id)
	}
	return adopted, nil
}
