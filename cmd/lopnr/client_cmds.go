package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lopnr/lopnr/extract"
	"github.com/lopnr/lopnr/keystore"
	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
	"github.com/lopnr/lopnr/server"
)

func init() {
	commands["projects"] = command{"projects on lopnrd: create, get, list, extend, hold, destroy", runProjects}
	commands["submit"] = command{"submit a job spec to lopnrd and print the job's id", runSubmit}
	commands["jobs"] = command{"list a project's jobs on lopnrd; jobs get ID shows one", runJobs}
	commands["cancel"] = command{"cancel a job on lopnrd", runCancel}
	commands["deliveries"] = command{"list a project's deliveries on lopnrd", runDeliveries}
	commands["release"] = command{"release a delivery to the researchers (a second person)", runRelease}
}

// connectionHelp ends the usage of every command that talks to lopnrd.
const connectionHelp = `
The connection flags (--server, --cert, --key, --ca, --dev) also come from
$LOPNR_SERVER, $LOPNR_CERT, $LOPNR_KEY, $LOPNR_CA and $LOPNR_DEV=true, or from
the keys server, cert, key, ca and dev of the client config file
($LOPNR_CONFIG, else $XDG_CONFIG_HOME/lopnr/client.yaml or
~/.config/lopnr/client.yaml); a flag wins over the environment, the
environment over the file. --as (or $LOPNR_AS) picks another identity of a
lopnrd --dev, for the second person's step on a laptop.
`

// clientCmd is the frame of a command that talks to lopnrd: its flags,
// the connection flags among them.
type clientCmd struct {
	fs *flag.FlagSet
	sf serverFlags
}

func newClientCmd(sio stdio, name, usage string) *clientCmd {
	c := &clientCmd{fs: newFlags(sio, name, usage+connectionHelp)}
	c.sf.register(c.fs)
	return c
}

// parse parses args and checks that n positional arguments remain (any
// number when n < 0); want says what they should be.
func (c *clientCmd) parse(args []string, n int, want string) ([]string, error) {
	pos, err := parseFlags(c.fs, args)
	if err != nil {
		return nil, err
	}
	if n >= 0 && len(pos) != n {
		return nil, &usageError{want}
	}
	return pos, nil
}

// connect parses args as parse does and dials lopnrd; the caller closes
// the client.
func (c *clientCmd) connect(args []string, n int, want string) ([]string, *client, error) {
	pos, err := c.parse(args, n, want)
	if err != nil {
		return nil, nil, err
	}
	cl, err := c.sf.dial()
	if err != nil {
		return nil, nil, err
	}
	return pos, cl, nil
}

// required is a usage error unless each flag has a value; pairs is the
// flags' names and values in turn.
func required(pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if strings.TrimSpace(pairs[i+1]) == "" {
			return &usageError{fmt.Sprintf("--%s is required", pairs[i])}
		}
	}
	return nil
}

func day(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().UTC().Format(time.DateOnly)
}

func when(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().UTC().Format("2006-01-02 15:04 UTC")
}

// orDash is s, or "-" when empty, for table cells.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return printable(s)
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0) }

const projectsUsage = `Usage: lopnr projects SUBCOMMAND [flags] [args]

Projects (ärenden) on lopnrd, each with its rules — approved variables and
sources, allow_personnummer, the researchers' keys — and its kodnyckel's
retention. Rules change by four eyes: one person proposes (create, propose),
another approves (approve); jobs use only approved rules.

  create ID --epm-dnr D --approved A.yaml --recipient age1…|--recipients-file F [--retention-days N]
  propose ID --approved A.yaml --recipient age1…|--recipients-file F [--allow-personnummer] --reason R
  approve ID CHANGE              (a second person, role approver)
  changes ID                     a project's changes, pending and approved
  get ID
  list
  extend ID --until YYYY-MM-DD --reason R
  hold ID --reason R             (hold ID --release --reason R lifts it)
  destroy ID --reason R

Run 'lopnr projects SUBCOMMAND -h' for its flags.
`

