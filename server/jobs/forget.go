package jobs

// Forget reduces every finished job of a project to what a destruction
// receipt needs — its id, project, submitter, state and times — and
// returns how many it reduced. Its spec, error and last event's source go,
// and its submitter becomes what submitter makes of it (a partner's
// identity goes too). A job still queued or running is left as it is:
// cancel it first.
func (r *Runner) Forget(project string, submitter func(string) string) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, j := range r.jobs {
		if j.Project != project || !j.State.Final() || (j.Spec == nil && j.Error == "" && j.Last.Source == "" && submitter(j.Submitter) == j.Submitter) {
			continue
		}
		forgotten := *j
		forgotten.Spec, forgotten.Error, forgotten.Submitter = nil, "", submitter(j.Submitter)
		forgotten.Last = Event{Stage: string(j.State), State: j.State}
		if err := r.save(&forgotten); err != nil {
			return n, err
		}
		*j = forgotten
		n++
	}
	return n, nil
}
