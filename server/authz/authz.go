// Package authz decides who may do what in lopnr. Identities come from
// client certificates (mutual TLS); roles are given per project in a policy
// file; every RPC names one Action, and Authorize is the one place that
// says yes or no.
//
// The policy file (YAML):
//
//	identities:
//	  "CN=anna.uttag,O=Region Exempel":
//	    roles: {hjartinfarkt-2026: [extractor]}
//	  "CN=bo.nyckel,O=Region Exempel":
//	    roles: {hjartinfarkt-2026: [approver, keyholder]}
//	  "CN=forskare,O=Universitetet":
//	    roles: {hjartinfarkt-2026: [researcher]}
//	  "CN=revisor,O=Region Exempel":
//	    global: [auditor]
//	  "CN=drift,O=Region Exempel":
//	    global: [admin]
//
// Global roles hold for every project. An action on no project (the sweep,
// verifying the audit log, reading all of it) needs a global role: a role in
// one project gives nothing outside it. Listings (the projects, the jobs)
// are the exception: a role in some project lets an identity list, and the
// service shows only the projects it may see.
//
// A partner's identity holds no other role in the projects it is a partner
// of (Load refuses the policy): each would show it who is in the cohort.
// Nor is one identity both extractor and researcher of a project: it
// would write the source files and read what is delivered of them.
//
// The four-eyes rules — a project's rules and partners change only when a
// second person approves, the person who submitted a job cannot release its
// delivery, a re-identification and a key file need a second person — are
// checked by the services, which know who did what; this package only knows
// roles.
package authz

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Role is what an identity may be in a project.
type Role string

// The roles of DESIGN.md.
const (
	Extractor  Role = "extractor"  // registers projects, proposes their rules, writes and submits jobs
	Approver   Role = "approver"   // approves rules and partners, releases deliveries, extends retention, sets holds
	Keyholder  Role = "keyholder"  // re-identifies a LopNr with a reason, approves key files
	Researcher Role = "researcher" // lists deliveries, gets pre-signed links
	Partner    Role = "partner"    // key files and blind linkage
	Auditor    Role = "auditor"    // reads and verifies the audit log
	Admin      Role = "admin"      // creates projects, runs the sweeper
)

var roles = []Role{Extractor, Approver, Keyholder, Researcher, Partner, Auditor, Admin}

// Action is one thing an RPC does.
type Action string

// The actions, with the roles that may take them.
var allowed = map[Action][]Role{
	"project.create":         {Admin, Extractor},
	"project.get":            {Extractor, Approver, Keyholder, Researcher, Auditor, Admin},
	"project.list":           {Extractor, Approver, Keyholder, Researcher, Partner, Auditor, Admin},
	"project.extend":         {Approver},
	"project.hold":           {Approver},
	"project.destroy":        {Approver, Admin},
	"project.propose":        {Extractor, Approver, Admin},
	"project.approve":        {Approver},
	"project.changes":        {Extractor, Approver, Auditor, Admin},
	"job.submit":             {Extractor},
	"job.get":                {Extractor, Approver, Auditor, Admin},
	"job.list":               {Extractor, Approver, Auditor, Admin},
	"job.cancel":             {Extractor, Admin},
	"delivery.list":          {Extractor, Approver, Researcher, Auditor},
	"delivery.release":       {Approver},
	"delivery.presign":       {Researcher, Extractor},
	"key.reidentify":         {Keyholder},
	"key.approve-reidentify": {Approver, Keyholder},
	"key.sweep":              {Admin},
	"key.keyfile":            {Partner},
	"key.keyfile-request":    {Partner},
	"key.keyfile-approve":    {Approver, Keyholder},
	"key.keyfile-grants":     {Partner, Approver, Keyholder, Auditor, Admin},
	"partner.register":       {Approver, Admin},
	"partner.list":           {Approver, Admin, Auditor, Partner},
	"partner.keys":           {Partner},
	"partner.evaluate":       {Partner},
	"partner.import":         {Partner},
	"audit.list":             {Auditor, Admin},
	"audit.verify":           {Auditor, Admin},
	"system.info":            roles,
}

// listings are the actions that, on no project, list what the caller may
// see project by project: a role in some project is enough, and the
// service shows only those projects.
var listings = map[Action]bool{"project.list": true, "job.list": true}

