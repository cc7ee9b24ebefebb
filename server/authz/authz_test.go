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
		{"CN=anna", "project.list", "", true},
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
