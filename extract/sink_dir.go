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
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lopnr/lopnr/internal/atomicfile"
)

var _ Sink = (*DirSink)(nil)

// ErrDeliveryExists is returned by Begin when the delivery has already
// been published: a delivery is never overwritten.
var ErrDeliveryExists = errors.New("delivery already published")

// DirSink keeps deliveries in local directories, for a laptop, a demo or
// a file server the researchers mount. A delivery is written to
// <staging>/<project>/<id>/ and renamed, on Release, to
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
	dir     string // absolute: published deliveries
	staging string // absolute: deliveries being written and waiting for release
}

// stagingDir is the directory under a DirSink's root that holds deliveries
// being written when no other staging directory is given. Names of
// projects cannot start with a dot, so it never collides with a project.
const stagingDir = ".staging"

// NewDirSink returns a sink publishing to dir and staging in dir/.staging,
// creating them when missing: for lopnr run, which releases what it
// writes at once. A server, whose researchers may read dir while a
// delivery waits for release, stages outside it ([NewStagedDirSink]).
func NewDirSink(dir string) (*DirSink, error) {
	return NewStagedDirSink(dir, filepath.Join(dir, stagingDir))
}

// NewStagedDirSink returns a sink publishing to dir and staging in
// staging, creating them when missing. The two must be on the same file
// system, since a release is a rename; NewStagedDirSink checks that by
// renaming an empty directory from one to the other and back.
func NewStagedDirSink(dir, staging string) (*DirSink, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("dir sink %s: %w", dir, err)
	}
	absStaging, err := filepath.Abs(staging)
	if err != nil {
		return nil, fmt.Errorf("dir sink %s: staging %s: %w", dir, staging, err)
	}
	if inDir(absStaging, abs) {
		return nil, fmt.Errorf("dir sink %s: staging directory %s is or holds the delivery directory: want it beside it", dir, staging)
	}
	if rel, err := filepath.Rel(abs, absStaging); err == nil && inDir(abs, absStaging) && !strings.HasPrefix(rel, ".") {
		return nil, fmt.Errorf("dir sink %s: staging directory %s is in the delivery directory under a name a project could have: want it beside it", dir, staging)
	}
	for _, d := range []string{abs, absStaging} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("dir sink %s: %w", dir, err)
		}
	}
	s := &DirSink{dir: abs, staging: absStaging}
	if err := s.checkRename(); err != nil {
		return nil, err
	}
	return s, nil
}

// checkRename renames an empty directory from the staging directory to the
// delivery directory and back, to find out that a release can rename.
func (s *DirSink) checkRename() error {
	probe, err := os.MkdirTemp(s.staging, ".rename-check-")
	if err != nil {
		return fmt.Errorf("dir sink %s: %w", s.dir, err)
	}
	defer os.Remove(probe)
	there := filepath.Join(s.dir, filepath.Base(probe))
	if err := os.Rename(probe, there); err != nil {
		if errors.Is(err, syscall.EXDEV) {
			return fmt.Errorf("dir sink %s: staging directory %s is on another file system: a release renames a delivery from one to the other, so put both on one", s.dir, s.staging)
		}
		return fmt.Errorf("dir sink %s: %w", s.dir, err)
	}
	if err := os.Rename(there, probe); err != nil {
		os.Remove(there)
		return fmt.Errorf("dir sink %s: %w", s.dir, err)
	}
	return nil
}

