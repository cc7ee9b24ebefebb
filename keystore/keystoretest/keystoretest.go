// Package keystoretest is the test suite every keystore backend passes:
// [Run] checks a [keystore.Keystore] over the backend for stable and dense
// run numbers, keyed order, unlinkability across projects, concurrency
// across goroutines and store instances, retention, holds, destruction and
// the errors after it, and the export of a mapping and a project's OPRF
// seed.
package keystoretest

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lopnr/lopnr/keystore"
	"github.com/lopnr/lopnr/linkage/personnummer"
)

// Factory prepares a fresh, empty namespace of a backend and returns a
// function that opens a new Store instance over it; every call must return
// another instance (another client, another open) over the same data.
type Factory func(t *testing.T) (open func() keystore.Store)

// Clock is a clock that tests move by hand.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a Clock set to t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now implements keystore.Clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// t0 is when the suite's projects are created.
var t0 = time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)

// Numbers returns n of Skatteverket's test personnummer (in their file's
// order, which is birth order), parsed. It finds testdata/ from the working
// directory upwards.
func Numbers(t testing.TB, n int) []personnummer.Number {
	t.Helper()
	dir, _ := os.Getwd()
	for {
		f, err := os.Open(filepath.Join(dir, "testdata", "skatteverket", "testpersonnummer.txt"))
		if err == nil {
			defer f.Close()
			p := personnummer.NewParser(t0)
			var out []personnummer.Number
			sc := bufio.NewScanner(f)
			for sc.Scan() && len(out) < n {
				out = append(out, p.Parse(sc.Text()))
			}
			if len(out) < n {
				t.Fatalf("only %d test numbers", len(out))
			}
			return out
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("testdata/skatteverket not found above the working directory")
		}
		dir = parent
	}
}

// spread picks n numbers spread over the whole list, so that birth dates
// span the centuries.
func spread(all []personnummer.Number, n int) []personnummer.Number {
	out := make([]personnummer.Number, n)
	for i := range out {
		out[i] = all[i*len(all)/n]
	}
	return out
}

type env struct {
	t     *testing.T
	ctx   context.Context
	open  func() keystore.Store
	clock *Clock
	ks    *keystore.Keystore
	seed  uint64
}

func newEnv(t *testing.T, factory Factory) *env {
	e := &env{t: t, ctx: context.Background(), open: factory(t), clock: NewClock(t0), seed: 1}
	e.ks = e.keystore()
	return e
}

// keystore returns a new Keystore over a new Store instance.
func (e *env) keystore() *keystore.Keystore {
	e.seed++
	return keystore.New(e.open(), keystore.Options{Clock: e.clock, Rand: rand.NewChaCha8(seedBytes(e.seed))})
}

func seedBytes(s uint64) (b [32]byte) {
	for i := range b {
		b[i] = byte(s >> (8 * (i % 8)))
	}
	return b
}

func (e *env) project(id string, retain time.Duration) {
	e.t.Helper()
	if _, err := e.ks.CreateProject(e.ctx, keystore.ProjectSpec{ID: id, EPMDnr: "2026-00001-01", RetainUntil: e.clock.Now().Add(retain)}); err != nil {
		e.t.Fatalf("CreateProject(%s): %v", id, err)
	}
}

func (e *env) assign(id string, ns []personnummer.Number) []keystore.RunNumber {
	e.t.Helper()
	r, err := e.ks.Assign(e.ctx, id, ns)
	if err != nil {
		e.t.Fatalf("Assign(%s, %d numbers): %v", id, len(ns), err)
	}
	if len(r) != len(ns) {
		e.t.Fatalf("Assign returned %d run numbers for %d numbers", len(r), len(ns))
	}
	return r
}

