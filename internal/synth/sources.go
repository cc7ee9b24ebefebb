package synth

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/lopnr/lopnr/linkage"
	"github.com/lopnr/lopnr/linkage/personnummer"
)

// Source names in job.yaml.
const (
	srcValSluten = "val_sluten"
	srcValOppen  = "val_oppen"
	srcTakeCare  = "takecare"
	srcParSluten = "par_sluten"
	srcParOppen  = "par_oppen"
	srcLMED      = "lmed"
	srcDors      = "dors"
	srcReused    = "reused"
	srcHistory   = "history"
)

// Identity forms.
const (
	form12     uint8 = iota // YYYYMMDDNNNC
	form12Dash              // YYYYMMDD-NNNC
	form10Sep               // YYMMDD-NNNC, or + from the year of the 100th birthday
	form10                  // YYMMDDNNNC (under 100 only; else as form10Sep)
	numForms
)

// secondDate is a date column besides the event date: up to max days
// after it, or before it.
type secondDate struct {
	after bool
	max   int
}

// sourceDef is one events source: its file, how it is written, and how
// many rows persons have in it.
type sourceDef struct {
	name, profile, file string
	encoding            string // as in job.yaml; "" for utf-8
	crlf                bool
	compression         string // "", "gzip" or "zstd"
	share               float64
	mean                float64 // rows of a person who appears, before scaling
	form                uint8   // the form most rows use
	extra               []string
	second              map[string]secondDate
}

// sourceDefs are the events sources in job order. share*mean sums to about
// 15 rows a person.
var sourceDefs = []sourceDef{
	{name: srcValSluten, profile: "val-slutenvard", file: "val_sluten.csv", encoding: linkage.EncodingCP, crlf: true,
		share: 0.15, mean: 2, form: form12,
		second: map[string]secondDate{"UTSKRIVNINGSDATUM": {after: true, max: 20}}},
	{name: srcValOppen, profile: "val-oppenvard", file: "val_oppen.csv",
		share: 0.50, mean: 6, form: form12},
	{name: srcTakeCare, profile: "takecare", file: "takecare.csv", encoding: linkage.EncodingLatin,
		share: 0.35, mean: 5, form: form12Dash, extra: []string{"Text"}},
	{name: srcParSluten, profile: "par-sluten", file: "par_sluten.csv",
		share: 0.22, mean: 2, form: form12,
		second: map[string]secondDate{"UTDATUM": {after: true, max: 20}}},
	{name: srcParOppen, profile: "par-oppen", file: "par_oppen.csv.gz", compression: "gzip",
		share: 0.50, mean: 5.5, form: form12},
	{name: srcLMED, profile: "lmed", file: "lmed.csv.zst", compression: "zstd",
		share: 0.60, mean: 11, form: form12,
		second: map[string]secondDate{"FDATUM": {after: false, max: 120}}},
	{name: srcDors, profile: "dors", file: "dors.tsv",
		share: 0, mean: 1, form: form12},
}

// Identity sources in job order, after the events sources.
var (
	reusedDef  = sourceDef{name: srcReused, profile: "cohort-list", file: "reused.csv"}
	historyDef = sourceDef{name: srcHistory, profile: "pnr-history", file: "history.csv"}
)

func srcIndex(name string) int {
	return slices.IndexFunc(sourceDefs, func(d sourceDef) bool { return d.name == name })
}

var columnRange = regexp.MustCompile(`^(.*?)(\d+)\.\.(.*?)(\d+)$`)

// expandColumns expands ranges such as DIA1..DIA30 as linkage does.
func expandColumns(cols []string) []string {
	var out []string
	for _, c := range cols {
		m := columnRange.FindStringSubmatch(c)
		if m == nil || m[1] != m[3] {
			out = append(out, c)
			continue
		}
		from, _ := strconv.Atoi(m[2])
		to, _ := strconv.Atoi(m[4])
		for i := from; i <= to; i++ {
			out = append(out, m[1]+strconv.Itoa(i))
		}
	}
	return out
}

// group is one code group of a source, as written.
type group struct {
	name  string
	n     int // columns
	split bool
	pool  *codePool
}

// layout is a source's columns, derived from its built-in profile:
// identity, event date, the other dates, the code groups' columns, and the
// source's extra columns.
type layout struct {
	header   []string
	eventFmt string
	second   []secondDate
	secondFm []string
	groups   []group
	text     bool
}

func builtinProfile(name string) (linkage.Profile, error) {
	p, ok := linkage.Builtin()[name]
	if !ok {
		return p, fmt.Errorf("synth: no built-in profile %q", name)
	}
	return p, nil
}

