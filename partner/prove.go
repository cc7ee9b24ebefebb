package partner

import (
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"

	"github.com/cloudflare/circl/group"
)

// The service's side of a batch: circl's VerifiableServer.Evaluate computes
// the composite element of the batch proof (RFC 9497, ComputeCompositesFast)
// with one constant-time scalar multiplication per element, as many as the
// evaluation itself, which halves the throughput. The composite's scalars
// are public (hashes of the transcript) and so are the elements, so
// evaluator computes it as one variable-time multi-scalar multiplication
// instead, and marshals each element once. The transcript and the proof are
// RFC 9497's, byte for byte circl's (TestProveMatchesCircl) and the RFC's
// test vectors (TestEvaluateRFC9497Vectors); clients verify with circl.

// contextString is RFC 9497's contextString for ristretto255-SHA512 in
// verifiable mode: "OPRFV1-" || I2OSP(mode, 1) || "-" || identifier.
const contextString = "OPRFV1-\x01-ristretto255-SHA512"

var (
	seedDST         = []byte("Seed-" + contextString)
	hashToScalarDST = []byte("HashToScalar-" + contextString)
)

// errElement is how evaluate reports a bad element; Key.Evaluate wraps it in
// ErrInvalidInput.
type errElement struct {
	index  int
	reason string
}

func (e *errElement) Error() string { return fmt.Sprintf("element %d: %s", e.index, e.reason) }

// evaluator holds the secret scalar k and the encoding of k·G.
type evaluator struct {
	k      group.Scalar
	public []byte
}

func newEvaluator(k group.Scalar) (evaluator, error) {
	if k.IsZero() {
		return evaluator{}, errors.New("zero private key")
	}
	pub, err := group.Ristretto255.NewElement().MulGen(k).MarshalBinaryCompress()
	if err != nil {
		return evaluator{}, err
	}
	return evaluator{k: k, public: pub}, nil
}

// evaluate decodes the blinded elements, multiplies each by k and proves
// the batch with the proof randomness r. An element that is not a canonical
// encoding of a ristretto255 element other than the identity is an
// *errElement. blinded must not be empty.
func (e evaluator) evaluate(blinded [][]byte, r group.Scalar) (evaluated [][]byte, proof []byte, err error) {
	g := group.Ristretto255
	n := len(blinded)
	b := make([]group.Element, n)
	for i, data := range blinded {
		if len(data) != elementSize {
			return nil, nil, &errElement{i, fmt.Sprintf("%d bytes, want %d", len(data), elementSize)}
		}
		// The decoding is strict (RFC 9496): an element has one encoding,
		// so data is the canonical encoding the transcript needs.
		b[i] = g.NewElement()
		if b[i].UnmarshalBinary(data) != nil {
			return nil, nil, &errElement{i, "not a ristretto255 element"}
		}
		if b[i].IsIdentity() {
			return nil, nil, &errElement{i, "the identity element"}
		}
	}
	evaluated = make([][]byte, n)
	z := g.NewElement()
	for i := range b {
		z.Mul(b[i], e.k) // constant time in k
		if evaluated[i], err = z.MarshalBinaryCompress(); err != nil {
			return nil, nil, err
		}
	}
	if proof, err = e.prove(blinded, evaluated, b, r); err != nil {
		return nil, nil, err
	}
	return evaluated, proof, nil
}

