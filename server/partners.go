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
	// Exchanges are what the partner may use: keyfile, blind, import.
	// A registration from before exchanges were named has none, and may
	// use none until it is registered again.
	Exchanges  []string `json:"exchanges"`
	ApprovedBy string   `json:"approved_by,omitempty"`
	// UploadDay and UploadedRows count the rows the partner uploaded on
	// that day (UTC), against the server's daily upload budget.
	UploadDay    string `json:"upload_day,omitempty"`
	UploadedRows int64  `json:"uploaded_rows,omitempty"`
}

func (p partnerRecord) proto(project string) *lopnrv1.Partner {
	return &lopnrv1.Partner{Project: project, Identity: p.Identity, Recipient: p.Recipient, EvaluateBudget: p.Budget,
		Evaluated: p.Evaluated, Registered: timestamppb.New(p.Registered), RegisteredBy: p.RegisteredBy,
		Exchanges: p.Exchanges, ApprovedBy: p.ApprovedBy}
}

// The exchanges a partner's registration may name.
const (
	exchangeKeyFile = "keyfile" // the key file, per file with a second person's grant
	exchangeBlind   = "blind"   // Evaluate, and imports keyed by pseudonym
	exchangeImport  = "import"  // imports keyed by LopNr
)

var exchanges = []string{exchangeKeyFile, exchangeBlind, exchangeImport}

type partnerService struct {
	lopnrv1.UnimplementedPartnerServiceServer
	s *Server
}

// maxBudget bounds a partner's Evaluate budget: a few times the largest
// registers, so that a partner cannot map the population.
const maxBudget = 50_000_000