func runProjects(ctx context.Context, args []string, sio stdio) error {
	return subcommand(ctx, "projects", projectsUsage, map[string]func(context.Context, []string, stdio) error{
		"create":  runProjectsCreate,
		"propose": runProjectsPropose,
		"approve": runProjectsApprove,
		"changes": runProjectsChanges,
		"get":     runProjectsGet,
		"list":    runProjectsList,
		"extend":  runProjectsExtend,
		"hold":    runProjectsHold,
		"destroy": runProjectsDestroy,
	}, args, sio)
}

// rulesFlags are the flags that give a project's rules.
type rulesFlags struct {
	approved        *string
	recipients      stringsFlag
	recipientsFiles stringsFlag
}

func (r *rulesFlags) register(fs *flag.FlagSet) {
	r.approved = fs.String("approved", "", "the approved variable list (YAML: variables, allow_personnummer, as lopnr run --approved reads); required")
	fs.Var(&r.recipients, "recipient", "a researcher's age public key, age1… or age1pq1… (repeatable; at least one, here or in --recipients-file)")
	fs.Var(&r.recipientsFiles, "recipients-file", "a `FILE` of researchers' age public keys, one a line, # comments and blank lines ignored, as age -R reads (repeatable)")
}

// rules reads the flags into the API's rules.
func (r *rulesFlags) rules() (*lopnrv1.ProjectRules, error) {
	if err := required("approved", *r.approved); err != nil {
		return nil, err
	}
	for _, f := range r.recipientsFiles {
		keys, err := readRecipientsFile(f)
		if err != nil {
			return nil, err
		}
		r.recipients = append(r.recipients, keys...)
	}
	if len(r.recipients) == 0 {
		return nil, &usageError{"--recipient (or --recipients-file) is required: the researchers' age public keys"}
	}
	if _, err := extract.ParseRecipients(r.recipients); err != nil {
		return nil, &usageError{fmt.Sprintf("--recipient: %v", err)}
	}
	appr, err := loadApproval(*r.approved)
	if err != nil {
		return nil, err
	}
	return server.RulesProto(appr, r.recipients), nil
}

// readRecipientsFile reads age public keys, one a line, as age -R does:
// blank lines and lines starting with # are skipped.
func readRecipientsFile(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--recipients-file: %w", err)
	}
	var keys []string
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if _, err := extract.ParseRecipients([]string{line}); err != nil {
			return nil, fmt.Errorf("--recipients-file %s: line %d: not an age public key (age1… or age1pq1…)", path, i+1)
		}
		keys = append(keys, line)
	}
	return keys, nil
}

func runProjectsCreate(ctx context.Context, args []string, sio stdio) error {
	cmd := newClientCmd(sio, "lopnr projects create", `Usage: lopnr projects create ID --epm-dnr D --approved A.yaml --recipient age1… [flags]

Registers a project and creates its kodnyckel. Its rules — the approved
variable list (the format lopnr run --approved reads: variables,
allow_personnummer) and the recipients — are the project's first proposed
change: no job runs until a second person with the approver role approves
it with lopnr projects approve ID c1. Role admin or extractor.
`)
	epm := cmd.fs.String("epm-dnr", "", "the ethics approval's diary number, such as 2025-01234-01; required")
	var rf rulesFlags
	rf.register(cmd.fs)
	days := cmd.fs.Int("retention-days", 0, "how many days the kodnyckel is kept (default: the server's, 90)")
	pos, err := cmd.parse(args, 1, "projects create takes one project ID")
	if err != nil {
		return err
	}
	if err := required("epm-dnr", *epm); err != nil {
		return err
	}
	rules, err := rf.rules()
	if err != nil {
		return err
	}
	if *days < 0 {
		return &usageError{"--retention-days: want a number of days, 0 for the default"}
	}
	req := &lopnrv1.CreateProjectRequest{Id: pos[0], EpmDnr: *epm, AllowPersonnummer: rules.AllowPersonnummer,
		Recipients: rules.Recipients, RetentionDays: int32(*days), ApprovedVariables: rules.ApprovedVariables, ApprovedSources: rules.ApprovedSources}
	c, err := cmd.sf.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	p, err := lopnrv1.NewProjectServiceClient(c.conn).CreateProject(ctx, req)
	if err != nil {
		return c.check(err)
	}
	printProject(sio.out, p)
	for _, ch := range p.PendingChanges {
		fmt.Fprintf(sio.out, "\nThe rules are change %s, waiting for a second person: no job runs until an approver other than you runs\n  lopnr projects approve %s %s\n", ch, p.Id, ch)
	}
	return nil
}

