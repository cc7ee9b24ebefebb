package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
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
	ID     string `json:"id"`
	EPMDnr string `json:"epm_dnr"`
	// Approval and Recipients are the project's approved rules, the only
	// ones jobs use: empty until a second person approves the first
	// change.
	Approval   extract.Approval `json:"approval"`
	Recipients []string         `json:"recipients"`
	CreatedBy  string           `json:"created_by"`
	// Partners are the partner authorities registered on the project
	// (approved registrations only).
	Partners []partnerRecord `json:"partners,omitempty"`
	// Changes are the project's proposed changes, pending and approved.
	Changes []changeRecord `json:"changes,omitempty"`
	// RulesChange is the change whose rules are in force ("" before the
	// first approval, and in records kept before it was).
	RulesChange string `json:"rules_change,omitempty"`
	// Destroyed is set when the kodnyckel was destroyed and this record
	// reduced to what the receipt needs (forget).
	Destroyed time.Time `json:"destroyed,omitzero"`
	// Forgotten counts what forget dropped.
	Forgotten *forgotten `json:"forgotten,omitempty"`
}

// approved reports whether a second person has approved rules for the
// project.
func (r projectRecord) approved() bool { return len(r.Approval.Variables) > 0 }

// changeRecord is a proposed change of a project: new rules, or a
// partner's registration.
type changeRecord struct {
	ID         string         `json:"id"`
	ProposedBy string         `json:"proposed_by"`
	Proposed   time.Time      `json:"proposed"`
	Reason     string         `json:"reason"`
	ApprovedBy string         `json:"approved_by,omitempty"`
	Approved   time.Time      `json:"approved,omitzero"`
	Rules      *rulesRecord   `json:"rules,omitempty"`
	Partner    *partnerRecord `json:"partner,omitempty"`
	// Base is, for new rules, the change whose rules were in force when
	// they were proposed: they replace those as a whole, and are stale
	// once another change has replaced them.
	Base string `json:"base,omitempty"`
}

// rulesRecord is a set of project rules, as kept.
type rulesRecord struct {
	Approval   extract.Approval `json:"approval"`
	Recipients []string         `json:"recipients"`
}

func (c changeRecord) proto(project string) *lopnrv1.ProjectChange {
	out := &lopnrv1.ProjectChange{Id: c.ID, Project: project, State: lopnrv1.ChangeState_CHANGE_STATE_PENDING,
		ProposedBy: c.ProposedBy, Proposed: timestamppb.New(c.Proposed), Reason: c.Reason, ApprovedBy: c.ApprovedBy}
	if c.ApprovedBy != "" {
		out.State, out.Approved = lopnrv1.ChangeState_CHANGE_STATE_APPROVED, timestamppb.New(c.Approved)
	}
	switch {
	case c.Rules != nil:
		out.Rules = RulesProto(c.Rules.Approval, c.Rules.Recipients)
	case c.Partner != nil:
		out.Partner = c.Partner.proto(project)
	}
	return out
}

type projectService struct {
	lopnrv1.UnimplementedProjectServiceServer
	s *Server
}

// maxRetentionDays bounds a new project's retention; longer needs an
// approver's extension with a reason.
const maxRetentionDays = 5 * 365

// checkRules reads proposed rules, naming the field under prefix.
func checkRules(prefix string, r *lopnrv1.ProjectRules) (rulesRecord, error) {
	a, err := approvalFromRules(prefix, r)
	if err != nil {
		return rulesRecord{}, err
	}
	if len(r.GetRecipients()) == 0 {
		return rulesRecord{}, &fieldError{prefix + "recipients", "at least one researcher's age public key (age1… or age1pq1…)"}
	}
	if _, err := extract.ParseRecipients(r.GetRecipients()); err != nil {
		return rulesRecord{}, &fieldError{prefix + "recipients", "age public keys (age1… or age1pq1…)"}
	}
	return rulesRecord{Approval: a, Recipients: slices.Clone(r.GetRecipients())}, nil
}

