package extract

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/lopnr/lopnr/linkage"
)

// Approval is a project's approved variable list, from its ethics
// approval: what may be delivered, and how coarsely, read from which
// sources with which profiles.
type Approval struct {
	// Sources tie each source name the variables use to the profile its
	// file is read with: the delivered columns are the columns that
	// profile names, of the file that the job spec's path leads to.
	Sources   []ApprovedSource   `yaml:"sources" json:"sources"`
	Variables []ApprovedVariable `yaml:"variables" json:"variables"`
	// AllowPersonnummer lets a delivery carry identity numbers: the rare
	// approved case. Without it the leak guard fails any output that holds
	// one.
	AllowPersonnummer bool `yaml:"allow_personnummer" json:"allow_personnummer"`
}

// ApprovedSource ties a source name to the profile its file is read
// with: a built-in profile by name, or a custom profile approved as it is
// (ProfileYAML, as docs/sources.md writes a profile). A job spec that
// reads the source must use that profile as it is, overriding nothing but
// the file's path, encoding and compression (see [CheckApproval]).
type ApprovedSource struct {
	Name    string `yaml:"name" json:"name"`
	Profile string `yaml:"profile" json:"profile"`
	// ProfileYAML is the custom profile named Profile; empty for a
	// built-in profile.
	ProfileYAML string `yaml:"profile_yaml,omitempty" json:"profile_yaml,omitempty"`
}

// ApprovedVariable approves one column of one source (or a derived
// variable: its output name), with the transforms allowed for it.
type ApprovedVariable struct {
	Source string `yaml:"source" json:"source"`
	// Column is a column (ranges such as DIA1..DIA30 allowed) or, for
	// age-at-index and sex, the output name.
	Column string `yaml:"column" json:"column"`
	// Transforms allowed; empty means keep, and so anything coarser.
	Transforms []string `yaml:"transforms" json:"transforms"`
}

// ErrNotApproved is wrapped by the error for a variable the approval does
// not allow.
var ErrNotApproved = errors.New("not approved")

// transform is a parsed transform.
type transform struct {
	name  string   // keep, drop, truncate, blank, select, year, year-month, age-at-index, sex
	n     int      // truncate
	codes []string // blank, select
}

var reTransform = regexp.MustCompile(`^(keep|drop|year|year-month|age-at-index|sex|truncate\(([1-9])\)|(blank|select)\(([A-Z0-9]{1,7}(?:,[A-Z0-9]{1,7})*)\))$`)

func parseTransform(s string) (transform, error) {
	if s == "" {
		s = "keep"
	}
	m := reTransform.FindStringSubmatch(strings.ReplaceAll(s, " ", ""))
	if m == nil {
		return transform{}, fmt.Errorf("transform %q: want keep, drop, truncate(N), blank(CODE,…), select(CODE,…), year, year-month, age-at-index or sex", s)
	}
	switch {
	case m[2] != "":
		n, _ := strconv.Atoi(m[2])
		return transform{name: "truncate", n: n}, nil
	case m[3] != "":
		return transform{name: m[3], codes: strings.Split(m[4], ",")}, nil
	}
	return transform{name: m[1]}, nil
}

func (t transform) String() string {
	switch t.name {
	case "truncate":
		return fmt.Sprintf("truncate(%d)", t.n)
	case "blank", "select":
		return t.name + "(" + strings.Join(t.codes, ",") + ")"
	}
	return t.name
}

// allows reports whether an approved transform a permits the requested
// transform r: the same, or coarser.
func (a transform) allows(r transform) bool {
	switch {
	case r.name == "drop":
		return true
	case a.name == "keep":
		return r.name != "age-at-index" && r.name != "sex"
	case a.name == r.name && a.name == "truncate":
		return r.n <= a.n
	case a.name == r.name && (a.name == "blank" || a.name == "select"):
		for _, c := range r.codes {
			if !slices.ContainsFunc(a.codes, func(ac string) bool { return strings.HasPrefix(c, ac) }) {
				return false
			}
		}
		return true
	case a.name == "year-month" && r.name == "year":
		return true
	case a.name == "truncate" && (r.name == "blank" || r.name == "select"):
		// Codes kept whole inside a set, blanked elsewhere, are finer
		// than a truncation: not allowed.
		return false
	}
	return a.name == r.name
}

