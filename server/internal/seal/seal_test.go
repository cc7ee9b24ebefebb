package seal

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type rec struct {
	ID         string   `json:"id"`
	Recipients []string `json:"recipients"`
	Note       string   `json:"note,omitempty"`
}

func newSealer(t *testing.T) *Sealer {
	t.Helper()
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func wantAltered(t *testing.T, what string, err error, why string) {
	t.Helper()
	var ae *AlteredError
	if !errors.As(err, &ae) || !errors.Is(err, ErrAltered) || !strings.Contains(err.Error(), why) || !strings.Contains(err.Error(), "altered outside lopnrd") {
		t.Errorf("%s: %v, want an AlteredError saying %q", what, err, why)
	}
}

func TestSealedRecordOpensAndAnEditIsRefused(t *testing.T) {
	s := newSealer(t)
	v := rec{ID: "p1", Recipients: []string{"age1a"}, Note: "<&> \u2028"}
	b, err := s.Marshal("projects", "p1", v)
	if err != nil {
		t.Fatal(err)
	}
	var got rec
	if err := s.Unmarshal("projects", "p1", b, &got); err != nil || got.Note != v.Note || got.Recipients[0] != "age1a" {
		t.Fatalf("Unmarshal = %+v, %v", got, err)
	}
	// Indented or compacted by hand, it still opens.
	var compact bytes.Buffer
	json.Compact(&compact, b)
	if err := s.Unmarshal("projects", "p1", compact.Bytes(), &got); err != nil {
		t.Errorf("the compacted envelope: %v", err)
	}

	edited := bytes.Replace(b, []byte("age1a"), []byte("age1b"), 1)
	wantAltered(t, "an edited record", s.Unmarshal("projects", "p1", edited, &got), "projects/p1.json was altered outside lopnrd (its seal does not verify)")
	wantAltered(t, "a record copied under another id", s.Unmarshal("projects", "p2", b, &got), "sealed as projects/p1")
	wantAltered(t, "a record copied under another kind", s.Unmarshal("deliveries", "p1", b, &got), "sealed as projects/p1")
	plain, _ := json.Marshal(v)
	wantAltered(t, "a record without a seal", s.Unmarshal("projects", "p1", plain, &got), "it has no seal")
	wantAltered(t, "not JSON", s.Unmarshal("projects", "p1", []byte("{"), &got), "it has no seal")
	other := newSealer(t)
	wantAltered(t, "a record sealed with another key", other.Unmarshal("projects", "p1", b, &got), "its seal does not verify")
	if strings.Contains(s.Unmarshal("projects", "p1", edited, &got).Error(), "age1") {
		t.Error("the refusal holds the record's content")
	}
}

func TestAdoptSealsOnlyUnsealedRecords(t *testing.T) {
	s := newSealer(t)
	dir := t.TempDir()
	old := `{"id": "p1", "recipients": ["age1a"], "note": "a < b"}`
	os.WriteFile(filepath.Join(dir, "p1.json"), []byte(old), 0o600)
	sealed, _ := s.Marshal("projects", "p2", rec{ID: "p2"})
	os.WriteFile(filepath.Join(dir, "p2.json"), sealed, 0o600)
	os.WriteFile(filepath.Join(dir, ".tmp-1.json"), []byte("{"), 0o600)
	ids, err := s.Adopt(dir, "projects")
	if err != nil || len(ids) != 1 || ids[0] != "p1" {
		t.Fatalf("Adopt = %v, %v; want [p1]", ids, err)
	}
	var got rec
	b, _ := os.ReadFile(filepath.Join(dir, "p1.json"))
	if err := s.Unmarshal("projects", "p1", b, &got); err != nil || got.Note != "a < b" {
		t.Errorf("the adopted record: %+v, %v", got, err)
	}
	if b2, _ := os.ReadFile(filepath.Join(dir, "p2.json")); !bytes.Equal(b2, sealed) {
		t.Error("Adopt rewrote a sealed record")
	}
	if ids, err := s.Adopt(filepath.Join(dir, "none"), "projects"); err != nil || ids != nil {
		t.Errorf("Adopt of a missing directory = %v, %v", ids, err)
	}
}

func TestNewRefusesAShortKey(t *testing.T) {
	if _, err := New(make([]byte, 16)); err == nil {
		t.Error("New took a 16-byte key")
	}
}
