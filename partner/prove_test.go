package partner

import (
	"bytes"
	"crypto"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cloudflare/circl/group"
	"github.com/cloudflare/circl/oprf"
	"github.com/cloudflare/circl/zk/dleq"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func scalarHex(t testing.TB, s string) group.Scalar {
	t.Helper()
	k := group.Ristretto255.NewScalar()
	if err := k.UnmarshalBinary(unhex(t, s)); err != nil {
		t.Fatal(err)
	}
	return k
}

// TestEvaluateRFC9497Vectors checks the evaluation and the proof against
// RFC 9497's test vectors for ristretto255-SHA512 in verifiable mode
// (appendix A.1.2).
func TestEvaluateRFC9497Vectors(t *testing.T) {
	const (
		seed    = "a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3"
		keyInfo = "74657374206b6579"
		skSm    = "e6f73f344b79b379f1a0dd37e07ff62e38d9f71345ce62ae3a9bc60b04ccd909"
		pkSm    = "c803e2cc6b05fc15064549b5920659ca4a77b2cca6f04f6b357009335476ad4e"
	)
	priv, err := oprf.DeriveKey(oprf.SuiteRistretto255, oprf.VerifiableMode, unhex(t, seed), unhex(t, keyInfo))
	if err != nil {
		t.Fatal(err)
	}
	if kb, _ := priv.MarshalBinary(); hex.EncodeToString(kb) != skSm {
		t.Fatalf("derived skSm %x", kb)
	}
	e, err := newEvaluator(scalarHex(t, skSm))
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(e.public) != pkSm {
		t.Fatalf("pkSm %x, want %s", e.public, pkSm)
	}
	for i, v := range []struct{ blinded, evaluated, proof, r string }{
		{
			"863f330cc1a1259ed5a5998a23acfd37fb4351a793a5b3c090b642ddc439b945",
			"aa8fa048764d5623868679402ff6108d2521884fa138cd7f9c7669a9a014267e",
			"ddef93772692e535d1a53903db24367355cc2cc78de93b3be5a8ffcc6985dd066d4346421d17bf5117a2a1ff0fcb2a759f58a539dfbe857a40bce4cf49ec600d",
			"222a5e897cf59db8145db8d16e597e8facb80ae7d4e26d9881aa6f61d645fc0e",
		},
		{
			"cc0b2a350101881d8a4cba4c80241d74fb7dcbfde4a61fde2f91443c2bf9ef0c",
			"60a59a57208d48aca71e9e850d22674b611f752bed48b36f7a91b372bd7ad468",
			"401a0da6264f8cf45bb2f5264bc31e109155600babb3cd4e5af7d181a2c9dc0a67154fabf031fd936051dec80b0b6ae29c9503493dde7393b722eafdf5a50b02",
			"222a5e897cf59db8145db8d16e597e8facb80ae7d4e26d9881aa6f61d645fc0e",
		},
		{
			"863f330cc1a1259ed5a5998a23acfd37fb4351a793a5b3c090b642ddc439b945,90a0145ea9da29254c3a56be4fe185465ebb3bf2a1801f7124bbbadac751e654",
			"aa8fa048764d5623868679402ff6108d2521884fa138cd7f9c7669a9a014267e,cc5ac221950a49ceaa73c8db41b82c20372a4c8d63e5dded2db920b7eee36a2a",
			"cc203910175d786927eeb44ea847328047892ddf8590e723c37205cb74600b0a5ab5337c8eb4ceae0494c2cf89529dcf94572ed267473d567aeed6ab873dee08",
			"419c4f4f5052c53c45f3da494d2b67b220d02118e0857cdbcf037f9ea84bbe0c",
		},
	} {
		var blinded [][]byte
		for _, s := range strings.Split(v.blinded, ",") {
			blinded = append(blinded, unhex(t, s))
		}
		evaluated, proof, err := e.evaluate(blinded, scalarHex(t, v.r))
		if err != nil {
			t.Fatalf("vector %d: %v", i, err)
		}
		var got []string
		for _, z := range evaluated {
			got = append(got, hex.EncodeToString(z))
		}
		if strings.Join(got, ",") != v.evaluated {
			t.Errorf("vector %d: evaluated %s, want %s", i, strings.Join(got, ","), v.evaluated)
		}
		if hex.EncodeToString(proof) != v.proof {
			t.Errorf("vector %d: proof %x, want %s", i, proof, v.proof)
		}
	}
}

// TestProveMatchesCircl compares Evaluate with circl's server and prover for
// the same key and proof randomness, for batch sizes on both sides of the
// multi-scalar multiplication's thresholds (TestMultiScalarMult covers
// the larger window widths of the biggest batches).
func TestProveMatchesCircl(t *testing.T) {
	nums := testNumbers(t)
	k := testKey(t, "a", "proj-1")
	g := group.Ristretto255
	prover := dleq.Prover{Params: dleq.Params{G: g, H: crypto.SHA512, DST: []byte(contextString)}}
	pub := g.NewElement()
	if err := pub.UnmarshalBinary(k.PublicKey()); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 2, 7, 8, 9, 31, 100, 257, 1000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			blinded := blindedFor(t, k, nums[:n])
			r := g.RandomScalar(nil)
			evaluated, proof, err := k.eval.evaluate(blinded, r)
			if err != nil {
				t.Fatal(err)
			}

			req := &oprf.EvaluationRequest{}
			for _, b := range blinded {
				e := g.NewElement()
				if err := e.UnmarshalBinary(b); err != nil {
					t.Fatal(err)
				}
				req.Elements = append(req.Elements, e)
			}
			want, err := k.server.Evaluate(req)
			if err != nil {
				t.Fatal(err)
			}
			for i, z := range want.Elements {
				zb, _ := z.MarshalBinaryCompress()
				if !bytes.Equal(zb, evaluated[i]) {
					t.Fatalf("element %d differs from circl's", i)
				}
			}
			wantProof, err := prover.ProveBatchWithRandomnessRFC9497(k.eval.k, pub, req.Elements, want.Elements, r)
			if err != nil {
				t.Fatal(err)
			}
			wp, _ := wantProof.MarshalBinary()
			if !bytes.Equal(proof, wp) {
				t.Fatalf("proof %x, circl's %x", proof, wp)
			}
		})
	}
}

