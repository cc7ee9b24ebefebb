package linkage

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/lopnr/lopnr/linkage/personnummer"
)

// LinkedSource is what the extract stage needs of one source: its columns,
// its profile's identity, date and code columns, and the SQL of its rows
// with their identities resolved.
type LinkedSource struct {
	Name     string
	Kind     string // events, list, history
	Columns  []string
	Identity string
	Dates    map[string]string // column -> format
	Codes    []CodeGroup       // with ranges expanded
	// CohortView is a parenthesised SELECT of the source's rows of cohort
	// members: every file column, and _canonical (the member's current
	// number), _kind, _original, _changed, _sex and _birth.
	CohortView string
}

// Sources returns the run's sources in spec order.
func (res *Result) Sources() []LinkedSource {
	out := make([]LinkedSource, 0, len(res.src))
	for _, s := range res.src {
		out = append(out, LinkedSource{
			Name: s.name, Kind: s.profile.Kind, Columns: slices.Clone(s.columns), Identity: s.profile.Identity,
			Dates: s.profile.Dates, Codes: s.profile.codes, CohortView: cohortView(s),
		})
	}
	return out
}

// Spec returns the job spec.
func (res *Result) Spec() *JobSpec { return res.spec }

// Conn returns the run's DuckDB connection. External access is disabled:
// it can write only into OutDir.
func (res *Result) Conn() *sql.Conn { return res.conn }

// OutDir is the one directory DuckDB may write to, for staging output.
func (res *Result) OutDir() string { return filepath.Join(res.work, "out") }

// HasIndexDate reports whether cohort members have an index date (a cohort
// from criteria, not from a list).
func (res *Result) HasIndexDate() bool { return res.spec.Cohort.List == "" }

// CohortNumbers returns the cohort members' identity numbers, in canonical
// order. In the run's tables (cohort, and _canonical of the views) they
// are BIGINT: the canonical digits YYYYMMDDNNNC as a number, which
// CanonicalKey gives for a Number.
func (res *Result) CohortNumbers(ctx context.Context) ([]personnummer.Number, error) {
	rows, err := res.conn.QueryContext(ctx, `SELECT canonical FROM cohort ORDER BY canonical`)
	if err != nil {
		return nil, fmt.Errorf("cohort: %s", sanitize(err))
	}
	defer rows.Close()
	p := personnummer.NewParser(res.spec.RefDate())
	var out []personnummer.Number
	buf := make([]byte, 0, 12)
	for rows.Next() {
		var c int64
		if err := rows.Scan(&c); err != nil {
			return nil, err
		}
		n := p.Parse(string(strconv.AppendInt(buf[:0], c, 10)))
		if !n.Linkable() {
			return nil, fmt.Errorf("cohort: a stored canonical number does not parse (%s)", n)
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// NormCodeSQL is the SQL that normalises a code expression for comparison:
// upper case, no dots or spaces.
func NormCodeSQL(expr string) string {
	return fmt.Sprintf("upper(replace(replace(%s, '.', ''), ' ', ''))", expr)
}

// DateSQL is the SQL that turns a date column of the given format into a
// DATE (NULL when empty or invalid).
func DateSQL(col, format string) string { return dateExpr(col, format) }

// Ident quotes an SQL identifier; SQLString quotes an SQL string literal.
func Ident(s string) string     { return ident(s) }
func SQLString(s string) string { return sqlString(s) }

// Sanitize returns a DuckDB error's first line without anything that could
// be a value from a file.
func Sanitize(err error) string { return sanitize(err) }

// CanonicalKey is a linkable number as the run's tables hold it: its
// canonical digits as a BIGINT.
func CanonicalKey(n personnummer.Number) (int64, error) {
	if !n.Linkable() {
		return 0, fmt.Errorf("canonical key of a number that does not link (%s)", n)
	}
	return int64(canonicalKey(n)), nil
}

// canonicalKey is the canonical digits of a linkable number (12 digits,
// no letter) as a number, below 2^40.
func canonicalKey(n personnummer.Number) uint64 {
	var v uint64
	for _, d := range n.Key() {
		v = v*10 + uint64(d-'0')
	}
	return v
}
