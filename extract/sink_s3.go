package extract

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"
)

var _ Sink = (*S3Sink)(nil)

// S3Config is how to reach the bucket that deliveries are published to.
type S3Config struct {
	// Endpoint is the service's URL, such as http://127.0.0.1:7070 or
	// https://s3.example; its scheme chooses TLS.
	Endpoint string
	// AccessKey and SecretKey are the credentials (AWS signature v4).
	AccessKey, SecretKey string
	// Region is the bucket's region; empty asks the service.
	Region string
	// Bucket holds the deliveries. NewS3Sink creates it when missing.
	Bucket string
	// Prefix goes before every key, so that one bucket can serve several
	// installations: "lopnr" puts deliveries under lopnr/deliveries/. A
	// trailing slash is added when missing.
	Prefix string
	// PartSize is the size of each part of a file's multipart upload, and
	// so the memory that each file being written holds. Default 16 MiB,
	// at least 5 MiB. An upload has at most 10,000 parts, so PartSize also
	// bounds the largest file: 156 GiB at 16 MiB.
	PartSize uint64
}

// DefaultPartSize is the multipart upload part size when S3Config.PartSize
// is zero.
const DefaultPartSize = 16 << 20

const (
	minPartSize = 5 << 20 // S3's smallest part but the last
	maxPartSize = 5 << 30 // S3's largest part, and largest single copy
	// cleanupTimeout bounds the requests that remove a failed upload's
	// parts, which run even when the caller's context has ended.
	cleanupTimeout = time.Minute
)

// S3Sink keeps deliveries in an S3 bucket. A delivery's files are
// uploaded under <prefix>staging/<project>/<id>/ and copied by the
// service, on Release, to <prefix>deliveries/<project>/<id>/, the
// manifest and its signature last; then the staged objects are removed.
// Researchers' links reach only the second prefix; whoever holds the S3
// keys can read both, so the keys stay with the service and its
// operators (a bucket policy can deny all but the service's key the
// staging prefix).
//
// The writers that Create returns also have a method
//
//	CloseWithError(err error) error
//
// that callers use instead of Close when producing a file fails: it aborts
// the file's multipart upload, so no part of it lingers in the bucket.
type S3Sink struct {
	client   *minio.Client
	endpoint string // scheme://host, for messages
	bucket   string
	prefix   string // "" or ending in "/"
	partSize uint64
	// copyPartSize is the largest object copied in one request; larger
	// ones are copied in parts of about this size. 5 GiB, S3's limit;
	// tests lower it to exercise the multipart copy.
	copyPartSize int64
}

// NewS3Sink connects to the bucket in cfg, creating the bucket when it is
// missing. It fails, naming the endpoint, when the service cannot be
// reached or refuses the keys.
func NewS3Sink(ctx context.Context, cfg S3Config) (*S3Sink, error) {
	u, err := url.Parse(cfg.Endpoint)
	const wantURL = "want a URL such as https://s3.example or http://127.0.0.1:7070, without a path or credentials"
	if err != nil {
		return nil, errors.New("s3 sink: endpoint is not a URL: " + wantURL)
	}
	if u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return nil, fmt.Errorf("s3 sink: endpoint %s: %s", u.Redacted(), wantURL)
	}
	endpoint := u.Scheme + "://" + u.Host // as the messages show it
	if cfg.AccessKey == "" || cfg.SecretKey == "" {
		return nil, fmt.Errorf("s3 sink %s: access key and secret key are required", endpoint)
	}
	if err := s3utils.CheckValidBucketNameStrict(cfg.Bucket); err != nil {
		return nil, fmt.Errorf("s3 sink %s: bucket %q: %w", endpoint, cfg.Bucket, err)
	}
	prefix := strings.TrimLeft(cfg.Prefix, "/")
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	if strings.Contains(prefix, "//") {
		return nil, fmt.Errorf("s3 sink %s: prefix %q has an empty path element", endpoint, cfg.Prefix)
	}
	partSize := cfg.PartSize
	if partSize == 0 {
		partSize = DefaultPartSize
	}
	if partSize < minPartSize || partSize > maxPartSize {
		return nil, fmt.Errorf("s3 sink %s: part size %d: want between 5 MiB and 5 GiB", endpoint, cfg.PartSize)
	}

	opts := func(retries int) *minio.Options {
		return &minio.Options{
			Creds:      credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
			Secure:     u.Scheme == "https",
			Region:     cfg.Region,
			MaxRetries: retries,
		}
	}
	client, err := minio.New(u.Host, opts(0)) // 0: minio-go's default retries
	if err != nil {
		return nil, fmt.Errorf("s3 sink %s: %w", endpoint, err)
	}
	s := &S3Sink{
		client:       client,
		endpoint:     endpoint,
		bucket:       cfg.Bucket,
		prefix:       prefix,
		partSize:     partSize,
		copyPartSize: maxPartSize,
	}

	// The first request goes through a client that retries little, so an
	// endpoint that is down reports why (connection refused, say) before
	// the caller's deadline turns it into a bare "context deadline
	// exceeded".
	probe, err := minio.New(u.Host, opts(3))
	if err != nil {
		return nil, fmt.Errorf("s3 sink %s: %w", endpoint, err)
	}
	exists, err := probe.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, s.connectError(err)
	}
	if !exists {
		if err := probe.MakeBucket(ctx, cfg.Bucket, minio.MakeBucketOptions{Region: cfg.Region}); err != nil {
			// Another sink may have created it meanwhile; services differ
			// in the code they answer then.
			if exists, _ := probe.BucketExists(ctx, cfg.Bucket); !exists {
				return nil, fmt.Errorf("s3 sink %s: create bucket %s: %w", endpoint, cfg.Bucket, err)
			}
		}
	}
	return s, nil
}

