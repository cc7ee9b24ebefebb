package partner

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/cloudflare/circl/oprf"
)

// Suite names the OPRF suite and mode, for docs and the API.
const Suite = "ristretto255-SHA512, verifiable mode (RFC 9497)"

// MaxBatch is the most elements one Evaluate call takes.
const MaxBatch = 4096 // elements in one Evaluate call

// ErrInvalidInput is wrapped by the errors for input the OPRF refuses: a
// bad blinded element or batch, a seed of the wrong size, a number that is
// not 12 digits. The error names the index, never the bytes.
var ErrInvalidInput = errors.New("invalid OPRF input")

// suite is the circl suite behind [Suite].
var suite = oprf.SuiteRistretto255

const (
	elementSize   = 32 // a marshalled ristretto255 element
	pseudonymSize = 32 // bytes of the OPRF output that make the pseudonym
	canonicalSize = 12 // YYYYMMDDNNNC
	infoPrefix    = "lopnr/oprf/v1/"
)

// Key is a project's OPRF key, derived from the project's 32-byte oprf_seed
// (kept in the key store). A Key is safe for concurrent use. It does not
// keep the seed, and fmt prints no secret of it.
type Key struct {
	priv   *oprf.PrivateKey
	server oprf.VerifiableServer // FullEvaluate
	eval   evaluator             // Evaluate, see prove.go
	public []byte
}

// DeriveKey derives the project's key with oprf.DeriveKey
// (SuiteRistretto255, VerifiableMode) from seed and the info string
// "lopnr/oprf/v1/" + project, so that each project has its own key even
// where two share a seed. The seed must be 32 bytes and project not empty.
func DeriveKey(seed []byte, project string) (*Key, error) {
	if len(seed) != 32 {
		return nil, fmt.Errorf("partner: %w: oprf seed of %d bytes, want 32", ErrInvalidInput, len(seed))
	}
	if project == "" {
		return nil, fmt.Errorf("partner: %w: empty project name", ErrInvalidInput)
	}
	priv, err := oprf.DeriveKey(suite, oprf.VerifiableMode, seed, []byte(infoPrefix+project))
	if err != nil {
		return nil, fmt.Errorf("partner: deriving the OPRF key: %w", err)
	}
	// Public caches the public key in priv on first use; calling it here,
	// before the Key is shared, keeps later calls read-only.
	public, err := priv.Public().MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("partner: marshalling the public key: %w", err)
	}
	kb, err := priv.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("partner: marshalling the private key: %w", err)
	}
	scalar := suite.Group().NewScalar()
	err = scalar.UnmarshalBinary(kb)
	clear(kb)
	if err != nil {
		return nil, fmt.Errorf("partner: the private key: %w", err)
	}
	eval, err := newEvaluator(scalar)
	if err != nil {
		return nil, fmt.Errorf("partner: the private key: %w", err)
	}
	if !bytes.Equal(eval.public, public) {
		return nil, errors.New("partner: the evaluator's public key differs from circl's")
	}
	return &Key{
		priv:   priv,
		server: oprf.NewVerifiableServer(suite, priv),
		eval:   eval,
		public: public,
	}, nil
}

// PublicKey is the key's public key, marshalled (32 bytes): what partners
// verify the service's proofs against.
func (k *Key) PublicKey() []byte {
	return append([]byte(nil), k.public...)
}

