package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lopnr/lopnr/extract"
	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
	"github.com/lopnr/lopnr/server/audit"
	"github.com/lopnr/lopnr/server/authz"
	"github.com/lopnr/lopnr/server/internal/seal"
	"github.com/lopnr/lopnr/server/jobs"
)

// deliveryState is where a delivery is in its life. A delivery's record is
// kept before each step that changes what the sink holds, so that the
// records account for everything in the sink whenever the server stops:
//
//	staging   → the job is writing it to the sink's staging place
//	staged    → complete and signed in the staging place; no link reaches it
//	releasing → an approver released it; the sink is moving it
//	released  → published: researchers get links to it
//
// At start ([Server.reconcile]) a delivery still staging, or staged by a
// job that did not succeed, is removed with its record; a release that was
// cut short is finished (or, when that fails, undone); and whatever the
// sink holds that no record in the matching state accounts for is removed.
type deliveryState string

const (
	deliveryStaging   deliveryState = "staging"
	deliveryStaged    deliveryState = "staged"
	deliveryReleasing deliveryState = "releasing"
	deliveryReleased  deliveryState = "released"
)

// deliveryRecord is a delivery as the server keeps it.
type deliveryRecord struct {
	ID        string `json:"id"`
	Project   string `json:"project"`
	Job       string `json:"job"`
	Submitter string `json:"submitter"`
	// State is empty in records kept before deliveries were staged: those
	// were published at once (see [deliveryRecord.state]).
	State      deliveryState  `json:"state,omitempty"`
	Created    time.Time      `json:"created"`
	Files      []deliveryFile `json:"files"`
	Location   string         `json:"location"`
	SigningKey string         `json:"signing_key"`
	// Report is the linkage-quality report, as text: counts only.
	Report     string    `json:"report"`
	ReleasedBy string    `json:"released_by,omitempty"`
	ReleasedAt time.Time `json:"released_at,omitzero"`
}

// deliveryLegacy is the state of a record kept before deliveries were
// staged, and not released: its files were published when its job ended.
const deliveryLegacy deliveryState = "published-unreleased"

// state returns the record's state, a record without one read as it was
// meant when it was kept.
func (d deliveryRecord) state() deliveryState {
	switch {
	case d.State != "":
		return d.State
	case d.ReleasedBy != "":
		return deliveryReleased
	}
	return deliveryLegacy
}

