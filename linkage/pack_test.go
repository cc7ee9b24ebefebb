package linkage

import (
	"bufio"
	"context"
	"database/sql"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/duckdb/duckdb-go/v2"

	"github.com/lopnr/lopnr/linkage/personnummer"
)

// TestPackUnpack checks that what the identity function packs into a
// number and unpackSQL takes apart in DuckDB is what the personnummer
// package says of each value: current number, reason, the number the
// history changed, sex and birth date.
func TestPackUnpack(t *testing.T) {
	if n := len(personnummer.Reasons()); n > packReasonMask {
		t.Fatalf("%d reasons do not fit in pack's %d bits", n, 4)
	}
	var raws []string
	for _, file := range []string{"testpersonnummer.txt", "testsamordningsnummer.txt"} {
		f, err := os.Open("../testdata/skatteverket/" + file)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for i := 0; sc.Scan() && i < 300; i++ {
			n := sc.Text()
			raws = append(raws, n, n[2:8]+"-"+n[8:], n[:11]+string('0'+(n[11]-'0'+1)%10)) // as is, ten digits, a wrong check digit
		}
		f.Close()
	}
	raws = append(raws, "", "  ", "abc", "19000101-0000")
	ref := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	p := personnummer.NewParser(ref)
	old, nw := p.Parse(raws[0]), p.Parse(raws[3])
	reused := p.Parse(raws[6])
	h := personnummer.NewHistory([]personnummer.Change{{Old: old, New: nw, Date: ref}}, []personnummer.Number{reused})

	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := duckdb.RegisterScalarUDF(conn, "lopnr_identity", identityUDF{p, h}); err != nil {
		t.Fatal(err)
	}
	if err := duckdb.RegisterScalarUDF(conn, "lopnr_changed_from", changedFromUDF{p}); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, `CREATE TABLE t (raw VARCHAR)`); err != nil {
		t.Fatal(err)
	}
	for _, r := range raws {
		if _, err := conn.ExecContext(ctx, `INSERT INTO t VALUES (?)`, r); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := conn.QueryContext(ctx, `SELECT raw, coalesce(canonical::VARCHAR, ''), coalesce(`+reasonNamesSQL+`[reason], ''),
		coalesce(changed_from, ''), coalesce(`+sexSQL+`, ''), coalesce(strftime(birth, '%Y-%m-%d'), '')
		FROM (SELECT `+unpackSQL+` FROM (SELECT raw, lopnr_identity(raw) AS p FROM t)) i`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	seen, changed := 0, 0
	for rows.Next() {
		var raw, canonical, reason, from, sex, birth string
		if err := rows.Scan(&raw, &canonical, &reason, &from, &sex, &birth); err != nil {
			t.Fatal(err)
		}
		n := p.Parse(raw)
		cur, why := h.Resolve(n)
		if why == personnummer.OK {
			why = cur.LinkReason()
		}
		var want [5]string
		if why != personnummer.OK {
			want[1] = why.String()
		} else {
			k := cur.Key()
			want[0] = strconv.Itoa(must(strconv.Atoi(string(k[:]))))
			if cur.Key() != n.Key() {
				want[2] = n.Canonical()
				changed++
			}
			want[3] = cur.Sex().String()
			if b, ok := cur.BirthDate(); ok {
				want[4] = b.Format(time.DateOnly)
			}
		}
		if got := [5]string{canonical, reason, from, sex, birth}; got != want {
			t.Errorf("value %d of %d: got %q, want %q", seen, len(raws), got, want)
		}
		seen++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if seen != len(raws) || changed != 1 {
		t.Fatalf("%d values (want %d), %d changed (want 1)", seen, len(raws), changed)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
