package extract

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/lopnr/lopnr/internal/testenv"
)

// sinkBackend is a Sink under test with the means to look behind it.
type sinkBackend struct {
	sink Sink
	// published lists the names visible under a delivery's published
	// location.
	published func(t *testing.T, project, id string) []string
	// staged lists what is left in a delivery's staging area: files or
	// objects, and (for S3) incomplete multipart uploads, marked so.
	staged func(t *testing.T, project, id string) []string
	// sum returns the SHA-256 of a published file.
	sum func(t *testing.T, project, id, file string) []byte
	// fetch returns the SHA-256 of what a pre-signed URL downloads.
	fetch func(t *testing.T, url string) []byte
	// checkStaged and checkPublished, when set, look further at the
	// delivery of ReleaseReadPresign before and after Release.
	checkStaged, checkPublished func(t *testing.T, project, id string)
}

// runSinkTests is the suite every Sink passes.
func runSinkTests(t *testing.T, b sinkBackend) {
	t.Run("ReleaseReadPresign", func(t *testing.T) { testSinkRelease(t, b) })
	t.Run("ResearcherCannotReachAStagedDelivery", func(t *testing.T) { testResearcherCannotReachStaged(t, b) })
	t.Run("FailedFileThenAbort", func(t *testing.T) { testSinkFailedFile(t, b) })
	t.Run("CancelledUpload", func(t *testing.T) { testSinkCancelled(t, b) })
	t.Run("AbortWhileWriting", func(t *testing.T) { testSinkAbortWhileWriting(t, b) })
	t.Run("BadNames", func(t *testing.T) { testSinkBadNames(t, b) })
	t.Run("Abandon", func(t *testing.T) { testSinkAbandon(t, b) })
	t.Run("Deliveries", func(t *testing.T) { testSinkDeliveries(t, b) })
}

// serverSink is what a server needs besides a Sink: to clean up after a
// killed writer and to reconcile what is stored with its records.
type serverSink interface {
	Abandon(ctx context.Context, project, id string) error
	Withdraw(ctx context.Context, project, id string) error
	Deliveries(ctx context.Context) ([]StoredDelivery, error)
}

