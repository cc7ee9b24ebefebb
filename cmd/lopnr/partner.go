package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"filippo.io/age"

	"github.com/lopnr/lopnr/extract"
	"github.com/lopnr/lopnr/partner"
	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
)

func init() {
	commands["partners"] = command{"register and list a project's partner authorities", runPartners}
	commands["partner"] = command{"for a partner authority: key file, blind linkage, upload", runPartner}
}

const partnersUsage = `Usage: lopnr partners SUBCOMMAND [flags] [args]

The partner authorities registered on a project (docs/partners.md).

  register PROJECT IDENTITY --recipient age1… --exchange E,… [--budget N] --reason R
                         propose a partner's registration (role approver or admin);
                         a second approver approves it with lopnr projects approve
  list PROJECT           a project's partners, their exchanges and budgets
`

const partnerUsage = `Usage: lopnr partner SUBCOMMAND [flags] [args]

For a partner authority's technician (docs/partners.md).

  keyfile request --project P --reason R         ask for the key file (one file a grant)
  keyfile approve PROJECT GRANT                  a second person approves (role approver or key holder)
  keyfile get --project P --grant G -o FILE      the key file (personnummer;LopNr), encrypted to your age key
  keyfile list --project P                       the key-file grants you may see
  blind --project P IN OUT [--identity COL]      replace identity numbers by OPRF pseudonyms; numbers never leave this machine
  upload --project P --source S --keyed-by pseudonym|lopnr --variable COL[=TRANSFORM]… FILE
                                                 send a pseudonymised file back, encrypted to the service
`

func runPartners(ctx context.Context, args []string, sio stdio) error {
	return subcommand(ctx, "partners", partnersUsage, map[string]func(context.Context, []string, stdio) error{
		"register": runPartnersRegister,
		"list":     runPartnersList,
	}, args, sio)
}

func runPartner(ctx context.Context, args []string, sio stdio) error {
	return subcommand(ctx, "partner", partnerUsage, map[string]func(context.Context, []string, stdio) error{
		"keyfile": runPartnerKeyfile,
		"blind":   runPartnerBlind,
		"upload":  runPartnerUpload,
	}, args, sio)
}

func printPartner(w io.Writer, p *lopnrv1.Partner) {
	approved := "approved by " + orDash(p.ApprovedBy)
	if p.ApprovedBy == "" {
		approved = "waiting for a second person's approval"
	}
	fmt.Fprintf(w, "%s\t%s\t%s\tbudget %d, evaluated %d\tproposed %s by %s, %s\n", p.Project, p.Identity, orDash(strings.Join(p.Exchanges, ",")),
		p.EvaluateBudget, p.Evaluated, when(p.Registered), p.RegisteredBy, approved)
}

func runPartnersRegister(ctx context.Context, args []string, sio stdio) error {
	cmd := newClientCmd(sio, "lopnr partners register", `Usage: lopnr partners register PROJECT IDENTITY --recipient age1… --exchange E,… [--budget N] --reason R [flags]

Proposes a partner authority's registration on a project: IDENTITY is the
subject of its client certificate ("CN=scb-uttag,O=SCB"), --recipient its age
public key (key files are encrypted to it), --exchange what it may do:
keyfile (key files, each with a second person's grant), blind (blind linkage
and pseudonym-keyed uploads, within --budget evaluations), import (LopNr-keyed
uploads). The registration takes effect when a second approver approves it
(lopnr projects approve PROJECT CHANGE). A registration is never replaced: a
new key or budget is a new registration, of a new identity.
`)
	recipient := cmd.fs.String("recipient", "", "the partner's age public key, age1… or age1pq1…; required")
	budget := cmd.fs.Int64("budget", 0, "elements the partner may have evaluated with the blind exchange (its persons, with some margin)")
	exchanges := cmd.fs.String("exchange", "", "the exchanges, comma-separated: keyfile, blind, import; required")
	reason := cmd.fs.String("reason", "", "why (the agreement, its diary number); kept with the change and in the audit log; required")
	pos, err := cmd.parse(args, 2, "partners register takes PROJECT and IDENTITY")
	if err != nil {
		return err
	}
	if err := required("recipient", *recipient, "exchange", *exchanges, "reason", *reason); err != nil {
		return err
	}
	var ex []string
	for _, e := range strings.Split(*exchanges, ",") {
		ex = append(ex, strings.TrimSpace(e))
	}
	c, err := cmd.sf.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	ch, err := lopnrv1.NewPartnerServiceClient(c.conn).RegisterPartner(ctx, &lopnrv1.RegisterPartnerRequest{
		Project: pos[0], Identity: pos[1], Recipient: *recipient, EvaluateBudget: *budget, Exchanges: ex, Reason: *reason})
	if err != nil {
		return c.check(err)
	}
	printChange(sio.out, ch)
	fmt.Fprintf(sio.out, "\nThe registration waits for a second person: an approver other than you runs\n  lopnr projects approve %s %s\n", ch.Project, ch.Id)
	return nil
}

