package vault_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/lopnr/lopnr/keystore"
	"github.com/lopnr/lopnr/keystore/keystoretest"
)

// BenchmarkMillion assigns 1,000,000 new persons in one call, then looks
// them all up again with a fresh Keystore (nothing cached), against the
// OpenBao dev server with the least-privilege token. Run it with
//
//	go run ./deploy/dev/devstack run -- go test -run '^$' -bench Million -benchtime 1x ./keystore/vault
//
// Goals: assign at most 10 s, look up at most 3 s.
func BenchmarkMillion(b *testing.B) {
	c, env := root(b)
	token := policyToken(b, c)
	ns := keystoretest.Generated(1_000_000)
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		prefix := fmt.Sprintf("lopnr/bench-%d", time.Now().UnixNano())
		ks := keystore.New(newStore(b, env, token, prefix), keystore.Options{})
		if _, err := ks.CreateProject(ctx, keystore.ProjectSpec{ID: "million", EPMDnr: "2026-1"}); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		rs, err := ks.Assign(ctx, "million", ns)
		if err != nil {
			b.Fatal(err)
		}
		assign := time.Since(start)

		fresh := keystore.New(newStore(b, env, token, prefix), keystore.Options{})
		start = time.Now()
		got, err := fresh.Lookup(ctx, "million", ns)
		if err != nil {
			b.Fatal(err)
		}
		lookup := time.Since(start)
		for j := range rs {
			if got[j] != rs[j] {
				b.Fatalf("lookup disagrees with assign at %d", j)
			}
		}
		b.ReportMetric(assign.Seconds(), "assign-s")
		b.ReportMetric(lookup.Seconds(), "lookup-s")
		if _, err := fresh.Destroy(ctx, "million"); err != nil {
			b.Fatal(err)
		}
	}
}
