package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"filippo.io/age"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lopnr/lopnr/extract"
	"github.com/lopnr/lopnr/keystore"
	"github.com/lopnr/lopnr/linkage"
	"github.com/lopnr/lopnr/partner"
	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
)

// partnerRecord is a partner authority registered on a project.
type partnerRecord struct {
	Identity     string    `json:"identity"`
	Recipient    string    `json:"recipient"`
	Budget       int64     `json:"evaluate_budget"`
	Evaluated    int64     `json:"evaluated"`
	Registered   time.Time `json:"registered"`
	RegisteredBy string    `json:"registered_by"`
}

func (p partnerRecord) proto(project string) *lopnrv1.Partner {
	return &lopnrv1.Partner{Project: project, Identity: p.Identity, Recipient: p.Recipient, EvaluateBudget: p.Budget,
		Evaluated: p.Evaluated, Registered: timestamppb.New(p.Registered), RegisteredBy: p.RegisteredBy}
}

type partnerService struct {
	lopnrv1.UnimplementedPartnerServiceServer
	s *Server
}

// maxBudget bounds a partner's Evaluate budget: a few times the largest
// registers, so that a partner cannot map the population.
const maxBudget = 50_000_000

func (ps partnerService) RegisterPartner(ctx context.Context, req *lopnrv1.RegisterPartnerRequest) (*lopnrv1.ProjectChange, error) {
	s, ci := ps.s, call(ctx)
	switch {
	case strings.TrimSpace(req.GetIdentity()) == "":
		return nil, &fieldError{"identity", "the subject of the partner's client certificate, such as CN=scb-uttag,O=SCB"}
	case req.GetEvaluateBudget() < 0 || req.GetEvaluateBudget() > maxBudget:
		return nil, &fieldError{"evaluate_budget", fmt.Sprintf("0 to %d elements", maxBudget)}
	}
	if _, err := extract.ParseRecipients([]string{req.GetRecipient()}); err != nil {
		return nil, &fieldError{"recipient", "the partner's age public key (age1… or age1pq1…)"}
	}
	p := partnerRecord{Identity: req.GetIdentity(), Recipient: req.GetRecipient(), Budget: req.GetEvaluateBudget(),
		Registered: s.cfg.Clock().UTC(), RegisteredBy: ci.identity}
	ci.reason = fmt.Sprintf("partner %s, budget %d", p.Identity, p.Budget)
	_, err := s.projects.update(req.GetProject(), func(r *projectRecord) error {
		if i := slices.IndexFunc(r.Partners, func(o partnerRecord) bool { return o.Identity == p.Identity }); i >= 0 {
			p.Evaluated = r.Partners[i].Evaluated // re-registering keeps what was used
			r.Partners[i] = p
			return nil
		}
		r.Partners = append(r.Partners, p)
		return nil
	})
	if err != nil {
		return nil, err
	}
	// TODO(trust model): a pending change approved by another person.
	return &lopnrv1.ProjectChange{Project: req.GetProject(), Partner: p.proto(req.GetProject())}, nil
}

func (ps partnerService) ListPartners(ctx context.Context, req *lopnrv1.ListPartnersRequest) (*lopnrv1.ListPartnersResponse, error) {
	rec, err := ps.s.projects.get(req.GetProject())
	if err != nil {
		return nil, err
	}
	all := ps.s.visible(ctx, "partner.register", rec.ID) || ps.s.visible(ctx, "audit.list", rec.ID)
	out := &lopnrv1.ListPartnersResponse{}
	for _, p := range rec.Partners {
		if all || p.Identity == call(ctx).identity {
			out.Partners = append(out.Partners, p.proto(rec.ID))
		}
	}
	return out, nil
}

// registered returns the caller's registration on the project: the
// partner role in the policy is not enough.
func (s *Server) registered(ctx context.Context, project string) (projectRecord, partnerRecord, error) {
	rec, err := s.projects.get(project)
	if err != nil {
		return rec, partnerRecord{}, err
	}
	id := call(ctx).identity
	i := slices.IndexFunc(rec.Partners, func(p partnerRecord) bool { return p.Identity == id })
	if i < 0 {
		return rec, partnerRecord{}, &notPartnerError{id, project}
	}
	return rec, rec.Partners[i], nil
}

// projectKey derives the project's OPRF key; it fails once the kodnyckel
// is destroyed, its seed with it.
func (s *Server) projectKey(ctx context.Context, project string) (*partner.Key, error) {
	seed, err := s.cfg.Keys.OPRFSeed(ctx, project)
	if err != nil {
		return nil, err
	}
	return partner.DeriveKey(seed, project)
}

func (ps partnerService) GetPartnerKeys(ctx context.Context, req *lopnrv1.GetPartnerKeysRequest) (*lopnrv1.PartnerKeys, error) {
	s := ps.s
	_, p, err := s.registered(ctx, req.GetProject())
	if err != nil {
		return nil, err
	}
	key, err := s.projectKey(ctx, req.GetProject())
	if err != nil {
		return nil, err
	}
	return &lopnrv1.PartnerKeys{Project: req.GetProject(), Suite: partner.Suite, OprfPublicKey: key.PublicKey(),
		ServiceRecipient: s.serviceID.Recipient().String(), EvaluateBudget: p.Budget, Evaluated: p.Evaluated}, nil
}

