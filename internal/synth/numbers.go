package synth

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/lopnr/lopnr/linkage/personnummer"
)

// A number is a canonical identity number, 12 ASCII characters
// YYYYMMDDNNNC (the day plus 60 for a samordningsnummer).
type number = [12]byte

// luhnDouble[d] is the digit sum of 2*d.
var luhnDouble = [10]int{0, 2, 4, 6, 8, 1, 3, 5, 7, 9}

// checkDigit returns the Luhn check digit over the nine values
// YYMMDDNNN (an interim letter counts as 1).
func checkDigit(v *[9]int) int {
	sum := luhnDouble[v[0]] + v[1] + luhnDouble[v[2]] + v[3] + luhnDouble[v[4]] + v[5] +
		luhnDouble[v[6]] + v[7] + luhnDouble[v[8]]
	return (10 - sum%10) % 10
}

// setCheck sets c[11] to the check digit of c[2:11].
func setCheck(c *number) {
	var v [9]int
	for i := range v {
		v[i] = int(c[2+i] - '0')
	}
	c[11] = byte('0' + checkDigit(&v))
}

// luhnOver is the reserve-number check digit over vals (see
// personnummer.ReserveFormat): the rightmost value and every second one
// leftwards are doubled.
func luhnOver(vals []int) int {
	sum := 0
	for i := len(vals) - 1; i >= 0; i -= 2 {
		d := 2 * vals[i]
		sum += d/10 + d%10
		if i > 0 {
			sum += vals[i-1]
		}
	}
	return (10 - sum%10) % 10
}

// makeNumber builds a canonical number from a birth date, a serial
// (1..999) and whether it is a samordningsnummer (day plus 60).
func makeNumber(y, m, d, serial int, sn bool) number {
	if sn {
		d += 60
	}
	var c number
	put2 := func(i, v int) { c[i], c[i+1] = byte('0'+v/10), byte('0'+v%10) }
	put2(0, y/100)
	put2(2, y%100)
	put2(4, m)
	put2(6, d)
	c[8], c[9], c[10] = byte('0'+serial/100), byte('0'+serial/10%10), byte('0'+serial%10)
	setCheck(&c)
	return c
}

// numKey is a number as an integer, for sets. Only all-digit numbers are
// keyed.
func numKey(c *number) uint64 {
	var k uint64
	for _, b := range c {
		k = k*10 + uint64(b-'0')
	}
	return k
}

// dateKey is a number's birth date YYYYMMDD (day without the 60 of a
// samordningsnummer) as an integer.
func dateKey(c *number) uint32 {
	var k uint32
	for _, b := range c[:8] {
		k = k*10 + uint32(b-'0')
	}
	if c[6] >= '6' {
		k -= 60
	}
	return k
}

func atoi2(b []byte) int { return int(b[0]-'0')*10 + int(b[1]-'0') }

// numYear returns a canonical number's year.
func numYear(c *number) int { return atoi2(c[0:2])*100 + atoi2(c[2:4]) }

// poolNumber is one of Skatteverket's test numbers, valid at the reference
// date.
type poolNumber struct {
	c    number
	kind personnummer.Kind
}

// Test-number files, in the repository's testdata/skatteverket.
const (
	testPNFile = "testpersonnummer.txt"
	testSNFile = "testsamordningsnummer.txt"
)

// findTestData walks up from the working directory to the repository's
// testdata/skatteverket.
func findTestData() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		cand := filepath.Join(dir, "testdata", "skatteverket")
		if _, err := os.Stat(filepath.Join(cand, testPNFile)); err == nil {
			return cand, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("synth: testdata/skatteverket not found above the working directory; set Options.TestData")
		}
		dir = parent
	}
}

// loadTestNumbers reads Skatteverket's test numbers from dir. Every number
// in the files goes into exclude (generated numbers must not be one of
// them); those that parse at the reference date as the file's kind go into
// the pool.
func loadTestNumbers(dir string, p *personnummer.Parser, exclude map[uint64]struct{}) ([]poolNumber, error) {
	var pool []poolNumber
	for _, f := range []struct {
		name string
		kind personnummer.Kind
	}{{testPNFile, personnummer.Personnummer}, {testSNFile, personnummer.Samordningsnummer}} {
		fh, err := os.Open(filepath.Join(dir, f.name))
		if err != nil {
			return nil, fmt.Errorf("synth: test numbers: %w", err)
		}
		sc := bufio.NewScanner(fh)
		line := 0
		for sc.Scan() {
			line++
			b := sc.Bytes()
			if len(b) == 0 {
				continue
			}
			if len(b) != 12 {
				fh.Close()
				return nil, fmt.Errorf("synth: %s:%d: want 12 digits", f.name, line)
			}
			var c number
			copy(c[:], b)
			for _, d := range c {
				if d < '0' || d > '9' {
					fh.Close()
					return nil, fmt.Errorf("synth: %s:%d: want 12 digits", f.name, line)
				}
			}
			exclude[numKey(&c)] = struct{}{}
			// A test number born after the reference date is "future"
			// then; it is simply not used.
			if n := p.ParseBytes(c[:]); n.Linkable() && n.Kind() == f.kind {
				pool = append(pool, poolNumber{c: c, kind: f.kind})
			}
		}
		err = sc.Err()
		fh.Close()
		if err != nil {
			return nil, fmt.Errorf("synth: %s: %w", f.name, err)
		}
	}
	if len(pool) == 0 {
		return nil, fmt.Errorf("synth: no usable test numbers in %s", dir)
	}
	return pool, nil
}

// Days are counted from 1970-01-01 (UTC) as int32.
func dayOf(y int, m time.Month, d int) int32 {
	return int32(time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Unix() / 86400)
}

func dayOfTime(t time.Time) int32 { return dayOf(t.Date()) }

func civil(day int32) (int, time.Month, int) {
	return time.Unix(int64(day)*86400, 0).UTC().Date()
}

// dayTable holds every day from 2010-01-01 to the reference date formatted
// as YYYYMMDD and YYYY-MM-DD, so that the hot loop formats dates by copying.
type dayTable struct {
	first, last int32
	ymd, iso    []byte
}

func newDayTable(first, last int32) *dayTable {
	n := int(last-first) + 1
	t := &dayTable{first: first, last: last, ymd: make([]byte, 0, 8*n), iso: make([]byte, 0, 10*n)}
	for d := first; d <= last; d++ {
		y, m, dd := civil(d)
		t.ymd = append(t.ymd, byte('0'+y/1000), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10),
			byte('0'+int(m)/10), byte('0'+int(m)%10), byte('0'+dd/10), byte('0'+dd%10))
		t.iso = append(t.iso, byte('0'+y/1000), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10), '-',
			byte('0'+int(m)/10), byte('0'+int(m)%10), '-', byte('0'+dd/10), byte('0'+dd%10))
	}
	return t
}

func (t *dayTable) clamp(d int32) int {
	if d < t.first {
		d = t.first
	}
	if d > t.last {
		d = t.last
	}
	return int(d - t.first)
}

func (t *dayTable) appendYMD(buf []byte, d int32) []byte {
	i := t.clamp(d) * 8
	return append(buf, t.ymd[i:i+8]...)
}

func (t *dayTable) appendISO(buf []byte, d int32) []byte {
	i := t.clamp(d) * 10
	return append(buf, t.iso[i:i+10]...)
}
