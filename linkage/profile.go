package linkage

import (
	"embed"
	"fmt"
	"io/fs"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/lopnr/lopnr/internal/yamlfield"
)

// A Profile says how to read one kind of source file: its format, its
// identity column, its dates and its code columns. The built-in profiles
// are YAML files in linkage/profiles (see docs/sources.md); a job spec can
// define more and override any field per source, so adding a profile is
// configuration, not code.
type Profile struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	// Kind is events (rows about persons), list (identity numbers only) or
	// history (number changes).
	Kind string `yaml:"kind"`
	// Format is csv (any delimiter) or parquet.
	Format    string `yaml:"format"`
	Delimiter string `yaml:"delimiter"`
	Header    *bool  `yaml:"header"`
	Quote     string `yaml:"quote"`
	// Columns names the columns in order; required when the file has no
	// header.
	Columns []string `yaml:"columns"`
	// Encoding is utf-8, latin-1 or windows-1252.
	Encoding string `yaml:"encoding"`
	// Compression is auto (from the file name: .gz, .zst), none, gzip or zstd.
	Compression string `yaml:"compression"`
	// Identity is the column with the identity number.
	Identity string `yaml:"identity"`
	// EventDate is the column that dates a row, for cohort windows and
	// index dates.
	EventDate string `yaml:"event_date"`
	// Dates maps date columns to their format: YYYYMMDD, YYYY-MM-DD, or
	// register (YYYYMMDD in which 00 marks an unknown month or day).
	Dates map[string]string `yaml:"dates"`
	// Codes are the code columns, in groups.
	Codes []CodeGroup `yaml:"codes"`
	// History names the columns of a history profile.
	History *HistoryColumns `yaml:"history"`
}

// CodeGroup is one group of code columns: a single column (HDIA), a
// repeated one (DIA1..DIA30), or a list in one field (OP, split on " ").
type CodeGroup struct {
	Group   string   `yaml:"group"`
	System  string   `yaml:"system"` // ICD-10-SE, KVÅ, ATC, mixed
	Columns []string `yaml:"columns"`
	Split   string   `yaml:"split"`
}

// HistoryColumns are the columns of a number-change file.
type HistoryColumns struct {
	Old  string `yaml:"old"`
	New  string `yaml:"new"`
	Date string `yaml:"date"`
}

// The date formats a profile may name.
const (
	DateYYYYMMDD  = "YYYYMMDD"
	DateISO       = "YYYY-MM-DD"
	DateRegister  = "register"
	KindEvents    = "events"
	KindList      = "list"
	KindHistory   = "history"
	EncodingUTF8  = "utf-8"
	EncodingLatin = "latin-1"
	EncodingCP    = "windows-1252"
)

//go:embed profiles/*.yaml
var builtinFS embed.FS

// Builtin returns the built-in profiles by name.
func Builtin() map[string]Profile {
	out := map[string]Profile{}
	entries, _ := fs.ReadDir(builtinFS, "profiles")
	for _, e := range entries {
		b, err := builtinFS.ReadFile("profiles/" + e.Name())
		if err != nil {
			panic(err)
		}
		p, err := ParseProfile(b, e.Name())
		if err != nil {
			panic(fmt.Sprintf("built-in profile: %v", err))
		}
		out[p.Name] = p
	}
	return out
}

// PartnerImport is the built-in profile of a partner's file as lopnrd
// writes it from an import: the partner's columns by its own header, the
// identity in PNR. An approved list approves a partner's variables on a
// source read with it; lopnrd refuses it in submitted jobs.
const PartnerImport = "partner-import"

// ProfileDiff returns the first field (its YAML name) in which profiles a
// and b differ, the description aside, or "" when they read a file alike.
// Empty lists and mappings are the same as none.
func ProfileDiff(a, b Profile) string {
	a.Description, b.Description = "", ""
	ma, errA := profileFields(a)
	mb, errB := profileFields(b)
	if errA != nil || errB != nil {
		return "name"
	}
	t := reflect.TypeFor[Profile]()
	for i := range t.NumField() {
		key, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if !reflect.DeepEqual(ma[key], mb[key]) {
			return key
		}
	}
	return ""
}

