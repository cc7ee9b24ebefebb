// Command deliverbench measures the delivery pipeline.
//
// It has two modes. `-mode pipeline` compares, on the same CSV bytes, zstd
// alone (SpeedFastest with concurrent blocks, as the pipeline uses it) with
// the whole sealing pipeline (SHA-256 of the plaintext, zstd, age
// encryption to an X25519 recipient, SHA-256 of the ciphertext):
//
//	go run ./bench/deliverbench -mode pipeline -mb 1024
//
// `-mode data` writes a job with one big source (a profile of its own with
// ten columns, about 100 bytes a row) of -rows rows over -persons persons,
// all of them in the cohort, so that a delivery of every column is about
// rows × 100 bytes of CSV; then `lopnr run` delivers it:
//
//	go run ./bench/deliverbench -mode data -rows 10000000 -persons 1000000 -out /tmp/dl1
//	go build -o /tmp/lopnr ./cmd/lopnr
//	/usr/bin/time -v /tmp/lopnr run /tmp/dl1/job.yaml --approved /tmp/dl1/approved.yaml \
//	    --recipient $(cat /tmp/dl1/recipient.txt) --keystore /tmp/dl1/ks --out /tmp/dl1/out --memory 1GB
//
// The identity numbers are made at run time and written only into -out.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"

	"github.com/lopnr/lopnr/extract"
	"github.com/lopnr/lopnr/keystore/keystoretest"
)

func main() {
	mode := flag.String("mode", "pipeline", "pipeline or data")
	mb := flag.Int("mb", 1024, "pipeline: megabytes of CSV")
	rows := flag.Int("rows", 10_000_000, "data: rows")
	persons := flag.Int("persons", 1_000_000, "data: persons")
	out := flag.String("out", "", "data: output directory")
	flag.Parse()
	var err error
	switch *mode {
	case "pipeline":
		err = pipeline(*mb << 20)
	case "data":
		err = data(*out, *rows, *persons)
	default:
		err = fmt.Errorf("unknown mode %q", *mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "deliverbench:", err)
		os.Exit(1)
	}
}

var codes = []string{"C07AB02", "A10BA02", "N02BE01", "C09AA05", "B01AC06", "H03AA01", "R03AC02", "C10AA05"}

// csvRow appends one row of the benchmark source.
func csvRow(b []byte, pnr string, rng *mrand.Rand, i int) []byte {
	b = append(b, pnr...)
	b = append(b, ';')
	d := time.Date(2015, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, rng.IntN(3600))
	b = d.AppendFormat(b, "2006-01-02")
	b = append(b, ';')
	b = append(b, codes[rng.IntN(len(codes))]...)
	b = append(b, ';')
	b = strconv.AppendInt(b, int64(rng.IntN(100000)), 10)
	b = append(b, ';')
	b = strconv.AppendFloat(b, float64(rng.IntN(10000))/100, 'f', 2, 64)
	b = append(b, ';')
	b = strconv.AppendInt(b, int64(i), 10)
	b = append(b, ";Apotek "...)
	b = strconv.AppendInt(b, int64(rng.IntN(900)), 10)
	b = append(b, ";tablett "...)
	b = strconv.AppendInt(b, int64(rng.IntN(100)*5), 10)
	b = append(b, " mg;dosering 1x"...)
	b = strconv.AppendInt(b, int64(1+rng.IntN(3)), 10)
	b = append(b, ";K\n"...)
	return b
}

const header = "PNR;EDATUM;ATC;VARUNR;ANTAL;RADNR;APOTEK;BEREDNING;DOSERING;KOD\n"

