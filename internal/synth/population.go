package synth

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/lopnr/lopnr/linkage/personnummer"
)

// person is everything the generator keeps about one person; rows are
// made from it as the files are written and never held.
type person struct {
	num   number // the current number
	birth int32  // birth day; for an unknown birth date the first day it can be
	death int32  // death day, or alive
	// plan is the planted index date of a cohort candidate or the date of
	// a decoy's AMI event; 0 without a plan.
	plan   int32
	ext    int32 // index into generator.extras, or -1
	byear  uint16
	flags  uint16
	kind   uint8 // plan kind
	src    uint8 // the event sources the person appears in (bit per source)
	curRes personnummer.Reason
}

// alive is the death day of the living.
const alive = math.MaxInt32

// person flags
const (
	fTest       uint16 = 1 << iota // the number is one of Skatteverket's test numbers
	fSN                            // the number is a samordningsnummer
	fKnownBirth                    // the number tells the whole birth date
	fFeb29                         // born on 29 February
	fSpecial                       // first row in each source: clean, and under the old number
	fExtraEarly                    // candidate: an AMI event before the window too
	fExtraLater                    // candidate: more AMI events in the window after the index
)

// plan kinds
const (
	planNone uint8 = iota
	planAdult
	planMinor        // under 18 at the index date
	planUnknownBirth // a samordningsnummer without a whole birth date
	planEdgeOn       // index date on the 18th birthday: a member
	planEdgeBefore   // index date the day before: not a member
	planDecoyEarly   // AMI in HDIA/DIA before the window
	planDecoyLate    // AMI in HDIA/DIA after the window
	planDecoyOP      // AMI in the OP column inside the window
)

func (p *person) candidate() bool { return p.kind >= planAdult && p.kind <= planEdgeBefore }
func (p *person) decoy() bool     { return p.kind >= planDecoyEarly }

// extra holds a changed person's old numbers and how each resolves.
type extra struct {
	old    [2]number
	oldRes [2]personnummer.Reason
	nOld   uint8
}

// histLine is one line of history.csv.
type histLine struct {
	old, new number
	day      int32
}

// generator is the population and what the source writers share (read
// only while they run).
type generator struct {
	o       Options
	parser  *personnummer.Parser
	ref     int32
	refYear int
	d2010   int32
	w0, w1  int32 // the cohort window
	days    *dayTable

	persons []person
	extras  []extra
	history []histLine
	reused  []number

	// used holds every test number and every number handed out, while the
	// population is made.
	used map[uint64]struct{}
	// spare indexes the test personnummer not used as persons' numbers by
	// birth date, for old numbers.
	spare map[uint32][]number
}

// The cohort criterion of the job spec.
var (
	cohortFrom = time.Date(2015, 1, 1, 0, 0, 0, 0, time.UTC)
	cohortTo   = time.Date(2024, 12, 31, 0, 0, 0, 0, time.UTC)
)

const cohortMinAge = 18

func newGenerator(o Options) (*generator, error) {
	g := &generator{
		o:       o,
		parser:  personnummer.NewParser(o.RefDate),
		ref:     dayOfTime(o.RefDate),
		refYear: o.RefDate.Year(),
		d2010:   dayOf(2010, 1, 1),
		w0:      dayOfTime(cohortFrom),
		w1:      dayOfTime(cohortTo),
		used:    make(map[uint64]struct{}, o.Persons+o.Persons/50+50_000),
	}
	g.days = newDayTable(g.d2010, g.ref)
	pool, err := loadTestNumbers(o.TestData, g.parser, g.used)
	if err != nil {
		return nil, err
	}
	r := rand.New(rand.NewPCG(o.Seed, 0x9e3779b97f4a7c15))
	r.Shuffle(len(pool), func(i, j int) { pool[i], pool[j] = pool[j], pool[i] })

	n := o.Persons
	g.persons = make([]person, n)
	first := dayOf(1920, 1, 1)
	for i := range g.persons {
		p := &g.persons[i]
		p.ext = -1
		p.death = alive
		if i < len(pool) {
			p.num = pool[i].c
			p.flags |= fTest
			if pool[i].kind == personnummer.Samordningsnummer {
				p.flags |= fSN
			}
		} else {
			p.num, err = g.newNumber(r, first, g.ref)
			if err != nil {
				return nil, err
			}
		}
	}
	if n < len(pool) {
		g.spare = map[uint32][]number{}
		for _, pn := range pool[n:] {
			if pn.kind == personnummer.Personnummer {
				k := dateKey(&pn.c)
				g.spare[k] = append(g.spare[k], pn.c)
			}
		}
	}
	// Test numbers first, generated after: shuffle so that file order
	// says nothing.
	r.Shuffle(n, func(i, j int) { g.persons[i], g.persons[j] = g.persons[j], g.persons[i] })
	for i := range g.persons {
		if err := g.fillBirth(&g.persons[i]); err != nil {
			return nil, err
		}
	}
	if err := g.assignRoles(r); err != nil {
		return nil, err
	}
	g.planCohort(r)
	g.planDeaths(r)
	g.planSources(r)
	if err := g.checkHistory(); err != nil {
		return nil, err
	}
	g.used, g.spare = nil, nil
	return g, nil
}

