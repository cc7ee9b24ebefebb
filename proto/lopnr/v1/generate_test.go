package lopnrv1_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/lopnr/lopnr/internal/testenv"
)

// protocVersion matches the line naming protoc's version in a generated
// file's header: a machine with another protoc still produces the same code.
var protocVersion = regexp.MustCompile(`(?m)^// (\t|- )protoc +v.*$`)

// TestGeneratedCodeIsCurrent regenerates the Go code with proto/gen.sh and
// fails when the committed files differ: run `make proto` and commit.
func TestGeneratedCodeIsCurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the pinned generators")
	}
	if _, err := exec.LookPath("protoc"); err != nil {
		if testenv.Required() {
			t.Fatal("protoc not found (apt-get install protobuf-compiler): the committed generated code cannot be checked")
		}
		t.Skip("protoc not found; install protobuf-compiler to check the generated code")
	}
	out := t.TempDir()
	cmd := exec.Command("bash", "../../gen.sh", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("proto/gen.sh: %v\n%s", err, b)
	}
	generated, err := filepath.Glob(filepath.Join(out, "proto", "lopnr", "v1", "*.go"))
	if err != nil || len(generated) == 0 {
		t.Fatalf("proto/gen.sh produced no Go files (%v)", err)
	}
	committed, _ := filepath.Glob("*.pb.go")
	if len(committed) != len(generated) {
		t.Errorf("committed %d generated files, generation makes %d: run `make proto`", len(committed), len(generated))
	}
	for _, g := range generated {
		want, err := os.ReadFile(g)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Base(g))
		if err != nil {
			t.Errorf("%s is not committed: run `make proto`", filepath.Base(g))
			continue
		}
		if !bytes.Equal(protocVersion.ReplaceAll(got, nil), protocVersion.ReplaceAll(want, nil)) {
			t.Errorf("%s is stale: run `make proto` and commit the result", filepath.Base(g))
		}
	}
}
