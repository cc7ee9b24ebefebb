package linkage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/lopnr/lopnr/internal/yamlfield"
)

// JobSpec is a job: which project, which sources through which profiles,
// which cohort, which variables and how they are delivered. People write
// it in YAML (docs/jobspec.md); every validation error names the field
// path and what is expected.
type JobSpec struct {
	Project string `yaml:"project"`
	EPMDnr  string `yaml:"epm_dnr"`
	// ReferenceDate is the extraction date, YYYY-MM-DD: it decides the
	// century of 10-digit identity numbers. Default: the day the job runs.
	ReferenceDate string `yaml:"reference_date"`
	// Profiles adds profiles to the built-in ones.
	Profiles []Profile    `yaml:"profiles"`
	Sources  []SourceSpec `yaml:"sources"`
	Identity IdentitySpec `yaml:"identity"`
	Cohort   CohortSpec   `yaml:"cohort"`
	// Variables are the columns delivered, with their transforms.
	Variables []VariableSpec `yaml:"variables"`
	Outputs   OutputSpec     `yaml:"outputs"`
	// Recipients are the researchers' age public keys (age1… or
	// age1pq1…) that the delivery is encrypted to. `lopnr run` adds its
	// --recipient keys to them (or replaces them); the server encrypts to
	// the project's registered recipients, and these must be among them.
	Recipients []string `yaml:"recipients"`

	// dir is the directory of the spec file; source paths are relative to it.
	dir string
	ref time.Time
	// open opens source i's file for Link; nil is os.Open of File(i).
	open func(i int) (*os.File, error)
}

// SourceSpec is one source file and how to read it: a profile, and any of
// the profile's fields overridden for this file.
type SourceSpec struct {
	Name    string `yaml:"name"`
	Profile string `yaml:"profile"`
	Path    string `yaml:"path"`

	Delimiter   string   `yaml:"delimiter"`
	Header      *bool    `yaml:"header"`
	Quote       string   `yaml:"quote"`
	Columns     []string `yaml:"columns"`
	Encoding    string   `yaml:"encoding"`
	Compression string   `yaml:"compression"`
	Identity    string   `yaml:"identity"`
	EventDate   string   `yaml:"event_date"`
	// Rename maps the profile's column names to this file's.
	Rename map[string]string `yaml:"rename"`
}

// IdentitySpec names the sources that correct identity numbers.
type IdentitySpec struct {
	// History is a source with a history profile: number changes.
	History string `yaml:"history"`
	// Reused is a source with a list profile: numbers known to be used by
	// two persons, never linked.
	Reused string `yaml:"reused"`
}

// CohortSpec is the study population: a list, or criteria on sources.
type CohortSpec struct {
	// List is a source with a list profile.
	List     string          `yaml:"list"`
	Criteria []CriterionSpec `yaml:"criteria"`
	// Sex keeps only M or F, from the identity number.
	Sex string   `yaml:"sex"`
	Age *AgeSpec `yaml:"age"`
}

// CriterionSpec selects events: a code prefix in a code group, in a date
// window. A person's index date is their first matching event.
type CriterionSpec struct {
	Source string   `yaml:"source"`
	Codes  []string `yaml:"codes"`
	// Groups limits the code groups searched; default all of the source's.
	Groups []string `yaml:"groups"`
	From   string   `yaml:"from"`
	To     string   `yaml:"to"`
}

// AgeSpec bounds the age at the index date, in whole years, inclusive.
type AgeSpec struct {
	Min *int `yaml:"min"`
	Max *int `yaml:"max"`
}

// VariableSpec is one delivered column and its transform: keep, drop,
// truncate(N), blank(CODE,…), year, year-month, age-at-index, sex.
type VariableSpec struct {
	Source    string `yaml:"source"`
	Column    string `yaml:"column"`
	Transform string `yaml:"transform"`
}

// OutputSpec says how deliveries are written.
type OutputSpec struct {
	Format     string `yaml:"format"`      // csv (default) or parquet
	Delimiter  string `yaml:"delimiter"`   // csv; default ";"
	Encoding   string `yaml:"encoding"`    // csv: utf-8 (default) or windows-1252
	LineEnding string `yaml:"line_ending"` // csv: lf (default) or crlf
}

// FieldError is an invalid value in a job spec or profile: its Path
// (sources[2].profile), the Line of the file when known, and what is
// wrong.
type FieldError = yamlfield.Error

