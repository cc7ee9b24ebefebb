package audit

import (
	"context"
	"os"
	"strings"
	"testing"
)

// TestOperatorCannotDivertTheLogByReplacingTheFile: an operator who holds
// the data directory moves the running server's log aside and puts a copy
// in its place, cut before the last entry. The server went on writing to
// the file it had open, the one moved aside, which the operator keeps or
// removes: every later entry, and every intent of a sensitive act, was
// written (so the act was taken) where no verification looks. Now the
// Log sees that the file at its path is not the one it opened and writes
// nothing: Append and Intend fail, so the act is refused, naming the
// file.
func TestOperatorCannotDivertTheLogByReplacingTheFile(t *testing.T) {
	path := newLog(t, 3)
	l, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	if err := l.EnableCheckpoints(ctx, signerKey(t, "lopnrd.test/audit"), &memKeeper{}); err != nil {
		t.Fatal(err)
	}
	kept := lines(t, path)
	if err := os.Rename(path, path+".aside"); err != nil {
		t.Fatal(err)
	}
	write(t, path, kept[:2])
	if _, err := l.Intend(ctx, Entry{Identity: "CN=bo", Action: "delivery.release", Project: "p1", Job: "d1"}); err == nil ||
		!strings.Contains(err.Error(), "is not the file lopnrd opened") {
		t.Errorf("Intend with the log replaced = %v, want it refused naming the file", err)
	}
	if _, err := l.Append(Entry{Identity: "CN=bo", Action: "project.get", Project: "p1", Outcome: "denied"}); err == nil {
		t.Error("Append with the log replaced succeeded")
	}
	if got := lines(t, path+".aside"); len(got) != 3 {
		t.Errorf("the file moved aside has %d entries, want the 3 it had", len(got))
	}
	// Moved away and not replaced: the same.
	os.Remove(path)
	if _, err := l.Append(Entry{Identity: "CN=bo", Action: "project.get", Project: "p1", Outcome: "denied"}); err == nil {
		t.Error("Append with the log removed succeeded")
	}
}