func (ps partnerService) GetKeyFile(req *lopnrv1.GetKeyFileRequest, stream lopnrv1.PartnerService_GetKeyFileServer) error {
	s, ctx := ps.s, stream.Context()
	_, p, err := s.registered(ctx, req.GetProject())
	if err != nil {
		return err
	}
	recips, err := extract.ParseRecipients([]string{p.Recipient})
	if err != nil {
		return err
	}
	// Encrypt into a pipe that the stream drains, so the key file is never
	// whole in memory nor on disk.
	pr, pw := io.Pipe()
	var persons int64
	go func() {
		pw.CloseWithError(func() error {
			enc, err := age.Encrypt(pw, recips...)
			if err != nil {
				return err
			}
			w := bufio.NewWriterSize(enc, 64<<10)
			w.WriteString("personnummer;LopNr\n")
			err = s.cfg.Keys.Mappings(ctx, req.GetProject(), func(canonical string, r keystore.RunNumber) error {
				persons++
				w.WriteString(canonical)
				w.WriteByte(';')
				_, err := w.WriteString(strconv.FormatInt(int64(r), 10) + "\n")
				return err
			})
			if err == nil {
				err = w.Flush()
			}
			if err == nil {
				err = enc.Close()
			}
			return err
		}())
	}()
	defer pr.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := io.ReadFull(pr, buf)
		if n > 0 {
			if serr := stream.Send(&lopnrv1.FileChunk{Data: buf[:n]}); serr != nil {
				return serr
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	call(ctx).reason = fmt.Sprintf("key file of %d persons, encrypted to the partner's registered key", persons)
	return nil
}

func (ps partnerService) Evaluate(stream lopnrv1.PartnerService_EvaluateServer) error {
	s := ps.s
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	ctx := stream.Context()
	ci, project := call(ctx), req.GetProject()
	if _, _, err := s.registered(ctx, project); err != nil {
		return err
	}
	key, err := s.projectKey(ctx, project)
	if err != nil {
		return err
	}
	var elements, batches int64
	defer func() { ci.reason = fmt.Sprintf("%d elements evaluated in %d batches", elements, batches) }()
	for {
		if req.GetProject() != project {
			return &fieldError{"project", "the same project in every request of a stream"}
		}
		n := int64(len(req.GetBlinded()))
		if _, err := s.projects.update(project, func(r *projectRecord) error {
			i := slices.IndexFunc(r.Partners, func(p partnerRecord) bool { return p.Identity == ci.identity })
			if i < 0 {
				return &notPartnerError{ci.identity, project}
			}
			p := &r.Partners[i]
			if p.Evaluated+n > p.Budget {
				return &budgetError{project: project, budget: p.Budget, used: p.Evaluated, asked: n}
			}
			p.Evaluated += n
			return nil
		}); err != nil {
			return err
		}
		evaluated, proof, err := key.Evaluate(req.GetBlinded())
		if err != nil {
			return &fieldError{"blinded", err.Error()}
		}
		if err := stream.Send(&lopnrv1.EvaluateResponse{Evaluated: evaluated, Proof: proof}); err != nil {
			return err
		}
		elements, batches = elements+n, batches+1
		if req, err = stream.Recv(); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
	}
}

func (ps partnerService) ImportPartnerFile(stream lopnrv1.PartnerService_ImportPartnerFileServer) error {
	s := ps.s
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	ctx := stream.Context()
	ci, h := call(ctx), first.GetHeader()
	rec, _, err := s.registered(ctx, h.GetProject())
	if err != nil {
		return err
	}
	delim, err := partner.ParseDelimiter(h.GetDelimiter())
	if err != nil {
		return importError(err)
	}
	switch {
	case !linkage.ValidSourceName(h.GetSource()):
		return &fieldError{"header.source", "a lower-case source name of letters, digits and _, such as scb_inkomst"}
	case h.GetKeyedBy() != lopnrv1.KeyedBy_KEYED_BY_LOPNR && h.GetKeyedBy() != lopnrv1.KeyedBy_KEYED_BY_PSEUDONYM:
		return &fieldError{"header.keyed_by", "KEYED_BY_LOPNR or KEYED_BY_PSEUDONYM"}
	case h.GetIdentityColumn() == "":
		return &fieldError{"header.identity_column", "the column with the LopNr or pseudonym"}
	case len(h.GetVariables()) == 0:
		return &fieldError{"header.variables", "at least one column to deliver, with its transform"}
	}
	if _, err := s.cfg.Keys.Project(ctx, rec.ID); err != nil {
		return err // destroyed or past retention
	}

	// The partner's rows are resolved to the project's persons through the
	// kodnyckel: by LopNr, or by the pseudonym of each of its persons.
	resolve, err := s.resolver(ctx, rec.ID, h.GetKeyedBy())
	if err != nil {
		return err
	}
	id, err := s.jobs.NewID()
	if err != nil {
		return err
	}
	dir := filepath.Join(s.workDir(id), "import")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(s.workDir(id))
		}
	}()

	// The upload streams through age into the conversion; nothing of it
	// is kept but the matched rows.
	pr, pw := io.Pipe()
	go func() {
		for {
			m, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				pw.Close()
				return
			}
			if err != nil {
				pw.CloseWithError(err)
				return
			}
			if _, err := pw.Write(m.GetData()); err != nil {
				return
			}
		}
	}()
	defer pr.Close()
	plain, err := age.Decrypt(pr, s.serviceID)
	if err != nil {
		return &fieldError{"data", "a file encrypted with age to the service's recipient (GetPartnerKeys)"}
	}
	res, err := partner.ConvertImport(plain, dir, h.GetIdentityColumn(), delim, resolve)
	if err != nil {
		return importError(err)
	}
	ci.reason = fmt.Sprintf("%d rows: %d of %d persons of the project, %d rows unmatched", res.Rows, res.Matched, res.Persons, res.Rows-res.Matched)

	spec, err := importSpec(rec, h, dir)
	if err != nil {
		return err
	}
	parsed, err := s.parseSpec(spec, s.workDir(id))
	if err != nil {
		return err
	}
	if err := extract.CheckApproval(parsed, rec.Approval); err != nil {
		return err
	}
	j, err := s.jobs.SubmitID(id, rec.ID, ci.identity, spec)
	if err != nil {
		return err
	}
	ok, ci.job = true, j.ID
	return stream.SendAndClose(&lopnrv1.ImportPartnerFileResponse{Job: j.ID, Rows: res.Rows})
}

