package synth

import (
	"math/bits"
	"strconv"
	"strings"

	"github.com/lopnr/lopnr/linkage/personnummer"
)

// truth assembles the report a correct run gives from what the writers
// counted.
func (g *generator) truth(res []srcResult) *Truth {
	cs := srcIndex(srcParSluten)
	members := make([]uint64, len(res[cs].linked))
	t := &Truth{Overlap: map[string]int{}}
	for pi := range g.persons {
		idx := res[cs].cohortMin[pi]
		if idx == 0 || !g.adultAt(&g.persons[pi], idx) {
			continue
		}
		members[pi/64] |= 1 << (pi % 64)
		t.Cohort.Persons++
		var names []string
		for si := range sourceDefs {
			if res[si].linked[pi/64]&(1<<(pi%64)) != 0 {
				names = append(names, sourceDefs[si].name)
			}
		}
		key := strings.Join(names, "+")
		if key == "" {
			key = "(none)"
		}
		t.Overlap[key]++
	}
	for si := range sourceDefs {
		r := &res[si]
		st := SourceTruth{Name: sourceDefs[si].name, Rows: r.rows, LinkableRows: r.rows, Quarantined: map[string]int64{}}
		for reason, n := range r.quarantine {
			if n > 0 {
				st.Quarantined[personnummer.Reason(reason).String()] = n
				st.LinkableRows -= n
			}
		}
		for w, b := range r.linked {
			st.Persons += bits.OnesCount64(b)
			st.CohortPersons += bits.OnesCount64(b & members[w])
		}
		for _, seen := range r.oldSeen {
			st.ChangedNumbersResolved += bits.OnesCount8(seen)
		}
		t.Sources = append(t.Sources, st)
	}
	return t
}

// adultAt reports whether a person is at least the cohort's minimum age in
// whole years on day: the birthday has come in the year it turns that age.
// An unknown birth date fails.
func (g *generator) adultAt(p *person, day int32) bool {
	if p.flags&fKnownBirth == 0 {
		return false
	}
	by, bm, bd := civil(p.birth)
	y, m, d := civil(day)
	age := y - by
	if m < bm || m == bm && d < bd {
		age--
	}
	return age >= cohortMinAge
}

// ProjectID is the project of the job generated with seed.
func ProjectID(seed uint64) string { return "synth-" + strconv.FormatUint(seed, 10) }

// jobSpec returns job.yaml.
func (g *generator) jobSpec() []byte {
	var b strings.Builder
	b.WriteString("# A synthetic job written by lopnr's internal/synth (go run ./bench/gen).\n")
	b.WriteString("# The identity numbers are Skatteverket's test numbers or made up; truth.json\n")
	b.WriteString("# holds the report a correct run gives.\n")
	b.WriteString("project: " + ProjectID(g.o.Seed) + "\n")
	b.WriteString("epm_dnr: \"2026-00000-01\"\n")
	b.WriteString("reference_date: \"" + g.o.RefDate.Format("2006-01-02") + "\"\n")
	b.WriteString("sources:\n")
	defs := append(append([]sourceDef{}, sourceDefs...), reusedDef, historyDef)
	for _, d := range defs {
		b.WriteString("  - name: " + d.name + "\n")
		b.WriteString("    profile: " + d.profile + "\n")
		b.WriteString("    path: " + d.file + "\n")
		if d.encoding != "" {
			b.WriteString("    encoding: " + d.encoding + "\n")
		}
	}
	b.WriteString(`identity:
  history: ` + srcHistory + `
  reused: ` + srcReused + `
cohort:
  criteria:
    - source: ` + srcParSluten + `
      codes: [I21, I22]
      groups: [hdia, dia]
      from: "` + cohortFrom.Format("2006-01-02") + `"
      to: "` + cohortTo.Format("2006-01-02") + `"
  age:
    min: ` + strconv.Itoa(cohortMinAge) + `
variables:
  - {source: par_sluten, column: HDIA, transform: truncate(3)}
  - {source: par_sluten, column: INDATUM, transform: year-month}
  - {source: par_sluten, column: OP, transform: keep}
  - {source: lmed, column: ATC, transform: keep}
  - {source: lmed, column: EDATUM, transform: year}
  - {source: dors, column: ULORSAK, transform: truncate(3)}
outputs:
  format: csv
`)
	return []byte(b.String())
}

// Approved is an approved variable list, in the YAML that `lopnr run
// --approved` reads, that approves exactly what job.yaml reads and
// delivers: every source it reads (those it delivers from, the cohort's,
// the identity sources and the others its report covers), each with the
// built-in profile job.yaml names, and its variables. The variables come
// last, so that a test may append its own.
const Approved = `# The project's approved variable list (from its ethics approval).
sources:
  - {name: val_sluten, profile: val-slutenvard}
  - {name: val_oppen, profile: val-oppenvard}
  - {name: takecare, profile: takecare}
  - {name: par_sluten, profile: par-sluten}
  - {name: par_oppen, profile: par-oppen}
  - {name: lmed, profile: lmed}
  - {name: dors, profile: dors}
  - {name: reused, profile: cohort-list}
  - {name: history, profile: pnr-history}
variables:
  - {source: par_sluten, column: HDIA, transforms: ["truncate(3)"]}
  - {source: par_sluten, column: INDATUM, transforms: [year-month]}
  - {source: par_sluten, column: OP}
  - {source: lmed, column: ATC}
  - {source: lmed, column: EDATUM, transforms: [year]}
  - {source: dors, column: ULORSAK, transforms: ["truncate(3)"]}
`

// ApprovedWithPartner is Approved with a partner's source too, read as
// lopnrd writes a partner's import (the built-in profile partner-import,
// its columns named by the partner's header), and the given columns of it.
func ApprovedWithPartner(source string, columns ...string) string {
	out := strings.Replace(Approved, "sources:\n", "sources:\n  - {name: "+source+", profile: partner-import}\n", 1)
	for _, c := range columns {
		out += "  - {source: " + source + ", column: " + c + "}\n"
	}
	return out
}