func runProjectsPropose(ctx context.Context, args []string, sio stdio) error {
	cmd := newClientCmd(sio, "lopnr projects propose", `Usage: lopnr projects propose ID --approved A.yaml --recipient age1… [--allow-personnummer] --reason R [flags]

Proposes new rules for a project, replacing its approved variable list,
allow_personnummer and recipients as a whole. They take effect when a second
person approves the change (lopnr projects approve ID CHANGE); until then jobs
use the rules approved before. Role extractor, approver or admin.
`)
	var rf rulesFlags
	rf.register(cmd.fs)
	allow := cmd.fs.Bool("allow-personnummer", false, "deliveries may carry identity numbers (also allow_personnummer: true in the list)")
	reason := cmd.fs.String("reason", "", "why; kept with the change and in the audit log; required")
	pos, err := cmd.parse(args, 1, "projects propose takes one project ID")
	if err != nil {
		return err
	}
	rules, err := rf.rules()
	if err != nil {
		return err
	}
	if err := required("reason", *reason); err != nil {
		return err
	}
	rules.AllowPersonnummer = rules.AllowPersonnummer || *allow
	c, err := cmd.sf.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	ch, err := lopnrv1.NewProjectServiceClient(c.conn).ProposeChange(ctx, &lopnrv1.ProposeChangeRequest{Project: pos[0], Rules: rules, Reason: *reason})
	if err != nil {
		return c.check(err)
	}
	printChange(sio.out, ch)
	fmt.Fprintf(sio.out, "\nA second person approves it with\n  lopnr projects approve %s %s\n", ch.Project, ch.Id)
	return nil
}

func runProjectsApprove(ctx context.Context, args []string, sio stdio) error {
	cmd := newClientCmd(sio, "lopnr projects approve", `Usage: lopnr projects approve ID CHANGE [flags]

Approves a pending change of a project — new rules, or a partner's
registration — which then takes effect. Check it first with lopnr projects
changes ID. Role approver, and not the person who proposed it (four eyes).
`)
	pos, c, err := cmd.connect(args, 2, "projects approve takes a project ID and a CHANGE")
	if err != nil {
		return err
	}
	defer c.Close()
	ch, err := lopnrv1.NewProjectServiceClient(c.conn).ApproveChange(ctx, &lopnrv1.ApproveChangeRequest{Project: pos[0], Id: pos[1]})
	if err != nil {
		return c.check(err)
	}
	printChange(sio.out, ch)
	return nil
}

func runProjectsChanges(ctx context.Context, args []string, sio stdio) error {
	cmd := newClientCmd(sio, "lopnr projects changes", `Usage: lopnr projects changes ID [flags]

Lists a project's changes — rules and partner registrations — pending and
approved, each in full: what a second person approves.
`)
	pos, c, err := cmd.connect(args, 1, "projects changes takes one project ID")
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := lopnrv1.NewProjectServiceClient(c.conn).ListChanges(ctx, &lopnrv1.ListChangesRequest{Project: pos[0]})
	if err != nil {
		return c.check(err)
	}
	for i, ch := range resp.Changes {
		if i > 0 {
			fmt.Fprintln(sio.out)
		}
		printChange(sio.out, ch)
	}
	return nil
}

