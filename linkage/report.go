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
	"time"

	"github.com/lopnr/lopnr/linkage/personnummer"
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
	// Everything is counted from ids, which holds each identity value's
	// rows per source (n_0, n_1, ...), and cohort_ids, its rows of cohort
	// members; no source is read again.
	sources := r.dataSources()
	var sums, persons, changed, bits, quarantine []string
	for i, s := range sources {
		rep.Sources = append(rep.Sources, SourceReport{Name: s.name, Profile: r.spec.Sources[s.index].Profile, File: filepath.Base(s.file), Quarantined: map[string]int64{}})
		sums = append(sums, fmt.Sprintf("sum(n_%d)::BIGINT", i))
		persons = append(persons, fmt.Sprintf("count(*) FILTER (WHERE mask & %d::UBIGINT <> 0)", uint64(1)<<i))
		changed = append(changed, fmt.Sprintf("count(DISTINCT changed_from) FILTER (WHERE n_%d > 0)", i))
		bits = append(bits, fmt.Sprintf("CASE WHEN n_%d > 0 THEN %d::UBIGINT ELSE 0::UBIGINT END", i, uint64(1)<<i))
		quarantine = append(quarantine, fmt.Sprintf("SELECT %s, %s[reason], raw, n_%d FROM ids WHERE reason IS NOT NULL AND n_%d > 0", sqlString(s.name), reasonNamesSQL, i, i))
	}
	if len(sources) == 0 {
		return rep, nil
	}

	// Rows by reason: NULL is the rows that link.
	err := r.eachRow(ctx, `SELECT reason, `+strings.Join(sums, ", ")+` FROM ids GROUP BY reason`, func(rows *sql.Rows) error {
		var reason sql.NullInt64
		n := make([]int64, len(sources))
		dest := []any{&reason}
		for i := range n {
			dest = append(dest, &n[i])
		}
		if err := rows.Scan(dest...); err != nil {
			return err
		}
		for i := range sources {
			sr := &rep.Sources[i]
			switch {
			case n[i] == 0:
			case reason.Valid:
				sr.Quarantined[personnummer.Reason(reason.Int64).String()] = n[i]
				sr.Rows += n[i]
			default:
				sr.LinkableRows = n[i]
				sr.Rows += n[i]
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i, s := range sources {
		if s.emptyRows > 0 {
			rep.Sources[i].Quarantined[personnummer.Empty.String()] += s.emptyRows
			rep.Sources[i].Rows += s.emptyRows
		}
	}
	// Persons in each source: each current number once, with the bit mask
	// of the sources it is in (MaxSources keeps it within 64 bits).
	err = r.eachRow(ctx, `SELECT `+strings.Join(persons, ", ")+` FROM (
		SELECT bit_or(`+strings.Join(bits, " | ")+`) AS mask FROM ids WHERE canonical IS NOT NULL GROUP BY canonical)`,
		rep.scanPerSource(func(s *SourceReport) *int64 { return &s.Persons }))
	if err != nil {
		return nil, err
	}
	// The numbers the history changed, in each source: few values.
	err = r.eachRow(ctx, `SELECT `+strings.Join(changed, ", ")+` FROM ids WHERE changed_from IS NOT NULL`,
		rep.scanPerSource(func(s *SourceReport) *int64 { return &s.ChangedNumbersResolved }))
	if err != nil {
		return nil, err
	}
	// Each cohort member's sources as a bit mask (MaxSources keeps it
	// within 64 bits): the overlap, and the members found in each source.
	found := int64(0)
	err = r.eachRow(ctx, `SELECT mask, count(*) FROM (SELECT bit_or(`+strings.Join(bits, " | ")+`) AS mask FROM cohort_ids GROUP BY canonical) GROUP BY mask`, func(rows *sql.Rows) error {
		var mask uint64
		var n int64
		if err := rows.Scan(&mask, &n); err != nil {
			return err
		}
		var in []string
		for i, s := range sources {
			if mask&(1<<i) != 0 {
				in = append(in, s.name)
				rep.Sources[i].CohortPersons += n
			}
		}
		if len(in) > 0 {
			rep.Overlap[strings.Join(in, "+")] += n
			found += n
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if none := rep.Cohort.Persons - found; none > 0 {
		rep.Overlap["(none)"] = none
	}

	// The quarantine: every identity value that could not be linked, by
	// source and reason, with its number of rows. It stays in the run's
	// database (WriteQuarantine writes it out) and never enters the report.
	if _, err := r.exec(ctx, `CREATE TABLE quarantine (source VARCHAR, reason VARCHAR, identity VARCHAR, rows BIGINT)`); err != nil {
		return nil, err
	}
	if _, err := r.exec(ctx, `INSERT INTO quarantine `+strings.Join(quarantine, " UNION ALL ")); err != nil {
		return nil, fmt.Errorf("report: %s", sanitize(err))
	}
	for _, s := range sources {
		if s.emptyRows > 0 {
			if _, err := r.exec(ctx, `INSERT INTO quarantine VALUES (?, ?, NULL, ?)`, s.name, personnummer.Empty.String(), s.emptyRows); err != nil {
				return nil, err
			}
		}
	}
	return rep, nil
}

// scanPerSource scans a row of one count per source, in the order of
// rep.Sources, into the field of each source's report.
func (rep *Report) scanPerSource(field func(*SourceReport) *int64) func(*sql.Rows) error {
	return func(rows *sql.Rows) error {
		dest := make([]any, len(rep.Sources))
		for i := range rep.Sources {
			dest[i] = field(&rep.Sources[i])
		}
		return rows.Scan(dest...)
	}
}

// eachRow runs a query and calls fn for each row.
func (r *run) eachRow(ctx context.Context, q string, fn func(*sql.Rows) error) error {
	if traceSQL {
		defer r.trace(time.Now(), q)
	}
	rows, err := r.conn.QueryContext(ctx, q)
	if err != nil {
		return fmt.Errorf("report: %s", sanitize(err))
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("report: %s", sanitize(err))
	}
	return nil
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