// newNumber makes a personnummer born between days lo and hi that is
// neither a test number nor handed out before.
func (g *generator) newNumber(r *rand.Rand, lo, hi int32) (number, error) {
	for range 1000 {
		y, m, d := civil(lo + int32(r.IntN(int(hi-lo)+1)))
		c := makeNumber(y, int(m), d, 1+r.IntN(999), false)
		if g.take(&c) {
			return c, nil
		}
	}
	return number{}, fmt.Errorf("synth: cannot find a free personnummer born in the range")
}

// take marks c used and reports whether it was free.
func (g *generator) take(c *number) bool {
	k := numKey(c)
	if _, ok := g.used[k]; ok {
		return false
	}
	g.used[k] = struct{}{}
	return true
}

// sameDate returns another number with c's birth date: a spare test
// personnummer when there is one, else a generated one (a
// samordningsnummer when sn).
func (g *generator) sameDate(r *rand.Rand, c *number, sn bool) (number, error) {
	dk := dateKey(c)
	if !sn {
		if l := g.spare[dk]; len(l) > 0 {
			g.spare[dk] = l[:len(l)-1]
			return l[len(l)-1], nil
		}
	}
	y, m, d := int(dk/10000), int(dk/100%100), int(dk%100)
	for range 5000 {
		o := makeNumber(y, m, d, 1+r.IntN(999), sn)
		if g.take(&o) {
			return o, nil
		}
	}
	return number{}, fmt.Errorf("synth: no free number left for a birth date")
}

// fillBirth parses a person's number, checks that it is the kind intended
// and sets the birth fields.
func (g *generator) fillBirth(p *person) error {
	n := g.parser.ParseBytes(p.num[:])
	want := personnummer.Personnummer
	if p.flags&fSN != 0 {
		want = personnummer.Samordningsnummer
	}
	if !n.Linkable() || n.Kind() != want {
		return fmt.Errorf("synth: internal error: a person's number parses as %v, want %v", n, want)
	}
	p.byear = uint16(numYear(&p.num))
	if t, ok := n.BirthDate(); ok {
		p.flags |= fKnownBirth
		p.birth = dayOfTime(t)
		if t.Month() == time.February && t.Day() == 29 {
			p.flags |= fFeb29
		}
		return nil
	}
	// Unknown month or day: the first day the birth can be.
	m := atoi2(p.num[4:6])
	if m == 0 {
		m = 1
	}
	p.birth = dayOf(int(p.byear), time.Month(m), 1)
	return nil
}

// roundRate returns rate*n rounded.
func roundRate(rate float64, n int) int { return int(math.Round(rate * float64(n))) }