// connectError explains a failed first request.
func (s *S3Sink) connectError(err error) error {
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.Code == minio.InvalidAccessKeyID:
		return fmt.Errorf("s3 sink %s: the access key is not known to the service: %w", s.endpoint, err)
	case resp.Code == minio.SignatureDoesNotMatch:
		return fmt.Errorf("s3 sink %s: the secret key is wrong: %w", s.endpoint, err)
	case resp.Code == minio.AccessDenied:
		return fmt.Errorf("s3 sink %s: access to bucket %s denied: the keys are wrong or lack permission on it: %w", s.endpoint, s.bucket, err)
	case resp.StatusCode == 0:
		// No answer from the service at all.
		return fmt.Errorf("s3 sink: cannot reach %s: %w", s.endpoint, err)
	}
	return fmt.Errorf("s3 sink %s: bucket %s: %w", s.endpoint, s.bucket, err)
}

func (s *S3Sink) stagingPrefix(project, id string) string {
	return s.prefix + "staging/" + project + "/" + id + "/"
}

func (s *S3Sink) deliveryPrefix(project, id string) string {
	return s.prefix + "deliveries/" + project + "/" + id + "/"
}

// Location returns s3://bucket/prefix/deliveries/project/id/.
func (s *S3Sink) Location(project, id string) string {
	return "s3://" + s.bucket + "/" + s.deliveryPrefix(project, id)
}

// Presign returns a pre-signed GET URL for a published file. It fails with
// ErrNotPublished unless the delivery's manifest signature and the file
// are published: a staged file has no link.
func (s *S3Sink) Presign(ctx context.Context, project, id, file string, expiry time.Duration) (string, error) {
	if err := checkPresign(project, id, file, expiry); err != nil {
		return "", err
	}
	prefix := s.deliveryPrefix(project, id)
	for _, name := range []string{signatureFile, file} {
		if ok, err := s.exists(ctx, prefix+name); err != nil {
			return "", fmt.Errorf("s3 sink: presign s3://%s/%s%s: %w", s.bucket, prefix, file, err)
		} else if !ok {
			return "", fmt.Errorf("s3 sink: s3://%s/%s%s: %w", s.bucket, prefix, file, ErrNotPublished)
		}
	}
	u, err := s.client.PresignedGetObject(ctx, s.bucket, prefix+file, expiry, nil)
	if err != nil {
		return "", fmt.Errorf("s3 sink: presign s3://%s/%s%s: %w", s.bucket, prefix, file, err)
	}
	return u.String(), nil
}

// exists reports whether an object exists.
func (s *S3Sink) exists(ctx context.Context, key string) (bool, error) {
	_, err := s.client.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
	if err == nil {
		return true, nil
	}
	if r := minio.ToErrorResponse(err); r.Code == minio.NoSuchKey || r.StatusCode == http.StatusNotFound {
		return false, nil
	}
	return false, err
}