func runPartnersList(ctx context.Context, args []string, sio stdio) error {
	cmd := newClientCmd(sio, "lopnr partners list", "Usage: lopnr partners list PROJECT [flags]\n\nLists a project's partners; a partner sees only itself.\n")
	pos, c, err := cmd.connect(args, 1, "partners list takes one PROJECT")
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := lopnrv1.NewPartnerServiceClient(c.conn).ListPartners(ctx, &lopnrv1.ListPartnersRequest{Project: pos[0]})
	if err != nil {
		return c.check(err)
	}
	for _, p := range resp.Partners {
		printPartner(sio.out, p)
	}
	return nil
}

const keyfileUsage = `Usage: lopnr partner keyfile SUBCOMMAND [flags] [args]

The project's key file — personnummer;LopNr, one person a line — for a partner
registered for the keyfile exchange. Each file needs a grant: the partner
asks with a reason, a second person (an approver or key holder who did not
propose the partner's registration) approves, and the partner gets the file
once.

  request --project P --reason R        the partner asks
  approve PROJECT GRANT                 a second person approves
  get --project P --grant G -o FILE     the partner fetches it, encrypted to its key
  list --project P                      grants, pending, approved and used

Run 'lopnr partner keyfile SUBCOMMAND -h' for its flags.
`

func runPartnerKeyfile(ctx context.Context, args []string, sio stdio) error {
	if len(args) > 0 && strings.HasPrefix(args[0], "-") && !isHelp(args[0]) {
		fmt.Fprint(sio.err, keyfileUsage)
		return &hintError{&usageError{"partner keyfile: want a subcommand: approve, get, list, request"},
			"a key file needs a grant now: lopnr partner keyfile request --project P --reason R, then a second person's approve, then get"}
	}
	return subcommand(ctx, "partner keyfile", keyfileUsage, map[string]func(context.Context, []string, stdio) error{
		"request": runKeyfileRequest,
		"approve": runKeyfileApprove,
		"get":     runKeyfileGet,
		"list":    runKeyfileList,
	}, args, sio)
}

func printGrant(w io.Writer, g *lopnrv1.KeyFileGrant) {
	state := "waiting for a second person's approval"
	switch {
	case g.Used != nil:
		state = "approved by " + orDash(g.ApprovedBy) + ", used " + when(g.Used)
	case g.ApprovedBy != "":
		state = "approved by " + orDash(g.ApprovedBy) + " " + when(g.Approved) + ", not used yet"
	}
	fmt.Fprintf(w, "%s\t%s\t%s\trequested %s: %s\t%s\n", g.Id, g.Project, orDash(g.Partner), when(g.Requested), orDash(g.Reason), state)
}

