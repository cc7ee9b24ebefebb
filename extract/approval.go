package extract

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/lopnr/lopnr/internal/yamlfield"
	"github.com/lopnr/lopnr/linkage"
)

// ApprovalError is an approved variable list's errors, all of them, with
// the file; each names a field path (or, for a file that is not YAML, a
// line).
type ApprovalError struct {
	File   string
	Errors []error
}

func (e *ApprovalError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: invalid approved variable list", e.File)
	for _, err := range e.Errors {
		b.WriteString("\n  ")
		b.WriteString(err.Error())
	}
	return b.String()
}

func (e *ApprovalError) Unwrap() []error { return e.Errors }

// ParseApproval parses and checks an approved variable list in YAML
// (docs/jobspec.md): every source is tied to a profile, every variable
// names an approved source and a column (or range), and every transform is
// one the job spec knows. name is the file, for errors.
func ParseApproval(b []byte, name string) (Approval, error) {
	var a Approval
	if errs := yamlfield.Decode(b, &a); len(errs) > 0 {
		return Approval{}, &ApprovalError{File: name, Errors: errs}
	}
	if errs := a.check(); len(errs) > 0 {
		return Approval{}, &ApprovalError{File: name, Errors: errs}
	}
	return a, nil
}

// Check checks an approved list that did not come from ParseApproval (a
// server's project rules): its error is an [*ApprovalError] whose errors
// each name a field path, as ParseApproval's do.
func (a Approval) Check() error {
	if errs := a.check(); len(errs) > 0 {
		return &ApprovalError{File: "approved list", Errors: errs}
	}
	return nil
}

// check returns the list's errors, each a *linkage.FieldError.
func (a Approval) check() []error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, &linkage.FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	builtin := linkage.Builtin()
	sources := map[string]bool{}
	for i, s := range a.Sources {
		path := fmt.Sprintf("sources[%d]", i)
		switch {
		case !linkage.ValidSourceName(s.Name):
			bad(path+".name", "%q: want a lower-case source name of letters, digits and _", s.Name)
		case sources[s.Name]:
			bad(path+".name", "%q is approved twice: one profile a source", s.Name)
		}
		sources[s.Name] = true
		_, isBuiltin := builtin[s.Profile]
		switch {
		case s.Profile == "":
			bad(path+".profile", "missing: the profile the source's file is read with")
		case s.ProfileYAML == "" && !isBuiltin:
			bad(path+".profile", "%q is not a built-in profile (%s): approve a custom one as it is, in profile_yaml", s.Profile, strings.Join(slices.Sorted(maps.Keys(builtin)), ", "))
		case s.ProfileYAML != "" && isBuiltin:
			bad(path+".profile_yaml", "a custom profile named %q, which is a built-in profile's name", s.Profile)
		case s.ProfileYAML != "":
			p, err := linkage.ParseProfile([]byte(s.ProfileYAML), path+".profile_yaml")
			var se *linkage.SpecError
			switch {
			case errors.As(err, &se):
				for _, e := range se.Errors {
					var fe *linkage.FieldError
					if errors.As(e, &fe) {
						sub := path + ".profile_yaml"
						if fe.Path != "" {
							sub += "." + fe.Path
						}
						msg := fe.Msg
						if fe.Line > 0 {
							msg = fmt.Sprintf("line %d of the profile: %s", fe.Line, msg)
						}
						bad(sub, "%s", msg)
					} else {
						bad(path+".profile_yaml", "%v", e)
					}
				}
			case err != nil:
				bad(path+".profile_yaml", "%v", err)
			case p.Name != s.Profile:
				bad(path+".profile_yaml", "the profile is named %q, the source's profile %q", p.Name, s.Profile)
			}
		}
	}
	if len(a.Variables) == 0 {
		bad("variables", "no variables: list what the ethics approval allows")
	}
	for i, v := range a.Variables {
		path := fmt.Sprintf("variables[%d]", i)
		if !linkage.ValidSourceName(v.Source) {
			bad(path+".source", "%q: want a lower-case source name of letters, digits and _", v.Source)
		} else if !sources[v.Source] {
			bad(path+".source", "%q is not among the approved sources: add it to sources, with the profile its file is read with", v.Source)
		}
		if strings.TrimSpace(v.Column) == "" {
			bad(path+".column", "missing")
		} else if _, err := linkage.ExpandColumns(v.Column); err != nil {
			bad(path+".column", "%v", err)
		}
		for j, t := range v.Transforms {
			if _, err := parseTransform(t); err != nil || t == "" {
				bad(fmt.Sprintf("%s.transforms[%d]", path, j), "%q: want keep, drop, truncate(N), blank(CODE,…), select(CODE,…), year, year-month, age-at-index or sex", t)
			}
		}
	}
	return errs
}