// Run runs the suite against the backend that factory makes.
func Run(t *testing.T, factory Factory) {
	all := Numbers(t, 41493)
	t.Run("StableAndDense", func(t *testing.T) { testStableAndDense(t, newEnv(t, factory), all) })
	t.Run("KeyedOrder", func(t *testing.T) { testKeyedOrder(t, factory, all) })
	t.Run("UnlinkableAcrossProjects", func(t *testing.T) { testUnlinkable(t, newEnv(t, factory), all) })
	t.Run("Concurrency", func(t *testing.T) { testConcurrency(t, newEnv(t, factory), all) })
	t.Run("FailedWriteLeavesNoHalfMapping", func(t *testing.T) { testFailedWrite(t, newEnv(t, factory), all) })
	t.Run("Reidentify", func(t *testing.T) { testReidentify(t, newEnv(t, factory), all) })
	t.Run("MappingsAndOPRFSeed", func(t *testing.T) { testMappings(t, newEnv(t, factory), all) })
	t.Run("RetentionAndDestruction", func(t *testing.T) { testRetention(t, newEnv(t, factory), all) })
	t.Run("Holds", func(t *testing.T) { testHolds(t, newEnv(t, factory), all) })
	t.Run("ExtendRetention", func(t *testing.T) { testExtend(t, newEnv(t, factory), all) })
	t.Run("Errors", func(t *testing.T) { testErrors(t, newEnv(t, factory), all) })
	t.Run("ServiceRecords", func(t *testing.T) { testServiceRecords(t, newEnv(t, factory)) })
}

func testStableAndDense(t *testing.T, e *env, all []personnummer.Number) {
	e.project("p1", 90*24*time.Hour)
	ns := spread(all, 1000)
	first := e.assign("p1", ns[:600])
	checkDense(t, first, 1, 600)
	again := e.assign("p1", ns[:600])
	if !slices.Equal(first, again) {
		t.Fatal("a second Assign of the same persons changed their LopNr")
	}
	// Overlapping: 400..599 keep theirs, 600..999 get 601..1000; a person
	// given twice gets one LopNr.
	batch := append(slices.Clone(ns[400:]), ns[700], ns[450])
	second := e.assign("p1", batch)
	for i := 0; i < 200; i++ {
		if second[i] != first[400+i] {
			t.Fatalf("an existing person's LopNr changed from %d to %d", first[400+i], second[i])
		}
	}
	checkDense(t, second[200:600], 601, 1000)
	if second[600] != second[300] || second[601] != second[50] {
		t.Fatal("a person given twice in one call got two LopNr")
	}
	// A new Keystore over a new Store instance sees the same mapping.
	other := e.keystore()
	looked, err := other.Lookup(e.ctx, "p1", ns)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(looked[:600], first) || !slices.Equal(looked[600:], second[200:600]) {
		t.Fatal("Lookup through another store instance disagrees with Assign")
	}
	unknown, err := other.Lookup(e.ctx, "p1", all[len(all)-3:])
	if err != nil || slices.ContainsFunc(unknown, func(r keystore.RunNumber) bool { return r != 0 }) {
		t.Fatalf("Lookup of unknown persons: %v, %v; want zeros", unknown, err)
	}
	if n, err := other.Persons(e.ctx, "p1"); err != nil || n != 1000 {
		t.Fatalf("Persons = %d, %v; want 1000", n, err)
	}
}

// checkDense checks that rs is a permutation of lo..hi.
func checkDense(t *testing.T, rs []keystore.RunNumber, lo, hi keystore.RunNumber) {
	t.Helper()
	sorted := slices.Clone(rs)
	slices.Sort(sorted)
	for i, r := range sorted {
		if r != lo+keystore.RunNumber(i) {
			t.Fatalf("run numbers are not %d..%d: position %d holds %d", lo, hi, i, r)
		}
	}
	if len(sorted) != int(hi-lo+1) {
		t.Fatalf("%d run numbers, want %d", len(sorted), hi-lo+1)
	}
}