// Begin starts delivery id of project. It fails with ErrDeliveryExists
// when the delivery has already been published, and when objects are
// staged under its id: another writer is at work on it, it waits for
// release, or an interrupted writer left them.
func (s *S3Sink) Begin(ctx context.Context, project, id string) (Staging, error) {
	if err := checkDeliveryNames(project, id); err != nil {
		return nil, err
	}
	st := &s3Staging{sink: s, project: project, id: id, files: map[string]*s3File{}}
	if any, err := s.any(ctx, s.deliveryPrefix(project, id)); err != nil {
		return nil, fmt.Errorf("s3 sink: begin %s: %w", st.location(), err)
	} else if any {
		return nil, fmt.Errorf("s3 sink: %s: %w", st.location(), ErrDeliveryExists)
	}
	if any, err := s.any(ctx, s.stagingPrefix(project, id)); err != nil {
		return nil, fmt.Errorf("s3 sink: begin %s: %w", st.location(), err)
	} else if any {
		return nil, fmt.Errorf("s3 sink: begin %s: objects are staged under s3://%s/%s: another writer is at work on this delivery, it waits for release, or an interrupted writer left them", st.location(), s.bucket, s.stagingPrefix(project, id))
	}
	return st, nil
}

// any reports whether any object exists under prefix.
func (s *S3Sink) any(ctx context.Context, prefix string) (bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the listing after the first object
	for obj := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true, MaxKeys: 1}) {
		if obj.Err != nil {
			return false, fmt.Errorf("list s3://%s/%s: %w", s.bucket, prefix, obj.Err)
		}
		return true, nil
	}
	return false, nil
}

// s3Staging is a delivery being written to an S3Sink.
type s3Staging struct {
	sink        *S3Sink
	project, id string

	mu        sync.Mutex
	files     map[string]*s3File
	committed bool // Commit succeeded: nothing more may be written
	aborted   bool // Abort was called: nothing more may be written
}

func (st *s3Staging) location() string { return st.sink.Location(st.project, st.id) }

// Create starts uploading file name to the staging area. The upload runs
// under ctx; cancelling ctx fails it.
func (st *s3Staging) Create(ctx context.Context, name string) (io.WriteCloser, error) {
	if err := checkSinkName("file", name); err != nil {
		return nil, err
	}
	s := st.sink
	st.mu.Lock()
	defer st.mu.Unlock()
	switch {
	case st.aborted:
		return nil, fmt.Errorf("s3 sink: create %s in %s: the delivery was aborted", name, st.location())
	case st.committed:
		return nil, fmt.Errorf("s3 sink: create %s in %s: the delivery is already committed", name, st.location())
	case st.files[name] != nil:
		return nil, fmt.Errorf("s3 sink: create %s in %s: the file was already created", name, st.location())
	}
	pr, pw := io.Pipe()
	f := &s3File{
		staging: st,
		name:    name,
		key:     s.stagingPrefix(st.project, st.id) + name,
		ctx:     ctx,
		pw:      pw,
		done:    make(chan struct{}),
	}
	st.files[name] = f
	go func() {
		defer close(f.done)
		info, err := s.client.PutObject(ctx, s.bucket, f.key, pr, -1, minio.PutObjectOptions{
			PartSize:    s.partSize,
			ContentType: "application/octet-stream",
		})
		if err == nil && info.Size != f.written.Load() {
			err = fmt.Errorf("uploaded %d bytes of %d written", info.Size, f.written.Load())
		}
		f.size, f.uploadErr = info.Size, err
		if err == nil {
			err = errUploadEnded
		}
		// Unblocks a Write waiting for the upload to read, and fails every
		// later one, with the upload's error.
		pr.CloseWithError(err)
	}()
	return f, nil
}

// errUploadEnded fails a write after the upload has completed, which only
// happens after Close.
var errUploadEnded = errors.New("upload already completed")

// errDiscarded is the reason CloseWithError(nil) records.
var errDiscarded = errors.New("file discarded")

// fileState is where a file of a delivery is in its life.
type fileState int

const (
	fileOpen fileState = iota
	fileComplete
	fileFailed
)