// ErrInvalidSpec is wrapped by every job-spec error.
var ErrInvalidSpec = errors.New("invalid job spec")

// SpecError is a job spec's errors, all of them, with the file.
type SpecError struct {
	File   string
	Errors []error
}

func (e *SpecError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: invalid job spec", e.File)
	for _, err := range e.Errors {
		b.WriteString("\n  ")
		b.WriteString(err.Error())
	}
	return b.String()
}

func (e *SpecError) Unwrap() []error { return append([]error{ErrInvalidSpec}, e.Errors...) }

// LoadSpec reads and validates a job spec file.
func LoadSpec(path string) (*JobSpec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseSpec(b, path)
}

// ParseSpec parses and validates a job spec; name is the file for errors
// and its directory the base of relative source paths. Its error is a
// [*SpecError] whose errors each name a field path (or, for a file that is
// not YAML, a line).
func ParseSpec(b []byte, name string) (*JobSpec, error) {
	var s JobSpec
	if errs := yamlfield.Decode(b, &s); len(errs) > 0 {
		return nil, &SpecError{File: name, Errors: errs}
	}
	s.dir = filepath.Dir(name)
	if errs := s.validate(); len(errs) > 0 {
		return nil, &SpecError{File: name, Errors: errs}
	}
	return &s, nil
}

var (
	sourceName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)
	codePrefix = regexp.MustCompile(`^[A-Z0-9]{1,7}$`)
	transform  = regexp.MustCompile(`^(keep|drop|year|year-month|age-at-index|sex|truncate\([1-9]\)|(blank|select)\([A-Z0-9]{1,7}(,[A-Z0-9]{1,7})*\))$`)
)

// ValidSourceName reports whether name may name a source: lower-case
// letters, digits and _, starting with a letter, at most 63. Job specs,
// approved variable lists and partner imports hold source names to it.
func ValidSourceName(name string) bool { return sourceName.MatchString(name) }

// profiles returns the built-in profiles plus the spec's own.
func (s *JobSpec) profiles() map[string]Profile {
	m := Builtin()
	for _, p := range s.Profiles {
		m[p.Name] = p
	}
	return m
}

// RefDate returns the reference date (valid after validation).
func (s *JobSpec) RefDate() time.Time { return s.ref }

// Dir returns the directory of the spec file.
func (s *JobSpec) Dir() string { return s.dir }

