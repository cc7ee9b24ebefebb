package extract

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
)

// Sums are a delivered file's sizes and SHA-256 digests, before
// compression and encryption (what the researcher gets after decrypting
// and decompressing) and as stored.
type Sums struct {
	PlainSize   int64  `json:"plaintext_size"`
	PlainSHA256 string `json:"plaintext_sha256"`
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256"`
}

// counter hashes and counts what passes through it.
type counter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func newCounter(w io.Writer) *counter { return &counter{w: w, h: sha256.New()} }

func (c *counter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	return n, err
}

func (c *counter) sum() string { return hex.EncodeToString(c.h.Sum(nil)) }

// sealer is the stream plaintext -> [zstd] -> age -> dst, hashing both ends.
type sealer struct {
	plain  *counter
	zw     *zstd.Encoder // nil: no compression
	aw     io.WriteCloser
	cipher *counter
	closed bool
}

// seal returns a writer that compresses (when compress is set) and
// encrypts to recipients everything written to it, into dst. Close
// finishes the stream and returns the sums; it does not close dst.
func seal(dst io.Writer, recipients []age.Recipient, compress bool) (*sealer, error) {
	if len(recipients) == 0 {
		return nil, errors.New("no recipients: a delivery is always encrypted")
	}
	s := &sealer{cipher: newCounter(dst)}
	aw, err := age.Encrypt(s.cipher, recipients...)
	if err != nil {
		return nil, fmt.Errorf("age: %w", err)
	}
	s.aw = aw
	var next io.Writer = aw
	if compress {
		// SpeedFastest with concurrent blocks: zstd is the slowest stage
		// of a CSV delivery (DESIGN.md's field notes).
		zw, err := zstd.NewWriter(aw, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithConcurrentBlocks(true))
		if err != nil {
			return nil, err
		}
		s.zw, next = zw, zw
	}
	s.plain = newCounter(next)
	return s, nil
}

func (s *sealer) Write(p []byte) (int, error) { return s.plain.Write(p) }

// Close flushes the compressor and the encryption and returns the sums.
func (s *sealer) Close() (Sums, error) {
	if s.closed {
		return Sums{}, errors.New("sealer closed twice")
	}
	s.closed = true
	if s.zw != nil {
		if err := s.zw.Close(); err != nil {
			return Sums{}, err
		}
	}
	if err := s.aw.Close(); err != nil {
		return Sums{}, err
	}
	return Sums{PlainSize: s.plain.n, PlainSHA256: s.plain.sum(), Size: s.cipher.n, SHA256: s.cipher.sum()}, nil
}