type deliveryFile struct {
	Name   string `json:"name"`
	Source string `json:"source"`
	Format string `json:"format"`
	Rows   int64  `json:"rows"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// Codebook is the name of the file's codebook, delivered beside it.
	Codebook string `json:"codebook"`
}

// names lists every file of the delivery, the data files first.
func (d deliveryRecord) names() []string {
	var out []string
	for _, f := range d.Files {
		out = append(out, f.Name)
	}
	for _, f := range d.Files {
		if f.Codebook != "" && !slices.Contains(out, f.Codebook) {
			out = append(out, f.Codebook)
		}
	}
	return append(out, deliveryExtras...)
}

// The files of every delivery besides the data files.
var deliveryExtras = []string{"manifest.json", "manifest.json.sig", "README.txt"}

func (d deliveryRecord) proto() *lopnrv1.Delivery {
	out := &lopnrv1.Delivery{Id: d.ID, Project: d.Project, Job: d.Job, Submitter: d.Submitter, Created: timestamppb.New(d.Created),
		Released: d.state() == deliveryReleased, ReleasedBy: d.ReleasedBy, Location: d.Location, SigningKey: d.SigningKey}
	if !d.ReleasedAt.IsZero() {
		out.ReleasedAt = timestamppb.New(d.ReleasedAt)
	}
	for _, f := range d.Files {
		out.Files = append(out.Files, &lopnrv1.DeliveryFile{Name: f.Name, Source: f.Source, Format: f.Format, Rows: f.Rows, Size: f.Size, Sha256: f.SHA256})
	}
	return out
}

type deliveryService struct {
	lopnrv1.UnimplementedDeliveryServiceServer
	s *Server
}

// seesUnreleased reports whether the caller sees a project's deliveries
// before release: everyone who may list them but researchers.
func (s *Server) seesUnreleased(ctx context.Context, project string) bool {
	roles := s.cfg.Policy.Roles(call(ctx).identity, project)
	return slices.ContainsFunc(roles, func(r authz.Role) bool {
		return r == authz.Extractor || r == authz.Approver || r == authz.Auditor || r == authz.Admin
	})
}

// ready reports whether a delivery's job has succeeded: a delivery whose
// job is still running (or failed, and is about to be removed) is not
// one yet, whatever its record says.
func (s *Server) ready(d deliveryRecord) bool {
	j, err := s.jobs.Get(d.Job)
	return err == nil && j.State == jobs.Succeeded
}

func (ds deliveryService) ListDeliveries(ctx context.Context, req *lopnrv1.ListDeliveriesRequest) (*lopnrv1.ListDeliveriesResponse, error) {
	if req.GetProject() == "" {
		return nil, &fieldError{"project", "the project whose deliveries to list"}
	}
	all, err := ds.s.deliveries.list()
	if err != nil {
		return nil, err
	}
	unreleased := ds.s.seesUnreleased(ctx, req.GetProject())
	out := &lopnrv1.ListDeliveriesResponse{}
	for _, d := range all {
		if d.Project != req.GetProject() {
			continue
		}
		switch d.state() {
		case deliveryReleased:
		case deliveryStaged, deliveryReleasing:
			if !unreleased || !ds.s.ready(d) {
				continue
			}
		default:
			continue
		}
		out.Deliveries = append(out.Deliveries, d.proto())
	}
	slices.SortFunc(out.Deliveries, func(a, b *lopnrv1.Delivery) int { return b.Created.AsTime().Compare(a.Created.AsTime()) })
	return out, nil
}

// delivery returns a delivery of the project the request names: a
// delivery of another project is not found, whatever its id.
func (s *Server) delivery(project, id string) (deliveryRecord, error) {
	d, err := s.deliveries.get(id)
	if err == nil && d.Project != project {
		return deliveryRecord{}, &notFoundError{"delivery", id}
	}
	return d, err
}

// releasing holds a lock per delivery id while a release moves it, so that
// two approvers' releases of one delivery do not move it at once.
var releasing sync.Map // delivery id → *sync.Mutex

func releaseLock(id string) func() {
	mu, _ := releasing.LoadOrStore(id, new(sync.Mutex))
	mu.(*sync.Mutex).Lock()
	return mu.(*sync.Mutex).Unlock
}

// ReleaseDelivery publishes a staged delivery: an approver who did not
// submit its job releases it. The record says releasing, with who and
// when, before the sink moves anything; it says released once the sink
// has moved it all. A release that fails midway leaves the record
// releasing, and nothing a link can reach: the same or another approver
// releases it again, or the next start finishes it.
func (ds deliveryService) ReleaseDelivery(ctx context.Context, req *lopnrv1.ReleaseDeliveryRequest) (*lopnrv1.Delivery, error) {
	s, ci := ds.s, call(ctx)
	d, err := s.delivery(req.GetProject(), req.GetDelivery())
	if err != nil {
		return nil, err
	}
	ci.job = d.Job
	if d.Submitter == ci.identity {
		return nil, &fourEyesError{"the person who submitted a job may not release its delivery; ask another approver"}
	}
	unlock := releaseLock(d.ID)
	defer unlock()
	d, err = s.deliveries.update(d.ID, func(d *deliveryRecord) error {
		switch d.state() {
		case deliveryReleased, deliveryLegacy:
			return &stateError{"delivery " + d.ID + " was released by " + orUnknown(d.ReleasedBy)}
		case deliveryStaging:
			return &stateError{"delivery " + d.ID + " is not complete: its job has not finished"}
		case deliveryStaged:
			if !s.ready(*d) {
				return &stateError{"delivery " + d.ID + " is not complete: its job has not succeeded"}
			}
			d.State, d.ReleasedBy, d.ReleasedAt = deliveryReleasing, ci.identity, s.cfg.Clock().UTC()
		}
		return nil // releasing: a release cut short, finished now
	})
	if err != nil {
		return nil, err
	}
	if err := s.cfg.Sink.Release(ctx, d.Project, d.ID); err != nil {
		return nil, fmt.Errorf("release delivery %s: %w", d.ID, err)
	}
	if d, err = s.markReleased(d.ID); err != nil {
		return nil, err
	}
	return d.proto(), nil
}

func (s *Server) markReleased(id string) (deliveryRecord, error) {
	return s.deliveries.update(id, func(d *deliveryRecord) error {
		d.State = deliveryReleased
		return nil
	})
}

func orUnknown(s string) string {
	if s == "" {
		return "an earlier lopnrd"
	}
	return s
}

func (ds deliveryService) PresignDelivery(ctx context.Context, req *lopnrv1.PresignDeliveryRequest) (*lopnrv1.PresignDeliveryResponse, error) {
	s, ci := ds.s, call(ctx)
	d, err := s.delivery(req.GetProject(), req.GetDelivery())
	if err != nil {
		return nil, err
	}
	ci.job = d.Job
	if d.state() != deliveryReleased {
		return nil, &stateError{"delivery " + d.ID + " is not released yet: an approver other than the submitter releases it"}
	}
	expiry := extract.DefaultExpiry
	if req.GetExpiry() != nil {
		expiry = req.GetExpiry().AsDuration()
	}
	all, names := d.names(), req.GetFiles()
	if len(names) == 0 {
		names = all
	}
	until := s.cfg.Clock().Add(expiry)
	out := &lopnrv1.PresignDeliveryResponse{}
	for i, name := range names {
		if !slices.Contains(all, name) {
			return nil, &fieldError{field("files", i), "the name of a file of the delivery"}
		}
		u, err := s.cfg.Sink.Presign(ctx, d.Project, d.ID, name, expiry)
		if err != nil {
			return nil, err
		}
		out.Files = append(out.Files, &lopnrv1.PresignedFile{Name: name, Url: u, Expires: timestamppb.New(until)})
	}
	return out, nil
}

// dropDelivery removes a delivery's record: for a delivery that was never
// complete, whose files are gone. A missing record is not an error.
func (s *Server) dropDelivery(id string) error {
	r := s.deliveries
	r.mu.Lock()
	defer r.mu.Unlock()
	p, err := r.path(id)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove delivery %s: %w", id, err)
	}
	return nil
}

// unstage removes what a delivery that will not be released holds in the
// sink's staging place, then its record.
func (s *Server) unstage(ctx context.Context, d deliveryRecord) error {
	if err := s.cfg.Sink.Abandon(ctx, d.Project, d.ID); err != nil {
		return err
	}
	return s.dropDelivery(d.ID)
}

// discardStaged is unstage with a context of its own, for a job whose
// context may have ended.
func (s *Server) discardStaged(d deliveryRecord) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return s.unstage(ctx, d)
}

// cleanup removes what a job killed with the server left: its delivery,
// staged or being staged, with its record (the job did not succeed, so the
// delivery was never released), a published delivery under its id that no
// released record accounts for, and its work directory.
func (s *Server) cleanup(j jobs.Job) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d, err := s.deliveries.get(j.ID)
	switch {
	case errors.Is(err, errNotFound):
		err = errors.Join(s.cfg.Sink.Abandon(ctx, j.Project, j.ID), s.cfg.Sink.Withdraw(ctx, j.Project, j.ID))
	case err != nil:
	case d.state() == deliveryStaging || d.state() == deliveryStaged:
		err = errors.Join(s.cfg.Sink.Withdraw(ctx, d.Project, d.ID), s.unstage(ctx, d))
	}
	return errors.Join(err, os.RemoveAll(s.workDir(j.ID)))
}

// reconcile makes the sink and the delivery records agree, when the server
// starts: after the job runner has failed the jobs the last server left
// running (cleanup) and before any job starts. Records first: a delivery
// still staging, or staged by a job that did not succeed, is removed with
// its record; a release cut short is finished, or undone when finishing
// fails; a record kept before deliveries were staged whose delivery was
// published without a release is withdrawn. Then the sink: a staged or
// published set of files that no record in the matching state accounts
// for is removed. Each removal is logged and audited, never a value.
func (s *Server) reconcile(all []jobs.Job) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	succeeded := map[string]bool{}
	for _, j := range all {
		succeeded[j.ID] = j.State == jobs.Succeeded
	}
	records, err := s.deliveries.list()
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range records {
		if err := s.settleRecord(ctx, d, succeeded[d.Job]); err != nil {
			errs = append(errs, fmt.Errorf("delivery %s: %w", d.ID, err))
		}
	}
	stored, err := s.cfg.Sink.Deliveries(ctx)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, st := range stored {
		if err := s.settleStored(ctx, st); err != nil {
			errs = append(errs, fmt.Errorf("delivery %s: %w", st.ID, err))
		}
	}
	return errors.Join(errs...)
}

// settleRecord brings one delivery's files in line with its record.
func (s *Server) settleRecord(ctx context.Context, d deliveryRecord, jobSucceeded bool) error {
	switch d.state() {
	case deliveryStaging:
		s.recovered(d, "removed: its job stopped before the delivery was complete")
		return s.unstage(ctx, d)
	case deliveryStaged:
		if jobSucceeded {
			return nil
		}
		s.recovered(d, "removed: its job did not succeed")
		return s.unstage(ctx, d)
	case deliveryReleasing:
		err := s.cfg.Sink.Release(ctx, d.Project, d.ID)
		if err == nil {
			s.recovered(d, "released: finished the release that "+d.ReleasedBy+" began")
			_, err = s.markReleased(d.ID)
			return err
		}
		// Undo: nothing of it published; the approver releases it again.
		s.log.Error("finishing a release failed; undoing it", "delivery", d.ID, "project", d.Project, "err", err)
		if werr := s.cfg.Sink.Withdraw(ctx, d.Project, d.ID); werr != nil {
			return errors.Join(err, werr)
		}
		s.recovered(d, "not released: finishing the release failed, and it was undone: release it again")
		_, err = s.deliveries.update(d.ID, func(d *deliveryRecord) error {
			d.State, d.ReleasedBy, d.ReleasedAt = deliveryStaged, "", time.Time{}
			return nil
		})
		return err
	case deliveryLegacy:
		s.recovered(d, "withdrawn: an earlier lopnrd published it before it was released; run its job again")
		if err := s.cfg.Sink.Withdraw(ctx, d.Project, d.ID); err != nil {
			return err
		}
		return s.unstage(ctx, d)
	}
	return nil
}

// settleStored removes a set of files from the sink unless a record in the
// matching state accounts for it: published, a released delivery; staged,
// a delivery staged or being released.
func (s *Server) settleStored(ctx context.Context, st extract.StoredDelivery) error {
	d, err := s.deliveries.get(st.ID)
	if errors.Is(err, seal.ErrAltered) {
		// A refused record (logged) decides nothing: the files stay where
		// they are, unpublished if staged, for the record to be restored.
		return nil
	}
	if err != nil && !errors.Is(err, errNotFound) {
		return err
	}
	known := err == nil && d.Project == st.Project
	if !known {
		d = deliveryRecord{ID: st.ID, Project: st.Project}
	}
	switch {
	case st.Published && known && d.state() == deliveryReleased:
		return nil
	case st.Published:
		s.recovered(d, "withdrawn: published without a released record")
		return s.cfg.Sink.Withdraw(ctx, st.Project, st.ID)
	case known && (d.state() == deliveryStaged || d.state() == deliveryReleasing):
		return nil
	case known && d.state() == deliveryReleased:
		s.recovered(d, "removed what an interrupted release left staged")
	default:
		s.recovered(d, "removed: staged without a record")
	}
	return s.cfg.Sink.Abandon(ctx, st.Project, st.ID)
}

// recovered logs and audits what reconcile did to a delivery.
func (s *Server) recovered(d deliveryRecord, what string) {
	s.log.Warn("delivery "+what, "delivery", d.ID, "project", d.Project)
	if _, err := s.cfg.Audit.Append(audit.Entry{Identity: "lopnrd/recover", Action: "delivery.recover", Project: d.Project, Job: d.Job,
		Outcome: "ok", Reason: "delivery " + d.ID + " " + what}); err != nil {
		s.log.Error("audit log append failed", "err", err, "delivery", d.ID)
	}
}