// profileFields is a profile as YAML writes it, as a mapping: nil and empty
// lists and mappings alike.
func profileFields(p Profile) (map[string]any, error) {
	b, err := yaml.Marshal(p)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	return m, yaml.Unmarshal(b, &m)
}

// ParseProfile parses and checks one profile in YAML, as the files in
// linkage/profiles hold them; name is the file, for errors. Its error is a
// [*SpecError] whose errors each name a field path (or, for a file that is
// not YAML, a line).
func ParseProfile(b []byte, name string) (Profile, error) {
	var p Profile
	if errs := yamlfield.Decode(b, &p); len(errs) > 0 {
		return Profile{}, &SpecError{File: name, Errors: errs}
	}
	if p.Name == "" {
		return Profile{}, &SpecError{File: name, Errors: []error{&FieldError{Path: "name", Msg: "missing"}}}
	}
	if _, err := p.resolve(""); err != nil {
		return Profile{}, &SpecError{File: name, Errors: []error{err}}
	}
	return p, nil
}

var columnRange = regexp.MustCompile(`^(.*?)(\d+)\.\.(.*?)(\d+)$`)

// expandColumns expands ranges such as DIA1..DIA30.
func expandColumns(cols []string) ([]string, error) {
	var out []string
	for _, c := range cols {
		m := columnRange.FindStringSubmatch(c)
		if m == nil {
			out = append(out, c)
			continue
		}
		if m[1] != m[3] {
			return nil, fmt.Errorf("column range %q: both ends need the same prefix", c)
		}
		from, _ := strconv.Atoi(m[2])
		to, _ := strconv.Atoi(m[4])
		if to < from || to-from > 500 {
			return nil, fmt.Errorf("column range %q: want FROM..TO with FROM <= TO", c)
		}
		for i := from; i <= to; i++ {
			out = append(out, m[1]+strconv.Itoa(i))
		}
	}
	return out, nil
}

// resolved is a profile with its defaults applied, its column ranges
// expanded and a job's renames applied, ready for ingestion.
type resolved struct {
	Profile
	header bool
	codes  []CodeGroup // expanded
}

