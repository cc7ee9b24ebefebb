package extract

import (
	"bytes"
	"crypto/ed25519"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/lopnr/lopnr/internal/yamlfield"
	"github.com/lopnr/lopnr/linkage"
	"github.com/lopnr/lopnr/linkage/personnummer"
)

// The fuzz targets of the parsers that read what people and DuckDB send
// us. Seeds: testdata/fuzz.

// FuzzParseApproval: an approved variable list either parses and
// re-marshals to YAML that parses to the same list, or is refused with
// errors that each name a field path (or the line of a file that is not
// YAML).
func FuzzParseApproval(f *testing.F) {
	f.Add([]byte("sources:\n  - {name: par_sluten, profile: par-sluten}\n  - name: lab\n    profile: lab-export\n    profile_yaml: |\n      name: lab-export\n      kind: events\n      header: false\n      columns: [PNR, PROV]\n      identity: PNR\nvariables:\n  - {source: lab, column: PROV}\n"))
	f.Add([]byte("sources: [{name: par_sluten, profile: par-sluten}, {name: lmed, profile: lmed}]\nvariables:\n  - {source: par_sluten, column: HDIA, transforms: [truncate(3)]}\n  - {source: par_sluten, column: DIA1..DIA30, transforms: [\"blank(I,E)\"]}\n  - {source: lmed, column: ATC}\nallow_personnummer: false\n"))
	parse := func(b []byte) (*Approval, error) {
		a, err := ParseApproval(b, "approved.yaml")
		return &a, err
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := parse(b)
		if err != nil {
			var ae *ApprovalError
			if !errors.As(err, &ae) {
				t.Fatalf("error %v (%T) is not an ApprovalError", err, err)
			}
			if err := yamlfield.Named(ae.Errors); err != nil {
				t.Fatal(err)
			}
			return
		}
		if err := yamlfield.RoundTrip(a, parse); err != nil {
			t.Fatal(err)
		}
	})
}

// outputDelimiterOK memoises whether a job spec accepts a delimiter.
var outputDelimiterOK sync.Map

func specAcceptsDelimiter(t *testing.T, d string) bool {
	if ok, found := outputDelimiterOK.Load(d); found {
		return ok.(bool)
	}
	out, err := yaml.Marshal(map[string]any{"outputs": map[string]string{"delimiter": d}})
	if err != nil {
		return false // what YAML cannot write, a spec cannot hold
	}
	spec := "project: p1\nsources: [{name: lmed, profile: lmed, path: lmed.csv}]\ncohort: {criteria: [{source: lmed, codes: [N05]}]}\n" + string(out)
	_, err = linkage.ParseSpec([]byte(spec), "job.yaml")
	outputDelimiterOK.Store(d, err == nil)
	return err == nil
}

// FuzzCSVGuard checks the streaming leak guard and the row counter of CSV
// deliveries against encoding/csv, on the delimiters a job spec accepts:
//
//   - records made of the fuzzer's values and written by encoding/csv (as
//     DuckDB writes them: quoted where needed, '\n' between records): the
//     guard splits off exactly those values, the counter counts exactly
//     those records, and the guard stops in the first value that holds an
//     identity number, header or not, naming its column, and nowhere else;
//   - the fuzzer's raw bytes, where encoding/csv reads them as CSV with
//     neither blank lines nor carriage returns (which it drops): the same.
//
// Every delimiter a spec accepts must be one encoding/csv accepts: a
// delimiter that splits records differently (a line break, a quote) would
// blind the guard.
func FuzzCSVGuard(f *testing.F) {
	f.Add(";", []byte("LopNr\x1fA\x1fB\x1e1\x1fx;y\x1f\"q\"\x1e2\x1f\x1fline\nbreak"), uint16(0), uint8(0))
	f.Add("\t", []byte("LopNr;Text\n1;\"a;\"\"b\"\"\"\n2;12345678\n"), uint16(3), uint8(1))
	f.Add("|", []byte("a|b\x1e1|2\x1e3|4"), uint16(1), uint8(2))
	f.Add(";", []byte("LopNr;Text\n1;\"Återbesök 2–3 v\"\n2;１２３\u200b4–\xe2\x80;\xe2\n"), uint16(5), uint8(17))
	p := personnummer.NewParser(time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC))
	planted := plantable(f)
	f.Fuzz(func(t *testing.T, d string, data []byte, cell uint16, form uint8) {
		delim := byte(';')
		if specAcceptsDelimiter(t, d) {
			if len(d) != 1 {
				t.Fatalf("a job spec accepts the %d-byte delimiter %q", len(d), d)
			}
			delim = d[0]
		}

		// Records from the fuzzer's values, with one identity number
		// planted in one of them when form says so (form%4 == 3: in the
		// header).
		var records [][]string
		for _, r := range bytes.Split(data, []byte{0x1e}) {
			var rec []string
			for _, v := range bytes.Split(r, []byte{0x1f}) {
				rec = append(rec, string(v))
			}
			records = append(records, rec)
		}
		if form%4 != 0 && len(records) > 1 {
			n := planted[int(form/4)%len(planted)]
			r := 1 + int(cell)%(len(records)-1)
			if form%4 == 3 {
				r = 0
			}
			i := int(cell/7) % len(records[r])
			records[r][i] = records[r][i] + " " + n + " "
		}
		var buf bytes.Buffer
		w := csv.NewWriter(&buf)
		w.Comma = rune(delim)
		if err := w.WriteAll(records); err != nil {
			t.Fatalf("encoding/csv refuses delimiter %q, which a job spec accepts: %v", delim, err)
		}
		checkGuard(t, p, delim, buf.Bytes(), records)

		// The raw bytes, where encoding/csv reads them.
		if bytes.ContainsAny(data, "\r") || bytes.Contains(data, []byte("\n\n")) || bytes.HasPrefix(data, []byte("\n")) {
			return
		}
		r := csv.NewReader(bytes.NewReader(data))
		r.Comma, r.FieldsPerRecord = rune(delim), -1
		raw, err := r.ReadAll()
		if err != nil {
			return
		}
		checkGuard(t, p, delim, data, raw)
	})
}

