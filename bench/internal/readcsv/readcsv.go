// Package readcsv is the benchmarks' baseline for ingestion: every source
// of a job read into a table with DuckDB's own CSV reader, as a team's
// script first does — no identity handling, no linking. bench/linkbench
// and go run ./bench both compare lopnr's normalisation with it.
package readcsv

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"path/filepath"

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
		q := fmt.Sprintf("CREATE TABLE t%d AS SELECT * FROM read_csv('%s', all_varchar = true%s)", i, file, opts)
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
