package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/note"

	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
	"github.com/lopnr/lopnr/server/audit"
)

func init() {
	commands["audit"] = command{"the tamper-evident audit log: audit list, audit verify [FILE]", runAudit}
}

const auditUsage = `Usage: lopnr audit list [--project P] [--after N] [--limit N] [flags]
       lopnr audit verify [--verifier VKEY] [--head SEQ:HASH] [--save-checkpoint CP] [flags]
       lopnr audit verify FILE [--checkpoint CP --verifier VKEY] [--head SEQ:HASH]

list prints the audit log's entries from lopnrd (role auditor or admin).

verify recomputes the audit log's hash chain and names the first entry that
was altered, removed or reordered, and checks that the log extends its
newest signed checkpoint: a log cut before the checkpoint, or with an entry
under it changed and the chain recomputed, fails, naming which.

Without FILE, lopnrd verifies its log against the checkpoint it keeps in
the key store and answers with it; --verifier checks that the checkpoint is
signed by the verifier key you hold (lopnrd logs it at start), and
--save-checkpoint keeps it for a later check.

With FILE (a copy of the log), --checkpoint CP (a checkpoint you kept, or
FILE.checkpoint when only --verifier is given) is checked with --verifier VKEY
(the key itself, NAME+HASH+KEY, or a file holding it), offline.

--head checks the log against a head pinned elsewhere (SEQ:HASH).
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
	cpFile := cmd.fs.String("checkpoint", "", "with FILE: the signed checkpoint the log must extend (default FILE.checkpoint with --verifier)")
	keyArg := cmd.fs.String("verifier", "", "the checkpoints' verifier key, NAME+HASH+KEY, or a file holding it")
	save := cmd.fs.String("save-checkpoint", "", "without FILE: write the server's newest checkpoint to this file")
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
	var verifier note.Verifier
	if *keyArg != "" {
		if verifier, err = readVerifier(*keyArg); err != nil {
			return err
		}
	}
	var (
		name string
		head audit.Head
		cp   audit.Checkpoint
	)
	switch {
	case len(files) > 1:
		return &usageError{"audit verify takes one file, or none to verify lopnrd's log"}
	case len(files) == 1 && cmd.sf.explicit():
		return &usageError{"give a FILE or --server, not both"}
	case len(files) == 1 && *save != "":
		return &usageError{"--save-checkpoint saves lopnrd's checkpoint: give no FILE"}
	case len(files) == 1 && *cpFile != "" && verifier == nil:
		return &usageError{"--checkpoint needs --verifier: the key that signed it"}
	case len(files) == 0 && *cpFile != "":
		return &usageError{"--checkpoint checks a FILE: give the log's file"}
	case len(files) == 1:
		name = files[0]
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		if verifier != nil {
			if *cpFile == "" {
				*cpFile = name + ".checkpoint"
			}
			b, err := os.ReadFile(*cpFile)
			if err != nil {
				return err
			}
			if cp, err = audit.ParseCheckpoint(b, verifier); err != nil {
				return fmt.Errorf("%s: %w", *cpFile, err)
			}
		}
		if head, err = cp.Check(f); err != nil {
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
		if verifier != nil {
			// The auditor's key, not the one the server names, decides.
			if resp.Checkpoint == "" {
				return fmt.Errorf("%s: lopnrd answered without a signed checkpoint", name)
			}
			if cp, err = audit.ParseCheckpoint([]byte(resp.Checkpoint), verifier); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if cp.Size != resp.CheckpointSize || resp.Ok && cp.Size > resp.HeadSeq {
				return fmt.Errorf("%s: %w: the checkpoint holds %d entries, lopnrd says %d and a log of %d", name, audit.ErrTampered, cp.Size, resp.CheckpointSize, resp.HeadSeq)
			}
		} else if resp.Checkpoint != "" {
			cp = audit.Checkpoint{Origin: strings.SplitN(resp.VerifierKey, "+", 2)[0], Size: resp.CheckpointSize, Note: []byte(resp.Checkpoint)}
		}
		if *save != "" && resp.Checkpoint != "" {
			if err := os.WriteFile(*save, []byte(resp.Checkpoint), 0o644); err != nil {
				return err
			}
		}
		if !resp.Ok {
			return fmt.Errorf("%s: %w: %s", name, audit.ErrTampered, orDash(resp.Problem))
		}
		head = audit.Head{Seq: resp.HeadSeq, Hash: resp.HeadHash}
		if verifier == nil && resp.VerifierKey != "" {
			fmt.Fprintf(sio.err, "lopnr: the checkpoint's signature was not checked: give --verifier %s, from a source other than this server\n", resp.VerifierKey)
		}
	}
	if *pinned != "" {
		if head.Seq < pin.Seq {
			return fmt.Errorf("%s: %w: the log ends at entry %d, the pinned head is entry %d (truncated)", name, audit.ErrTampered, head.Seq, pin.Seq)
		}
		if head.Seq == pin.Seq && head.Hash != pin.Hash {
			return fmt.Errorf("%s: %w: entry %d does not match the pinned head (rewritten)", name, audit.ErrTampered, pin.Seq)
		}
	}
	extends := ""
	if cp.Size > 0 {
		extends = fmt.Sprintf(", extends the checkpoint of %d entries signed by %s", cp.Size, cp.Origin)
	}
	fmt.Fprintf(sio.out, "%s: %d entries, chain intact%s; head %d:%s\n", name, head.Seq, extends, head.Seq, head.Hash)
	return nil
}

// readVerifier reads a note verifier key given as itself or in a file.
func readVerifier(arg string) (note.Verifier, error) {
	vkey := arg
	if strings.Count(arg, "+") < 2 {
		b, err := os.ReadFile(arg)
		if err != nil {
			return nil, fmt.Errorf("--verifier: want a verifier key (NAME+HASH+KEY) or a file holding one: %w", err)
		}
		vkey = strings.TrimSpace(string(b))
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, &usageError{"--verifier: not a verifier key (NAME+HASH+KEY, as lopnrd logs it)"}
	}
	return v, nil
}
