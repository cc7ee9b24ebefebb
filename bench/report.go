package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// goal is the end-to-end ratio to the baseline that lopnr aims at.
const goal = 1.5

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

func perSec(n int64, d time.Duration, unit float64) string {
	if d <= 0 || n == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f M", float64(n)/unit/d.Seconds())
}

func mbPerSec(n int64, d time.Duration) string {
	if d <= 0 || n == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f", float64(n)/1e6/d.Seconds())
}

func peak(n int64) string { return fmt.Sprintf("%.0f MB", float64(n)/1e6) }

func ratio(a, b time.Duration) float64 {
	if b <= 0 {
		return 0
	}
	return a.Seconds() / b.Seconds()
}

func thousands(n int64) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// markdown renders the report: per size the job against the baseline,
// where lopnr's time goes, each stage against its raw tool; then the growth
// table when there are several sizes.
func (rep *report) markdown() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	sc := rep.cfg.scenario
	w("## Scenario `%s`\n\n", sc.name)
	w("%s. Machine: %s. DuckDB memory limit %s for both sides. Time is each step's own work; peak memory is the maximum resident set size of the step's process.\n\n", sc.about, rep.machine, rep.cfg.memory)
	for _, s := range rep.sizes {
		w("### %s ×%g: %s persons, %s source rows (%.0f MB on disk), cohort %s\n\n", sc.name, s.scale,
			thousands(int64(s.persons)), thousands(s.rows), mb(s.bytes), thousands(int64(s.cohort)))
		w("| side | rows delivered | time | source rows/s | source MB/s | peak memory | ratio to baseline |\n|---|---|---|---|---|---|---|\n")
		for _, r := range []struct {
			name string
			r    stepResult
		}{
			{"baseline: `bench/baseline.sql` in DuckDB (cohort, joins, `COPY … TO` CSV with zstd)", s.baseline},
			{"lopnr: the whole job to S3 (ingest, identities, cohort, report, LopNr in the key store, extract, leak guard, zstd, age, upload, manifest)", s.lopnr},
			{"lopnr, the job spec listing only the sources the delivery reads (par_sluten, lmed, dors, history, reused)", s.lopnrDelivered},
		} {
			w("| %s | %s | %s | %s | %s | %s | **%.2f** |\n", r.name, thousands(r.r.Rows), secs(r.r.Took),
				perSec(s.rows, r.r.Took, 1e6), mbPerSec(s.bytes, r.r.Took), peak(r.r.MaxRSS), ratio(r.r.Took, s.baseline.Took))
		}
		w("\nRows/s and MB/s are over all the scenario's source files, whichever of them a side reads.\nRows delivered per file, lopnr / baseline: ")
		var names []string
		for n := range s.lopnr.Files {
			names = append(names, n)
		}
		slices.Sort(names)
		for i, n := range names {
			if i > 0 {
				w(", ")
			}
			w("%s %s / %s", n, thousands(s.lopnr.Files[n]), thousands(s.baseline.Files[n]))
		}
		w(". The delivery was fetched back from S3 and decrypted with the researcher's key: %s rows (%.1f MB of CSV), no identity numbers.\n\n",
			thousands(s.plainRows), mb(s.plainSize))
		w("Where lopnr's job spends its time (%s):\n\n| stage | whole job | share | delivered sources only | share |\n|---|---|---|---|---|\n", s.lopnr.Note)
		for _, st := range s.lopnr.Stages {
			var d time.Duration
			for _, o := range s.lopnrDelivered.Stages {
				if o.Name == st.Name {
					d = o.Took
				}
			}
			w("| %s | %s | %.0f %% | %s | %.0f %% |\n", st.Name, secs(st.Took), 100*ratio(st.Took, s.lopnr.Took), secs(d), 100*ratio(d, s.lopnrDelivered.Took))
		}
		w("\nEach stage against its raw tool (ratio: lopnr's time over the raw tools' together):\n\n")
		w("| stage | side | rows | MB | time | rows/s | MB/s | peak memory | ratio |\n|---|---|---|---|---|---|---|---|---|\n")
		for _, st := range s.stages {
			var raw time.Duration
			for _, r := range st.raw {
				raw += r.Took
			}
			what, _, _ := strings.Cut(st.stage, ":")
			w("| %s | lopnr `%s` | %s | %.1f | %s | %s | %s | %s | **%.2f** |\n", what, st.lopnr.Name, thousands(st.lopnr.Rows), mb(st.lopnr.Bytes),
				secs(st.lopnr.Took), perSec(st.lopnr.Rows, st.lopnr.Took, 1e6), mbPerSec(st.lopnr.Bytes, st.lopnr.Took), peak(st.lopnr.MaxRSS), ratio(st.lopnr.Took, raw))
			for _, r := range st.raw {
				w("| | raw `%s` | %s | %.1f | %s | %s | %s | %s | |\n", r.Name, thousands(r.Rows), mb(r.Bytes),
					secs(r.Took), perSec(r.Rows, r.Took, 1e6), mbPerSec(r.Bytes, r.Took), peak(r.MaxRSS))
			}
		}
		w("\n")
		for _, st := range s.stages {
			w("- %s\n", st.stage)
		}
		w("\n")
	}
	if len(rep.sizes) > 1 {
		first := rep.sizes[0]
		w("### Growth\n\n| scale | persons | source rows | baseline time | baseline peak | lopnr time | lopnr peak | lopnr / baseline | lopnr, delivered sources only: time | peak | / baseline |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, s := range rep.sizes {
			w("| ×%g | %s | %s | %s | %s | %s | %s | %.2f | %s | %s | %.2f |\n", s.scale, thousands(int64(s.persons)), thousands(s.rows),
				secs(s.baseline.Took), peak(s.baseline.MaxRSS), secs(s.lopnr.Took), peak(s.lopnr.MaxRSS), ratio(s.lopnr.Took, s.baseline.Took),
				secs(s.lopnrDelivered.Took), peak(s.lopnrDelivered.MaxRSS), ratio(s.lopnrDelivered.Took, s.baseline.Took))
		}
		last := rep.sizes[len(rep.sizes)-1]
		w("\nFrom ×%g to ×%g the data grows %.1f times; the time of lopnr's job on the same sources %.1f times and its peak memory %.2f times; "+
			"the whole job's %.1f and %.2f; the baseline's %.1f and %.2f.\n\n",
			first.scale, last.scale, float64(last.rows)/float64(first.rows),
			ratio(last.lopnrDelivered.Took, first.lopnrDelivered.Took), float64(last.lopnrDelivered.MaxRSS)/float64(first.lopnrDelivered.MaxRSS),
			ratio(last.lopnr.Took, first.lopnr.Took), float64(last.lopnr.MaxRSS)/float64(first.lopnr.MaxRSS),
			ratio(last.baseline.Took, first.baseline.Took), float64(last.baseline.MaxRSS)/float64(first.baseline.MaxRSS))
	}
	// The goal is judged on the job that reads what the baseline reads; the
	// whole job also reads, normalises and reports on sources the
	// delivery does not use.
	largest := func(r stepResult) stageTime {
		var top stageTime
		for _, st := range r.Stages {
			if st.Took > top.Took {
				top = st
			}
		}
		return top
	}
	for _, s := range rep.sizes {
		if s.scale != 1 {
			continue
		}
		rd, rt := ratio(s.lopnrDelivered.Took, s.baseline.Took), ratio(s.lopnr.Took, s.baseline.Took)
		verdict := "met"
		if rd > goal {
			verdict = "not met"
		}
		td, tw := largest(s.lopnrDelivered), largest(s.lopnr)
		w("Goal: end to end within %.1f times the baseline, on the same sources: %s (%.2f; its largest stage: %s, %s of %s). "+
			"The whole job, which also reads and reports on the sources the delivery does not use: %.2f (its largest stage: %s, %s of %s).\n\n",
			goal, verdict, rd, td.Name, secs(td.Took), secs(s.lopnrDelivered.Took), rt, tw.Name, secs(tw.Took), secs(s.lopnr.Took))
	}
	return b.String()
}
