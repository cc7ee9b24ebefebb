package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/lopnr/lopnr/extract"
	"github.com/lopnr/lopnr/internal/testenv"
	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
	"github.com/lopnr/lopnr/server/internal/seal"
	"github.com/lopnr/lopnr/server/jobs"
)

// sinkView looks behind a server's sink: what its published place lists
// under a delivery, and what a plain download of a published file's
// address answers, as a researcher who guesses it, or someone who signs a
// link with the S3 keys, would get.
type sinkView struct {
	published func(t *testing.T, project, id string) []string
	staged    func(t *testing.T, project, id string) []string
	// get downloads a file at its published address: its status and
	// bytes.
	get func(t *testing.T, project, id, file string) (int, []byte)
	// leave puts a file in a delivery's staging place behind the sink's
	// back, as a crash in the middle of removing it leaves one.
	leave func(t *testing.T, project, id, file string)
}

// dirSinkView is the view of a directory sink's places.
func dirSinkView(dir, staging string) sinkView {
	list := func(t *testing.T, d string) []string {
		entries, err := os.ReadDir(d)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range entries {
			out = append(out, e.Name())
		}
		return out
	}
	return sinkView{
		published: func(t *testing.T, project, id string) []string { return list(t, filepath.Join(dir, project, id)) },
		staged:    func(t *testing.T, project, id string) []string { return list(t, filepath.Join(staging, project, id)) },
		get: func(t *testing.T, project, id, file string) (int, []byte) {
			b, err := os.ReadFile(filepath.Join(dir, project, id, file))
			if errors.Is(err, os.ErrNotExist) {
				return http.StatusNotFound, nil
			}
			if err != nil {
				t.Fatal(err)
			}
			return http.StatusOK, b
		},
		leave: func(t *testing.T, project, id, file string) {
			os.MkdirAll(filepath.Join(staging, project, id), 0o700)
			if err := os.WriteFile(filepath.Join(staging, project, id, file), []byte("left"), 0o600); err != nil {
				t.Fatal(err)
			}
		},
	}
}

// s3SinkView is the view of an S3 sink's places, through a client of its
// own with the sink's keys.
func s3SinkView(t *testing.T, env testenv.S3Env, bucket, prefix string) sinkView {
	c, err := minio.New(env.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(env.AccessKey, env.SecretKey, ""), Secure: env.Secure, Region: env.Region})
	if err != nil {
		t.Fatal(err)
	}
	list := func(t *testing.T, p string) []string {
		var out []string
		for o := range c.ListObjects(context.Background(), bucket, minio.ListObjectsOptions{Prefix: p, Recursive: true}) {
			if o.Err != nil {
				t.Fatal(o.Err)
			}
			out = append(out, strings.TrimPrefix(o.Key, p))
		}
		for u := range c.ListIncompleteUploads(context.Background(), bucket, p, true) {
			if u.Err != nil {
				t.Fatal(u.Err)
			}
			out = append(out, "(incomplete) "+strings.TrimPrefix(u.Key, p))
		}
		return out
	}
	return sinkView{
		published: func(t *testing.T, project, id string) []string {
			return list(t, prefix+"deliveries/"+project+"/"+id+"/")
		},
		staged: func(t *testing.T, project, id string) []string { return list(t, prefix+"staging/"+project+"/"+id+"/") },
		get: func(t *testing.T, project, id, file string) (int, []byte) {
			u, err := c.PresignedGetObject(context.Background(), bucket, prefix+"deliveries/"+project+"/"+id+"/"+file, time.Hour, nil)
			if err != nil {
				t.Fatal(err)
			}
			return httpGet(t, u.String())
		},
		leave: func(t *testing.T, project, id, file string) {
			key := prefix + "staging/" + project + "/" + id + "/" + file
			if _, err := c.PutObject(context.Background(), bucket, key, strings.NewReader("left"), 4, minio.PutObjectOptions{}); err != nil {
				t.Fatal(err)
			}
		},
	}
}

