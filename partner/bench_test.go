package partner

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/cloudflare/circl/oprf"
)

// BenchmarkEvaluate measures the service's side: one Key.Evaluate of a
// batch of 1000 blinded elements (unmarshal, evaluate, DLEQ proof, marshal)
// on one goroutine.
func BenchmarkEvaluate(b *testing.B) {
	const batch = 1000
	nums := testNumbers(b)
	k := testKey(b, "bench", "proj-bench")
	blinded := blindedFor(b, k, nums[:batch])
	for b.Loop() {
		if _, _, err := k.Evaluate(blinded); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)*batch/b.Elapsed().Seconds(), "elements/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/batch, "ns/element")
}

// BenchmarkEvaluateCircl is the baseline of BenchmarkEvaluate: circl's
// VerifiableServer.Evaluate of the same batch, unmarshalling and
// marshalling included, which proves with a scalar multiplication per
// element where Key.Evaluate has one multi-scalar multiplication.
func BenchmarkEvaluateCircl(b *testing.B) {
	const batch = 1000
	nums := testNumbers(b)
	k := testKey(b, "bench", "proj-bench")
	blinded := blindedFor(b, k, nums[:batch])
	g := suite.Group()
	for b.Loop() {
		req := &oprf.EvaluationRequest{Elements: make([]oprf.Blinded, batch)}
		for i, data := range blinded {
			req.Elements[i] = g.NewElement()
			if err := req.Elements[i].UnmarshalBinary(data); err != nil {
				b.Fatal(err)
			}
		}
		ev, err := k.server.Evaluate(req)
		if err != nil {
			b.Fatal(err)
		}
		for _, e := range ev.Elements {
			e.MarshalBinaryCompress()
		}
		ev.Proof.MarshalBinary()
	}
	b.ReportMetric(float64(b.N)*batch/b.Elapsed().Seconds(), "elements/s")
}

// BenchmarkPseudonym measures the service's direct computation of one
// pseudonym (FullEvaluate) on one goroutine.
func BenchmarkPseudonym(b *testing.B) {
	nums := testNumbers(b)
	k := testKey(b, "bench", "proj-bench")
	i := 0
	for b.Loop() {
		if _, err := k.Pseudonym(nums[i%len(nums)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "numbers/s")
}

// BenchmarkBlindFile measures the partner's round trip per distinct number:
// two passes over a file of distinct test numbers, blinding, evaluation
// through KeyEvaluator (the service's work, in process), proof verification
// and finalizing, on one worker and on GOMAXPROCS.
func BenchmarkBlindFile(b *testing.B) {
	const distinct = 4000
	nums := testNumbers(b)
	k := testKey(b, "bench", "proj-bench")
	var sb strings.Builder
	sb.WriteString("rad;personnummer;diagnos\n")
	for i, n := range nums[:distinct] {
		fmt.Fprintf(&sb, "%d;%s;I21\n", i+1, n)
	}
	path := filepath.Join(b.TempDir(), "partner.csv")
	if err := os.WriteFile(path, []byte(sb.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	for _, workers := range []int{1, runtime.GOMAXPROCS(0)} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			var out bytes.Buffer
			for b.Loop() {
				out.Reset()
				rep, err := BlindFile(context.Background(), path, &out, k.PublicKey(), KeyEvaluator(k),
					BlindOptions{IdentityColumn: "personnummer", RefDate: refDate, Workers: workers})
				if err != nil {
					b.Fatal(err)
				}
				if rep.Distinct != distinct {
					b.Fatalf("%d distinct numbers, want %d", rep.Distinct, distinct)
				}
			}
			b.ReportMetric(float64(b.N)*distinct/b.Elapsed().Seconds(), "numbers/s")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/distinct, "ns/number")
		})
	}
}