// assignRoles makes the re-used pairs and the changed numbers.
func (g *generator) assignRoles(r *rand.Rand) error {
	n := len(g.persons)
	perm := r.Perm(n)
	pos := 0
	pick := func(needBirth bool) *person {
		for pos < n {
			p := &g.persons[perm[pos]]
			pos++
			if p.ext < 0 && p.curRes == personnummer.OK && (!needBirth || p.flags&fKnownBirth != 0) {
				return p
			}
		}
		return nil
	}
	// pickAdult picks a person who can be an adult cohort member.
	pickAdult := func() *person {
		for i := pos; i < n; i++ {
			p := &g.persons[perm[i]]
			if p.ext < 0 && p.curRes == personnummer.OK && p.flags&(fKnownBirth|fFeb29) == fKnownBirth && p.byear <= 1990 {
				perm[pos], perm[i] = perm[i], perm[pos]
				pos++
				return p
			}
		}
		return pick(true)
	}
	changeDay := func() int32 { return dayOf(2011, 1, 1) + int32(r.IntN(int(g.ref-dayOf(2011, 1, 1))+1)) }
	newExtra := func(p *person) *extra {
		p.ext = int32(len(g.extras))
		g.extras = append(g.extras, extra{})
		return &g.extras[p.ext]
	}
	special := n >= 20

	// Re-used numbers: two persons with one number.
	pairs := roundRate(g.o.ReusedRate, n) / 2
	if g.o.ReusedRate > 0 && pairs == 0 && special {
		pairs = 1
	}
	var firstReused *person
	for range pairs {
		a, b := pick(false), pick(false)
		if a == nil || b == nil {
			break
		}
		const numberFlags = fTest | fSN | fKnownBirth | fFeb29
		b.num, b.birth, b.byear = a.num, a.birth, a.byear
		b.flags = b.flags&^numberFlags | a.flags&numberFlags
		a.curRes, b.curRes = personnummer.Reused, personnummer.Reused
		g.reused = append(g.reused, a.num)
		if firstReused == nil && a.flags&fKnownBirth != 0 {
			firstReused = a
		}
	}

	changed := roundRate(g.o.ChangedRate, n)
	if g.o.ChangedRate > 0 && special { // (Defaults made a negative rate 0)
		// A chain a→b→c, of a person who becomes a cohort member.
		if p := pickAdult(); p != nil {
			e := newExtra(p)
			b, err := g.sameDate(r, &p.num, false)
			if err != nil {
				return err
			}
			a, err := g.sameDate(r, &p.num, r.IntN(2) == 0)
			if err != nil {
				return err
			}
			d1, d2 := changeDay(), changeDay()
			if d1 > d2 {
				d1, d2 = d2, d1
			}
			e.old, e.oldRes, e.nOld = [2]number{b, a}, [2]personnummer.Reason{personnummer.OK, personnummer.OK}, 2
			g.history = append(g.history, histLine{a, b, d1}, histLine{b, p.num, d2})
			p.flags |= fSpecial
		}
		// A conflict: x changed to the person's number y and to z.
		if p := pick(true); p != nil {
			e := newExtra(p)
			x, err := g.sameDate(r, &p.num, false)
			if err != nil {
				return err
			}
			z, err := g.newNumber(r, dayOf(1930, 1, 1), g.ref)
			if err != nil {
				return err
			}
			e.old[0], e.oldRes[0], e.nOld = x, personnummer.HistoryConflict, 1
			g.history = append(g.history, histLine{x, p.num, changeDay()}, histLine{x, z, changeDay()})
			p.flags |= fSpecial
		}
		// A cycle u→v→u.
		if p := pick(true); p != nil {
			e := newExtra(p)
			v, err := g.sameDate(r, &p.num, false)
			if err != nil {
				return err
			}
			p.curRes = personnummer.HistoryCycle
			e.old[0], e.oldRes[0], e.nOld = v, personnummer.HistoryCycle, 1
			g.history = append(g.history, histLine{p.num, v, changeDay()}, histLine{v, p.num, changeDay()})
			p.flags |= fSpecial
		}
		// A chain that ends in a re-used number.
		if firstReused != nil {
			p := firstReused
			e := newExtra(p)
			a, err := g.sameDate(r, &p.num, false)
			if err != nil {
				return err
			}
			e.old[0], e.oldRes[0], e.nOld = a, personnummer.Reused, 1
			g.history = append(g.history, histLine{a, p.num, changeDay()})
			p.flags |= fSpecial
		}
		changed -= 3
	}
	for range changed {
		p := pick(true)
		if p == nil {
			break
		}
		e := newExtra(p)
		old, err := g.sameDate(r, &p.num, r.IntN(10) < 4)
		if err != nil {
			return err
		}
		e.old[0], e.oldRes[0], e.nOld = old, personnummer.OK, 1
		g.history = append(g.history, histLine{old, p.num, changeDay()})
	}
	return nil
}