// importError is a partner.ImportError as a request field's error.
func importError(err error) error {
	var ie *partner.ImportError
	if errors.As(err, &ie) {
		return &fieldError{ie.Field, ie.Want}
	}
	return err
}

// resolver returns the function that finds the canonical personnummer of
// a partner row's key, or "" for a key of nobody in the project.
func (s *Server) resolver(ctx context.Context, project string, by lopnrv1.KeyedBy) (func(string) string, error) {
	var canonicals []string // by LopNr - 1
	if err := s.cfg.Keys.Mappings(ctx, project, func(c string, r keystore.RunNumber) error {
		if int(r) != len(canonicals)+1 {
			return fmt.Errorf("project %s: the kodnyckel's LopNr are not 1..N in order (LopNr %d after %d)", project, r, len(canonicals))
		}
		canonicals = append(canonicals, c)
		return nil
	}); err != nil {
		return nil, err
	}
	if by == lopnrv1.KeyedBy_KEYED_BY_LOPNR {
		return func(key string) string {
			r, err := strconv.ParseInt(strings.TrimSpace(key), 10, 64)
			if err != nil || r < 1 || r > int64(len(canonicals)) {
				return ""
			}
			return canonicals[r-1]
		}, nil
	}
	key, err := s.projectKey(ctx, project)
	if err != nil {
		return nil, err
	}
	pseudonyms, err := key.Pseudonyms(canonicals, 0)
	if err != nil {
		return nil, err
	}
	byPseudonym := make(map[string]string, len(canonicals))
	for i, p := range pseudonyms {
		byPseudonym[p] = canonicals[i]
	}
	return func(key string) string { return byPseudonym[strings.ToLower(strings.TrimSpace(key))] }, nil
}

// importSpec is the job spec of a supplementary delivery from an import:
// the partner's rows as an events source, its persons as the cohort, and
// the variables the partner named, which the approved list must cover.
func importSpec(rec projectRecord, h *lopnrv1.ImportHeader, dir string) ([]byte, error) {
	var vars []map[string]string
	for _, v := range h.GetVariables() {
		t := v.GetTransform()
		if t == "" {
			t = "keep"
		}
		vars = append(vars, map[string]string{"source": h.GetSource(), "column": v.GetColumn(), "transform": t})
	}
	cohortSource := "cohort"
	if h.GetSource() == cohortSource {
		cohortSource = "cohort_list"
	}
	spec := map[string]any{
		"project": rec.ID,
		"epm_dnr": rec.EPMDnr,
		"profiles": []map[string]any{{"name": "partner-import", "description": "a partner's file, resolved to the project's persons",
			"kind": "events", "format": "csv", "delimiter": ";", "header": true, "encoding": "utf-8", "identity": "PNR"}},
		"sources": []map[string]string{
			{"name": h.GetSource(), "profile": "partner-import", "path": filepath.Join(dir, "partner.csv")},
			{"name": cohortSource, "profile": "cohort-list", "path": filepath.Join(dir, "cohort.csv")},
		},
		"cohort":    map[string]string{"list": cohortSource},
		"variables": vars,
		"outputs":   map[string]string{"format": "csv"},
	}
	b, err := yaml.Marshal(spec)
	if err != nil {
		return nil, err
	}
	return append([]byte("# A supplementary delivery from a partner's file, made by lopnrd.\n"), b...), nil
}