func httpGet(t *testing.T, u string) (int, []byte) {
	t.Helper()
	if strings.HasPrefix(u, "file://") {
		p, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p.Path)
		if err != nil {
			return http.StatusNotFound, nil
		}
		return http.StatusOK, b
	}
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// deliverySinks runs test against a server with each sink: a directory
// with its staging place beside it, and the S3 gateway (when the dev
// stack is up).
func deliverySinks(t *testing.T, test func(t *testing.T, f *fixture, view sinkView)) {
	t.Run("dir", func(t *testing.T) {
		var view sinkView
		f := newFixtureWith(t, false, testPolicy, func(cfg *Config) {
			dir, staging := filepath.Join(filepath.Dir(cfg.DataDir), "out"), filepath.Join(cfg.DataDir, "staging")
			sink, err := extract.NewStagedDirSink(dir, staging)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Sink, view = sink, dirSinkView(dir, staging)
		})
		test(t, f, view)
	})
	t.Run("s3", func(t *testing.T) {
		env := testenv.S3(t)
		var view sinkView
		f := newFixtureWith(t, false, testPolicy, func(cfg *Config) {
			var b [4]byte
			rand.Read(b[:])
			prefix := "server-" + hex.EncodeToString(b[:]) + "/"
			scheme := "http://"
			if env.Secure {
				scheme = "https://"
			}
			sink, err := extract.NewS3Sink(context.Background(), extract.S3Config{Endpoint: scheme + env.Endpoint, AccessKey: env.AccessKey,
				SecretKey: env.SecretKey, Region: env.Region, Bucket: "lopnr-server", Prefix: prefix})
			if err != nil {
				t.Fatal(err)
			}
			cfg.Sink, view = sink, s3SinkView(t, env, "lopnr-server", prefix)
		})
		test(t, f, view)
	})
}

// stagedDelivery creates p1 (approved by bo), runs the synthetic job as
// anna and returns its delivery's id.
func (f *fixture) stagedDelivery() string {
	f.t.Helper()
	spec, _ := f.generate(300)
	_, err := lopnrv1.NewProjectServiceClient(f.conn("drift")).CreateProject(ctx(f.t), &lopnrv1.CreateProjectRequest{Id: "p1",
		EpmDnr: "2026-00000-01", ApprovedVariables: approvedVariables(f.t), ApprovedSources: approvedSources(f.t), Recipients: []string{researcherKey(f.t).Recipient().String()}})
	if err != nil {
		f.t.Fatal(err)
	}
	f.approve("p1", "bo")
	jobs := lopnrv1.NewJobServiceClient(f.conn("anna"))
	job, err := jobs.SubmitJob(ctx(f.t), &lopnrv1.SubmitJobRequest{Spec: spec})
	if err != nil {
		f.t.Fatal(err)
	}
	w, err := jobs.WatchJob(ctx(f.t), &lopnrv1.WatchJobRequest{Id: job.Id})
	if err != nil {
		f.t.Fatal(err)
	}
	for _, err := w.Recv(); err == nil; _, err = w.Recv() {
	}
	j, err := jobs.GetJob(ctx(f.t), &lopnrv1.GetJobRequest{Id: job.Id})
	if err != nil || j.State != lopnrv1.JobState_JOB_STATE_SUCCEEDED || j.Delivery == "" {
		f.t.Fatalf("job = %v, %v; want it succeeded with a delivery", j, err)
	}
	return j.Delivery
}

