package partner

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloudflare/circl/oprf"
	"github.com/cloudflare/circl/zk/dleq"
)

// testNumbers reads Skatteverket's test personnummer (12 digits, one a line).
func testNumbers(t testing.TB) []string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "testdata", "skatteverket", "testpersonnummer.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var nums []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		if line := strings.TrimSpace(s.Text()); line != "" {
			nums = append(nums, line)
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	if len(nums) < 1000 {
		t.Fatalf("only %d test numbers", len(nums))
	}
	return nums
}

// testSeed is a fixed oprf_seed, so that the tests are deterministic.
func testSeed(name string) []byte {
	s := sha256.Sum256([]byte("lopnr partner test seed " + name))
	return s[:]
}

func testKey(t testing.TB, seed, project string) *Key {
	t.Helper()
	k, err := DeriveKey(testSeed(seed), project)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// roundTrip runs the protocol as a partner does, through Key.Evaluate with
// marshalled elements, and returns the pseudonyms.
func roundTrip(t testing.TB, k *Key, publicKey []byte, nums []string) ([]string, error) {
	t.Helper()
	pk := new(oprf.PublicKey)
	if err := pk.UnmarshalBinary(oprf.SuiteRistretto255, publicKey); err != nil {
		t.Fatal(err)
	}
	client := oprf.NewVerifiableClient(oprf.SuiteRistretto255, pk)
	inputs := make([][]byte, len(nums))
	for i, n := range nums {
		inputs[i] = []byte(n)
	}
	fin, req, err := client.Blind(inputs)
	if err != nil {
		t.Fatal(err)
	}
	blinded := make([][]byte, len(req.Elements))
	for i, e := range req.Elements {
		if blinded[i], err = e.MarshalBinaryCompress(); err != nil {
			t.Fatal(err)
		}
	}
	evaluated, proof, err := k.Evaluate(blinded)
	if err != nil {
		t.Fatal(err)
	}
	g := oprf.SuiteRistretto255.Group()
	eval := &oprf.Evaluation{Proof: new(dleq.Proof)}
	for _, b := range evaluated {
		e := g.NewElement()
		if err := e.UnmarshalBinary(b); err != nil {
			t.Fatal(err)
		}
		eval.Elements = append(eval.Elements, e)
	}
	if err := eval.Proof.UnmarshalBinary(g, proof); err != nil {
		t.Fatal(err)
	}
	outs, err := client.Finalize(fin, eval)
	if err != nil {
		return nil, err
	}
	ps := make([]string, len(outs))
	for i, o := range outs {
		if len(o) != 64 {
			t.Fatalf("OPRF output of %d bytes, want 64", len(o))
		}
		ps[i] = hex.EncodeToString(o[:32])
	}
	return ps, nil
}

func TestPseudonymEqualsProtocol(t *testing.T) {
	nums := testNumbers(t)
	k := testKey(t, "a", "proj-1")
	sample := []string{nums[0], nums[len(nums)/2], nums[len(nums)-1], nums[12345]}
	got, err := roundTrip(t, k, k.PublicKey(), sample)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range sample {
		want, err := k.Pseudonym(n)
		if err != nil {
			t.Fatal(err)
		}
		if len(want) != 64 || strings.ToLower(want) != want {
			t.Errorf("number %d: pseudonym %q is not 64 lowercase hex digits", i, want)
		}
		if got[i] != want {
			t.Errorf("number %d: Blind/Evaluate/Finalize gave %s, Pseudonym %s", i, got[i], want)
		}
	}
}

func TestProofFromAnotherKeyFails(t *testing.T) {
	nums := testNumbers(t)
	k := testKey(t, "a", "proj-1")
	other := testKey(t, "a", "proj-2")
	_, err := roundTrip(t, k, other.PublicKey(), nums[:3])
	if !errors.Is(err, oprf.ErrInvalidProof) {
		t.Fatalf("finalizing with another key's public key: %v, want %v", err, oprf.ErrInvalidProof)
	}
}

func TestDeriveKeyPerProject(t *testing.T) {
	nums := testNumbers(t)
	n := nums[100]
	p1a, _ := testKey(t, "a", "proj-1").Pseudonym(n)
	p1b, _ := testKey(t, "a", "proj-1").Pseudonym(n)
	p2, _ := testKey(t, "a", "proj-2").Pseudonym(n)
	q1, _ := testKey(t, "b", "proj-1").Pseudonym(n)
	if p1a != p1b {
		t.Error("same seed and project gave two pseudonyms")
	}
	if p1a == p2 {
		t.Error("two projects with the same seed gave the same pseudonym")
	}
	if p1a == q1 {
		t.Error("two seeds gave the same pseudonym")
	}
	if string(testKey(t, "a", "proj-1").PublicKey()) == string(testKey(t, "a", "proj-2").PublicKey()) {
		t.Error("two projects with the same seed have the same public key")
	}
	other, _ := testKey(t, "a", "proj-1").Pseudonym(nums[101])
	if other == p1a {
		t.Error("two numbers gave the same pseudonym")
	}
}

// TestDeriveKeyKnownAnswer pins the derivation: the info string, the suite
// and the pseudonym encoding. If this changes, every pseudonym a partner
// holds changes with it.
func TestDeriveKeyKnownAnswer(t *testing.T) {
	nums := testNumbers(t)
	seed := make([]byte, 32)
	for i := range seed {
		seed[i] = byte(i)
	}
	k, err := DeriveKey(seed, "KAT")
	if err != nil {
		t.Fatal(err)
	}
	priv, err := oprf.DeriveKey(oprf.SuiteRistretto255, oprf.VerifiableMode, seed, []byte("lopnr/oprf/v1/KAT"))
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := priv.Public().MarshalBinary()
	if got := hex.EncodeToString(k.PublicKey()); got != hex.EncodeToString(pub) {
		t.Errorf("public key %s, want oprf.DeriveKey's %x", got, pub)
	}
	const wantPublic = "8aaf5b185c0f553e2c23dce04b383f041a617105c5f246b7ee9477e144f4337e"
	const wantPseudonym = "4f09ea5279bc4b6c43e10fb2ce989486e58d7c7dff07675dc6f18db6a39dfc49"
	if got := hex.EncodeToString(k.PublicKey()); got != wantPublic {
		t.Errorf("public key %s, want %s", got, wantPublic)
	}
	p, err := k.Pseudonym(nums[0])
	if err != nil {
		t.Fatal(err)
	}
	if p != wantPseudonym {
		t.Errorf("pseudonym of the first test number %s, want %s", p, wantPseudonym)
	}
}

func TestDeriveKeyRejects(t *testing.T) {
	for _, tc := range []struct {
		seed    []byte
		project string
		want    string
	}{
		{make([]byte, 31), "p", "31 bytes"},
		{make([]byte, 33), "p", "33 bytes"},
		{nil, "p", "0 bytes"},
		{make([]byte, 32), "", "empty project"},
	} {
		_, err := DeriveKey(tc.seed, tc.project)
		if !errors.Is(err, ErrInvalidInput) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("DeriveKey(%d bytes, %q): %v, want ErrInvalidInput naming %q", len(tc.seed), tc.project, err, tc.want)
		}
	}
}

