package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
)

func init() {
	commands["watch"] = command{"follow a job on lopnrd until it ends", runWatch}
}

func runWatch(ctx context.Context, args []string, sio stdio) error {
	cmd := newClientCmd(sio, "lopnr watch", `Usage: lopnr watch JOB [flags]

Follows a job's progress until it ends: stage, source or file, rows and bytes.
On a terminal the line is redrawn in place; otherwise each event is a line.
Exits 1 when the job fails or is cancelled.
`)
	pos, c, err := cmd.connect(args, 1, "watch takes one job ID")
	if err != nil {
		return err
	}
	defer c.Close()
	return watchJob(ctx, c, pos[0], sio.out)
}

// isTerminal reports whether w is a terminal, where progress is redrawn in
// place rather than printed line by line.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// watchJob shows a job's events until it ends, then its outcome; a job
// that failed or was cancelled is an error.
func watchJob(ctx context.Context, c *client, id string, w io.Writer) error {
	jobs := lopnrv1.NewJobServiceClient(c.conn)
	stream, err := jobs.WatchJob(ctx, &lopnrv1.WatchJobRequest{Id: id})
	if err != nil {
		return c.check(err)
	}
	p := &progress{w: w, term: isTerminal(w)}
	state := lopnrv1.JobState_JOB_STATE_UNSPECIFIED
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			p.end()
			return c.check(err)
		}
		p.show(ev)
		state = ev.State
	}
	p.end()
	// The job itself says why it failed and what it delivered.
	job, err := jobs.GetJob(ctx, &lopnrv1.GetJobRequest{Id: id})
	if err != nil {
		job = &lopnrv1.Job{Id: id, State: state}
	}
	switch job.State {
	case lopnrv1.JobState_JOB_STATE_SUCCEEDED:
		fmt.Fprintf(w, "Job %s succeeded: delivery %s\n", job.Id, orDash(job.Delivery))
		return nil
	case lopnrv1.JobState_JOB_STATE_FAILED:
		fmt.Fprintf(w, "Job %s failed\n", job.Id)
		return fmt.Errorf("job %s failed: %s", job.Id, orDash(job.Error))
	case lopnrv1.JobState_JOB_STATE_CANCELLED:
		fmt.Fprintf(w, "Job %s cancelled\n", job.Id)
		return fmt.Errorf("job %s was cancelled", job.Id)
	}
	return &hintError{fmt.Errorf("job %s: the server ended the stream while the job is %s", id, jobState(job.State)),
		fmt.Sprintf("lopnr watch %s follows it again", id)}
}

// progress shows job events: on a terminal, one line per stage and source
// redrawn in place with \r; elsewhere a line per event.
type progress struct {
	w    io.Writer
	term bool
	key  string // stage and source of the line drawn without its newline
	open bool
}

func (p *progress) show(ev *lopnrv1.JobEvent) {
	line := eventLine(ev)
	if !p.term {
		fmt.Fprintln(p.w, line)
		return
	}
	key := ev.Stage + "\x00" + ev.Source
	if p.open && key != p.key {
		fmt.Fprintln(p.w)
	}
	fmt.Fprintf(p.w, "\r\x1b[K%s", line)
	p.key, p.open = key, true
	if ev.Done {
		p.end()
	}
}

// end finishes the line being redrawn.
func (p *progress) end() {
	if p.open {
		fmt.Fprintln(p.w)
		p.open = false
	}
}

// eventLine is one event: stage, source or file, rows, bytes. An event
// never carries a record value.
func eventLine(ev *lopnrv1.JobEvent) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-10s %-28s", printable(ev.Stage), printable(ev.Source))
	if ev.Rows > 0 || ev.Bytes > 0 {
		fmt.Fprintf(&b, " %12d rows", ev.Rows)
	}
	if ev.Bytes > 0 {
		fmt.Fprintf(&b, " %14d bytes", ev.Bytes)
	}
	if ev.Done {
		b.WriteString("  done")
	}
	return strings.TrimRight(b.String(), " ")
}