// checkGuard streams b through a guard and a counter in chunks of a few
// sizes and compares what they saw with want, the records.
func checkGuard(t *testing.T, p *personnummer.Parser, delim byte, b []byte, want [][]string) {
	t.Helper()
	// The oracle's first value holding an identity number, the header's
	// names included, and how many values come before it.
	leakAt, before := [2]int{-1, -1}, 0
	for r := 0; r < len(want) && leakAt[0] < 0; r++ {
		for i, v := range want[r] {
			if hasIdentity(p, v) {
				leakAt = [2]int{r, i}
				break
			}
			before++
		}
	}
	for _, chunk := range []int{1, 5, len(b) + 1} {
		type value struct {
			r int64
			i int
			v string
		}
		var got []value
		var counter recordCounter
		counter.next = io.Discard
		g := newCSVGuard(io.Discard, "f.csv", delim, p)
		g.seen = func(r int64, i int, v []byte) { got = append(got, value{r, i, string(v)}) }
		var err error
		for s := b; len(s) > 0 && err == nil; {
			k := min(chunk, len(s))
			if _, err = counter.Write(s[:k]); err == nil {
				_, err = g.Write(s[:k])
			}
			s = s[k:]
		}
		if err == nil {
			err = g.end()
		}
		where := fmt.Sprintf("delimiter %q, chunks of %d, CSV %q", delim, chunk, b)

		// Every value the guard split off is the oracle's, in order (of a
		// long value, its tail).
		n := 0
		for r, rec := range want {
			for i, v := range rec {
				if n == len(got) {
					break
				}
				g := got[n]
				ok := g.r == int64(r) && g.i == i && (g.v == v || len(v) > maxValue && strings.HasSuffix(v, g.v))
				if !ok {
					t.Fatalf("%s: value %d: the guard saw %q at record %d field %d, encoding/csv %q at record %d field %d", where, n, g.v, g.r, g.i, v, r, i)
				}
				n++
			}
		}
		var le *LeakError
		if err != nil {
			// The guard stops in the first value holding an identity
			// number, header or not, naming its column, and never
			// elsewhere.
			switch {
			case !errors.As(err, &le):
				t.Fatalf("%s: the guard failed: %v", where, err)
			case leakAt[0] < 0:
				t.Fatalf("%s: the guard stopped with %v where encoding/csv finds no identity number", where, err)
			case len(got) != before:
				t.Fatalf("%s: the guard stopped after %d values, the first identity number is in value %d (record %d field %d)", where, len(got), before, leakAt[0], leakAt[1])
			case leakAt[0] == 0 && (!le.Header || le.Column != fmt.Sprint(leakAt[1]+1)):
				t.Fatalf("%s: a name in the header is an identity number, the leak is named %+v", where, le)
			case leakAt[0] > 0 && leakAt[1] < len(want[0]):
				if col := want[0][leakAt[1]]; le.Header || le.Column != col && !(len(col) > maxValue && strings.HasSuffix(col, le.Column)) {
					t.Fatalf("%s: the leak is named in column %q, want %q", where, le.Column, col)
				}
			}
			if v := want[leakAt[0]][leakAt[1]]; strings.Contains(err.Error(), v) {
				t.Fatalf("%s: the error %q holds the value %q", where, err, v)
			}
			continue
		}
		if leakAt[0] >= 0 {
			t.Fatalf("%s: the guard let an identity number through in record %d field %d", where, leakAt[0], leakAt[1])
		}
		if n != len(got) || n != count(want) {
			t.Fatalf("%s: the guard saw %d values, encoding/csv %d", where, len(got), count(want))
		}
		if c := counter.records(); c != int64(len(want)) {
			t.Fatalf("%s: the counter counted %d records, encoding/csv %d", where, c, len(want))
		}
	}
}

