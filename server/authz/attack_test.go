package authz

import (
	"strings"
	"testing"
)

// TestPartnerCannotHoldAnotherRoleInItsProject: one identity that is a
// partner and holds any other role in the same project learns who is in
// the cohort from its own uploads (issue 15's finding 5, through a second
// role): as an extractor, approver, auditor or admin from the matched
// counts in its import's job report or the audit log, as a researcher
// from the supplementary delivery's rows. Load refuses such a policy,
// naming the identity; a partner in one project may hold roles in another.
func TestPartnerCannotHoldAnotherRoleInItsProject(t *testing.T) {
	for _, tc := range []struct {
		name, roles, want string
	}{
		{"extractor", "{roles: {p1: [partner, extractor]}}", "a partner of project p1 with the role extractor there too"},
		{"researcher", "{roles: {p1: [researcher, partner]}}", "a partner of project p1 with the role researcher there too"},
		{"approver", "{roles: {p1: [partner, approver]}}", "with the role approver there too"},
		{"a global auditor", "{roles: {p1: [partner]}, global: [auditor]}", "a partner of project p1 with the role auditor there too"},
		{"a global partner and admin", "{global: [partner, admin]}", "a partner of every project with the global role admin too"},
		{"a global partner, extractor of one", "{roles: {p2: [extractor]}, global: [partner]}", "a partner of project p2 with the role extractor there too"},
	} {
		_, err := load(t, "identities:\n  \"CN=scb\": "+tc.roles+"\n")
		if err == nil || !strings.Contains(err.Error(), `identities["CN=scb"]: `+tc.want) && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want the policy refused with %q", tc.name, err, tc.want)
		}
	}
	for _, roles := range []string{
		"{roles: {p1: [partner], p2: [approver, keyholder]}}",
		"{roles: {p1: [partner], p2: [extractor], p3: [partner]}}",
		"{roles: {p1: [partner]}}",
	} {
		if _, err := load(t, "identities:\n  \"CN=scb\": "+roles+"\n"); err != nil {
			t.Errorf("%s: %v", roles, err)
		}
	}
}

// TestExtractorCannotAlsoBeAResearcherOfTheProject: one identity that is
// extractor and researcher of a project writes a source file with numbers
// encoded under an approved free-text name, submits the job, and after an
// approver's release (who does not see the content) reads the delivery
// (issue 15's review, "what got through", item 5). Load refuses such a
// policy, naming the identity and the project, by project roles, global
// ones or one of each; an extractor of one project may be a researcher of
// another.
func TestExtractorCannotAlsoBeAResearcherOfTheProject(t *testing.T) {
	for _, tc := range []struct {
		name, roles, want string
	}{
		{"project roles", "{roles: {p1: [extractor, approver, researcher]}}", "extractor and researcher of project p1: "},
		{"a global extractor", "{roles: {p1: [researcher]}, global: [extractor]}", "extractor and researcher of project p1 (extractor by a global role)"},
		{"a global researcher", "{roles: {p2: [approver], p1: [extractor]}, global: [researcher]}", "extractor and researcher of project p1 (researcher by a global role)"},
		{"both global", "{global: [researcher, extractor]}", "the global roles extractor and researcher"},
	} {
		_, err := load(t, "identities:\n  \"CN=anna\": "+tc.roles+"\n")
		if err == nil || !strings.Contains(err.Error(), `identities["CN=anna"]: `+tc.want) {
			t.Errorf("%s: err = %v, want the policy refused with %q", tc.name, err, tc.want)
		}
	}
	for _, roles := range []string{
		"{roles: {p1: [extractor, approver], p2: [researcher]}}",
		"{roles: {p1: [researcher, approver, keyholder]}, global: [auditor]}",
		"{global: [extractor, admin]}",
	} {
		if _, err := load(t, "identities:\n  \"CN=anna\": "+roles+"\n"); err != nil {
			t.Errorf("%s: %v", roles, err)
		}
	}
}