// prove is RFC 9497's GenerateProof for k, A = G, B = k·G (e.public) and
// the batch C (elements b, encoded bEnc) with D = k·C (encoded dEnc).
func (e evaluator) prove(bEnc, dEnc [][]byte, b []group.Element, r group.Scalar) ([]byte, error) {
	g := group.Ristretto255
	// ComputeCompositesFast: M = Σ d_i·C_i, Z = k·M.
	h := sha512.New()
	var lenBuf [2]byte
	writeLen := func(p []byte) {
		binary.BigEndian.PutUint16(lenBuf[:], uint16(len(p)))
		h.Write(lenBuf[:])
		h.Write(p)
	}
	writeLen(e.public)
	writeLen(seedDST)
	seed := h.Sum(nil)

	scalars := make([][32]byte, len(b))
	var in []byte
	for i := range b {
		in = in[:0]
		in = binary.BigEndian.AppendUint16(in, uint16(len(seed)))
		in = append(in, seed...)
		in = binary.BigEndian.AppendUint16(in, uint16(i))
		in = binary.BigEndian.AppendUint16(in, uint16(len(bEnc[i])))
		in = append(in, bEnc[i]...)
		in = binary.BigEndian.AppendUint16(in, uint16(len(dEnc[i])))
		in = append(in, dEnc[i]...)
		in = append(in, "Composite"...)
		d, err := g.HashToScalar(in, hashToScalarDST).MarshalBinary()
		if err != nil {
			return nil, err
		}
		copy(scalars[i][:], d)
	}
	m := multiScalarMult(scalars, b)
	zm := g.NewElement().Mul(m, e.k)

	// The challenge over (B, M, Z, t2 = r·G, t3 = r·M).
	mEnc, err := m.MarshalBinaryCompress()
	if err != nil {
		return nil, err
	}
	zEnc, err := zm.MarshalBinaryCompress()
	if err != nil {
		return nil, err
	}
	t2, err := g.NewElement().MulGen(r).MarshalBinaryCompress()
	if err != nil {
		return nil, err
	}
	t3, err := g.NewElement().Mul(m, r).MarshalBinaryCompress()
	if err != nil {
		return nil, err
	}
	in = in[:0]
	for _, p := range [][]byte{e.public, mEnc, zEnc, t2, t3} {
		in = binary.BigEndian.AppendUint16(in, uint16(len(p)))
		in = append(in, p...)
	}
	in = append(in, "Challenge"...)
	c := g.HashToScalar(in, hashToScalarDST)
	s := g.NewScalar().Mul(c, e.k)
	s.Sub(r, s)

	proof, err := c.MarshalBinary()
	if err != nil {
		return nil, err
	}
	sb, err := s.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return append(proof, sb...), nil
}

// multiScalarMult returns Σ scalars[i]·points[i], in variable time: for
// public scalars and points only. The scalars are little-endian and reduced
// (below 2^253). It is Pippenger's bucket method with signed digits.
func multiScalarMult(scalars [][32]byte, points []group.Element) group.Element {
	g := group.Ristretto255
	n := len(points)
	acc := g.Identity()
	if n < 8 {
		t := g.NewElement()
		for i, p := range points {
			s := g.NewScalar()
			if s.UnmarshalBinary(scalars[i][:]) != nil {
				panic("partner: composite scalar not reduced")
			}
			acc.Add(acc, t.Mul(p, s))
		}
		return acc
	}

	// Window width c: about log2(n) - 2 balances the n additions into
	// buckets against the 2^c of summing them, per window.
	c := max(4, min(bits.Len(uint(n))-2, 12))
	windows := (253+c-1)/c + 1 // the last takes the final carry
	half := 1 << (c - 1)

	// Recode every scalar into signed digits in [-2^(c-1), 2^(c-1)).
	digits := make([]int32, n*windows)
	for i := range scalars {
		var carry int32
		for w := range windows {
			v := int32(bitsAt(&scalars[i], w*c, c)) + carry
			carry = 0
			if v >= int32(half) {
				v -= 1 << c
				carry = 1
			}
			digits[i*windows+w] = v
		}
	}
	neg := make([]group.Element, n)
	for i, p := range points {
		neg[i] = g.NewElement().Neg(p)
	}

	identity := g.Identity()
	buckets := make([]group.Element, half)
	for j := range buckets {
		buckets[j] = g.NewElement()
	}
	run, sum := g.NewElement(), g.NewElement()
	for w := windows - 1; w >= 0; w-- {
		if w != windows-1 {
			for range c {
				acc.Dbl(acc)
			}
		}
		used := 0
		for j := range buckets {
			buckets[j].Set(identity)
		}
		for i := range n {
			switch d := digits[i*windows+w]; {
			case d > 0:
				buckets[d-1].Add(buckets[d-1], points[i])
				used = max(used, int(d))
			case d < 0:
				buckets[-d-1].Add(buckets[-d-1], neg[i])
				used = max(used, int(-d))
			}
		}
		// Σ j·bucket[j] as a running sum from the top.
		run.Set(identity)
		sum.Set(identity)
		for j := used - 1; j >= 0; j-- {
			run.Add(run, buckets[j])
			sum.Add(sum, run)
		}
		acc.Add(acc, sum)
	}
	return acc
}

// bitsAt returns the c bits of the little-endian s from bit offset off
// (zero beyond the end).
func bitsAt(s *[32]byte, off, c int) uint32 {
	var v uint32
	for k := range c {
		bit := off + k
		if bit >= 256 {
			break
		}
		v |= uint32(s[bit/8]>>(bit%8)&1) << k
	}
	return v
}
