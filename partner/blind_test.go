package partner

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudflare/circl/oprf"

	"github.com/lopnr/lopnr/internal/testenv"
	"github.com/lopnr/lopnr/linkage/personnummer"
)

var refDate = time.Date(2025, 6, 30, 0, 0, 0, 0, time.UTC)

// row is one data row of a test file and the canonical number it should
// link as ("" when it cannot be linked).
type row struct {
	fields    []string
	canonical string
}

// testFile builds a CSV file of test numbers in mixed forms, with repeats,
// invalid, interim and empty identities, and returns its rows.
func testFile(t *testing.T) (path string, header []string, rows []row) {
	t.Helper()
	nums := testNumbers(t)
	byYear := func(lo, hi int) []string {
		var out []string
		for _, n := range nums {
			if y, _ := strconv.Atoi(n[:4]); y >= lo && y <= hi {
				out = append(out, n)
			}
		}
		if len(out) < 40 {
			t.Fatalf("only %d test numbers born %d–%d", len(out), lo, hi)
		}
		return out
	}
	recent := byYear(1930, 2020) // 10 digits with '-' need a birth year within 100 years of refDate
	old := byYear(1890, 1920)    // and '+' one a century earlier

	header = []string{"rad", "Personnr", "diagnos", "kommentar", "datum"}
	add := func(identity, canonical string) {
		i := len(rows)
		rows = append(rows, row{
			fields: []string{strconv.Itoa(i + 1), identity, "I2" + strconv.Itoa(i%10),
				[]string{"", "a;b", `sa "hej"`, "två\nrader", " blank "}[i%5], "2024-0" + strconv.Itoa(1+i%9) + "-15"},
			canonical: canonical,
		})
	}
	for i := range 24 {
		n := recent[i*len(recent)/24]
		switch i % 4 {
		case 0:
			add(n, n)
		case 1:
			add(n[:8]+"-"+n[8:], n)
		case 2:
			add(n[2:8]+"-"+n[8:], n)
		case 3:
			add(" "+n[2:]+" ", n)
		}
	}
	// Repeats in other forms.
	for i := range 6 {
		n := recent[i*len(recent)/24]
		add(n[2:8]+"-"+n[8:], n)
		add(n, n)
	}
	// A centenarian's '+'.
	o := old[len(old)/2]
	add(o[2:8]+"+"+o[8:], o)
	add(o, o)
	// Unlinkable: a wrong check digit, interim, empty, blank, not a number.
	n := recent[3]
	add(n[:11]+strconv.Itoa(int(n[11]-'0'+1)%10), "")
	add(interimFrom(t, recent[5]), "")
	add("", "")
	add("   ", "")
	add("okänd", "")
	add(n[:8], "")
	add(n+"9", "")

	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Comma = ';'
	w.Write(header)
	for _, r := range rows {
		w.Write(r.fields)
	}
	w.Flush()
	path = filepath.Join(t.TempDir(), "socialstyrelsen.csv")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, header, rows
}

// interimFrom makes an interim number from a test number: the first of the
// last four digits becomes T and the check digit is recomputed.
func interimFrom(t *testing.T, n string) string {
	t.Helper()
	for d := range 10 {
		s := n[:8] + "T" + n[9:11] + strconv.Itoa(d)
		if personnummer.Parse(s, refDate).Kind() == personnummer.Interim {
			return s
		}
	}
	t.Fatal("no interim number")
	return ""
}

// countingEvaluator counts the elements and batches it evaluates.
type countingEvaluator struct {
	Evaluator
	elements, calls atomic.Int64
	maxBatch        atomic.Int64
	before          func(call int64) // may be nil
}

func (c *countingEvaluator) Evaluate(ctx context.Context, blinded [][]byte) ([][]byte, []byte, error) {
	call := c.calls.Add(1)
	c.elements.Add(int64(len(blinded)))
	for {
		m := c.maxBatch.Load()
		if int64(len(blinded)) <= m || c.maxBatch.CompareAndSwap(m, int64(len(blinded))) {
			break
		}
	}
	if c.before != nil {
		c.before(call)
	}
	return c.Evaluator.Evaluate(ctx, blinded)
}

