// Package readcsv is the benchmarks' baseline for ingestion: every source
// of a job read into a table with DuckDB's own CSV reader, as a team's
// script first does — no identity handling, no linking. bench/linkbench
// and go run ./bench both compare lopnr's normalisation with it. It keeps
// the columns lopnr keeps (linkage.UsedColumns), as a script selects the
// columns it uses, so that both sides hold the same data.
package readcsv

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/text/encoding/charmap"

	"github.com/lopnr/lopnr/linkage"
)

// Sources reads every source of spec into tables t0, t1, … of db and
// returns the rows read. A windows-1252 file, which DuckDB cannot read, is
// converted into tmp first, as a script would with iconv.
func Sources(ctx context.Context, db *sql.DB, spec *linkage.JobSpec, tmp string) (int64, error) {
	var total int64
	for i, s := range spec.Sources {
		file, opts := spec.File(i), ""
		switch s.Encoding {
		case linkage.EncodingLatin:
			opts = ", encoding = 'latin-1'"
		case linkage.EncodingCP:
			file = filepath.Join(tmp, s.Name+".utf8")
			if err := toUTF8(spec.File(i), file); err != nil {
				return total, err
			}
		}
		from := fmt.Sprintf("read_csv('%s', all_varchar = true%s)", file, opts)
		cols, err := columns(ctx, db, from)
		if err != nil {
			return total, fmt.Errorf("%s: %v", s.Name, err)
		}
		var list []string
		for _, c := range linkage.UsedColumns(spec, i, cols) {
			list = append(list, linkage.Ident(c))
		}
		q := fmt.Sprintf("CREATE TABLE t%d AS SELECT %s FROM %s", i, strings.Join(list, ", "), from)
		if _, err := db.ExecContext(ctx, q); err != nil {
			return total, fmt.Errorf("%s: %v", s.Name, err)
		}
		var n int64
		if err := db.QueryRowContext(ctx, fmt.Sprintf("SELECT count(*) FROM t%d", i)).Scan(&n); err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}

// columns returns the columns of a table function's rows.
func columns(ctx context.Context, db *sql.DB, from string) ([]string, error) {
	rows, err := db.QueryContext(ctx, "SELECT column_name FROM (DESCRIBE SELECT * FROM "+from+")")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var cols []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, err
		}
		cols = append(cols, c)
	}
	return cols, rows.Err()
}

func toUTF8(in, out string) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	o, err := os.Create(out)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(o, 256<<10)
	_, err = io.Copy(w, charmap.Windows1252.NewDecoder().Reader(f))
	if err == nil {
		err = w.Flush()
	}
	if cerr := o.Close(); err == nil {
		err = cerr
	}
	return err
}