// changeState is a change's state as the CLI says it.
func changeState(s lopnrv1.ChangeState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "CHANGE_STATE_"))
}

func printChange(w io.Writer, ch *lopnrv1.ProjectChange) {
	tw := newTable(w)
	fmt.Fprintf(tw, "Change\t%s of project %s\n", ch.Id, ch.Project)
	state := changeState(ch.State)
	if ch.State == lopnrv1.ChangeState_CHANGE_STATE_APPROVED {
		state += " " + when(ch.Approved) + " by " + orDash(ch.ApprovedBy)
	}
	fmt.Fprintf(tw, "State\t%s\n", state)
	fmt.Fprintf(tw, "Proposed\t%s by %s\n", when(ch.Proposed), orDash(ch.ProposedBy))
	fmt.Fprintf(tw, "Reason\t%s\n", orDash(ch.Reason))
	if r := ch.Rules; r != nil {
		printRules(tw, r.ApprovedVariables, r.ApprovedSources, r.AllowPersonnummer, r.Recipients)
	}
	if p := ch.Partner; p != nil {
		fmt.Fprintf(tw, "Partner\t%s\n", orDash(p.Identity))
		fmt.Fprintf(tw, "Recipient\t%s\n", orDash(p.Recipient))
		fmt.Fprintf(tw, "Exchanges\t%s\n", orDash(strings.Join(p.Exchanges, ", ")))
		fmt.Fprintf(tw, "Budget\t%d evaluations\n", p.EvaluateBudget)
	}
	tw.Flush()
}

// printRules prints a project's rules as table rows.
func printRules(tw io.Writer, vars []*lopnrv1.ApprovedVariable, sources []*lopnrv1.ApprovedSource, allowPersonnummer bool, recipients []string) {
	if allowPersonnummer {
		fmt.Fprintf(tw, "Personnummer\tallowed in deliveries\n")
	}
	label := "Recipients"
	for _, r := range recipients {
		fmt.Fprintf(tw, "%s\t%s\n", label, r)
		label = ""
	}
	label = "Approved"
	for _, v := range vars {
		t := "keep"
		if len(v.Transforms) > 0 {
			t = strings.Join(v.Transforms, ", ")
		}
		fmt.Fprintf(tw, "%s\t%s.%s: %s\n", label, v.Source, v.Column, t)
		label = ""
	}
	label = "Sources"
	for _, src := range sources {
		profile := src.Profile
		if src.ProfileYaml != "" {
			profile += " (its own profile, approved as it is)"
		}
		fmt.Fprintf(tw, "%s\t%s: read with %s\n", label, src.Name, profile)
		label = ""
	}
}

func runProjectsGet(ctx context.Context, args []string, sio stdio) error {
	cmd := newClientCmd(sio, "lopnr projects get", "Usage: lopnr projects get ID [flags]\n\nShows a project: its approval, recipients, retention and holds.\n")
	pos, c, err := cmd.connect(args, 1, "projects get takes one project ID")
	if err != nil {
		return err
	}
	defer c.Close()
	p, err := lopnrv1.NewProjectServiceClient(c.conn).GetProject(ctx, &lopnrv1.GetProjectRequest{Id: pos[0]})
	if err != nil {
		return c.check(err)
	}
	printProject(sio.out, p)
	return nil
}