func testKeyedOrder(t *testing.T, factory Factory, all []personnummer.Number) {
	open := factory(t)
	const seed = 42
	ks := keystore.New(open(), keystore.Options{Clock: NewClock(t0), Rand: rand.NewChaCha8(seedBytes(seed))})
	ctx := context.Background()
	if _, err := ks.CreateProject(ctx, keystore.ProjectSpec{ID: "ordered", EPMDnr: "2026-00002-01"}); err != nil {
		t.Fatal(err)
	}
	// The file is in birth order.
	ns := spread(all, 5000)
	rs, err := ks.Assign(ctx, "ordered", ns)
	if err != nil {
		t.Fatal(err)
	}
	// Known answer: the project's order key is the first 32 bytes of the
	// random source, and LopNr follow HMAC-SHA256(order_key, canonical).
	var orderKey [32]byte
	rand.NewChaCha8(seedBytes(seed)).Read(orderKey[:])
	type tagged struct {
		tag string
		i   int
	}
	want := make([]tagged, len(ns))
	for i, n := range ns {
		mac := hmac.New(sha256.New, orderKey[:])
		mac.Write([]byte(n.Canonical()))
		want[i] = tagged{string(mac.Sum(nil)), i}
	}
	slices.SortFunc(want, func(a, b tagged) int { return strings.Compare(a.tag, b.tag) })
	for pos, w := range want {
		if rs[w.i] != keystore.RunNumber(pos+1) {
			t.Fatalf("LopNr %d is not in keyed order: want %d", rs[w.i], pos+1)
		}
	}
	// And so LopNr order says nothing of birth order: Spearman's rank
	// correlation between the two is near zero (|rho| < 0.05; for 5,000
	// unrelated ranks its standard deviation is 0.014).
	if rho := spearman(rs); math.Abs(rho) > 0.05 {
		t.Fatalf("LopNr correlate with birth order: rho = %.3f", rho)
	}
}

// spearman returns the rank correlation between position and value of a
// permutation of 1..n.
func spearman(rs []keystore.RunNumber) float64 {
	n := float64(len(rs))
	var d2 float64
	for i, r := range rs {
		d := float64(i+1) - float64(r)
		d2 += d * d
	}
	return 1 - 6*d2/(n*(n*n-1))
}

func testUnlinkable(t *testing.T, e *env, all []personnummer.Number) {
	e.project("a", 90*24*time.Hour)
	e.project("b", 90*24*time.Hour)
	ns := spread(all, 2000)
	ra, rb := e.assign("a", ns), e.assign("b", ns)
	same := 0
	for i := range ra {
		if ra[i] == rb[i] {
			same++
		}
	}
	// Unrelated permutations agree in about one place; 10 is far out.
	if same > 10 {
		t.Fatalf("%d of %d persons have the same LopNr in two projects", same, len(ns))
	}
	pairs := make([]keystore.RunNumber, len(ns))
	for i := range ra {
		pairs[ra[i]-1] = rb[i]
	}
	if rho := spearman(pairs); math.Abs(rho) > 0.1 {
		t.Fatalf("LopNr of two projects correlate: rho = %.3f", rho)
	}
}