// Columns returns the header of a source's file, in the order written.
func Columns(source string) ([]string, error) {
	switch source {
	case srcReused, srcHistory:
		d := reusedDef
		if source == srcHistory {
			d = historyDef
		}
		p, err := builtinProfile(d.profile)
		if err != nil {
			return nil, err
		}
		if p.History != nil {
			return []string{p.History.Old, p.History.New, p.History.Date}, nil
		}
		return []string{p.Identity}, nil
	}
	i := srcIndex(source)
	if i < 0 {
		return nil, fmt.Errorf("synth: no source %q", source)
	}
	l, err := newLayout(&sourceDefs[i])
	if err != nil {
		return nil, err
	}
	return l.header, nil
}

func newLayout(d *sourceDef) (*layout, error) {
	p, err := builtinProfile(d.profile)
	if err != nil {
		return nil, err
	}
	l := &layout{header: []string{p.Identity}}
	if p.EventDate == "" || p.Dates[p.EventDate] == "" {
		return nil, fmt.Errorf("synth: profile %s has no event date", d.profile)
	}
	l.header = append(l.header, p.EventDate)
	l.eventFmt = p.Dates[p.EventDate]
	var dates []string
	for c := range p.Dates {
		if c != p.EventDate {
			dates = append(dates, c)
		}
	}
	sort.Strings(dates)
	for _, c := range dates {
		l.header = append(l.header, c)
		l.second = append(l.second, d.second[c]) // unknown: the event date
		l.secondFm = append(l.secondFm, p.Dates[c])
	}
	for _, cg := range p.Codes {
		cols := expandColumns(cg.Columns)
		l.header = append(l.header, cols...)
		l.groups = append(l.groups, group{
			name:  cg.Group,
			n:     len(cols),
			split: cg.Split != "",
			pool:  poolFor(cg.System, d.name == srcParSluten),
		})
	}
	for _, c := range d.extra {
		l.header = append(l.header, c)
		l.text = true
	}
	seen := map[string]bool{}
	for _, c := range l.header {
		if seen[c] {
			return nil, fmt.Errorf("synth: profile %s: column %s twice", d.profile, c)
		}
		seen[c] = true
	}
	return l, nil
}

// Distributions of the number of codes in a repeated group and in a split
// field, 64 entries each.
var (
	multiDist = distTable([]int{29, 16, 8, 5, 3, 2, 1})
	splitDist = distTable([]int{34, 20, 7, 3})
)

func distTable(weights []int) [64]uint8 {
	var t [64]uint8
	i := 0
	for k, w := range weights {
		for range w {
			t[i] = uint8(k)
			i++
		}
	}
	if i != 64 {
		panic("synth: distribution weights must sum to 64")
	}
	return t
}

// prob converts a probability to a threshold for a uniform uint64.
func prob(p float64) uint64 {
	switch {
	case p <= 0:
		return 0
	case p >= 1:
		return math.MaxUint64
	}
	return uint64(p * (1 << 64))
}

// splitmix64 derives independent seeds.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// srcResult is what one source's writer counted.
type srcResult struct {
	rows       int64
	quarantine [16]int64
	linked     []uint64 // bit per person: some linkable row
	oldSeen    []uint8  // bit per old number of an extra: in a linkable row
	cohortMin  []int32  // par_sluten: earliest linkable AMI admission in the window
}

// srcGen writes one events source.
type srcGen struct {
	g   *generator
	d   *sourceDef
	idx int
	l   *layout
	r   *rand.PCG
	out io.Writer
	buf []byte

	delim byte
	eol   []byte
	junk  [][]byte // junkIdentities, encoded
	// nonASCII are the junk values with letters beyond ASCII, in a
	// single-byte encoding; nil for UTF-8.
	nonASCII [][]byte
	texts    [][]byte // takecareTexts, encoded and quoted
	endash   []byte   // an en dash, encoded; nil when the encoding has none

	cohort             bool // par_sluten: track the criterion
	hdia, dia, op      int  // par_sluten's group indexes
	rowSpan            float64
	tInvalid, tInterim uint64 // cumulative thresholds
	tReserve, tDup     uint64
	tEmpty, tBlank     uint64
	tPref, tSpace      uint64

	res srcResult
}

// rowSpec says what is special about a row.
type rowSpec struct {
	day   int32
	force int    // a group that must hold code, or -1
	code  []byte // the forced code
	// clean: no noise in the identity and a number that resolves (planted
	// rows); special: the first old number, no noise.
	clean, special bool
}

