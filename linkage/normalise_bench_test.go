package linkage

// Two ways to give every row its canonical identity number, measured on the
// same table: a scalar UDF that calls into Go for every row, and what Link
// does — parse each distinct value once in Go, append the results to a
// table, and let DuckDB join.
//
//	go test -run '^$' -bench Normalise -benchtime 3x ./linkage

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"testing"
	"time"

	"github.com/duckdb/duckdb-go/v2"

	"github.com/lopnr/lopnr/linkage/personnummer"
)

const (
	benchRows     = 5_000_000
	benchDistinct = 500_000
)

// benchTable makes a table of benchRows identity strings over
// benchDistinct test numbers, as a source with ten rows a person has.
func benchTable(b *testing.B) (*sql.Conn, func()) {
	tn := testNumbers(b)
	db, err := sql.Open("duckdb", "")
	if err != nil {
		b.Fatal(err)
	}
	conn, err := db.Conn(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := conn.ExecContext(ctx, `CREATE TABLE nums (n VARCHAR)`); err != nil {
		b.Fatal(err)
	}
	err = conn.Raw(func(dc any) error {
		app, err := duckdb.NewAppenderFromConn(dc.(driver.Conn), "", "nums")
		if err != nil {
			return err
		}
		for i := 0; i < benchDistinct; i++ {
			if err := app.AppendRow(tn[i%len(tn)][:8] + fmt.Sprintf("%04d", i/len(tn))); err != nil {
				return err
			}
		}
		return app.Close()
	})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, fmt.Sprintf(`CREATE TABLE src AS SELECT n FROM nums, range(%d) ORDER BY random()`, benchRows/benchDistinct)); err != nil {
		b.Fatal(err)
	}
	return conn, func() { conn.Close(); db.Close() }
}

type canonicalUDF struct{ p *personnummer.Parser }

func (u canonicalUDF) Config() duckdb.ScalarFuncConfig {
	v, _ := duckdb.NewTypeInfo(duckdb.TYPE_VARCHAR)
	return duckdb.ScalarFuncConfig{InputTypeInfos: []duckdb.TypeInfo{v}, ResultTypeInfo: v}
}

func (u canonicalUDF) Executor() duckdb.ScalarFuncExecutor {
	return duckdb.ScalarFuncExecutor{RowExecutor: func(values []driver.Value) (any, error) {
		n := u.p.Parse(values[0].(string))
		if !n.Valid() {
			return nil, nil
		}
		return n.Canonical(), nil
	}}
}

func BenchmarkNormaliseRowUDF(b *testing.B) {
	conn, done := benchTable(b)
	defer done()
	ctx := context.Background()
	p := personnummer.NewParser(time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC))
	if err := duckdb.RegisterScalarUDF(conn, "canonical", canonicalUDF{p}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var n int64
		if err := conn.QueryRowContext(ctx, `SELECT count(canonical(n)) FROM src`).Scan(&n); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(benchRows)*float64(b.N)/b.Elapsed().Seconds()/1e6, "Mrows/s")
}

func BenchmarkNormaliseDistinct(b *testing.B) {
	conn, done := benchTable(b)
	defer done()
	ctx := context.Background()
	p := personnummer.NewParser(time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		conn.ExecContext(ctx, `DROP TABLE IF EXISTS ids`)
		if _, err := conn.ExecContext(ctx, `CREATE TABLE ids (raw VARCHAR, canonical VARCHAR)`); err != nil {
			b.Fatal(err)
		}
		rows, err := conn.QueryContext(ctx, `SELECT DISTINCT n FROM src`)
		if err != nil {
			b.Fatal(err)
		}
		var raws []string
		for rows.Next() {
			var s string
			rows.Scan(&s)
			raws = append(raws, s)
		}
		rows.Close()
		err = conn.Raw(func(dc any) error {
			app, err := duckdb.NewAppenderFromConn(dc.(driver.Conn), "", "ids")
			if err != nil {
				return err
			}
			for _, raw := range raws {
				n := p.Parse(raw)
				var c any
				if n.Valid() {
					c = n.Canonical()
				}
				if err := app.AppendRow(raw, c); err != nil {
					return err
				}
			}
			return app.Close()
		})
		if err != nil {
			b.Fatal(err)
		}
		var n int64
		if err := conn.QueryRowContext(ctx, `SELECT count(i.canonical) FROM src s LEFT JOIN ids i ON s.n = i.raw`).Scan(&n); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(benchRows)*float64(b.N)/b.Elapsed().Seconds()/1e6, "Mrows/s")
}
