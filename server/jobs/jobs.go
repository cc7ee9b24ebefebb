// Package jobs runs lopnr's jobs in the server: it keeps every job and its
// state in the data directory, so that they survive a restart; runs at
// most a set number at once; cancels a job at any stage; and streams each
// job's progress to watchers, ending in its final state.
//
// A job that was running when the server stopped is failed cleanly on the
// next start: its Cleanup hook (which removes what it staged) runs, and it
// is marked failed with the reason. Its run numbers are consistent whatever
// happened, since the key store stores new ones before any output uses
// them; submitting it again gives the same persons the same LopNr. Then
// the Recover hook sees every job, for the caller to make its own records
// agree with theirs, and only then are the jobs that were queued started.
package jobs

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lopnr/lopnr/internal/atomicfile"
	"github.com/lopnr/lopnr/server/internal/seal"
)

// State is where a job is in its life.
type State string

// The states. Succeeded, Failed and Cancelled are final.
const (
	Queued    State = "queued"
	Running   State = "running"
	Succeeded State = "succeeded"
	Failed    State = "failed"
	Cancelled State = "cancelled"
)

// Final reports whether a job in this state will not change again.
func (s State) Final() bool { return s == Succeeded || s == Failed || s == Cancelled }

// Job is a submitted job. Spec is the job spec as submitted; Error never
// holds a record value (the stages' errors do not).
type Job struct {
	ID        string    `json:"id"`
	Project   string    `json:"project"`
	Submitter string    `json:"submitter"`
	Spec      []byte    `json:"spec"`
	State     State     `json:"state"`
	Created   time.Time `json:"created"`
	Started   time.Time `json:"started,omitzero"`
	Finished  time.Time `json:"finished,omitzero"`
	Error     string    `json:"error,omitempty"`
	// Result is what the job made, such as the delivery's id.
	Result string `json:"result,omitempty"`
	// Last is the last progress event.
	Last Event `json:"last"`
}

// Event is one step of a job's progress.
type Event struct {
	Stage  string `json:"stage"`            // ingest, identities, cohort, report, assign, file, publish, or the state
	Source string `json:"source,omitempty"` // the source or file, when per source
	Rows   int64  `json:"rows,omitempty"`
	Bytes  int64  `json:"bytes,omitempty"`
	Done   bool   `json:"done,omitempty"` // the stage (for the source) has ended
	State  State  `json:"state"`
}

// Work runs one job. It reports progress through report, stops when ctx
// ends, and returns the job's result (such as a delivery id).
type Work func(ctx context.Context, job Job, report func(Event)) (string, error)

// Cleanup removes what an interrupted job left (its staged files).
type Cleanup func(job Job) error

// Recover is told of every job kept, once, when the runner opens: after
// the interrupted jobs are failed and before any job starts. An error
// fails Open.
type Recover func(jobs []Job) error

// Kind is what a job record's seal binds besides its id: the directory
// the records are kept in.
const Kind = "jobs"

// Options configure a Runner.
type Options struct {
	Dir   string // where jobs are kept: Dir/jobs/<id>.json
	Limit int    // jobs running at once; default 2
	// Seal seals every job record kept and opens every one read: a record
	// whose seal does not verify (whoever holds the data directory edited
	// it, its submitter say, or copied it under another id) is refused
	// when Open reads it, told to Refused, and never run, listed or
	// recovered.
	Seal    *seal.Sealer
	Refused func(err error) // may be nil
	Work    Work
	Cleanup Cleanup // may be nil
	Recover Recover // may be nil
	Clock   func() time.Time
	// Notify, when set, is told of every job that reaches a state
	// (queued, running, or a final one), after the state is kept; for
	// metrics, logs and the audit log. It must not block.
	Notify func(Job)
}

// Runner runs jobs.
type Runner struct {
	opts    Options
	dir     string
	mu      sync.Mutex
	jobs    map[string]*Job
	cancels map[string]context.CancelFunc
	watch   map[string][]chan Event
	slots   chan struct{}
	wg      sync.WaitGroup
	ctx     context.Context
	stop    context.CancelFunc
}

// ErrNotFound is returned for an unknown job id.
var ErrNotFound = errors.New("no such job")

// ErrFinal is returned when cancelling a job that has finished.
var ErrFinal = errors.New("the job has finished")

