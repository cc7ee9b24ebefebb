// Package metrics keeps the server's Prometheus metrics — jobs by state,
// rows and bytes delivered, job durations, the audit log's head and newest
// signed checkpoint — and serves them in the Prometheus text format. It is small on purpose: a few counters and one
// histogram need no client library. Labels are states, stages and project
// ids; never a record value.
package metrics

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strings"
	"sync"
)

// Registry holds the metrics.
type Registry struct {
	mu        sync.Mutex
	jobs      map[string]float64 // by state: jobs that reached it
	rows      map[string]float64 // by project: rows delivered
	bytes     map[string]float64 // by project: bytes delivered (stored size)
	durations histogram
	audit     func() AuditHead // nil: no audit metrics
}

// AuditHead is what the metrics show of the audit log, so that a scraper
// outside the server witnesses its growth: a head that goes back, or
// changes its hash at the same size, shows the log was cut or rewritten.
type AuditHead struct {
	Entries int64  // entries in the log
	Hash    string // the last entry's hash, hex
	// The newest signed checkpoint: the entries it holds and its tree
	// hash, base64, as in the checkpoint.
	Checkpoint int64
	Root       string
}

// Buckets of the job duration histogram, in seconds.
var Buckets = []float64{1, 5, 15, 60, 300, 900, 3600, 4 * 3600}

// New returns an empty registry.
func New() *Registry {
	return &Registry{jobs: map[string]float64{}, rows: map[string]float64{}, bytes: map[string]float64{},
		durations: histogram{counts: make([]uint64, len(Buckets))}}
}

// JobState counts a job reaching a state (queued, running, succeeded, …).
func (r *Registry) JobState(state string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.jobs[state]++
}

// Delivered adds a delivered file's rows and bytes to a project's totals.
func (r *Registry) Delivered(project string, rows, bytes int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rows[project] += float64(rows)
	r.bytes[project] += float64(bytes)
}

// Audit makes every scrape show the audit log's head as head reads it.
func (r *Registry) Audit(head func() AuditHead) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.audit = head
}

// JobDuration observes a finished job's duration in seconds.
func (r *Registry) JobDuration(seconds float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.durations.observe(seconds)
}

type histogram struct {
	counts []uint64 // per bucket, not cumulative
	sum    float64
	n      uint64
}

func (h *histogram) observe(v float64) {
	h.sum += v
	h.n++
	for i, b := range Buckets {
		if v <= b {
			h.counts[i]++
			return
		}
	}
}

// WriteTo writes every metric in the Prometheus text format.
func (r *Registry) WriteTo(w io.Writer) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	family := func(name, help, typ string, values map[string]float64, label string) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
		keys := make([]string, 0, len(values))
		for k := range values {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "%s{%s=%q} %s\n", name, label, k, num(values[k]))
		}
	}
	family("lopnr_jobs_total", "Jobs that reached each state.", "counter", r.jobs, "state")
	family("lopnr_delivered_rows_total", "Rows delivered, by project.", "counter", r.rows, "project")
	family("lopnr_delivered_bytes_total", "Bytes delivered (compressed and encrypted), by project.", "counter", r.bytes, "project")
	fmt.Fprintf(&b, "# HELP lopnr_job_duration_seconds Duration of finished jobs.\n# TYPE lopnr_job_duration_seconds histogram\n")
	var cum uint64
	for i, le := range Buckets {
		cum += r.durations.counts[i]
		fmt.Fprintf(&b, "lopnr_job_duration_seconds_bucket{le=%q} %d\n", num(le), cum)
	}
	fmt.Fprintf(&b, "lopnr_job_duration_seconds_bucket{le=\"+Inf\"} %d\n", r.durations.n)
	fmt.Fprintf(&b, "lopnr_job_duration_seconds_sum %s\nlopnr_job_duration_seconds_count %d\n", num(r.durations.sum), r.durations.n)
	if r.audit != nil {
		h := r.audit()
		gauge := func(name, help string, v int64) {
			fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n%s %d\n", name, help, name, name, v)
		}
		gauge("lopnr_audit_entries", "Entries in the audit log.", h.Entries)
		gauge("lopnr_audit_head_hash", "The last entry's hash: its first 48 bits as an integer (exact in a sample), so that a change at the same size shows.", prefix48(hex.DecodeString(h.Hash)))
		gauge("lopnr_audit_checkpoint_entries", "Entries the newest signed checkpoint of the audit log holds.", h.Checkpoint)
		gauge("lopnr_audit_checkpoint_root", "The newest checkpoint's tree hash: its first 48 bits as an integer.", prefix48(base64.StdEncoding.DecodeString(h.Root)))
	}
	n, err := io.WriteString(w, b.String())
	return int64(n), err
}

// prefix48 is a hash's first 48 bits as an integer: a sample value is a
// float64, exact to 53 bits, and a label would make a new series with
// every entry. A hash that does not decode is -1.
func prefix48(h []byte, err error) int64 {
	if err != nil || len(h) < 6 {
		return -1
	}
	var v int64
	for _, c := range h[:6] {
		v = v<<8 | int64(c)
	}
	return v
}

func num(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return fmt.Sprintf("%d", int64(v))
	}
	return fmt.Sprintf("%g", v)
}

// Handler serves the metrics.
func (r *Registry) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		r.WriteTo(w)
	})
}
