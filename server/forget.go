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
	if ds, err := s.deliveries.list(); err != nil {
		errs = append(errs, err)
	} else {
		for _, d := range ds {
			if d.Project != project || (d.Report == "" && submitter(d.Submitter) == d.Submitter) {
				continue
			}
			if _, err := s.deliveries.update(d.ID, func(d *deliveryRecord) error {
				d.Report, d.Submitter = "", submitter(d.Submitter)
				return nil
			}); err != nil {
				errs = append(errs, err)
				continue
			}
			n.Deliveries++
		}
	}
	if rs, err := s.reidents.list(); err != nil {
		errs = append(errs, err)
	} else {
		for _, r := range rs {
			if r.Project != project || (r.Reason == "" && r.RunNumber == 0) {
				continue
			}
			if _, err := s.reidents.update(r.ID, func(r *reidentRecord) error {
				r.Reason, r.RunNumber = "", 0
				return nil
			}); err != nil {
				errs = append(errs, err)
				continue
			}
			n.Reidentifications++
		}
	}
	if gs, err := s.grants.list(); err != nil {
		errs = append(errs, err)
	} else {
		for _, g := range gs {
			if g.Project != project || (g.Reason == "" && g.Partner == "") {
				continue
			}
			if _, err := s.grants.update(g.ID, func(g *keyFileGrant) error {
				g.Reason, g.Partner = "", ""
				return nil
			}); err != nil {
				errs = append(errs, err)
				continue
			}
			n.KeyFileGrants++
		}
	}
	if is, err := s.imports.list(); err != nil {
		errs = append(errs, err)
	} else {
		for _, r := range is {
			if r.Project != project || (r.Received == "" && r.Source == "") {
				continue
			}
			if _, err := s.imports.update(r.Job, func(r *importRecord) error {
				r.Received, r.Source = "", ""
				return nil
			}); err != nil {
				errs = append(errs, err)
				continue
			}
			n.Imports++
		}
	}
	// The project's own record last, marked destroyed only when the rest
	// is done: a forget that failed half-way runs again at the next sweep.
	if len(errs) > 0 {
		return fmt.Errorf("project %s: reducing the records of a destroyed project: %w", project, errors.Join(errs...))
	}
	_, err := s.projects.update(project, func(r *projectRecord) error {
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
