package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/lopnr/lopnr/keystore"
	"github.com/lopnr/lopnr/keystore/local"
	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
	"github.com/lopnr/lopnr/server/audit"
)

func TestAuditVerify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := audit.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"project.create", "job.submit", "delivery.release"} {
		l.Append(audit.Entry{Identity: "CN=x", Action: a, Outcome: "ok"})
	}
	head := l.Head()
	l.Close()
	pin := fmt.Sprintf("%d:%s", head.Seq, head.Hash)
	if out, stderr, code := runLopnr(t, "", "audit", "verify", path, "--head", pin); code != 0 || !strings.Contains(out, "3 entries, chain intact") {
		t.Fatalf("verify: %d %s %s", code, out, stderr)
	}
	b, _ := os.ReadFile(path)
	lines := strings.SplitAfter(string(b), "\n")
	os.WriteFile(path, []byte(strings.Join(lines[:2], "")), 0o600) // truncate the last entry
	if _, stderr, code := runLopnr(t, "", "audit", "verify", path, "--head", pin); code != 1 || !strings.Contains(stderr, "truncated") {
		t.Fatalf("truncated log: %d %s", code, stderr)
	}
	os.WriteFile(path, []byte(lines[0]+lines[2]), 0o600) // remove the second
	if _, stderr, code := runLopnr(t, "", "audit", "verify", path); code != 1 || !strings.Contains(stderr, "line 2 (entry 2): removed") {
		t.Fatalf("removed entry: %d %s", code, stderr)
	}
}

// rechain rewrites a log's lines with change applied to entry i and every
// hash after it recomputed, as someone with the file and no key can.
func rechain(t *testing.T, lines []string, i int, change func(*audit.Entry)) []string {
	t.Helper()
	out := make([]string, len(lines))
	prev := ""
	for k, l := range lines {
		var e audit.Entry
		if err := json.Unmarshal([]byte(strings.TrimSuffix(l, "\n")), &e); err != nil {
			t.Fatal(err)
		}
		if k == i {
			change(&e)
		}
		e.Prev, e.Hash = prev, ""
		b, _ := json.Marshal(e)
		sum := sha256.Sum256(b)
		e.Hash = hex.EncodeToString(sum[:])
		prev = e.Hash
		b, _ = json.Marshal(e)
		out[k] = string(b) + "\n"
	}
	return out
}

// TestAuditorVerifiesACopyOfTheLogOffline replays the two attacks
// on the audit log — the last entry dropped, an entry rewritten with the
// chain recomputed — against a copy of the log, the checkpoint the auditor
// kept and lopnrd's verifier key: both verify on the chain alone and fail
// against the checkpoint, and a checkpoint signed by another key is refused.
func TestAuditorVerifiesACopyOfTheLogOffline(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	l, err := audit.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	store, err := local.Open(filepath.Join(dir, "keystore"))
	if err != nil {
		t.Fatal(err)
	}
	ks := keystore.New(store, keystore.Options{})
	ctx := context.Background()
	skey, err := ks.ServiceKey(ctx, audit.SignerName, func() ([]byte, error) { return audit.NewSignerKey("lopnrd.test/audit") })
	if err != nil {
		t.Fatal(err)
	}
	if err := l.EnableCheckpoints(ctx, skey, ks); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"project.create", "job.submit", "delivery.release", "key.reidentify"} {
		l.Append(audit.Entry{Identity: "CN=x", Action: a, Outcome: "denied"})
	}
	if _, err := l.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	vkey := l.VerifierKey()
	l.Close()
	keyFile, kept := filepath.Join(dir, "lopnrd.vkey"), filepath.Join(dir, "kept.checkpoint")
	os.WriteFile(keyFile, []byte(vkey+"\n"), 0o644)
	b, _ := os.ReadFile(path + ".checkpoint")
	os.WriteFile(kept, b, 0o644)
	orig, _ := os.ReadFile(path)
	lines := strings.SplitAfter(string(orig), "\n")
	lines = lines[:len(lines)-1]

	if out, stderr, code := runLopnr(t, "", "audit", "verify", path, "--verifier", vkey); code != 0 ||
		!strings.Contains(out, "4 entries, chain intact, extends the checkpoint of 4 entries signed by lopnrd.test/audit") {
		t.Fatalf("verify against FILE.checkpoint: exit %d: %s%s", code, out, stderr)
	}
	for _, tc := range []struct {
		name string
		log  []string
		want string
	}{
		{"the last entry dropped", lines[:3], "against the signed checkpoint of 4 entries: cut: the log ends at entry 3; entries 4 to 4"},
		{"an entry rewritten and the chain recomputed", rechain(t, lines, 2, func(e *audit.Entry) { e.Outcome = "ok" }), "rewritten: entries 1 to 4 do not match"},
	} {
		os.WriteFile(path, []byte(strings.Join(tc.log, "")), 0o600)
		if out, stderr, code := runLopnr(t, "", "audit", "verify", path); code != 0 {
			t.Fatalf("%s: the chain alone: exit %d: %s%s (it cannot see this)", tc.name, code, out, stderr)
		}
		if _, stderr, code := runLopnr(t, "", "audit", "verify", path, "--checkpoint", kept, "--verifier", keyFile); code != 1 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%s: exit %d: %s; want %q", tc.name, code, stderr, tc.want)
		}
	}
	os.WriteFile(path, orig, 0o600)
	_, other, _ := note.GenerateKey(nil, "lopnrd.test/audit")
	if _, stderr, code := runLopnr(t, "", "audit", "verify", path, "--checkpoint", kept, "--verifier", other); code != 1 || !strings.Contains(stderr, "not a checkpoint signed by the audit log's key") {
		t.Errorf("a checkpoint checked with another key: exit %d: %s", code, stderr)
	}
	if _, stderr, code := runLopnr(t, "", "audit", "verify", path, "--checkpoint", kept); code != 2 || !strings.Contains(stderr, "--checkpoint needs --verifier") {
		t.Errorf("--checkpoint without --verifier: exit %d: %s", code, stderr)
	}
}