func (p projectService) CreateProject(ctx context.Context, req *lopnrv1.CreateProjectRequest) (*lopnrv1.Project, error) {
	s, ci := p.s, call(ctx)
	ci.project = req.GetId()
	switch {
	case !recordID.MatchString(req.GetId()) || len(req.GetId()) > 64:
		return nil, &fieldError{"id", "a project id of lower-case letters, digits, '.', '_' and '-', at most 64"}
	case strings.TrimSpace(req.GetEpmDnr()) == "":
		return nil, &fieldError{"epm_dnr", "the ethics approval's diary number, such as 2025-01234-01"}
	case req.GetRetentionDays() < 0 || req.GetRetentionDays() > maxRetentionDays:
		return nil, &fieldError{"retention_days", "0 (90 days) to 1825; extend later with a reason"}
	}
	rules, err := checkRules("", &lopnrv1.ProjectRules{ApprovedVariables: req.GetApprovedVariables(),
		ApprovedSources: req.GetApprovedSources(), AllowPersonnummer: req.GetAllowPersonnummer(), Recipients: req.GetRecipients()})
	if err != nil {
		return nil, err
	}
	// The rules are the project's first change: nothing runs until a
	// second person approves them.
	now := s.cfg.Clock().UTC()
	rec := projectRecord{ID: req.GetId(), EPMDnr: req.GetEpmDnr(), CreatedBy: ci.identity,
		Changes: []changeRecord{{ID: "c1", ProposedBy: ci.identity, Proposed: now, Reason: "the project's first rules", Rules: &rules}}}
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
	ci.reason = "change c1 proposed: " + rulesSummary(rulesRecord{}, rules)
	return s.projectView(ctx, rec)
}

// rulesSummary says what new rules change, for the audit log: counts and
// names, never a key or a value.
func rulesSummary(old, rules rulesRecord) string {
	varKey := func(v extract.ApprovedVariable) string {
		return v.Source + "." + v.Column + "(" + strings.Join(v.Transforms, ",") + ")"
	}
	var added, removed int
	for _, v := range rules.Approval.Variables {
		if !slices.ContainsFunc(old.Approval.Variables, func(o extract.ApprovedVariable) bool { return varKey(o) == varKey(v) }) {
			added++
		}
	}
	for _, v := range old.Approval.Variables {
		if !slices.ContainsFunc(rules.Approval.Variables, func(o extract.ApprovedVariable) bool { return varKey(o) == varKey(v) }) {
			removed++
		}
	}
	var radd, rrem int
	for _, r := range rules.Recipients {
		if !slices.Contains(old.Recipients, r) {
			radd++
		}
	}
	for _, r := range old.Recipients {
		if !slices.Contains(rules.Recipients, r) {
			rrem++
		}
	}
	return fmt.Sprintf("%d approved variables (%d added, %d removed), allow_personnummer %t (was %t), %d recipients (%d added, %d removed)",
		len(rules.Approval.Variables), added, removed, rules.Approval.AllowPersonnummer, old.Approval.AllowPersonnummer,
		len(rules.Recipients), radd, rrem)
}

// nextChange is the id of a project's next change.
func nextChange(r *projectRecord) string { return "c" + itoa(len(r.Changes)+1) }

func (p projectService) ProposeChange(ctx context.Context, req *lopnrv1.ProposeChangeRequest) (*lopnrv1.ProjectChange, error) {
	s, ci := p.s, call(ctx)
	if err := reason(ctx, req.GetReason()); err != nil {
		return nil, err
	}
	if req.GetRules() == nil {
		return nil, &fieldError{"rules", "the project's new rules: approved variables, sources, allow_personnummer and recipients, as a whole"}
	}
	rules, err := checkRules("rules.", req.GetRules())
	if err != nil {
		return nil, err
	}
	var ch changeRecord
	rec, err := s.projects.update(req.GetProject(), func(r *projectRecord) error {
		if err := r.live(); err != nil {
			return err
		}
		ch = changeRecord{ID: nextChange(r), ProposedBy: ci.identity, Proposed: s.cfg.Clock().UTC(), Reason: req.GetReason(), Rules: &rules, Base: r.RulesChange}
		r.Changes = append(r.Changes, ch)
		return nil
	})
	if err != nil {
		return nil, err
	}
	ci.job = ch.ID
	ci.reason = fmt.Sprintf("change %s proposed: %s; reason: %s", ch.ID,
		rulesSummary(rulesRecord{Approval: rec.Approval, Recipients: rec.Recipients}, rules), req.GetReason())
	return ch.proto(rec.ID), nil
}

// live refuses a change of a destroyed project.
func (r projectRecord) live() error {
	if !r.Destroyed.IsZero() {
		return &keystore.DestroyedError{Project: r.ID, At: r.Destroyed}
	}
	return nil
}