// s3File is one file streaming to the staging area as a multipart upload.
type s3File struct {
	staging *s3Staging
	name    string
	key     string
	ctx     context.Context
	pw      *io.PipeWriter
	written atomic.Int64
	// closedBy is why the file was closed (fs.ErrClosed after Close), for
	// the error of a later Write.
	closedBy atomic.Pointer[error]

	done      chan struct{} // closed when the upload goroutine ends
	size      int64         // set before done is closed
	uploadErr error         // set before done is closed

	once   sync.Once
	result error
	state  fileState // guarded by staging.mu
}

// Write streams p to the upload. It blocks while the upload sends a full
// part, and fails with the upload's error as soon as the upload fails.
func (f *s3File) Write(p []byte) (int, error) {
	n, err := f.pw.Write(p)
	f.written.Add(int64(n))
	if errors.Is(err, io.ErrClosedPipe) {
		if c := f.closedBy.Load(); c != nil {
			err = *c
		}
	}
	if err != nil {
		return n, fmt.Errorf("s3 sink: write s3://%s/%s: %w", f.staging.sink.bucket, f.key, err)
	}
	return n, nil
}

// Close completes the upload and waits for it.
func (f *s3File) Close() error { return f.finish(nil) }

// CloseWithError discards the file: it ends the upload with err (which
// becomes the error of any Write still waiting), aborts the multipart
// upload and waits until its parts are removed. It returns an error only
// when that removal fails; Abort tries again. After Close it does nothing
// and returns what Close returned.
func (f *s3File) CloseWithError(err error) error {
	if err == nil {
		err = errDiscarded
	}
	return f.finish(err)
}

func (f *s3File) finish(cause error) error {
	f.once.Do(func() {
		closedBy := cause
		if closedBy == nil {
			closedBy = fs.ErrClosed
		}
		f.closedBy.Store(&closedBy)
		if cause == nil {
			f.pw.Close()
		} else {
			f.pw.CloseWithError(cause)
		}
		<-f.done
		state := fileComplete
		if cause != nil || f.uploadErr != nil {
			state = fileFailed
			// minio-go aborts a failed multipart upload itself, but does not
			// report whether that worked: make sure, by listing what is left.
			ctx, cancel := context.WithTimeout(context.WithoutCancel(f.ctx), cleanupTimeout)
			cleanupErr := f.staging.sink.client.RemoveIncompleteUpload(ctx, f.staging.sink.bucket, f.key)
			cancel()
			if cleanupErr != nil {
				cleanupErr = fmt.Errorf("s3 sink: abort the upload of s3://%s/%s: %w", f.staging.sink.bucket, f.key, cleanupErr)
			}
			if cause == nil {
				f.result = errors.Join(fmt.Errorf("s3 sink: upload s3://%s/%s: %w", f.staging.sink.bucket, f.key, f.uploadErr), cleanupErr)
			} else {
				f.result = cleanupErr
			}
		}
		f.staging.mu.Lock()
		f.state = state
		f.staging.mu.Unlock()
	})
	return f.result
}

// Commit checks that every file is complete: the delivery is staged. It
// fails when a file is still open or failed, or when nothing was written.
func (st *s3Staging) Commit(ctx context.Context) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.aborted {
		return fmt.Errorf("s3 sink: commit %s: the delivery was aborted", st.location())
	}
	if _, err := completedFiles(st.files, func(f *s3File) fileState { return f.state }); err != nil {
		return fmt.Errorf("s3 sink: commit %s: %w", st.location(), err)
	}
	st.committed = true
	return nil
}

// Abort ends any file still being written and removes the staging area
// and its incomplete multipart uploads, committed or not. A released
// delivery is no longer there and is left alone.
func (st *s3Staging) Abort(ctx context.Context) error {
	st.mu.Lock()
	st.aborted = true
	var open []*s3File
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
	errs = append(errs, st.sink.removeStaged(ctx, st.project, st.id))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("s3 sink: abort %s: %w", st.location(), err)
	}
	return nil
}

// errAborted is the error of a write that Abort interrupted.
var errAborted = errors.New("delivery aborted")