func runKeyfileRequest(ctx context.Context, args []string, sio stdio) error {
	cmd := newClientCmd(sio, "lopnr partner keyfile request", `Usage: lopnr partner keyfile request --project P --reason R [flags]

Asks for one key file of the project, with a reason. Prints the grant; an
approver or key holder of the region approves it, and then
lopnr partner keyfile get fetches the file, once. Role partner, registered for
the keyfile exchange.
`)
	project := cmd.fs.String("project", "", "the project; required")
	reason := cmd.fs.String("reason", "", "why you need the key file (the agreement, the linkage); required")
	_, c, err := cmd.connect(args, 0, "partner keyfile request takes no arguments")
	if err != nil {
		return err
	}
	defer c.Close()
	if err := required("project", *project, "reason", *reason); err != nil {
		return err
	}
	g, err := lopnrv1.NewPartnerServiceClient(c.conn).RequestKeyFile(ctx, &lopnrv1.RequestKeyFileRequest{Project: *project, Reason: *reason})
	if err != nil {
		return c.check(err)
	}
	fmt.Fprintln(sio.out, g.Id)
	fmt.Fprintf(sio.err, "lopnr: key-file grant %s of project %s waits for a second person: lopnr partner keyfile approve %s %s\n", g.Id, g.Project, g.Project, g.Id)
	return nil
}

func runKeyfileApprove(ctx context.Context, args []string, sio stdio) error {
	cmd := newClientCmd(sio, "lopnr partner keyfile approve", `Usage: lopnr partner keyfile approve PROJECT GRANT [flags]

Approves a partner's request for one key file. Role approver or key holder,
and not the person who proposed the partner's registration.
`)
	pos, c, err := cmd.connect(args, 2, "partner keyfile approve takes PROJECT and GRANT")
	if err != nil {
		return err
	}
	defer c.Close()
	g, err := lopnrv1.NewPartnerServiceClient(c.conn).ApproveKeyFile(ctx, &lopnrv1.ApproveKeyFileRequest{Project: pos[0], Id: pos[1]})
	if err != nil {
		return c.check(err)
	}
	printGrant(sio.out, g)
	return nil
}

func runKeyfileList(ctx context.Context, args []string, sio stdio) error {
	cmd := newClientCmd(sio, "lopnr partner keyfile list", "Usage: lopnr partner keyfile list --project P [flags]\n\nLists a project's key-file grants; a partner sees only its own.\n")
	project := cmd.fs.String("project", "", "the project; required")
	_, c, err := cmd.connect(args, 0, "partner keyfile list takes no arguments")
	if err != nil {
		return err
	}
	defer c.Close()
	if err := required("project", *project); err != nil {
		return err
	}
	resp, err := lopnrv1.NewPartnerServiceClient(c.conn).ListKeyFileGrants(ctx, &lopnrv1.ListKeyFileGrantsRequest{Project: *project})
	if err != nil {
		return c.check(err)
	}
	for _, g := range resp.Grants {
		printGrant(sio.out, g)
	}
	return nil
}

func runKeyfileGet(ctx context.Context, args []string, sio stdio) error {
	cmd := newClientCmd(sio, "lopnr partner keyfile get", `Usage: lopnr partner keyfile get --project P --grant G -o FILE [flags]

Fetches the project's key file — personnummer;LopNr, one person a line —
encrypted with age to the key the project registered for you, on an approved
grant, which it uses up. Decrypt it with age -d -i YOUR_KEY FILE. The service
audits every key file it gives out.
`)
	project := cmd.fs.String("project", "", "the project; required")
	grant := cmd.fs.String("grant", "", "the approved grant (lopnr partner keyfile request); required")
	out := cmd.fs.String("o", "", "where to write the encrypted key file (created, mode 0600, never overwritten); required")
	_, c, err := cmd.connect(args, 0, "partner keyfile get takes no arguments")
	if err != nil {
		return err
	}
	defer c.Close()
	if err := required("project", *project, "grant", *grant, "o", *out); err != nil {
		return err
	}
	stream, err := lopnrv1.NewPartnerServiceClient(c.conn).GetKeyFile(ctx, &lopnrv1.GetKeyFileRequest{Project: *project, Grant: *grant})
	if err != nil {
		return c.check(err)
	}
	return writeNew(*out, func(w io.Writer) error {
		for {
			chunk, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return c.check(err)
			}
			if _, err := w.Write(chunk.Data); err != nil {
				return err
			}
		}
	}, sio, "the key file, encrypted to your key")
}

