package linkage

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// dateExpr is the SQL that turns a date column into a DATE: NULL when it is
// empty or not a date. A register date with 00 for an unknown month or
// day becomes the first day of the known period.
func dateExpr(col, format string) string {
	c := "trim(" + ident(col) + ")"
	switch format {
	case DateISO:
		return fmt.Sprintf("try_strptime(%s, '%%Y-%%m-%%d')::DATE", c)
	case DateRegister:
		return fmt.Sprintf(`CASE WHEN regexp_full_match(%[1]s, '[0-9]{8}') THEN try_strptime(substr(%[1]s, 1, 4)
			|| CASE WHEN substr(%[1]s, 5, 2) = '00' THEN '01' ELSE substr(%[1]s, 5, 2) END
			|| CASE WHEN substr(%[1]s, 7, 2) = '00' THEN '01' ELSE substr(%[1]s, 7, 2) END, '%%Y%%m%%d')::DATE END`, c)
	default:
		return fmt.Sprintf("try_strptime(%s, '%%Y%%m%%d')::DATE", c)
	}
}

// codeSep separates a row's codes in codesExpr: a control character,
// which no code holds.
const codeSep = "\x1f"

// codesExpr is the SQL of a row's codes in the given groups, each preceded
// by codeSep, for codesPattern to search. Plain columns are joined as they
// are; columns of several codes are split and normalised (upper case, no
// dots or spaces). Normalising the joined text as well cost a third of the
// cohort's time on 31 diagnosis columns: codesPattern skips dots and
// spaces and ignores case instead, which matches the same codes.
func codesExpr(groups []CodeGroup) string {
	var plain, parts []string
	for _, g := range groups {
		for _, c := range g.Columns {
			if g.Split != "" {
				parts = append(parts, fmt.Sprintf("array_to_string(list_transform(string_split(trim(%s), %s), x -> %s), chr(31))", ident(c), sqlString(g.Split), NormCodeSQL("x")))
			} else {
				plain = append(plain, ident(c))
			}
		}
	}
	if len(plain) > 0 {
		parts = append(parts, "concat_ws(chr(31), "+strings.Join(plain, ", ")+")")
	}
	return "chr(31) || concat_ws(chr(31), " + strings.Join(parts, ", ") + ")"
}

// codesPattern is the regular expression that finds a code starting with
// one of the prefixes (normalised: [A-Z0-9]+) in codesExpr's text: at the
// start of a code, ignoring case, dots and spaces, as NormCodeSQL would
// have them.
func codesPattern(prefixes []string) string {
	alts := make([]string, len(prefixes))
	for i, p := range prefixes {
		alts[i] = strings.Join(strings.Split(p, ""), "[. ]*")
	}
	return "(?i)" + codeSep + "[. ]*(?:" + strings.Join(alts, "|") + ")"
}

// selectCohort makes the table cohort(canonical, index_date).
func (r *run) selectCohort(ctx context.Context) error {
	c := r.spec.Cohort
	if c.List != "" {
		src := r.sourceNamed(c.List)
		_, err := r.exec(ctx, fmt.Sprintf(`CREATE TABLE cohort AS SELECT DISTINCT _canonical AS canonical, NULL::DATE AS index_date
			FROM %s WHERE _canonical IS NOT NULL`, normView(src)))
		if err != nil {
			return fmt.Errorf("cohort: %s", sanitize(err))
		}
		return r.cohortIDs(ctx)
	}
	var parts []string
	var args []any
	for _, cr := range c.Criteria {
		src := r.sourceNamed(cr.Source)
		p := src.profile
		date := "NULL::DATE"
		if p.EventDate != "" {
			date = dateExpr(p.EventDate, p.Dates[p.EventDate])
		}
		// The window first: the codes, a regular expression over every
		// code column, are looked at only in rows within it (DuckDB
		// evaluates a CASE branch only for the rows that reach it).
		var window []string
		if cr.From != "" {
			t, _ := time.Parse(time.DateOnly, cr.From)
			window = append(window, date+" >= ?")
			args = append(args, t)
		}
		if cr.To != "" {
			t, _ := time.Parse(time.DateOnly, cr.To)
			window = append(window, date+" <= ?")
			args = append(args, t)
		}
		where := strings.Join(window, " AND ")
		if len(cr.Codes) > 0 {
			groups := p.codes
			if len(cr.Groups) > 0 {
				groups = slices.DeleteFunc(slices.Clone(p.codes), func(g CodeGroup) bool { return !slices.Contains(cr.Groups, g.Group) })
			}
			var prefixes []string
			for _, code := range cr.Codes {
				prefixes = append(prefixes, normCode(code)) // [A-Z0-9]+, checked by the spec
			}
			codes := fmt.Sprintf("regexp_matches(%s, ?)", codesExpr(groups))
			args = append(args, codesPattern(prefixes))
			if where == "" {
				where = codes
			} else {
				where = fmt.Sprintf("CASE WHEN %s THEN %s ELSE false END", where, codes)
			}
		}
		// The criteria filter the source's rows before they meet ids: the
		// join then sees only the matching rows.
		sel := fmt.Sprintf("SELECT %s AS _raw, %s AS _event_date FROM %s", ident(p.Identity), date, ident(src.table))
		if where != "" {
			sel += " WHERE " + where
		}
		parts = append(parts, fmt.Sprintf(`SELECT i.canonical, s._event_date AS event_date, `+sexSQL+` AS sex, i.birth
			FROM (%s) s JOIN ids i ON s._raw = i.raw WHERE i.canonical IS NOT NULL`, sel))
	}
	var filters []string
	if c.Sex != "" {
		filters = append(filters, "sex = ?")
		args = append(args, c.Sex)
	}
	age := `(year(index_date) - year(birth) - CASE WHEN strftime(index_date, '%m%d') < strftime(birth, '%m%d') THEN 1 ELSE 0 END)`
	if c.Age != nil && c.Age.Min != nil {
		filters = append(filters, age+" >= ?")
		args = append(args, *c.Age.Min)
	}
	if c.Age != nil && c.Age.Max != nil {
		filters = append(filters, age+" <= ?")
		args = append(args, *c.Age.Max)
	}
	q := `CREATE TABLE cohort AS SELECT canonical, index_date FROM (
		SELECT canonical, min(event_date) AS index_date, any_value(sex) AS sex, any_value(birth) AS birth
		FROM (` + strings.Join(parts, " UNION ALL ") + `) GROUP BY canonical)`
	if len(filters) > 0 {
		q += " WHERE " + strings.Join(filters, " AND ")
	}
	if _, err := r.exec(ctx, q, args...); err != nil {
		return fmt.Errorf("cohort: %s", sanitize(err))
	}
	return r.cohortIDs(ctx)
}

// cohortIDs makes the table cohort_ids: the rows of ids that resolve to a
// cohort member, for cohortView.
func (r *run) cohortIDs(ctx context.Context) error {
	if _, err := r.exec(ctx, `CREATE TABLE cohort_ids AS SELECT i.* FROM ids i SEMI JOIN cohort c ON i.canonical = c.canonical`); err != nil {
		return fmt.Errorf("cohort: %s", sanitize(err))
	}
	return nil
}
