package extract

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"golang.org/x/text/unicode/rangetable"

	"github.com/duckdb/duckdb-go/v2"

	"github.com/lopnr/lopnr/linkage"
	"github.com/lopnr/lopnr/linkage/personnummer"
)

// ErrLeak is wrapped by the leak guard's error.
var ErrLeak = errors.New("identity numbers in an output")

// LeakError names an output column that holds values shaped like identity
// numbers with a valid check digit, or whose name is one. It never holds
// a value, nor such a name.
type LeakError struct {
	File string
	// Column is the column's name; for a column named with an identity
	// number (Header), its number, from 1.
	Column string
	Header bool
	Values int64
}

func (e *LeakError) Error() string {
	if e.Header {
		return fmt.Sprintf("leak guard: %s, column %s of the header: its name is an identity number (personnummer, samordningsnummer, interim or reserve number with a valid check digit); the delivery is stopped", e.File, e.Column)
	}
	return fmt.Sprintf("leak guard: %s, column %s: %d values are identity numbers (personnummer, samordningsnummer, interim or reserve numbers with a valid check digit); the delivery is stopped", e.File, e.Column, e.Values)
}

func (e *LeakError) Unwrap() error { return ErrLeak }

// candidate is a cheap prefilter, run by DuckDB on every value: digits in
// any of the forms of an identity number (10 or 12 digits, a separator, an
// interim letter), not inside a longer run of digits; or a character that
// fold reads as part of a number, where it may be inside one: a decimal
// digit other than 0-9 anywhere, or one of the other characters fold
// changes (a dash, a plus, a character nothing shows) after a character a
// number is written with. Only values it matches reach the exact check in
// Go.
var candidate = `(^|[^0-9])([0-9]{6}|[0-9]{8})[-+]?[0-9TRSUWXJKLMNtrsuwxjklmn][0-9]{3}([^0-9]|$)|(^|[^0-9])[0-9]{8}[KMXkmx][0-9]{3}([^0-9]|$)` +
	`|[0-9+\-TRSUWXJKLMNtrsuwxjklmn][` + reClass(foldedParts) + `]|[` + reClass(foldedDigits) + `]`

// How fold reads a character other than ASCII, as a reader of the
// delivery would: a decimal digit of any script (fullwidth ０-９, Arabic-
// Indic …) is that digit, a dash (U+2010-U+2015, any other of Unicode's
// dash punctuation) or the minus sign is '-', a fullwidth or small plus is
// '+', and a character that shows nothing (a soft hyphen, a zero-width
// space, a format or combining mark) is not there. Spaces are left as
// they are: see docs/delivery.md.
var (
	foldedDigits    = unicode.Nd
	foldedInvisible = []*unicode.RangeTable{unicode.Cf, unicode.Mn, unicode.Me}
	foldedParts     = rangetable.Merge(append([]*unicode.RangeTable{unicode.Pd, rangetable.New(0x2212, 0xfe62, 0xff0b)}, foldedInvisible...)...)
)

// fold returns the character r stands for in an identity number as a
// reader takes it: '0'-'9' for a decimal digit, '-' for a dash or minus
// sign, '+' for a plus; -1 for a character that shows nothing; r itself
// for anything else (ASCII included).
func fold(r rune) rune {
	switch {
	case r < 0x80:
		return r
	case r < 0x300:
		if r == 0xad { // a soft hyphen
			return -1
		}
		return r
	case unicode.Is(unicode.Nd, r):
		return '0' + digitValue(r)
	case r == 0x2212 || unicode.Is(unicode.Pd, r):
		return '-'
	case r == 0xfe62 || r == 0xff0b:
		return '+'
	case unicode.In(r, foldedInvisible...):
		return -1
	}
	return r
}

// digitValue is the value of the decimal digit r: Unicode assigns them in
// whole runs of 0 to 9, which unicode.Nd's ranges hold (TestFoldDigits).
func digitValue(r rune) rune {
	for _, g := range unicode.Nd.R16 {
		if r <= rune(g.Hi) {
			return (r - rune(g.Lo)) % 10
		}
	}
	for _, g := range unicode.Nd.R32 {
		if r <= rune(g.Hi) {
			return (r - rune(g.Lo)) % 10
		}
	}
	return 0
}

// foldString is s with fold applied to each character; s itself when it
// is ASCII.
func foldString(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return strings.Map(fold, s)
		}
	}
	return s
}

// reClass writes the characters of t other than ASCII as the inside of a
// regular expression's character class.
func reClass(t *unicode.RangeTable) string {
	var b strings.Builder
	add := func(lo, hi, stride uint32) {
		for r := lo; r <= hi; r += stride {
			if r < 0x80 {
				continue
			}
			end := r
			if stride == 1 {
				end = hi
			}
			fmt.Fprintf(&b, `\x{%x}`, r)
			if end > r {
				fmt.Fprintf(&b, `-\x{%x}`, end)
			}
			if stride == 1 {
				break
			}
		}
	}
	for _, g := range t.R16 {
		add(uint32(g.Lo), uint32(g.Hi), uint32(g.Stride))
	}
	for _, g := range t.R32 {
		add(g.Lo, g.Hi, g.Stride)
	}
	return b.String()
}

