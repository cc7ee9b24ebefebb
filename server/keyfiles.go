package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
	"github.com/lopnr/lopnr/server/authz"
)

// keyFileGrant lets a partner have one key file of a project: the partner
// asks with a reason, a second person approves, and the partner gets the
// file once.
type keyFileGrant struct {
	ID         string    `json:"id"`
	Project    string    `json:"project"`
	Partner    string    `json:"partner"`
	Reason     string    `json:"reason"`
	Requested  time.Time `json:"requested"`
	ApprovedBy string    `json:"approved_by,omitempty"`
	Approved   time.Time `json:"approved,omitzero"`
	Used       time.Time `json:"used,omitzero"`
}

func (g keyFileGrant) proto() *lopnrv1.KeyFileGrant {
	out := &lopnrv1.KeyFileGrant{Id: g.ID, Project: g.Project, Partner: g.Partner, Reason: g.Reason,
		Requested: timestamppb.New(g.Requested), ApprovedBy: g.ApprovedBy}
	if !g.Approved.IsZero() {
		out.Approved = timestamppb.New(g.Approved)
	}
	if !g.Used.IsZero() {
		out.Used = timestamppb.New(g.Used)
	}
	return out
}

func (ps partnerService) RequestKeyFile(ctx context.Context, req *lopnrv1.RequestKeyFileRequest) (*lopnrv1.KeyFileGrant, error) {
	s, ci := ps.s, call(ctx)
	if err := reason(ctx, req.GetReason()); err != nil {
		return nil, err
	}
	if _, _, err := s.registered(ctx, req.GetProject(), exchangeKeyFile); err != nil {
		return nil, err
	}
	if _, err := s.cfg.Keys.Project(ctx, req.GetProject()); err != nil {
		return nil, err // destroyed or past retention
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	g := keyFileGrant{ID: "k-" + hex.EncodeToString(b[:]), Project: req.GetProject(), Partner: ci.identity,
		Reason: req.GetReason(), Requested: s.cfg.Clock().UTC()}
	ci.job = g.ID
	if err := s.grants.create(g.ID, g); err != nil {
		return nil, err
	}
	return g.proto(), nil
}

func (ps partnerService) ApproveKeyFile(ctx context.Context, req *lopnrv1.ApproveKeyFileRequest) (*lopnrv1.KeyFileGrant, error) {
	s, ci := ps.s, call(ctx)
	ci.job = req.GetId()
	g, err := s.grant(req.GetProject(), req.GetId())
	if err != nil {
		return nil, err
	}
	ci.reason = "key file for " + g.Partner + ": " + g.Reason
	rec, err := s.projects.get(g.Project)
	if err != nil {
		return nil, err
	}
	if err := rec.live(); err != nil {
		return nil, err
	}
	// The second person is neither the partner nor whoever proposed its
	// registration: one person cannot register a partner of their own and
	// hand it the kodnyckel.
	i := slices.IndexFunc(rec.Partners, func(p partnerRecord) bool { return p.Identity == g.Partner })
	switch {
	case i < 0:
		return nil, &notPartnerError{g.Partner, g.Project}
	case g.Partner == ci.identity:
		return nil, &fourEyesError{"a second person approves a key file, not the partner who asked"}
	case rec.Partners[i].RegisteredBy == ci.identity:
		return nil, &fourEyesError{"a second person approves a partner's key files, not the one who proposed its registration; ask another approver or key holder"}
	}
	g, err = s.grants.update(g.ID, func(g *keyFileGrant) error {
		if g.ApprovedBy != "" {
			return &stateError{"key-file grant " + g.ID + " was approved by " + g.ApprovedBy}
		}
		g.ApprovedBy, g.Approved = ci.identity, s.cfg.Clock().UTC()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return g.proto(), nil
}

// grant returns a key-file grant of the project the call names.
func (s *Server) grant(project, id string) (keyFileGrant, error) {
	g, err := s.grants.get(id)
	if err == nil && g.Project != project {
		return keyFileGrant{}, &notFoundError{"key-file grant", id}
	}
	return g, err
}

func (ps partnerService) ListKeyFileGrants(ctx context.Context, req *lopnrv1.ListKeyFileGrantsRequest) (*lopnrv1.ListKeyFileGrantsResponse, error) {
	s, ci := ps.s, call(ctx)
	if req.GetProject() == "" {
		return nil, &fieldError{"project", "the project whose key-file grants to list"}
	}
	all, err := s.grants.list()
	if err != nil {
		return nil, err
	}
	// A partner sees only its own grants.
	everyone := s.cfg.Policy.Has(ci.identity, req.GetProject(), authz.Approver, authz.Keyholder, authz.Auditor, authz.Admin)
	out := &lopnrv1.ListKeyFileGrantsResponse{}
	for _, g := range all {
		if g.Project == req.GetProject() && (everyone || g.Partner == ci.identity) {
			out.Grants = append(out.Grants, g.proto())
		}
	}
	slices.SortFunc(out.Grants, func(a, b *lopnrv1.KeyFileGrant) int { return b.Requested.AsTime().Compare(a.Requested.AsTime()) })
	return out, nil
}
