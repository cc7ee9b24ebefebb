package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lopnr/lopnr/keystore"
	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
	"github.com/lopnr/lopnr/server/sweeper"
)

// reidentRecord is a request to re-identify a LopNr. It holds the run
// number and the reason, never the answer.
type reidentRecord struct {
	ID          string    `json:"id"`
	Project     string    `json:"project"`
	RunNumber   int64     `json:"run_number"`
	Reason      string    `json:"reason"`
	RequestedBy string    `json:"requested_by"`
	ApprovedBy  string    `json:"approved_by,omitempty"`
	Done        bool      `json:"done,omitempty"`
	Created     time.Time `json:"created"`
}

func (r reidentRecord) proto() *lopnrv1.Reidentification {
	st := lopnrv1.ReidentificationState_REIDENTIFICATION_STATE_PENDING
	switch {
	case r.Done:
		st = lopnrv1.ReidentificationState_REIDENTIFICATION_STATE_DONE
	case r.ApprovedBy != "":
		st = lopnrv1.ReidentificationState_REIDENTIFICATION_STATE_APPROVED
	}
	return &lopnrv1.Reidentification{Id: r.ID, Project: r.Project, RunNumber: r.RunNumber, Reason: r.Reason,
		RequestedBy: r.RequestedBy, ApprovedBy: r.ApprovedBy, State: st, Created: timestamppb.New(r.Created)}
}

type keyService struct {
	lopnrv1.UnimplementedKeyServiceServer
	s *Server
}

func (ks keyService) RequestReidentification(ctx context.Context, req *lopnrv1.RequestReidentificationRequest) (*lopnrv1.Reidentification, error) {
	s, ci := ks.s, call(ctx)
	if err := reason(ctx, req.GetReason()); err != nil {
		return nil, err
	}
	if req.GetRunNumber() <= 0 {
		return nil, &fieldError{"run_number", "a LopNr of the project (1, 2, 3, …)"}
	}
	if _, err := s.projects.get(req.GetProject()); err != nil {
		return nil, err
	}
	if _, err := s.cfg.Keys.Project(ctx, req.GetProject()); err != nil {
		return nil, err // destroyed: nothing can be re-identified
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	r := reidentRecord{ID: "r-" + hex.EncodeToString(b[:]), Project: req.GetProject(), RunNumber: req.GetRunNumber(),
		Reason: ci.reason, RequestedBy: ci.identity, Created: s.cfg.Clock().UTC()}
	ci.job = r.ID
	if err := s.reidents.create(r.ID, r); err != nil {
		return nil, err
	}
	return r.proto(), nil
}

// reident returns a request of the project the call names.
func (s *Server) reident(project, id string) (reidentRecord, error) {
	r, err := s.reidents.get(id)
	if err == nil && r.Project != project {
		return reidentRecord{}, &notFoundError{"re-identification", id}
	}
	return r, err
}

func (ks keyService) ApproveReidentification(ctx context.Context, req *lopnrv1.ApproveReidentificationRequest) (*lopnrv1.Reidentification, error) {
	s, ci := ks.s, call(ctx)
	ci.job = req.GetId()
	r, err := s.reident(req.GetProject(), req.GetId())
	if err != nil {
		return nil, err
	}
	ci.reason = r.Reason
	if r.RequestedBy == ci.identity {
		return nil, &fourEyesError{"a second person approves a re-identification, not the one who asked"}
	}
	r, err = s.reidents.update(r.ID, func(r *reidentRecord) error {
		if r.ApprovedBy != "" {
			return &stateError{"re-identification " + r.ID + " was approved by " + r.ApprovedBy}
		}
		r.ApprovedBy = ci.identity
		return nil
	})
	if err != nil {
		return nil, err
	}
	return r.proto(), nil
}

func (ks keyService) Reidentify(ctx context.Context, req *lopnrv1.ReidentifyRequest) (*lopnrv1.ReidentifyResponse, error) {
	s, ci := ks.s, call(ctx)
	ci.job = req.GetId()
	r, err := s.reident(req.GetProject(), req.GetId())
	if err != nil {
		return nil, err
	}
	ci.reason = r.Reason
	switch {
	case r.RequestedBy != ci.identity:
		return nil, &fourEyesError{"only the key holder who asked gets the answer"}
	case r.ApprovedBy == "":
		return nil, &stateError{"re-identification " + r.ID + " waits for a second person's approval"}
	case r.Done:
		return nil, &stateError{"re-identification " + r.ID + " was answered already; ask again with a reason"}
	}
	// Mark it done first: the answer is given at most once, even if the
	// call fails after this.
	if _, err := s.reidents.update(r.ID, func(r *reidentRecord) error {
		if r.Done {
			return &stateError{"re-identification " + r.ID + " was answered already"}
		}
		r.Done = true
		return nil
	}); err != nil {
		return nil, err
	}
	n, err := s.cfg.Keys.Reidentify(ctx, r.Project, keystore.RunNumber(r.RunNumber), r.Reason)
	if err != nil {
		return nil, err
	}
	return &lopnrv1.ReidentifyResponse{Personnummer: n.Canonical(), RunNumber: r.RunNumber}, nil
}

func (ks keyService) Sweep(ctx context.Context, _ *lopnrv1.SweepRequest) (*lopnrv1.SweepResponse, error) {
	receipts, err := sweeper.Once(ctx, ks.s, ks.s.cfg.Audit)
	if err != nil {
		return nil, err
	}
	out := &lopnrv1.SweepResponse{}
	for _, r := range receipts {
		out.Receipts = append(out.Receipts, receipt(r))
	}
	return out, nil
}