// validate checks a profile after overrides; path names it in errors.
func (p *Profile) resolve(path string) (resolved, error) {
	r := resolved{Profile: *p, header: p.Header == nil || *p.Header}
	bad := func(field, format string, args ...any) (resolved, error) {
		if path != "" {
			field = path + "." + field
		}
		return resolved{}, &FieldError{Path: field, Msg: fmt.Sprintf(format, args...)}
	}
	switch r.Kind {
	case KindEvents, KindList, KindHistory:
	default:
		return bad("kind", "unknown kind %q, want events, list or history", r.Kind)
	}
	switch r.Format {
	case "", "csv":
		r.Format = "csv"
	case "parquet":
	default:
		return bad("format", "unknown format %q, want csv or parquet", r.Format)
	}
	if r.Delimiter == "" {
		r.Delimiter = ";"
	}
	if len(r.Delimiter) != 1 || r.Delimiter == "\"" || r.Delimiter == "\n" || r.Delimiter == "\r" {
		return bad("delimiter", "%q: want one character other than a quote or a line break", r.Delimiter)
	}
	if r.Quote == "" {
		r.Quote = `"`
	}
	if len(r.Quote) != 1 || r.Quote == r.Delimiter {
		return bad("quote", "%q: want one character other than the delimiter", r.Quote)
	}
	switch r.Encoding {
	case "":
		r.Encoding = EncodingUTF8
	case EncodingUTF8, EncodingLatin, EncodingCP:
	default:
		return bad("encoding", "unknown encoding %q, want utf-8, latin-1 or windows-1252", r.Encoding)
	}
	switch r.Compression {
	case "":
		r.Compression = "auto"
	case "auto", "none", "gzip", "zstd":
	default:
		return bad("compression", "unknown compression %q, want auto, none, gzip or zstd", r.Compression)
	}
	if !r.header && len(r.Columns) == 0 {
		return bad("columns", "a file without a header needs its column names in order")
	}
	switch r.Kind {
	case KindHistory:
		if r.History == nil || r.History.Old == "" || r.History.New == "" {
			return bad("history", "a history profile needs history.old and history.new")
		}
	default:
		if r.Identity == "" {
			return bad("identity", "missing: which column holds the identity number?")
		}
	}
	for col, f := range r.Dates {
		switch f {
		case DateYYYYMMDD, DateISO, DateRegister:
		default:
			return bad("dates."+col, "unknown date format %q, want YYYYMMDD, YYYY-MM-DD or register", f)
		}
	}
	if r.EventDate != "" {
		if _, ok := r.Dates[r.EventDate]; !ok {
			return bad("event_date", "%q is not among the date columns", r.EventDate)
		}
	}
	seen := map[string]bool{}
	for i, g := range r.Codes {
		if g.Group == "" || seen[g.Group] {
			return bad(fmt.Sprintf("codes[%d].group", i), "want a unique group name")
		}
		seen[g.Group] = true
		cols, err := expandColumns(g.Columns)
		if err != nil {
			return bad(fmt.Sprintf("codes[%d].columns", i), "%v", err)
		}
		if len(cols) == 0 {
			return bad(fmt.Sprintf("codes[%d].columns", i), "no columns")
		}
		g.Columns = cols
		r.codes = append(r.codes, g)
	}
	return r, nil
}

// required returns the columns the profile needs in the file.
func (r *resolved) required() []string {
	var cols []string
	add := func(c string) {
		if c != "" && !slices.Contains(cols, c) {
			cols = append(cols, c)
		}
	}
	add(r.Identity)
	if r.History != nil {
		add(r.History.Old)
		add(r.History.New)
		add(r.History.Date)
	}
	add(r.EventDate)
	dates := make([]string, 0, len(r.Dates))
	for c := range r.Dates {
		dates = append(dates, c)
	}
	sort.Strings(dates)
	for _, c := range dates {
		add(c)
	}
	for _, g := range r.codes {
		for _, c := range g.Columns {
			add(c)
		}
	}
	return cols
}

// rename applies a job's column renames (profile name -> file name).
func (p *Profile) rename(m map[string]string) {
	if len(m) == 0 {
		return
	}
	ren := func(c string) string {
		if n, ok := m[c]; ok {
			return n
		}
		return c
	}
	p.Identity = ren(p.Identity)
	p.EventDate = ren(p.EventDate)
	if p.History != nil {
		h := *p.History
		h.Old, h.New, h.Date = ren(h.Old), ren(h.New), ren(h.Date)
		p.History = &h
	}
	dates := map[string]string{}
	for c, f := range p.Dates {
		dates[ren(c)] = f
	}
	p.Dates = dates
	codes := make([]CodeGroup, len(p.Codes))
	for i, g := range p.Codes {
		cols, err := expandColumns(g.Columns)
		if err != nil {
			cols = g.Columns // reported by resolve
		}
		g.Columns = make([]string, len(cols))
		for j, c := range cols {
			g.Columns[j] = ren(c)
		}
		codes[i] = g
	}
	p.Codes = codes
	cols := make([]string, len(p.Columns))
	for i, c := range p.Columns {
		cols[i] = ren(c)
	}
	p.Columns = cols
}

// profileNames lists names for error messages.
func profileNames(m map[string]Profile) string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// ExpandColumns expands a column name or a range such as DIA1..DIA30.
func ExpandColumns(spec string) ([]string, error) { return expandColumns([]string{spec}) }