func count(records [][]string) int {
	n := 0
	for _, r := range records {
		n += len(r)
	}
	return n
}

// plantable returns a Skatteverket test number in the forms a leak takes,
// typographic ones included (an en dash, a minus sign, fullwidth digits,
// a soft hyphen).
func plantable(f *testing.F) []string {
	b, err := os.ReadFile("../testdata/skatteverket/testpersonnummer.txt")
	if err != nil {
		f.Fatal(err)
	}
	n := strings.Split(string(b), "\n")[30000]
	if len(n) != 12 {
		f.Fatalf("test number %q", n)
	}
	fullwidth := func(s string) string { return strings.Map(func(r rune) rune { return r - '0' + '０' }, s) }
	return []string{n, n[2:8] + "-" + n[8:], n[:8] + "-" + n[8:], n[2:],
		n[:8] + "–" + n[8:], n[2:8] + "\u2212" + n[8:], fullwidth(n[:8]) + "-" + fullwidth(n[8:]), n[:4] + "\u00ad" + n[4:]}
}

// FuzzVerifyManifest: a signed manifest verifies, and flipping any bits
// of one byte of the manifest, of the signature's text or of the public
// key's text makes it fail.
func FuzzVerifyManifest(f *testing.F) {
	f.Add("par_sluten.csv.zst.age", uint16(0), uint8(1), uint8(0))
	f.Add("", uint16(500), uint8(0x80), uint8(1))
	f.Add("x", uint16(85), uint8(0x08), uint8(1))
	f.Add("x", uint16(50), uint8(0x01), uint8(2))
	s := &Signer{key: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))}
	f.Fuzz(func(t *testing.T, file string, at uint16, flip, part uint8) {
		m := &Manifest{Delivery: "20261206-120000-0a1b2c3d", Project: "p1", Created: time.Unix(1796558400, 0).UTC(),
			Recipients: "age public keys", Files: []ManifestFile{{Name: file, Source: "src", Format: "csv+zstd+age", Rows: int64(at)}}}
		manifest, sig, err := s.sign(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := VerifyManifest(manifest, sig, s.PublicKey()); err != nil {
			t.Fatalf("a signed manifest does not verify: %v", err)
		}
		if flip != 0 {
			checkFlipFails(t, manifest, sig, s.PublicKey(), int(part%3), int(at), flip)
		}
	})
}

// TestEveryFlippedBitFailsToVerify flips each bit of the signature's text
// and of the public key's, where a lax base64 decoder ignores a few.
func TestEveryFlippedBitFailsToVerify(t *testing.T) {
	s := &Signer{key: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))}
	manifest, sig, err := s.sign(&Manifest{Delivery: "d", Project: "p"})
	if err != nil {
		t.Fatal(err)
	}
	for part, n := range []int{0, len(sig) - 1, len(s.PublicKey())} {
		for at := range n {
			for bit := range 8 {
				checkFlipFails(t, manifest, sig, s.PublicKey(), part, at, 1<<bit)
			}
		}
	}
}

// checkFlipFails flips bits of byte at of part (0 the manifest, 1 the
// signature's text, 2 the public key) and fails unless it fails to verify.
func checkFlipFails(t *testing.T, manifest, sig []byte, pub string, part, at int, flip byte) {
	t.Helper()
	manifest, sig, pubb := bytes.Clone(manifest), bytes.Clone(sig), []byte(pub)
	target := [][]byte{manifest, sig[:len(sig)-1], pubb}[part] // the signature's text, not its line end
	at %= len(target)
	target[at] ^= flip
	if _, err := VerifyManifest(manifest, sig, string(pubb)); err == nil {
		t.Fatalf("flipping %#x at byte %d of %s still verifies", flip, at, []string{"the manifest", "the signature", "the public key"}[part])
	}
}
