package server

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lopnr/lopnr/extract"
	"github.com/lopnr/lopnr/keystore"
	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
	"github.com/lopnr/lopnr/server/authz"
	"github.com/lopnr/lopnr/server/jobs"
)

// projectRecord is a project's settings, kept by the server. Its
// kodnyckel, retention and holds are in the key store.
type projectRecord struct {
	ID         string           `json:"id"`
	EPMDnr     string           `json:"epm_dnr"`
	Approval   extract.Approval `json:"approval"`
	Recipients []string         `json:"recipients"`
	CreatedBy  string           `json:"created_by"`
	// Partners are the partner authorities registered on the project.
	Partners []partnerRecord `json:"partners,omitempty"`
}

type projectService struct {
	lopnrv1.UnimplementedProjectServiceServer
	s *Server
}

// maxRetentionDays bounds a new project's retention; longer needs an
// approver's extension with a reason.
const maxRetentionDays = 5 * 365

func (p projectService) CreateProject(ctx context.Context, req *lopnrv1.CreateProjectRequest) (*lopnrv1.Project, error) {
	s, ci := p.s, call(ctx)
	ci.project = req.GetId()
	switch {
	case !recordID.MatchString(req.GetId()) || len(req.GetId()) > 64:
		return nil, &fieldError{"id", "a project id of lower-case letters, digits, '.', '_' and '-', at most 64"}
	case strings.TrimSpace(req.GetEpmDnr()) == "":
		return nil, &fieldError{"epm_dnr", "the ethics approval's diary number, such as 2025-01234-01"}
	case len(req.GetApprovedVariables()) == 0:
		return nil, &fieldError{"approved_variables", "at least one approved variable"}
	case len(req.GetRecipients()) == 0:
		return nil, &fieldError{"recipients", "at least one researcher's age public key (age1… or age1pq1…)"}
	case req.GetRetentionDays() < 0 || req.GetRetentionDays() > maxRetentionDays:
		return nil, &fieldError{"retention_days", "0 (90 days) to 1825; extend later with a reason"}
	}
	if _, err := extract.ParseRecipients(req.GetRecipients()); err != nil {
		return nil, &fieldError{"recipients", "age public keys (age1… or age1pq1…)"}
	}
	rec := projectRecord{ID: req.GetId(), EPMDnr: req.GetEpmDnr(), Recipients: req.GetRecipients(), CreatedBy: ci.identity,
		Approval: extract.Approval{AllowPersonnummer: req.GetAllowPersonnummer()}}
	for i, v := range req.GetApprovedVariables() {
		if v.GetSource() == "" || v.GetColumn() == "" {
			return nil, &fieldError{field("approved_variables", i), "a source and a column"}
		}
		rec.Approval.Variables = append(rec.Approval.Variables,
			extract.ApprovedVariable{Source: v.GetSource(), Column: v.GetColumn(), Transforms: v.GetTransforms()})
	}
	if _, err := s.projects.get(rec.ID); err == nil {
		return nil, &existsError{"project", rec.ID}
	}
	spec := keystore.ProjectSpec{ID: rec.ID, EPMDnr: rec.EPMDnr}
	if d := req.GetRetentionDays(); d > 0 {
		spec.RetainUntil = s.cfg.Clock().Add(time.Duration(d) * 24 * time.Hour)
	}
	if _, err := s.cfg.Keys.CreateProject(ctx, spec); err != nil {
		return nil, err
	}
	if err := s.projects.create(rec.ID, rec); err != nil {
		return nil, err
	}
	return s.project(ctx, rec)
}

func field(name string, i int) string { return name + "[" + itoa(i) + "]" }