// TestResearcherCannotReachAnUnreleasedDelivery replays finding 6 of issue
// 15: a finished job's delivery was written, encrypted to the researchers,
// at its published place before anyone released it, so a researcher who
// could list the directory or bucket, or anyone who signs a link with the
// S3 keys, had it. Now it is staged: its published place lists nothing, a
// link to its published address answers 404, the service signs no link
// for it (for the researcher, nor for an operator's lopnr presign with the
// S3 keys), and its job's submitter cannot release it. Released by a
// second person, all of it is there.
func TestResearcherCannotReachAnUnreleasedDelivery(t *testing.T) {
	deliverySinks(t, func(t *testing.T, f *fixture, view sinkView) {
		id := f.stagedDelivery()
		sink := f.srv.cfg.Sink
		names := []string{"manifest.json", "manifest.json.sig", "README.txt", "lmed.csv.zst.age", "lmed.codebook.csv"}
		if got := view.staged(t, "p1", id); !slices.Contains(got, "manifest.json.sig") {
			t.Fatalf("staged %v, want the whole delivery with its signature", got)
		}
		checkUnreachable := func(when string) {
			t.Helper()
			if got := view.published(t, "p1", id); len(got) != 0 {
				t.Fatalf("%s, the published place lists %v", when, got)
			}
			for _, name := range names {
				if code, _ := view.get(t, "p1", id, name); code != http.StatusNotFound {
					t.Fatalf("%s, a download of %s at its published address answers %d", when, name, code)
				}
				if u, err := sink.Presign(context.Background(), "p1", id, name, time.Hour); !errors.Is(err, extract.ErrNotPublished) {
					t.Fatalf("%s, the sink signed a link for %s: %q, %v", when, name, u, err)
				}
			}
			presign := &lopnrv1.PresignDeliveryRequest{Project: "p1", Delivery: id, Expiry: durationpb.New(time.Hour)}
			_, err := lopnrv1.NewDeliveryServiceClient(f.conn("forskare")).PresignDelivery(ctx(t), presign)
			wantCode(t, when+", the researcher's presign", err, codes.FailedPrecondition, "not released")
		}
		checkUnreachable("before release")
		rel := &lopnrv1.ReleaseDeliveryRequest{Project: "p1", Delivery: id}
		_, err := lopnrv1.NewDeliveryServiceClient(f.conn("anna")).ReleaseDelivery(ctx(t), rel)
		wantCode(t, "the submitter's release", err, codes.PermissionDenied, "")
		checkUnreachable("after the submitter's refused release")

		d, err := lopnrv1.NewDeliveryServiceClient(f.conn("bo")).ReleaseDelivery(ctx(t), rel)
		if err != nil || !d.Released {
			t.Fatalf("bo's release: %v, %v", d, err)
		}
		if got := view.staged(t, "p1", id); len(got) != 0 {
			t.Errorf("after release, staged %v", got)
		}
		links, err := lopnrv1.NewDeliveryServiceClient(f.conn("forskare")).PresignDelivery(ctx(t),
			&lopnrv1.PresignDeliveryRequest{Project: "p1", Delivery: id, Expiry: durationpb.New(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		for _, l := range links.Files {
			code, b := httpGet(t, l.Url)
			if code != http.StatusOK {
				t.Fatalf("download %s after release: %d", l.Name, code)
			}
			os.WriteFile(filepath.Join(dir, l.Name), b, 0o600)
		}
		manifest, _ := os.ReadFile(filepath.Join(dir, "manifest.json"))
		sig, _ := os.ReadFile(filepath.Join(dir, "manifest.json.sig"))
		m, err := extract.VerifyManifest(manifest, sig, f.srv.cfg.Signer.PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range m.Check(os.DirFS(dir)) {
			if c.Err != nil {
				t.Errorf("downloaded %s: %v", c.Name, c.Err)
			}
		}
		if len(m.Documents) != len(m.Files)+1 {
			t.Errorf("the manifest lists %d documents, want every codebook and the README", len(m.Documents))
		}
		_, err = lopnrv1.NewDeliveryServiceClient(f.conn("cecilia")).ReleaseDelivery(ctx(t), rel)
		wantCode(t, "a second release", err, codes.FailedPrecondition, "was released by")
	})
}

// TestRestartAccountsForEverythingInTheSink is finding 8 of issue 15 at
// each point a crash can leave things: a server killed between any two
// steps of a job or a release, and files no record knows. After the
// restart, what the sink holds is what the records say, and the killed
// jobs say so truly.
func TestRestartAccountsForEverythingInTheSink(t *testing.T) {
	deliverySinks(t, func(t *testing.T, f *fixture, view sinkView) {
		cfg := f.srv.cfg
		f.srv.Close()
		bg := context.Background()
		n := 0
		newID := func() string { n++; return fmt.Sprintf("20260101-%016x", n) }
		sealer, err := seal.New(cfg.RecordKey)
		if err != nil {
			t.Fatal(err)
		}
		keepJob := func(id string, state jobs.State) {
			t.Helper()
			job, err := sealer.Marshal(jobs.Kind, id, jobs.Job{ID: id, Project: "p1", Submitter: "CN=anna,O=Region Test", State: state,
				Created: time.Date(2026, 1, 1, 0, 0, n, 0, time.UTC), Last: jobs.Event{Stage: "file", State: state}})
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(cfg.DataDir, "jobs", id+".json"), job, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		keepDelivery := func(id string, state deliveryState) {
			t.Helper()
			d := deliveryRecord{ID: id, Project: "p1", Job: id, Submitter: "CN=anna,O=Region Test", State: state}
			if state == deliveryReleasing || state == deliveryReleased {
				d.ReleasedBy = "CN=bo,O=Region Test"
			}
			if err := f.srv.deliveries.create(id, d); err != nil {
				t.Fatal(err)
			}
		}
		stage := func(id string, names ...string) {
			t.Helper()
			st, err := cfg.Sink.Begin(bg, "p1", id)
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range names {
				w, err := st.Create(bg, name)
				if err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(w, "%s of %s\n", name, id)
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
			}
			if err := st.Commit(bg); err != nil {
				t.Fatal(err)
			}
		}
		whole := []string{"a.csv.zst.age", "a.codebook.csv", "README.txt", "manifest.json", "manifest.json.sig"}

		// Killed while staging: a record, part of the files.
		whileStaging := newID()
		keepJob(whileStaging, jobs.Running)
		keepDelivery(whileStaging, deliveryStaging)
		stage(whileStaging, "a.csv.zst.age")
		// Killed after staging, before the job's success was kept.
		afterStaged := newID()
		keepJob(afterStaged, jobs.Running)
		keepDelivery(afterStaged, deliveryStaged)
		stage(afterStaged, whole...)
		// Killed before the first record: files under the job's id.
		beforeRecord := newID()
		keepJob(beforeRecord, jobs.Running)
		stage(beforeRecord, "a.csv.zst.age")
		// A whole delivery published under a running job's id, without a
		// record: the failure the issue found, as an older lopnrd left it.
		publishedNoRecord := newID()
		keepJob(publishedNoRecord, jobs.Running)
		stage(publishedNoRecord, whole...)
		if err := cfg.Sink.Release(bg, "p1", publishedNoRecord); err != nil {
			t.Fatal(err)
		}
		// Staged, job succeeded, waiting for release: left alone.
		waiting := newID()
		keepJob(waiting, jobs.Succeeded)
		keepDelivery(waiting, deliveryStaged)
		stage(waiting, whole...)
		// Killed during a release: finished at start.
		midRelease := newID()
		keepJob(midRelease, jobs.Succeeded)
		keepDelivery(midRelease, deliveryReleasing)
		stage(midRelease, whole...)
		// Released, but the staged files were not removed (S3).
		releasedLeftover := newID()
		keepJob(releasedLeftover, jobs.Succeeded)
		keepDelivery(releasedLeftover, deliveryReleased)
		stage(releasedLeftover, whole...)
		if err := cfg.Sink.Release(bg, "p1", releasedLeftover); err != nil {
			t.Fatal(err)
		}
		view.leave(t, "p1", releasedLeftover, "a.csv.zst.age")
		// Published while only staged: moved by hand, say.
		publishedStaged := newID()
		keepJob(publishedStaged, jobs.Succeeded)
		keepDelivery(publishedStaged, deliveryStaged)
		stage(publishedStaged, whole...)
		if err := cfg.Sink.Release(bg, "p1", publishedStaged); err != nil {
			t.Fatal(err)
		}
		// Files of no job and no record, staged and published.
		strayStaged, strayPublished := newID(), newID()
		stage(strayStaged, whole...)
		stage(strayPublished, whole...)
		if err := cfg.Sink.Release(bg, "p1", strayPublished); err != nil {
			t.Fatal(err)
		}

		srv, err := New(cfg)
		if err != nil {
			t.Fatalf("restart: %v", err)
		}
		defer srv.Close()
		sorted := slices.Clone(whole)
		slices.Sort(sorted)
		for _, tc := range []struct {
			name, id          string
			staged, published []string
			record            deliveryState // "" none
			job               jobs.State
		}{
			{"killed while staging", whileStaging, nil, nil, "", jobs.Failed},
			{"killed after staging", afterStaged, nil, nil, "", jobs.Failed},
			{"killed before the record", beforeRecord, nil, nil, "", jobs.Failed},
			{"published without a record", publishedNoRecord, nil, nil, "", jobs.Failed},
			{"waiting for release", waiting, sorted, nil, deliveryStaged, jobs.Succeeded},
			{"killed mid-release", midRelease, nil, sorted, deliveryReleased, jobs.Succeeded},
			{"released with staged leftovers", releasedLeftover, nil, sorted, deliveryReleased, jobs.Succeeded},
			{"published while staged", publishedStaged, nil, nil, deliveryStaged, jobs.Succeeded},
			{"stray staged files", strayStaged, nil, nil, "", ""},
			{"stray published files", strayPublished, nil, nil, "", ""},
		} {
			staged, published := view.staged(t, "p1", tc.id), view.published(t, "p1", tc.id)
			slices.Sort(staged)
			slices.Sort(published)
			if !slices.Equal(staged, tc.staged) || !slices.Equal(published, tc.published) {
				t.Errorf("%s: staged %v, published %v; want %v and %v", tc.name, staged, published, tc.staged, tc.published)
			}
			d, err := srv.deliveries.get(tc.id)
			switch {
			case tc.record == "" && !errors.Is(err, errNotFound):
				t.Errorf("%s: record %v, %v; want none", tc.name, d.State, err)
			case tc.record != "" && (err != nil || d.State != tc.record):
				t.Errorf("%s: record %v, %v; want %s", tc.name, d.State, err, tc.record)
			}
			if tc.job == "" {
				continue
			}
			j, err := srv.jobs.Get(tc.id)
			if err != nil || j.State != tc.job {
				t.Errorf("%s: job %v, %v; want %s", tc.name, j.State, err, tc.job)
			}
			if tc.job == jobs.Failed && (!strings.Contains(j.Error, "interrupted") || !strings.Contains(j.Error, "what it had staged was removed")) {
				t.Errorf("%s: job's error %q, want it interrupted with what it staged removed", tc.name, j.Error)
			}
		}
		if d, _ := srv.deliveries.get(midRelease); d.ReleasedBy != "CN=bo,O=Region Test" {
			t.Errorf("the finished release names %q as its approver, want bo", d.ReleasedBy)
		}
		b, err := os.ReadFile(f.auditFn)
		if err != nil {
			t.Fatal(err)
		}
		// The killed jobs' own deliveries are in their job.finish entries;
		// the rest are settled by the reconciliation, one entry each.
		if c := strings.Count(string(b), `"action":"delivery.recover"`); c != 5 {
			t.Errorf("the audit log has %d delivery.recover entries, want one for each of the 5 deliveries the reconciliation settled", c)
		}
	})
}