func newSrcGen(g *generator, idx int, out io.Writer) (*srcGen, error) {
	d := &sourceDefs[idx]
	l, err := newLayout(d)
	if err != nil {
		return nil, err
	}
	p, _ := builtinProfile(d.profile)
	s := &srcGen{
		g: g, d: d, idx: idx, l: l, out: out,
		r:     rand.NewPCG(splitmix64(g.o.Seed^0x5eed), splitmix64(uint64(idx)+1)),
		buf:   make([]byte, 0, 1<<19),
		delim: ';',
		eol:   []byte("\n"),
	}
	if p.Delimiter != "" {
		s.delim = p.Delimiter[0]
	}
	if d.crlf {
		s.eol = []byte("\r\n")
	}
	enc := encodingFor(d.encoding)
	for _, j := range junkIdentities {
		b, err := encode(enc, j)
		if err != nil {
			return nil, err
		}
		s.junk = append(s.junk, b)
		if enc != nil && len(b) != len(j) {
			s.nonASCII = append(s.nonASCII, b)
		}
	}
	if enc != nil && s.nonASCII == nil {
		return nil, fmt.Errorf("synth: no non-ASCII junk identities for %s", d.encoding)
	}
	if b, err := encode(enc, "–"); err == nil {
		s.endash = b
	}
	if l.text {
		for _, t := range takecareTexts {
			b, err := encode(enc, quoteField(t, s.delim))
			if err != nil {
				return nil, err
			}
			s.texts = append(s.texts, b)
		}
	}
	n := len(g.persons)
	s.res.linked = make([]uint64, (n+63)/64)
	s.res.oldSeen = make([]uint8, len(g.extras))
	s.hdia, s.dia, s.op = -1, -1, -1
	if d.name == srcParSluten {
		s.cohort = true
		s.res.cohortMin = make([]int32, n)
		for i, gr := range l.groups {
			switch gr.name {
			case "hdia":
				s.hdia = i
			case "dia":
				s.dia = i
			case "op":
				s.op = i
			}
		}
		if s.hdia < 0 || s.dia < 0 || s.op < 0 {
			return nil, fmt.Errorf("synth: profile %s: want code groups hdia, dia and op", d.profile)
		}
	}
	o := g.o
	s.tInvalid = prob(o.InvalidRate)
	s.tInterim = s.tInvalid + prob(o.InterimRate)
	s.tReserve = s.tInterim + prob(o.ReserveRate)
	s.tDup = prob(o.DuplicateRate)
	s.tEmpty = prob(o.EmptyRate)
	s.tBlank = s.tEmpty + prob(o.BlankedRate)
	s.tPref = prob(0.8)
	s.tSpace = prob(0.005)
	mean := d.mean
	if f, ok := o.SourceRows[d.name]; ok {
		mean *= f
	}
	s.rowSpan = 2 * (mean*o.RowsPerPerson/15 - 1)
	return s, nil
}

// n returns a uniform int in [0, k), k < 2^32.
func (s *srcGen) n(k int) int { return int((s.r.Uint64() >> 32) * uint64(k) >> 32) }

func (s *srcGen) between(lo, hi int32) int32 { return lo + int32(s.n(int(hi-lo)+1)) }

func (s *srcGen) pick(p *codePool) []byte { return p.vals[s.n(len(p.vals))] }

// count returns how many ordinary rows a person has in the source.
func (s *srcGen) count() int {
	if s.rowSpan <= 0 {
		return 1
	}
	u := float64(s.r.Uint64()>>11) / (1 << 53)
	return 1 + int(u*s.rowSpan+0.5)
}

func (s *srcGen) run() error {
	for i, c := range s.l.header {
		if i > 0 {
			s.buf = append(s.buf, s.delim)
		}
		s.buf = append(s.buf, c...)
	}
	s.buf = append(s.buf, s.eol...)
	g := s.g
	bit := uint8(1) << s.idx
	dors := s.d.name == srcDors
	var rs rowSpec
	for pi := range g.persons {
		p := &g.persons[pi]
		if p.src&bit == 0 {
			continue
		}
		lo, hi := max(g.d2010, p.birth), min(g.ref, p.death)
		special := p.flags&fSpecial != 0
		if dors {
			rs = rowSpec{day: p.death, force: -1, special: special}
			if err := s.row(pi, p, &rs); err != nil {
				return err
			}
			continue
		}
		count := s.count()
		if s.cohort && p.kind != planNone {
			if err := s.planted(pi, p, hi); err != nil {
				return err
			}
			count = s.n(count + 1) // maybe none besides
		}
		if special {
			count = max(count, 1)
		}
		for k := range count {
			rs = rowSpec{day: s.between(lo, hi), force: -1, special: special && k == 0}
			if err := s.row(pi, p, &rs); err != nil {
				return err
			}
		}
		if len(s.buf) >= 1<<18 {
			if err := s.flush(); err != nil {
				return err
			}
		}
	}
	return s.flush()
}