func (s *JobSpec) validate() []error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	if !projectIDPattern.MatchString(s.Project) {
		bad("project", "%q: want 1-64 characters of a-z, 0-9, '.', '_', '-'", s.Project)
	}
	for i, r := range s.Recipients {
		if !strings.HasPrefix(r, "age1") || strings.ContainsAny(r, " \t\n") {
			bad(fmt.Sprintf("recipients[%d]", i), "want an age public key, age1… or age1pq1…")
		}
	}
	s.ref = time.Now().UTC().Truncate(24 * time.Hour)
	if s.ReferenceDate != "" {
		t, err := time.Parse(time.DateOnly, s.ReferenceDate)
		if err != nil {
			bad("reference_date", "%q: want YYYY-MM-DD", s.ReferenceDate)
		}
		s.ref = t
	}
	builtin := Builtin()
	for i := range s.Profiles {
		if s.Profiles[i].Name == "" {
			bad(fmt.Sprintf("profiles[%d].name", i), "missing")
		} else if _, ok := builtin[s.Profiles[i].Name]; ok {
			// A spec's profile must not stand in for a built-in one under
			// its name: an approved list that names the built-in means it.
			bad(fmt.Sprintf("profiles[%d].name", i), "%q is a built-in profile: give yours another name", s.Profiles[i].Name)
		} else if slices.ContainsFunc(s.Profiles[:i], func(p Profile) bool { return p.Name == s.Profiles[i].Name }) {
			bad(fmt.Sprintf("profiles[%d].name", i), "%q is used by another profile", s.Profiles[i].Name)
		} else if _, err := s.Profiles[i].resolve(fmt.Sprintf("profiles[%d]", i)); err != nil {
			errs = append(errs, err)
		}
	}
	profiles := s.profiles()
	kinds := map[string]string{}
	for i, src := range s.Sources {
		path := fmt.Sprintf("sources[%d]", i)
		if !sourceName.MatchString(src.Name) {
			bad(path+".name", "%q: want a lower-case name of letters, digits and _", src.Name)
		} else if _, dup := kinds[src.Name]; dup {
			bad(path+".name", "%q is used by another source", src.Name)
		}
		p, ok := profiles[src.Profile]
		if !ok {
			bad(path+".profile", "unknown profile %q, want one of %s", src.Profile, profileNames(profiles))
			kinds[src.Name] = ""
			continue
		}
		if src.Path == "" {
			bad(path+".path", "missing: the file to read")
		}
		if _, err := s.Resolve(i); err != nil {
			errs = append(errs, err)
		}
		kinds[src.Name] = p.Kind
	}
	if len(s.Sources) == 0 {
		bad("sources", "no sources")
	}
	if len(s.Sources) > MaxSources {
		bad("sources", "%d sources: at most %d in one job", len(s.Sources), MaxSources)
	}
	needKind := func(path, name, kind string) {
		if name == "" {
			return
		}
		k, ok := kinds[name]
		switch {
		case !ok:
			bad(path, "no source named %q", name)
		case k != "" && k != kind:
			bad(path, "source %q is of kind %s, want a source of kind %s", name, k, kind)
		}
	}
	needKind("identity.history", s.Identity.History, KindHistory)
	needKind("identity.reused", s.Identity.Reused, KindList)
	needKind("cohort.list", s.Cohort.List, KindList)

	c := s.Cohort
	switch {
	case c.List == "" && len(c.Criteria) == 0:
		bad("cohort", "want a list or criteria")
	case c.List != "" && len(c.Criteria) > 0:
		bad("cohort", "want a list or criteria, not both")
	}
	for i, cr := range c.Criteria {
		path := fmt.Sprintf("cohort.criteria[%d]", i)
		needKind(path+".source", cr.Source, KindEvents)
		if cr.Source == "" {
			bad(path+".source", "missing")
		}
		if len(cr.Codes) == 0 && cr.From == "" && cr.To == "" {
			bad(path, "want codes, a date window or both")
		}
		for j, code := range cr.Codes {
			if !codePrefix.MatchString(normCode(code)) {
				bad(fmt.Sprintf("%s.codes[%d]", path, j), "%q: want a code prefix of letters and digits, such as I21", code)
			}
		}
		if idx := s.sourceIndex(cr.Source); idx >= 0 {
			if r, err := s.Resolve(idx); err == nil {
				for j, g := range cr.Groups {
					if !slices.ContainsFunc(r.codes, func(cg CodeGroup) bool { return cg.Group == g }) {
						bad(fmt.Sprintf("%s.groups[%d]", path, j), "source %q has no code group %q", cr.Source, g)
					}
				}
				if len(cr.Codes) > 0 && len(r.codes) == 0 {
					bad(path+".codes", "source %q has no code columns", cr.Source)
				}
				if (cr.From != "" || cr.To != "") && r.EventDate == "" {
					bad(path, "source %q has no event date for a window", cr.Source)
				}
			}
		}
		for _, f := range []struct{ name, v string }{{"from", cr.From}, {"to", cr.To}} {
			if f.v != "" {
				if _, err := time.Parse(time.DateOnly, f.v); err != nil {
					bad(path+"."+f.name, "%q: want YYYY-MM-DD", f.v)
				}
			}
		}
	}
	switch c.Sex {
	case "", "M", "F":
	default:
		bad("cohort.sex", "%q: want M or F", c.Sex)
	}
	if c.Age != nil {
		if c.Age.Min != nil && (*c.Age.Min < 0 || *c.Age.Min > 130) {
			bad("cohort.age.min", "%d: want 0 to 130", *c.Age.Min)
		}
		if c.Age.Max != nil && (*c.Age.Max < 0 || *c.Age.Max > 130) {
			bad("cohort.age.max", "%d: want 0 to 130", *c.Age.Max)
		}
		if c.Age.Min != nil && c.Age.Max != nil && *c.Age.Min > *c.Age.Max {
			bad("cohort.age", "min %d is above max %d", *c.Age.Min, *c.Age.Max)
		}
		if c.List != "" {
			bad("cohort.age", "an age needs an index date, which a list does not give")
		}
	}
	for i, v := range s.Variables {
		path := fmt.Sprintf("variables[%d]", i)
		if k, ok := kinds[v.Source]; !ok || (k != "" && k != KindEvents) {
			bad(path+".source", "%q: want the name of an events source", v.Source)
		}
		if v.Column == "" {
			bad(path+".column", "missing")
		}
		t := v.Transform
		if t == "" {
			t = "keep"
		}
		if !transform.MatchString(strings.ReplaceAll(t, " ", "")) {
			bad(path+".transform", "%q: want keep, drop, truncate(N), blank(CODE,…), select(CODE,…), year, year-month, age-at-index or sex", v.Transform)
		}
	}
	o := s.Outputs
	switch o.Format {
	case "", "csv", "parquet":
	default:
		bad("outputs.format", "%q: want csv or parquet", o.Format)
	}
	if o.Delimiter != "" && !outputDelimiter(o.Delimiter) {
		bad("outputs.delimiter", "%q: want one character: a tab, a space or a punctuation mark other than a quote, - or +", o.Delimiter)
	}
	switch o.Encoding {
	case "", EncodingUTF8, EncodingCP:
	default:
		bad("outputs.encoding", "%q: want utf-8 or windows-1252", o.Encoding)
	}
	switch o.LineEnding {
	case "", "lf", "crlf":
	default:
		bad("outputs.line_ending", "%q: want lf or crlf", o.LineEnding)
	}
	return errs
}

