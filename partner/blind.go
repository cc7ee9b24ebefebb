package partner

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/cloudflare/circl/oprf"
	"github.com/cloudflare/circl/zk/dleq"

	"github.com/lopnr/lopnr/linkage/personnummer"
)

// pseudonymColumn is the header BlindFile gives the identity column.
const pseudonymColumn = "PSEUDONYM"

const (
	defaultDelimiter = ';'
	defaultBatchSize = 1000
	bom              = "\ufeff"
	checkEvery       = 1 << 12 // rows between looks at the context
)

// BlindOptions configure BlindFile.
type BlindOptions struct {
	IdentityColumn string                  // header name of the identity column (matched case-insensitively); required
	Delimiter      rune                    // default ';'
	RefDate        time.Time               // reference date for 10-digit numbers' century; default today
	BatchSize      int                     // elements per Evaluate call; default 1000, at most MaxBatch
	Workers        int                     // concurrent blind/finalize workers; default GOMAXPROCS
	Progress       func(done, total int64) // distinct numbers evaluated so far, may be nil
}

// BlindReport counts what BlindFile did. It holds no identity number.
type BlindReport struct {
	Rows       int64 // data rows read
	Linkable   int64 // rows whose identity is a linkable personnummer or samordningsnummer
	Unlinkable int64 // rows whose identity is not (invalid, interim, reserve, empty…): written with an empty pseudonym
	Distinct   int64 // distinct linkable numbers, each blinded and evaluated once
	Evaluated  int64 // elements sent to the evaluator (== Distinct)
}

// BlindFile runs at the partner. It reads the CSV file in (a header row is
// required; encoding/csv with the delimiter, LazyQuotes off), normalises
// every identity with package personnummer against the reference date (only
// linkable numbers are used, keyed by their canonical 12 digits), blinds
// each distinct number once for the service's public key, sends the blinded
// elements in batches to ev from opts.Workers goroutines, verifies every
// batch's proof and finalizes. A proof that fails is an error wrapping
// oprf.ErrInvalidProof: the service did not evaluate with the published key.
// opts.Progress is called after each batch, one call at a time.
//
// It then writes out: the same rows and columns in the same order, with the
// identity column renamed PSEUDONYM and each value replaced by the pseudonym
// (hex, as [Key.Pseudonym] gives) or left empty when the identity cannot be
// linked. Nothing is written to out before every number has been evaluated;
// after an error in the second pass out holds a partial file to discard.
//
// It reads in twice (once to collect the distinct numbers, once to write),
// so in is a path, and an error if the file changed in between. Memory holds
// the distinct numbers and their pseudonyms only. Errors name the file and
// the line, and never contain a field value or an identity number.
func BlindFile(ctx context.Context, in string, out io.Writer, publicKey []byte, ev Evaluator, opts BlindOptions) (BlindReport, error) {
	var rep BlindReport
	o, err := opts.withDefaults()
	if err != nil {
		return rep, err
	}
	if ev == nil {
		return rep, errors.New("partner: BlindFile: no Evaluator")
	}
	pk := new(oprf.PublicKey)
	if err := pk.UnmarshalBinary(suite, publicKey); err != nil {
		return rep, fmt.Errorf("partner: %w: the public key is not a ristretto255 public key (%d bytes)", ErrInvalidInput, len(publicKey))
	}
	parser := personnummer.NewParser(o.RefDate)

	set, err := collect(ctx, in, o, parser, &rep)
	if err != nil {
		return rep, err
	}
	rep.Distinct = int64(set.len())
	pseudonyms, err := evaluateAll(ctx, set, pk, ev, o, &rep)
	if err != nil {
		return rep, fmt.Errorf("partner: %s: %w", in, err)
	}
	if err := write(ctx, in, out, o, parser, set, pseudonyms, &rep); err != nil {
		return rep, err
	}
	return rep, nil
}

func (o BlindOptions) withDefaults() (BlindOptions, error) {
	if strings.TrimSpace(o.IdentityColumn) == "" {
		return o, errors.New("partner: BlindOptions.IdentityColumn: required")
	}
	if o.Delimiter == 0 {
		o.Delimiter = defaultDelimiter
	}
	if d := o.Delimiter; d == '"' || d == '\r' || d == '\n' || !utf8.ValidRune(d) || d == utf8.RuneError {
		return o, fmt.Errorf("partner: BlindOptions.Delimiter: %q cannot delimit CSV fields", d)
	}
	if o.RefDate.IsZero() {
		o.RefDate = time.Now()
	}
	switch {
	case o.BatchSize == 0:
		o.BatchSize = defaultBatchSize
	case o.BatchSize < 0 || o.BatchSize > MaxBatch:
		return o, fmt.Errorf("partner: BlindOptions.BatchSize: %d, want 1 to %d", o.BatchSize, MaxBatch)
	}
	switch {
	case o.Workers == 0:
		o.Workers = runtime.GOMAXPROCS(0)
	case o.Workers < 0:
		return o, fmt.Errorf("partner: BlindOptions.Workers: %d, want 0 (GOMAXPROCS) or more", o.Workers)
	}
	return o, nil
}

