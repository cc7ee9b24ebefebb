package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lopnr/lopnr/extract"
	"github.com/lopnr/lopnr/linkage"
	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
	"github.com/lopnr/lopnr/server/jobs"
)

type jobService struct {
	lopnrv1.UnimplementedJobServiceServer
	s *Server
}

// maxSpec bounds a submitted job spec.
const maxSpec = 1 << 20

// parseSpec parses a job spec as the server reads it. Its source paths
// are relative to the project's own source directory, <project>/ under the
// source root (an absolute path may lead into it, or into one of the other
// roots given: a job's own work directory, for an import), and each source
// is opened through that directory as an os.Root: no .. and no link leads
// out of it, to another project's directory or anywhere else lopnrd can
// read. Each source is opened here, so that a path that leads out is
// refused naming it, and the spec opens it so again when the job runs
// (Link reads only the file it opened: see linkage.JobSpec.OpenSourcesWith),
// so that a file swapped for a link between submission and run is refused
// too.
func (s *Server) parseSpec(raw []byte, roots ...string) (*linkage.JobSpec, error) {
	if len(raw) > maxSpec {
		return nil, &fieldError{"spec", "a job spec of at most 1 MiB"}
	}
	spec, err := linkage.ParseSpec(raw, filepath.Join(s.cfg.SourceRoot, "job.yaml"))
	if err != nil {
		return nil, err
	}
	// Again, with relative paths in the project's directory.
	dir := filepath.Join(s.cfg.SourceRoot, spec.Project)
	if spec, err = linkage.ParseSpec(raw, filepath.Join(dir, "job.yaml")); err != nil {
		return nil, err
	}
	open := func(i int) (*os.File, error) {
		f, err := s.openSource(spec, i, roots)
		if err != nil {
			return nil, err
		}
		if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
			f.Close()
			return nil, &fieldError{fmt.Sprintf("spec: sources[%d].path", i), "a regular file"}
		}
		return f, nil
	}
	for i := range spec.Sources {
		f, err := open(i)
		if err != nil {
			return nil, err
		}
		f.Close()
	}
	spec.OpenSourcesWith(open)
	return spec, nil
}

// openSource opens source i of spec through the project's source
// directory, or, for an absolute path into one of roots, through that.
func (s *Server) openSource(spec *linkage.JobSpec, i int, roots []string) (*os.File, error) {
	path := spec.Sources[i].Path
	where := fmt.Sprintf("a file in the project's source directory (%s/ under the server's source root) that no .. or link leads out of", spec.Project)
	bad := func(err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return &fieldError{fmt.Sprintf("spec: sources[%d].path", i), where + "; there is no such file"}
		}
		return &fieldError{fmt.Sprintf("spec: sources[%d].path", i), where}
	}
	var root *os.Root
	var err error
	if filepath.IsAbs(path) {
		for _, r := range roots {
			if r, err = filepath.Abs(r); err == nil && within(r, path) {
				rel, _ := filepath.Rel(r, path)
				if root, err = os.OpenRoot(r); err != nil {
					return nil, bad(err)
				}
				defer root.Close()
				f, err := openSourceFile(root, rel)
				if err != nil {
					return nil, bad(err)
				}
				return f, nil
			}
		}
		dir, _ := filepath.Abs(filepath.Join(s.cfg.SourceRoot, spec.Project))
		rel, err := filepath.Rel(dir, path)
		if err != nil || !within(dir, path) {
			return nil, bad(nil)
		}
		path = rel
	}
	top, err := os.OpenRoot(s.cfg.SourceRoot)
	if err != nil {
		return nil, bad(err)
	}
	defer top.Close()
	// The project's directory is reached through the source root too: it
	// may not be a link out of it.
	if root, err = top.OpenRoot(spec.Project); err != nil {
		return nil, bad(err)
	}
	defer root.Close()
	f, err := openSourceFile(root, path)
	if err != nil {
		return nil, bad(err)
	}
	return f, nil
}

// openSourceFile opens a source for reading without blocking: a named pipe
// the extractor put in the project's directory would otherwise hold the
// open, and the call or the job slot with it, until someone writes to it
// (a cancelled job cannot end a blocked open). What is not a regular file
// is refused once open.
func openSourceFile(root *os.Root, name string) (*os.File, error) {
	return root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}

