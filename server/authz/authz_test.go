package authz

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const policy = `identities:
  "CN=anna":
    roles: {p1: [extractor]}
  "CN=bo":
    roles: {p1: [approver, keyholder], p2: [extractor]}
  "CN=forskare":
    roles: {p1: [researcher]}
  "CN=revisor":
    global: [auditor]
  "CN=drift":
    global: [admin]
`

func load(t *testing.T, text string) (*Policy, error) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	os.WriteFile(path, []byte(text), 0o600)
	return Load(path)
}

func TestAuthorize(t *testing.T) {
	p, err := load(t, policy)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id      string
		action  Action
		project string
		ok      bool
	}{
		{"CN=anna", "job.submit", "p1", true},
		{"CN=anna", "job.submit", "p2", false}, // not her project
		{"CN=anna", "delivery.release", "p1", false},
		{"CN=bo", "delivery.release", "p1", true},
		{"CN=bo", "key.reidentify", "p1", true},
		{"CN=bo", "key.reidentify", "p2", false},
		{"CN=forskare", "delivery.presign", "p1", true},
		{"CN=forskare", "job.submit", "p1", false},
		{"CN=forskare", "key.reidentify", "p1", false},
		{"CN=revisor", "audit.verify", "", true},
		{"CN=revisor", "job.submit", "p1", false},
		{"CN=drift", "key.sweep", "", true},
		{"CN=drift", "key.reidentify", "p1", false}, // admin is no key holder
		{"CN=stranger", "system.info", "", false},
		{"CN=anna", "no.such.action", "p1", false},
		{"CN=anna", "project.list", "", true}, // a listing: she sees p1
		{"CN=anna", "job.list", "", true},
		{"CN=forskare", "job.list", "", false}, // no role that lists jobs anywhere
		{"CN=bo", "project.approve", "p1", true},
		{"CN=anna", "project.approve", "p1", false},
		{"CN=anna", "project.propose", "p1", true},
		{"CN=bo", "key.keyfile-approve", "p1", true},
	} {
		err := p.Authorize(tc.id, tc.action, tc.project)
		if (err == nil) != tc.ok {
			t.Errorf("%s %s %s: %v, want allowed=%t", tc.id, tc.action, tc.project, err, tc.ok)
		}
		if err != nil && (!errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), string(tc.action))) {
			t.Errorf("error %v does not wrap ErrDenied and name the action", err)
		}
	}
}

// TestProjectRoleGivesNothingWithoutAProject replays finding 10 of issue
// 15: a role in one project counted for the calls on no project, so that
// an admin of one project could sweep every project and an auditor of one
// could verify (and read) the whole audit log.
func TestProjectRoleGivesNothingWithoutAProject(t *testing.T) {
	p, err := load(t, policy+`  "CN=projektadmin":
    roles: {p1: [admin, auditor]}
`)
	if err != nil {
		t.Fatal(err)
	}
	for _, action := range []Action{"key.sweep", "audit.verify", "audit.list"} {
		err := p.Authorize("CN=projektadmin", action, "")
		if err == nil || !strings.Contains(err.Error(), "needs a global role") {
			t.Errorf("an admin and auditor of p1 taking %s on no project: %v; want refused, naming the global role", action, err)
		}
		if err := p.Authorize("CN=drift", action, ""); action != "audit.list" && action != "audit.verify" && err != nil {
			t.Errorf("a global admin taking %s: %v", action, err)
		}
	}
	if err := p.Authorize("CN=projektadmin", "audit.list", "p1"); err != nil {
		t.Errorf("a project auditor listing its own project's entries: %v", err)
	}
	if err := p.Authorize("CN=revisor", "audit.verify", ""); err != nil {
		t.Errorf("a global auditor verifying: %v", err)
	}
}

func TestLoadRefusesUnknownRolesAndFields(t *testing.T) {
	if _, err := load(t, strings.Replace(policy, "[extractor]", "[extracter]", 1)); err == nil || !strings.Contains(err.Error(), `unknown role "extracter"`) {
		t.Errorf("unknown role: %v", err)
	}
	if _, err := load(t, policy+"  \"CN=x\":\n    rolez: {}\n"); err == nil || !strings.Contains(err.Error(), "rolez") {
		t.Errorf("unknown field: %v", err)
	}
}

func TestEveryActionHasARole(t *testing.T) {
	for _, a := range Actions() {
		if len(allowed[a]) == 0 {
			t.Errorf("%s: no role may take it", a)
		}
	}
}
