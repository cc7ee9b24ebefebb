package extract

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Manifest describes a delivery: every data file with its rows, sizes and
// SHA-256 sums before and after compression and encryption, every
// document (the codebooks and the README) with its size and SHA-256, the
// digest of the job spec that made it, and when. It is signed with the
// service's Ed25519 key (manifest.json.sig beside it), so that anyone
// with the public key can check that every file of the delivery is the
// one delivered ([Manifest.Check]).
type Manifest struct {
	Delivery   string         `json:"delivery"`
	Project    string         `json:"project"`
	Created    time.Time      `json:"created"`
	SpecSHA256 string         `json:"job_spec_sha256"`
	Recipients string         `json:"recipients"` // "age public keys" or "passphrase"
	Files      []ManifestFile `json:"files"`
	// Documents are the plaintext files of the delivery besides the
	// manifest and its signature. Manifests made before they were listed
	// have none.
	Documents []ManifestDocument `json:"documents,omitempty"`
}

// ManifestDocument is a plaintext file of a delivery: a codebook or the
// README.
type ManifestDocument struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

func newManifestDocument(name string, data []byte) ManifestDocument {
	sum := sha256.Sum256(data)
	return ManifestDocument{Name: name, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
}

// readmeFile is the name of a delivery's README.
const readmeFile = "README.txt"

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

// NewSignerKey returns a new Ed25519 signing key, PKCS#8 PEM: what
// [ParseSigner] reads, for a key kept elsewhere than a file (lopnrd keeps
// its own in the key store).
func NewSignerKey() ([]byte, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseSigner returns the signer of an Ed25519 key in PKCS#8 PEM.
func ParseSigner(key []byte) (*Signer, error) {
	block, _ := pem.Decode(key)
	if block == nil {
		return nil, errors.New("not PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, errors.New("not an Ed25519 key")
	}
	return &Signer{key: priv}, nil
}

// LoadOrCreateSigner reads the Ed25519 signing key at path (PKCS#8 PEM),
// creating it with mode 0600, and its public key at path+".pub", on first
// use.
func LoadOrCreateSigner(path string) (*Signer, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if b, err = NewSignerKey(); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return nil, err
		}
		s, err := ParseSigner(b)
		if err != nil {
			return nil, err
		}
		return s, os.WriteFile(path+".pub", []byte(s.PublicKey()+"\n"), 0o644)
	}
	if err != nil {
		return nil, err
	}
	s, err := ParseSigner(b)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	return s, nil
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

// FileCheck is the outcome of checking one file of a delivery against its
// manifest.
type FileCheck struct {
	Name     string
	Document bool  // a codebook or the README, not a data file
	Rows     int64 // of a data file
	// Err is nil when the file matches; else it wraps ErrFileMissing,
	// ErrFileAltered or ErrFileUnlisted.
	Err error
}

var (
	// ErrFileMissing: a file the manifest lists cannot be read.
	ErrFileMissing = errors.New("missing")
	// ErrFileAltered: a file's size or SHA-256 differs from the manifest's.
	ErrFileAltered = errors.New("altered: its size or SHA-256 differs from the signed manifest")
	// ErrFileUnlisted: a data file names a codebook that the manifest
	// does not list among its documents, so nothing vouches for it.
	ErrFileUnlisted = errors.New("not listed in the signed manifest")
)

// Check compares the files of the delivery in fsys (its directory, say)
// with the manifest, which must have been verified first: every data
// file, every document, and every codebook a data file names, by size and
// SHA-256. It returns one FileCheck per file, the data files first. A
// manifest made before documents were listed checks only the data files.
func (m *Manifest) Check(fsys fs.FS) []FileCheck {
	var out []FileCheck
	check := func(name string, size int64, sum string) error {
		if !fs.ValidPath(name) || strings.ContainsAny(name, `/\`) {
			return fmt.Errorf("%q is not a file name: %w", name, ErrFileMissing)
		}
		gotSize, gotSum, err := fileSHA256(fsys, name)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrFileMissing, err)
		}
		if gotSize != size || gotSum != sum {
			return ErrFileAltered
		}
		return nil
	}
	for _, f := range m.Files {
		out = append(out, FileCheck{Name: f.Name, Rows: f.Rows, Err: check(f.Name, f.Size, f.SHA256)})
	}
	listed := map[string]bool{}
	for _, d := range m.Documents {
		listed[d.Name] = true
		out = append(out, FileCheck{Name: d.Name, Document: true, Err: check(d.Name, d.Size, d.SHA256)})
	}
	if len(m.Documents) > 0 {
		for _, f := range m.Files {
			if f.Codebook != "" && !listed[f.Codebook] {
				listed[f.Codebook] = true
				out = append(out, FileCheck{Name: f.Codebook, Document: true, Err: ErrFileUnlisted})
			}
		}
	}
	return out
}

// fileSHA256 returns the size and hex SHA-256 of a file.
func fileSHA256(fsys fs.FS, name string) (int64, string, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return n, hex.EncodeToString(h.Sum(nil)), err
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