// within reports whether path is in the directory root, by the text of
// both: it picks the root an absolute path names, which then opens it
// (os.Root) without leaving it.
func within(root, path string) bool {
	root, err := filepath.Abs(root)
	if err != nil {
		return false
	}
	rel, err := filepath.Rel(root, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

func (js jobService) SubmitJob(ctx context.Context, req *lopnrv1.SubmitJobRequest) (*lopnrv1.Job, error) {
	s, ci := js.s, call(ctx)
	spec, err := s.parseSpec(req.GetSpec())
	if err != nil {
		return nil, err
	}
	for i, src := range spec.Sources {
		if src.Profile == linkage.PartnerImport {
			return nil, &fieldError{fmt.Sprintf("spec: sources[%d].profile", i), "a profile other than " + linkage.PartnerImport + ", which only lopnrd's partner imports read with"}
		}
	}
	rec, err := s.approvedProject(ctx, spec.Project) // jobs use only approved rules
	if err != nil {
		return nil, err
	}
	if spec.EPMDnr != "" && spec.EPMDnr != rec.EPMDnr {
		return nil, &fieldError{"spec: epm_dnr", fmt.Sprintf("the project's EPM dnr %s", rec.EPMDnr)}
	}
	if _, err := s.cfg.Keys.Project(ctx, spec.Project); err != nil {
		return nil, err // destroyed, or past retention
	}
	for i, r := range spec.Recipients {
		if !slices.Contains(rec.Recipients, r) {
			return nil, &fieldError{fmt.Sprintf("spec: recipients[%d]", i), "one of the project's registered recipients"}
		}
	}
	if err := extract.CheckApproval(spec, rec.Approval); err != nil {
		return nil, err
	}
	j, err := s.jobs.Submit(spec.Project, ci.identity, req.GetSpec())
	if err != nil {
		return nil, err
	}
	ci.job = j.ID
	return s.jobProto(j), nil
}

var jobStates = map[jobs.State]lopnrv1.JobState{
	jobs.Queued: lopnrv1.JobState_JOB_STATE_QUEUED, jobs.Running: lopnrv1.JobState_JOB_STATE_RUNNING,
	jobs.Succeeded: lopnrv1.JobState_JOB_STATE_SUCCEEDED, jobs.Failed: lopnrv1.JobState_JOB_STATE_FAILED,
	jobs.Cancelled: lopnrv1.JobState_JOB_STATE_CANCELLED,
}

func (s *Server) jobProto(j jobs.Job) *lopnrv1.Job {
	out := &lopnrv1.Job{Id: j.ID, Project: j.Project, Submitter: j.Submitter, State: jobStates[j.State],
		Created: timestamppb.New(j.Created), Error: j.Error, Delivery: j.Result, Spec: j.Spec, Last: eventProto(j.ID, j.Last)}
	if !j.Started.IsZero() {
		out.Started = timestamppb.New(j.Started)
	}
	if !j.Finished.IsZero() {
		out.Finished = timestamppb.New(j.Finished)
	}
	if j.Result != "" {
		if d, err := s.deliveries.get(j.Result); err == nil {
			out.Report = d.Report
		}
	}
	out.Report = s.importReport(j.ID) + out.Report // a partner import's counts
	return out
}

func eventProto(job string, e jobs.Event) *lopnrv1.JobEvent {
	return &lopnrv1.JobEvent{Job: job, Stage: e.Stage, Source: e.Source, Rows: e.Rows, Bytes: e.Bytes, State: jobStates[e.State], Done: e.Done}
}

func (js jobService) GetJob(ctx context.Context, req *lopnrv1.GetJobRequest) (*lopnrv1.Job, error) {
	call(ctx).job = req.GetId()
	j, err := js.s.jobs.Get(req.GetId())
	if err != nil {
		return nil, err
	}
	return js.s.jobProto(j), nil
}

func (js jobService) ListJobs(ctx context.Context, req *lopnrv1.ListJobsRequest) (*lopnrv1.ListJobsResponse, error) {
	out := &lopnrv1.ListJobsResponse{}
	for _, j := range js.s.jobs.List(req.GetProject()) {
		if js.s.visible(ctx, "job.get", j.Project) {
			j.Spec = nil // a list stays small; GetJob has the spec
			out.Jobs = append(out.Jobs, js.s.jobProto(j))
		}
	}
	return out, nil
}

func (js jobService) CancelJob(ctx context.Context, req *lopnrv1.CancelJobRequest) (*lopnrv1.Job, error) {
	call(ctx).job = req.GetId()
	if err := js.s.jobs.Cancel(req.GetId()); err != nil {
		return nil, err
	}
	// Answer with the final state: a running job stops at its next step.
	events, err := js.s.jobs.Watch(req.GetId())
	if err != nil {
		return nil, err
	}
	for open := true; open; {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case _, open = <-events:
		}
	}
	j, err := js.s.jobs.Get(req.GetId())
	if err != nil {
		return nil, err
	}
	return js.s.jobProto(j), nil
}

func (js jobService) WatchJob(req *lopnrv1.WatchJobRequest, stream lopnrv1.JobService_WatchJobServer) error {
	ctx := stream.Context()
	call(ctx).job = req.GetId()
	events, err := js.s.jobs.Watch(req.GetId())
	if err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-events:
			if !ok {
				return nil
			}
			if err := stream.Send(eventProto(req.GetId(), e)); err != nil {
				return err
			}
		}
	}
}