func (s *JobSpec) sourceIndex(name string) int {
	return slices.IndexFunc(s.Sources, func(src SourceSpec) bool { return src.Name == name })
}

// Resolve returns source i's profile with the source's overrides applied.
func (s *JobSpec) Resolve(i int) (resolved, error) {
	src := s.Sources[i]
	p, ok := s.profiles()[src.Profile]
	if !ok {
		return resolved{}, &FieldError{Path: fmt.Sprintf("sources[%d].profile", i), Msg: fmt.Sprintf("unknown profile %q", src.Profile)}
	}
	p.Columns = slices.Clone(p.Columns)
	override := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	override(&p.Delimiter, src.Delimiter)
	override(&p.Quote, src.Quote)
	override(&p.Encoding, src.Encoding)
	override(&p.Compression, src.Compression)
	if src.Header != nil {
		p.Header = src.Header
	}
	if len(src.Columns) > 0 {
		p.Columns = slices.Clone(src.Columns)
	}
	p.rename(src.Rename)
	override(&p.Identity, src.Identity)
	override(&p.EventDate, src.EventDate)
	return p.resolve(fmt.Sprintf("sources[%d]", i))
}

// ProfileOf returns the profile source i names, as the spec or the
// built-in profiles define it, before the source's overrides; false if
// there is none of that name.
func (s *JobSpec) ProfileOf(i int) (Profile, bool) {
	p, ok := s.profiles()[s.Sources[i].Profile]
	return p, ok
}

// OpenSourcesWith has Link open source i's file with open instead of
// os.Open(File(i)): a server opens sources through its source root
// (os.Root), so that no link or .. leads out of it. Link reads a source
// only through the file open returns, which it closes; DuckDB is given
// that open file (/proc/self/fd/N), never the path again, so what is read
// is what was opened. Linux only: elsewhere Link refuses a spec with an
// opener.
func (s *JobSpec) OpenSourcesWith(open func(i int) (*os.File, error)) { s.open = open }

// File returns source i's path, relative to the spec's directory.
func (s *JobSpec) File(i int) string {
	p := s.Sources[i].Path
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(s.dir, p)
}

// outputDelimiter reports whether d may separate a delivery's CSV values:
// one tab, space or ASCII punctuation mark, never a quote, a line break or
// another control character (each would change how the file splits into
// records for the researcher's tools), nor a letter, a digit, - or +
// (which identity numbers are written with: two values side by side would
// read as one number, to the leak guard and to anyone else).
func outputDelimiter(d string) bool {
	if len(d) != 1 {
		return false
	}
	c := d[0]
	switch {
	case c == '\t' || c == ' ':
		return true
	case c == '"' || c == '-' || c == '+' || c < 0x20 || c >= 0x7f:
		return false
	case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		return false
	}
	return true
}

// Delim returns the CSV output's delimiter (valid after validation).
func (o OutputSpec) Delim() byte {
	if o.Delimiter == "" {
		return ';'
	}
	return o.Delimiter[0]
}

// normCode is a code as compared: upper case, no dots or spaces.
func normCode(c string) string {
	return strings.ToUpper(strings.NewReplacer(".", "", " ", "").Replace(c))
}

// MaxSources is the most sources one job may name: the linkage-quality
// report keeps each person's set of sources as the bits of a 64-bit
// number.
const MaxSources = 64

var projectIDPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
