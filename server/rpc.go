package server

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
	"github.com/lopnr/lopnr/server/audit"
	"github.com/lopnr/lopnr/server/authz"
)

// DevIdentity is a caller's identity when the server runs without TLS
// (lopnrd --dev) and the caller names no other dev identity.
const DevIdentity = "CN=dev,O=lopnrd --dev"

// DevIdentityHeader is the gRPC metadata key with which a caller of a
// server without TLS chooses one of DevIdentities (lopnr --dev --as NAME).
// A server with TLS ignores it: there the identity is the certificate's.
const DevIdentityHeader = "lopnr-dev-as"

// DevIdentities are the names of the other dev identities, each
// "CN=dev-NAME,O=lopnrd --dev": the second persons of the four-eyes steps
// on a laptop.
var DevIdentities = []string{"approver", "keyholder", "researcher", "partner", "auditor", "admin", "extractor"}

func devIdentity(name string) string { return "CN=dev-" + name + ",O=lopnrd --dev" }

// rule says how one RPC is authorised: the action it takes, and how to find
// the project it acts on from its request ("" for none).
type rule struct {
	action  authz.Action
	project func(s *Server, req any) (string, error)
	// quiet RPCs (reads of the caller's own view) are audited only when
	// refused.
	quiet bool
	// open RPCs need an authenticated caller and no role.
	open bool
	// sensitive RPCs (a release, a key file, blind linkage's evaluations,
	// a destruction, a re-identification, a four-eyes approval) are entered in the audit
	// log, with a signed checkpoint, before the handler runs, and refused
	// when they cannot be. Set it on every rule whose act lets data or the
	// kodnyckel out, or removes them.
	sensitive bool
}

// projectField reads the project from a request's project field.
func projectField(_ *Server, req any) (string, error) {
	if r, ok := req.(interface{ GetProject() string }); ok {
		return r.GetProject(), nil
	}
	return "", nil
}

func projectID(_ *Server, req any) (string, error) {
	return req.(interface{ GetId() string }).GetId(), nil
}

func noProject(*Server, any) (string, error) { return "", nil }

// jobProject finds the project of the job a request names.
func jobProject(s *Server, req any) (string, error) {
	j, err := s.jobs.Get(req.(interface{ GetId() string }).GetId())
	if err != nil {
		return "", err
	}
	return j.Project, nil
}

// specProject reads the project a submitted job spec names; the spec is
// validated in full by the service.
func specProject(_ *Server, req any) (string, error) {
	var head struct {
		Project string `yaml:"project"`
	}
	if err := yaml.Unmarshal(req.(*lopnrv1.SubmitJobRequest).GetSpec(), &head); err != nil || head.Project == "" {
		return "", &fieldError{field: "spec", want: "a YAML job spec that names its project"}
	}
	return head.Project, nil
}

// importProject reads the project from an import's header, its first
// message.
func importProject(_ *Server, req any) (string, error) {
	h := req.(*lopnrv1.ImportPartnerFileRequest).GetHeader()
	if h == nil {
		return "", &fieldError{"header", "the first message of an import: its header"}
	}
	return h.GetProject(), nil
}