// birthday18 returns the day a person with a whole birth date turns 18.
func (g *generator) birthday18(p *person) int32 {
	y, m, d := civil(p.birth)
	return dayOf(y+cohortMinAge, m, d)
}

// planCohort chooses the cohort candidates, their index dates, and the
// decoys.
func (g *generator) planCohort(r *rand.Rand) {
	n := len(g.persons)
	c := roundRate(g.o.CohortRate, n)
	if c == 0 && g.o.CohortRate > 0 && n >= 20 {
		c = 1
	}
	top := min(g.w1, g.ref) // the last day an index date can be
	if g.w0 > top {
		c = 0
	}
	var quota [planEdgeBefore + 1]int
	if c >= 20 {
		quota[planEdgeOn], quota[planEdgeBefore] = 1, 1
		quota[planUnknownBirth] = min(3, c/20)
	}
	if c >= 2 {
		quota[planMinor] = max(1, c/20)
	}
	quota[planAdult] = c - quota[planEdgeOn] - quota[planEdgeBefore] - quota[planUnknownBirth] - quota[planMinor]
	boundaries := 0 // index dates on the window's first and last day
	if c >= 20 {
		boundaries = 2
	}
	uniform := func(lo, hi int32) int32 { return lo + int32(r.IntN(int(hi-lo)+1)) }

	try := func(p *person, testOnly bool) {
		if p.kind != planNone || p.curRes != personnummer.OK {
			return
		}
		known := p.flags&fKnownBirth != 0 && p.flags&fFeb29 == 0
		var b18 int32
		if known {
			b18 = g.birthday18(p)
		}
		set := func(k uint8, day int32) {
			p.kind, p.plan = k, day
			quota[k]--
		}
		switch {
		case quota[planEdgeOn] > 0 && known && b18 >= g.w0 && b18 <= top:
			set(planEdgeOn, b18)
		case quota[planEdgeBefore] > 0 && known && b18-1 >= g.w0 && b18-1 <= top:
			set(planEdgeBefore, b18-1)
		case quota[planUnknownBirth] > 0 && p.flags&fKnownBirth == 0 && p.birth <= top:
			set(planUnknownBirth, uniform(max(g.w0, p.birth), top))
		case quota[planMinor] > 0 && known && (!testOnly || p.flags&fTest != 0) && max(g.w0, p.birth) <= min(top, b18-1):
			set(planMinor, uniform(max(g.w0, p.birth), min(top, b18-1)))
		case quota[planAdult] > 0 && known && max(g.w0, b18) <= top:
			lo := max(g.w0, b18)
			switch {
			case boundaries == 2 && lo == g.w0:
				set(planAdult, g.w0)
				boundaries--
			case boundaries == 1 && top == g.w1:
				set(planAdult, g.w1)
				boundaries--
			default:
				set(planAdult, uniform(lo, top))
			}
		}
	}
	// The person with a chain of changes is a member, indexed under an
	// old number.
	for i := range g.persons {
		p := &g.persons[i]
		if p.ext >= 0 && g.extras[p.ext].nOld == 2 && quota[planAdult] > 0 && p.flags&fFeb29 == 0 {
			if lo := max(g.w0, g.birthday18(p)); lo <= top {
				p.kind, p.plan = planAdult, uniform(lo, top)
				quota[planAdult]--
			}
		}
	}
	// Minors from the test list (born recently) where they suffice.
	for _, i := range r.Perm(n) {
		try(&g.persons[i], true)
	}
	for _, i := range r.Perm(n) {
		try(&g.persons[i], false)
	}
	for i := range g.persons {
		p := &g.persons[i]
		if !p.candidate() {
			continue
		}
		if r.IntN(5) == 0 && max(g.d2010, p.birth) < g.w0 {
			p.flags |= fExtraEarly
		}
		if r.IntN(10) == 0 {
			p.flags |= fExtraLater
		}
	}

	// Decoys: AMI codes that must not make a member.
	d := roundRate(g.o.DecoyRate, n)
	if d == 0 && g.o.DecoyRate > 0 && n >= 20 {
		d = 1
	}
	for _, i := range r.Perm(n) {
		if d == 0 {
			break
		}
		p := &g.persons[i]
		if p.kind != planNone {
			continue
		}
		lo := max(g.d2010, p.birth)
		for _, k := range []uint8{planDecoyEarly, planDecoyLate, planDecoyOP}[r.IntN(3):] {
			switch {
			case k == planDecoyEarly && lo < g.w0:
				p.plan = g.w0 - 1 // the day before the window
				if r.IntN(3) != 0 {
					p.plan = uniform(lo, g.w0-1)
				}
			case k == planDecoyLate && max(lo, g.w1+1) <= g.ref:
				p.plan = max(lo, g.w1+1)
				if r.IntN(3) != 0 {
					p.plan = uniform(max(lo, g.w1+1), g.ref)
				}
			case k == planDecoyOP && max(lo, g.w0) <= top:
				p.plan = uniform(max(lo, g.w0), top)
			default:
				continue
			}
			p.kind = k
			d--
			break
		}
	}
}