// removeStaged removes every object and incomplete upload under a
// delivery's staging prefix.
func (s *S3Sink) removeStaged(ctx context.Context, project, id string) error {
	prefix := s.stagingPrefix(project, id)
	keys, err := s.list(ctx, prefix)
	errs := []error{err, s.removeObjects(ctx, keys)}

	uploads := map[string]bool{}
	for u := range s.client.ListIncompleteUploads(ctx, s.bucket, prefix, true) {
		if u.Err != nil {
			errs = append(errs, fmt.Errorf("list incomplete uploads under s3://%s/%s: %w", s.bucket, prefix, u.Err))
			break
		}
		uploads[u.Key] = true
	}
	for key := range uploads {
		if err := s.client.RemoveIncompleteUpload(ctx, s.bucket, key); err != nil {
			errs = append(errs, fmt.Errorf("abort the upload of s3://%s/%s: %w", s.bucket, key, err))
		}
	}
	return errors.Join(errs...)
}

// list returns the keys of the objects under prefix, in order.
func (s *S3Sink) list(ctx context.Context, prefix string) ([]string, error) {
	var keys []string
	for obj := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return keys, fmt.Errorf("list s3://%s/%s: %w", s.bucket, prefix, obj.Err)
		}
		keys = append(keys, obj.Key)
	}
	return keys, nil
}

// Release copies, on the service, every staged object of the delivery to
// its published prefix, the manifest and then its signature last, and then
// removes the staged objects. A copy that fails removes the copies made
// (the signature was not among them: no delivery is visible); running
// Release again after a crash copies again what was staged, or, when the
// signature is already published, removes what is left staged.
func (s *S3Sink) Release(ctx context.Context, project, id string) error {
	if err := checkDeliveryNames(project, id); err != nil {
		return err
	}
	loc := s.Location(project, id)
	stagingPrefix, deliveryPrefix := s.stagingPrefix(project, id), s.deliveryPrefix(project, id)
	published, err := s.exists(ctx, deliveryPrefix+signatureFile)
	if err != nil {
		return fmt.Errorf("s3 sink: release %s: %w", loc, err)
	}
	if published {
		if err := s.removeStaged(ctx, project, id); err != nil {
			return fmt.Errorf("s3 sink: %s is released, but its staged objects were not removed: %w", loc, err)
		}
		return nil
	}
	keys, err := s.list(ctx, stagingPrefix)
	if err != nil {
		return fmt.Errorf("s3 sink: release %s: %w", loc, err)
	}
	var names []string
	for _, k := range keys {
		names = append(names, strings.TrimPrefix(k, stagingPrefix))
	}
	names, signed := releaseOrder(names)
	if !signed {
		return fmt.Errorf("s3 sink: release %s: %w under s3://%s/%s (no %s)", loc, ErrNotStaged, s.bucket, stagingPrefix, signatureFile)
	}
	var copied []string
	for _, name := range names {
		dst := deliveryPrefix + name
		copied = append(copied, dst)
		if err := s.copy(ctx, stagingPrefix+name, dst); err != nil {
			err = fmt.Errorf("s3 sink: release %s: copy %s: %w", loc, name, err)
			return errors.Join(err, s.rollback(ctx, copied))
		}
	}
	if err := s.removeStaged(ctx, project, id); err != nil {
		return fmt.Errorf("s3 sink: %s is released, but its staged objects were not removed: %w", loc, err)
	}
	return nil
}

// copy copies an object within the bucket. CopyObject is one request,
// limited to 5 GiB; a larger object is copied by ComposeObject of one
// source, in ranges (UploadPartCopy) of about copyPartSize completed as
// one object.
func (s *S3Sink) copy(ctx context.Context, src, dst string) error {
	info, err := s.client.StatObject(ctx, s.bucket, src, minio.StatObjectOptions{})
	if err != nil {
		return err
	}
	from := minio.CopySrcOptions{Bucket: s.bucket, Object: src}
	to := minio.CopyDestOptions{Bucket: s.bucket, Object: dst}
	if info.Size > s.copyPartSize {
		to.PartSize = uint64(s.copyPartSize)
		_, err = s.client.ComposeObject(ctx, to, from)
	} else {
		_, err = s.client.CopyObject(ctx, to, from)
	}
	return err
}

