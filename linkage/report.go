package linkage

import (
	"context"
	"database/sql"
	"encoding/csv"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Report is the linkage-quality report: what was read, what linked, what
// did not and why, and how the cohort spreads over the sources. It holds
// counts only, never an identity number.
type Report struct {
	Project       string         `json:"project"`
	ReferenceDate string         `json:"reference_date"`
	Cohort        CohortReport   `json:"cohort"`
	Sources       []SourceReport `json:"sources"`
	// Overlap counts cohort members by the set of sources they are found
	// in: "par_sluten+val_sluten" -> members in exactly those two;
	// "(none)" for members in no source.
	Overlap map[string]int64 `json:"overlap"`
}

// CohortReport describes the cohort.
type CohortReport struct {
	Persons int64 `json:"persons"`
}

// SourceReport is one source's counts.
type SourceReport struct {
	Name    string `json:"name"`
	Profile string `json:"profile"`
	File    string `json:"file"`
	Rows    int64  `json:"rows"`
	// LinkableRows have a personnummer or samordningsnummer, after number
	// changes are resolved.
	LinkableRows int64 `json:"linkable_rows"`
	// Quarantined counts the other rows by reason: checksum, date, format,
	// empty, future, birthnumber, organisationsnummer, interim, reserve,
	// reused, history-cycle, history-conflict. Only reasons with rows.
	Quarantined map[string]int64 `json:"quarantined"`
	// Persons is the number of distinct persons among linkable rows.
	Persons int64 `json:"persons"`
	// CohortPersons is the number of cohort members found in the source.
	CohortPersons int64 `json:"cohort_persons"`
	// ChangedNumbersResolved is the number of distinct identity numbers in
	// the source's linkable rows that the history changed to another.
	ChangedNumbersResolved int64 `json:"changed_numbers_resolved"`
}

func (r *run) report(ctx context.Context) (*Report, error) {
	rep := &Report{Project: r.spec.Project, ReferenceDate: r.spec.RefDate().Format("2006-01-02"), Overlap: map[string]int64{}}
	// The quarantine: every identity value that could not be linked, by
	// source and reason, with its number of rows. It stays in the run's
	// database (WriteQuarantine writes it out) and never enters the report.
	if _, err := r.conn.ExecContext(ctx, `CREATE TABLE quarantine (source VARCHAR, reason VARCHAR, identity VARCHAR, rows BIGINT)`); err != nil {
		return nil, err
	}
	if err := r.conn.QueryRowContext(ctx, `SELECT count(*) FROM cohort`).Scan(&rep.Cohort.Persons); err != nil {
		return nil, err
	}
	var presence []string
	for i, s := range r.dataSources() {
		sr := SourceReport{Name: s.name, Profile: r.spec.Sources[s.index].Profile, File: filepath.Base(s.file), Quarantined: map[string]int64{}}
		// One pass over the source's rows, joined to their identities,
		// down to one row per distinct identity; everything else is
		// counted from that.
		agg := ident("agg_" + s.name)
		if _, err := r.conn.ExecContext(ctx, fmt.Sprintf(`CREATE TEMP TABLE %s AS
			SELECT _reason AS reason, _canonical AS canonical, _original AS original, _changed AS changed,
				CASE WHEN _reason IS NOT NULL THEN %s END AS raw, count(*) AS n
			FROM %s GROUP BY ALL`, agg, ident(s.profile.Identity), normView(s))); err != nil {
			return nil, fmt.Errorf("report %s: %s", s.name, sanitize(err))
		}
		if _, err := r.conn.ExecContext(ctx, fmt.Sprintf(`INSERT INTO quarantine SELECT %s, reason, raw, n FROM %s WHERE reason IS NOT NULL`,
			sqlString(s.name), agg)); err != nil {
			return nil, fmt.Errorf("report %s: %s", s.name, sanitize(err))
		}
		rows, err := r.conn.QueryContext(ctx, fmt.Sprintf(`SELECT a.reason, sum(a.n)::BIGINT, count(DISTINCT a.canonical), count(DISTINCT c.canonical),
			count(DISTINCT a.original) FILTER (WHERE a.changed)
			FROM %s a LEFT JOIN cohort c ON a.canonical = c.canonical GROUP BY a.reason`, agg))
		if err != nil {
			return nil, fmt.Errorf("report %s: %s", s.name, sanitize(err))
		}
		for rows.Next() {
			var reason sql.NullString
			var n, persons, cohort, changed int64
			if err := rows.Scan(&reason, &n, &persons, &cohort, &changed); err != nil {
				rows.Close()
				return nil, err
			}
			sr.Rows += n
			if reason.Valid {
				sr.Quarantined[reason.String] = n
			} else {
				sr.LinkableRows, sr.Persons, sr.CohortPersons, sr.ChangedNumbersResolved = n, persons, cohort, changed
			}
		}
		if err := rows.Err(); err != nil {
			rows.Close()
			return nil, err
		}
		rows.Close()
		rep.Sources = append(rep.Sources, sr)
		presence = append(presence, fmt.Sprintf(`SELECT DISTINCT a.canonical, %d AS idx, %s AS name FROM %s a JOIN cohort c ON a.canonical = c.canonical`,
			i, sqlString(s.name), agg))
	}
	if len(presence) > 0 {
		rows, err := r.conn.QueryContext(ctx, `SELECT key, count(*) FROM (
			SELECT coalesce(string_agg(p.name, '+' ORDER BY p.idx), '(none)') AS key
			FROM cohort c LEFT JOIN (`+strings.Join(presence, " UNION ALL ")+`) p ON c.canonical = p.canonical
			GROUP BY c.canonical) GROUP BY key`)
		if err != nil {
			return nil, fmt.Errorf("report overlap: %s", sanitize(err))
		}
		defer rows.Close()
		for rows.Next() {
			var key string
			var n int64
			if err := rows.Scan(&key, &n); err != nil {
				return nil, err
			}
			rep.Overlap[key] = n
		}
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// WriteText writes the report for a person to read.
func (rep *Report) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "Linkage quality: project %s, reference date %s\n\n", rep.Project, rep.ReferenceDate)
	fmt.Fprintf(w, "Cohort: %d persons\n\n", rep.Cohort.Persons)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "source\trows\tlinkable\tquarantined\tpersons\tin cohort\tnumbers changed\t")
	for _, s := range rep.Sources {
		var q int64
		for _, n := range s.Quarantined {
			q += n
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t\n", s.Name, s.Rows, s.LinkableRows, q, s.Persons, s.CohortPersons, s.ChangedNumbersResolved)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nQuarantined rows by reason:")
	for _, s := range rep.Sources {
		if len(s.Quarantined) == 0 {
			continue
		}
		reasons := make([]string, 0, len(s.Quarantined))
		for k := range s.Quarantined {
			reasons = append(reasons, k)
		}
		sort.Strings(reasons)
		var parts []string
		for _, k := range reasons {
			parts = append(parts, fmt.Sprintf("%s %d", k, s.Quarantined[k]))
		}
		fmt.Fprintf(w, "  %s: %s\n", s.Name, strings.Join(parts, ", "))
	}
	fmt.Fprintln(w, "\nCohort members by the sources they are found in:")
	keys := make([]string, 0, len(rep.Overlap))
	for k := range rep.Overlap {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if d := rep.Overlap[b] - rep.Overlap[a]; d != 0 {
			return int(d)
		}
		return strings.Compare(a, b)
	})
	const shown = 12
	for i, k := range keys {
		if i == shown {
			var rest int64
			for _, k := range keys[shown:] {
				rest += rep.Overlap[k]
			}
			fmt.Fprintf(w, "  %8d  in %d other combinations (all in the JSON report)\n", rest, len(keys)-shown)
			break
		}
		fmt.Fprintf(w, "  %8d  %s\n", rep.Overlap[k], k)
	}
	return nil
}

// WriteQuarantine writes the quarantine as CSV: source, reason, the
// identity value as written, and its number of rows. It holds identity
// values: it is for the extraction team, inside the trusted zone, to find
// and correct the rows; it is never part of a delivery.
func (res *Result) WriteQuarantine(w io.Writer) error {
	rows, err := res.conn.QueryContext(context.Background(), `SELECT source, reason, coalesce(identity, ''), rows FROM quarantine ORDER BY source, reason, identity`)
	if err != nil {
		return err
	}
	defer rows.Close()
	cw := csv.NewWriter(w)
	cw.Comma = ';'
	cw.Write([]string{"source", "reason", "identity", "rows"})
	for rows.Next() {
		var src, reason, id string
		var n int64
		if err := rows.Scan(&src, &reason, &id, &n); err != nil {
			return err
		}
		cw.Write([]string{src, reason, id, strconv.FormatInt(n, 10)})
	}
	if err := rows.Err(); err != nil {
		return err
	}
	cw.Flush()
	return cw.Error()
}