// stageFiles writes a small delivery of the named files (each 100 random
// bytes) and commits it.
func stageFiles(t *testing.T, sink Sink, project, id string, names ...string) {
	t.Helper()
	ctx := context.Background()
	st, err := sink.Begin(ctx, project, id)
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range names {
		w, err := st.Create(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := writeRandom(w, uint64(i), 100, 100); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

// testResearcherCannotReachStaged replays finding 6 of issue 15: a
// delivery that waits for release is not at its published place, and no
// link can be signed for it, neither for its published name nor for any
// file of it; once released, both work.
func testResearcherCannotReachStaged(t *testing.T, b sinkBackend) {
	ctx := context.Background()
	project, id := "proj-1", newDeliveryID()
	names := []string{"cohort.csv.zst.age", "README.txt", "manifest.json", "manifest.json.sig"}
	stageFiles(t, b.sink, project, id, names...)
	if got := b.published(t, project, id); len(got) != 0 {
		t.Fatalf("a staged delivery is listed under its published place: %v", got)
	}
	for _, name := range names {
		if u, err := b.sink.Presign(ctx, project, id, name, time.Hour); !errors.Is(err, ErrNotPublished) {
			t.Fatalf("presign %s of a staged delivery: %q, %v; want ErrNotPublished", name, u, err)
		}
	}
	if err := b.sink.Release(ctx, project, id); err != nil {
		t.Fatalf("release: %v", err)
	}
	for _, name := range names {
		u, err := b.sink.Presign(ctx, project, id, name, time.Hour)
		if err != nil {
			t.Fatalf("presign %s of a released delivery: %v", name, err)
		}
		if got := b.fetch(t, u); len(got) != sha256.Size {
			t.Fatalf("fetch %s: %x", name, got)
		}
	}
	// A file the delivery does not have gets no link either.
	if _, err := b.sink.Presign(ctx, project, id, "other.txt", time.Hour); !errors.Is(err, ErrNotPublished) {
		t.Errorf("presign of a file the delivery lacks: %v; want ErrNotPublished", err)
	}
}

// testSinkDeliveries: Deliveries lists what is staged (objects, or only an
// upload under way) and what is published, by project and id.
func testSinkDeliveries(t *testing.T, b sinkBackend) {
	ctx := context.Background()
	project := "list-" + newDeliveryID()
	staged, published, writing := newDeliveryID(), newDeliveryID(), newDeliveryID()
	stageFiles(t, b.sink, project, staged, "a.txt", "manifest.json.sig")
	stageFiles(t, b.sink, project, published, "a.txt", "manifest.json.sig")
	if err := b.sink.Release(ctx, project, published); err != nil {
		t.Fatal(err)
	}
	st, err := b.sink.Begin(ctx, project, writing)
	if err != nil {
		t.Fatal(err)
	}
	w, err := st.Create(ctx, "big.bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writeRandom(w, 3, 6<<20, 64<<10); err != nil {
		t.Fatal(err)
	}
	defer st.Abort(ctx)
	all, err := b.sink.(serverSink).Deliveries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []StoredDelivery
	for _, d := range all {
		if d.Project == project {
			got = append(got, d)
		}
	}
	sortStored := func(a, b StoredDelivery) int {
		return strings.Compare(a.ID+fmt.Sprint(a.Published), b.ID+fmt.Sprint(b.Published))
	}
	slices.SortFunc(got, sortStored)
	want := []StoredDelivery{{project, staged, false}, {project, published, true}, {project, writing, false}}
	slices.SortFunc(want, sortStored)
	if !slices.Equal(got, want) {
		t.Errorf("Deliveries = %v, want %v", got, want)
	}
	w.(discarder).CloseWithError(errors.New("done"))
}

// testSinkAbandon leaves a half-written delivery behind, as a killed
// process does, and removes it by id from a new sink value; a published
// delivery is left alone.
func testSinkAbandon(t *testing.T, b sinkBackend) {
	ctx := context.Background()
	project, id := "proj-1", newDeliveryID()
	st, err := b.sink.Begin(ctx, project, id)
	if err != nil {
		t.Fatal(err)
	}
	w, err := st.Create(ctx, "done.txt")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writeRandom(w, 9, 1000, 100); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w, err = st.Create(ctx, "partial.bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writeRandom(w, 10, 6<<20, 64<<10); err != nil {
		t.Fatal(err)
	}
	if got := b.staged(t, project, id); len(got) < 2 {
		t.Fatalf("before Abandon, staged %v, want done.txt and partial.bin", got)
	}
	if err := b.sink.(serverSink).Abandon(ctx, project, id); err != nil {
		t.Fatalf("Abandon: %v", err)
	}
	if got := b.staged(t, project, id); len(got) != 0 {
		t.Errorf("after Abandon, staged %v, want nothing", got)
	}
	w.(discarder).CloseWithError(errors.New("the writer is gone"))

	// Abandon removes a committed delivery waiting for release too, and
	// leaves a published one alone.
	waiting := newDeliveryID()
	stageFiles(t, b.sink, project, waiting, "kept.txt", "manifest.json.sig")
	if err := b.sink.(serverSink).Abandon(ctx, project, waiting); err != nil {
		t.Fatalf("Abandon of a staged delivery: %v", err)
	}
	if got := b.staged(t, project, waiting); len(got) != 0 {
		t.Errorf("after Abandon of a staged delivery, staged %v", got)
	}
	id2 := newDeliveryID()
	stageFiles(t, b.sink, project, id2, "kept.txt", "manifest.json.sig")
	if err := b.sink.Release(ctx, project, id2); err != nil {
		t.Fatal(err)
	}
	if err := b.sink.(serverSink).Abandon(ctx, project, id2); err != nil {
		t.Fatalf("Abandon of a published delivery: %v", err)
	}
	if got := b.published(t, project, id2); !slices.Equal(got, []string{"kept.txt", "manifest.json.sig"}) {
		t.Errorf("after Abandon of a published delivery, published %v, want [kept.txt manifest.json.sig]", got)
	}

	// Withdraw removes a published delivery whole, and a missing one is
	// not an error.
	if err := b.sink.(serverSink).Withdraw(ctx, project, id2); err != nil {
		t.Fatalf("Withdraw: %v", err)
	}
	if got := b.published(t, project, id2); len(got) != 0 {
		t.Errorf("after Withdraw, published %v", got)
	}
	if err := b.sink.(serverSink).Withdraw(ctx, project, id2); err != nil {
		t.Errorf("Withdraw of a missing delivery: %v", err)
	}
}

var deliverySeq atomic.Int64

// newDeliveryID returns an id no other test uses.
func newDeliveryID() string {
	return fmt.Sprintf("d%d-%d", time.Now().UnixNano(), deliverySeq.Add(1))
}

// writeRandom writes size pseudo-random bytes from seed to w in writes of
// at most chunk bytes and returns their SHA-256.
func writeRandom(w io.Writer, seed uint64, size, chunk int) ([]byte, error) {
	var key [32]byte
	key[0], key[1] = byte(seed), byte(seed>>8)
	src := mrand.NewChaCha8(key)
	h := sha256.New()
	buf := make([]byte, chunk)
	for size > 0 {
		n := min(size, chunk)
		src.Read(buf[:n])
		h.Write(buf[:n])
		if _, err := w.Write(buf[:n]); err != nil {
			return nil, err
		}
		size -= n
	}
	return h.Sum(nil), nil
}

// sinkTestFile is a file the suite writes: size bytes in writes of chunk.
type sinkTestFile struct {
	name        string
	size, chunk int
}

// discarder is the method the sinks' writers have for failures.
type discarder interface{ CloseWithError(error) error }

func testSinkRelease(t *testing.T, b sinkBackend) {
	ctx := context.Background()
	project, id := "proj-1", newDeliveryID()
	st, err := b.sink.Begin(ctx, project, id)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	files := []sinkTestFile{
		{"cohort.csv.zst.age", 20<<20 + 12345, 4093}, // several parts
		{"manifest.json", 3000, 1000},
		{"README.txt", 10_000, 777},
		{"empty.txt", 0, 1},
		{"manifest.json.sig", 89, 89},
	}
	sums := make([][]byte, len(files))
	errs := make([]error, len(files))
	var wg sync.WaitGroup
	for i, f := range files {
		wg.Go(func() {
			w, err := st.Create(ctx, f.name)
			if err != nil {
				errs[i] = fmt.Errorf("create %s: %w", f.name, err)
				return
			}
			if sums[i], err = writeRandom(w, uint64(i+1), f.size, f.chunk); err != nil {
				w.(discarder).CloseWithError(err)
				errs[i] = fmt.Errorf("write %s: %w", f.name, err)
				return
			}
			if err := w.Close(); err != nil {
				errs[i] = fmt.Errorf("close %s: %w", f.name, err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Create(ctx, "manifest.json"); err == nil {
		t.Error("a second Create of the same name succeeded")
	}

	if err := st.Commit(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
	if _, err := st.Create(ctx, "late.txt"); err == nil {
		t.Error("Create after Commit succeeded")
	}

	// Complete but not released: nothing visible.
	if got := b.published(t, project, id); len(got) != 0 {
		t.Fatalf("before Release, visible under %s: %v", b.sink.Location(project, id), got)
	}
	if got := b.staged(t, project, id); len(got) != len(files) {
		t.Fatalf("before Release, staged %v, want the %d files", got, len(files))
	}
	if b.checkStaged != nil {
		b.checkStaged(t, project, id)
	}

	if err := b.sink.Release(ctx, project, id); err != nil {
		t.Fatalf("release: %v", err)
	}
	var want []string
	for _, f := range files {
		want = append(want, f.name)
	}
	slices.Sort(want)
	if got := b.published(t, project, id); !slices.Equal(got, want) {
		t.Fatalf("published %v, want %v", got, want)
	}
	if got := b.staged(t, project, id); len(got) != 0 {
		t.Fatalf("after Release, staging area holds %v", got)
	}
	if b.checkPublished != nil {
		b.checkPublished(t, project, id)
	}
	for i, f := range files {
		if got := b.sum(t, project, id, f.name); !bytes.Equal(got, sums[i]) {
			t.Errorf("%s: read back SHA-256 %x, want %x", f.name, got, sums[i])
		}
	}

	// Pre-signed links: the stored file, and only for a sane expiry.
	for _, name := range []string{files[0].name, files[1].name} {
		u, err := b.sink.Presign(ctx, project, id, name, time.Hour)
		if err != nil {
			t.Fatalf("presign %s: %v", name, err)
		}
		i := slices.IndexFunc(files, func(f sinkTestFile) bool { return f.name == name })
		if got := b.fetch(t, u); !bytes.Equal(got, sums[i]) {
			t.Errorf("%s: pre-signed download SHA-256 %x, want %x", name, got, sums[i])
		}
	}
	for _, d := range []time.Duration{8 * 24 * time.Hour, 10 * time.Second} {
		if _, err := b.sink.Presign(ctx, project, id, files[1].name, d); !errors.Is(err, ErrExpiry) {
			t.Errorf("presign with expiry %v: err %v, want ErrExpiry", d, err)
		}
	}
	if loc := b.sink.Location(project, id); !strings.HasSuffix(loc, "/"+project+"/"+id+"/") {
		t.Errorf("Location %q does not end in /%s/%s/", loc, project, id)
	}

	// A published delivery is never overwritten nor undone; releasing it
	// again is done at once.
	if err := b.sink.Release(ctx, project, id); err != nil {
		t.Errorf("second Release: %v", err)
	}
	if _, err := b.sink.Begin(ctx, project, id); !errors.Is(err, ErrDeliveryExists) {
		t.Errorf("Begin of a published delivery: err %v, want ErrDeliveryExists", err)
	}
	if err := st.Abort(ctx); err != nil {
		t.Errorf("Abort after Release: %v", err)
	}
	if got := b.published(t, project, id); !slices.Equal(got, want) {
		t.Fatalf("after Abort of a released delivery, published %v, want %v", got, want)
	}
	if err := b.sink.Release(ctx, project, newDeliveryID()); !errors.Is(err, ErrNotStaged) {
		t.Errorf("Release of an unknown delivery: %v, want ErrNotStaged", err)
	}
}

func testSinkFailedFile(t *testing.T, b sinkBackend) {
	ctx := context.Background()
	project, id := "proj-1", newDeliveryID()
	st, err := b.sink.Begin(ctx, project, id)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	w, err := st.Create(ctx, "done.txt")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writeRandom(w, 7, 1000, 100); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	w, err = st.Create(ctx, "big.bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writeRandom(w, 8, 12<<20, 64<<10); err != nil {
		t.Fatalf("write: %v", err)
	}
	// The partial file is there to be removed (for S3, an incomplete
	// multipart upload): the checks below are not vacuous.
	if got := b.staged(t, project, id); !slices.ContainsFunc(got, func(s string) bool { return strings.HasSuffix(s, "big.bin") }) {
		t.Fatalf("while writing, staged %v, want big.bin among them", got)
	}
	if err := w.(discarder).CloseWithError(errors.New("boom")); err != nil {
		t.Fatalf("CloseWithError: %v", err)
	}
	// The failed file is gone at once, upload and all; the completed one
	// waits for Abort.
	if got := b.staged(t, project, id); !slices.Equal(got, []string{"done.txt"}) {
		t.Fatalf("after CloseWithError, staged %v, want [done.txt]", got)
	}
	if _, err := w.Write([]byte("more")); err == nil {
		t.Error("Write after CloseWithError succeeded")
	}
	if err := st.Commit(ctx); err == nil || !strings.Contains(err.Error(), "big.bin") {
		t.Errorf("Commit with a failed file: err %v, want one naming big.bin", err)
	}
	if got := b.published(t, project, id); len(got) != 0 {
		t.Fatalf("failed Commit left %v visible", got)
	}

	if err := st.Abort(ctx); err != nil {
		t.Fatalf("abort: %v", err)
	}
	if err := st.Abort(ctx); err != nil {
		t.Fatalf("second abort: %v", err)
	}
	if got := b.staged(t, project, id); len(got) != 0 {
		t.Errorf("after Abort, staging area holds %v", got)
	}
	if got := b.published(t, project, id); len(got) != 0 {
		t.Errorf("after Abort, published %v", got)
	}
	if _, err := st.Create(ctx, "late.txt"); err == nil {
		t.Error("Create after Abort succeeded")
	}
	if err := st.Commit(ctx); err == nil {
		t.Error("Commit after Abort succeeded")
	}
}

func testSinkCancelled(t *testing.T, b sinkBackend) {
	project, id := "proj-1", newDeliveryID()
	st, err := b.sink.Begin(context.Background(), project, id)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := st.Create(ctx, "data.bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writeRandom(w, 9, 1<<20, 64<<10); err != nil {
		t.Fatal(err)
	}
	cancel()
	// The upload fails at its next request; writes must then fail, not
	// block, within at most a part's worth of data.
	deadline := time.Now().Add(30 * time.Second)
	buf := make([]byte, 64<<10)
	var werr error
	for werr == nil && time.Now().Before(deadline) {
		_, werr = w.Write(buf)
	}
	if !errors.Is(werr, context.Canceled) {
		t.Fatalf("write after cancel: err %v, want context.Canceled", werr)
	}
	if err := w.Close(); err == nil {
		t.Error("Close of a cancelled upload succeeded")
	}
	if err := st.Commit(context.Background()); err == nil {
		t.Error("Commit with a cancelled file succeeded")
	}
	if err := st.Abort(context.Background()); err != nil {
		t.Fatalf("abort: %v", err)
	}
	if got := b.staged(t, project, id); len(got) != 0 {
		t.Errorf("after Abort, staging area holds %v", got)
	}
}

func testSinkAbortWhileWriting(t *testing.T, b sinkBackend) {
	ctx := context.Background()
	project, id := "proj-1", newDeliveryID()
	st, err := b.sink.Begin(ctx, project, id)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	w, err := st.Create(ctx, "data.bin")
	if err != nil {
		t.Fatal(err)
	}
	// Another goroutine fails the job and aborts while this one writes.
	var written atomic.Int64
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := w.Write(buf)
			written.Add(int64(n))
			if err != nil {
				done <- err
				return
			}
		}
	}()
	for written.Load() < 6<<20 {
		time.Sleep(time.Millisecond)
	}
	if err := st.Abort(ctx); err != nil {
		t.Fatalf("abort: %v", err)
	}
	select {
	case err := <-done:
		t.Logf("write after Abort: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("a write still succeeds 30 s after Abort")
	}
	if got := b.staged(t, project, id); len(got) != 0 {
		t.Errorf("after Abort, staging area holds %v", got)
	}
}

func testSinkBadNames(t *testing.T, b sinkBackend) {
	ctx := context.Background()
	bad := []string{"", ".", "..", "../x", "a/b", `a\b`, ".staging", "-x", "a..b", "a b", "å", strings.Repeat("a", 256)}
	for _, name := range bad {
		if _, err := b.sink.Begin(ctx, name, "d1"); err == nil {
			t.Errorf("Begin with project %q succeeded", name)
		}
		if _, err := b.sink.Begin(ctx, "proj-1", name); err == nil {
			t.Errorf("Begin with id %q succeeded", name)
		}
		if _, err := b.sink.Presign(ctx, "proj-1", "d1", name, time.Hour); err == nil {
			t.Errorf("Presign of file %q succeeded", name)
		}
	}
	id := newDeliveryID()
	st, err := b.sink.Begin(ctx, "proj-1", id)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Abort(ctx)
	for _, name := range bad {
		if _, err := st.Create(ctx, name); err == nil {
			t.Errorf("Create of file %q succeeded", name)
		}
	}
	if err := st.Commit(ctx); err == nil {
		t.Error("Commit of an empty delivery succeeded")
	}
	for _, name := range bad {
		if err := b.sink.Release(ctx, "proj-1", name); err == nil {
			t.Errorf("Release of id %q succeeded", name)
		}
	}
	if got := b.staged(t, "proj-1", id); len(got) != 0 {
		t.Errorf("bad names left %v in the staging area", got)
	}
}

func TestSinkNames(t *testing.T) {
	for _, s := range []string{"a", "proj-1", "2026_04", "cohort.csv.zst.age", "A.b-c_d", strings.Repeat("x", 255)} {
		if err := checkSinkName("file", s); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
	for _, s := range []string{"", ".", "..", ".a", "_a", "-a", "a..b", "a/b", "a\\b", "a b", "a\x00", "ä", strings.Repeat("x", 256)} {
		if err := checkSinkName("file", s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

func TestDirSink(t *testing.T) {
	t.Run("StagedInside", func(t *testing.T) {
		sink, err := NewDirSink(filepath.Join(t.TempDir(), "out"))
		if err != nil {
			t.Fatal(err)
		}
		testDirSink(t, sink)
	})
	t.Run("StagedBeside", func(t *testing.T) {
		root := t.TempDir()
		sink, err := NewStagedDirSink(filepath.Join(root, "out"), filepath.Join(root, "staging"))
		if err != nil {
			t.Fatal(err)
		}
		testDirSink(t, sink)
	})
}

func testDirSink(t *testing.T, sink *DirSink) {
	list := func(t *testing.T, dir string) []string {
		t.Helper()
		entries, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		return names
	}
	hashFile := func(t *testing.T, path string) []byte {
		t.Helper()
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			t.Fatal(err)
		}
		return h.Sum(nil)
	}
	out := sink.dir
	runSinkTests(t, sinkBackend{
		sink: sink,
		published: func(t *testing.T, project, id string) []string {
			return list(t, filepath.Join(out, project, id))
		},
		staged: func(t *testing.T, project, id string) []string {
			return list(t, filepath.Join(sink.staging, project, id))
		},
		sum: func(t *testing.T, project, id, file string) []byte {
			return hashFile(t, filepath.Join(out, project, id, file))
		},
		fetch: func(t *testing.T, s string) []byte {
			t.Helper()
			u, err := url.Parse(s)
			if err != nil || u.Scheme != "file" {
				t.Fatalf("pre-signed URL %q: want a file:// URL", s)
			}
			return hashFile(t, filepath.FromSlash(u.Path))
		},
	})

	// Modes: nothing readable by others.
	for _, root := range []string{out, sink.staging} {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			want := fs.FileMode(0o600)
			if d.IsDir() {
				want = 0o700
			}
			if fi.Mode().Perm() != want {
				t.Errorf("%s: mode %04o, want %04o", path, fi.Mode().Perm(), want)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestDirSinkStagingInUse(t *testing.T) {
	sink, err := NewDirSink(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := sink.Begin(ctx, "p", "d1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Begin(ctx, "p", "d1"); err == nil || !strings.Contains(err.Error(), "staging directory") {
		t.Fatalf("second Begin of a delivery being written: err %v, want one about the staging directory", err)
	}
	if err := st.Abort(ctx); err != nil {
		t.Fatal(err)
	}
	st, err = sink.Begin(ctx, "p", "d1")
	if err != nil {
		t.Fatalf("Begin after Abort: %v", err)
	}
	st.Abort(ctx)

	// A directory in the way of the delivery (even an empty one, which a
	// rename would replace) stops Release.
	stageFiles(t, sink, "p", "d2", "f", "manifest.json.sig")
	if err := os.MkdirAll(filepath.Join(sink.dir, "p", "d2"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := sink.Release(ctx, "p", "d2"); !errors.Is(err, ErrDeliveryExists) {
		t.Fatalf("Release over an existing directory: err %v, want ErrDeliveryExists", err)
	}
	if err := sink.Abandon(ctx, "p", "d2"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(sink.dir, "p", "d2")); err != nil {
		t.Fatalf("Abandon removed the existing delivery directory: %v", err)
	}

	// A staged set of files without the manifest signature is not a
	// delivery: Release refuses it.
	stageFiles(t, sink, "p", "d3", "f", "manifest.json")
	if err := sink.Release(ctx, "p", "d3"); !errors.Is(err, ErrNotStaged) {
		t.Fatalf("Release without a signature: err %v, want ErrNotStaged", err)
	}
}

// TestStagedDirSinkPlaces: the staging directory is beside the delivery
// directory on one file system, never around it, nor inside it under a
// name a project could take.
func TestStagedDirSinkPlaces(t *testing.T) {
	root := t.TempDir()
	for _, tc := range []struct{ dir, staging, want string }{
		{"out", "out", "is or holds"},
		{"s/out", "s", "is or holds"},
		{"out", "out/staging", "a name a project could have"},
	} {
		_, err := NewStagedDirSink(filepath.Join(root, tc.dir), filepath.Join(root, tc.staging))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewStagedDirSink(%s, %s): %v, want an error saying %q", tc.dir, tc.staging, err, tc.want)
		}
	}
	if _, err := NewStagedDirSink(filepath.Join(root, "out"), filepath.Join(root, "out", ".waiting")); err != nil {
		t.Errorf("a dot directory inside: %v", err)
	}
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		var a, b syscall.Stat_t
		if syscall.Stat("/dev/shm", &a) == nil && syscall.Stat(root, &b) == nil && a.Dev != b.Dev {
			shm, err := os.MkdirTemp("/dev/shm", "lopnr-staging-")
			if err == nil {
				defer os.RemoveAll(shm)
				_, err := NewStagedDirSink(filepath.Join(root, "out2"), shm)
				if err == nil || !strings.Contains(err.Error(), "another file system") {
					t.Errorf("staging on another file system: %v, want it refused", err)
				}
			}
		}
	}
}

// s3TestClient is a client of the test gateway, independent of the sink,
// to look at the bucket.
func s3TestClient(t *testing.T, env testenv.S3Env) *minio.Client {
	t.Helper()
	c, err := minio.New(env.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(env.AccessKey, env.SecretKey, ""),
		Secure: env.Secure,
		Region: env.Region,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func s3TestEndpoint(env testenv.S3Env) string {
	if env.Secure {
		return "https://" + env.Endpoint
	}
	return "http://" + env.Endpoint
}

func randomBucket() string {
	b := make([]byte, 6)
	rand.Read(b)
	return "lopnr-sink-" + hex.EncodeToString(b)
}

func TestS3Sink(t *testing.T) {
	env := testenv.S3(t)
	ctx := context.Background()
	client := s3TestClient(t, env)
	bucket := randomBucket()
	cfg := S3Config{
		Endpoint:  s3TestEndpoint(env),
		AccessKey: env.AccessKey,
		SecretKey: env.SecretKey,
		Region:    env.Region,
		Bucket:    bucket,
		Prefix:    "lopnr-test",
		// The smallest part size, so that the 12 MiB of the failed file
		// are two uploaded parts that the abort must remove.
		PartSize: 5 << 20,
	}
	sink, err := NewS3Sink(ctx, cfg)
	if err != nil {
		t.Fatalf("new sink: %v", err)
	}
	t.Cleanup(func() { emptyAndRemoveBucket(t, client, bucket) })
	if ok, err := client.BucketExists(ctx, bucket); err != nil || !ok {
		t.Fatalf("NewS3Sink did not create bucket %s: %v, %v", bucket, ok, err)
	}
	// Files over 8 MiB are published by a multipart server-side copy
	// (ComposeObject), as those over 5 GiB are in production.
	sink.copyPartSize = 8 << 20

	// A second sink on the existing bucket, with the default part size.
	cfg2 := cfg
	cfg2.PartSize = 0
	if s2, err := NewS3Sink(ctx, cfg2); err != nil {
		t.Fatalf("new sink on an existing bucket: %v", err)
	} else if s2.partSize != DefaultPartSize {
		t.Errorf("default part size %d, want %d", s2.partSize, DefaultPartSize)
	}

	list := func(t *testing.T, prefix string) []string {
		t.Helper()
		var names []string
		for obj := range client.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
			if obj.Err != nil {
				t.Fatalf("list %s: %v", prefix, obj.Err)
			}
			names = append(names, strings.TrimPrefix(obj.Key, prefix))
		}
		return names
	}
	incomplete := func(t *testing.T, prefix string) []string {
		t.Helper()
		var names []string
		for u := range client.ListIncompleteUploads(ctx, bucket, prefix, true) {
			if u.Err != nil {
				t.Fatalf("list incomplete uploads under %s: %v", prefix, u.Err)
			}
			names = append(names, "incomplete upload "+u.Key)
		}
		return names
	}
	hashBody := func(t *testing.T, r io.Reader) []byte {
		t.Helper()
		h := sha256.New()
		if _, err := io.Copy(h, r); err != nil {
			t.Fatal(err)
		}
		return h.Sum(nil)
	}
	// etag returns an object's ETag: a multipart upload's ends in -N, N
	// its number of parts, on S3 and on the gateway.
	etag := func(t *testing.T, key string) string {
		t.Helper()
		info, err := client.StatObject(ctx, bucket, key, minio.StatObjectOptions{})
		if err != nil {
			t.Fatalf("stat %s: %v", key, err)
		}
		return info.ETag
	}
	b := sinkBackend{
		sink: sink,
		published: func(t *testing.T, project, id string) []string {
			return list(t, "lopnr-test/deliveries/"+project+"/"+id+"/")
		},
		staged: func(t *testing.T, project, id string) []string {
			// Incomplete uploads anywhere under the sink's prefix count:
			// a published copy's too.
			return append(list(t, "lopnr-test/staging/"+project+"/"+id+"/"), incomplete(t, "lopnr-test/")...)
		},
		sum: func(t *testing.T, project, id, file string) []byte {
			obj, err := client.GetObject(ctx, bucket, "lopnr-test/deliveries/"+project+"/"+id+"/"+file, minio.GetObjectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer obj.Close()
			return hashBody(t, obj)
		},
		fetch: func(t *testing.T, u string) []byte {
			t.Helper()
			if !strings.Contains(u, "/lopnr-test/deliveries/") {
				t.Errorf("pre-signed URL %s is not for the published key", u)
			}
			resp, err := http.Get(u)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET pre-signed URL: %s", resp.Status)
			}
			return hashBody(t, resp.Body)
		},
		checkStaged: func(t *testing.T, project, id string) {
			// 20 MiB streamed in 5 MiB parts.
			if tag := etag(t, "lopnr-test/staging/"+project+"/"+id+"/cohort.csv.zst.age"); !strings.HasSuffix(tag, "-5") {
				t.Errorf("staged 20 MiB file has ETag %s, want a multipart upload of 5 parts (-5)", tag)
			}
		},
		checkPublished: func(t *testing.T, project, id string) {
			// Copied in three ranges of about 7 MiB, under copyPartSize.
			if tag := etag(t, "lopnr-test/deliveries/"+project+"/"+id+"/cohort.csv.zst.age"); !strings.HasSuffix(tag, "-3") {
				t.Errorf("published 20 MiB file has ETag %s, want a multipart copy of 3 parts (-3)", tag)
			}
			if tag := etag(t, "lopnr-test/deliveries/"+project+"/"+id+"/README.txt"); strings.Contains(tag, "-") {
				t.Errorf("published small file has ETag %s, want a single copy", tag)
			}
		},
	}
	runSinkTests(t, b)
	if got, want := sink.Location("p", "d"), "s3://"+bucket+"/lopnr-test/deliveries/p/d/"; got != want {
		t.Errorf("Location = %q, want %q", got, want)
	}

	t.Run("CopyFailureRollsBack", func(t *testing.T) {
		// The copy of b.txt fails: a proxy in front of the gateway refuses
		// it. a.txt was copied before; the manifest and its signature come
		// last and are never copied.
		target, _ := url.Parse(s3TestEndpoint(env))
		rp := httputil.NewSingleHostReverseProxy(target)
		director := rp.Director
		rp.Director = func(r *http.Request) { host := r.Host; director(r); r.Host = host } // keep the signed Host
		proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/b.txt") && r.Header.Get("X-Amz-Copy-Source") != "" {
				w.WriteHeader(http.StatusForbidden)
				io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>refused by the test</Message></Error>`)
				return
			}
			rp.ServeHTTP(w, r)
		}))
		defer proxy.Close()
		pcfg := cfg
		pcfg.Endpoint = proxy.URL
		failing, err := NewS3Sink(ctx, pcfg)
		if err != nil {
			t.Fatal(err)
		}
		id := newDeliveryID()
		stageFiles(t, failing, "proj-1", id, "a.txt", "b.txt", "c.txt", "manifest.json", "manifest.json.sig")
		err = failing.Release(ctx, "proj-1", id)
		if err == nil || !strings.Contains(err.Error(), "b.txt") {
			t.Fatalf("Release with a failing copy: err %v, want one naming b.txt", err)
		}
		t.Logf("release: %v", err)
		if got := b.published(t, "proj-1", id); len(got) != 0 {
			t.Fatalf("failed Release left %v published", got)
		}
		if got := b.staged(t, "proj-1", id); len(got) != 5 {
			t.Fatalf("failed Release left %v staged, want the 5 files", got)
		}
		// Released again without the fault, it is whole.
		if err := sink.Release(ctx, "proj-1", id); err != nil {
			t.Fatal(err)
		}
		if got := b.published(t, "proj-1", id); len(got) != 5 {
			t.Fatalf("published %v, want the 5 files", got)
		}
	})

	t.Run("InterruptedReleaseIsFinished", func(t *testing.T) {
		// A release killed after copying some files, the signature not
		// among them: no link can be signed; a Release at the next start
		// finishes it. Killed after the signature, before the staged
		// objects were removed: the next Release removes them.
		id := newDeliveryID()
		stageFiles(t, sink, "proj-1", id, "a.txt", "manifest.json", "manifest.json.sig")
		staged, published := "lopnr-test/staging/proj-1/"+id+"/", "lopnr-test/deliveries/proj-1/"+id+"/"
		if _, err := client.CopyObject(ctx, minio.CopyDestOptions{Bucket: bucket, Object: published + "a.txt"},
			minio.CopySrcOptions{Bucket: bucket, Object: staged + "a.txt"}); err != nil {
			t.Fatal(err)
		}
		if _, err := sink.Presign(ctx, "proj-1", id, "a.txt", time.Hour); !errors.Is(err, ErrNotPublished) {
			t.Fatalf("presign of a half-released delivery: %v, want ErrNotPublished", err)
		}
		if err := sink.Release(ctx, "proj-1", id); err != nil {
			t.Fatal(err)
		}
		if got := b.published(t, "proj-1", id); len(got) != 3 {
			t.Fatalf("published %v, want the 3 files", got)
		}

		id = newDeliveryID()
		stageFiles(t, sink, "proj-1", id, "a.txt", "manifest.json.sig")
		staged, published = "lopnr-test/staging/proj-1/"+id+"/", "lopnr-test/deliveries/proj-1/"+id+"/"
		for _, name := range []string{"a.txt", "manifest.json.sig"} {
			if _, err := client.CopyObject(ctx, minio.CopyDestOptions{Bucket: bucket, Object: published + name},
				minio.CopySrcOptions{Bucket: bucket, Object: staged + name}); err != nil {
				t.Fatal(err)
			}
		}
		if err := sink.Release(ctx, "proj-1", id); err != nil {
			t.Fatal(err)
		}
		if got := b.staged(t, "proj-1", id); len(got) != 0 {
			t.Fatalf("after the second Release, staged %v", got)
		}
	})

	t.Run("BeginOverExisting", func(t *testing.T) {
		// Another writer published the same delivery, or staged it.
		id := newDeliveryID()
		other := "lopnr-test/deliveries/proj-1/" + id + "/a.txt"
		if _, err := client.PutObject(ctx, bucket, other, strings.NewReader("theirs"), 6, minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := sink.Begin(ctx, "proj-1", id); !errors.Is(err, ErrDeliveryExists) {
			t.Fatalf("Begin over a published delivery: err %v, want ErrDeliveryExists", err)
		}
		id = newDeliveryID()
		stageFiles(t, sink, "proj-1", id, "a.txt")
		if _, err := sink.Begin(ctx, "proj-1", id); err == nil || !strings.Contains(err.Error(), "staged") {
			t.Fatalf("Begin over a staged delivery: err %v, want one saying objects are staged", err)
		}
		if got := b.staged(t, "proj-1", id); !slices.Equal(got, []string{"a.txt"}) {
			t.Fatalf("a refused Begin touched the staged delivery: %v", got)
		}
	})

	t.Run("AbandonRemovesCrashLeftovers", func(t *testing.T) {
		// What an interrupted process leaves: a staged object and a
		// multipart upload with a part, never completed.
		id := newDeliveryID()
		prefix := "lopnr-test/staging/proj-1/" + id + "/"
		if _, err := client.PutObject(ctx, bucket, prefix+"done.txt", strings.NewReader("x"), 1, minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
		core := minio.Core{Client: client}
		upload, err := core.NewMultipartUpload(ctx, bucket, prefix+"big.bin", minio.PutObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		part := bytes.Repeat([]byte("x"), 5<<20)
		if _, err := core.PutObjectPart(ctx, bucket, prefix+"big.bin", upload, 1, bytes.NewReader(part), int64(len(part)), minio.PutObjectPartOptions{}); err != nil {
			t.Fatal(err)
		}
		if got := b.staged(t, "proj-1", id); len(got) != 2 {
			t.Fatalf("leftovers %v, want an object and an incomplete upload", got)
		}
		if err := sink.Abandon(ctx, "proj-1", id); err != nil {
			t.Fatal(err)
		}
		if got := b.staged(t, "proj-1", id); len(got) != 0 {
			t.Fatalf("after Abandon, staged %v", got)
		}
	})
}

// emptyAndRemoveBucket removes a test bucket and everything in it.
func emptyAndRemoveBucket(t *testing.T, c *minio.Client, bucket string) {
	ctx := context.Background()
	for obj := range c.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true}) {
		if obj.Err == nil {
			c.RemoveObject(ctx, bucket, obj.Key, minio.RemoveObjectOptions{})
		}
	}
	for u := range c.ListIncompleteUploads(ctx, bucket, "", true) {
		if u.Err == nil {
			c.RemoveIncompleteUpload(ctx, bucket, u.Key)
		}
	}
	if err := c.RemoveBucket(ctx, bucket); err != nil {
		t.Errorf("remove test bucket %s: %v", bucket, err)
	}
}

func TestS3SinkWrongKeys(t *testing.T) {
	env := testenv.S3(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const secret = "not-the-secret-key-0123456789"
	_, err := NewS3Sink(ctx, S3Config{
		Endpoint:  s3TestEndpoint(env),
		AccessKey: env.AccessKey,
		SecretKey: secret,
		Region:    env.Region,
		Bucket:    randomBucket(),
	})
	if err == nil {
		t.Fatal("NewS3Sink with a wrong secret key succeeded")
	}
	msg := err.Error()
	t.Logf("wrong secret key: %v", err)
	if !strings.Contains(msg, s3TestEndpoint(env)) || !strings.Contains(msg, "key") {
		t.Errorf("error %q does not name the endpoint and the keys", msg)
	}
	if strings.Contains(msg, secret) {
		t.Errorf("error %q shows the secret key", msg)
	}
}

func TestS3SinkUnreachableEndpoint(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	endpoint := "http://" + l.Addr().String()
	l.Close() // nothing listens there now
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err = NewS3Sink(ctx, S3Config{Endpoint: endpoint, AccessKey: "a", SecretKey: "b", Bucket: "lopnr"})
	elapsed := time.Since(start)
	if err == nil {
		t.Fatal("NewS3Sink reached a closed port")
	}
	t.Logf("after %v: %v", elapsed.Round(time.Millisecond), err)
	if !strings.Contains(err.Error(), "cannot reach "+endpoint) {
		t.Errorf("error %q does not say it cannot reach %s", err, endpoint)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("error %q is not connection refused", err)
	}
	if elapsed > 5*time.Second {
		t.Errorf("took %v to report a closed port", elapsed)
	}
}

func TestS3SinkConfig(t *testing.T) {
	ctx := context.Background()
	good := S3Config{Endpoint: "http://127.0.0.1:1", AccessKey: "a", SecretKey: "b", Bucket: "lopnr"}
	for _, tc := range []struct {
		name string
		edit func(*S3Config)
		want string
	}{
		{"no scheme", func(c *S3Config) { c.Endpoint = "127.0.0.1:7070" }, "want a URL"},
		{"path", func(c *S3Config) { c.Endpoint = "http://s3.example/bucket" }, "want a URL"},
		{"credentials in the URL", func(c *S3Config) { c.Endpoint = "http://user:hunter2@s3.example" }, "want a URL"},
		{"no keys", func(c *S3Config) { c.SecretKey = "" }, "secret key"},
		{"bad bucket", func(c *S3Config) { c.Bucket = "Bad_Bucket" }, "bucket"},
		{"small parts", func(c *S3Config) { c.PartSize = 1 << 20 }, "part size"},
		{"empty prefix element", func(c *S3Config) { c.Prefix = "a//b" }, "prefix"},
	} {
		cfg := good
		tc.edit(&cfg)
		_, err := NewS3Sink(ctx, cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want one about %q", tc.name, err, tc.want)
		} else if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: err %v shows the password", tc.name, err)
		}
	}
}