// rollback removes the copies a failed Release made, and the multipart
// upload a failed ComposeObject may leave behind. It runs even when ctx
// has ended, since it undoes a partial release.
func (s *S3Sink) rollback(ctx context.Context, copied []string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	errs := []error{s.removeObjects(ctx, copied)}
	if n := len(copied); n > 0 {
		if err := s.client.RemoveIncompleteUpload(ctx, s.bucket, copied[n-1]); err != nil {
			errs = append(errs, fmt.Errorf("abort the copy to s3://%s/%s: %w", s.bucket, copied[n-1], err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove the published copies: %w", err)
	}
	return nil
}

// removeObjects removes keys, treating a missing key as removed.
func (s *S3Sink) removeObjects(ctx context.Context, keys []string) error {
	var errs []error
	for _, key := range keys {
		err := s.client.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{})
		if err != nil && minio.ToErrorResponse(err).Code != minio.NoSuchKey {
			errs = append(errs, fmt.Errorf("remove s3://%s/%s: %w", s.bucket, key, err))
		}
	}
	return errors.Join(errs...)
}

// completedFiles returns the names of files in order, or an error naming a
// file that is still open or failed, or saying that there are none.
func completedFiles[F any](files map[string]F, state func(F) fileState) ([]string, error) {
	if len(files) == 0 {
		return nil, errors.New("no files were written")
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		switch state(files[name]) {
		case fileOpen:
			return nil, fmt.Errorf("file %s is still open", name)
		case fileFailed:
			return nil, fmt.Errorf("file %s failed", name)
		}
	}
	return names, nil
}

// Abandon removes delivery id of project from the staging prefix, with
// its incomplete uploads: what an interrupted writer left, or a staged
// delivery that will not be released. A published delivery is left alone.
func (s *S3Sink) Abandon(ctx context.Context, project, id string) error {
	if err := checkDeliveryNames(project, id); err != nil {
		return err
	}
	if err := s.removeStaged(ctx, project, id); err != nil {
		return fmt.Errorf("s3 sink: abandon s3://%s/%s: %w", s.bucket, s.stagingPrefix(project, id), err)
	}
	return nil
}

// Withdraw removes a published delivery whole, its manifest signature
// first, so that a withdrawal cut short leaves no delivery: for a server
// that finds one its records do not account for. A missing delivery is
// not an error.
func (s *S3Sink) Withdraw(ctx context.Context, project, id string) error {
	if err := checkDeliveryNames(project, id); err != nil {
		return err
	}
	prefix := s.deliveryPrefix(project, id)
	err := s.removeObjects(ctx, []string{prefix + signatureFile})
	if err == nil {
		var keys []string
		keys, err = s.list(ctx, prefix)
		err = errors.Join(err, s.removeObjects(ctx, keys))
	}
	if err != nil {
		return fmt.Errorf("s3 sink: withdraw %s: %w", s.Location(project, id), err)
	}
	return nil
}

// Deliveries lists every delivery in the bucket under the sink's prefix,
// staged (objects or incomplete uploads) or published, by its keys. Keys
// that do not name a project and a delivery are not listed.
func (s *S3Sink) Deliveries(ctx context.Context) ([]StoredDelivery, error) {
	seen := map[StoredDelivery]bool{}
	var out []StoredDelivery
	add := func(key string) {
		var d StoredDelivery
		rest, ok := strings.CutPrefix(key, s.prefix+"staging/")
		if !ok {
			if rest, ok = strings.CutPrefix(key, s.prefix+"deliveries/"); !ok {
				return
			}
			d.Published = true
		}
		parts := strings.SplitN(rest, "/", 3)
		if len(parts) < 3 || checkDeliveryNames(parts[0], parts[1]) != nil {
			return
		}
		d.Project, d.ID = parts[0], parts[1]
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	for _, prefix := range []string{s.prefix + "staging/", s.prefix + "deliveries/"} {
		keys, err := s.list(ctx, prefix)
		if err != nil {
			return nil, fmt.Errorf("s3 sink: %w", err)
		}
		for _, k := range keys {
			add(k)
		}
	}
	for u := range s.client.ListIncompleteUploads(ctx, s.bucket, s.prefix+"staging/", true) {
		if u.Err != nil {
			return nil, fmt.Errorf("s3 sink: list incomplete uploads under s3://%s/%sstaging/: %w", s.bucket, s.prefix, u.Err)
		}
		add(u.Key)
	}
	return out, nil
}