func TestBlindFile(t *testing.T) {
	path, header, rows := testFile(t)
	k := testKey(t, "a", "proj-1")

	for _, tc := range []struct {
		name             string
		batch, workers   int
		wantCallsAtLeast int64
	}{
		{"defaults", 0, 0, 1},
		{"small batches", 4, 3, 6},
		{"one by one", 1, 8, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := &countingEvaluator{Evaluator: KeyEvaluator(k)}
			var (
				mu         sync.Mutex
				lastDone   int64
				lastTotal  int64
				progressed int
			)
			var out bytes.Buffer
			rep, err := BlindFile(context.Background(), path, &out, k.PublicKey(), ev, BlindOptions{
				IdentityColumn: "PERSONNR",
				RefDate:        refDate,
				BatchSize:      tc.batch,
				Workers:        tc.workers,
				Progress: func(done, total int64) {
					mu.Lock()
					defer mu.Unlock()
					if done <= lastDone || done > total {
						t.Errorf("progress %d of %d after %d", done, total, lastDone)
					}
					lastDone, lastTotal = done, total
					progressed++
				},
			})
			if err != nil {
				t.Fatal(err)
			}

			distinct := map[string]bool{}
			var linkable, unlinkable int64
			for _, r := range rows {
				if r.canonical == "" {
					unlinkable++
				} else {
					linkable++
					distinct[r.canonical] = true
				}
			}
			want := BlindReport{
				Rows:       int64(len(rows)),
				Linkable:   linkable,
				Unlinkable: unlinkable,
				Distinct:   int64(len(distinct)),
				Evaluated:  int64(len(distinct)),
			}
			if rep != want {
				t.Errorf("report %+v, want %+v", rep, want)
			}
			if unlinkable != 7 || len(distinct) != 25 {
				t.Fatalf("test file: %d unlinkable rows and %d distinct numbers, want 7 and 25", unlinkable, len(distinct))
			}
			if got := ev.elements.Load(); got != want.Distinct {
				t.Errorf("%d elements sent to the evaluator, want %d", got, want.Distinct)
			}
			if tc.batch > 0 && ev.maxBatch.Load() > int64(tc.batch) {
				t.Errorf("a batch of %d elements, want at most %d", ev.maxBatch.Load(), tc.batch)
			}
			if ev.calls.Load() < tc.wantCallsAtLeast {
				t.Errorf("%d Evaluate calls, want at least %d", ev.calls.Load(), tc.wantCallsAtLeast)
			}
			if lastDone != want.Distinct || lastTotal != want.Distinct || int64(progressed) != ev.calls.Load() {
				t.Errorf("progress ended at %d of %d after %d calls, want %d of %d after %d",
					lastDone, lastTotal, progressed, want.Distinct, want.Distinct, ev.calls.Load())
			}

			r := csv.NewReader(bytes.NewReader(out.Bytes()))
			r.Comma = ';'
			got, err := r.ReadAll()
			if err != nil {
				t.Fatalf("reading the output: %v", err)
			}
			if len(got) != len(rows)+1 {
				t.Fatalf("output has %d lines, want %d", len(got), len(rows)+1)
			}
			wantHeader := append([]string(nil), header...)
			wantHeader[1] = "PSEUDONYM"
			if strings.Join(got[0], "|") != strings.Join(wantHeader, "|") {
				t.Errorf("header %q, want %q", got[0], wantHeader)
			}
			for i, r := range rows {
				line := got[i+1]
				if len(line) != len(r.fields) {
					t.Fatalf("row %d: %d fields, want %d", i+1, len(line), len(r.fields))
				}
				for j := range line {
					if j != 1 && line[j] != r.fields[j] {
						t.Errorf("row %d column %d: %q, want it untouched (%q)", i+1, j+1, line[j], r.fields[j])
					}
				}
				want := ""
				if r.canonical != "" {
					if want, err = k.Pseudonym(r.canonical); err != nil {
						t.Fatal(err)
					}
				}
				if line[1] != want {
					t.Errorf("row %d: pseudonym %q, want %q", i+1, line[1], want)
				}
			}

			testenv.NoIdentityNumbers(t, "the output", out.String())
			for i, r := range rows {
				if id := strings.TrimSpace(r.fields[1]); len(id) >= 8 && strings.Contains(out.String(), id) {
					t.Errorf("the output holds row %d's identity", i+1)
				}
			}
		})
	}
}