func (ps partnerService) RegisterPartner(ctx context.Context, req *lopnrv1.RegisterPartnerRequest) (*lopnrv1.ProjectChange, error) {
	s, ci := ps.s, call(ctx)
	if err := reason(ctx, req.GetReason()); err != nil {
		return nil, err
	}
	switch {
	case strings.TrimSpace(req.GetIdentity()) == "":
		return nil, &fieldError{"identity", "the subject of the partner's client certificate, such as CN=scb-uttag,O=SCB"}
	case req.GetEvaluateBudget() < 0 || req.GetEvaluateBudget() > maxBudget:
		return nil, &fieldError{"evaluate_budget", fmt.Sprintf("0 to %d elements", maxBudget)}
	case len(req.GetExchanges()) == 0:
		return nil, &fieldError{"exchanges", "the exchanges the partner may use: one or more of " + strings.Join(exchanges, ", ")}
	}
	var ex []string
	for i, e := range req.GetExchanges() {
		if !slices.Contains(exchanges, e) {
			return nil, &fieldError{field("exchanges", i), "one of " + strings.Join(exchanges, ", ")}
		}
		if !slices.Contains(ex, e) {
			ex = append(ex, e)
		}
	}
	slices.Sort(ex)
	if req.GetEvaluateBudget() > 0 && !slices.Contains(ex, exchangeBlind) {
		return nil, &fieldError{"evaluate_budget", "0 for a partner without the blind exchange"}
	}
	if _, err := extract.ParseRecipients([]string{req.GetRecipient()}); err != nil {
		return nil, &fieldError{"recipient", "the partner's age public key (age1… or age1pq1…)"}
	}
	p := partnerRecord{Identity: req.GetIdentity(), Recipient: req.GetRecipient(), Budget: req.GetEvaluateBudget(),
		Registered: s.cfg.Clock().UTC(), RegisteredBy: ci.identity, Exchanges: ex}
	var ch changeRecord
	rec, err := s.projects.update(req.GetProject(), func(r *projectRecord) error {
		if err := r.live(); err != nil {
			return err
		}
		// A registration is never replaced, pending or approved: a new
		// recipient key is a new registration, of a new identity.
		if slices.ContainsFunc(r.Partners, func(o partnerRecord) bool { return o.Identity == p.Identity }) ||
			slices.ContainsFunc(r.Changes, func(c changeRecord) bool { return c.Partner != nil && c.Partner.Identity == p.Identity }) {
			return &partnerExistsError{identity: p.Identity, project: r.ID}
		}
		ch = changeRecord{ID: nextChange(r), ProposedBy: ci.identity, Proposed: p.Registered, Reason: req.GetReason(), Partner: &p}
		r.Changes = append(r.Changes, ch)
		return nil
	})
	if err != nil {
		return nil, err
	}
	ci.job = ch.ID
	ci.reason = fmt.Sprintf("change %s proposed: partner %s, exchanges %s, budget %d; reason: %s", ch.ID, p.Identity,
		strings.Join(ex, ","), p.Budget, req.GetReason())
	return ch.proto(rec.ID), nil
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

// registered returns the caller's registration on a live project, which
// must name the exchange asked for ("" for any): the partner role in the
// policy is not enough.
func (s *Server) registered(ctx context.Context, project, exchange string) (projectRecord, partnerRecord, error) {
	rec, err := s.projects.get(project)
	if err != nil {
		return rec, partnerRecord{}, err
	}
	if err := rec.live(); err != nil {
		return rec, partnerRecord{}, err
	}
	if err := s.checkApprovals(ctx, rec); err != nil {
		return rec, partnerRecord{}, err
	}
	id := call(ctx).identity
	i := slices.IndexFunc(rec.Partners, func(p partnerRecord) bool { return p.Identity == id })
	if i < 0 {
		return rec, partnerRecord{}, &notPartnerError{id, project}
	}
	p := rec.Partners[i]
	if exchange != "" && !slices.Contains(p.Exchanges, exchange) {
		return rec, p, &exchangeError{identity: id, project: project, exchange: exchange, has: p.Exchanges}
	}
	return rec, p, nil
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
	_, p, err := s.registered(ctx, req.GetProject(), "")
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
	ci := call(ctx)
	_, p, err := s.registered(ctx, req.GetProject(), exchangeKeyFile)
	if err != nil {
		return err
	}
	if req.GetGrant() == "" {
		return &fieldError{"grant", "an approved key-file grant (RequestKeyFile, then a second person's ApproveKeyFile)"}
	}
	ci.job = req.GetGrant()
	if _, err := s.cfg.Keys.Project(ctx, req.GetProject()); err != nil {
		return err // destroyed or past retention: the grant stays unused
	}
	// The grant is used first: the file is given at most once, even if
	// the stream fails after this.
	if _, err := s.grants.update(req.GetGrant(), func(g *keyFileGrant) error {
		switch {
		case g.Project != req.GetProject() || g.Partner != ci.identity:
			return &notFoundError{"key-file grant", req.GetGrant()}
		case g.ApprovedBy == "":
			return &stateError{"key-file grant " + g.ID + " waits for a second person's approval (ApproveKeyFile)"}
		case !g.Used.IsZero():
			return &stateError{"key-file grant " + g.ID + " was used on " + g.Used.Format(time.DateOnly) + "; a grant gives one file: request another"}
		}
		g.Used = s.cfg.Clock().UTC()
		return nil
	}); err != nil {
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
	ci.reason = fmt.Sprintf("key file of %d persons under grant %s, encrypted to the partner's registered key", persons, req.GetGrant())
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
	if _, _, err := s.registered(ctx, project, exchangeBlind); err != nil {
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

// The bounds of an upload: a line of the partner's file, and the rows a
// partner may upload to a project in a day (Config can set both).
const (
	defaultImportMaxLine    = 64 << 10
	defaultImportRowsPerDay = 10_000_000
)

func (s *Server) importMaxLine() int {
	if s.cfg.ImportMaxLine > 0 {
		return s.cfg.ImportMaxLine
	}
	return defaultImportMaxLine
}

func (s *Server) importRowsPerDay() int64 {
	if s.cfg.ImportRowsPerDay > 0 {
		return s.cfg.ImportRowsPerDay
	}
	return defaultImportRowsPerDay
}

// uploadedToday is how many rows a partner has uploaded today.
func (p partnerRecord) uploadedToday(day string) int64 {
	if p.UploadDay != day {
		return 0
	}
	return p.UploadedRows
}

// importRecord keeps what an import found, for the extraction team (the
// job's report) and never for the partner: how many of its rows were of
// the project's persons would tell it who is in the cohort.
type importRecord struct {
	Job      string    `json:"job"`
	Project  string    `json:"project"`
	Source   string    `json:"source"`
	At       time.Time `json:"at"`
	Rows     int64     `json:"rows"`
	Matched  int64     `json:"matched"`
	Persons  int64     `json:"persons"`
	KeyedBy  string    `json:"keyed_by"`
	Received string    `json:"received_from,omitempty"`
}

// isImport reports whether a job is a partner's import.
func (s *Server) isImport(job string) bool {
	_, err := s.imports.get(job)
	return err == nil
}

// importReport is the lines a job's report begins with when the job is a
// partner's import: the counts the partner is never told.
func (s *Server) importReport(job string) string {
	r, err := s.imports.get(job)
	if err != nil {
		return ""
	}
	source := r.Source + ", "
	if r.Source == "" { // forgotten with its project
		source = ""
	}
	return fmt.Sprintf("Partner import (%skeyed by %s): %d rows received, %d of them of %d of the project's persons, %d matched nobody and were dropped.\n\n",
		source, r.KeyedBy, r.Rows, r.Matched, r.Persons, r.Rows-r.Matched)
}

func (ps partnerService) ImportPartnerFile(stream lopnrv1.PartnerService_ImportPartnerFileServer) error {
	s := ps.s
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	ctx := stream.Context()
	ci, h := call(ctx), first.GetHeader()
	rec, _, err := s.registered(ctx, h.GetProject(), "")
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
	// A LopNr-keyed file needs the import exchange; a pseudonym-keyed
	// one, blind linkage.
	exchange := exchangeImport
	if h.GetKeyedBy() == lopnrv1.KeyedBy_KEYED_BY_PSEUDONYM {
		exchange = exchangeBlind
	}
	rec, p, err := s.registered(ctx, rec.ID, exchange)
	if err != nil {
		return err
	}
	if rec, err = s.approvedProject(ctx, rec.ID); err != nil {
		return err
	}
	if _, err := s.cfg.Keys.Project(ctx, rec.ID); err != nil {
		return err // destroyed or past retention
	}
	day, limit := s.cfg.Clock().UTC().Format(time.DateOnly), s.importRowsPerDay()
	left := limit - p.uploadedToday(day)
	if left <= 0 {
		return &uploadBudgetError{project: rec.ID, limit: limit}
	}

	// The partner's rows are resolved to the project's persons through
	// the kodnyckel's index, built once per project.
	resolve, err := s.cohort.resolver(ctx, s, rec.ID, h.GetKeyedBy() == lopnrv1.KeyedBy_KEYED_BY_PSEUDONYM)
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
	res, err := partner.ConvertImport(plain, dir, partner.ImportOptions{IdentityColumn: h.GetIdentityColumn(), Delimiter: delim,
		Resolve: resolve, MaxLine: s.importMaxLine(), MaxRows: left})
	var tooMany *partner.RowLimitError
	if errors.As(err, &tooMany) {
		return &uploadBudgetError{project: rec.ID, limit: limit, left: left}
	}
	if err != nil {
		return importError(err)
	}
	keyedBy := map[lopnrv1.KeyedBy]string{lopnrv1.KeyedBy_KEYED_BY_LOPNR: "LopNr", lopnrv1.KeyedBy_KEYED_BY_PSEUDONYM: "pseudonym"}[h.GetKeyedBy()]
	// The counts go to the audit log and the job's report; the partner
	// hears only how many rows were received.
	ci.reason = fmt.Sprintf("%d rows received, keyed by %s: %d of %d persons of the project, %d rows unmatched",
		res.Rows, keyedBy, res.Matched, res.Persons, res.Rows-res.Matched)

	spec, err := importSpec(rec, h, dir)
	if err != nil {
		return err
	}
	parsed, err := s.parseSpec(spec, s.workDir(id))
	if err != nil {
		return err
	}
	if err := extract.CheckApproval(parsed, importApproval(rec.Approval, parsed)); err != nil {
		return err
	}
	if _, err := s.projects.update(rec.ID, func(r *projectRecord) error {
		i := slices.IndexFunc(r.Partners, func(o partnerRecord) bool { return o.Identity == ci.identity })
		if i < 0 {
			return &notPartnerError{ci.identity, r.ID}
		}
		o := &r.Partners[i]
		used := o.uploadedToday(day)
		if used+res.Rows > limit { // another upload of the same day came first
			return &uploadBudgetError{project: r.ID, limit: limit, left: limit - used}
		}
		o.UploadDay, o.UploadedRows = day, used+res.Rows
		return nil
	}); err != nil {
		return err
	}
	if err := s.imports.create(id, importRecord{Job: id, Project: rec.ID, Source: h.GetSource(), At: s.cfg.Clock().UTC(),
		Rows: res.Rows, Matched: res.Matched, Persons: res.Persons, KeyedBy: keyedBy, Received: ci.identity}); err != nil {
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
		"sources": []map[string]string{
			{"name": h.GetSource(), "profile": linkage.PartnerImport, "path": filepath.Join(dir, "partner.csv")},
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