func (s *srcGen) flush() error {
	_, err := s.out.Write(s.buf)
	s.buf = s.buf[:0]
	return err
}

// planted writes a cohort candidate's or a decoy's AMI events in
// par_sluten.
func (s *srcGen) planted(pi int, p *person, hi int32) error {
	g := s.g
	ami := func(day int32, clean bool) error {
		rs := rowSpec{day: day, force: s.hdia, code: s.pick(poolAMI), clean: clean}
		if s.n(4) == 0 {
			rs.force = s.dia
		}
		return s.row(pi, p, &rs)
	}
	switch {
	case p.candidate():
		if err := ami(p.plan, true); err != nil {
			return err
		}
		if p.flags&fExtraEarly != 0 {
			lo := max(g.d2010, p.birth)
			day := g.w0 - 1
			if s.n(3) != 0 {
				day = s.between(lo, g.w0-1)
			}
			if err := ami(day, false); err != nil {
				return err
			}
		}
		if p.flags&fExtraLater != 0 {
			for range 1 + s.n(2) {
				if err := ami(s.between(p.plan, min(g.w1, hi)), false); err != nil {
					return err
				}
			}
		}
	case p.kind == planDecoyEarly || p.kind == planDecoyLate:
		return ami(p.plan, true)
	case p.kind == planDecoyOP:
		rs := rowSpec{day: p.plan, force: s.op, code: s.pick(poolAMI), clean: true}
		return s.row(pi, p, &rs)
	}
	return nil
}

// row writes one row (twice, sometimes) and counts it.
func (s *srcGen) row(pi int, p *person, rs *rowSpec) error {
	start := len(s.buf)
	reason, which, err := s.identity(p, rs)
	if err != nil {
		return err
	}
	l := s.l
	g := s.g
	s.buf = append(s.buf, s.delim)
	s.buf = s.appendDate(s.buf, l.eventFmt, rs.day)
	for i, sd := range l.second {
		s.buf = append(s.buf, s.delim)
		if s.r.Uint64() < s.tEmpty {
			continue
		}
		day := rs.day
		if sd.max > 0 {
			off := int32(s.n(sd.max + 1))
			if sd.after {
				day = min(day+off, min(g.ref, p.death))
			} else {
				day = max(day-off, max(g.d2010, p.birth))
			}
		}
		s.buf = s.appendDate(s.buf, l.secondFm[i], day)
	}
	for gi := range l.groups {
		gr := &l.groups[gi]
		forced := gi == rs.force
		switch {
		case gr.split:
			s.buf = append(s.buf, s.delim)
			k := int(splitDist[s.n(64)])
			for j := range k {
				if j > 0 {
					s.buf = append(s.buf, ' ')
				}
				s.buf = append(s.buf, s.pick(gr.pool)...)
			}
			if forced {
				if k > 0 {
					s.buf = append(s.buf, ' ')
				}
				s.buf = append(s.buf, rs.code...)
			}
		case gr.n == 1:
			s.buf = append(s.buf, s.delim)
			if forced {
				s.buf = append(s.buf, rs.code...)
			} else {
				s.buf = s.appendCode(s.buf, gr.pool)
			}
		default:
			k := min(int(multiDist[s.n(64)]), gr.n)
			at := -1
			if forced {
				k = max(k, 1)
				at = s.n(k)
			}
			for j := range k {
				s.buf = append(s.buf, s.delim)
				if j == at {
					s.buf = append(s.buf, rs.code...)
				} else {
					s.buf = s.appendCode(s.buf, gr.pool)
				}
			}
			for range gr.n - k {
				s.buf = append(s.buf, s.delim)
			}
		}
	}
	if l.text {
		s.buf = append(s.buf, s.delim)
		if s.n(4) != 0 {
			s.buf = append(s.buf, s.texts[s.n(len(s.texts))]...)
		}
	}
	s.buf = append(s.buf, s.eol...)

	times := int64(1)
	if s.r.Uint64() < s.tDup {
		s.buf = append(s.buf, s.buf[start:]...)
		times = 2
	}
	s.res.rows += times
	if reason != personnummer.OK {
		s.res.quarantine[reason] += times
		return nil
	}
	s.res.linked[pi/64] |= 1 << (pi % 64)
	if which > 0 {
		s.res.oldSeen[p.ext] |= 1 << (which - 1)
	}
	if s.cohort && (rs.force == s.hdia || rs.force == s.dia) && rs.force >= 0 && rs.day >= g.w0 && rs.day <= g.w1 {
		if m := s.res.cohortMin[pi]; m == 0 || rs.day < m {
			s.res.cohortMin[pi] = rs.day
		}
	}
	return nil
}