// numberSet holds the distinct linkable numbers in the order they were first
// seen: their canonical digits back to back, and an index into them.
type numberSet struct {
	index map[[canonicalSize]byte]uint32
	keys  []byte
}

func (s *numberSet) len() int { return len(s.keys) / canonicalSize }

// csvFile is one pass over the input.
type csvFile struct {
	f      *os.File
	r      *csv.Reader
	header []string
	id     int // the identity column
}

func openCSV(in string, o BlindOptions) (*csvFile, error) {
	f, err := os.Open(in)
	if err != nil {
		return nil, fmt.Errorf("partner: %w", err)
	}
	r := csv.NewReader(bufio.NewReaderSize(f, 1<<16))
	r.Comma = o.Delimiter
	r.ReuseRecord = true
	header, err := r.Read()
	switch {
	case err == io.EOF:
		f.Close()
		return nil, fmt.Errorf("partner: %s: empty file, want a header row", in)
	case err != nil:
		f.Close()
		return nil, fmt.Errorf("partner: %s: %w", in, err)
	}
	header = append([]string(nil), header...)
	id, other := -1, -1
	want := strings.TrimSpace(o.IdentityColumn)
	for i, h := range header {
		name := strings.TrimSpace(h)
		if i == 0 {
			name = strings.TrimSpace(strings.TrimPrefix(name, bom))
		}
		switch {
		case strings.EqualFold(name, want) && id >= 0:
			f.Close()
			return nil, fmt.Errorf("partner: %s:1: identity column %q appears twice (columns %d and %d)", in, want, id+1, i+1)
		case strings.EqualFold(name, want):
			id = i
		case strings.EqualFold(name, pseudonymColumn):
			other = i
		}
	}
	if id < 0 {
		f.Close()
		return nil, fmt.Errorf("partner: %s:1: no identity column %q in the header (%d columns)", in, want, len(header))
	}
	if other >= 0 {
		f.Close()
		return nil, fmt.Errorf("partner: %s:1: column %d is already named %s, the name the identity column gets", in, other+1, pseudonymColumn)
	}
	return &csvFile{f: f, r: r, header: header, id: id}, nil
}

// collect is the first pass: it counts the rows and gathers the distinct
// linkable numbers.
func collect(ctx context.Context, in string, o BlindOptions, p *personnummer.Parser, rep *BlindReport) (*numberSet, error) {
	c, err := openCSV(in, o)
	if err != nil {
		return nil, err
	}
	defer c.f.Close()
	set := &numberSet{index: make(map[[canonicalSize]byte]uint32)}
	for {
		rec, err := c.r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("partner: %s: %w", in, err)
		}
		rep.Rows++
		if rep.Rows%checkEvery == 0 {
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("partner: %s: %w", in, err)
			}
		}
		n := p.Parse(rec[c.id])
		if !n.Linkable() {
			rep.Unlinkable++
			continue
		}
		rep.Linkable++
		k := n.Key()
		if _, ok := set.index[k]; ok {
			continue
		}
		if uint64(set.len()) == math.MaxUint32 {
			return nil, fmt.Errorf("partner: %s: more than %d distinct numbers", in, uint64(math.MaxUint32))
		}
		set.index[k] = uint32(set.len())
		set.keys = append(set.keys, k[:]...)
	}
	return set, nil
}

