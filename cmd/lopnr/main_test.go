package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// runLopnr runs lopnr as a user would, returning stdout, stderr and the exit status.
func runLopnr(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := mainWithExit(context.Background(), args, stdio{strings.NewReader(stdin), &out, &errOut})
	return out.String(), errOut.String(), code
}

func TestVersionAndUsage(t *testing.T) {
	out, _, code := runLopnr(t, "", "version")
	if code != 0 || !strings.HasPrefix(out, "lopnr ") {
		t.Fatalf("version: %q, exit %d", out, code)
	}
	_, stderr, code := runLopnr(t, "", "frobnicate")
	if code != 2 || !strings.Contains(stderr, `unknown command "frobnicate"`) || !strings.Contains(stderr, "version") {
		t.Fatalf("unknown command: %q, exit %d", stderr, code)
	}
	if _, _, code := runLopnr(t, "", "version", "extra"); code != 2 {
		t.Fatalf("version extra: exit %d, want 2", code)
	}
}
