package synth

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/lopnr/lopnr/linkage/personnummer"
)

// PartnerOptions describe a partner authority's file (say SCB's income
// register) for blind-linkage tests and benchmarks.
type PartnerOptions struct {
	// Members are the canonical 12-digit numbers (personnummer or
	// samordningsnummer) of persons the region has: its cohort. The file
	// includes each of them.
	Members []string
	// Others is the number of persons the region does not have, made up at
	// run time as Generate makes its numbers: valid personnummer that are
	// neither one of Members nor one of Skatteverket's test numbers.
	Others int
	// RowsPerPerson is the rows each person has, one a year (default 1, at
	// most 100).
	RowsPerPerson int
	// Invalid is the number of extra rows whose identity is invalid: a
	// wrong check digit, a malformed value or an empty one.
	Invalid int
	// Seed makes the output; the same seed gives the same file.
	Seed uint64
	// RefDate is the extraction date, as in Options (default
	// DefaultRefDate): 10-digit forms are written against it, and the
	// years of data end the year before.
	RefDate time.Time
	// TestData is the directory with Skatteverket's test numbers, which
	// Others avoid. Default: testdata/skatteverket found from the working
	// directory upwards.
	TestData string
}

// PartnerTruth is what the region must find: how many of the file's rows
// and persons belong to its cohort.
type PartnerTruth struct {
	Rows, MemberRows, OtherRows, InvalidRows int64
	MemberPersons, OtherPersons              int64
}

// PartnerHeader is the header line of a partner file.
const PartnerHeader = "PERSONNUMMER;AR;INKOMST;KOMMUN"

// Limits of PartnerOptions.
const (
	maxPartnerRowsPerPerson = 100
	maxPartnerPersons       = 20_000_000
)