// rules authorise every RPC of the lopnr.v1 API: one entry per method. A
// method without a rule is refused (a test checks that every served
// method has one).
var rules = map[string]rule{
	lopnrv1.SystemService_GetInfo_FullMethodName: {action: "system.info", project: noProject, quiet: true, open: true},

	lopnrv1.ProjectService_CreateProject_FullMethodName:   {action: "project.create", project: projectID},
	lopnrv1.ProjectService_GetProject_FullMethodName:      {action: "project.get", project: projectID, quiet: true},
	lopnrv1.ProjectService_ListProjects_FullMethodName:    {action: "project.list", project: noProject, quiet: true},
	lopnrv1.ProjectService_ExtendRetention_FullMethodName: {action: "project.extend", project: projectID},
	lopnrv1.ProjectService_SetHold_FullMethodName:         {action: "project.hold", project: projectID},
	lopnrv1.ProjectService_DestroyProject_FullMethodName:  {action: "project.destroy", project: projectID, sensitive: true},
	lopnrv1.ProjectService_ProposeChange_FullMethodName:   {action: "project.propose", project: projectField},
	lopnrv1.ProjectService_ApproveChange_FullMethodName:   {action: "project.approve", project: projectField, sensitive: true},
	lopnrv1.ProjectService_ListChanges_FullMethodName:     {action: "project.changes", project: projectField, quiet: true},

	lopnrv1.JobService_SubmitJob_FullMethodName: {action: "job.submit", project: specProject},
	lopnrv1.JobService_GetJob_FullMethodName:    {action: "job.get", project: jobProject, quiet: true},
	lopnrv1.JobService_ListJobs_FullMethodName:  {action: "job.list", project: projectField, quiet: true},
	lopnrv1.JobService_CancelJob_FullMethodName: {action: "job.cancel", project: jobProject},
	lopnrv1.JobService_WatchJob_FullMethodName:  {action: "job.get", project: jobProject, quiet: true},

	lopnrv1.DeliveryService_ListDeliveries_FullMethodName:  {action: "delivery.list", project: projectField, quiet: true},
	lopnrv1.DeliveryService_ReleaseDelivery_FullMethodName: {action: "delivery.release", project: projectField, sensitive: true},
	lopnrv1.DeliveryService_PresignDelivery_FullMethodName: {action: "delivery.presign", project: projectField},

	lopnrv1.KeyService_RequestReidentification_FullMethodName: {action: "key.reidentify", project: projectField},
	lopnrv1.KeyService_ApproveReidentification_FullMethodName: {action: "key.approve-reidentify", project: projectField, sensitive: true},
	lopnrv1.KeyService_Reidentify_FullMethodName:              {action: "key.reidentify", project: projectField, sensitive: true},
	lopnrv1.KeyService_Sweep_FullMethodName:                   {action: "key.sweep", project: noProject, sensitive: true},

	lopnrv1.PartnerService_RegisterPartner_FullMethodName:   {action: "partner.register", project: projectField},
	lopnrv1.PartnerService_ListPartners_FullMethodName:      {action: "partner.list", project: projectField, quiet: true},
	lopnrv1.PartnerService_GetPartnerKeys_FullMethodName:    {action: "partner.keys", project: projectField, quiet: true},
	lopnrv1.PartnerService_GetKeyFile_FullMethodName:        {action: "key.keyfile", project: projectField, sensitive: true},
	lopnrv1.PartnerService_RequestKeyFile_FullMethodName:    {action: "key.keyfile-request", project: projectField},
	lopnrv1.PartnerService_ApproveKeyFile_FullMethodName:    {action: "key.keyfile-approve", project: projectField, sensitive: true},
	lopnrv1.PartnerService_ListKeyFileGrants_FullMethodName: {action: "key.keyfile-grants", project: projectField, quiet: true},
	lopnrv1.PartnerService_Evaluate_FullMethodName:          {action: "partner.evaluate", project: projectField, sensitive: true},
	lopnrv1.PartnerService_ImportPartnerFile_FullMethodName: {action: "partner.import", project: importProject},

	lopnrv1.AuditService_ListAudit_FullMethodName:   {action: "audit.list", project: projectField, quiet: true},
	lopnrv1.AuditService_VerifyAudit_FullMethodName: {action: "audit.verify", project: noProject},
}

// callInfo is what the interceptor learns of a call, for the handler and
// the audit entry. Handlers fill in job, reason and digest.
type callInfo struct {
	identity string
	action   authz.Action
	project  string
	job      string
	reason   string
	digest   string
}

type callKey struct{}

// call returns the call's info; handlers run only behind the interceptor.
func call(ctx context.Context) *callInfo {
	return ctx.Value(callKey{}).(*callInfo)
}

// identity returns the caller's identity: the subject of the verified
// client certificate, or without TLS DevIdentity or the dev identity the
// caller names.
func (s *Server) identity(ctx context.Context) (string, error) {
	if s.cfg.TLS == nil {
		as := metadata.ValueFromIncomingContext(ctx, DevIdentityHeader)
		switch {
		case len(as) == 0:
			return DevIdentity, nil
		case len(as) == 1 && slices.Contains(DevIdentities, as[0]):
			return devIdentity(as[0]), nil
		}
		return "", status.Errorf(codes.Unauthenticated, "%s: one of %s", DevIdentityHeader, strings.Join(DevIdentities, ", "))
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", status.Error(codes.Unauthenticated, "no peer")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return "", status.Error(codes.Unauthenticated, "a client certificate signed by the server's client CA is required")
	}
	return info.State.VerifiedChains[0][0].Subject.String(), nil
}

// admit is the one place that authenticates and authorises a call. The
// standard health and reflection services are open to any authenticated
// caller.
func (s *Server) admit(ctx context.Context, method string, req any) (context.Context, *callInfo, *rule, error) {
	id, err := s.identity(ctx)
	if err != nil {
		return ctx, nil, nil, err
	}
	if strings.HasPrefix(method, "/grpc.health.v1.") || strings.HasPrefix(method, "/grpc.reflection.") {
		return ctx, nil, nil, nil
	}
	ci := &callInfo{identity: id}
	r, ok := rules[method]
	if !ok {
		ci.action = authz.Action(method)
		return ctx, ci, &rule{}, status.Error(codes.PermissionDenied, "unknown method")
	}
	ci.action = r.action
	if req != nil {
		if ci.project, err = r.project(s, req); err != nil {
			return ctx, ci, &r, err
		}
	}
	if r.open {
		return context.WithValue(ctx, callKey{}, ci), ci, &r, nil
	}
	if err := s.cfg.Policy.Authorize(id, r.action, ci.project); err != nil {
		return ctx, ci, &r, err
	}
	return context.WithValue(ctx, callKey{}, ci), ci, &r, nil
}