// column is one planned output column.
type column struct {
	Name      string // in the output
	Source    string // the source column, or "" for derived
	Transform transform
	Type      string // VARCHAR, BIGINT, INTEGER
	Desc      string
	expr      string // SQL
	args      []any
}

// sourcePlan is one output file's plan.
type sourcePlan struct {
	Source  string
	Columns []column
}

// VariableError is a variable of the job spec that cannot be delivered.
type VariableError struct {
	Path string // variables[3]
	Msg  string
	Err  error
}

func (e *VariableError) Error() string { return e.Path + ": " + e.Msg }
func (e *VariableError) Unwrap() error { return e.Err }

// plan checks the job's variables against the sources and the approval
// and builds each output's columns. Nothing runs before it succeeds.
func plan(spec *linkage.JobSpec, sources []linkage.LinkedSource, hasIndex bool, appr Approval) ([]sourcePlan, error) {
	if err := CheckApproval(spec, appr); err != nil {
		return nil, err
	}
	bySource := map[string]*linkage.LinkedSource{}
	for i := range sources {
		bySource[sources[i].Name] = &sources[i]
	}
	var plans []sourcePlan
	var errs []error
	bad := func(path string, err error, format string, args ...any) {
		errs = append(errs, &VariableError{Path: path, Msg: fmt.Sprintf(format, args...), Err: err})
	}
	planFor := func(name string) *sourcePlan {
		for i := range plans {
			if plans[i].Source == name {
				return &plans[i]
			}
		}
		plans = append(plans, sourcePlan{Source: name, Columns: []column{{Name: "LopNr", Type: "BIGINT", Desc: "the person's run number in this project (löpnummer)", expr: "l.lopnr"}}})
		return &plans[len(plans)-1]
	}
	for i, v := range spec.Variables {
		path := fmt.Sprintf("variables[%d]", i)
		src := bySource[v.Source]
		if src == nil || src.Kind != linkage.KindEvents {
			bad(path+".source", nil, "%q is not an events source of the job", v.Source)
			continue
		}
		t, err := parseTransform(v.Transform)
		if err != nil {
			bad(path+".transform", nil, "%v", err)
			continue
		}
		cols := []string{v.Column}
		if t.name != "age-at-index" && t.name != "sex" {
			if cols, err = linkage.ExpandColumns(v.Column); err != nil {
				bad(path+".column", nil, "%v", err)
				continue
			}
		}
		if !approved(appr, v.Source, cols, t) {
			bad(path, ErrNotApproved, "%s.%s with %s is not on the project's approved variable list", v.Source, v.Column, t)
			continue
		}
		if t.name == "drop" {
			continue
		}
		p := planFor(v.Source)
		for _, c := range cols {
			col, err := planColumn(src, c, t, hasIndex, appr.AllowPersonnummer)
			if err != nil {
				bad(path, nil, "%v", err)
				continue
			}
			if slices.ContainsFunc(p.Columns, func(o column) bool { return strings.EqualFold(o.Name, col.Name) }) {
				bad(path+".column", nil, "%q is already an output column of %s", col.Name, v.Source)
				continue
			}
			p.Columns = append(p.Columns, col)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(plans) == 0 {
		return nil, errors.New("variables: the job delivers nothing; list the variables to deliver")
	}
	return plans, nil
}

// approved reports whether every column with transform t is approved.
func approved(appr Approval, source string, cols []string, t transform) bool {
	for _, c := range cols {
		ok := false
		for _, a := range appr.Variables {
			if a.Source != source {
				continue
			}
			acols, err := linkage.ExpandColumns(a.Column)
			if err != nil || !slices.Contains(acols, c) {
				continue
			}
			allowed := a.Transforms
			if len(allowed) == 0 {
				allowed = []string{"keep"}
			}
			for _, s := range allowed {
				at, err := parseTransform(s)
				if err == nil && at.allows(t) {
					ok = true
				}
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// planColumn builds one output column's SQL. Column names come from the
// file's header and are quoted; code sets are checked by the transform's
// grammar and bound as parameters.
func planColumn(src *linkage.LinkedSource, name string, t transform, hasIndex, allowPnr bool) (column, error) {
	c := column{Name: name, Source: name, Transform: t, Type: "VARCHAR"}
	switch t.name {
	case "age-at-index":
		if !hasIndex {
			return column{}, fmt.Errorf("age-at-index needs an index date, which a cohort given as a list does not have")
		}
		c.Source, c.Type, c.Desc = "", "INTEGER", "age in whole years at the index date (the person's first event matching the cohort's criteria)"
		c.expr = `(year(c.index_date) - year(n._birth) - CASE WHEN strftime(c.index_date, '%m%d') < strftime(n._birth, '%m%d') THEN 1 ELSE 0 END)`
		return c, nil
	case "sex":
		c.Source, c.Desc = "", "sex from the identity number: M or F"
		c.expr = `n._sex`
		return c, nil
	}
	if !slices.Contains(src.Columns, name) {
		return column{}, fmt.Errorf("source %s has no column %q", src.Name, name)
	}
	if name == src.Identity && !allowPnr {
		return column{}, fmt.Errorf("%s is the identity column: it is delivered as LopNr, never as itself", name)
	}
	if strings.EqualFold(name, "LopNr") {
		return column{}, fmt.Errorf("a column named LopNr would clash with the run number")
	}
	q := linkage.Ident(name)
	// Line breaks inside values would break CSV for SAS and SPSS.
	clean := fmt.Sprintf("nullif(trim(replace(replace(%s::VARCHAR, chr(13), ' '), chr(10), ' ')), '')", q)
	split := ""
	for _, g := range src.Codes {
		if slices.Contains(g.Columns, name) {
			split = g.Split
			if split == "" {
				split = "-" // marks a code column without a list
			}
		}
	}
	perCode := func(f func(x string) string) string {
		if split == "" || split == "-" {
			return f(clean)
		}
		return fmt.Sprintf("array_to_string(list_filter(list_transform(string_split(%s, %s), x -> %s), x -> x IS NOT NULL), %s)",
			clean, linkage.SQLString(split), f("nullif(x, '')"), linkage.SQLString(split))
	}
	format, isDate := src.Dates[name]
	switch t.name {
	case "keep":
		c.Desc = "as in the source"
		c.expr = clean
	case "truncate":
		if split == "" {
			return column{}, fmt.Errorf("truncate applies to code columns; %s is not one of %s's", name, src.Name)
		}
		c.Desc = fmt.Sprintf("code in upper case without dots, truncated to %d characters", t.n)
		c.expr = perCode(func(x string) string {
			return fmt.Sprintf("CASE WHEN %[1]s = 'BLANKED' THEN %[1]s ELSE left(%[2]s, %[3]d) END", x, linkage.NormCodeSQL(x), t.n)
		})
	case "blank", "select":
		if split == "" {
			return column{}, fmt.Errorf("%s applies to code columns; %s is not one of %s's", t.name, name, src.Name)
		}
		pattern := "^(" + strings.Join(t.codes, "|") + ")"
		other := "'BLANKED'"
		c.Desc = "codes starting with " + strings.Join(t.codes, ", ") + " (upper case, no dots); any other code is BLANKED"
		if t.name == "select" {
			other, c.Desc = "NULL", "codes starting with "+strings.Join(t.codes, ", ")+" (upper case, no dots); any other code is left out"
		}
		c.expr = perCode(func(x string) string {
			// A code the source already BLANKED stays so under blank, and
			// is left out under select.
			return fmt.Sprintf("CASE WHEN %[1]s IS NULL THEN NULL WHEN %[1]s = 'BLANKED' THEN %[3]s WHEN regexp_matches(%[2]s, ?) THEN %[2]s ELSE %[3]s END", x, linkage.NormCodeSQL(x), other)
		})
		c.args = []any{pattern}
	case "year", "year-month":
		if !isDate {
			return column{}, fmt.Errorf("%s applies to date columns; %s is not one of %s's", t.name, name, src.Name)
		}
		if format == linkage.DateRegister {
			// Keep what the register knows: 00 stays unknown.
			c.expr = fmt.Sprintf("CASE WHEN regexp_full_match(%[1]s, '[0-9]{8}') THEN substr(%[1]s, 1, 4) END", clean)
			if t.name == "year-month" {
				c.expr = fmt.Sprintf("CASE WHEN regexp_full_match(%[1]s, '[0-9]{8}') THEN substr(%[1]s, 1, 4) || CASE WHEN substr(%[1]s, 5, 2) = '00' THEN '' ELSE '-' || substr(%[1]s, 5, 2) END END", clean)
			}
		} else {
			layout := map[string]string{"year": "%Y", "year-month": "%Y-%m"}[t.name]
			c.expr = fmt.Sprintf("strftime(%s, '%s')", linkage.DateSQL(name, format), layout)
		}
		c.Desc = "date reduced to the " + map[string]string{"year": "year", "year-month": "year and month"}[t.name]
	}
	return c, nil
}

// selectSQL is the SQL of one output, with its parameters.
func (p sourcePlan) selectSQL(src *linkage.LinkedSource) (string, []any) {
	var exprs []string
	var args []any
	for _, c := range p.Columns {
		exprs = append(exprs, c.expr+" AS "+linkage.Ident(c.Name))
		args = append(args, c.args...)
	}
	return fmt.Sprintf(`SELECT %s FROM %s n JOIN cohort c ON n._canonical = c.canonical JOIN lopnr l ON l.canonical = n._canonical`,
		strings.Join(exprs, ", "), src.CohortView), args
}

// CheckApproval checks a job spec against a project's approved list
// before anything runs: what `lopnr run` checks before it links, what a
// server checks when a job is submitted, and what Deliver checks again. It
// names every field at fault:
//
//   - a source that the approved list names must use the approved profile
//     (sources[i].profile), as the approved list has it: a built-in
//     profile, or the spec's own profile of that name exactly as approved
//     (profiles[j].<field>, the description aside);
//   - such a source may override only its path, encoding and compression:
//     columns, rename, header, delimiter, quote, identity and event_date
//     would name the file's columns otherwise than the approved profile
//     does (sources[i].<field>);
//   - every variable's source must be an approved source
//     (variables[i].source), and the column with its transform on the
//     approved list (variables[i]);
//   - so must every other source the job reads: the cohort's
//     (cohort.criteria[i].source, cohort.list), the identity sources
//     (identity.history, identity.reused), and any other the spec lists
//     (sources[i].name). Who is delivered tells as much as what is: a
//     cohort chosen by an unapproved register makes each delivered LopNr
//     say that the person is in it. The criteria's codes and windows are
//     not on the list: they are in the job's spec, which the approver who
//     releases the delivery reads.
//
// A file with a header is read by its header (linkage refuses a profile
// whose columns differ from it), one without by the approved profile's
// columns: so an approved column name means the same data in the file.
func CheckApproval(spec *linkage.JobSpec, appr Approval) error {
	var errs []error
	bad := func(path string, err error, format string, args ...any) {
		errs = append(errs, &VariableError{Path: path, Msg: fmt.Sprintf(format, args...), Err: err})
	}
	bySource := map[string]ApprovedSource{}
	for _, a := range appr.Sources {
		bySource[a.Name] = a
	}
	// The fields that name each source, besides the variables.
	readBy := map[string][]string{}
	for i, c := range spec.Cohort.Criteria {
		readBy[c.Source] = append(readBy[c.Source], fmt.Sprintf("cohort.criteria[%d].source", i))
	}
	for path, name := range map[string]string{"cohort.list": spec.Cohort.List, "identity.history": spec.Identity.History, "identity.reused": spec.Identity.Reused} {
		if name != "" {
			readBy[name] = append(readBy[name], path)
		}
	}
	delivered := map[string]bool{}
	for _, v := range spec.Variables {
		delivered[v.Source] = true
	}
	for i, src := range spec.Sources {
		a, ok := bySource[src.Name]
		if !ok {
			fields := readBy[src.Name]
			slices.Sort(fields)
			for _, f := range fields {
				bad(f, ErrNotApproved, "%q is not a source on the project's approved list: a job reads only approved sources, its cohort's and identity sources too", src.Name)
			}
			if len(fields) == 0 && !delivered[src.Name] { // a variable's error names it
				bad(fmt.Sprintf("sources[%d].name", i), ErrNotApproved, "%q is not a source on the project's approved list: a job reads only approved sources", src.Name)
			}
			continue
		}
		path := fmt.Sprintf("sources[%d]", i)
		if src.Profile != a.Profile {
			bad(path+".profile", ErrNotApproved, "%q: the approved list reads source %s with profile %q", src.Profile, src.Name, a.Profile)
			continue
		}
		if err := sameProfile(spec, i, a); err != nil {
			errs = append(errs, err)
		}
		for _, o := range overrides(src) {
			bad(path+"."+o, ErrNotApproved, "source %s is read with its approved profile as it is: a job may set its path, encoding and compression, not its %s", src.Name, o)
		}
	}
	for i, v := range spec.Variables {
		path := fmt.Sprintf("variables[%d]", i)
		if _, ok := bySource[v.Source]; !ok {
			bad(path+".source", ErrNotApproved, "%q is not a source on the project's approved list", v.Source)
			continue
		}
		t, err := parseTransform(v.Transform)
		if err != nil {
			bad(path+".transform", nil, "%v", err)
			continue
		}
		cols := []string{v.Column}
		if t.name != "age-at-index" && t.name != "sex" {
			if cols, err = linkage.ExpandColumns(v.Column); err != nil {
				bad(path+".column", nil, "%v", err)
				continue
			}
		}
		if !approved(appr, v.Source, cols, t) {
			bad(path, ErrNotApproved, "%s.%s with %s is not on the project's approved variable list", v.Source, v.Column, t)
		}
	}
	return errors.Join(errs...)
}

// sameProfile checks that source i of spec reads its file with approved
// source a's profile as approved.
func sameProfile(spec *linkage.JobSpec, i int, a ApprovedSource) error {
	p, ok := spec.ProfileOf(i)
	if !ok {
		return nil // the spec's own error names it
	}
	_, builtin := linkage.Builtin()[a.Profile]
	j := slices.IndexFunc(spec.Profiles, func(p linkage.Profile) bool { return p.Name == a.Profile })
	switch {
	case a.ProfileYAML == "" && builtin:
		return nil // linkage refuses a spec's profile of a built-in's name
	case a.ProfileYAML == "":
		return &VariableError{Path: fmt.Sprintf("sources[%d].profile", i), Err: ErrNotApproved,
			Msg: fmt.Sprintf("%q is not a built-in profile, and the approved list holds no profile of that name", a.Profile)}
	}
	want, err := linkage.ParseProfile([]byte(a.ProfileYAML), "the approved profile")
	if err != nil {
		return &VariableError{Path: fmt.Sprintf("sources[%d].profile", i), Err: ErrNotApproved,
			Msg: fmt.Sprintf("the approved list's profile %q does not parse", a.Profile)}
	}
	if field := linkage.ProfileDiff(p, want); field != "" {
		path := fmt.Sprintf("profiles[%d].%s", j, field)
		if j < 0 {
			path = fmt.Sprintf("sources[%d].profile", i)
		}
		return &VariableError{Path: path, Err: ErrNotApproved,
			Msg: fmt.Sprintf("profile %q differs from the one the approved list approves for source %s", a.Profile, spec.Sources[i].Name)}
	}
	return nil
}

// overrides returns the fields of a source that change how its profile
// names and splits the file's columns.
func overrides(src linkage.SourceSpec) []string {
	var out []string
	for _, o := range []struct {
		field string
		set   bool
	}{
		{"delimiter", src.Delimiter != ""},
		{"header", src.Header != nil},
		{"quote", src.Quote != ""},
		{"columns", len(src.Columns) > 0},
		{"identity", src.Identity != ""},
		{"event_date", src.EventDate != ""},
		{"rename", len(src.Rename) > 0},
	} {
		if o.set {
			out = append(out, o.field)
		}
	}
	return out
}