// Open loads the jobs kept in opts.Dir, fails those that were running
// (after their Cleanup), and starts those that were queued.
func Open(opts Options) (*Runner, error) {
	if opts.Work == nil || opts.Seal == nil {
		return nil, errors.New("jobs: Work and Seal are required")
	}
	if opts.Limit <= 0 {
		opts.Limit = 2
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	dir := filepath.Join(opts.Dir, "jobs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	r := &Runner{opts: opts, dir: dir, jobs: map[string]*Job{}, cancels: map[string]context.CancelFunc{},
		watch: map[string][]chan Event{}, slots: make(chan struct{}, opts.Limit), ctx: ctx, stop: stop}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var queued []*Job
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || strings.HasPrefix(id, ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		var j Job
		if err := opts.Seal.Unmarshal(Kind, id, b, &j); err != nil {
			if errors.Is(err, seal.ErrAltered) {
				if opts.Refused != nil {
					opts.Refused(err)
				}
				continue
			}
			return nil, fmt.Errorf("jobs: %w", err)
		}
		if j.ID != id {
			return nil, fmt.Errorf("jobs: %s holds job %q", e.Name(), j.ID)
		}
		r.jobs[j.ID] = &j
		switch j.State {
		case Running:
			reason := "interrupted: the server stopped while the job ran; nothing was released"
			if opts.Cleanup != nil {
				if err := opts.Cleanup(j); err != nil {
					reason += fmt.Sprintf(", but removing what it had staged failed (the next start tries again): %v", err)
				} else {
					reason += ", and what it had staged was removed"
				}
			}
			j.State, j.Error, j.Finished = Failed, reason, opts.Clock().UTC()
			j.Last = Event{Stage: string(Failed), State: Failed}
			if err := r.save(&j); err != nil {
				return nil, err
			}
			r.notify(j)
		case Queued:
			queued = append(queued, &j)
		}
	}
	if opts.Recover != nil {
		all := make([]Job, 0, len(r.jobs))
		for _, j := range r.jobs {
			all = append(all, *j)
		}
		// In the order they were created, ties by id: the same order
		// at every start.
		slices.SortFunc(all, func(a, b Job) int { return cmp.Or(a.Created.Compare(b.Created), strings.Compare(a.ID, b.ID)) })
		if err := opts.Recover(all); err != nil {
			return nil, fmt.Errorf("jobs: recover: %w", err)
		}
	}
	slices.SortFunc(queued, func(a, b *Job) int { return a.Created.Compare(b.Created) })
	for _, j := range queued {
		r.start(j)
	}
	return r, nil
}

// save writes a job atomically: a temporary file, synced, renamed.
func (r *Runner) save(j *Job) error {
	b, err := r.opts.Seal.Marshal(Kind, j.ID, j)
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(r.dir, j.ID+".json"), b)
}

// NewID returns a new job id: the day and 16 random hex digits.
func (r *Runner) NewID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return r.opts.Clock().UTC().Format("20060102") + "-" + hex.EncodeToString(b[:]), nil
}

// Submit keeps a new job and queues it.
func (r *Runner) Submit(project, submitter string, spec []byte) (Job, error) {
	id, err := r.NewID()
	if err != nil {
		return Job{}, err
	}
	return r.SubmitID(id, project, submitter, spec)
}

// SubmitID is Submit with an id from NewID, for a caller that prepares the
// job's files under its id first.
func (r *Runner) SubmitID(id, project, submitter string, spec []byte) (Job, error) {
	now := r.opts.Clock().UTC()
	j := &Job{ID: id, Project: project, Submitter: submitter,
		Spec: spec, State: Queued, Created: now, Last: Event{Stage: string(Queued), State: Queued}}
	r.mu.Lock()
	if _, taken := r.jobs[id]; taken {
		r.mu.Unlock()
		return Job{}, fmt.Errorf("jobs: job %q exists", id)
	}
	if err := r.save(j); err != nil {
		r.mu.Unlock()
		return Job{}, fmt.Errorf("jobs: keep job: %w", err)
	}
	r.jobs[j.ID] = j
	snapshot := *j
	r.mu.Unlock()
	r.notify(snapshot) // before the job can start, so that queued comes first
	r.start(j)
	return snapshot, nil
}

func (r *Runner) notify(j Job) {
	if r.opts.Notify != nil {
		r.opts.Notify(j)
	}
}

func (r *Runner) start(j *Job) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.startLocked(j)
}

func (r *Runner) startLocked(j *Job) {
	ctx, cancel := context.WithCancel(r.ctx)
	r.cancels[j.ID] = cancel
	r.wg.Add(1)
	go r.run(ctx, j.ID)
}