// finish audits a call (unless it is a quiet read that succeeded), logs it
// and maps its error to a status.
func (s *Server) finish(method string, ci *callInfo, r *rule, start time.Time, err error) error {
	serr := toStatus(err, s.log)
	if ci == nil {
		return serr
	}
	outcome := "ok"
	switch code := status.Code(serr); {
	case code == codes.PermissionDenied || code == codes.Unauthenticated:
		outcome = "denied"
	case code != codes.OK:
		outcome = "failed"
	}
	if !(r.quiet && outcome == "ok") {
		e := audit.Entry{Identity: ci.identity, Action: string(ci.action), Project: ci.project, Job: ci.job,
			Outcome: outcome, Reason: ci.reason, Digest: ci.digest}
		if outcome != "ok" {
			e.Reason = status.Convert(serr).Message()
		}
		if _, aerr := s.cfg.Audit.Append(e); aerr != nil {
			s.log.Error("audit log append failed", "err", aerr, "action", ci.action)
			if serr == nil {
				serr = toStatus(errAuditDown, s.log)
			}
		}
	}
	level := slog.LevelInfo
	if serr != nil {
		level = slog.LevelWarn
	}
	s.log.Log(context.Background(), level, "rpc", "method", method, "identity", ci.identity, "project", ci.project,
		"job", ci.job, "code", status.Code(serr).String(), "ms", time.Since(start).Milliseconds())
	return serr
}

func (s *Server) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	start := time.Now()
	ctx, ci, r, err := s.admit(ctx, info.FullMethod, req)
	if err != nil || ci == nil {
		if err == nil {
			return h(ctx, req)
		}
		return nil, s.finish(info.FullMethod, ci, r, start, err)
	}
	if r.sensitive {
		if err := s.intend(ctx, ci, req); err != nil {
			return nil, s.finish(info.FullMethod, ci, r, start, err)
		}
	}
	resp, err := h(ctx, req)
	if err := s.finish(info.FullMethod, ci, r, start, err); err != nil {
		return nil, err
	}
	return resp, nil
}

// Streams are authorised on their first request (for a client stream, its
// header), like a unary call, and audited when they end, with what the
// handler recorded (counts, for Evaluate and key files).
func (s *Server) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	start := time.Now()
	if _, ok := rules[info.FullMethod]; !ok {
		ctx, ci, r, err := s.admit(ss.Context(), info.FullMethod, nil)
		if ci == nil && err == nil {
			return h(srv, &ctxStream{ServerStream: ss, ctx: ctx})
		}
		return s.finish(info.FullMethod, ci, r, start, err)
	}
	as := &admittingStream{ServerStream: ss, s: s, method: info.FullMethod}
	err := h(srv, as)
	if as.ci == nil { // the stream ended before its first request
		return toStatus(err, s.log)
	}
	return s.finish(info.FullMethod, as.ci, as.r, start, err)
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (c *ctxStream) Context() context.Context { return c.ctx }

// admittingStream authorises a stream on its first message.
type admittingStream struct {
	grpc.ServerStream
	s        *Server
	method   string
	ctx      context.Context
	ci       *callInfo
	r        *rule
	admitted bool
}

func (a *admittingStream) Context() context.Context {
	if a.ctx != nil {
		return a.ctx
	}
	return a.ServerStream.Context()
}

func (a *admittingStream) RecvMsg(m any) error {
	if err := a.ServerStream.RecvMsg(m); err != nil || a.admitted {
		return err
	}
	ctx, ci, r, err := a.s.admit(a.ServerStream.Context(), a.method, m)
	a.ctx, a.ci, a.r, a.admitted = ctx, ci, r, err == nil
	if err == nil && r.sensitive {
		err = a.s.intend(ctx, ci, m)
		a.admitted = err == nil
	}
	return err
}

// intend enters a sensitive act in the audit log, with a signed checkpoint
// that holds the entry, before the handler takes it: when that fails, the
// call fails and the act is not taken. The entry names what the request
// acts on (a delivery, a grant, a request or change id) as its job.
func (s *Server) intend(ctx context.Context, ci *callInfo, req any) error {
	e := audit.Entry{Identity: ci.identity, Action: string(ci.action), Project: ci.project}
	switch r := req.(type) {
	case interface{ GetDelivery() string }:
		e.Job = r.GetDelivery()
	case interface{ GetGrant() string }:
		e.Job = r.GetGrant()
	case interface{ GetId() string }:
		if r.GetId() != ci.project {
			e.Job = r.GetId()
		}
	}
	if _, err := s.cfg.Audit.Intend(ctx, e); err != nil {
		s.log.Error("audit log: the intent of a sensitive act could not be entered; the act is refused", "err", err, "action", ci.action)
		return errAuditDown
	}
	return nil
}