func TestEvaluateRejects(t *testing.T) {
	nums := testNumbers(t)
	k := testKey(t, "a", "proj-1")
	good := blindedFor(t, k, nums[:3])

	notAPoint := make([]byte, 32)
	for i := range notAPoint {
		notAPoint[i] = 0xa5 // not a canonical ristretto255 encoding
	}
	identity := make([]byte, 32)
	long := append(append([]byte(nil), good[0]...), 0x5a)

	with := func(i int, b []byte) [][]byte {
		batch := append([][]byte(nil), good...)
		batch[i] = b
		return batch
	}
	oversized := make([][]byte, MaxBatch+1)
	for i := range oversized {
		oversized[i] = good[i%len(good)]
	}
	for _, tc := range []struct {
		name  string
		batch [][]byte
		want  string
		bad   []byte
	}{
		{"empty", nil, "empty batch", nil},
		{"empty slice", [][]byte{}, "empty batch", nil},
		{"oversized", oversized, fmt.Sprintf("%d elements, at most %d", MaxBatch+1, MaxBatch), nil},
		{"short", with(2, good[2][:31]), "element 2: 31 bytes, want 32", good[2][:31]},
		{"long", with(1, long), "element 1: 33 bytes", long},
		{"nil element", with(0, nil), "element 0: 0 bytes", nil},
		{"not a point", with(1, notAPoint), "element 1: not a ristretto255 element", notAPoint},
		{"identity", with(2, identity), "element 2: the identity element", identity},
		{"text", with(0, []byte(nums[5]+nums[6]+"12345678")), "element 0", []byte(nums[5])},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev, proof, err := k.Evaluate(tc.batch)
			if !errors.Is(err, ErrInvalidInput) {
				t.Fatalf("err %v, want ErrInvalidInput", err)
			}
			if ev != nil || proof != nil {
				t.Error("an error came with output")
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) {
				t.Errorf("error %q does not say %q", msg, tc.want)
			}
			if len(tc.bad) > 0 {
				for _, leak := range []string{string(tc.bad), hex.EncodeToString(tc.bad), fmt.Sprintf("%v", tc.bad), fmt.Sprintf("%q", tc.bad)} {
					if strings.Contains(msg, leak) {
						t.Errorf("error %q echoes the element's bytes", msg)
					}
				}
				if strings.Contains(msg, hex.EncodeToString(tc.bad[:4])) {
					t.Errorf("error %q echoes the element's bytes in hex", msg)
				}
			}
		})
	}

	// The good batch still evaluates.
	ev, proof, err := k.Evaluate(good)
	if err != nil || len(ev) != len(good) || len(proof) != 64 {
		t.Fatalf("good batch: %d elements, %d-byte proof, %v", len(ev), len(proof), err)
	}
	// A full batch of MaxBatch is accepted.
	if _, _, err := k.Evaluate(oversized[:MaxBatch]); err != nil {
		t.Fatalf("batch of MaxBatch: %v", err)
	}
}

