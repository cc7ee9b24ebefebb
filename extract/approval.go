package extract

import (
	"fmt"
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
// (docs/jobspec.md): every variable names a source and a column (or range),
// and every transform is one the job spec knows. name is the file, for
// errors.
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

// check returns the list's errors, each a *linkage.FieldError.
func (a Approval) check() []error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, &linkage.FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	if len(a.Variables) == 0 {
		bad("variables", "no variables: list what the ethics approval allows")
	}
	for i, v := range a.Variables {
		path := fmt.Sprintf("variables[%d]", i)
		if !linkage.ValidSourceName(v.Source) {
			bad(path+".source", "%q: want a lower-case source name of letters, digits and _", v.Source)
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