// Evaluate evaluates a batch of blinded elements (each marshalled, as the
// client sent them) and returns the evaluated elements (marshalled) and the
// batch's DLEQ proof (marshalled). Bad input (wrong length, not a group
// element, the identity, an empty batch, more than [MaxBatch] elements) is an
// error wrapping [ErrInvalidInput] naming the index, never the bytes.
func (k *Key) Evaluate(blinded [][]byte) (evaluated [][]byte, proof []byte, err error) {
	switch {
	case len(blinded) == 0:
		return nil, nil, fmt.Errorf("partner: %w: empty batch", ErrInvalidInput)
	case len(blinded) > MaxBatch:
		return nil, nil, fmt.Errorf("partner: %w: batch of %d elements, at most %d", ErrInvalidInput, len(blinded), MaxBatch)
	}
	evaluated, proof, err = k.eval.evaluate(blinded, suite.Group().RandomScalar(rand.Reader))
	var bad *errElement
	switch {
	case errors.As(err, &bad):
		return nil, nil, fmt.Errorf("partner: %w: %v", ErrInvalidInput, bad)
	case err != nil:
		return nil, nil, fmt.Errorf("partner: evaluating a batch of %d elements: %w", len(blinded), err)
	}
	return evaluated, proof, nil
}

// Pseudonym is the OPRF output for one canonical 12-digit personnummer
// computed directly with the key (FullEvaluate), as lowercase hex of its
// first 32 bytes: equal to what a partner gets for the same number through
// Blind, Evaluate and Finalize. A canonical that is not 12 digits is an
// error wrapping [ErrInvalidInput].
func (k *Key) Pseudonym(canonical string) (string, error) {
	p, err := k.pseudonym(canonical)
	if err != nil {
		return "", fmt.Errorf("partner: %w", err)
	}
	return p, nil
}

func (k *Key) pseudonym(canonical string) (string, error) {
	if !isCanonical(canonical) {
		return "", fmt.Errorf("%w: canonical number: want %d digits", ErrInvalidInput, canonicalSize)
	}
	out, err := k.server.FullEvaluate([]byte(canonical))
	if err != nil {
		return "", fmt.Errorf("evaluating: %w", err)
	}
	return hex.EncodeToString(out[:pseudonymSize]), nil
}

// Pseudonyms computes [Key.Pseudonym] for many numbers on workers goroutines
// (0: GOMAXPROCS) and returns them in the order of canonicals. An error
// names the index of the first bad number.
func (k *Key) Pseudonyms(canonicals []string, workers int) ([]string, error) {
	if workers < 0 {
		return nil, fmt.Errorf("partner: %d workers, want 0 (GOMAXPROCS) or more", workers)
	}
	if workers == 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	const chunk = 64
	out := make([]string, len(canonicals))
	var (
		next     atomic.Int64
		failed   atomic.Bool
		mu       sync.Mutex
		firstIdx = len(canonicals)
		firstErr error
		wg       sync.WaitGroup
	)
	workers = min(workers, (len(canonicals)+chunk-1)/chunk)
	for range workers {
		wg.Go(func() {
			for !failed.Load() {
				lo := int(next.Add(chunk)) - chunk
				if lo >= len(canonicals) {
					return
				}
				for i := lo; i < min(lo+chunk, len(canonicals)); i++ {
					p, err := k.pseudonym(canonicals[i])
					if err != nil {
						mu.Lock()
						if i < firstIdx {
							firstIdx, firstErr = i, err
						}
						mu.Unlock()
						failed.Store(true)
						return
					}
					out[i] = p
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, fmt.Errorf("partner: number %d: %w", firstIdx, firstErr)
	}
	return out, nil
}

func isCanonical(s string) bool {
	if len(s) != canonicalSize {
		return false
	}
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Evaluator evaluates blinded batches: the service's Evaluate RPC on the
// partner's side, or a *Key in tests. Safe for concurrent use.
type Evaluator interface {
	Evaluate(ctx context.Context, blinded [][]byte) (evaluated [][]byte, proof []byte, err error)
}

// KeyEvaluator adapts a *Key to [Evaluator] (for tests and benchmarks).
func KeyEvaluator(k *Key) Evaluator { return keyEvaluator{k} }

type keyEvaluator struct{ k *Key }

var _ Evaluator = keyEvaluator{}

func (e keyEvaluator) Evaluate(ctx context.Context, blinded [][]byte) ([][]byte, []byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	return e.k.Evaluate(blinded)
}
