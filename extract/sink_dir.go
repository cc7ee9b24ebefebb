package extract

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"
)

var _ Sink = (*DirSink)(nil)

// ErrDeliveryExists is returned by Begin and Publish when the delivery has
// already been published: a delivery is never overwritten.
var ErrDeliveryExists = errors.New("delivery already published")

// DirSink publishes deliveries to a local directory, for a laptop, a demo
// or a file server the researchers mount. A delivery is written to
// <dir>/.staging/<project>/<id>/ and renamed, on Publish, to
// <dir>/<project>/<id>/; the rename is atomic because both are on the
// same file system. Directories are created with mode 0700 and files with
// mode 0600, and every file is synced to disk when it is closed.
//
// The writers that Create returns also have a method
//
//	CloseWithError(err error) error
//
// that callers use instead of Close when producing a file fails: it
// removes the partial file.
type DirSink struct {
	dir string // absolute
}

// stagingDir is the directory under a DirSink's root that holds deliveries
// being written. Names of projects cannot start with a dot, so it never
// collides with a project.
const stagingDir = ".staging"

// NewDirSink returns a sink writing to dir, creating it when missing.
func NewDirSink(dir string) (*DirSink, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("dir sink %s: %w", dir, err)
	}
	if err := os.MkdirAll(filepath.Join(abs, stagingDir), 0o700); err != nil {
		return nil, fmt.Errorf("dir sink %s: %w", dir, err)
	}
	return &DirSink{dir: abs}, nil
}

// Location returns the directory of a published delivery, with a trailing
// separator.
func (s *DirSink) Location(project, id string) string {
	return filepath.Join(s.dir, project, id) + string(filepath.Separator)
}

// Presign returns a file:// URL of a published file. A local file has no
// real expiry: expiry is checked like the S3 sink's, so that callers behave
// the same with both, but the URL works for as long as the file exists.
// Presign does not check that the file exists.
func (s *DirSink) Presign(ctx context.Context, project, id, file string, expiry time.Duration) (string, error) {
	if err := checkExpiry(expiry); err != nil {
		return "", err
	}
	if err := checkDeliveryNames(project, id); err != nil {
		return "", err
	}
	if err := checkSinkName("file", file); err != nil {
		return "", err
	}
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(filepath.Join(s.dir, project, id, file))}
	return u.String(), nil
}

// Begin creates the staging directory of delivery id of project. It fails
// with ErrDeliveryExists when the delivery has been published, and when
// the staging directory exists: another writer is at work on the same
// delivery, or an interrupted one left it behind.
func (s *DirSink) Begin(ctx context.Context, project, id string) (Staging, error) {
	if err := checkDeliveryNames(project, id); err != nil {
		return nil, err
	}
	st := &dirStaging{
		sink:    s,
		project: project,
		id:      id,
		stage:   filepath.Join(s.dir, stagingDir, project, id),
		final:   filepath.Join(s.dir, project, id),
		files:   map[string]*dirFile{},
	}
	if err := st.checkNotPublished(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(st.stage), 0o700); err != nil {
		return nil, fmt.Errorf("dir sink: begin %s: %w", st.final, err)
	}
	if err := os.Mkdir(st.stage, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("dir sink: begin %s: staging directory %s exists: another writer is at work on this delivery, or an interrupted one left it (remove it then)", st.final, st.stage)
		}
		return nil, fmt.Errorf("dir sink: begin %s: %w", st.final, err)
	}
	return st, nil
}

// dirStaging is a delivery being written to a DirSink.
type dirStaging struct {
	sink         *DirSink
	project, id  string
	stage, final string

	mu        sync.Mutex
	files     map[string]*dirFile
	published bool
	aborted   bool
}

func (st *dirStaging) checkNotPublished() error {
	if _, err := os.Lstat(st.final); err == nil {
		return fmt.Errorf("dir sink: %s: %w", st.final, ErrDeliveryExists)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("dir sink: %w", err)
	}
	return nil
}

// Create creates file name in the staging directory. Writes fail once ctx
// has ended.
func (st *dirStaging) Create(ctx context.Context, name string) (io.WriteCloser, error) {
	if err := checkSinkName("file", name); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("dir sink: create %s in %s: %w", name, st.stage, err)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	switch {
	case st.aborted:
		return nil, fmt.Errorf("dir sink: create %s in %s: the delivery was aborted", name, st.stage)
	case st.published:
		return nil, fmt.Errorf("dir sink: create %s in %s: the delivery is already published", name, st.final)
	case st.files[name] != nil:
		return nil, fmt.Errorf("dir sink: create %s in %s: the file was already created", name, st.stage)
	}
	f, err := os.OpenFile(filepath.Join(st.stage, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("dir sink: %w", err)
	}
	df := &dirFile{staging: st, f: f, ctx: ctx}
	st.files[name] = df
	return df, nil
}

// dirFile is one file being written to a staging directory.
type dirFile struct {
	staging *dirStaging
	f       *os.File
	ctx     context.Context

	mu   sync.Mutex // serialises Write and finish, which Abort may call
	werr error      // the first failed write's error: the file is incomplete

	once   sync.Once
	result error
	state  fileState // guarded by staging.mu
}

// Write writes p to the file, or fails once the file's context has ended.
// After a failed write the file is incomplete: every later Write and Close
// fail.
func (f *dirFile) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.werr != nil {
		return 0, f.werr
	}
	if err := f.ctx.Err(); err != nil {
		f.werr = fmt.Errorf("dir sink: write %s: %w", f.f.Name(), err)
		return 0, f.werr
	}
	n, err := f.f.Write(p)
	if err != nil {
		f.werr = fmt.Errorf("dir sink: %w", err)
		return n, f.werr
	}
	return n, nil
}