// project returns a project's settings with its kodnyckel's state.
func (s *Server) project(ctx context.Context, rec projectRecord) (*lopnrv1.Project, error) {
	out := &lopnrv1.Project{Id: rec.ID, EpmDnr: rec.EPMDnr, AllowPersonnummer: rec.Approval.AllowPersonnummer,
		Recipients: rec.Recipients, CreatedBy: rec.CreatedBy}
	for _, v := range rec.Approval.Variables {
		out.ApprovedVariables = append(out.ApprovedVariables, &lopnrv1.ApprovedVariable{Source: v.Source, Column: v.Column, Transforms: v.Transforms})
	}
	meta, err := s.cfg.Keys.Project(ctx, rec.ID)
	var destroyed *keystore.DestroyedError
	if errors.As(err, &destroyed) {
		out.Destroyed = timestamppb.New(destroyed.At)
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	out.Created, out.RetainUntil = timestamppb.New(meta.Created), timestamppb.New(meta.RetainUntil)
	out.Hold, out.HoldReason = meta.Hold, meta.HoldReason
	for _, c := range meta.Changes {
		ch := &lopnrv1.RetentionChange{At: timestamppb.New(c.At), Action: c.Action, Reason: c.Reason}
		if !c.Until.IsZero() {
			ch.Until = timestamppb.New(c.Until)
		}
		out.Changes = append(out.Changes, ch)
	}
	if !meta.Destroying {
		if out.Persons, err = s.cfg.Keys.Persons(ctx, rec.ID); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (p projectService) GetProject(ctx context.Context, req *lopnrv1.GetProjectRequest) (*lopnrv1.Project, error) {
	rec, err := p.s.projects.get(req.GetId())
	if err != nil {
		return nil, err
	}
	return p.s.project(ctx, rec)
}

// visible reports whether the caller may take action in project: lists
// show only what the caller could get one by one.
func (s *Server) visible(ctx context.Context, action authz.Action, project string) bool {
	return s.cfg.Policy.Authorize(call(ctx).identity, action, project) == nil
}

func (p projectService) ListProjects(ctx context.Context, _ *lopnrv1.ListProjectsRequest) (*lopnrv1.ListProjectsResponse, error) {
	recs, err := p.s.projects.list()
	if err != nil {
		return nil, err
	}
	out := &lopnrv1.ListProjectsResponse{}
	for _, rec := range recs {
		if !p.s.visible(ctx, "project.get", rec.ID) && !p.s.visible(ctx, "project.list", rec.ID) {
			continue
		}
		pr, err := p.s.project(ctx, rec)
		if err != nil {
			return nil, err
		}
		out.Projects = append(out.Projects, pr)
	}
	return out, nil
}

// reason checks a required reason and records it for the audit entry.
func reason(ctx context.Context, r string) error {
	if len(strings.TrimSpace(r)) < 5 {
		return &fieldError{"reason", "required: why, in words (at least 5 characters), for the audit log"}
	}
	call(ctx).reason = r
	return nil
}

func (p projectService) ExtendRetention(ctx context.Context, req *lopnrv1.ExtendRetentionRequest) (*lopnrv1.Project, error) {
	if err := reason(ctx, req.GetReason()); err != nil {
		return nil, err
	}
	if req.GetRetainUntil() == nil {
		return nil, &fieldError{"retain_until", "the new date the kodnyckel is kept until"}
	}
	rec, err := p.s.projects.get(req.GetId())
	if err != nil {
		return nil, err
	}
	if _, err := p.s.cfg.Keys.ExtendRetention(ctx, rec.ID, req.GetRetainUntil().AsTime(), req.GetReason()); err != nil {
		return nil, err
	}
	return p.s.project(ctx, rec)
}

func (p projectService) SetHold(ctx context.Context, req *lopnrv1.SetHoldRequest) (*lopnrv1.Project, error) {
	if err := reason(ctx, req.GetReason()); err != nil {
		return nil, err
	}
	rec, err := p.s.projects.get(req.GetId())
	if err != nil {
		return nil, err
	}
	if req.GetHold() {
		_, err = p.s.cfg.Keys.Hold(ctx, rec.ID, req.GetReason())
	} else {
		call(ctx).action = "project.release-hold"
		_, err = p.s.cfg.Keys.ReleaseHold(ctx, rec.ID, req.GetReason())
	}
	if err != nil {
		return nil, err
	}
	return p.s.project(ctx, rec)
}

func (p projectService) DestroyProject(ctx context.Context, req *lopnrv1.DestroyProjectRequest) (*lopnrv1.Receipt, error) {
	if err := reason(ctx, req.GetReason()); err != nil {
		return nil, err
	}
	if _, err := p.s.projects.get(req.GetId()); err != nil {
		return nil, err
	}
	if slices.ContainsFunc(p.s.jobs.List(req.GetId()), func(j jobs.Job) bool { return !j.State.Final() }) {
		return nil, &stateError{"project " + req.GetId() + " has jobs queued or running; cancel them first"}
	}
	r, err := p.s.cfg.Keys.Destroy(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	call(ctx).digest = r.Digest
	return receipt(r), nil
}

func receipt(r keystore.Receipt) *lopnrv1.Receipt {
	return &lopnrv1.Receipt{Project: r.Project, DestroyedAt: timestamppb.New(r.DestroyedAt), RetainUntil: timestamppb.New(r.RetainUntil),
		Paths: int64(r.Paths), Mappings: r.Mappings, Digest: r.Digest}
}