// Actions lists every action, sorted.
func Actions() []Action {
	out := make([]Action, 0, len(allowed))
	for a := range allowed {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Policy maps identities to their roles.
type Policy struct {
	Identities map[string]IdentityRoles `yaml:"identities"`
}

// IdentityRoles are one identity's roles.
type IdentityRoles struct {
	Roles  map[string][]Role `yaml:"roles"`  // project -> roles
	Global []Role            `yaml:"global"` // every project
}

// ErrDenied is wrapped by Authorize's refusals.
var ErrDenied = errors.New("permission denied")

// DeniedError says who was refused what. It holds no record values.
type DeniedError struct {
	Identity string
	Action   Action
	Project  string
	// Global is set for an action on no project, which needs a global
	// role.
	Global bool
}

func (e *DeniedError) Error() string {
	if e.Global {
		return fmt.Sprintf("%s may not %s: an action on no project needs a global role", e.Identity, e.Action)
	}
	if e.Project == "" {
		return fmt.Sprintf("%s may not %s", e.Identity, e.Action)
	}
	return fmt.Sprintf("%s may not %s in project %s", e.Identity, e.Action, e.Project)
}

func (e *DeniedError) Unwrap() error { return ErrDenied }

// Load reads a policy file, refusing unknown fields and roles.
func Load(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var p Policy
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("policy %s: %v", path, err)
	}
	for id, r := range p.Identities {
		if strings.TrimSpace(id) == "" {
			return nil, fmt.Errorf("policy %s: an empty identity", path)
		}
		all := slices.Clone(r.Global)
		for _, rs := range r.Roles {
			all = append(all, rs...)
		}
		for _, role := range all {
			if !slices.Contains(roles, role) {
				return nil, fmt.Errorf("policy %s: identities[%q]: unknown role %q, want one of %v", path, id, role, roles)
			}
		}
		if err := partnerAlone(id, r); err != nil {
			return nil, fmt.Errorf("policy %s: %w", path, err)
		}
		if err := extractorNotResearcher(id, r); err != nil {
			return nil, fmt.Errorf("policy %s: %w", path, err)
		}
	}
	return &p, nil
}

// partnerAlone refuses an identity that is a partner in a project (or
// globally) and holds another role there too. A partner authority must
// not learn who is in the cohort, and every other role of the project
// shows it something of its uploads that tells it: the import's matched
// counts (a job's report, for the roles that read jobs; the audit log),
// or the supplementary delivery itself, its rows and their LopNr (for a
// researcher). A partner in one project may hold roles in another.
func partnerAlone(id string, r IdentityRoles) error {
	others := func(rs []Role) []Role {
		return slices.DeleteFunc(slices.Clone(rs), func(x Role) bool { return x == Partner })
	}
	for project, rs := range r.Roles {
		if !slices.Contains(rs, Partner) && !slices.Contains(r.Global, Partner) {
			continue
		}
		if o := append(others(rs), others(r.Global)...); len(o) > 0 {
			return fmt.Errorf("identities[%q]: a partner of project %s with the role %s there too: a partner authority's identity holds no other role in its projects (it would learn who is in the cohort from its uploads); give the other role to another certificate", id, project, o[0])
		}
	}
	if slices.Contains(r.Global, Partner) {
		if o := others(r.Global); len(o) > 0 {
			return fmt.Errorf("identities[%q]: a partner of every project with the global role %s too: a partner authority's identity holds no other role in its projects (it would learn who is in the cohort from its uploads); give the other role to another certificate", id, o[0])
		}
	}
	return nil
}

// extractorNotResearcher refuses an identity that is extractor and
// researcher of the same project (by its project roles, its global ones,
// or one of each). An extractor chooses the files a job reads and can
// write numbers into a column the approved list lets through, encoded so
// that no guard knows them; the approver who releases the delivery does
// not see its content. As a researcher of the project, the same person
// would then read them: the two steps need two people.
func extractorNotResearcher(id string, r IdentityRoles) error {
	globalX, globalR := slices.Contains(r.Global, Extractor), slices.Contains(r.Global, Researcher)
	if globalX && globalR {
		return fmt.Errorf("identities[%q]: the global roles extractor and researcher: one identity may not write a project's source files and read its deliveries; give the roles to two certificates", id)
	}
	projects := make([]string, 0, len(r.Roles))
	for project := range r.Roles {
		projects = append(projects, project)
	}
	sort.Strings(projects)
	for _, project := range projects {
		rs := r.Roles[project]
		if !(globalX || slices.Contains(rs, Extractor)) || !(globalR || slices.Contains(rs, Researcher)) {
			continue
		}
		how := ""
		switch {
		case globalX && !slices.Contains(rs, Extractor):
			how = " (extractor by a global role)"
		case globalR && !slices.Contains(rs, Researcher):
			how = " (researcher by a global role)"
		}
		return fmt.Errorf("identities[%q]: extractor and researcher of project %s%s: one identity may not write a project's source files and read its deliveries; give the roles to two certificates", id, project, how)
	}
	return nil
}

// Roles returns an identity's roles in a project (with its global roles).
func (p *Policy) Roles(identity, project string) []Role {
	r, ok := p.Identities[identity]
	if !ok {
		return nil
	}
	out := slices.Clone(r.Global)
	if project != "" {
		out = append(out, r.Roles[project]...)
	}
	return out
}

// Authorize says whether identity may take action in project. An action
// on no project ("") needs a global role, but for a listing, which a role
// in any project allows. An unknown action is always refused.
func (p *Policy) Authorize(identity string, action Action, project string) error {
	need, ok := allowed[action]
	if ok {
		have := p.Roles(identity, project)
		if project == "" && listings[action] {
			if r, found := p.Identities[identity]; found {
				for _, rs := range r.Roles {
					have = append(have, rs...)
				}
			}
		}
		for _, r := range have {
			if slices.Contains(need, r) {
				return nil
			}
		}
	}
	return &DeniedError{Identity: identity, Action: action, Project: project, Global: project == "" && !listings[action]}
}

// Has reports whether identity has any of roles in project (globally, or
// in the project).
func (p *Policy) Has(identity, project string, roles ...Role) bool {
	return slices.ContainsFunc(p.Roles(identity, project), func(r Role) bool { return slices.Contains(roles, r) })
}