func TestMultiScalarMult(t *testing.T) {
	g := group.Ristretto255
	lMinus1 := "ecd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010"
	for _, n := range []int{0, 1, 7, 8, 9, 64, 300, 2000, MaxBatch} {
		points := make([]group.Element, n)
		scalars := make([][32]byte, n)
		want := g.Identity()
		for i := range n {
			points[i] = g.RandomElement(nil)
			s := g.RandomScalar(nil)
			switch i % 7 {
			case 1:
				s = g.NewScalar() // zero
			case 2:
				s = scalarHex(t, lMinus1)
			case 3:
				s = g.NewScalar().SetUint64(1)
			case 4:
				points[i] = points[i-1] // a repeated point
			}
			sb, _ := s.MarshalBinary()
			copy(scalars[i][:], sb)
			want.Add(want, g.NewElement().Mul(points[i], s))
		}
		if got := multiScalarMult(scalars, points); !got.IsEqual(want) {
			t.Errorf("n=%d: multi-scalar multiplication differs from the sum of products", n)
		}
	}
}

func FuzzEvaluate(f *testing.F) {
	f.Add([]byte{}, uint8(1))
	f.Add(make([]byte, 32), uint8(1))
	f.Add(bytes.Repeat([]byte{0xff}, 64), uint8(2))
	f.Add(unhex(f, "863f330cc1a1259ed5a5998a23acfd37fb4351a793a5b3c090b642ddc439b945"), uint8(1))
	k := testKey(f, "a", "proj-1")
	f.Fuzz(func(t *testing.T, data []byte, parts uint8) {
		// Cut data into parts elements of about equal length.
		p := int(parts%8) + 1
		var batch [][]byte
		for i := range p {
			batch = append(batch, data[i*len(data)/p:(i+1)*len(data)/p])
		}
		evaluated, proof, err := k.Evaluate(batch)
		if err != nil {
			if !errors.Is(err, ErrInvalidInput) {
				t.Fatalf("error %v does not wrap ErrInvalidInput", err)
			}
			if len(data) >= 8 && strings.Contains(err.Error(), hex.EncodeToString(data[:4])) {
				t.Fatalf("error %q echoes the input", err)
			}
			return
		}
		if len(evaluated) != p || len(proof) != 64 {
			t.Fatalf("%d elements and a %d-byte proof for %d", len(evaluated), len(proof), p)
		}
	})
}