// evaluateAll blinds, evaluates and finalizes every number of set, in
// batches of o.BatchSize on o.Workers goroutines, and returns the
// pseudonyms' bytes back to back in the order of set.
func evaluateAll(ctx context.Context, set *numberSet, pk *oprf.PublicKey, ev Evaluator, o BlindOptions, rep *BlindReport) ([]byte, error) {
	n := set.len()
	pseudonyms := make([]byte, n*pseudonymSize)
	if n == 0 {
		return pseudonyms, nil
	}
	client := oprf.NewVerifiableClient(suite, pk)
	batches := (n + o.BatchSize - 1) / o.BatchSize

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		next      atomic.Int64
		evaluated atomic.Int64
		mu        sync.Mutex // serialises Progress
		done      int64
		wg        sync.WaitGroup
	)
	for range min(o.Workers, batches) {
		wg.Go(func() {
			for ctx.Err() == nil {
				b := int(next.Add(1) - 1)
				if b >= batches {
					return
				}
				lo, hi := b*o.BatchSize, min((b+1)*o.BatchSize, n)
				sent, err := evaluateBatch(ctx, client, ev, b,
					set.keys[lo*canonicalSize:hi*canonicalSize],
					pseudonyms[lo*pseudonymSize:hi*pseudonymSize])
				evaluated.Add(int64(sent))
				if err != nil {
					cancel(err)
					return
				}
				if o.Progress != nil {
					mu.Lock()
					done += int64(hi - lo)
					o.Progress(done, int64(n))
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	rep.Evaluated = evaluated.Load()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return pseudonyms, nil
}

// evaluateBatch runs the protocol for the numbers in keys (12 bytes each)
// and writes their pseudonyms to dst (32 bytes each). It returns how many
// elements it sent to ev.
func evaluateBatch(ctx context.Context, client oprf.VerifiableClient, ev Evaluator, b int, keys, dst []byte) (int, error) {
	m := len(keys) / canonicalSize
	inputs := make([][]byte, m)
	for j := range inputs {
		inputs[j] = keys[j*canonicalSize : (j+1)*canonicalSize : (j+1)*canonicalSize]
	}
	fin, req, err := client.Blind(inputs)
	if err != nil {
		return 0, fmt.Errorf("batch %d: blinding: %w", b, err)
	}
	blinded := make([][]byte, m)
	for j, e := range req.Elements {
		if blinded[j], err = e.MarshalBinaryCompress(); err != nil {
			return 0, fmt.Errorf("batch %d: marshalling blinded element %d: %w", b, j, err)
		}
	}

	evaluated, proof, err := ev.Evaluate(ctx, blinded)
	if err != nil {
		return m, fmt.Errorf("batch %d: evaluate: %w", b, err)
	}
	if len(evaluated) != m {
		return m, fmt.Errorf("batch %d: the service returned %d elements for %d", b, len(evaluated), m)
	}
	g := suite.Group()
	eval := &oprf.Evaluation{Elements: make([]oprf.Evaluated, m), Proof: new(dleq.Proof)}
	for j, data := range evaluated {
		e := g.NewElement()
		if len(data) != elementSize || e.UnmarshalBinary(data) != nil {
			return m, fmt.Errorf("batch %d: evaluated element %d from the service is not a ristretto255 element", b, j)
		}
		eval.Elements[j] = e
	}
	if eval.Proof.UnmarshalBinary(g, proof) != nil {
		return m, fmt.Errorf("batch %d: %w: malformed proof (%d bytes)", b, oprf.ErrInvalidProof, len(proof))
	}
	outputs, err := client.Finalize(fin, eval)
	switch {
	case errors.Is(err, oprf.ErrInvalidProof):
		return m, fmt.Errorf("batch %d: %w: the service did not evaluate with the published public key", b, err)
	case err != nil:
		return m, fmt.Errorf("batch %d: finalizing: %w", b, err)
	}
	for j, out := range outputs {
		copy(dst[j*pseudonymSize:(j+1)*pseudonymSize], out[:pseudonymSize])
	}
	return m, nil
}

// write is the second pass: it copies in to out with the identity column
// replaced by the pseudonyms.
func write(ctx context.Context, in string, out io.Writer, o BlindOptions, p *personnummer.Parser, set *numberSet, pseudonyms []byte, rep *BlindReport) error {
	c, err := openCSV(in, o)
	if err != nil {
		return err
	}
	defer c.f.Close()
	changed := func(line int) error {
		return fmt.Errorf("partner: %s:%d: the file changed since it was first read", in, line)
	}

	w := csv.NewWriter(out)
	w.Comma = o.Delimiter
	header := c.header
	if c.id == 0 && strings.HasPrefix(header[0], bom) {
		header[0] = bom + pseudonymColumn
	} else {
		header[c.id] = pseudonymColumn
	}
	if err := w.Write(header); err != nil {
		return fmt.Errorf("partner: writing the output: %w", err)
	}
	var (
		rows int64
		buf  [2 * pseudonymSize]byte
	)
	for {
		rec, err := c.r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("partner: %s: %w", in, err)
		}
		rows++
		if rows%checkEvery == 0 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("partner: %s: %w", in, err)
			}
		}
		n := p.Parse(rec[c.id])
		if n.Linkable() {
			i, ok := set.index[n.Key()]
			if !ok {
				line, _ := c.r.FieldPos(c.id)
				return changed(line)
			}
			hex.Encode(buf[:], pseudonyms[int(i)*pseudonymSize:(int(i)+1)*pseudonymSize])
			rec[c.id] = string(buf[:])
		} else {
			rec[c.id] = ""
		}
		if err := w.Write(rec); err != nil {
			return fmt.Errorf("partner: writing the output: %w", err)
		}
	}
	if rows != rep.Rows {
		return fmt.Errorf("partner: %s: the file changed since it was first read (%d data rows, then %d)", in, rep.Rows, rows)
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return fmt.Errorf("partner: writing the output: %w", err)
	}
	return nil
}