// Close syncs the file to disk and closes it. It fails, and removes the
// file, when a write failed.
func (f *dirFile) Close() error { return f.finish(nil) }

// CloseWithError discards the file: it closes and removes it. err, the
// reason, matters only to the S3 sink's writer, where a Write may be
// waiting on the upload. It returns an error only when the removal fails.
// After Close it does nothing and returns what Close returned.
func (f *dirFile) CloseWithError(err error) error {
	if err == nil {
		err = errDiscarded
	}
	return f.finish(err)
}

func (f *dirFile) finish(cause error) error {
	f.once.Do(func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		state := fileComplete
		if cause == nil && f.werr != nil {
			cause = f.werr
			f.result = fmt.Errorf("dir sink: close %s: an earlier write failed: %w", f.f.Name(), f.werr)
		}
		if cause == nil {
			err := f.f.Sync()
			if cerr := f.f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				state, f.result = fileFailed, fmt.Errorf("dir sink: close: %w", err)
			}
		} else {
			state = fileFailed
			f.f.Close()
			if err := os.Remove(f.f.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
				f.result = errors.Join(f.result, fmt.Errorf("dir sink: discard: %w", err))
			}
		}
		if f.werr == nil {
			reason := cause
			if reason == nil {
				reason = fs.ErrClosed
			}
			f.werr = fmt.Errorf("dir sink: write %s: %w", f.f.Name(), reason)
		}
		f.staging.mu.Lock()
		f.state = state
		f.staging.mu.Unlock()
	})
	return f.result
}

// Publish renames the staging directory to the delivery's directory. It
// fails when a file is still open or failed, when nothing was written, and
// with ErrDeliveryExists when the delivery's directory exists. The check
// and the rename are two steps: two writers publishing the same delivery
// at the same instant are not told apart (each job has its own id).
func (st *dirStaging) Publish(ctx context.Context) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.aborted {
		return fmt.Errorf("dir sink: publish %s: the delivery was aborted", st.final)
	}
	if st.published {
		return nil
	}
	if _, err := completedFiles(st.files, func(f *dirFile) fileState { return f.state }); err != nil {
		return fmt.Errorf("dir sink: publish %s: %w", st.final, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("dir sink: publish %s: %w", st.final, err)
	}
	// The files' directory entries must be on disk before the rename that
	// makes them visible.
	if err := syncDir(st.stage); err != nil {
		return fmt.Errorf("dir sink: publish %s: %w", st.final, err)
	}
	parent := filepath.Dir(st.final)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return fmt.Errorf("dir sink: publish %s: %w", st.final, err)
	}
	// rename(2) would replace an empty directory: check first.
	if err := st.checkNotPublished(); err != nil {
		return err
	}
	if err := os.Rename(st.stage, st.final); err != nil {
		return fmt.Errorf("dir sink: publish %s: %w", st.final, err)
	}
	st.published = true
	if err := syncDir(parent); err != nil {
		return fmt.Errorf("dir sink: %s is published, but syncing its directory failed: %w", st.final, err)
	}
	return nil
}

// Abort closes and removes any file still being written and removes the
// staging directory. After a successful Publish it does nothing.
func (st *dirStaging) Abort(ctx context.Context) error {
	st.mu.Lock()
	if st.published {
		st.mu.Unlock()
		return nil
	}
	st.aborted = true
	var open []*dirFile
	for _, f := range st.files {
		if f.state == fileOpen {
			open = append(open, f)
		}
	}
	st.mu.Unlock()

	var errs []error
	for _, f := range open {
		errs = append(errs, f.CloseWithError(errAborted))
	}
	if err := os.RemoveAll(st.stage); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("dir sink: abort %s: %w", st.final, err)
	}
	return nil
}

// syncDir syncs a directory, so that the entries in it survive a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// maxSinkName is the longest project, delivery or file name: a file name
// on common file systems.
const maxSinkName = 255

// checkSinkName checks that s (a project, delivery id or file name, as
// what says) is safe as one element of a path or an object key: letters,
// digits, '.', '_' and '-', starting with a letter or digit, without "..".
func checkSinkName(what, s string) error {
	ok := s != "" && len(s) <= maxSinkName
	for i := 0; ok && i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
			ok = c != '.' || s[i-1] != '.'
		default:
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("%s name %q: want up to %d letters, digits, '.', '_' or '-', starting with a letter or digit, without \"..\"", what, s, maxSinkName)
	}
	return nil
}

// checkDeliveryNames checks a project name and a delivery id.
func checkDeliveryNames(project, id string) error {
	if err := checkSinkName("project", project); err != nil {
		return err
	}
	return checkSinkName("delivery", id)
}

// Abandon removes the staging directory that an interrupted writer left
// for delivery id of project. A published delivery is left alone.
func (s *DirSink) Abandon(ctx context.Context, project, id string) error {
	if err := checkDeliveryNames(project, id); err != nil {
		return err
	}
	if err := os.RemoveAll(filepath.Join(s.dir, stagingDir, project, id)); err != nil {
		return fmt.Errorf("dir sink: abandon %s: %w", s.Location(project, id), err)
	}
	return nil
}

// Withdraw removes a published delivery whole: for a server that lost the
// record of one (killed between publishing it and keeping its record). A
// missing delivery is not an error.
func (s *DirSink) Withdraw(ctx context.Context, project, id string) error {
	if err := checkDeliveryNames(project, id); err != nil {
		return err
	}
	if err := os.RemoveAll(filepath.Join(s.dir, project, id)); err != nil {
		return fmt.Errorf("dir sink: withdraw %s: %w", s.Location(project, id), err)
	}
	return nil
}