// createNew writes a new file (mode 0600, never overwriting) with fill,
// removing it when fill fails.
func createNew(path string, fill func(io.Writer) error) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = fill(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// writeNew is createNew, saying on standard error what it wrote where.
func writeNew(path string, fill func(io.Writer) error, sio stdio, what string) error {
	if err := createNew(path, fill); err != nil {
		return err
	}
	fmt.Fprintf(sio.err, "lopnr: wrote %s to %s\n", what, path)
	return nil
}

// delimiterFlag checks a one-character delimiter.
func delimiterFlag(d string) (rune, error) {
	r, size := utf8.DecodeRuneInString(d)
	if size == 0 || size != len(d) || r == '"' || r == '\n' || r == '\r' {
		return 0, &usageError{fmt.Sprintf("--delimiter %q: want one character other than a quote or a line break", d)}
	}
	return r, nil
}

func runPartnerBlind(ctx context.Context, args []string, sio stdio) error {
	cmd := newClientCmd(sio, "lopnr partner blind", `Usage: lopnr partner blind --project P [--identity COL] IN OUT [flags]

Run at the partner. Reads IN, a CSV file with a header, normalises the
identity numbers in the --identity column, blinds each distinct number and
sends only the blinded elements to the service, which evaluates them with the
project's OPRF key. Every evaluation is verified against the project's
published key before it is used. Writes OUT: the same rows with the identity
column replaced by PSEUDONYM (empty for a number that cannot be linked). The
identity numbers never leave this machine; the service never sees them, and
you never see its cohort.
`)
	project := cmd.fs.String("project", "", "the project; required")
	identity := cmd.fs.String("identity", "PERSONNUMMER", "the column with the identity numbers")
	delim := cmd.fs.String("delimiter", ";", "the CSV delimiter of IN (and OUT)")
	batch := cmd.fs.Int("batch", 1000, "elements per request")
	workers := cmd.fs.Int("workers", 0, "concurrent blinding workers (default: the number of CPUs)")
	refDate := cmd.fs.String("reference-date", "", "YYYY-MM-DD that decides the century of 10-digit numbers (default today)")
	pos, c, err := cmd.connect(args, 2, "partner blind takes IN and OUT")
	if err != nil {
		return err
	}
	defer c.Close()
	if err := required("project", *project); err != nil {
		return err
	}
	opts := partner.BlindOptions{IdentityColumn: *identity, BatchSize: *batch, Workers: *workers}
	if opts.Delimiter, err = delimiterFlag(*delim); err != nil {
		return err
	}
	if *refDate != "" {
		if opts.RefDate, err = time.Parse(time.DateOnly, *refDate); err != nil {
			return &usageError{fmt.Sprintf("--reference-date %q: want YYYY-MM-DD", *refDate)}
		}
	}
	pc := lopnrv1.NewPartnerServiceClient(c.conn)
	keys, err := pc.GetPartnerKeys(ctx, &lopnrv1.GetPartnerKeysRequest{Project: *project})
	if err != nil {
		return c.check(err)
	}
	if remaining := keys.EvaluateBudget - keys.Evaluated; remaining <= 0 {
		return &hintError{fmt.Errorf("the evaluate budget of project %s is used up (%d of %d)", *project, keys.Evaluated, keys.EvaluateBudget),
			"a budget is set when a partner is registered; a larger one is a new registration (of a new identity), approved by two people of the region"}
	}
	start := time.Now()
	opts.Progress = progressLine(sio, "blind", start)
	ev := &streamEvaluator{ctx: ctx, client: pc, project: *project}
	var report partner.BlindReport
	err = writeNew(pos[1], func(w io.Writer) error {
		var err error
		report, err = partner.BlindFile(ctx, pos[0], w, keys.OprfPublicKey, ev, opts)
		if cerr := ev.Close(); err == nil {
			err = cerr
		}
		return err
	}, sio, "the pseudonymised file")
	if err != nil {
		return c.check(err)
	}
	fmt.Fprintf(sio.out, "%s: %d rows, %d with a linkable identity (%d distinct persons, each evaluated once), %d without; %s\n",
		pos[1], report.Rows, report.Linkable, report.Distinct, report.Unlinkable, time.Since(start).Round(time.Millisecond))
	return nil
}

// progressLine returns a Progress function that prints at most once a
// second.
func progressLine(sio stdio, what string, start time.Time) func(done, total int64) {
	var mu sync.Mutex
	var last time.Time
	return func(done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(last) < time.Second && done < total {
			return
		}
		last = time.Now()
		fmt.Fprintf(sio.err, "lopnr: %s %d of %d (%s)\n", what, done, total, time.Since(start).Round(time.Second))
	}
}

// streamEvaluator sends batches over Evaluate streams, one per concurrent
// caller, kept open for the next batch.
type streamEvaluator struct {
	ctx     context.Context
	client  lopnrv1.PartnerServiceClient
	project string
	mu      sync.Mutex
	idle    []lopnrv1.PartnerService_EvaluateClient
	all     []lopnrv1.PartnerService_EvaluateClient
}

func (e *streamEvaluator) Evaluate(ctx context.Context, blinded [][]byte) ([][]byte, []byte, error) {
	e.mu.Lock()
	var st lopnrv1.PartnerService_EvaluateClient
	if n := len(e.idle); n > 0 {
		st, e.idle = e.idle[n-1], e.idle[:n-1]
	}
	e.mu.Unlock()
	if st == nil {
		var err error
		if st, err = e.client.Evaluate(e.ctx); err != nil {
			return nil, nil, err
		}
		e.mu.Lock()
		e.all = append(e.all, st)
		e.mu.Unlock()
	}
	if err := st.Send(&lopnrv1.EvaluateRequest{Project: e.project, Blinded: blinded}); err != nil {
		if errors.Is(err, io.EOF) { // the server ended the stream: its status says why
			_, err = st.Recv()
		}
		return nil, nil, err
	}
	resp, err := st.Recv()
	if err != nil {
		return nil, nil, err
	}
	e.mu.Lock()
	e.idle = append(e.idle, st)
	e.mu.Unlock()
	return resp.Evaluated, resp.Proof, nil
}

// Close ends every stream and returns the first error a stream ended with.
func (e *streamEvaluator) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var first error
	for _, st := range e.idle {
		st.CloseSend()
		if _, err := st.Recv(); !errors.Is(err, io.EOF) && first == nil {
			first = err
		}
	}
	e.idle = nil
	return first
}

