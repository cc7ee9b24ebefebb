package linkage

import (
	"database/sql"
	"slices"
	"strings"
	"testing"
)

// TestCodesPattern checks that the cohort's code search over the raw
// columns finds exactly the rows whose codes, normalised as normCode does,
// start with a prefix.
func TestCodesPattern(t *testing.T) {
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE s (HDIA VARCHAR, DIA1 VARCHAR, OTHER VARCHAR)`); err != nil {
		t.Fatal(err)
	}
	rows := [][3]any{
		{"I21", nil, nil}, {"i21.9", nil, nil}, {" I 2 1", nil, nil}, {"I2.1", nil, nil}, {".I22", nil, nil},
		{"I2", nil, nil}, {"I23", nil, nil}, {"XI21", nil, nil}, {"X I21", nil, nil}, {"", "i22x", nil},
		{nil, nil, nil}, {"A01", "B02", nil}, {"A01", "Z I21", nil}, {"A01", nil, "I21 I22"}, {"I\t21", nil, nil},
		{"e11", "I2 2.0", nil}, {"I21", "I21", nil}, {"Ä21", nil, nil},
	}
	for _, r := range rows {
		if _, err := db.Exec(`INSERT INTO s VALUES (?, ?, ?)`, r[0], r[1], r[2]); err != nil {
			t.Fatal(err)
		}
	}
	prefixes := []string{"I21", "I22"}
	groups := []CodeGroup{{Group: "dia", Columns: []string{"HDIA", "DIA1"}}, {Group: "other", Columns: []string{"OTHER"}, Split: " "}}
	q := `SELECT coalesce(HDIA, '?'), coalesce(DIA1, '?'), coalesce(OTHER, '?'), regexp_matches(` + codesExpr(groups) + `, ?) FROM s`
	res, err := db.Query(q, codesPattern(prefixes))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	n := 0
	for res.Next() {
		var a, b, c string
		var got bool
		if err := res.Scan(&a, &b, &c, &got); err != nil {
			t.Fatal(err)
		}
		codes := []string{a, b}
		codes = append(codes, strings.Fields(c)...)
		want := slices.ContainsFunc(codes, func(code string) bool {
			return code != "?" && slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(normCode(code), p) })
		})
		if got != want {
			t.Errorf("codes %q, %q, %q: matched %t, want %t", a, b, c, got, want)
		}
		n++
	}
	if err := res.Err(); err != nil {
		t.Fatal(err)
	}
	if n != len(rows) {
		t.Fatalf("%d rows, want %d", n, len(rows))
	}
}