func TestBlindFileWrongKey(t *testing.T) {
	path, _, _ := testFile(t)
	published := testKey(t, "a", "proj-1")
	used := testKey(t, "a", "proj-2")
	var out bytes.Buffer
	_, err := BlindFile(context.Background(), path, &out, published.PublicKey(), KeyEvaluator(used),
		BlindOptions{IdentityColumn: "personnr", RefDate: refDate, BatchSize: 10, Workers: 2})
	if !errors.Is(err, oprf.ErrInvalidProof) {
		t.Fatalf("evaluated with another key: %v, want oprf.ErrInvalidProof", err)
	}
	msg := err.Error()
	for _, want := range []string{path, "batch ", "did not evaluate with the published public key"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not say %q", msg, want)
		}
	}
	testenv.NoIdentityNumbers(t, "the error", msg)
	if out.Len() != 0 {
		t.Errorf("%d bytes written after a failed proof", out.Len())
	}
}

// tamperingEvaluator returns another batch's evaluation or a garbled proof.
type tamperingEvaluator struct {
	k    *Key
	mode string
}

func (e tamperingEvaluator) Evaluate(ctx context.Context, blinded [][]byte) ([][]byte, []byte, error) {
	out, proof, err := e.k.Evaluate(blinded)
	if err != nil {
		return nil, nil, err
	}
	switch e.mode {
	case "swap":
		if len(out) > 1 {
			out[0], out[1] = out[1], out[0]
		}
	case "proof":
		proof[3] ^= 1
	case "short proof":
		proof = proof[:10]
	case "count":
		out = out[:len(out)-1]
	case "garbage":
		out[0] = bytes.Repeat([]byte{0xa5}, 32)
	case "fail":
		return nil, nil, errors.New("service unavailable")
	}
	return out, proof, nil
}

func TestBlindFileBadEvaluations(t *testing.T) {
	path, _, _ := testFile(t)
	k := testKey(t, "a", "proj-1")
	for _, tc := range []struct {
		mode  string
		is    error
		wants string
	}{
		{"swap", oprf.ErrInvalidProof, "published public key"},
		{"proof", oprf.ErrInvalidProof, "published public key"},
		{"short proof", oprf.ErrInvalidProof, "malformed proof"},
		{"count", nil, "returned 4 elements for 5"},
		{"garbage", nil, "evaluated element 0 from the service is not a ristretto255 element"},
		{"fail", nil, "evaluate: service unavailable"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			var out bytes.Buffer
			_, err := BlindFile(context.Background(), path, &out, k.PublicKey(), tamperingEvaluator{k, tc.mode},
				BlindOptions{IdentityColumn: "Personnr", RefDate: refDate, BatchSize: 5})
			if err == nil {
				t.Fatal("no error")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v, want %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.wants) || !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file and say %q", err, tc.wants)
			}
			if out.Len() != 0 {
				t.Errorf("%d bytes written after a bad evaluation", out.Len())
			}
		})
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestBlindFileCSVErrors(t *testing.T) {
	nums := testNumbers(t)
	k := testKey(t, "a", "proj-1")
	for _, tc := range []struct {
		name, content string
		wants         []string
	}{
		{"bare quote", "id;pnr;x\n1;" + nums[1] + ";a\n2;" + nums[2] + ";b\"c\n", []string{"line 3", "bare \""}},
		{"field count", "id;pnr;x\n1;" + nums[1] + ";a\n2;" + nums[2] + ";b\n3;" + nums[3] + "\n", []string{"line 4", "wrong number of fields"}},
		{"open quote", "id;pnr;x\n1;" + nums[1] + ";\"a\n", []string{"line 2", "extraneous or missing \""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, "in.csv", tc.content)
			var out bytes.Buffer
			_, err := BlindFile(context.Background(), path, &out, k.PublicKey(), KeyEvaluator(k),
				BlindOptions{IdentityColumn: "pnr", RefDate: refDate})
			if err == nil {
				t.Fatal("no error")
			}
			var pe *csv.ParseError
			if !errors.As(err, &pe) {
				t.Errorf("error %v is no csv.ParseError", err)
			}
			for _, want := range append(tc.wants, path) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			for _, n := range nums[1:4] {
				if strings.Contains(err.Error(), n) {
					t.Errorf("error %q holds an identity number", err)
				}
			}
			if out.Len() != 0 {
				t.Errorf("%d bytes written", out.Len())
			}
		})
	}
}