// work runs one job: link, assign LopNr, and stage the delivery in the
// sink, keeping the delivery's record before each step (staging, then
// staged); an approver's release publishes it. The delivery id is the job
// id, so that a job killed with the server can be cleaned up by id.
func (s *Server) work(ctx context.Context, j jobs.Job, report func(jobs.Event)) (string, error) {
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	spec, err := s.parseSpec(j.Spec, s.workDir(j.ID))
	if err != nil {
		return "", err
	}
	rec, err := s.approvedProject(ctx, j.Project) // the rules approved now, not at submission
	if err != nil {
		return "", err
	}
	keys := rec.Recipients
	if len(spec.Recipients) > 0 {
		// A subset of the project's recipients, checked again against the
		// rules approved now: a change approved since the submission may
		// have removed one (a researcher who left, a key that was lost).
		for i, r := range spec.Recipients {
			if !slices.Contains(rec.Recipients, r) {
				return "", &fieldError{fmt.Sprintf("spec: recipients[%d]", i), "one of the project's registered recipients; a change approved since the job was submitted removed it"}
			}
		}
		keys = spec.Recipients
	}
	recips, err := extract.ParseRecipients(keys)
	if err != nil {
		return "", err
	}
	work := s.workDir(j.ID)
	if err := os.MkdirAll(work, 0o700); err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	res, err := linkage.Link(ctx, spec, linkage.Options{WorkDir: filepath.Join(work, "link"), MemoryLimit: s.cfg.MemoryLimit,
		Progress: func(p linkage.Progress) {
			report(jobs.Event{Stage: p.Stage, Source: p.Source, Rows: p.Rows, Done: p.Done})
		}})
	if err != nil {
		return "", err
	}
	defer res.Close()
	var text bytes.Buffer
	if err := res.Report.WriteText(&text); err != nil {
		return "", err
	}
	// The delivery's record first, as staging: whatever a crash leaves in
	// the sink under the job's id is then accounted for, and removed at
	// the next start.
	d := deliveryRecord{ID: j.ID, Project: j.Project, Job: j.ID, Submitter: j.Submitter, State: deliveryStaging, Created: s.cfg.Clock().UTC(),
		Location: s.cfg.Sink.Location(j.Project, j.ID), SigningKey: s.cfg.Signer.PublicKey(), Report: text.String()}
	if err := s.deliveries.create(d.ID, d); err != nil {
		return "", err
	}
	appr := rec.Approval
	if s.isImport(j.ID) {
		appr = importApproval(appr, spec)
	}
	m, err := extract.Deliver(ctx, res, extract.Options{Approval: appr, Keys: s.cfg.Keys, Recipients: recips,
		Sink: s.cfg.Sink, Signer: s.cfg.Signer, SpecBytes: j.Spec, DeliveryID: j.ID, Now: s.cfg.Clock,
		Progress: func(p extract.Progress) {
			report(jobs.Event{Stage: p.Stage, Source: p.File, Rows: p.Rows, Bytes: p.Bytes, Done: p.Done})
		}})
	if err != nil {
		return "", errors.Join(err, s.dropDelivery(d.ID)) // Deliver removed what it staged
	}
	// Staged, complete and signed, waiting for an approver's release.
	var rows, size int64
	_, err = s.deliveries.update(d.ID, func(d *deliveryRecord) error {
		d.State, d.Created, d.Files = deliveryStaged, m.Created, nil
		for _, f := range m.Files {
			d.Files = append(d.Files, deliveryFile{Name: f.Name, Source: f.Source, Format: f.Format, Rows: f.Rows, Size: f.Size, SHA256: f.SHA256, Codebook: f.Codebook})
			rows, size = rows+f.Rows, size+f.Size
		}
		return nil
	})
	if err != nil {
		return "", errors.Join(err, s.discardStaged(d))
	}
	if !s.isImport(j.ID) { // see jobChanged
		s.cfg.Metrics.Delivered(m.Project, rows, size)
	}
	return m.Delivery, nil
}
