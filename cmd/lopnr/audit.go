package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/lopnr/lopnr/server/audit"
)

func init() {
	commands["audit"] = command{"verify the tamper-evident audit log: audit verify FILE", runAudit}
}

func runAudit(ctx context.Context, args []string, sio stdio) error {
	if len(args) == 0 || args[0] != "verify" {
		fmt.Fprint(sio.err, "Usage: lopnr audit verify [--head SEQ:HASH] FILE\n\nRecomputes the audit log's hash chain and names the first entry that was\naltered, removed or reordered. --head checks the log against a head pinned\nelsewhere, which also catches a truncated end.\n")
		return &usageError{"audit: want a subcommand: verify"}
	}
	fs := flag.NewFlagSet("lopnr audit verify", flag.ContinueOnError)
	fs.SetOutput(sio.err)
	pinned := fs.String("head", "", "the head to expect, SEQ:HASH, as the server reports it")
	files, err := parseFlags(fs, args[1:])
	if err != nil {
		return err
	}
	if len(files) != 1 {
		return &usageError{"audit verify takes one file"}
	}
	f, err := os.Open(files[0])
	if err != nil {
		return err
	}
	defer f.Close()
	head, err := audit.Verify(f)
	if err != nil {
		return fmt.Errorf("%s: %w", files[0], err)
	}
	if *pinned != "" {
		var seq int64
		var hash string
		if _, err := fmt.Sscanf(*pinned, "%d:%s", &seq, &hash); err != nil {
			return &usageError{"--head: want SEQ:HASH"}
		}
		if head.Seq < seq {
			return fmt.Errorf("%s: %w: the log ends at entry %d, the pinned head is entry %d (truncated)", files[0], audit.ErrTampered, head.Seq, seq)
		}
		if head.Seq == seq && head.Hash != hash {
			return fmt.Errorf("%s: %w: entry %d does not match the pinned head (rewritten)", files[0], audit.ErrTampered, seq)
		}
	}
	fmt.Fprintf(sio.out, "%s: %d entries, chain intact; head %d:%s\n", files[0], head.Seq, head.Seq, head.Hash)
	return nil
}