// planDeaths chooses who died and when: never before a planned event.
func (g *generator) planDeaths(r *rand.Rand) {
	for i := range g.persons {
		p := &g.persons[i]
		age := g.refYear - int(p.byear)
		var pr float64
		switch {
		case age < 40:
			pr = 0.002
		case age < 60:
			pr = 0.01
		case age < 75:
			pr = 0.04
		case age < 90:
			pr = 0.12
		case age < 105:
			pr = 0.3
		default:
			pr = 0.7
		}
		if r.Float64() >= pr {
			continue
		}
		lo := max(g.d2010, p.birth)
		if p.plan > 0 {
			lo = max(lo, p.plan+1)
		}
		if lo <= g.ref {
			p.death = lo + int32(r.IntN(int(g.ref-lo)+1))
		}
	}
}

// planSources chooses the sources each person appears in.
func (g *generator) planSources(r *rand.Rand) {
	for i := range g.persons {
		p := &g.persons[i]
		for s := range sourceDefs {
			d := &sourceDefs[s]
			if d.name != srcDors && r.Float64() < d.share {
				p.src |= 1 << s
			}
		}
		if p.kind != planNone {
			p.src |= 1 << srcIndex(srcParSluten)
		}
		if p.death != alive {
			p.src |= 1 << srcIndex(srcDors)
		}
		if p.src == 0 {
			for {
				s := r.IntN(len(sourceDefs))
				if sourceDefs[s].name != srcDors {
					p.src |= 1 << s
					break
				}
			}
		}
	}
}

// checkHistory builds a personnummer.History from history.csv and
// reused.csv as they will be written and checks that every number of every
// person resolves as intended.
func (g *generator) checkHistory() error {
	parse := func(c *number) personnummer.Number { return g.parser.ParseBytes(c[:]) }
	changes := make([]personnummer.Change, 0, len(g.history))
	for _, l := range g.history {
		changes = append(changes, personnummer.Change{Old: parse(&l.old), New: parse(&l.new)})
	}
	reused := make([]personnummer.Number, 0, len(g.reused))
	for i := range g.reused {
		reused = append(reused, parse(&g.reused[i]))
	}
	h := personnummer.NewHistory(changes, reused)
	check := func(c *number, want personnummer.Reason, cur *number) error {
		n := parse(c)
		got, reason := h.Resolve(n)
		if reason != want || (reason == personnummer.OK && got.Key() != *cur) {
			return fmt.Errorf("synth: internal error: a number resolves as %q, want %q", reason, want)
		}
		return nil
	}
	for i := range g.persons {
		p := &g.persons[i]
		if err := check(&p.num, p.curRes, &p.num); err != nil {
			return err
		}
		if p.ext >= 0 {
			e := &g.extras[p.ext]
			for j := range e.nOld {
				if err := check(&e.old[j], e.oldRes[j], &p.num); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