func pipeline(size int) error {
	rng := mrand.New(mrand.NewPCG(1, 2))
	f, err := os.CreateTemp("", "deliverbench-*.csv")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	w := bufio.NewWriterSize(f, 1<<20)
	w.WriteString(header)
	buf := make([]byte, 0, 256)
	for i, n := 0, len(header); n < size; i++ {
		buf = csvRow(buf[:0], "LOPNR"+strconv.Itoa(i/10), rng, i)
		w.Write(buf)
		n += len(buf)
	}
	w.Flush()
	f.Close()
	fi, _ := os.Stat(f.Name())
	mbs := float64(fi.Size()) / 1e6

	run := func(name string, mk func(io.Writer) (io.Writer, func() error)) float64 {
		best := time.Duration(0)
		for i := 0; i < 3; i++ {
			in, _ := os.Open(f.Name())
			dst, done := mk(io.Discard)
			start := time.Now()
			if _, err := io.Copy(dst, bufio.NewReaderSize(in, 1<<20)); err != nil {
				panic(err)
			}
			if err := done(); err != nil {
				panic(err)
			}
			took := time.Since(start)
			in.Close()
			if best == 0 || took < best {
				best = took
			}
		}
		rate := mbs / best.Seconds()
		fmt.Printf("| %s | %.0f MB | %.2f s | %.0f MB/s |\n", name, mbs, best.Seconds(), rate)
		return rate
	}
	fmt.Println("| stage | bytes | time (best of 3) | throughput |\n|---|---|---|---|")
	zonly := run("zstd alone (SpeedFastest, concurrent blocks)", func(w io.Writer) (io.Writer, func() error) {
		zw, _ := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithConcurrentBlocks(true))
		return zw, zw.Close
	})
	id, _ := age.GenerateX25519Identity()
	full := run("pipeline: SHA-256 + zstd + age + SHA-256", func(w io.Writer) (io.Writer, func() error) {
		s, err := extract.SealForBenchmark(w, []age.Recipient{id.Recipient()})
		if err != nil {
			panic(err)
		}
		return s, s.Close
	})
	fmt.Printf("\npipeline / zstd alone = %.0f%%\n", 100*full/zonly)
	return nil
}

func data(out string, rows, persons int) error {
	if out == "" {
		return fmt.Errorf("-out is required")
	}
	if err := os.MkdirAll(out, 0o700); err != nil {
		return err
	}
	ns := keystoretest.Generated(persons)
	cohort, err := os.OpenFile(filepath.Join(out, "cohort.csv"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	cw := bufio.NewWriterSize(cohort, 1<<20)
	cw.WriteString("PNR\n")
	for _, n := range ns {
		cw.WriteString(n.Canonical() + "\n")
	}
	cw.Flush()
	cohort.Close()
	src, err := os.OpenFile(filepath.Join(out, "big.csv"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(src, 4<<20)
	w.WriteString(header)
	rng := mrand.New(mrand.NewPCG(3, 4))
	buf := make([]byte, 0, 256)
	for i := 0; i < rows; i++ {
		buf = csvRow(buf[:0], ns[rng.IntN(len(ns))].Canonical(), rng, i)
		w.Write(buf)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	src.Close()
	const profile = `{name: bench, kind: events, identity: PNR, event_date: EDATUM, dates: {EDATUM: YYYY-MM-DD}, codes: [{group: atc, columns: [ATC]}]}`
	job := `project: deliverbench
epm_dnr: "2026-1"
reference_date: "2026-11-25"
profiles:
  - ` + profile + `
sources:
  - {name: big, profile: bench, path: big.csv}
  - {name: cohort, profile: cohort-list, path: cohort.csv}
cohort: {list: cohort}
variables:
`
	appr := "sources:\n  - {name: big, profile: bench, profile_yaml: '" + profile + "'}\n  - {name: cohort, profile: cohort-list}\nvariables:\n"
	for _, c := range []string{"EDATUM", "ATC", "VARUNR", "ANTAL", "RADNR", "APOTEK", "BEREDNING", "DOSERING", "KOD"} {
		job += "  - {source: big, column: " + c + "}\n"
		appr += "  - {source: big, column: " + c + "}\n"
	}
	job += "outputs: {format: csv}\n"
	if err := os.WriteFile(filepath.Join(out, "job.yaml"), []byte(job), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "approved.yaml"), []byte(appr), 0o600); err != nil {
		return err
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return err
	}
	os.WriteFile(filepath.Join(out, "key.txt"), []byte(id.String()+"\n"), 0o600)
	return os.WriteFile(filepath.Join(out, "recipient.txt"), []byte(id.Recipient().String()+"\n"), 0o644)
}
