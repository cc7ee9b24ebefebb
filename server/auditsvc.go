package server

import (
	"context"
	"errors"

	"google.golang.org/protobuf/types/known/timestamppb"

	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
	"github.com/lopnr/lopnr/server/audit"
)

type auditService struct {
	lopnrv1.UnimplementedAuditServiceServer
	s *Server
}

func (as auditService) ListAudit(ctx context.Context, req *lopnrv1.ListAuditRequest) (*lopnrv1.ListAuditResponse, error) {
	limit := int(req.GetLimit())
	if limit < 0 || limit > 10000 {
		return nil, &fieldError{"limit", "0 (1000) to 10000"}
	}
	if limit == 0 {
		limit = 1000
	}
	entries, err := as.s.cfg.Audit.List(req.GetAfter(), limit, func(e audit.Entry) bool {
		if req.GetProject() != "" && e.Project != req.GetProject() {
			return false
		}
		// An auditor of one project sees that project's entries; entries
		// of no project need a global role.
		return as.s.visible(ctx, "audit.list", e.Project) && (e.Project != "" || len(as.s.cfg.Policy.Roles(call(ctx).identity, "")) > 0)
	})
	if err != nil {
		return nil, err
	}
	out := &lopnrv1.ListAuditResponse{}
	for _, e := range entries {
		out.Entries = append(out.Entries, &lopnrv1.AuditEntry{Seq: e.Seq, Time: timestamppb.New(e.Time), Identity: e.Identity,
			Action: e.Action, Project: e.Project, Job: e.Job, Outcome: e.Outcome, Reason: e.Reason, Digest: e.Digest,
			Prev: e.Prev, Hash: e.Hash})
	}
	return out, nil
}

// VerifyAudit verifies the log on disk: its chain, and that it extends the
// newest signed checkpoint kept in the key store. A log cut before the
// checkpoint or rewritten under it answers not ok, with the problem; the
// checkpoint and its verifier key come with the answer, for an auditor to
// keep and check elsewhere (lopnr audit verify FILE --checkpoint --key).
func (as auditService) VerifyAudit(ctx context.Context, _ *lopnrv1.VerifyAuditRequest) (*lopnrv1.VerifyAuditResponse, error) {
	log := as.s.cfg.Audit
	head, cp, err := log.VerifyCheckpoint(ctx)
	resp := &lopnrv1.VerifyAuditResponse{Checkpoint: string(cp.Note), CheckpointSize: cp.Size, VerifierKey: log.VerifierKey()}
	if errors.Is(err, audit.ErrTampered) {
		resp.Problem = err.Error()
		return resp, nil
	}
	if err != nil {
		return nil, err
	}
	resp.Ok, resp.HeadSeq, resp.HeadHash = true, head.Seq, head.Hash
	return resp, nil
}