// run waits for a slot and runs a job.
func (r *Runner) run(ctx context.Context, id string) {
	defer r.wg.Done()
	select {
	case r.slots <- struct{}{}:
		defer func() { <-r.slots }()
	case <-ctx.Done():
		r.finish(id, "", ctx.Err())
		return
	}
	r.mu.Lock()
	j := r.jobs[id]
	if j.State != Queued { // cancelled while queued
		r.mu.Unlock()
		return
	}
	j.State, j.Started = Running, r.opts.Clock().UTC()
	j.Last = Event{Stage: string(Running), State: Running}
	err := r.save(j)
	snapshot := *j
	r.mu.Unlock()
	r.publish(id, snapshot.Last, false)
	if err == nil {
		r.notify(snapshot)
	}
	if err != nil {
		r.finish(id, "", fmt.Errorf("keep job state: %w", err))
		return
	}
	// What Work returns is the outcome: a job that made its result as it
	// was cancelled succeeded, since its result is kept.
	result, err := r.opts.Work(ctx, snapshot, func(e Event) {
		e.State = Running
		r.mu.Lock()
		r.jobs[id].Last = e
		r.mu.Unlock()
		r.publish(id, e, false)
	})
	r.finish(id, result, err)
}

// finish records a job's final state and tells its watchers.
func (r *Runner) finish(id, result string, err error) {
	r.mu.Lock()
	j := r.jobs[id]
	if j.State.Final() {
		r.mu.Unlock()
		return
	}
	switch {
	case err == nil:
		j.State, j.Result = Succeeded, result
	case errors.Is(err, context.Canceled) && r.ctx.Err() != nil:
		// Work removes what it staged when it stops; a failure to is in
		// err, joined to the cancellation.
		j.State, j.Error = Failed, "interrupted: the server shut down while the job ran; nothing was released"
		if err != context.Canceled {
			j.Error += ": " + err.Error()
		}
	case errors.Is(err, context.Canceled):
		j.State, j.Error = Cancelled, "cancelled"
	default:
		j.State, j.Error = Failed, err.Error()
	}
	j.Finished = r.opts.Clock().UTC()
	j.Last = Event{Stage: string(j.State), State: j.State}
	saveErr := r.save(j)
	delete(r.cancels, id)
	e, snapshot := j.Last, *j
	r.mu.Unlock()
	r.publish(id, e, true)
	if saveErr == nil {
		r.notify(snapshot)
	}
}

// publish sends an event to a job's watchers; a final event closes them.
func (r *Runner) publish(id string, e Event, final bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ch := range r.watch[id] {
		select {
		case ch <- e:
		default: // a slow watcher misses progress, never the final state
			if final {
				go func(ch chan Event) { ch <- e; close(ch) }(ch)
				continue
			}
		}
		if final {
			close(ch)
		}
	}
	if final {
		delete(r.watch, id)
	}
}

// Get returns a job.
func (r *Runner) Get(id string) (Job, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	j, ok := r.jobs[id]
	if !ok {
		return Job{}, fmt.Errorf("job %q: %w", id, ErrNotFound)
	}
	return *j, nil
}

// List returns the jobs of a project ("" for all), newest first.
func (r *Runner) List(project string) []Job {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Job
	for _, j := range r.jobs {
		if project == "" || j.Project == project {
			out = append(out, *j)
		}
	}
	slices.SortFunc(out, func(a, b Job) int { return b.Created.Compare(a.Created) })
	return out
}

// Cancel stops a job at whatever stage it is in.
func (r *Runner) Cancel(id string) error {
	r.mu.Lock()
	j, ok := r.jobs[id]
	if !ok {
		r.mu.Unlock()
		return fmt.Errorf("job %q: %w", id, ErrNotFound)
	}
	if j.State.Final() {
		r.mu.Unlock()
		return fmt.Errorf("job %q: %w (%s)", id, ErrFinal, j.State)
	}
	cancel := r.cancels[id]
	queued := j.State == Queued
	r.mu.Unlock()
	if queued {
		r.finish(id, "", context.Canceled)
	}
	if cancel != nil {
		cancel()
	}
	return nil
}

// Watch returns a channel of a job's progress: its last event now, then
// each event, ending with the final state, when it is closed.
func (r *Runner) Watch(id string) (<-chan Event, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	j, ok := r.jobs[id]
	if !ok {
		return nil, fmt.Errorf("job %q: %w", id, ErrNotFound)
	}
	ch := make(chan Event, 64)
	ch <- j.Last
	if j.State.Final() {
		close(ch)
		return ch, nil
	}
	r.watch[id] = append(r.watch[id], ch)
	return ch, nil
}

// Close cancels running jobs and waits for them. Their state on disk stays
// running only if the process dies before this returns.
func (r *Runner) Close() {
	r.stop()
	r.wg.Wait()
}