func printProject(w io.Writer, p *lopnrv1.Project) {
	tw := newTable(w)
	fmt.Fprintf(tw, "Project\t%s\n", p.Id)
	fmt.Fprintf(tw, "EPM dnr\t%s\n", p.EpmDnr)
	fmt.Fprintf(tw, "Created\t%s by %s\n", when(p.Created), orDash(p.CreatedBy))
	fmt.Fprintf(tw, "Retain until\t%s\n", day(p.RetainUntil))
	if p.Hold && p.HoldReason == "" { // the reason is for approvers and auditors
		fmt.Fprintf(tw, "Legal hold\tyes\n")
	} else if p.Hold {
		fmt.Fprintf(tw, "Legal hold\tyes: %s\n", printable(p.HoldReason))
	} else {
		fmt.Fprintf(tw, "Legal hold\tno\n")
	}
	if p.Destroyed != nil {
		fmt.Fprintf(tw, "Destroyed\t%s\n", when(p.Destroyed))
	}
	fmt.Fprintf(tw, "Persons\t%d\n", p.Persons)
	if len(p.ApprovedVariables) == 0 && p.Destroyed == nil {
		fmt.Fprintf(tw, "Rules\tnone approved yet: no job runs\n")
	}
	printRules(tw, p.ApprovedVariables, p.ApprovedSources, p.AllowPersonnummer, p.Recipients)
	if len(p.PendingChanges) > 0 {
		fmt.Fprintf(tw, "Pending\t%s (lopnr projects changes %s)\n", strings.Join(p.PendingChanges, ", "), p.Id)
	}
	label := "Changes"
	for _, ch := range p.Changes {
		until := ""
		if ch.Until != nil {
			until = " until " + day(ch.Until)
		}
		reason := ""
		if ch.Reason != "" {
			reason = ": " + printable(ch.Reason)
		}
		fmt.Fprintf(tw, "%s\t%s %s%s%s\n", label, when(ch.At), ch.Action, until, reason)
		label = ""
	}
	tw.Flush()
}