func testConcurrency(t *testing.T, e *env, all []personnummer.Number) {
	e.project("busy", 90*24*time.Hour)
	ns := spread(all, 3000)
	stores := []*keystore.Keystore{e.keystore(), e.keystore()}
	const workers = 8
	results := make([]map[[12]byte]keystore.RunNumber, workers)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ks := stores[w%2]
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			results[w] = map[[12]byte]keystore.RunNumber{}
			for batch := 0; batch < 4; batch++ {
				// Overlapping random subsets of the same 3,000 persons.
				var sub []personnummer.Number
				for _, i := range rng.Perm(len(ns))[:300] {
					sub = append(sub, ns[i])
				}
				rs, err := ks.Assign(e.ctx, "busy", sub)
				if err != nil {
					errs <- err
					return
				}
				for i, n := range sub {
					if prev, ok := results[w][n.Key()]; ok && prev != rs[i] {
						errs <- fmt.Errorf("worker %d: one person got LopNr %d and %d", w, prev, rs[i])
						return
					}
					results[w][n.Key()] = rs[i]
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	final, err := e.keystore().Lookup(e.ctx, "busy", ns)
	if err != nil {
		t.Fatal(err)
	}
	byNumber := map[[12]byte]keystore.RunNumber{}
	var assigned []keystore.RunNumber
	for i, n := range ns {
		if final[i] != 0 {
			byNumber[n.Key()] = final[i]
			assigned = append(assigned, final[i])
		}
	}
	checkDense(t, assigned, 1, keystore.RunNumber(len(assigned)))
	for w, res := range results {
		for key, r := range res {
			if byNumber[key] != r {
				t.Fatalf("worker %d was told LopNr %d for a person whose stored LopNr is %d", w, r, byNumber[key])
			}
		}
	}
}

// failingStore fails every write of a head record.
type failingStore struct{ keystore.Store }

func (f failingStore) Write(ctx context.Context, path string, data []byte, cas int, meta keystore.PathMeta) (int, error) {
	if strings.HasSuffix(path, "/head") {
		return 0, errors.New("injected failure")
	}
	return f.Store.Write(ctx, path, data, cas, meta)
}

func testFailedWrite(t *testing.T, e *env, all []personnummer.Number) {
	e.project("fragile", 90*24*time.Hour)
	ns := spread(all, 500)
	e.assign("fragile", ns[:100])
	broken := keystore.New(failingStore{e.open()}, keystore.Options{Clock: e.clock})
	if _, err := broken.Assign(e.ctx, "fragile", ns); err == nil {
		t.Fatal("Assign succeeded although the head could not be written")
	}
	store := e.open()
	paths, err := store.List(e.ctx, "projects/fragile/map/")
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 1 {
		t.Fatalf("%d mapping chunks after a failed assignment, want the 1 from the first", len(paths))
	}
	rs := e.assign("fragile", ns)
	checkDense(t, rs, 1, 500)
}

func testReidentify(t *testing.T, e *env, all []personnummer.Number) {
	e.project("r", 90*24*time.Hour)
	ns := spread(all, 120_000/100)
	rs := e.assign("r", ns)
	for _, i := range []int{0, 17, len(ns) - 1} {
		n, err := e.keystore().Reidentify(e.ctx, "r", rs[i], "check of a reported error, case 17")
		if err != nil {
			t.Fatal(err)
		}
		if n.Canonical() != ns[i].Canonical() || n.Kind() != ns[i].Kind() {
			t.Fatalf("Reidentify(%d) returned another person", rs[i])
		}
	}
	if _, err := e.ks.Reidentify(e.ctx, "r", rs[0], " "); !errors.Is(err, keystore.ErrInvalidArgument) {
		t.Fatalf("Reidentify without a reason: %v", err)
	}
	if _, err := e.ks.Reidentify(e.ctx, "r", keystore.RunNumber(len(ns)+1), "why"); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("Reidentify of an unassigned LopNr: %v", err)
	}
}

func testMappings(t *testing.T, e *env, all []personnummer.Number) {
	e.project("m", 90*24*time.Hour)
	e.project("m2", 365*24*time.Hour)
	ns := spread(all, 1500)
	// Two calls, overlapping: two chunks, the second from LopNr 1001.
	want := map[string]keystore.RunNumber{}
	for _, batch := range [][]personnummer.Number{ns[:1000], ns[600:]} {
		for i, r := range e.assign("m", batch) {
			want[batch[i].Canonical()] = r
		}
	}
	e.assign("m2", ns[:10])

	// Through the Keystore that assigned (its cache) and a fresh one.
	for _, ks := range []*keystore.Keystore{e.ks, e.keystore()} {
		seen := map[string]bool{}
		var next keystore.RunNumber = 1
		err := ks.Mappings(e.ctx, "m", func(canonical string, r keystore.RunNumber) error {
			if r != next {
				return fmt.Errorf("LopNr %d where %d was due: not in LopNr order", r, next)
			}
			next++
			if seen[canonical] {
				return fmt.Errorf("LopNr %d: a person given twice", r)
			}
			seen[canonical] = true
			if w, ok := want[canonical]; !ok || w != r {
				return fmt.Errorf("LopNr %d: not the person Assign gave it to", r)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("Mappings: %v", err)
		}
		if len(seen) != len(ns) {
			t.Fatalf("Mappings gave %d persons, want %d", len(seen), len(ns))
		}
	}

	// An error from fn stops it and comes back.
	stop := errors.New("stop here")
	calls := 0
	err := e.keystore().Mappings(e.ctx, "m", func(string, keystore.RunNumber) error {
		if calls++; calls == 10 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 10 {
		t.Fatalf("Mappings with fn failing at the 10th person: %v after %d calls", err, calls)
	}
	if err := e.ks.Mappings(e.ctx, "nosuch", func(string, keystore.RunNumber) error { return nil }); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("Mappings of an unknown project: %v", err)
	}

	// The OPRF seed: 32 bytes, the same through every Keystore, another
	// for another project.
	seed, err := e.ks.OPRFSeed(e.ctx, "m")
	if err != nil || len(seed) != 32 {
		t.Fatalf("OPRFSeed: %d bytes, %v; want 32", len(seed), err)
	}
	if again, err := e.keystore().OPRFSeed(e.ctx, "m"); err != nil || !slices.Equal(again, seed) {
		t.Fatalf("OPRFSeed through another Keystore differs (%v)", err)
	}
	if again, err := e.ks.OPRFSeed(e.ctx, "m"); err != nil || !slices.Equal(again, seed) {
		t.Fatalf("a second OPRFSeed differs (%v)", err)
	}
	if other, err := e.ks.OPRFSeed(e.ctx, "m2"); err != nil || slices.Equal(other, seed) {
		t.Fatalf("two projects have the same OPRF seed (%v)", err)
	}

	calls = 0
	count := func(string, keystore.RunNumber) error { calls++; return nil }
	// Past retention: refused.
	e.clock.Advance(90*24*time.Hour + time.Hour)
	if err := e.ks.Mappings(e.ctx, "m", count); !errors.Is(err, keystore.ErrExpired) || !strings.Contains(err.Error(), "2027-02-23") {
		t.Fatalf("Mappings past retain_until: %v; want ErrExpired naming 2027-02-23", err)
	}
	if _, err := e.ks.OPRFSeed(e.ctx, "m"); !errors.Is(err, keystore.ErrExpired) {
		t.Fatalf("OPRFSeed past retain_until: %v; want ErrExpired", err)
	}
	// Destroyed: refused, naming the date, through the cache and without.
	if _, err := e.ks.Destroy(e.ctx, "m"); err != nil {
		t.Fatal(err)
	}
	for _, ks := range []*keystore.Keystore{e.ks, e.keystore()} {
		for name, err := range map[string]error{
			"Mappings": ks.Mappings(e.ctx, "m", count),
			"OPRFSeed": func() error { _, err := ks.OPRFSeed(e.ctx, "m"); return err }(),
		} {
			var de *keystore.DestroyedError
			if !errors.Is(err, keystore.ErrDestroyed) || !errors.As(err, &de) || !strings.Contains(err.Error(), "2027-02-23") {
				t.Fatalf("%s after destruction: %v; want ErrDestroyed naming 2027-02-23", name, err)
			}
		}
	}
	if calls != 0 {
		t.Fatalf("fn was called %d times for a project past retention or destroyed", calls)
	}
	// The other project still answers.
	if err := e.ks.Mappings(e.ctx, "m2", count); err != nil || calls != 10 {
		t.Fatalf("Mappings of the project within retention: %d persons, %v; want 10", calls, err)
	}
}

func testRetention(t *testing.T, e *env, all []personnummer.Number) {
	e.project("short", 90*24*time.Hour)
	e.project("long", 365*24*time.Hour)
	ns := spread(all, 70_000/100)
	rs := e.assign("short", ns)
	e.assign("long", ns[:10])

	if got, err := e.ks.Sweep(e.ctx); err != nil || len(got) != 0 {
		t.Fatalf("Sweep before retention ended: %v, %v", got, err)
	}
	e.clock.Advance(90*24*time.Hour + time.Hour)
	if _, err := e.ks.Assign(e.ctx, "short", ns[:1]); !errors.Is(err, keystore.ErrExpired) || !strings.Contains(err.Error(), "2027-02-23") {
		t.Fatalf("Assign past retain_until: %v; want ErrExpired naming 2027-02-23", err)
	}
	receipts, err := e.keystore().Sweep(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(receipts) != 1 {
		t.Fatalf("%d receipts, want 1 (the project past retention)", len(receipts))
	}
	r := receipts[0]
	if r.Project != "short" || !r.DestroyedAt.Equal(e.clock.Now()) || r.Mappings != int64(len(ns)) || r.Paths < 4 || len(r.Digest) != 64 {
		t.Fatalf("receipt %+v", r)
	}
	store := e.open()
	if left, err := store.List(e.ctx, "projects/short/"); err != nil || len(left) != 0 {
		t.Fatalf("after destruction %d paths remain (%v)", len(left), err)
	}
	for name, call := range map[string]func(*keystore.Keystore) error{
		"Assign":     func(ks *keystore.Keystore) error { _, err := ks.Assign(e.ctx, "short", ns[:1]); return err },
		"Lookup":     func(ks *keystore.Keystore) error { _, err := ks.Lookup(e.ctx, "short", ns[:1]); return err },
		"Reidentify": func(ks *keystore.Keystore) error { _, err := ks.Reidentify(e.ctx, "short", rs[0], "why"); return err },
		"Extend": func(ks *keystore.Keystore) error {
			_, err := ks.ExtendRetention(e.ctx, "short", t0.AddDate(2, 0, 0), "why")
			return err
		},
	} {
		for _, ks := range []*keystore.Keystore{e.ks, e.keystore()} {
			err := call(ks)
			var de *keystore.DestroyedError
			if !errors.Is(err, keystore.ErrDestroyed) || !errors.As(err, &de) || !strings.Contains(err.Error(), `"short"`) || !strings.Contains(err.Error(), "2027-02-23") {
				t.Fatalf("%s after destruction: %v; want ErrDestroyed naming the project and 2027-02-23", name, err)
			}
		}
	}
	if _, err := e.ks.CreateProject(e.ctx, keystore.ProjectSpec{ID: "short", EPMDnr: "x"}); !errors.Is(err, keystore.ErrProjectExists) {
		t.Fatalf("re-creating a destroyed project: %v", err)
	}
	if got, err := e.ks.Sweep(e.ctx); err != nil || len(got) != 0 {
		t.Fatalf("a second sweep: %v, %v", got, err)
	}
	// The other project is untouched.
	if got, err := e.ks.Lookup(e.ctx, "long", ns[:10]); err != nil || slices.Contains(got, 0) {
		t.Fatalf("the project within retention lost its mapping: %v", err)
	}
}

func testHolds(t *testing.T, e *env, all []personnummer.Number) {
	e.project("held", 10*24*time.Hour)
	ns := spread(all, 50)
	e.assign("held", ns)
	if _, err := e.ks.Hold(e.ctx, "held", ""); !errors.Is(err, keystore.ErrInvalidArgument) {
		t.Fatalf("Hold without a reason: %v", err)
	}
	if _, err := e.ks.Hold(e.ctx, "held", "supervisory authority inquiry 2026/77"); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(30 * 24 * time.Hour)
	if got, err := e.ks.Sweep(e.ctx); err != nil || len(got) != 0 {
		t.Fatalf("Sweep destroyed a project under hold: %v, %v", got, err)
	}
	if _, err := e.ks.Lookup(e.ctx, "held", ns); err != nil {
		t.Fatalf("Lookup under hold past retention: %v", err)
	}
	if _, err := e.ks.Destroy(e.ctx, "held"); !errors.Is(err, keystore.ErrHeld) {
		t.Fatalf("Destroy under hold: %v", err)
	}
	p, err := e.ks.ReleaseHold(e.ctx, "held", "inquiry closed")
	if err != nil || p.Hold || len(p.Changes) != 2 {
		t.Fatalf("ReleaseHold: %+v, %v", p, err)
	}
	if got, err := e.ks.Sweep(e.ctx); err != nil || len(got) != 1 {
		t.Fatalf("Sweep after the hold was released: %v, %v", got, err)
	}
}

func testExtend(t *testing.T, e *env, all []personnummer.Number) {
	e.project("ext", 90*24*time.Hour)
	e.assign("ext", spread(all, 20))
	p, _ := e.ks.Project(e.ctx, "ext")
	if _, err := e.ks.ExtendRetention(e.ctx, "ext", p.RetainUntil.AddDate(0, 3, 0), ""); !errors.Is(err, keystore.ErrInvalidArgument) {
		t.Fatalf("extend without a reason: %v", err)
	}
	if _, err := e.ks.ExtendRetention(e.ctx, "ext", p.RetainUntil.AddDate(0, -1, 0), "shorter"); !errors.Is(err, keystore.ErrInvalidArgument) {
		t.Fatalf("extend to an earlier date: %v", err)
	}
	until := p.RetainUntil.AddDate(0, 3, 0)
	p, err := e.ks.ExtendRetention(e.ctx, "ext", until, "researcher's follow-up approved, dnr 2026-00009")
	if err != nil || !p.RetainUntil.Equal(until) || len(p.Changes) != 1 || p.Changes[0].Reason == "" {
		t.Fatalf("ExtendRetention: %+v, %v", p, err)
	}
	e.clock.Advance(100 * 24 * time.Hour)
	if got, err := e.ks.Sweep(e.ctx); err != nil || len(got) != 0 {
		t.Fatalf("Sweep after the old date but before the new: %v, %v", got, err)
	}
	e.clock.Advance(100 * 24 * time.Hour)
	if got, err := e.ks.Sweep(e.ctx); err != nil || len(got) != 1 {
		t.Fatalf("Sweep after the new date: %v, %v", got, err)
	}
}

func testErrors(t *testing.T, e *env, all []personnummer.Number) {
	if _, err := e.ks.Lookup(e.ctx, "nosuch", all[:1]); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("unknown project: %v", err)
	}
	for _, id := range []string{"", "../etc", "Big", "a/b", strings.Repeat("x", 65)} {
		if _, err := e.ks.CreateProject(e.ctx, keystore.ProjectSpec{ID: id, EPMDnr: "x"}); !errors.Is(err, keystore.ErrInvalidArgument) {
			t.Fatalf("project id %q: %v", id, err)
		}
	}
	if _, err := e.ks.CreateProject(e.ctx, keystore.ProjectSpec{ID: "noepm"}); !errors.Is(err, keystore.ErrInvalidArgument) {
		t.Fatalf("no EPM dnr: %v", err)
	}
	e.project("dup", time.Hour)
	if _, err := e.ks.CreateProject(e.ctx, keystore.ProjectSpec{ID: "dup", EPMDnr: "x"}); !errors.Is(err, keystore.ErrProjectExists) {
		t.Fatalf("duplicate project: %v", err)
	}
	bad := personnummer.Parse("not a number", t0)
	_, err := e.ks.Assign(e.ctx, "dup", []personnummer.Number{all[0], bad})
	if !errors.Is(err, keystore.ErrInvalidArgument) || !strings.Contains(err.Error(), "numbers[1]") {
		t.Fatalf("unlinkable number: %v", err)
	}
	if strings.Contains(err.Error(), all[0].Canonical()) {
		t.Fatal("error holds an identity number")
	}
	if n, _ := e.ks.Persons(e.ctx, "dup"); n != 0 {
		t.Fatalf("a refused Assign stored %d persons", n)
	}
}

// Generated returns n distinct valid personnummer made at run time, for
// benchmarks beyond the 41,493 test numbers. They follow the rules but are
// not test numbers: they exist only in memory and are never written to a
// file, a log or the repository.
func Generated(n int) []personnummer.Number {
	p := personnummer.NewParser(t0)
	out := make([]personnummer.Number, 0, n)
	day := time.Date(1930, 1, 1, 0, 0, 0, 0, time.UTC)
	buf := make([]byte, 0, 12)
	for len(out) < n {
		for serial := 1; serial <= 999 && len(out) < n; serial += 7 {
			buf = day.AppendFormat(buf[:0], "20060102")
			buf = append(buf, byte('0'+serial/100), byte('0'+serial/10%10), byte('0'+serial%10))
			sum := 0
			for i, c := range buf[2:11] {
				v := int(c - '0')
				if i%2 == 0 {
					if v *= 2; v > 9 {
						v -= 9
					}
				}
				sum += v
			}
			buf = append(buf, byte('0'+(10-sum%10)%10))
			out = append(out, p.ParseBytes(buf))
		}
		day = day.AddDate(0, 0, 1)
	}
	return out
}

// testServiceRecords: a service key is created once, whoever asks first
// and however many ask at once; service records change by check-and-set
// without losing a writer's change; and no project's destruction reaches
// either.
func testServiceRecords(t *testing.T, e *env) {
	const workers = 8
	var created sync.WaitGroup
	keys := make([][]byte, workers)
	errs := make([]error, workers)
	stores := make([]*keystore.Keystore, workers) // another Store instance each
	for w := range stores {
		stores[w] = e.keystore()
	}
	for w := range workers {
		created.Add(1)
		go func() {
			defer created.Done()
			keys[w], errs[w] = stores[w].ServiceKey(e.ctx, "audit-signer", func() ([]byte, error) { return []byte(fmt.Sprint("key of ", w)), nil })
		}()
	}
	created.Wait()
	for w := range workers {
		if errs[w] != nil {
			t.Fatalf("ServiceKey: %v", errs[w])
		}
		if string(keys[w]) != string(keys[0]) || len(keys[w]) == 0 {
			t.Fatalf("ServiceKey gave %q and %q: two keys for one name", keys[0], keys[w])
		}
	}
	again, err := e.keystore().ServiceKey(e.ctx, "audit-signer", func() ([]byte, error) { return nil, errors.New("created twice") })
	if err != nil || string(again) != string(keys[0]) {
		t.Fatalf("ServiceKey again = %q, %v; want %q", again, err, keys[0])
	}
	if _, err := e.ks.ServiceKey(e.ctx, "../projects/p1", nil); !errors.Is(err, keystore.ErrInvalidArgument) {
		t.Fatalf("ServiceKey with a path for a name: %v, want ErrInvalidArgument", err)
	}
	if _, err := e.ks.ServiceRecord(e.ctx, "counter"); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("ServiceRecord before any write: %v, want ErrNotFound", err)
	}

	// Every writer's increment counts, across Store instances.
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[w] = stores[w].UpdateServiceRecord(e.ctx, "counter", func(old []byte) ([]byte, error) {
				n := 0
				if old != nil {
					fmt.Sscan(string(old), &n)
				}
				return []byte(fmt.Sprint(n + 1)), nil
			})
		}()
	}
	wg.Wait()
	for w := range workers {
		if errs[w] != nil {
			t.Fatalf("UpdateServiceRecord: %v", errs[w])
		}
	}
	if b, err := e.keystore().ServiceRecord(e.ctx, "counter"); err != nil || string(b) != fmt.Sprint(workers) {
		t.Fatalf("counter = %q, %v; want %d", b, err, workers)
	}
	// A change that returns nil keeps the record.
	if err := e.ks.UpdateServiceRecord(e.ctx, "counter", func([]byte) ([]byte, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	if b, _ := e.ks.ServiceRecord(e.ctx, "counter"); string(b) != fmt.Sprint(workers) {
		t.Fatalf("counter = %q after a change that kept it", b)
	}

	// A project of the same name, destroyed, leaves them alone; and they
	// are not projects.
	e.project("audit-signer", time.Hour)
	e.clock.Advance(2 * time.Hour)
	if due, err := e.ks.Due(e.ctx); err != nil || !slices.Equal(due, []string{"audit-signer"}) {
		t.Fatalf("Due = %v, %v; want the one expired project", due, err)
	}
	if _, err := e.ks.Sweep(e.ctx); err != nil {
		t.Fatal(err)
	}
	if ids, err := e.ks.Projects(e.ctx); err != nil || len(ids) != 0 {
		t.Fatalf("Projects = %v, %v; want none", ids, err)
	}
	if b, err := e.keystore().ServiceKey(e.ctx, "audit-signer", nil); err != nil || string(b) != string(keys[0]) {
		t.Fatalf("the service key after a project of its name was destroyed: %q, %v", b, err)
	}
	if b, err := e.keystore().ServiceRecord(e.ctx, "counter"); err != nil || string(b) != fmt.Sprint(workers) {
		t.Fatalf("the service record after a sweep: %q, %v", b, err)
	}
}
