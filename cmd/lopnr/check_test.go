package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/lopnr/lopnr/internal/synth"
)

// TestCheckReproducesTruth generates messy data with known counts for
// several seeds and sizes and checks that `lopnr check` reports exactly
// those counts.
func TestCheckReproducesTruth(t *testing.T) {
	sizes := []int{400, 3000}
	if testing.Short() {
		sizes = sizes[:1]
	}
	for _, persons := range sizes {
		for _, seed := range []uint64{1, 7, 42} {
			t.Run(fmt.Sprintf("persons=%d/seed=%d", persons, seed), func(t *testing.T) {
				dir := t.TempDir()
				if _, err := synth.Generate(dir, synth.Options{Persons: persons, Seed: seed}); err != nil {
					t.Fatal(err)
				}
				report := filepath.Join(dir, "report.json")
				out, stderr, code := runLopnr(t, "", "check", "-q", "--report", report, filepath.Join(dir, "job.yaml"))
				if code != 0 {
					t.Fatalf("exit %d: %s", code, stderr)
				}
				if !strings.Contains(out, "Cohort: ") {
					t.Errorf("no summary on stdout: %q", out)
				}
				var got, want map[string]any
				readJSON(t, report, &got)
				readJSON(t, filepath.Join(dir, "truth.json"), &want)
				compareTruth(t, got, want)
			})
		}
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// compareTruth compares the report's cohort, sources and overlap with the
// truth's, field by field, keeping only the fields the truth has.
func compareTruth(t *testing.T, got, want map[string]any) {
	t.Helper()
	if !reflect.DeepEqual(got["cohort"], want["cohort"]) {
		t.Errorf("cohort: got %v, want %v", got["cohort"], want["cohort"])
	}
	if !reflect.DeepEqual(got["overlap"], want["overlap"]) {
		t.Errorf("overlap:\n got %v\nwant %v", got["overlap"], want["overlap"])
	}
	gs, _ := got["sources"].([]any)
	ws, _ := want["sources"].([]any)
	if len(gs) != len(ws) {
		t.Fatalf("%d sources reported, truth has %d", len(gs), len(ws))
	}
	for i := range ws {
		w := ws[i].(map[string]any)
		g := gs[i].(map[string]any)
		for k, wv := range w {
			if !reflect.DeepEqual(g[k], wv) {
				t.Errorf("sources[%d] (%v).%s: got %v, want %v", i, w["name"], k, g[k], wv)
			}
		}
	}
}
