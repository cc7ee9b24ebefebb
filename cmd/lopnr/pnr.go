package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/lopnr/lopnr/linkage/personnummer"
)

const pnrUsage = `Usage: lopnr pnr [flags] [FILE…]

Reads one identity number a line (standard input when no FILE is given) and
writes a tab-separated line for each, after a header:

  input  canonical  kind  sex  birth_date  reason  [changed_from]

kind is personnummer, samordningsnummer, interim, reserve or invalid; sex is
M, F or empty; birth_date is YYYY-MM-DD, empty when the number does not tell
it; reason is empty for a valid number, otherwise a short code (format, date,
future, birthnumber, checksum, organisationsnummer; with --history also
reused, history-cycle, history-conflict). The exit status is 0 whatever the
numbers are; only I/O and usage errors fail.

Flags:
`

func init() {
	commands["pnr"] = command{"parse, validate and normalise identity numbers", runPnr}
}

func runPnr(ctx context.Context, args []string, sio stdio) error {
	fs := flag.NewFlagSet("lopnr pnr", flag.ContinueOnError)
	fs.SetOutput(sio.err)
	refDate := fs.String("ref-date", "", "reference date YYYY-MM-DD that decides the century of 10-digit numbers (default today)")
	historyFile := fs.String("history", "", "number changes (old; new; date) to resolve each number to the current one; adds a changed_from column")
	reusedFile := fs.String("reused", "", "numbers known to be used by two persons, one a line; they get reason reused and are never linked")
	fs.Usage = func() {
		fmt.Fprint(sio.err, pnrUsage)
		fs.PrintDefaults()
	}
	files, err := parseFlags(fs, args)
	if err != nil {
		return err
	}

	ref := time.Now()
	if *refDate != "" {
		t, err := time.Parse("2006-01-02", *refDate)
		if err != nil {
			return &usageError{fmt.Sprintf("--ref-date %q: want YYYY-MM-DD", *refDate)}
		}
		ref = t
	}
	p := personnummer.NewParser(ref)

	var hist *personnummer.History
	if *historyFile != "" || *reusedFile != "" {
		var changes []personnummer.Change
		var reused []personnummer.Number
		if *historyFile != "" {
			if err := readFile(*historyFile, func(r io.Reader) (err error) {
				changes, err = personnummer.ReadHistory(r, *historyFile, p)
				return err
			}); err != nil {
				return err
			}
		}
		if *reusedFile != "" {
			if err := readFile(*reusedFile, func(r io.Reader) (err error) {
				reused, err = personnummer.ReadNumbers(r, *reusedFile, p)
				return err
			}); err != nil {
				return err
			}
		}
		hist = personnummer.NewHistory(changes, reused)
	}

	w := bufio.NewWriterSize(sio.out, 64<<10)
	header := "input\tcanonical\tkind\tsex\tbirth_date\treason"
	if hist != nil {
		header += "\tchanged_from"
	}
	w.WriteString(header + "\n")
	if len(files) == 0 {
		if err := writePnrLines(ctx, sio.in, "stdin", p, hist, w); err != nil {
			return err
		}
	}
	for _, name := range files {
		if err := readFile(name, func(r io.Reader) error { return writePnrLines(ctx, r, name, p, hist, w) }); err != nil {
			return err
		}
	}
	return w.Flush()
}

// readFile opens name and passes it to fn.
func readFile(name string, fn func(io.Reader) error) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	return fn(f)
}

// writePnrLines writes one output line for every input line, streaming.
func writePnrLines(ctx context.Context, r io.Reader, name string, p *personnummer.Parser, hist *personnummer.History, w *bufio.Writer) error {
	br := bufio.NewReaderSize(r, 64<<10)
	buf := make([]byte, 0, 256)
	for line := 1; ; line++ {
		if line%(1<<16) == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		text, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return &personnummer.LineError{File: name, Line: line, Err: errors.New("line longer than 64 KiB")}
		}
		if len(text) == 0 && err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("%s: %w", name, err)
		}
		text = trimEOL(text)
		n := p.ParseBytes(text)
		buf = appendEscaped(buf[:0], text)
		buf = append(buf, '\t')
		if hist != nil {
			cur, reason := hist.Resolve(n)
			buf = appendPnrColumns(buf, cur, reason)
			buf = append(buf, '\t')
			if cur.Key() != n.Key() {
				buf = n.AppendCanonical(buf)
			}
		} else {
			buf = appendPnrColumns(buf, n, n.Reason())
		}
		buf = append(buf, '\n')
		if _, err := w.Write(buf); err != nil {
			return err
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("%s: %w", name, err)
		}
	}
}

func appendPnrColumns(buf []byte, n personnummer.Number, reason personnummer.Reason) []byte {
	buf = n.AppendCanonical(buf)
	buf = append(buf, '\t')
	buf = append(buf, n.Kind().String()...)
	buf = append(buf, '\t')
	buf = append(buf, n.Sex().String()...)
	buf = append(buf, '\t')
	buf = n.AppendBirthDate(buf)
	buf = append(buf, '\t')
	return append(buf, reason.String()...)
}

func trimEOL(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] == '\n' {
		b = b[:len(b)-1]
	}
	if len(b) > 0 && b[len(b)-1] == '\r' {
		b = b[:len(b)-1]
	}
	return b
}

// appendEscaped appends the input column, with tabs and backslashes escaped
// so that a stray tab cannot shift the columns.
func appendEscaped(buf, text []byte) []byte {
	for _, c := range text {
		switch c {
		case '\t':
			buf = append(buf, '\\', 't')
		case '\\':
			buf = append(buf, '\\', '\\')
		default:
			buf = append(buf, c)
		}
	}
	return buf
}