func TestBlindFileHeaderErrors(t *testing.T) {
	nums := testNumbers(t)
	k := testKey(t, "a", "proj-1")
	for _, tc := range []struct {
		name, content, column string
		wants                 []string
	}{
		{"missing column", "id;pnr;x\n1;" + nums[1] + ";a\n", "personnummer", []string{`no identity column "personnummer"`, ":1:"}},
		{"twice", "id;PNR;pnr\n1;" + nums[1] + ";a\n", "pnr", []string{`"pnr" appears twice (columns 2 and 3)`}},
		{"pseudonym taken", "id;pnr;Pseudonym\n1;" + nums[1] + ";a\n", "pnr", []string{"column 3 is already named PSEUDONYM"}},
		{"empty file", "", "pnr", []string{"empty file, want a header row"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, "in.csv", tc.content)
			_, err := BlindFile(context.Background(), path, new(bytes.Buffer), k.PublicKey(), KeyEvaluator(k),
				BlindOptions{IdentityColumn: tc.column, RefDate: refDate})
			if err == nil {
				t.Fatal("no error")
			}
			for _, want := range append(tc.wants, path) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
		})
	}

	_, err := BlindFile(context.Background(), filepath.Join(t.TempDir(), "nonesuch.csv"), new(bytes.Buffer), k.PublicKey(), KeyEvaluator(k),
		BlindOptions{IdentityColumn: "pnr"})
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "nonesuch.csv") {
		t.Errorf("missing file: %v", err)
	}
}