func runProjectsList(ctx context.Context, args []string, sio stdio) error {
	cmd := newClientCmd(sio, "lopnr projects list", "Usage: lopnr projects list [flags]\n\nLists the projects you have a role in.\n")
	if _, err := cmd.parse(args, 0, "projects list takes no arguments"); err != nil {
		return err
	}
	c, err := cmd.sf.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := lopnrv1.NewProjectServiceClient(c.conn).ListProjects(ctx, &lopnrv1.ListProjectsRequest{})
	if err != nil {
		return c.check(err)
	}
	tw := newTable(sio.out)
	fmt.Fprintln(tw, "PROJECT\tEPM DNR\tRETAIN UNTIL\tPERSONS\tSTATE")
	for _, p := range resp.Projects {
		state := "active"
		switch {
		case p.Destroyed != nil:
			state = "destroyed " + day(p.Destroyed)
		case p.Hold:
			state = "legal hold"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", p.Id, orDash(p.EpmDnr), day(p.RetainUntil), p.Persons, state)
	}
	return tw.Flush()
}

const projectsExtendUsage = `Usage: lopnr %s extend ID --until YYYY-MM-DD --reason R [flags]

Keeps the project's kodnyckel until a later date. Role approver.
`

// runProjectsExtend is also lopnr keys extend; group names which.
func runProjectsExtend(ctx context.Context, args []string, sio stdio) error {
	return runExtend(ctx, "projects", args, sio)
}

func runExtend(ctx context.Context, group string, args []string, sio stdio) error {
	cmd := newClientCmd(sio, "lopnr "+group+" extend", fmt.Sprintf(projectsExtendUsage, group))
	until := cmd.fs.String("until", "", "the new retain-until date, YYYY-MM-DD (UTC); required")
	reason := cmd.fs.String("reason", "", "why; kept with the project and in the audit log; required")
	pos, err := cmd.parse(args, 1, group+" extend takes one project ID")
	if err != nil {
		return err
	}
	if err := required("until", *until, "reason", *reason); err != nil {
		return err
	}
	t, err := time.Parse(time.DateOnly, *until)
	if err != nil {
		return &usageError{fmt.Sprintf("--until %q: want a date, YYYY-MM-DD", *until)}
	}
	c, err := cmd.sf.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	p, err := lopnrv1.NewProjectServiceClient(c.conn).ExtendRetention(ctx, &lopnrv1.ExtendRetentionRequest{
		Id: pos[0], RetainUntil: timestamppb.New(t), Reason: *reason})
	if err != nil {
		return c.check(err)
	}
	fmt.Fprintf(sio.out, "Project %s: the kodnyckel is kept until %s\n", p.Id, day(p.RetainUntil))
	return nil
}

const projectsHoldUsage = `Usage: lopnr %s hold ID --reason R [--release] [flags]

Sets a legal hold on the project: its kodnyckel is not destroyed, whatever its
retention, until the hold is lifted with --release. Role approver.
`

func runProjectsHold(ctx context.Context, args []string, sio stdio) error {
	return runHold(ctx, "projects", args, sio)
}

func runHold(ctx context.Context, group string, args []string, sio stdio) error {
	cmd := newClientCmd(sio, "lopnr "+group+" hold", fmt.Sprintf(projectsHoldUsage, group))
	release := cmd.fs.Bool("release", false, "lift the hold instead of setting it")
	reason := cmd.fs.String("reason", "", "why; kept with the project and in the audit log; required")
	pos, err := cmd.parse(args, 1, group+" hold takes one project ID")
	if err != nil {
		return err
	}
	if err := required("reason", *reason); err != nil {
		return err
	}
	c, err := cmd.sf.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	p, err := lopnrv1.NewProjectServiceClient(c.conn).SetHold(ctx, &lopnrv1.SetHoldRequest{Id: pos[0], Hold: !*release, Reason: *reason})
	if err != nil {
		return c.check(err)
	}
	if p.Hold {
		fmt.Fprintf(sio.out, "Project %s: legal hold set: %s\n", p.Id, printable(p.HoldReason))
	} else {
		fmt.Fprintf(sio.out, "Project %s: no legal hold; the kodnyckel is kept until %s\n", p.Id, day(p.RetainUntil))
	}
	return nil
}

func runProjectsDestroy(ctx context.Context, args []string, sio stdio) error {
	cmd := newClientCmd(sio, "lopnr projects destroy", `Usage: lopnr projects destroy ID --reason R [flags]

Destroys the project's kodnyckel now, which cannot be undone: no LopNr of the
project can be linked back to a person afterwards. Prints the receipt as a
line of JSON. Refused under a legal hold. Role approver or admin.
`)
	reason := cmd.fs.String("reason", "", "why; kept in the audit log; required")
	pos, err := cmd.parse(args, 1, "projects destroy takes one project ID")
	if err != nil {
		return err
	}
	if err := required("reason", *reason); err != nil {
		return err
	}
	c, err := cmd.sf.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	r, err := lopnrv1.NewProjectServiceClient(c.conn).DestroyProject(ctx, &lopnrv1.DestroyProjectRequest{Id: pos[0], Reason: *reason})
	if err != nil {
		return c.check(err)
	}
	return printReceipts(sio.out, []*lopnrv1.Receipt{r})
}

// printReceipts prints destruction receipts as lines of JSON, the same as
// a local lopnr keys sweep.
func printReceipts(w io.Writer, rs []*lopnrv1.Receipt) error {
	enc := json.NewEncoder(w)
	for _, r := range rs {
		kr := keystore.Receipt{Project: r.Project, Paths: int(r.Paths), Mappings: r.Mappings, Digest: r.Digest}
		if r.DestroyedAt != nil {
			kr.DestroyedAt = r.DestroyedAt.AsTime()
		}
		if r.RetainUntil != nil {
			kr.RetainUntil = r.RetainUntil.AsTime()
		}
		if err := enc.Encode(kr); err != nil {
			return err
		}
	}
	return nil
}

func runSubmit(ctx context.Context, args []string, sio stdio) error {
	cmd := newClientCmd(sio, "lopnr submit", `Usage: lopnr submit JOB.yaml [--watch] [flags]

Submits a job spec (docs/jobspec.md) to lopnrd, which checks it against the
project's approved variables and queues it. Source paths are relative to the
server's source root. Prints the job's id; --watch then follows it as
lopnr watch does. Role extractor.
`)
	watch := cmd.fs.Bool("watch", false, "follow the job until it ends")
	pos, err := cmd.parse(args, 1, "submit takes one job spec file")
	if err != nil {
		return err
	}
	spec, err := os.ReadFile(pos[0])
	if err != nil {
		return err
	}
	c, err := cmd.sf.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	job, err := lopnrv1.NewJobServiceClient(c.conn).SubmitJob(ctx, &lopnrv1.SubmitJobRequest{Spec: spec})
	if err != nil {
		return c.check(err)
	}
	fmt.Fprintln(sio.out, job.Id)
	fmt.Fprintf(sio.err, "lopnr: job %s of project %s: %s\n", job.Id, job.Project, jobState(job.State))
	if *watch {
		return watchJob(ctx, c, job.Id, sio.out)
	}
	return nil
}

// jobState is a job state as the CLI says it: queued, running, succeeded,
// failed, cancelled.
func jobState(s lopnrv1.JobState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "JOB_STATE_"))
}