func runPartnerUpload(ctx context.Context, args []string, sio stdio) error {
	cmd := newClientCmd(sio, "lopnr partner upload", `Usage: lopnr partner upload --project P --source S --keyed-by pseudonym|lopnr --variable COL[=TRANSFORM]… FILE [flags]

Sends a pseudonymised file back to the service, encrypted with age to the
service's key: keyed by PSEUDONYM (the output of lopnr partner blind) or by
LopNr (a file keyed by the key file's LopNr). The service keeps the rows of the
project's persons as the source S of a supplementary delivery — the variables
named with --variable must be on the project's approved list — and prints how
many rows it received and the job. How many matched goes to the region's
extraction team, never to you: it would say who is in the cohort.
`)
	project := cmd.fs.String("project", "", "the project; required")
	source := cmd.fs.String("source", "", "the source's name in the delivery and the approved list, such as scb_inkomst; required")
	keyedBy := cmd.fs.String("keyed-by", "pseudonym", "pseudonym or lopnr")
	identity := cmd.fs.String("identity", "", "the column with the pseudonym or LopNr (default PSEUDONYM or LopNr)")
	delim := cmd.fs.String("delimiter", ";", "the CSV delimiter of FILE")
	var variables stringsFlag
	cmd.fs.Var(&variables, "variable", "a column to deliver, with its transform: INKOMST or AR=year or KOMMUN=truncate(2) (repeatable; at least one)")
	pos, c, err := cmd.connect(args, 1, "partner upload takes one FILE")
	if err != nil {
		return err
	}
	defer c.Close()
	if err := required("project", *project, "source", *source); err != nil {
		return err
	}
	if _, err := delimiterFlag(*delim); err != nil {
		return err
	}
	h := &lopnrv1.ImportHeader{Project: *project, Source: *source, IdentityColumn: *identity, Delimiter: *delim}
	switch *keyedBy {
	case "pseudonym":
		h.KeyedBy = lopnrv1.KeyedBy_KEYED_BY_PSEUDONYM
		if h.IdentityColumn == "" {
			h.IdentityColumn = "PSEUDONYM"
		}
	case "lopnr":
		h.KeyedBy = lopnrv1.KeyedBy_KEYED_BY_LOPNR
		if h.IdentityColumn == "" {
			h.IdentityColumn = "LopNr"
		}
	default:
		return &usageError{fmt.Sprintf("--keyed-by %q: want pseudonym or lopnr", *keyedBy)}
	}
	if len(variables) == 0 {
		return &usageError{"--variable is required: the columns to deliver"}
	}
	for _, v := range variables {
		col, t, _ := strings.Cut(v, "=")
		h.Variables = append(h.Variables, &lopnrv1.ImportVariable{Column: col, Transform: t})
	}
	in, err := os.Open(pos[0])
	if err != nil {
		return err
	}
	defer in.Close()
	pc := lopnrv1.NewPartnerServiceClient(c.conn)
	keys, err := pc.GetPartnerKeys(ctx, &lopnrv1.GetPartnerKeysRequest{Project: *project})
	if err != nil {
		return c.check(err)
	}
	recips, err := extract.ParseRecipients([]string{keys.ServiceRecipient})
	if err != nil {
		return fmt.Errorf("the service's recipient: %w", err)
	}
	stream, err := pc.ImportPartnerFile(ctx)
	if err != nil {
		return c.check(err)
	}
	if err := stream.Send(&lopnrv1.ImportPartnerFileRequest{Part: &lopnrv1.ImportPartnerFileRequest_Header{Header: h}}); err != nil {
		return c.check(err)
	}
	// Encrypt into a pipe that the stream drains.
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(func() error {
			enc, err := age.Encrypt(pw, recips...)
			if err != nil {
				return err
			}
			if _, err := io.Copy(enc, in); err != nil {
				return fmt.Errorf("%s: %w", pos[0], err)
			}
			return enc.Close()
		}())
	}()
	buf := make([]byte, 256<<10)
	for {
		n, rerr := io.ReadFull(pr, buf)
		if n > 0 {
			if err := stream.Send(&lopnrv1.ImportPartnerFileRequest{Part: &lopnrv1.ImportPartnerFileRequest_Data{Data: buf[:n]}}); err != nil {
				if errors.Is(err, io.EOF) {
					_, err = stream.CloseAndRecv()
				}
				pr.CloseWithError(err)
				return c.check(err)
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return c.check(err)
	}
	fmt.Fprintf(sio.out, "%s: %d rows received; supplementary delivery job %s\n", filepath.Base(pos[0]), resp.Rows, resp.Job)
	return nil
}