func (p projectService) ApproveChange(ctx context.Context, req *lopnrv1.ApproveChangeRequest) (*lopnrv1.ProjectChange, error) {
	s, ci := p.s, call(ctx)
	ci.job = req.GetId()
	var ch changeRecord
	var what string
	rec, err := s.projects.update(req.GetProject(), func(r *projectRecord) error {
		if err := r.live(); err != nil {
			return err
		}
		i := slices.IndexFunc(r.Changes, func(c changeRecord) bool { return c.ID == req.GetId() })
		if i < 0 {
			return &notFoundError{"change", req.GetId()}
		}
		c := &r.Changes[i]
		switch {
		case c.ApprovedBy != "":
			return &stateError{"change " + c.ID + " of project " + r.ID + " was approved by " + c.ApprovedBy}
		case c.ProposedBy == ci.identity:
			return &fourEyesError{"a second person approves a change of a project's rules or partners, not the one who proposed it"}
		}
		switch {
		case c.Rules != nil:
			// New rules replace the rules in force when they were
			// proposed, as a whole: approved after another change has
			// replaced those, they would undo it under a reason that
			// never spoke of it.
			if c.Base != r.RulesChange {
				return &stateError{staleChange(c.ID, c.Base, r.RulesChange)}
			}
			what = rulesSummary(rulesRecord{Approval: r.Approval, Recipients: r.Recipients}, *c.Rules)
			r.Approval, r.Recipients, r.RulesChange = c.Rules.Approval, slices.Clone(c.Rules.Recipients), c.ID
		case c.Partner != nil:
			if slices.ContainsFunc(r.Partners, func(p partnerRecord) bool { return p.Identity == c.Partner.Identity }) {
				return &existsError{"partner", c.Partner.Identity}
			}
			p := *c.Partner
			p.ApprovedBy = ci.identity
			r.Partners = append(r.Partners, p)
			what = fmt.Sprintf("partner %s registered, exchanges %s, budget %d", p.Identity, strings.Join(p.Exchanges, ","), p.Budget)
		}
		c.ApprovedBy, c.Approved = ci.identity, s.cfg.Clock().UTC()
		ch = *c
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := s.checkApprovals(ctx, rec); err != nil {
		return nil, err
	}
	if ch.Partner != nil {
		ch.Partner.ApprovedBy = ch.ApprovedBy
	}
	ci.reason = fmt.Sprintf("change %s proposed by %s approved: %s", ch.ID, ch.ProposedBy, what)
	return ch.proto(rec.ID), nil
}

// staleChange says why new rules proposed over base cannot be approved now
// that the rules of current are in force.
func staleChange(id, base, current string) string {
	over := "before any rules were approved"
	if base != "" {
		over = "when the rules of " + base + " were in force"
	}
	return fmt.Sprintf("change %s was proposed %s; %s's have replaced them since, and approving %s would undo that change: propose it again from the rules in force", id, over, current, id)
}

func (p projectService) ListChanges(ctx context.Context, req *lopnrv1.ListChangesRequest) (*lopnrv1.ListChangesResponse, error) {
	rec, err := p.s.projects.get(req.GetProject())
	if err != nil {
		return nil, err
	}
	out := &lopnrv1.ListChangesResponse{}
	for _, c := range rec.Changes {
		if c.Partner != nil && c.ApprovedBy != "" {
			c.Partner.ApprovedBy = c.ApprovedBy
		}
		out.Changes = append(out.Changes, c.proto(rec.ID))
	}
	return out, nil
}

// approvedProject returns a project for a job: one whose rules a second
// person has approved, and which is not destroyed. Jobs use only the
// approved rules.
func (s *Server) approvedProject(ctx context.Context, id string) (projectRecord, error) {
	rec, err := s.projects.get(id)
	if err != nil {
		return rec, err
	}
	if err := rec.live(); err != nil {
		return rec, err
	}
	if err := s.checkApprovals(ctx, rec); err != nil {
		return rec, err
	}
	if !rec.approved() {
		return rec, &stateError{fmt.Sprintf("project %s has no approved rules yet: a second person approves its proposed change (lopnr projects changes %s; lopnr projects approve %s CHANGE)", id, id, id)}
	}
	return rec, nil
}

// lastApproved is the number of the newest approved change of a project
// (rules or a partner's registration), 0 for none. Changes are numbered
// in the order they were proposed, and each approved change of rules was
// proposed over the rules in force, so a project's approved changes only
// ever grow.
func (r projectRecord) lastApproved() int {
	n := 0
	for _, c := range r.Changes {
		if c.ApprovedBy != "" {
			if i, err := strconv.Atoi(strings.TrimPrefix(c.ID, "c")); err == nil && i > n {
				n = i
			}
		}
	}
	return n
}

// approvalsRecord is the key-store service record that keeps the newest
// approved change of a project, out of the data directory's reach.
func approvalsRecord(project string) string { return "approvals." + project }

// checkApprovals refuses a project record that the newest approved change
// in the key store is not in: an older version put back in the data
// directory (sealed records stop edits, not rollbacks), which would bring
// back rules or a partner a later change replaced. A record ahead of the
// key store is an approval cut short between its two writes: the key
// store is brought up to it.
func (s *Server) checkApprovals(ctx context.Context, rec projectRecord) error {
	have := rec.lastApproved()
	return s.cfg.Keys.UpdateServiceRecord(ctx, approvalsRecord(rec.ID), func(old []byte) ([]byte, error) {
		kept := 0
		if old != nil {
			var err error
			if kept, err = strconv.Atoi(string(old)); err != nil {
				return nil, fmt.Errorf("project %s: the key store's record of its approvals is damaged", rec.ID)
			}
		}
		switch {
		case have < kept:
			s.log.Error("record refused", "record", "projects/"+rec.ID+".json", "why", "rolled back", "approved", have, "key_store", kept)
			return nil, &stateError{fmt.Sprintf("projects/%s.json was put back to an older version (its newest approved change is c%d, the key store's c%d) and is refused; restore the newest copy", rec.ID, have, kept)}
		case have > kept || old == nil:
			return []byte(strconv.Itoa(have)), nil
		}
		return nil, nil
	})
}

func field(name string, i int) string { return name + "[" + itoa(i) + "]" }

// seesReasons are the roles that see why a retention was extended or a
// hold set: those who decide and audit it. Researchers and extractors see
// that it was, not why.
var seesReasons = []authz.Role{authz.Approver, authz.Keyholder, authz.Auditor, authz.Admin}

// seesProject are the roles that see a project's record; a partner sees
// only its id.
var seesProject = []authz.Role{authz.Extractor, authz.Approver, authz.Keyholder, authz.Researcher, authz.Auditor, authz.Admin}

// projectView returns a project as the caller may see it, with its
// kodnyckel's state.
func (s *Server) projectView(ctx context.Context, rec projectRecord) (*lopnrv1.Project, error) {
	id := call(ctx).identity
	if !s.cfg.Policy.Has(id, rec.ID, seesProject...) {
		return &lopnrv1.Project{Id: rec.ID}, nil
	}
	out := &lopnrv1.Project{Id: rec.ID, EpmDnr: rec.EPMDnr, CreatedBy: rec.CreatedBy}
	if rec.approved() {
		r := RulesProto(rec.Approval, rec.Recipients)
		out.ApprovedVariables, out.ApprovedSources, out.AllowPersonnummer, out.Recipients = r.ApprovedVariables, r.ApprovedSources, r.AllowPersonnummer, r.Recipients
	}
	for _, c := range rec.Changes {
		if c.ApprovedBy == "" {
			out.PendingChanges = append(out.PendingChanges, c.ID)
		}
	}
	if !rec.Destroyed.IsZero() {
		out.Destroyed = timestamppb.New(rec.Destroyed)
		return out, nil
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
	reasons := s.cfg.Policy.Has(id, rec.ID, seesReasons...)
	out.Created, out.RetainUntil = timestamppb.New(meta.Created), timestamppb.New(meta.RetainUntil)
	out.Hold = meta.Hold
	if reasons {
		out.HoldReason = meta.HoldReason
	}
	for _, c := range meta.Changes {
		ch := &lopnrv1.RetentionChange{At: timestamppb.New(c.At), Action: c.Action}
		if reasons {
			ch.Reason = c.Reason
		}
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
	return p.s.projectView(ctx, rec)
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
		if !p.s.visible(ctx, "project.list", rec.ID) {
			continue
		}
		pr, err := p.s.projectView(ctx, rec)
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
	return p.s.projectView(ctx, rec)
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
	return p.s.projectView(ctx, rec)
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
	// The kodnyckel is gone; what the server keeps of the project goes
	// down to what the receipt needs. Should that fail, the next sweep
	// finishes it: the destruction itself stands.
	if err := p.s.forget(req.GetId(), r.DestroyedAt); err != nil {
		p.s.log.Error("forgetting a destroyed project's records", "project", req.GetId(), "err", err)
	}
	return receipt(r), nil
}

func receipt(r keystore.Receipt) *lopnrv1.Receipt {
	return &lopnrv1.Receipt{Project: r.Project, DestroyedAt: timestamppb.New(r.DestroyedAt), RetainUntil: timestamppb.New(r.RetainUntil),
		Paths: int64(r.Paths), Mappings: r.Mappings, Digest: r.Digest}
}