func (s *srcGen) appendDate(buf []byte, format string, day int32) []byte {
	switch format {
	case linkage.DateISO:
		return s.g.days.appendISO(buf, day)
	case linkage.DateRegister:
		buf = s.g.days.appendYMD(buf, day)
		switch u := s.n(100); {
		case u < 1: // unknown month and day
			copy(buf[len(buf)-4:], "0000")
		case u < 4: // unknown day
			copy(buf[len(buf)-2:], "00")
		}
		return buf
	}
	return s.g.days.appendYMD(buf, day)
}

// appendCode appends a code from pool, BLANKED, or nothing.
func (s *srcGen) appendCode(buf []byte, pool *codePool) []byte {
	if u := s.r.Uint64(); u < s.tBlank {
		if u < s.tEmpty {
			return buf
		}
		return append(buf, blanked...)
	}
	return append(buf, s.pick(pool)...)
}

// writeSources writes the events sources, Workers at a time, largest
// first; each has its own random stream, so the order does not matter.
func (g *generator) writeSources(dir string) ([]srcResult, error) {
	results := make([]srcResult, len(sourceDefs))
	errs := make([]error, len(sourceDefs))
	order := make([]int, len(sourceDefs))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		return sourceDefs[order[a]].share*sourceDefs[order[a]].mean > sourceDefs[order[b]].share*sourceDefs[order[b]].mean
	})
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range min(g.o.Workers, len(order)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				results[i], errs[i] = g.writeSource(dir, i)
			}
		}()
	}
	for _, i := range order {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return results, nil
}

func (g *generator) writeSource(dir string, idx int) (srcResult, error) {
	d := &sourceDefs[idx]
	f, err := os.OpenFile(filepath.Join(dir, d.file), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return srcResult{}, err
	}
	defer f.Close()
	var (
		w     io.Writer = f
		close func() error
	)
	switch d.compression {
	case "gzip":
		zw, err := gzip.NewWriterLevel(f, gzip.BestSpeed)
		if err != nil {
			return srcResult{}, err
		}
		w, close = zw, zw.Close
	case "zstd":
		zw, err := zstd.NewWriter(f, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
		if err != nil {
			return srcResult{}, err
		}
		w, close = zw, zw.Close
	}
	s, err := newSrcGen(g, idx, w)
	if err != nil {
		return srcResult{}, err
	}
	if err := s.run(); err != nil {
		return srcResult{}, fmt.Errorf("%s: %w", d.file, err)
	}
	if close != nil {
		if err := close(); err != nil {
			return srcResult{}, err
		}
	}
	return s.res, f.Close()
}

// writeIdentityFiles writes reused.csv and history.csv.
func (g *generator) writeIdentityFiles(dir string) error {
	write := func(def *sourceDef, lines func(w *bufio.Writer)) error {
		cols, err := Columns(def.name)
		if err != nil {
			return err
		}
		f, err := os.OpenFile(filepath.Join(dir, def.file), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		w := bufio.NewWriter(f)
		for i, c := range cols {
			if i > 0 {
				w.WriteByte(';')
			}
			w.WriteString(c)
		}
		w.WriteByte('\n')
		lines(w)
		if err := w.Flush(); err != nil {
			return err
		}
		return f.Close()
	}
	err := write(&reusedDef, func(w *bufio.Writer) {
		for _, c := range g.reused {
			w.Write(c[:])
			w.WriteByte('\n')
		}
	})
	if err != nil {
		return err
	}
	return write(&historyDef, func(w *bufio.Writer) {
		var b []byte
		for _, l := range g.history {
			b = append(b[:0], l.old[:]...)
			b = append(b, ';')
			b = append(b, l.new[:]...)
			b = append(b, ';')
			b = g.days.appendISO(b, l.day)
			b = append(b, '\n')
			w.Write(b)
		}
	})
}
