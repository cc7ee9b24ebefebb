package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestExposition(t *testing.T) {
	r := New()
	r.JobState("queued")
	r.JobState("queued")
	r.JobState("succeeded")
	r.Delivered("p1", 1000, 2048)
	r.Delivered("p1", 500, 1024)
	r.JobDuration(3)
	r.JobDuration(200)
	r.JobDuration(1e6)
	r.Audit(func() AuditHead {
		return AuditHead{Entries: 42, Hash: "ab0300c0ff01ee", Checkpoint: 40, Root: "YpvdXe3x"}
	})
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(b)
	for _, want := range []string{
		`lopnr_jobs_total{state="queued"} 2`,
		`lopnr_jobs_total{state="succeeded"} 1`,
		`lopnr_delivered_rows_total{project="p1"} 1500`,
		`lopnr_delivered_bytes_total{project="p1"} 3072`,
		`lopnr_job_duration_seconds_bucket{le="1"} 0`,
		`lopnr_job_duration_seconds_bucket{le="5"} 1`,
		`lopnr_job_duration_seconds_bucket{le="300"} 2`,
		`lopnr_job_duration_seconds_bucket{le="14400"} 2`,
		`lopnr_job_duration_seconds_bucket{le="+Inf"} 3`,
		`lopnr_job_duration_seconds_count 3`,
		"# TYPE lopnr_job_duration_seconds histogram",
		`lopnr_audit_entries 42`,
		`lopnr_audit_head_hash 188029385899777`, // 0xab0300c0ff01
		`lopnr_audit_checkpoint_entries 40`,
		`lopnr_audit_checkpoint_root 108421573373425`, // 0x629bdd5dedf1, from base64 "YpvdXe3x"
		"# TYPE lopnr_audit_entries gauge",
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("missing %q in:\n%s", want, text)
		}
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("content type %q", ct)
	}
}
