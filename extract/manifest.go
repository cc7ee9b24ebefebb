package extract

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Manifest describes a delivery: every file with its rows, sizes and
// SHA-256 sums before and after compression and encryption, the digest of
// the job spec that made it, and when. It is signed with the service's
// Ed25519 key (manifest.json.sig beside it), so that anyone with the
// public key can check that the files are the ones delivered.
type Manifest struct {
	Delivery   string         `json:"delivery"`
	Project    string         `json:"project"`
	Created    time.Time      `json:"created"`
	SpecSHA256 string         `json:"job_spec_sha256"`
	Recipients string         `json:"recipients"` // "age public keys" or "passphrase"
	Files      []ManifestFile `json:"files"`
}

// ManifestFile is one delivered file.
type ManifestFile struct {
	Name     string `json:"name"`
	Source   string `json:"source"`
	Format   string `json:"format"` // csv+zstd+age, parquet+age
	Rows     int64  `json:"rows"`
	Codebook string `json:"codebook"`
	Sums
}

// Signer signs manifests.
type Signer struct {
	key ed25519.PrivateKey
}

// LoadOrCreateSigner reads the Ed25519 signing key at path (PKCS#8 PEM),
// creating it with mode 0600, and its public key at path+".pub", on first
// use.
func LoadOrCreateSigner(path string) (*Signer, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, err
		}
		s := &Signer{key: priv}
		return s, os.WriteFile(path+".pub", []byte(s.PublicKey()+"\n"), 0o644)
	}
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("signing key %s: not PEM", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key %s: not an Ed25519 key", path)
	}
	return &Signer{key: priv}, nil
}

// PublicKey returns the public key as "ed25519:<base64>".
func (s *Signer) PublicKey() string {
	return "ed25519:" + base64.StdEncoding.EncodeToString(s.key.Public().(ed25519.PublicKey))
}

// sign returns the manifest's bytes and their signature file's bytes.
func (s *Signer) sign(m *Manifest) (manifest, sig []byte, err error) {
	manifest, err = json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, nil, err
	}
	manifest = append(manifest, '\n')
	sig = []byte(base64.StdEncoding.EncodeToString(ed25519.Sign(s.key, manifest)) + "\n")
	return manifest, sig, nil
}

// ErrBadSignature is returned when a manifest's signature does not verify.
var ErrBadSignature = errors.New("manifest signature does not verify")

// VerifyManifest checks manifest against its signature with the public
// key ("ed25519:<base64>") and returns it parsed.
func VerifyManifest(manifest, sig []byte, publicKey string) (*Manifest, error) {
	raw, ok := strings.CutPrefix(publicKey, "ed25519:")
	if !ok {
		return nil, errors.New("public key: want ed25519:<base64>")
	}
	pub, err := strictBase64(raw)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return nil, errors.New("public key: not an Ed25519 public key")
	}
	s, err := strictBase64(strings.TrimSuffix(strings.TrimSuffix(string(sig), "\n"), "\r"))
	if err != nil || !ed25519.Verify(ed25519.PublicKey(pub), manifest, s) {
		return nil, ErrBadSignature
	}
	var m Manifest
	if err := json.Unmarshal(manifest, &m); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return &m, nil
}

// strictBase64 decodes the one encoding of a value in standard base64:
// no line breaks inside, no stray bits in the last character, so that no
// other text decodes to the same signature or key.
func strictBase64(s string) ([]byte, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, errors.New("base64 with a line break")
	}
	return base64.StdEncoding.Strict().DecodeString(s)
}
