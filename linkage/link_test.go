package linkage

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func testNumbers(t testing.TB) []string {
	t.Helper()
	f, err := os.Open("../testdata/skatteverket/testpersonnummer.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func flip(s string) string { return s[:len(s)-1] + string('0'+(s[len(s)-1]-'0'+1)%10) }

// TestLinkSmall links a hand-made job whose counts are worked out by hand.
func TestLinkSmall(t *testing.T) {
	tn := testNumbers(t)
	// Persons born in the 1960s-1990s: adults at their index dates.
	a, b, c, d, e, old, nw := tn[20000], tn[21000], tn[22000], tn[23000], tn[24000], tn[25000], tn[26000]
	par := "PNR;INDATUM;UTDATUM;HDIA;DIA1;DIA2;OP\n" +
		a + ";20160101;20160105;I21.9;;;FNG05\n" + // a: cohort, index 2016-01-01
		a + ";20150101;20150105;I219;;;\n" + // a: earlier event, index 2015-01-01
		b[2:8] + "-" + b[8:] + ";20170101;;E119;I220;;\n" + // b: cohort via DIA1, 10-digit form
		c + ";20100101;;I21;;;\n" + // c: outside the window
		d + ";20180101;;J189;;;I21X\n" + // d: I21 only in OP, not searched... (OP is a KVÅ group)
		flip(e) + ";20180101;;I21;;;\n" + // checksum
		";20180101;;I21;;;\n" + // empty
		old + ";20190101;;I22;;;\n" // changed number: resolves to nw, cohort
	val := "PERSONNUMMER;INSKRIVNINGSDATUM;UTSKRIVNINGSDATUM;HUVUDDIAGNOS;ATGARDSKODER\n" +
		a + ";2016-01-02;2016-01-03;I21;\n" +
		nw + ";2019-02-01;;I22;\n" +
		"\"" + c + "\";2019-02-01;;\"I2;2\";\n" +
		e + ";2019-02-01;;;\n"
	hist := "GAMMALT_PNR;NYTT_PNR;ANDRINGSDATUM\n" + old + ";" + nw + ";2018-06-01\n"
	reused := "PNR\n" + e + "\n"
	job := `project: small
epm_dnr: 2026-1
reference_date: 2026-11-25
sources:
  - {name: par, profile: par-sluten, path: par.csv, columns: [], rename: {}}
  - {name: val, profile: val-slutenvard, path: val.csv}
  - {name: hist, profile: pnr-history, path: hist.csv}
  - {name: reused, profile: cohort-list, path: reused.csv}
identity: {history: hist, reused: reused}
cohort:
  criteria:
    - {source: par, codes: [I21, I22], groups: [hdia, dia], from: 2015-01-01, to: 2024-12-31}
  age: {min: 18}
`
	// The profiles name DIA1..DIA30 and BIDIAGNOS1..15: use a profile
	// override with just the columns these files have.
	job += `profiles:
  - name: par-small
    kind: events
    identity: PNR
    event_date: INDATUM
    dates: {INDATUM: YYYYMMDD, UTDATUM: YYYYMMDD}
    codes:
      - {group: hdia, columns: [HDIA]}
      - {group: dia, columns: [DIA1..DIA2]}
      - {group: op, columns: [OP], split: " "}
  - name: val-small
    kind: events
    identity: PERSONNUMMER
    event_date: INSKRIVNINGSDATUM
    dates: {INSKRIVNINGSDATUM: YYYY-MM-DD}
    codes:
      - {group: hdia, columns: [HUVUDDIAGNOS]}
`
	job = strings.Replace(job, "profile: par-sluten", "profile: par-small", 1)
	job = strings.Replace(job, "profile: val-slutenvard", "profile: val-small", 1)
	dir := writeFiles(t, map[string]string{"par.csv": par, "val.csv": val, "hist.csv": hist, "reused.csv": reused, "job.yaml": job})
	spec, err := LoadSpec(filepath.Join(dir, "job.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Link(context.Background(), spec, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	rep := res.Report
	if rep.Cohort.Persons != 3 { // a, b, nw
		t.Errorf("cohort persons %d, want 3", rep.Cohort.Persons)
	}
	p := rep.Sources[0]
	if p.Rows != 8 || p.LinkableRows != 6 || p.Quarantined["checksum"] != 1 || p.Quarantined["empty"] != 1 || p.Persons != 5 || p.CohortPersons != 3 || p.ChangedNumbersResolved != 1 {
		t.Errorf("par: %+v", p)
	}
	v := rep.Sources[1]
	if v.Rows != 4 || v.LinkableRows != 3 || v.Quarantined["reused"] != 1 || v.Persons != 3 || v.CohortPersons != 2 || v.ChangedNumbersResolved != 0 {
		t.Errorf("val: %+v", v)
	}
	if len(rep.Sources) != 2 || rep.Overlap["par+val"] != 2 || rep.Overlap["par"] != 1 || len(rep.Overlap) != 2 {
		t.Errorf("sources %d, overlap %v", len(rep.Sources), rep.Overlap)
	}
	var q strings.Builder
	if err := res.WriteQuarantine(&q); err != nil {
		t.Fatal(err)
	}
	wantQ := "source;reason;identity;rows\npar;checksum;" + flip(e) + ";1\npar;empty;;1\nval;reused;" + e + ";1\n"
	if q.String() != wantQ {
		t.Errorf("quarantine:\n%s\nwant:\n%s", q.String(), wantQ)
	}
	var text strings.Builder
	rep.WriteText(&text)
	for _, n := range []string{a, b, c, d, e, old, nw} {
		if strings.Contains(text.String(), n) || strings.Contains(text.String(), n[2:]) {
			t.Fatal("the report holds an identity number")
		}
	}
	t.Log("\n" + text.String())
}

func TestBadFiles(t *testing.T) {
	tn := testNumbers(t)
	good := "PNR;EDATUM;FDATUM;ATC\n" + tn[100] + ";2020-01-01;;C07AB02\n"
	long := "PNR;EDATUM;FDATUM;ATC\n" + tn[100] + ";2020-01-01;;" + strings.Repeat("x", 10<<20) + "\n"
	for _, tc := range []struct {
		name, content, encoding, want string
	}{
		{"empty", "", "", "lmed.csv: empty file"},
		{"header only", "PNR;EDATUM;FDATUM;ATC\n", "", "lmed.csv: no data rows"},
		{"missing identity column", "ID;EDATUM;FDATUM;ATC\n1;2020-01-01;;x\n", "", "lmed.csv:1: column PNR: missing from the header"},
		{"wrong delimiter", "PNR,EDATUM,FDATUM,ATC\n" + tn[100] + ",2020-01-01,,x\n", "", `is the delimiter ";" right?`},
		{"ragged row", good + tn[101] + ";2020-01-01;x\n", "", "lmed.csv:3: column ATC: ragged row"},
		{"too many columns", good + tn[101] + ";2020-01-01;;x;y\n", "", "lmed.csv:3: ragged row"},
		{"unterminated quote", good + tn[101] + ";\"2020-01-01;;x\n", "", "lmed.csv:3"},
		{"invalid utf-8", good + tn[101] + ";2020-01-01;;\xff\xfe\n", "", "lmed.csv:3: column ATC: bytes that are not UTF-8"},
		{"undefined windows-1252 byte", good + tn[101] + ";2020-01-01;;\x81\n", "windows-1252", "lmed.csv:3: byte 0x81 is not a windows-1252 character"},
		{"10 MB line", long, "", "lmed.csv:2: line longer than"},
		{"duplicate column", "PNR;EDATUM;EDATUM;ATC\n", "", "column EDATUM: appears twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job := "project: bad\nreference_date: 2026-11-25\nsources:\n  - {name: lmed, profile: lmed, path: lmed.csv"
			if tc.encoding != "" {
				job += ", encoding: " + tc.encoding
			}
			job += "}\ncohort: {criteria: [{source: lmed, codes: [C07]}]}\n"
			dir := writeFiles(t, map[string]string{"lmed.csv": tc.content, "job.yaml": job})
			spec, err := LoadSpec(filepath.Join(dir, "job.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			_, err = Link(context.Background(), spec, Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			t.Log(err)
			var fe *FileError
			if !errors.As(err, &fe) {
				t.Errorf("err %T is not a *FileError", err)
			}
			for _, n := range tn[100:102] {
				if strings.Contains(err.Error(), n) {
					t.Errorf("error holds an identity number: %v", err)
				}
			}
		})
	}
}

// TestParquetAndCompressedSources reads a Parquet source, a gzip and a zstd
// CSV, a latin-1 file and a cohort given as a list.
func TestParquetAndCompressedSources(t *testing.T) {
	tn := testNumbers(t)
	dir := t.TempDir()
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// A Parquet file whose identity column is an integer, as some exports have it.
	if _, err := db.Exec(fmt.Sprintf(`COPY (SELECT * FROM (VALUES (%s::BIGINT, '2020-01-01', 'C07AB02'), (%s::BIGINT, '2021-01-01', 'A10BA02')) t(PNR, EDATUM, ATC))
		TO '%s' (FORMAT parquet)`, tn[30000], tn[30001], filepath.Join(dir, "lmed.parquet"))); err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte("PNR;EDATUM;FDATUM;ATC\n" + tn[30000] + ";2020-01-01;;C07AB02\n" + tn[30002] + ";2020-01-01;;C07AB02\n"))
	zw.Close()
	os.WriteFile(filepath.Join(dir, "lmed2.csv.gz"), gz.Bytes(), 0o600)
	enc, _ := zstd.NewWriter(nil)
	os.WriteFile(filepath.Join(dir, "lmed3.csv.zst"), enc.EncodeAll([]byte("PNR;EDATUM;FDATUM;ATC\n"+tn[30003]+";2020-01-01;;N02BE01\n"), nil), 0o600)
	os.WriteFile(filepath.Join(dir, "tc.csv"), []byte("Personnummer;Datum;Kod;Text\r\n"+tn[30000]+";2020-02-02;I219;\"Br\xf6stsm\xe4rta; akut\"\r\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "cohort.csv"), []byte("PNR\n"+tn[30000]+"\n"+tn[30003]+"\n"+tn[39000]+"\n"), 0o600)
	job := `project: formats
reference_date: 2026-11-25
profiles:
  - {name: lmed-parquet, kind: events, format: parquet, identity: PNR, event_date: EDATUM, dates: {EDATUM: YYYY-MM-DD}, codes: [{group: atc, columns: [ATC]}]}
sources:
  - {name: lmed_pq, profile: lmed-parquet, path: lmed.parquet}
  - {name: lmed_gz, profile: lmed, path: lmed2.csv.gz}
  - {name: lmed_zst, profile: lmed, path: lmed3.csv.zst}
  - {name: tc, profile: takecare, path: tc.csv, encoding: latin-1}
  - {name: cohort, profile: cohort-list, path: cohort.csv}
cohort: {list: cohort}
`
	os.WriteFile(filepath.Join(dir, "job.yaml"), []byte(job), 0o600)
	spec, err := LoadSpec(filepath.Join(dir, "job.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Link(context.Background(), spec, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	rep := res.Report
	got := map[string][2]int64{}
	for _, s := range rep.Sources {
		got[s.Name] = [2]int64{s.Rows, s.CohortPersons}
	}
	want := map[string][2]int64{"lmed_pq": {2, 1}, "lmed_gz": {2, 1}, "lmed_zst": {1, 1}, "tc": {1, 1}, "cohort": {3, 3}}
	if rep.Cohort.Persons != 3 || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("cohort %d, sources %v; want 3, %v", rep.Cohort.Persons, got, want)
	}
	if rep.Overlap["lmed_pq+lmed_gz+tc+cohort"] != 1 || rep.Overlap["lmed_zst+cohort"] != 1 || rep.Overlap["cohort"] != 1 {
		t.Errorf("overlap %v", rep.Overlap)
	}
}
