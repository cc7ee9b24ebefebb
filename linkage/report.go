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
	if err := r.conn.QueryRowContext(ctx, `SELECT count(*) FROM cohort`).Scan(&rep.Cohort.Persons); err != nil {
		return nil, err
	}
	sources := r.dataSources()
	// Every source's identity values with their rows (counted by
	// resolveIdentities), joined once to what they resolved to and to the
	// cohort: one row per source and value. Everything in the report is
	// counted from it.
	var counts, names []string
	for i, s := range sources {
		counts = append(counts, fmt.Sprintf("SELECT %d AS src, raw, n FROM %s", i, ident("cnt_"+s.name)))
		names = append(names, sqlString(s.name))
	}
	if _, err := r.exec(ctx, fmt.Sprintf(`CREATE TEMP TABLE agg AS
		SELECT c.src, %s AS reason, i.canonical, i.changed_from, c.raw, c.n, m.canonical IS NOT NULL AS in_cohort
		FROM (%s) c LEFT JOIN ids i ON c.raw = i.raw LEFT JOIN cohort m ON i.canonical = m.canonical`,
		reasonSQL, strings.Join(counts, " UNION ALL "))); err != nil {
		return nil, fmt.Errorf("report: %s", sanitize(err))
	}
	// The quarantine: every identity value that could not be linked, by
	// source and reason, with its number of rows. It stays in the run's
	// database (WriteQuarantine writes it out) and never enters the report.
	if _, err := r.exec(ctx, fmt.Sprintf(`CREATE TABLE quarantine AS
		SELECT [%s][src + 1] AS source, reason, raw AS identity, n AS rows FROM agg WHERE reason IS NOT NULL`,
		strings.Join(names, ", "))); err != nil {
		return nil, fmt.Errorf("report: %s", sanitize(err))
	}

	for _, s := range sources {
		rep.Sources = append(rep.Sources, SourceReport{Name: s.name, Profile: r.spec.Sources[s.index].Profile, File: filepath.Base(s.file), Quarantined: map[string]int64{}})
	}
	// Rows by reason, and the values the history changed.
	rows, err := r.conn.QueryContext(ctx, `SELECT src, reason, sum(n)::BIGINT, count(DISTINCT changed_from) FROM agg GROUP BY src, reason`)
	if err != nil {
		return nil, fmt.Errorf("report: %s", sanitize(err))
	}
	defer rows.Close()
	for rows.Next() {
		var src int
		var reason sql.NullString
		var n, changed int64
		if err := rows.Scan(&src, &reason, &n, &changed); err != nil {
			return nil, err
		}
		sr := &rep.Sources[src]
		sr.Rows += n
		if reason.Valid {
			sr.Quarantined[reason.String] = n
		} else {
			sr.LinkableRows, sr.ChangedNumbersResolved = n, changed
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()

	// Persons: each source's distinct current numbers, once. The overlap
	// is each cohort member's set of sources as a bit mask, named in Go
	// (MaxSources keeps it within 64 bits).
	if _, err := r.exec(ctx, `CREATE TEMP TABLE persons AS SELECT DISTINCT src, canonical, in_cohort FROM agg WHERE canonical IS NOT NULL`); err != nil {
		return nil, fmt.Errorf("report: %s", sanitize(err))
	}
	if rows, err = r.conn.QueryContext(ctx, `SELECT src, count(*), count(*) FILTER (WHERE in_cohort) FROM persons GROUP BY src`); err != nil {
		return nil, fmt.Errorf("report: %s", sanitize(err))
	}
	for rows.Next() {
		var src int
		var persons, cohort int64
		if err := rows.Scan(&src, &persons, &cohort); err != nil {
			return nil, err
		}
		rep.Sources[src].Persons, rep.Sources[src].CohortPersons = persons, cohort
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()
	if rows, err = r.conn.QueryContext(ctx, `SELECT mask, count(*) FROM (
		SELECT bit_or(1::UBIGINT << src::UBIGINT) AS mask FROM persons WHERE in_cohort GROUP BY canonical) GROUP BY mask`); err != nil {
		return nil, fmt.Errorf("report overlap: %s", sanitize(err))
	}
	found := int64(0)
	for rows.Next() {
		var mask uint64
		var n int64
		if err := rows.Scan(&mask, &n); err != nil {
			return nil, err
		}
		var in []string
		for i, s := range sources {
			if mask&(1<<i) != 0 {
				in = append(in, s.name)
			}
		}
		rep.Overlap[strings.Join(in, "+")] = n
		found += n
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()
	if none := rep.Cohort.Persons - found; none > 0 {
		rep.Overlap["(none)"] = none
	}
	// The counts have served; the quarantine keeps what it needs of them.
	drop := []string{"agg", "persons"}
	for _, s := range sources {
		drop = append(drop, "cnt_"+s.name)
	}
	for _, t := range drop {
		if _, err := r.exec(ctx, "DROP TABLE IF EXISTS "+ident(t)); err != nil {
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
