package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lopnr/lopnr/server/internal/seal"
)

// testSeal seals the job records of every test.
var testSeal = func() *seal.Sealer {
	k, err := seal.NewKey()
	if err != nil {
		panic(err)
	}
	s, err := seal.New(k)
	if err != nil {
		panic(err)
	}
	return s
}()

// waitFor polls until cond holds or fails the test after a minute: a
// bound for a hung test, never a timing the test measures.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func state(r *Runner, id string) State {
	j, _ := r.Get(id)
	return j.State
}

func TestRunsWatchesAndLimits(t *testing.T) {
	release := make(chan struct{})
	var running, most atomic.Int32
	r, err := Open(Options{Seal: testSeal, Dir: t.TempDir(), Limit: 2, Work: func(ctx context.Context, j Job, report func(Event)) (string, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		report(Event{Stage: "ingest", Source: "par", Rows: 10})
		select {
		case <-release:
		case <-ctx.Done():
			return "", ctx.Err()
		}
		if string(j.Spec) == "fail" {
			return "", errors.New("report: the cohort is empty")
		}
		return "delivery-" + j.ID, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var ids []string
	for _, spec := range []string{"a", "b", "c", "fail"} {
		j, err := r.Submit("p1", "CN=anna", []byte(spec))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	events, err := r.Watch(ids[0])
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two running jobs", func() bool { return running.Load() == 2 })
	time.Sleep(50 * time.Millisecond)
	if most.Load() != 2 {
		t.Fatalf("%d jobs ran at once, limit 2", most.Load())
	}
	close(release)
	var got []Event
	for e := range events {
		got = append(got, e)
	}
	if len(got) < 2 || got[len(got)-1].State != Succeeded {
		t.Fatalf("events %+v: want progress ending in succeeded", got)
	}
	sawProgress := false
	for _, e := range got {
		sawProgress = sawProgress || (e.Stage == "ingest" && e.Rows == 10)
	}
	if !sawProgress {
		t.Errorf("no progress event in %+v", got)
	}
	waitFor(t, "all finished", func() bool { return state(r, ids[3]).Final() && state(r, ids[2]).Final() })
	if j, _ := r.Get(ids[0]); j.Result != "delivery-"+ids[0] || j.Finished.IsZero() {
		t.Errorf("job %+v", j)
	}
	if j, _ := r.Get(ids[3]); j.State != Failed || j.Error != "report: the cohort is empty" {
		t.Errorf("failing job %+v", j)
	}
	if l := r.List("p1"); len(l) != 4 || len(r.List("p2")) != 0 {
		t.Errorf("list: %d", len(l))
	}
}

func TestCancelAtAnyStage(t *testing.T) {
	started := make(chan struct{}, 1)
	r, err := Open(Options{Seal: testSeal, Dir: t.TempDir(), Limit: 1, Work: func(ctx context.Context, j Job, report func(Event)) (string, error) {
		started <- struct{}{}
		<-ctx.Done()
		return "", ctx.Err()
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	a, _ := r.Submit("p", "x", nil)
	b, _ := r.Submit("p", "x", nil) // queued behind a
	<-started
	if err := r.Cancel(b.ID); err != nil {
		t.Fatal(err)
	}
	if err := r.Cancel(a.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both cancelled", func() bool { return state(r, a.ID) == Cancelled && state(r, b.ID) == Cancelled })
	if err := r.Cancel(a.ID); !errors.Is(err, ErrFinal) {
		t.Errorf("cancel of a finished job: %v", err)
	}
	if _, err := r.Get("nosuch"); !errors.Is(err, ErrNotFound) {
		t.Errorf("get of an unknown job: %v", err)
	}
}

// TestRestart: a job that was running when the process died is failed
// cleanly after its cleanup; a queued one runs.
func TestRestart(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	for _, j := range []Job{
		{ID: "running1", Project: "p", State: Running, Created: now},
		{ID: "queued1", Project: "p", State: Queued, Created: now.Add(time.Second)},
		{ID: "done1", Project: "p", State: Succeeded, Created: now, Result: "d1"},
	} {
		b, _ := testSeal.Marshal(Kind, j.ID, j)
		os.MkdirAll(filepath.Join(dir, "jobs"), 0o700)
		os.WriteFile(filepath.Join(dir, "jobs", j.ID+".json"), b, 0o600)
	}
	var cleaned []string
	var recovered []Job
	ran := make(chan string, 3)
	r, err := Open(Options{Seal: testSeal, Dir: dir, Work: func(ctx context.Context, j Job, report func(Event)) (string, error) {
		ran <- j.ID
		return "ok", nil
	}, Cleanup: func(j Job) error { cleaned = append(cleaned, j.ID); return nil },
		Recover: func(jobs []Job) error {
			if len(ran) > 0 {
				t.Error("Recover ran after a queued job started")
			}
			recovered = jobs
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if j, _ := r.Get("running1"); j.State != Failed || len(cleaned) != 1 || cleaned[0] != "running1" {
		t.Fatalf("interrupted job: %+v, cleaned %v", j, cleaned)
	}
	if j, _ := r.Get("running1"); !strings.Contains(j.Error, "interrupted") || !strings.Contains(j.Error, "what it had staged was removed") {
		t.Errorf("interrupted job's error %q, want it to say what happened to what it staged", j.Error)
	}
	var states []string
	for _, j := range recovered {
		states = append(states, j.ID+" "+string(j.State))
	}
	if want := []string{"done1 succeeded", "running1 failed", "queued1 queued"}; !slices.Equal(states, want) {
		t.Errorf("Recover saw %v, want %v", states, want)
	}
	if id := <-ran; id != "queued1" {
		t.Fatalf("ran %s", id)
	}
	waitFor(t, "queued job done", func() bool { return state(r, "queued1") == Succeeded })
	if j, _ := r.Get("done1"); j.State != Succeeded || j.Result != "d1" {
		t.Fatalf("finished job changed: %+v", j)
	}
	// What is on disk says the same.
	b, _ := os.ReadFile(filepath.Join(dir, "jobs", "running1.json"))
	var j Job
	testSeal.Unmarshal(Kind, "running1", b, &j)
	if j.State != Failed {
		t.Fatalf("on disk: %s", j.State)
	}
}

func TestShutdownFailsRunningJobs(t *testing.T) {
	started := make(chan struct{})
	r, _ := Open(Options{Seal: testSeal, Dir: t.TempDir(), Work: func(ctx context.Context, j Job, report func(Event)) (string, error) {
		close(started)
		<-ctx.Done()
		return "", ctx.Err()
	}})
	j, _ := r.Submit("p", "x", nil)
	<-started
	r.Close()
	if got, _ := r.Get(j.ID); got.State != Failed {
		t.Fatalf("after shutdown: %s %q", got.State, got.Error)
	}
}

func TestNotifyTellsEveryState(t *testing.T) {
	var mu sync.Mutex
	var seen []State
	r, err := Open(Options{Seal: testSeal, Dir: t.TempDir(), Work: func(ctx context.Context, j Job, report func(Event)) (string, error) {
		return "d1", nil
	}, Notify: func(j Job) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, j.State)
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	j, err := r.Submit("p", "anna", nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the job to finish", func() bool { return state(r, j.ID).Final() })
	waitFor(t, "three notifications", func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == 3 })
	mu.Lock()
	defer mu.Unlock()
	if want := []State{Queued, Running, Succeeded}; !slices.Equal(seen, want) {
		t.Errorf("notified %v, want %v", seen, want)
	}
}

// TestRecoverErrorFailsOpen: a runner whose caller cannot recover does not
// start; its queued jobs stay queued.
func TestRecoverErrorFailsOpen(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "jobs"), 0o700)
	b, _ := testSeal.Marshal(Kind, "queued1", Job{ID: "queued1", Project: "p", State: Queued})
	os.WriteFile(filepath.Join(dir, "jobs", "queued1.json"), b, 0o600)
	ran := make(chan string, 1)
	_, err := Open(Options{Seal: testSeal, Dir: dir, Work: func(ctx context.Context, j Job, report func(Event)) (string, error) {
		ran <- j.ID
		return "", nil
	}, Recover: func([]Job) error { return errors.New("the bucket is gone") }})
	if err == nil || !strings.Contains(err.Error(), "the bucket is gone") {
		t.Fatalf("Open = %v, want the recovery's error", err)
	}
	select {
	case id := <-ran:
		t.Fatalf("job %s ran although Open failed", id)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestOperatorCannotAlterAJobRecord: whoever holds the data directory
// edits a job record (its submitter: the four-eyes check of its release),
// copies one under another id, or writes one without a seal. Open refuses
// each, tells Refused naming the record, and neither runs, lists nor
// recovers it; the sealed jobs are as they were.
func TestOperatorCannotAlterAJobRecord(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "jobs"), 0o700)
	keep := func(id string, b []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "jobs", id+".json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	done, _ := testSeal.Marshal(Kind, "done1", Job{ID: "done1", Project: "p", Submitter: "anna", State: Succeeded, Created: now})
	keep("done1", done)
	edited, _ := testSeal.Marshal(Kind, "edited1", Job{ID: "edited1", Project: "p", Submitter: "anna", State: Succeeded, Created: now})
	operator := strings.Replace(string(edited), `"submitter": "anna"`, `"submitter": "operator"`, 1)
	if operator == string(edited) {
		t.Fatal("the edit found no submitter")
	}
	keep("edited1", []byte(operator))
	queued, _ := testSeal.Marshal(Kind, "queued1", Job{ID: "queued1", Project: "p", Submitter: "anna", State: Queued, Created: now})
	keep("copied1", queued) // a queued job's record under another id
	plain, _ := json.Marshal(Job{ID: "plain1", Project: "p", Submitter: "operator", State: Queued, Created: now})
	keep("plain1", plain)

	var refused []string
	ran := make(chan string, 4)
	var recovered []string
	r, err := Open(Options{Seal: testSeal, Dir: dir, Work: func(ctx context.Context, j Job, report func(Event)) (string, error) {
		ran <- j.ID
		return "", nil
	}, Refused: func(err error) { refused = append(refused, err.Error()) },
		Recover: func(all []Job) error {
			for _, j := range all {
				recovered = append(recovered, j.ID)
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	slices.Sort(refused)
	want := []string{"jobs/copied1.json was altered outside lopnrd (it is sealed as jobs/queued1",
		"jobs/edited1.json was altered outside lopnrd (its seal does not verify)",
		"jobs/plain1.json was altered outside lopnrd (it has no seal)"}
	if len(refused) != len(want) {
		t.Fatalf("refused %q, want %d refusals", refused, len(want))
	}
	for i := range want {
		if !strings.HasPrefix(refused[i], want[i]) {
			t.Errorf("refusal %q, want it to begin %q", refused[i], want[i])
		}
	}
	if !slices.Equal(recovered, []string{"done1"}) {
		t.Errorf("Recover saw %v, want only done1", recovered)
	}
	for _, id := range []string{"edited1", "copied1", "plain1", "queued1"} {
		if _, err := r.Get(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%s) = %v, want not found", id, err)
		}
	}
	if l := r.List(""); len(l) != 1 || l[0].ID != "done1" || l[0].Submitter != "anna" {
		t.Errorf("List = %+v, want done1 alone", l)
	}
	select {
	case id := <-ran:
		t.Errorf("job %s ran", id)
	case <-time.After(100 * time.Millisecond):
	}
}