// inDir reports whether path is root or in it.
func inDir(root, path string) bool {
	rel, err := filepath.Rel(root, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

func (s *DirSink) stagePath(project, id string) string { return filepath.Join(s.staging, project, id) }
func (s *DirSink) finalPath(project, id string) string { return filepath.Join(s.dir, project, id) }

// Location returns the directory of a published delivery, with a trailing
// separator.
func (s *DirSink) Location(project, id string) string {
	return s.finalPath(project, id) + string(filepath.Separator)
}

// Presign returns a file:// URL of a published file. A local file has no
// real expiry: expiry is checked like the S3 sink's, so that callers behave
// the same with both, but the URL works for as long as the file exists.
// It fails with ErrNotPublished unless the delivery's manifest signature
// and the file are in its published directory.
func (s *DirSink) Presign(ctx context.Context, project, id, file string, expiry time.Duration) (string, error) {
	if err := checkPresign(project, id, file, expiry); err != nil {
		return "", err
	}
	final := s.finalPath(project, id)
	for _, name := range []string{signatureFile, file} {
		fi, err := os.Lstat(filepath.Join(final, name))
		if errors.Is(err, fs.ErrNotExist) || err == nil && !fi.Mode().IsRegular() {
			return "", fmt.Errorf("dir sink: %s%s: %w", s.Location(project, id), file, ErrNotPublished)
		}
		if err != nil {
			return "", fmt.Errorf("dir sink: %w", err)
		}
	}
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(filepath.Join(final, file))}
	return u.String(), nil
}

// Begin creates the staging directory of delivery id of project. It fails
// with ErrDeliveryExists when the delivery has been published, and when
// the staging directory exists: another writer is at work on the same
// delivery, it waits for release, or an interrupted writer left it.
func (s *DirSink) Begin(ctx context.Context, project, id string) (Staging, error) {
	if err := checkDeliveryNames(project, id); err != nil {
		return nil, err
	}
	st := &dirStaging{
		sink:    s,
		project: project,
		id:      id,
		stage:   s.stagePath(project, id),
		final:   s.finalPath(project, id),
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
			return nil, fmt.Errorf("dir sink: begin %s: staging directory %s exists: another writer is at work on this delivery, it waits for release, or an interrupted writer left it", st.final, st.stage)
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
	committed bool
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
	case st.committed:
		return nil, fmt.Errorf("dir sink: create %s in %s: the delivery is already committed", name, st.stage)
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

// Commit checks that every file is complete and syncs the staging
// directory, so that the files' entries survive a crash. It fails when a
// file is still open or failed, or when nothing was written.
func (st *dirStaging) Commit(ctx context.Context) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.aborted {
		return fmt.Errorf("dir sink: commit %s: the delivery was aborted", st.stage)
	}
	if st.committed {
		return nil
	}
	if _, err := completedFiles(st.files, func(f *dirFile) fileState { return f.state }); err != nil {
		return fmt.Errorf("dir sink: commit %s: %w", st.stage, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("dir sink: commit %s: %w", st.stage, err)
	}
	if err := atomicfile.SyncDir(st.stage); err != nil {
		return fmt.Errorf("dir sink: commit %s: %w", st.stage, err)
	}
	st.committed = true
	return nil
}

// Abort closes and removes any file still being written and removes the
// staging directory, committed or not. A released delivery is no longer
// there and is left alone.
func (st *dirStaging) Abort(ctx context.Context) error {
	st.mu.Lock()
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
		return fmt.Errorf("dir sink: abort %s: %w", st.stage, err)
	}
	return nil
}

// Release renames the delivery's staging directory to its published
// directory: researchers see all of it or nothing. A delivery already
// published (its staging directory gone) is released. It fails with
// ErrNotStaged when the staging directory is missing or has no manifest
// signature, and with ErrDeliveryExists when both directories exist.
func (s *DirSink) Release(ctx context.Context, project, id string) error {
	if err := checkDeliveryNames(project, id); err != nil {
		return err
	}
	stage, final := s.stagePath(project, id), s.finalPath(project, id)
	staged, err := exists(stage)
	if err != nil {
		return fmt.Errorf("dir sink: release %s: %w", final, err)
	}
	published, err := exists(filepath.Join(final, signatureFile))
	if err != nil {
		return fmt.Errorf("dir sink: release %s: %w", final, err)
	}
	switch {
	case !staged && published:
		return nil
	case !staged:
		return fmt.Errorf("dir sink: release %s: %w under %s", final, ErrNotStaged, stage)
	}
	if ok, err := exists(filepath.Join(stage, signatureFile)); err != nil {
		return fmt.Errorf("dir sink: release %s: %w", final, err)
	} else if !ok {
		return fmt.Errorf("dir sink: release %s: %w: %s has no %s", final, ErrNotStaged, stage, signatureFile)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("dir sink: release %s: %w", final, err)
	}
	parent := filepath.Dir(final)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return fmt.Errorf("dir sink: release %s: %w", final, err)
	}
	// rename(2) would replace an empty directory: check first.
	if ok, err := exists(final); err != nil {
		return fmt.Errorf("dir sink: release %s: %w", final, err)
	} else if ok {
		return fmt.Errorf("dir sink: release %s: %w", final, ErrDeliveryExists)
	}
	if err := os.Rename(stage, final); err != nil {
		return fmt.Errorf("dir sink: release %s: %w", final, err)
	}
	if err := errors.Join(atomicfile.SyncDir(parent), atomicfile.SyncDir(filepath.Dir(stage))); err != nil {
		return fmt.Errorf("dir sink: %s is released, but syncing its directories failed: %w", final, err)
	}
	return nil
}

// exists reports whether path exists (without following a last link).
func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
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

// Abandon removes delivery id of project from the staging place: what an
// interrupted writer left, or a staged delivery that will not be
// released. A published delivery is left alone.
func (s *DirSink) Abandon(ctx context.Context, project, id string) error {
	if err := checkDeliveryNames(project, id); err != nil {
		return err
	}
	if err := os.RemoveAll(s.stagePath(project, id)); err != nil {
		return fmt.Errorf("dir sink: abandon %s: %w", s.stagePath(project, id), err)
	}
	return nil
}

// Withdraw removes a published delivery whole, its manifest signature
// first, so that a withdrawal cut short leaves no delivery: for a server
// that finds one its records do not account for. A missing delivery is
// not an error.
func (s *DirSink) Withdraw(ctx context.Context, project, id string) error {
	if err := checkDeliveryNames(project, id); err != nil {
		return err
	}
	final := s.finalPath(project, id)
	err := os.Remove(filepath.Join(final, signatureFile))
	if errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	if err == nil {
		err = os.RemoveAll(final)
	}
	if err != nil {
		return fmt.Errorf("dir sink: withdraw %s: %w", s.Location(project, id), err)
	}
	return nil
}

// Deliveries lists every delivery in the sink, staged or published, by
// the names of its directories. Entries that are not a project's or a
// delivery's directory (names starting with a dot, files) are not listed.
func (s *DirSink) Deliveries(ctx context.Context) ([]StoredDelivery, error) {
	var out []StoredDelivery
	for _, place := range []struct {
		dir       string
		published bool
	}{{s.staging, false}, {s.dir, true}} {
		projects, err := os.ReadDir(place.dir)
		if err != nil {
			return nil, fmt.Errorf("dir sink: %w", err)
		}
		for _, p := range projects {
			if !p.IsDir() || checkSinkName("project", p.Name()) != nil {
				continue
			}
			ids, err := os.ReadDir(filepath.Join(place.dir, p.Name()))
			if err != nil {
				return nil, fmt.Errorf("dir sink: %w", err)
			}
			for _, d := range ids {
				if d.IsDir() && checkSinkName("delivery", d.Name()) == nil {
					out = append(out, StoredDelivery{Project: p.Name(), ID: d.Name(), Published: place.published})
				}
			}
		}
	}
	return out, nil
}
