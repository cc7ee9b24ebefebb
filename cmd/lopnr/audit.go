package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
	"github.com/lopnr/lopnr/server/audit"
)

func init() {
	commands["audit"] = command{"the tamper-evident audit log: audit list, audit verify [FILE]", runAudit}
}

const auditUsage = `Usage: lopnr audit list [--project P] [--after N] [--limit N] [flags]
       lopnr audit verify [--head SEQ:HASH] [FILE] [flags]

list prints the audit log's entries from lopnrd (role auditor or admin).

verify recomputes the audit log's hash chain and names the first entry that
was altered, removed or reordered: lopnrd's log when no FILE is given, else
the log in FILE. --head checks the log against a head pinned elsewhere, which
also catches a truncated end.
`

func runAudit(ctx context.Context, args []string, sio stdio) error {
	return subcommand(ctx, "audit", auditUsage, map[string]func(context.Context, []string, stdio) error{
		"list":   runAuditList,
		"verify": runAuditVerify,
	}, args, sio)
}

func runAuditList(ctx context.Context, args []string, sio stdio) error {
	cmd := newClientCmd(sio, "lopnr audit list", auditUsage)
	project := cmd.fs.String("project", "", "only this project's entries")
	after := cmd.fs.Int64("after", 0, "only entries after this sequence number")
	limit := cmd.fs.Int("limit", 0, "at most this many entries (default: the server's, 1000)")
	if _, err := cmd.parse(args, 0, "audit list takes no arguments"); err != nil {
		return err
	}
	if *after < 0 || *limit < 0 {
		return &usageError{"--after and --limit: want a number, 0 or more"}
	}
	c, err := cmd.sf.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := lopnrv1.NewAuditServiceClient(c.conn).ListAudit(ctx, &lopnrv1.ListAuditRequest{Project: *project, After: *after, Limit: int32(*limit)})
	if err != nil {
		return c.check(err)
	}
	tw := newTable(sio.out)
	fmt.Fprintln(tw, "SEQ\tTIME\tIDENTITY\tACTION\tPROJECT\tJOB\tOUTCOME\tREASON")
	for _, e := range resp.Entries {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Seq, when(e.Time), orDash(e.Identity), orDash(e.Action),
			orDash(e.Project), orDash(e.Job), orDash(e.Outcome), orDash(strings.ReplaceAll(e.Reason, "\t", " ")))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if n := len(resp.Entries); n > 0 && (*limit == 0 && n == 1000 || n == *limit) {
		fmt.Fprintf(sio.err, "lopnr: %d entries; the next ones with --after %d\n", n, resp.Entries[n-1].Seq)
	}
	return nil
}

func runAuditVerify(ctx context.Context, args []string, sio stdio) error {
	cmd := newClientCmd(sio, "lopnr audit verify", auditUsage)
	pinned := cmd.fs.String("head", "", "the head to expect, SEQ:HASH, as the server reports it")
	files, err := cmd.parse(args, -1, "")
	if err != nil {
		return err
	}
	var pin audit.Head
	if *pinned != "" {
		if _, err := fmt.Sscanf(*pinned, "%d:%s", &pin.Seq, &pin.Hash); err != nil {
			return &usageError{"--head: want SEQ:HASH"}
		}
	}
	var name string
	var head audit.Head
	switch {
	case len(files) > 1:
		return &usageError{"audit verify takes one file, or none to verify lopnrd's log"}
	case len(files) == 1 && cmd.sf.explicit():
		return &usageError{"give a FILE or --server, not both"}
	case len(files) == 1:
		name = files[0]
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		if head, err = audit.Verify(f); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	default:
		c, err := cmd.sf.dial()
		if err != nil {
			return err
		}
		defer c.Close()
		resp, err := lopnrv1.NewAuditServiceClient(c.conn).VerifyAudit(ctx, &lopnrv1.VerifyAuditRequest{})
		if err != nil {
			return c.check(err)
		}
		name = "the audit log of lopnrd " + c.addr
		if !resp.Ok {
			return fmt.Errorf("%s: %w: %s", name, audit.ErrTampered, orDash(resp.Problem))
		}
		head = audit.Head{Seq: resp.HeadSeq, Hash: resp.HeadHash}
	}
	if *pinned != "" {
		if head.Seq < pin.Seq {
			return fmt.Errorf("%s: %w: the log ends at entry %d, the pinned head is entry %d (truncated)", name, audit.ErrTampered, head.Seq, pin.Seq)
		}
		if head.Seq == pin.Seq && head.Hash != pin.Hash {
			return fmt.Errorf("%s: %w: entry %d does not match the pinned head (rewritten)", name, audit.ErrTampered, pin.Seq)
		}
	}
	fmt.Fprintf(sio.out, "%s: %d entries, chain intact; head %d:%s\n", name, head.Seq, head.Seq, head.Hash)
	return nil
}