const jobsUsage = `Usage: lopnr jobs [--project P] [flags]
       lopnr jobs get ID [flags]

Lists jobs, newest first: a project's, or every one you may see. jobs get
shows one job: its times, its last event, its error or delivery, and its
linkage-quality report.
`

func runJobs(ctx context.Context, args []string, sio stdio) error {
	if len(args) > 0 && args[0] == "get" {
		return runJobsGet(ctx, args[1:], sio)
	}
	if len(args) > 0 && args[0] == "list" {
		args = args[1:]
	}
	cmd := newClientCmd(sio, "lopnr jobs", jobsUsage)
	project := cmd.fs.String("project", "", "only this project's jobs")
	if _, err := cmd.parse(args, 0, "jobs takes no arguments but 'get ID'"); err != nil {
		return err
	}
	c, err := cmd.sf.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := lopnrv1.NewJobServiceClient(c.conn).ListJobs(ctx, &lopnrv1.ListJobsRequest{Project: *project})
	if err != nil {
		return c.check(err)
	}
	tw := newTable(sio.out)
	fmt.Fprintln(tw, "JOB\tPROJECT\tSTATE\tSUBMITTER\tCREATED\tDELIVERY")
	for _, j := range resp.Jobs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", j.Id, j.Project, jobState(j.State), orDash(j.Submitter), when(j.Created), orDash(j.Delivery))
	}
	return tw.Flush()
}

func runJobsGet(ctx context.Context, args []string, sio stdio) error {
	cmd := newClientCmd(sio, "lopnr jobs get", jobsUsage)
	pos, c, err := cmd.connect(args, 1, "jobs get takes one job ID")
	if err != nil {
		return err
	}
	defer c.Close()
	j, err := lopnrv1.NewJobServiceClient(c.conn).GetJob(ctx, &lopnrv1.GetJobRequest{Id: pos[0]})
	if err != nil {
		return c.check(err)
	}
	tw := newTable(sio.out)
	fmt.Fprintf(tw, "Job\t%s\n", j.Id)
	fmt.Fprintf(tw, "Project\t%s\n", j.Project)
	fmt.Fprintf(tw, "State\t%s\n", jobState(j.State))
	fmt.Fprintf(tw, "Submitter\t%s\n", orDash(j.Submitter))
	fmt.Fprintf(tw, "Created\t%s\n", when(j.Created))
	fmt.Fprintf(tw, "Started\t%s\n", when(j.Started))
	fmt.Fprintf(tw, "Finished\t%s\n", when(j.Finished))
	if j.Last != nil {
		fmt.Fprintf(tw, "Last event\t%s\n", eventLine(j.Last))
	}
	if j.Delivery != "" {
		fmt.Fprintf(tw, "Delivery\t%s\n", j.Delivery)
	}
	if j.Error != "" {
		fmt.Fprintf(tw, "Error\t%s\n", printable(j.Error))
	}
	tw.Flush()
	if len(j.Spec) > 0 {
		// What the approver who releases reads: the cohort's criteria
		// (codes, windows, age) are the spec's, not the approved list's.
		fmt.Fprintf(sio.out, "\nSpec:\n")
		for _, line := range strings.Split(strings.TrimRight(string(j.Spec), "\n"), "\n") {
			fmt.Fprintf(sio.out, "  %s\n", printable(line))
		}
	}
	if j.Report != "" {
		fmt.Fprintf(sio.out, "\n%s", j.Report)
		if !strings.HasSuffix(j.Report, "\n") {
			fmt.Fprintln(sio.out)
		}
	}
	return nil
}