// blindedFor blinds nums for k and returns the marshalled elements.
func blindedFor(t testing.TB, k *Key, nums []string) [][]byte {
	t.Helper()
	pk := new(oprf.PublicKey)
	if err := pk.UnmarshalBinary(oprf.SuiteRistretto255, k.PublicKey()); err != nil {
		t.Fatal(err)
	}
	inputs := make([][]byte, len(nums))
	for i, n := range nums {
		inputs[i] = []byte(n)
	}
	_, req, err := oprf.NewVerifiableClient(oprf.SuiteRistretto255, pk).Blind(inputs)
	if err != nil {
		t.Fatal(err)
	}
	out := make([][]byte, len(req.Elements))
	for i, e := range req.Elements {
		out[i], _ = e.MarshalBinaryCompress()
	}
	return out
}

func TestPseudonymRejects(t *testing.T) {
	nums := testNumbers(t)
	k := testKey(t, "a", "proj-1")
	n := nums[7]
	for _, bad := range []string{"", n[2:], n[:8] + "-" + n[8:], n + "0", n[:8] + "T" + n[9:], " " + n[1:]} {
		_, err := k.Pseudonym(bad)
		if !errors.Is(err, ErrInvalidInput) {
			t.Errorf("Pseudonym of a %d-character non-canonical: %v, want ErrInvalidInput", len(bad), err)
			continue
		}
		if bad != "" && strings.Contains(err.Error(), bad) {
			t.Errorf("error %q holds the input", err)
		}
	}
}

func TestPseudonymsInOrder(t *testing.T) {
	nums := testNumbers(t)[:300]
	k := testKey(t, "a", "proj-1")
	for _, workers := range []int{0, 1, 3, 16} {
		got, err := k.Pseudonyms(nums, workers)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(nums) {
			t.Fatalf("%d pseudonyms for %d numbers", len(got), len(nums))
		}
		for _, i := range []int{0, 1, 63, 64, 65, 150, 299} {
			want, _ := k.Pseudonym(nums[i])
			if got[i] != want {
				t.Errorf("workers %d: number %d out of order", workers, i)
			}
		}
	}
	if got, err := k.Pseudonyms(nil, 0); err != nil || len(got) != 0 {
		t.Errorf("no numbers: %d pseudonyms, %v", len(got), err)
	}

	bad := append([]string(nil), nums...)
	bad[200] = bad[200][:10]
	bad[250] = "x"
	_, err := k.Pseudonyms(bad, 4)
	if !errors.Is(err, ErrInvalidInput) || !strings.Contains(err.Error(), "number 200:") {
		t.Errorf("bad number at 200: %v, want ErrInvalidInput naming number 200", err)
	}
	if err != nil && strings.Contains(err.Error(), bad[200]) {
		t.Errorf("error %q holds the input", err)
	}
	if _, err := k.Pseudonyms(nums, -1); err == nil {
		t.Error("negative workers accepted")
	}
}

func TestKeyPrintsNoSecret(t *testing.T) {
	k := testKey(t, "a", "proj-1")
	secret, err := k.priv.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		fmt.Sprintf("%v", k), fmt.Sprintf("%+v", k), fmt.Sprintf("%#v", k),
		fmt.Sprintf("%v", *k), fmt.Sprintf("%+v", *k), fmt.Sprintf("%#v", *k),
	} {
		reversed := make([]byte, len(secret))
		for i, b := range secret {
			reversed[len(secret)-1-i] = b
		}
		if strings.Contains(s, hex.EncodeToString(secret)) || strings.Contains(s, hex.EncodeToString(reversed)) ||
			strings.Contains(s, fmt.Sprint(secret)) ||
			strings.Contains(s, hex.EncodeToString(testSeed("a"))) {
			t.Errorf("a formatted Key holds the secret: %.40s…", s)
		}
	}
}

func TestKeyEvaluator(t *testing.T) {
	nums := testNumbers(t)
	k := testKey(t, "a", "proj-1")
	ev := KeyEvaluator(k)
	blinded := blindedFor(t, k, nums[:2])
	if out, proof, err := ev.Evaluate(context.Background(), blinded); err != nil || len(out) != 2 || len(proof) == 0 {
		t.Fatalf("Evaluate: %d elements, %v", len(out), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := ev.Evaluate(ctx, blinded); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: %v", err)
	}
}