func TestBlindFileOptions(t *testing.T) {
	nums := testNumbers(t)
	k := testKey(t, "a", "proj-1")
	path := writeFile(t, "in.csv", "id,pnr\n1,"+nums[1]+"\n")
	for _, tc := range []struct {
		name string
		pk   []byte
		ev   Evaluator
		opts BlindOptions
		want string
	}{
		{"no column", k.PublicKey(), KeyEvaluator(k), BlindOptions{}, "IdentityColumn: required"},
		{"batch too big", k.PublicKey(), KeyEvaluator(k), BlindOptions{IdentityColumn: "pnr", BatchSize: MaxBatch + 1}, "BatchSize: 4097, want 1 to 4096"},
		{"negative batch", k.PublicKey(), KeyEvaluator(k), BlindOptions{IdentityColumn: "pnr", BatchSize: -1}, "BatchSize"},
		{"negative workers", k.PublicKey(), KeyEvaluator(k), BlindOptions{IdentityColumn: "pnr", Workers: -2}, "Workers"},
		{"quote delimiter", k.PublicKey(), KeyEvaluator(k), BlindOptions{IdentityColumn: "pnr", Delimiter: '"'}, "Delimiter"},
		{"no evaluator", k.PublicKey(), nil, BlindOptions{IdentityColumn: "pnr"}, "no Evaluator"},
		{"bad public key", []byte("not a key"), KeyEvaluator(k), BlindOptions{IdentityColumn: "pnr"}, "not a ristretto255 public key (9 bytes)"},
		{"identity public key", make([]byte, 32), KeyEvaluator(k), BlindOptions{IdentityColumn: "pnr"}, "not a ristretto255 public key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := BlindFile(context.Background(), path, new(bytes.Buffer), tc.pk, tc.ev, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one saying %q", err, tc.want)
			}
		})
	}

	// A comma-delimited file with a BOM, the identity first.
	path = writeFile(t, "bom.csv", "\ufeffPnr,id\n"+nums[1]+",1\n,2\n")
	var out bytes.Buffer
	rep, err := BlindFile(context.Background(), path, &out, k.PublicKey(), KeyEvaluator(k),
		BlindOptions{IdentityColumn: "pnr", Delimiter: ',', RefDate: refDate})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := k.Pseudonym(nums[1])
	if want := "\ufeffPSEUDONYM,id\n" + p + ",1\n,2\n"; out.String() != want {
		t.Errorf("output %q, want %q", out.String(), want)
	}
	if rep != (BlindReport{Rows: 2, Linkable: 1, Unlinkable: 1, Distinct: 1, Evaluated: 1}) {
		t.Errorf("report %+v", rep)
	}

	// A header and no rows: no Evaluate call, the header written.
	path = writeFile(t, "empty.csv", "id;pnr\n")
	ev := &countingEvaluator{Evaluator: KeyEvaluator(k)}
	out.Reset()
	rep, err = BlindFile(context.Background(), path, &out, k.PublicKey(), ev, BlindOptions{IdentityColumn: "pnr"})
	if err != nil || out.String() != "id;PSEUDONYM\n" || rep != (BlindReport{}) || ev.calls.Load() != 0 {
		t.Errorf("header only: %q, %+v, %d calls, %v", out.String(), rep, ev.calls.Load(), err)
	}
}

func TestBlindFileChangedBetweenPasses(t *testing.T) {
	nums := testNumbers(t)
	k := testKey(t, "a", "proj-1")
	for _, tc := range []struct {
		name, appended, want string
	}{
		{"new number", "3;" + nums[3] + "\n", ":4: the file changed since it was first read"},
		{"new row", "3;\n", "the file changed since it was first read (2 data rows, then 3)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, "in.csv", "id;pnr\n1;"+nums[1]+"\n2;"+nums[2]+"\n")
			ev := &countingEvaluator{Evaluator: KeyEvaluator(k), before: func(int64) {
				f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
				if err != nil {
					t.Error(err)
					return
				}
				f.WriteString(tc.appended)
				f.Close()
			}}
			_, err := BlindFile(context.Background(), path, new(bytes.Buffer), k.PublicKey(), ev,
				BlindOptions{IdentityColumn: "pnr", RefDate: refDate})
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one saying %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), nums[3]) {
				t.Errorf("error %q holds an identity number", err)
			}
		})
	}
}

func TestBlindFileCancelled(t *testing.T) {
	path, _, _ := testFile(t)
	k := testKey(t, "a", "proj-1")
	ctx, cancel := context.WithCancel(context.Background())
	ev := &countingEvaluator{Evaluator: KeyEvaluator(k), before: func(call int64) {
		if call == 2 {
			cancel()
		}
	}}
	var out bytes.Buffer
	_, err := BlindFile(ctx, path, &out, k.PublicKey(), ev,
		BlindOptions{IdentityColumn: "personnr", RefDate: refDate, BatchSize: 2, Workers: 1})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	if calls := ev.calls.Load(); calls != 2 {
		t.Errorf("%d Evaluate calls after cancelling in the second, want 2", calls)
	}
	if out.Len() != 0 {
		t.Errorf("%d bytes written after cancelling", out.Len())
	}
}