func runCancel(ctx context.Context, args []string, sio stdio) error {
	cmd := newClientCmd(sio, "lopnr cancel", "Usage: lopnr cancel JOB [flags]\n\nStops a job at whatever stage it is in; nothing of it is published.\n")
	pos, c, err := cmd.connect(args, 1, "cancel takes one job ID")
	if err != nil {
		return err
	}
	defer c.Close()
	j, err := lopnrv1.NewJobServiceClient(c.conn).CancelJob(ctx, &lopnrv1.CancelJobRequest{Id: pos[0]})
	if err != nil {
		return c.check(err)
	}
	fmt.Fprintf(sio.out, "Job %s: %s\n", j.Id, jobState(j.State))
	return nil
}

func runDeliveries(ctx context.Context, args []string, sio stdio) error {
	cmd := newClientCmd(sio, "lopnr deliveries", `Usage: lopnr deliveries --project P [flags]

Lists a project's deliveries: the job that made each, whether and when it was
released, and its files and rows. A researcher sees only released ones.
`)
	project := cmd.fs.String("project", "", "the project; required")
	if _, err := cmd.parse(args, 0, "deliveries takes no arguments; give --project"); err != nil {
		return err
	}
	if err := required("project", *project); err != nil {
		return err
	}
	c, err := cmd.sf.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := lopnrv1.NewDeliveryServiceClient(c.conn).ListDeliveries(ctx, &lopnrv1.ListDeliveriesRequest{Project: *project})
	if err != nil {
		return c.check(err)
	}
	tw := newTable(sio.out)
	fmt.Fprintln(tw, "DELIVERY\tJOB\tRELEASED\tFILES\tROWS")
	for _, d := range resp.Deliveries {
		released := "no"
		if d.Released {
			released = when(d.ReleasedAt) + " by " + orDash(d.ReleasedBy)
		}
		var rows int64
		for _, f := range d.Files {
			rows += f.Rows
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\n", d.Id, orDash(d.Job), released, len(d.Files), rows)
	}
	return tw.Flush()
}

func runRelease(ctx context.Context, args []string, sio stdio) error {
	cmd := newClientCmd(sio, "lopnr release", `Usage: lopnr release PROJECT DELIVERY [flags]

Releases a delivery to the project's researchers, who can then fetch it with
lopnr presign. Role approver, and not the person who submitted the job.
`)
	pos, c, err := cmd.connect(args, 2, "release takes PROJECT and DELIVERY")
	if err != nil {
		return err
	}
	defer c.Close()
	d, err := lopnrv1.NewDeliveryServiceClient(c.conn).ReleaseDelivery(ctx, &lopnrv1.ReleaseDeliveryRequest{Project: pos[0], Delivery: pos[1]})
	if err != nil {
		return c.check(err)
	}
	fmt.Fprintf(sio.out, "Delivery %s of project %s released by %s at %s: %d files\n", d.Id, d.Project, orDash(d.ReleasedBy), when(d.ReleasedAt), len(d.Files))
	return nil
}