// TestAuditorChecksTheServersCheckpointWithTheirOwnKey: through lopnrd,
// the checkpoint it answers with is checked against the verifier key the
// auditor holds, not the one the server names, and can be saved for an
// offline check later.
func TestAuditorChecksTheServersCheckpointWithTheirOwnKey(t *testing.T) {
	clientEnv(t)
	f := startFake(t)
	skey, vkey, _ := note.GenerateKey(nil, "lopnrd.test/audit")
	signer, _ := note.NewSigner(skey)
	msg, _ := note.Sign(&note.Note{Text: "lopnrd.test/audit\n12\nmK3bnQ2aMp0Sg9jp3k+0kJFPVcdRmvaQkYw+0tzb6Hk=\n"}, signer)
	f.set(func(f *fakeServer) {
		f.verify = &lopnrv1.VerifyAuditResponse{Ok: true, HeadSeq: 12, HeadHash: "abc123", Checkpoint: string(msg), CheckpointSize: 12, VerifierKey: vkey}
	})
	saved := filepath.Join(t.TempDir(), "cp")
	out, stderr, code := runLopnr(t, "", f.dev("audit", "verify", "--verifier", vkey, "--save-checkpoint", saved)...)
	if code != 0 || !strings.Contains(out, "12 entries, chain intact, extends the checkpoint of 12 entries signed by lopnrd.test/audit") {
		t.Fatalf("verify with the server's key: exit %d: %s%s", code, out, stderr)
	}
	if b, err := os.ReadFile(saved); err != nil || string(b) != string(msg) {
		t.Fatalf("--save-checkpoint wrote %q, %v", b, err)
	}
	// Without --verifier, the answer says the signature went unchecked.
	if _, stderr, code := runLopnr(t, "", f.dev("audit", "verify")...); code != 0 || !strings.Contains(stderr, "not checked: give --verifier "+vkey) {
		t.Fatalf("verify without a key: exit %d: %s", code, stderr)
	}
	// A server that signs with a key the auditor does not hold is caught.
	_, other, _ := note.GenerateKey(nil, "lopnrd.test/audit")
	if _, stderr, code := runLopnr(t, "", f.dev("audit", "verify", "--verifier", other)...); code != 1 || !strings.Contains(stderr, "not a checkpoint signed by the audit log's key") {
		t.Fatalf("verify with another key: exit %d: %s", code, stderr)
	}
}
