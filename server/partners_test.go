package server

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"filippo.io/age"
	"google.golang.org/grpc/codes"

	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
)

// upload sends a file to ImportPartnerFile as a partner does.
func upload(t *testing.T, c lopnrv1.PartnerServiceClient, h *lopnrv1.ImportHeader, data []byte) (*lopnrv1.ImportPartnerFileResponse, error) {
	t.Helper()
	stream, err := c.ImportPartnerFile(ctx(t))
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&lopnrv1.ImportPartnerFileRequest{Part: &lopnrv1.ImportPartnerFileRequest_Header{Header: h}}); err != nil {
		return nil, err
	}
	if err := stream.Send(&lopnrv1.ImportPartnerFileRequest{Part: &lopnrv1.ImportPartnerFileRequest_Data{Data: data}}); err != nil && err != io.EOF {
		return nil, err
	}
	return stream.CloseAndRecv()
}

// TestPartnerCalls checks the partner service's refusals and its import of
// a LopNr-keyed file with a local key store: registration, budget, the
// header's fields, the service's encryption, the approved list.
func TestPartnerCalls(t *testing.T) {
	f := newFixture(t, false)
	spec, _ := f.generate(300)
	researcher := researcherKey(t)
	if _, err := lopnrv1.NewProjectServiceClient(f.conn("drift")).CreateProject(ctx(t), &lopnrv1.CreateProjectRequest{Id: "p1",
		EpmDnr: "2026-00000-01", ApprovedVariables: append(approvedVariables(t), &lopnrv1.ApprovedVariable{Source: "scb", Column: "INKOMST"}), ApprovedSources: append(approvedSources(t), &lopnrv1.ApprovedSource{Name: "scb", Profile: "partner-import"}),
		Recipients: []string{researcher.Recipient().String()}}); err != nil {
		t.Fatal(err)
	}
	f.approve("p1", "bo")
	jobs := lopnrv1.NewJobServiceClient(f.conn("anna"))
	j, err := jobs.SubmitJob(ctx(t), &lopnrv1.SubmitJobRequest{Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	w, _ := jobs.WatchJob(ctx(t), &lopnrv1.WatchJobRequest{Id: j.Id})
	for _, err := w.Recv(); err == nil; _, err = w.Recv() {
	}

	scb := lopnrv1.NewPartnerServiceClient(f.conn("scb"))
	_, err = scb.GetPartnerKeys(ctx(t), &lopnrv1.GetPartnerKeysRequest{Project: "p1"})
	wantCode(t, "an unregistered partner", err, codes.PermissionDenied, "not registered as a partner of project p1")
	key, _ := age.GenerateX25519Identity()
	reg := func(edit func(*lopnrv1.RegisterPartnerRequest)) *lopnrv1.RegisterPartnerRequest {
		r := &lopnrv1.RegisterPartnerRequest{Project: "p1", Identity: "CN=scb,O=Region Test", Recipient: key.Recipient().String(),
			EvaluateBudget: 3, Exchanges: []string{"blind", "import"}, Reason: "SCB's income data for the cohort"}
		if edit != nil {
			edit(r)
		}
		return r
	}
	_, err = lopnrv1.NewPartnerServiceClient(f.conn("anna")).RegisterPartner(ctx(t), reg(nil))
	wantCode(t, "an extractor registering a partner", err, codes.PermissionDenied, "partner.register")
	_, err = lopnrv1.NewPartnerServiceClient(f.conn("bo")).RegisterPartner(ctx(t), reg(func(r *lopnrv1.RegisterPartnerRequest) { r.Recipient = "ssh-ed25519 AAAA" }))
	wantCode(t, "a bad recipient", err, codes.InvalidArgument, "recipient")
	_, err = lopnrv1.NewPartnerServiceClient(f.conn("bo")).RegisterPartner(ctx(t), reg(func(r *lopnrv1.RegisterPartnerRequest) { r.Exchanges = []string{"blind", "everything"} }))
	wantCode(t, "an unknown exchange", err, codes.InvalidArgument, "exchanges[1]: one of keyfile, blind, import")
	_, err = lopnrv1.NewPartnerServiceClient(f.conn("bo")).RegisterPartner(ctx(t), reg(func(r *lopnrv1.RegisterPartnerRequest) { r.Reason = "" }))
	wantCode(t, "a registration without a reason", err, codes.InvalidArgument, "reason")
	if _, err := lopnrv1.NewPartnerServiceClient(f.conn("bo")).RegisterPartner(ctx(t), reg(nil)); err != nil {
		t.Fatal(err)
	}
	_, err = scb.GetPartnerKeys(ctx(t), &lopnrv1.GetPartnerKeysRequest{Project: "p1"})
	wantCode(t, "a partner whose registration waits for approval", err, codes.PermissionDenied, "not registered as a partner of project p1")
	f.approve("p1", "cecilia")
	keys, err := scb.GetPartnerKeys(ctx(t), &lopnrv1.GetPartnerKeysRequest{Project: "p1"})
	if err != nil || keys.EvaluateBudget != 3 {
		t.Fatalf("keys = %v, %v", keys, err)
	}

	// Evaluate: within the budget, then refused with what is left.
	evaluate := func(n int) error {
		stream, err := scb.Evaluate(context.Background())
		if err != nil {
			return err
		}
		blinded := make([][]byte, n)
		for i := range blinded {
			blinded[i] = keys.OprfPublicKey // a valid group element
		}
		if err := stream.Send(&lopnrv1.EvaluateRequest{Project: "p1", Blinded: blinded}); err != nil {
			return err
		}
		_, err = stream.Recv()
		stream.CloseSend()
		return err
	}
	if err := evaluate(2); err != nil {
		t.Fatalf("evaluate within the budget: %v", err)
	}
	wantCode(t, "evaluate beyond the budget", evaluate(2), codes.ResourceExhausted, "2 used, 2 more asked")

	// Imports: the header's fields, the service's encryption, the approved
	// list; then a LopNr-keyed file becomes a job.
	enc := func(plain string) []byte {
		var b bytes.Buffer
		r, _ := age.ParseRecipients(strings.NewReader(keys.ServiceRecipient))
		w, _ := age.Encrypt(&b, r...)
		io.WriteString(w, plain)
		w.Close()
		return b.Bytes()
	}
	file := "LopNr;INKOMST;AR\n1;100;2024\n2;200;2024\n999999;300;2024\n"
	h := func(edit func(*lopnrv1.ImportHeader)) *lopnrv1.ImportHeader {
		hd := &lopnrv1.ImportHeader{Project: "p1", Source: "scb", KeyedBy: lopnrv1.KeyedBy_KEYED_BY_LOPNR, IdentityColumn: "LopNr",
			Variables: []*lopnrv1.ImportVariable{{Column: "INKOMST"}}}
		if edit != nil {
			edit(hd)
		}
		return hd
	}
	for _, tc := range []struct {
		name string
		h    *lopnrv1.ImportHeader
		data []byte
		code codes.Code
		want string
	}{
		{"bad source", h(func(h *lopnrv1.ImportHeader) { h.Source = "SCB Inkomst" }), enc(file), codes.InvalidArgument, "header.source"},
		{"no keyed_by", h(func(h *lopnrv1.ImportHeader) { h.KeyedBy = 0 }), enc(file), codes.InvalidArgument, "header.keyed_by"},
		{"no variables", h(func(h *lopnrv1.ImportHeader) { h.Variables = nil }), enc(file), codes.InvalidArgument, "header.variables"},
		{"not encrypted", h(nil), []byte(file), codes.InvalidArgument, "encrypted with age to the service"},
		{"unknown identity column", h(func(h *lopnrv1.ImportHeader) { h.IdentityColumn = "LOPNUMMER" }), enc(file), codes.InvalidArgument, "header.identity_column"},
		{"unapproved variable", h(func(h *lopnrv1.ImportHeader) {
			h.Variables = append(h.Variables, &lopnrv1.ImportVariable{Column: "AR"})
		}), enc(file), codes.InvalidArgument, "scb.AR with keep is not on the project's approved variable list"},
		{"another project", h(func(h *lopnrv1.ImportHeader) { h.Project = "p2" }), enc(file), codes.PermissionDenied, "partner.import"},
	} {
		_, err := upload(t, scb, tc.h, tc.data)
		wantCode(t, tc.name, err, tc.code, tc.want)
	}
	res, err := upload(t, scb, h(nil), enc(file))
	if err != nil {
		t.Fatal(err)
	}
	if res.Rows != 3 || res.Job == "" {
		t.Fatalf("import = %v; want 3 rows and a job", res)
	}
	w, _ = jobs.WatchJob(ctx(t), &lopnrv1.WatchJobRequest{Id: res.Job})
	var last *lopnrv1.JobEvent
	for e, err := w.Recv(); err == nil; e, err = w.Recv() {
		last = e
	}
	if last.GetState() != lopnrv1.JobState_JOB_STATE_SUCCEEDED {
		got, _ := jobs.GetJob(ctx(t), &lopnrv1.GetJobRequest{Id: res.Job})
		t.Fatalf("the import's job ended %v: %s", last.GetState(), got.GetError())
	}
	// The counts the partner is not told are in the job's report, for the
	// extraction team.
	if got, err := jobs.GetJob(ctx(t), &lopnrv1.GetJobRequest{Id: res.Job}); err != nil ||
		!strings.Contains(got.Report, "3 rows received, 2 of them of 2 of the project's persons, 1 matched nobody") {
		t.Errorf("the import job's report: %q, %v; want the import's counts", got.GetReport(), err)
	}
}
