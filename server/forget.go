package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/lopnr/lopnr/extract"
	"github.com/lopnr/lopnr/keystore"
	"github.com/lopnr/lopnr/server/jobs"
)

// forgotten counts what forget dropped from a destroyed project's records.
type forgotten struct {
	Changes           int `json:"changes"`
	Partners          int `json:"partners"`
	Jobs              int `json:"jobs"`
	Deliveries        int `json:"deliveries"`
	Reidentifications int `json:"reidentifications"`
	KeyFileGrants     int `json:"key_file_grants"`
	Imports           int `json:"imports"`
}

// forget reduces what the server keeps of a project whose kodnyckel was
// destroyed to what the receipt needs — ids, dates, counts, who acted —
// and drops the rest: the rules (approved variables, recipients), the
// partners' registrations and identities, job specs and errors, delivery
// reports, the reasons of changes, re-identifications and key files. The
// audit log keeps its entries (their reasons are counts and words, never a
// record value). forget can run again: it finishes what a crash left.
func (s *Server) forget(project string, destroyed time.Time) error {
	var n forgotten
	var errs []error
	s.cohort.forget(project)
	// A partner's identity goes wherever it stands, as the submitter of
	// its imports' jobs and deliveries too.
	var partners []string
	if rec, err := s.projects.get(project); err == nil {
		for _, p := range rec.Partners {
			partners = append(partners, p.Identity)
		}
	}
	submitter := func(id string) string {
		if slices.Contains(partners, id) {
			return "a partner"
		}
		return id
	}
	if c, err := s.jobs.Forget(project, submitter); err != nil {
		errs = append(errs, err)
	} else {
		n.Jobs = c
	}
	count := func(n *int, c int, err error) {
		*n += c
		if err != nil {
			errs = append(errs, err)
		}
	}
	c, err := forgetIn(s.deliveries, project, func(d deliveryRecord) (string, string) { return d.ID, d.Project },
		func(d *deliveryRecord) bool {
			had := d.Report != "" || submitter(d.Submitter) != d.Submitter
			d.Report, d.Submitter = "", submitter(d.Submitter)
			return had
		})
	count(&n.Deliveries, c, err)
	c, err = forgetIn(s.reidents, project, func(r reidentRecord) (string, string) { return r.ID, r.Project },
		func(r *reidentRecord) bool {
			had := r.Reason != "" || r.RunNumber != 0
			r.Reason, r.RunNumber = "", 0
			return had
		})
	count(&n.Reidentifications, c, err)
	c, err = forgetIn(s.grants, project, func(g keyFileGrant) (string, string) { return g.ID, g.Project },
		func(g *keyFileGrant) bool {
			had := g.Reason != "" || g.Partner != ""
			g.Reason, g.Partner = "", ""
			return had
		})
	count(&n.KeyFileGrants, c, err)
	c, err = forgetIn(s.imports, project, func(r importRecord) (string, string) { return r.Job, r.Project },
		func(r *importRecord) bool {
			had := r.Received != "" || r.Source != ""
			r.Received, r.Source = "", ""
			return had
		})
	count(&n.Imports, c, err)
	// The project's own record last, marked destroyed only when the rest
	// is done: a forget that failed half-way runs again at the next sweep.
	if len(errs) > 0 {
		return fmt.Errorf("project %s: reducing the records of a destroyed project: %w", project, errors.Join(errs...))
	}
	_, err = s.projects.update(project, func(r *projectRecord) error {
		if r.Forgotten != nil {
			return nil // forgotten already
		}
		n.Changes, n.Partners = len(r.Changes), len(r.Partners)
		changes := make([]changeRecord, len(r.Changes))
		for i, c := range r.Changes {
			changes[i] = changeRecord{ID: c.ID, ProposedBy: c.ProposedBy, Proposed: c.Proposed, ApprovedBy: c.ApprovedBy, Approved: c.Approved}
		}
		r.Approval, r.Recipients, r.Partners, r.Changes = extract.Approval{}, nil, nil, changes
		r.Destroyed, r.Forgotten = destroyed.UTC(), &n
		return nil
	})
	return err
}

// forgetIn reduces the records of project in r with reduce, which drops
// what a destroyed project's records must not keep and reports whether
// there was anything to drop; it returns how many records it reduced.
// key gives a record's id and project.
func forgetIn[T any](r *records[T], project string, key func(T) (id, project string), reduce func(*T) bool) (int, error) {
	all, err := r.list()
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, v := range all {
		id, p := key(v)
		if p != project || !reduce(&v) {
			continue
		}
		if _, err := r.update(id, func(v *T) error { reduce(v); return nil }); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// Due lists the projects whose kodnyckel the key store's sweep would
// destroy now, for the sweeper, which audits its intent to destroy each
// before it calls SweepProject. It first finishes the records of projects
// destroyed by another process (lopnr keys sweep) or left half-reduced by
// a crash.
func (s *Server) Due(ctx context.Context) ([]string, error) {
	var errs []error
	recs, lerr := s.projects.list()
	if lerr != nil {
		errs = append(errs, lerr)
	}
	for _, rec := range recs {
		if !rec.Destroyed.IsZero() {
			continue
		}
		var destroyed *keystore.DestroyedError
		if _, perr := s.cfg.Keys.Project(ctx, rec.ID); errors.As(perr, &destroyed) {
			if ferr := s.forgetDestroyed(rec.ID, destroyed.At); ferr != nil {
				errs = append(errs, ferr)
			}
		}
	}
	due, err := s.cfg.Keys.Due(ctx)
	return due, errors.Join(append(errs, err)...)
}

// SweepProject destroys the kodnyckel of a project Due listed, as the key
// store's sweep does, and then reduces the project's records (forget).
func (s *Server) SweepProject(ctx context.Context, id string) (keystore.Receipt, error) {
	r, err := s.cfg.Keys.SweepProject(ctx, id)
	if err != nil {
		return r, err
	}
	return r, s.forgetDestroyed(r.Project, r.DestroyedAt)
}

// forgetDestroyed stops what still runs for a project the sweeper
// destroyed (its jobs fail without the kodnyckel anyway), then forgets it.
func (s *Server) forgetDestroyed(project string, at time.Time) error {
	for _, j := range s.jobs.List(project) {
		if j.State.Final() {
			continue
		}
		if err := s.jobs.Cancel(j.ID); err != nil && !errors.Is(err, jobs.ErrFinal) {
			return err
		}
		if events, err := s.jobs.Watch(j.ID); err == nil {
			timeout := time.After(time.Minute)
		wait:
			for {
				select {
				case _, open := <-events:
					if !open {
						break wait
					}
				case <-timeout:
					return fmt.Errorf("project %s: job %s did not stop within a minute of its kodnyckel's destruction", project, j.ID)
				}
			}
		}
	}
	return s.forget(project, at)
}
