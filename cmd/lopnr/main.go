// Command lopnr is the command-line tool of the extraction team, approvers,
// researchers, partners and auditors. Each subcommand is a function in this
// package; they share the small frame below (usage, errors with hints, exit
// codes).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/lopnr/lopnr/internal/buildinfo"
)

// command is one subcommand of lopnr.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, io stdio) error
}

// stdio is where a command reads and writes, so tests can run commands as a
// user does.
type stdio struct {
	in       io.Reader
	out, err io.Writer
}

var commands = map[string]command{
	"version": {"print the version", runVersion},
}

// usageError is a mistake in how lopnr was called: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// hintError carries advice printed after the error.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() }
func (e *hintError) Unwrap() error { return e.err }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := mainWithExit(ctx, os.Args[1:], stdio{os.Stdin, os.Stdout, os.Stderr})
	stop()
	os.Exit(code)
}

// mainWithExit runs lopnr with args and returns the exit status.
func mainWithExit(ctx context.Context, args []string, sio stdio) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		printUsage(sio.err)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(sio.err, "lopnr: unknown command %q\n", args[0])
		printUsage(sio.err)
		return 2
	}
	err := cmd.run(ctx, args[1:], sio)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(sio.err, "lopnr %s: %v\n", args[0], err)
	var hint *hintError
	if errors.As(err, &hint) {
		fmt.Fprintf(sio.err, "lopnr: hint: %s\n", hint.hint)
	}
	var usage *usageError
	if errors.As(err, &usage) {
		return 2
	}
	return 1
}

// parseInterspersed parses flags wherever they stand among the positional
// arguments (`lopnr check job.yaml --report r.json`), and returns the
// positional ones. "--" ends the flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// parseFlags is parseInterspersed with lopnr's usage errors.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	pos, err := parseInterspersed(fs, args)
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		return nil, &usageError{err.Error()}
	}
	return pos, err
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "Usage: lopnr COMMAND [flags] [args]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'lopnr COMMAND -h' for a command's flags.")
}

func runVersion(_ context.Context, args []string, sio stdio) error {
	if len(args) > 0 {
		return &usageError{"version takes no arguments"}
	}
	fmt.Fprintln(sio.out, "lopnr", buildinfo.Read())
	return nil
}
