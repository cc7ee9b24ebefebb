package server

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/lopnr/lopnr/extract"
	"github.com/lopnr/lopnr/internal/synth"
	"github.com/lopnr/lopnr/linkage"
	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
)

// approvedSources turns the synthetic job's approved sources into the
// API's.
func approvedSources(t *testing.T) []*lopnrv1.ApprovedSource {
	t.Helper()
	a, err := extract.ParseApproval([]byte(synth.Approved), "synth.Approved")
	if err != nil {
		t.Fatal(err)
	}
	return RulesProto(a, nil).ApprovedSources
}

// sourceFiles lays out a source root as an attacker with write access to
// their own project's directory (p1) would: a file of theirs, links to a
// file outside the root and to another project's directory, and that
// other project's file.
func sourceFiles(t *testing.T, root string) {
	t.Helper()
	outside := filepath.Join(t.TempDir(), "passwd")
	files := map[string]string{
		"p1/lmed.csv":   "PNR;EDATUM;FDATUM;ATC\n",
		"p2/secret.csv": "PNR;EDATUM;FDATUM;ATC\n",
	}
	for name, data := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(outside, []byte("root:x:0:0::/root:/bin/sh\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		"p1/passwd.csv": outside,
		"p1/other":      filepath.Join(root, "p2"),
		"p1/rel.csv":    "../p2/secret.csv",
		"p1/same.csv":   "lmed.csv",
	} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
}

func lmedSpec(path string) []byte {
	return []byte("project: p1\nsources:\n  - {name: lmed, profile: lmed, path: '" + path + "'}\ncohort: {criteria: [{source: lmed, codes: [C07]}]}\n")
}

// TestExtractorCannotReadOutsideTheProjectsSourceDirectory: a job's source
// paths lead only into its project's own directory under the source root
// (p1/). A link under it to a file elsewhere (an /etc/passwd-like file), a
// link to another project's directory, a path through .., a path into
// another project's directory and an absolute path out of it are each
// refused naming sources[0].path. Before, parseSpec compared the paths as
// text against the whole source root: links were followed anywhere lopnrd
// could read, and every project's files were open to every project.
func TestExtractorCannotReadOutsideTheProjectsSourceDirectory(t *testing.T) {
	f := newFixture(t, true)
	root := f.srv.cfg.SourceRoot
	sourceFiles(t, root)
	for _, path := range []string{
		"passwd.csv",       // a link out of the source root
		"other/secret.csv", // a link to another project's directory
		"rel.csv",          // a relative link to another project's file
		"../p2/secret.csv", // ..
		"p2/secret.csv",    // another project's directory, as the old root had it
		filepath.Join(root, "p2", "secret.csv"),
		filepath.Join(root, "p1", "passwd.csv"),
		"nosuch.csv",
	} {
		_, err := f.srv.parseSpec(lmedSpec(path))
		if err == nil || !strings.Contains(err.Error(), "spec: sources[0].path: ") {
			t.Errorf("%s: err = %v, want it refused naming sources[0].path", path, err)
		}
	}
	for _, path := range []string{"lmed.csv", "same.csv", "./lmed.csv", filepath.Join(root, "p1", "lmed.csv")} {
		if _, err := f.srv.parseSpec(lmedSpec(path)); err != nil {
			t.Errorf("%s: %v", path, err)
		}
	}
	// A project's directory that is a link out of the source root.
	elsewhere := t.TempDir()
	os.WriteFile(filepath.Join(elsewhere, "lmed.csv"), []byte("PNR;EDATUM;FDATUM;ATC\n"), 0o600)
	if err := os.Symlink(elsewhere, filepath.Join(root, "p3")); err != nil {
		t.Fatal(err)
	}
	spec := strings.Replace(string(lmedSpec("lmed.csv")), "project: p1", "project: p3", 1)
	if _, err := f.srv.parseSpec([]byte(spec)); err == nil || !strings.Contains(err.Error(), "spec: sources[0].path: ") {
		t.Errorf("a project directory linked out of the root: err = %v", err)
	}
}

// TestExtractorCannotSwapASourceForALinkAfterSubmission: a source that was
// a file of the project when the job was checked, and is a link out of its
// directory when the job runs, is refused when the job runs (the spec opens
// its sources through the project's directory then too, and Link reads
// only what it opened).
func TestExtractorCannotSwapASourceForALinkAfterSubmission(t *testing.T) {
	f := newFixture(t, true)
	root := f.srv.cfg.SourceRoot
	sourceFiles(t, root)
	spec, err := f.srv.parseSpec(lmedSpec("lmed.csv"))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(root, "p1", "lmed.csv")
	os.Remove(p)
	if err := os.Symlink(filepath.Join(root, "p2", "secret.csv"), p); err != nil {
		t.Fatal(err)
	}
	res, err := linkage.Link(context.Background(), spec, linkage.Options{})
	if err == nil {
		res.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "sources[0].path") {
		t.Fatalf("Link: %v, want the swapped source refused naming sources[0].path", err)
	}
}

// TestSubmitJobChecksTheApprovedSources: lopnrd's SubmitJob refuses, before
// the job is queued, a spec that reads an approved source otherwise than
// its approved profile does (issue 15's attack: header: false with the
// spec's own columns), a source with the profile only partner imports use,
// and a source outside the project's directory; each error names its field.
func TestSubmitJobChecksTheApprovedSources(t *testing.T) {
	f := newFixture(t, false)
	researcher := researcherKey(t)
	admin := lopnrv1.NewProjectServiceClient(f.conn("drift"))
	if _, err := admin.CreateProject(ctx(t), &lopnrv1.CreateProjectRequest{Id: "p1", EpmDnr: "2026-00000-01",
		ApprovedVariables: approvedVariables(t), ApprovedSources: approvedSources(t), Recipients: []string{researcher.Recipient().String()}}); err != nil {
		t.Fatal(err)
	}
	f.approve("p1", "bo")
	spec, _ := f.generate(200)
	jobs := lopnrv1.NewJobServiceClient(f.conn("anna"))
	sourceFiles(t, f.srv.cfg.SourceRoot)
	for _, tc := range []struct{ name, from, to, want string }{
		{"the spec's own columns", "path: par_sluten.csv\n", "path: par_sluten.csv\n    header: false\n    columns: [PNR, HDIA, INDATUM]\n", "sources[3].header: "},
		{"a rename", "path: lmed.csv.zst\n", "path: lmed.csv.zst\n    rename: {ATC: EDATUM}\n", "sources[5].rename: "},
		{"another profile", "profile: dors", "profile: par-sluten", `sources[6].profile: "par-sluten": the approved list reads source dors with profile "dors"`},
		{"the partner-import profile", "profile: lmed\n", "profile: partner-import\n", "spec: sources[5].profile: a profile other than partner-import"},
		{"a link out of the project's directory", "path: dors.tsv", "path: passwd.csv", "spec: sources[6].path: "},
	} {
		bad := strings.Replace(string(spec), tc.from, tc.to, 1)
		if bad == string(spec) {
			t.Fatalf("%s: %q is not in the spec", tc.name, tc.from)
		}
		_, err := jobs.SubmitJob(ctx(t), &lopnrv1.SubmitJobRequest{Spec: []byte(bad)})
		wantCode(t, tc.name, err, codes.InvalidArgument, tc.want)
	}
}