// WritePartnerFile writes a CSV (UTF-8, ';', header [PartnerHeader]) to
// path with mode 0600: each person's rows with the identity in mixed forms
// (12 digits, 12 with '-', 10 with '-' or '+' by age), a year, an income in
// whole kronor and a municipality code (4 digits), in a shuffled order,
// deterministic for a seed. It streams: beyond the person lists (8 bytes a
// person) it needs a fixed buffer whatever the number of rows. Every
// identity written is parsed again with linkage/personnummer, and
// WritePartnerFile fails if one is not what was intended. The file is
// written beside path and renamed over it, so a failure leaves no partial
// file.
func WritePartnerFile(path string, opts PartnerOptions) (PartnerTruth, error) {
	o, err := opts.defaults()
	if err != nil {
		return PartnerTruth{}, err
	}
	parser := personnummer.NewParser(o.RefDate)
	tests := map[uint64]struct{}{}
	if _, err := loadTestNumbers(o.TestData, parser, tests); err != nil {
		return PartnerTruth{}, err
	}
	members, err := memberKeys(o.Members, parser)
	if err != nil {
		return PartnerTruth{}, err
	}
	taken := func(k uint64) bool {
		if _, ok := tests[k]; ok {
			return true
		}
		_, ok := slices.BinarySearch(members, k)
		return ok
	}
	r := rand.New(rand.NewPCG(splitmix64(o.Seed^0x0a7e), 0x5c8))
	others, err := makeOthers(r, o.Others, dayOf(1920, 1, 1), dayOfTime(o.RefDate), taken)
	if err != nil {
		return PartnerTruth{}, err
	}
	members, tests = nil, nil

	tmp, err := os.CreateTemp(filepath.Dir(path), ".partner-*")
	if err != nil {
		return PartnerTruth{}, fmt.Errorf("synth: partner file: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a failure; after the rename it is gone
	defer tmp.Close()
	w := &partnerWriter{o: o, others: others, s: &srcGen{
		g:    &generator{parser: parser, ref: dayOfTime(o.RefDate), refYear: o.RefDate.Year()},
		r:    rand.NewPCG(splitmix64(o.Seed^0x0a7f), 0x5c9),
		out:  tmp,
		buf:  make([]byte, 0, 1<<19),
		junk: junkBytes(),
	}}
	truth, err := w.run()
	if err != nil {
		return PartnerTruth{}, err
	}
	if err := tmp.Close(); err != nil {
		return PartnerTruth{}, fmt.Errorf("synth: partner file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return PartnerTruth{}, fmt.Errorf("synth: partner file: %w", err)
	}
	return truth, nil
}

func (o PartnerOptions) defaults() (PartnerOptions, error) {
	if o.RowsPerPerson == 0 {
		o.RowsPerPerson = 1
	}
	if o.RefDate.IsZero() {
		o.RefDate = DefaultRefDate
	}
	y, m, d := o.RefDate.Date()
	o.RefDate = time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	switch {
	case o.RowsPerPerson < 1 || o.RowsPerPerson > maxPartnerRowsPerPerson:
		return o, fmt.Errorf("synth: PartnerOptions.RowsPerPerson %d: want 1 to %d", o.RowsPerPerson, maxPartnerRowsPerPerson)
	case o.Others < 0 || o.Invalid < 0:
		return o, errors.New("synth: PartnerOptions.Others and Invalid must not be negative")
	case len(o.Members)+o.Others > maxPartnerPersons || o.Invalid > maxPartnerPersons:
		return o, fmt.Errorf("synth: PartnerOptions: at most %d persons and %d invalid rows", maxPartnerPersons, maxPartnerPersons)
	case o.RefDate.Before(time.Date(2012, 1, 1, 0, 0, 0, 0, time.UTC)) || o.RefDate.Year() > 2099:
		return o, errors.New("synth: PartnerOptions.RefDate must be from 2012-01-01 to 2099-12-31")
	}
	if o.TestData == "" {
		td, err := findTestData()
		if err != nil {
			return o, err
		}
		o.TestData = td
	}
	return o, nil
}

// memberKeys checks that every member is a canonical linkable number and
// none repeats, and returns their keys sorted. Errors name the index, never
// the number.
func memberKeys(members []string, p *personnummer.Parser) ([]uint64, error) {
	type indexed struct {
		k uint64
		i int
	}
	keys := make([]indexed, len(members))
	for i, s := range members {
		n := p.Parse(s)
		if len(s) != 12 || !n.Linkable() || n.Canonical() != s {
			why := "not in canonical form (12 digits)"
			if !n.Linkable() {
				why = n.LinkReason().String()
			}
			return nil, fmt.Errorf("synth: PartnerOptions.Members[%d]: want a canonical 12-digit personnummer or samordningsnummer (%s)", i, why)
		}
		c := n.Key()
		keys[i] = indexed{numKey(&c), i}
	}
	slices.SortFunc(keys, func(a, b indexed) int { return cmp.Or(cmp.Compare(a.k, b.k), cmp.Compare(a.i, b.i)) })
	out := make([]uint64, len(keys))
	for j, x := range keys {
		if j > 0 && keys[j-1].k == x.k {
			return nil, fmt.Errorf("synth: PartnerOptions.Members[%d] repeats Members[%d]", x.i, keys[j-1].i)
		}
		out[j] = x.k
	}
	return out, nil
}

// makeOthers makes n distinct personnummer born between days lo and hi
// that are not taken, as sorted keys.
func makeOthers(r *rand.Rand, n int, lo, hi int32, taken func(uint64) bool) ([]uint64, error) {
	out := make([]uint64, 0, n)
	for round := 0; len(out) < n; round++ {
		if round == 50 {
			return nil, fmt.Errorf("synth: cannot find %d free personnummer for PartnerOptions.Others", n)
		}
		need := n - len(out)
		draw := need
		if round > 0 {
			// Collisions left a few to find: draw more, as the free
			// numbers may be scarce, and drop the excess at random.
			draw = min(need<<min(round, 12), need+1<<16)
		}
		for range draw {
			y, m, d := civil(lo + int32(r.IntN(int(hi-lo)+1)))
			c := makeNumber(y, int(m), d, 1+r.IntN(999), false)
			out = append(out, numKey(&c))
		}
		slices.Sort(out)
		out = slices.Compact(out)
		out = slices.DeleteFunc(out, taken)
		if len(out) > n {
			r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
			out = out[:n]
			slices.Sort(out)
		}
	}
	return out, nil
}

// keyNumber is the inverse of numKey for all-digit numbers.
func keyNumber(k uint64) number {
	var c number
	for i := len(c) - 1; i >= 0; i-- {
		c[i] = byte('0' + k%10)
		k /= 10
	}
	return c
}

func junkBytes() [][]byte {
	out := make([][]byte, len(junkIdentities))
	for i, j := range junkIdentities {
		out[i] = []byte(j)
	}
	return out
}

// municipalities are municipality codes (kommunkod) of the larger
// municipalities of every county.
var municipalities = []string{
	"0180", "0181", "0182", "0184", "0127", "0114", "0380", "0381", "0480", "0484",
	"0580", "0581", "0680", "0683", "0780", "0880", "0980", "1080", "1280", "1281",
	"1283", "1290", "1380", "1382", "1480", "1490", "1485", "1780", "1880", "1980",
	"2080", "2180", "2281", "2380", "2480", "2580",
}

// partnerForms are the identity forms of a partner file.
var partnerForms = [...]uint8{form12, form12Dash, form10Sep}

// invalidShares are the reasons of the invalid rows, in percent.
var invalidShares = reasonShares{
	{personnummer.Checksum, 45},
	{personnummer.Format, 40},
	{personnummer.Empty, 15},
}

type partnerWriter struct {
	o      PartnerOptions
	others []uint64
	s      *srcGen
}

// run writes the header and every row in the order of a keyed permutation
// of the row numbers: persons' rows first (person p's k-th year is row
// p*RowsPerPerson+k, members before others), then the invalid rows. Row
// contents come from one generator in file order.
func (w *partnerWriter) run() (PartnerTruth, error) {
	o, s := w.o, w.s
	rpp := int64(o.RowsPerPerson)
	nMembers, nPersons := int64(len(o.Members)), int64(len(o.Members)+len(w.others))
	personRows := nPersons * rpp
	var t PartnerTruth
	t.Rows = personRows + int64(o.Invalid)
	t.MemberPersons, t.OtherPersons = nMembers, int64(len(w.others))
	perm := newFeistel(uint64(t.Rows), o.Seed)
	rr := rand.New(s.r)
	refYear := o.RefDate.Year()

	s.buf = append(s.buf, PartnerHeader...)
	s.buf = append(s.buf, '\n')
	var c number
	for i := range uint64(t.Rows) {
		row := int64(perm.at(i))
		var year, byear int
		var mun string
		if row < personRows {
			p, k := row/rpp, row%rpp
			if p < nMembers {
				copy(c[:], o.Members[p])
				t.MemberRows++
			} else {
				c = keyNumber(w.others[p-nMembers])
				t.OtherRows++
			}
			byear = numYear(&c)
			year = refYear - o.RowsPerPerson + int(k)
			mun = municipalities[splitmix64(numKey(&c)^o.Seed)%uint64(len(municipalities))]
			start := len(s.buf)
			form := partnerForms[s.n(len(partnerForms))]
			s.buf = appendForm(s.buf, &c, form, refYear-byear >= 100)
			// The self-check: the value parses as the number intended.
			if n := s.g.parser.ParseBytes(s.buf[start:]); !n.Linkable() || n.Key() != c {
				if p < nMembers {
					return t, fmt.Errorf("synth: PartnerOptions.Members[%d]: its form %d does not parse back to it", p, form)
				}
				return t, fmt.Errorf("synth: internal error: an identity in form %d parses as %v, not as the number intended", form, n)
			}
		} else {
			var err error
			if byear, err = w.invalid(); err != nil {
				return t, err
			}
			year = refYear - 1 - s.n(o.RowsPerPerson)
			mun = municipalities[s.n(len(municipalities))]
			t.InvalidRows++
		}
		s.buf = append(s.buf, ';')
		s.buf = appendInt(s.buf, int64(year))
		s.buf = append(s.buf, ';')
		s.buf = appendInt(s.buf, income(rr, year-byear))
		s.buf = append(s.buf, ';')
		s.buf = append(s.buf, mun...)
		s.buf = append(s.buf, '\n')
		if len(s.buf) >= 1<<18 {
			if err := s.flush(); err != nil {
				return t, fmt.Errorf("synth: partner file: %w", err)
			}
		}
	}
	if err := s.flush(); err != nil {
		return t, fmt.Errorf("synth: partner file: %w", err)
	}
	return t, nil
}

// invalid appends an invalid identity, made from a random person's number
// or a made-up one, and returns the birth year it was made from.
func (w *partnerWriter) invalid() (int, error) {
	s := w.s
	var p person
	if nm := len(w.o.Members); nm+len(w.others) > 0 {
		if i := s.n(nm + len(w.others)); i < nm {
			copy(p.num[:], w.o.Members[i])
		} else {
			p.num = keyNumber(w.others[i-nm])
		}
	} else {
		y, m, d := civil(s.between(dayOf(1920, 1, 1), s.g.ref))
		p.num = makeNumber(y, int(m), d, 1+s.n(999), false)
	}
	p.byear = uint16(numYear(&p.num))
	if _, err := s.invalidFrom(&p, invalidShares); err != nil {
		return 0, err
	}
	return int(p.byear), nil
}

// income returns a year's income in whole kronor for a person of the given
// age: none for children, else none now and then and otherwise about
// log-normal around 300,000.
func income(r *rand.Rand, age int) int64 {
	if age < 16 || r.IntN(20) == 0 {
		return 0
	}
	return int64(min(math.Exp(12.6+0.6*r.NormFloat64()), 25e6))
}

func appendInt(b []byte, v int64) []byte {
	if v < 0 {
		b = append(b, '-')
		v = -v
	}
	var d [20]byte
	i := len(d)
	for {
		i--
		d[i] = byte('0' + v%10)
		if v /= 10; v == 0 {
			break
		}
	}
	return append(b, d[i:]...)
}

// feistel is a keyed permutation of 0..n-1 that needs no memory: a
// balanced Feistel network over the smallest even number of bits that
// holds n-1, cycle-walking until the result falls below n (fewer than four
// steps on average).
type feistel struct {
	n    uint64
	half uint
	mask uint64
	keys [6]uint64
}

func newFeistel(n, seed uint64) *feistel {
	half := uint(1)
	if n > 1 {
		half = uint(max(1, (bits.Len64(n-1)+1)/2))
	}
	f := &feistel{n: n, half: half, mask: 1<<half - 1}
	for i := range f.keys {
		f.keys[i] = splitmix64(seed ^ uint64(i+1)*0x3c6ef372fe94f82b)
	}
	return f
}

// at returns the i-th element of the permutation, i < n.
func (f *feistel) at(i uint64) uint64 {
	x := i
	for {
		l, r := x>>f.half, x&f.mask
		for _, k := range f.keys {
			l, r = r, l^(splitmix64(r^k)&f.mask)
		}
		x = l<<f.half | r
		if x < f.n {
			return x
		}
	}
}