// pnrScanUDF is lopnr_has_identity(value): whether any candidate in the
// value parses as an identity number of any kind. A reference date far
// ahead makes no birth date "future", so nothing slips through for that.
type pnrScanUDF struct{ p *personnummer.Parser }

func (u pnrScanUDF) Config() duckdb.ScalarFuncConfig {
	v, _ := duckdb.NewTypeInfo(duckdb.TYPE_VARCHAR)
	b, _ := duckdb.NewTypeInfo(duckdb.TYPE_BOOLEAN)
	return duckdb.ScalarFuncConfig{InputTypeInfos: []duckdb.TypeInfo{v}, ResultTypeInfo: b}
}

func (u pnrScanUDF) Executor() duckdb.ScalarFuncExecutor {
	return duckdb.ScalarFuncExecutor{RowExecutor: func(values []driver.Value) (any, error) {
		s, _ := values[0].(string)
		return hasIdentity(u.p, s), nil
	}}
}

// hasIdentity reports whether s holds an identity number in any form:
// every run of digits, separators and interim or reserve letters of the
// right lengths is tried, after fold (a number written with an en dash or
// fullwidth digits is a number).
func hasIdentity(p *personnummer.Parser, s string) bool {
	s = foldString(s)
	isPart := func(c byte) bool {
		return c >= '0' && c <= '9' || c == '-' || c == '+' || strings.IndexByte("TRSUWXJKLMNtrsuwxjklmn", c) >= 0
	}
	for i := 0; i < len(s); {
		if s[i] < '0' || s[i] > '9' || (i > 0 && s[i-1] >= '0' && s[i-1] <= '9') {
			i++
			continue
		}
		j := i
		for j < len(s) && isPart(s[j]) && j-i < 13 {
			j++
		}
		for _, n := range []int{10, 11, 12, 13} {
			if i+n <= j && (i+n == len(s) || s[i+n] < '0' || s[i+n] > '9') {
				if p.Parse(s[i : i+n]).Valid() {
					return true
				}
			}
		}
		i++
	}
	return false
}

// registerLeakGuard registers lopnr_has_identity on conn (once).
func registerLeakGuard(conn *sql.Conn) error {
	p := personnummer.NewParser(time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC))
	err := duckdb.RegisterScalarUDF(conn, "lopnr_has_identity", pnrScanUDF{p})
	if err != nil && strings.Contains(err.Error(), "already exists") {
		return nil
	}
	return err
}

// guard scans every column of an output table (Parquet outputs; CSV is
// scanned on the stream by csvGuard), its name and its values: first one
// regular expression per row over all its values joined, and only if that
// finds candidates, a pass per column with the exact check, to name the
// columns.
func guard(ctx context.Context, conn *sql.Conn, table, file string, cols []column) error {
	p := personnummer.NewParser(time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC))
	for i, c := range cols {
		if hasIdentity(p, c.Name) {
			return &LeakError{File: file, Column: fmt.Sprint(i + 1), Header: true, Values: 1}
		}
	}
	var vals []string
	for _, c := range cols {
		vals = append(vals, linkage.Ident(c.Name)+"::VARCHAR")
	}
	var candidates int64
	q := fmt.Sprintf("SELECT count(*) FROM %s WHERE regexp_matches(concat_ws(chr(31), %s), %s)", linkage.Ident(table), strings.Join(vals, ", "), linkage.SQLString(candidate))
	if err := conn.QueryRowContext(ctx, q).Scan(&candidates); err != nil {
		return fmt.Errorf("leak guard %s: %s", file, linkage.Sanitize(err))
	}
	if candidates == 0 {
		return nil
	}
	if err := registerLeakGuard(conn); err != nil {
		return err
	}
	var counts []string
	for _, v := range vals {
		counts = append(counts, fmt.Sprintf("count(*) FILTER (WHERE regexp_matches(%[1]s, %[2]s) AND lopnr_has_identity(%[1]s))", v, linkage.SQLString(candidate)))
	}
	row := conn.QueryRowContext(ctx, fmt.Sprintf("SELECT %s FROM %s", strings.Join(counts, ", "), linkage.Ident(table)))
	hits := make([]int64, len(cols))
	ptrs := make([]any, len(cols))
	for i := range hits {
		ptrs[i] = &hits[i]
	}
	if err := row.Scan(ptrs...); err != nil {
		return fmt.Errorf("leak guard %s: %s", file, linkage.Sanitize(err))
	}
	var errs []error
	for i, n := range hits {
		if n > 0 {
			errs = append(errs, &LeakError{File: file, Column: cols[i].Name, Values: n})
		}
	}
	return errors.Join(errs...)
}
