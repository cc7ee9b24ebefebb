package linkage

import (
	"bytes"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"

	"golang.org/x/text/encoding/charmap"
)

// TestSingleByteReader checks the fast decoder against golang.org/x/text's
// on random text, mostly ASCII as exports are, read in small pieces.
func TestSingleByteReader(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		name  string
		table *[256]rune
		ref   *charmap.Charmap
	}{{EncodingLatin, &latin1Table, charmap.ISO8859_1}, {EncodingCP, &cp1252Table, charmap.Windows1252}} {
		for round := range 50 {
			in := make([]byte, rng.IntN(200_000))
			for i := range in {
				if rng.IntN(20) == 0 {
					in[i] = byte(0x80 + rng.IntN(0x80))
				} else {
					in[i] = byte(rng.IntN(0x80))
				}
				if tc.table[in[i]] < 0 {
					in[i] = 'x'
				}
			}
			want, err := io.ReadAll(tc.ref.NewDecoder().Reader(bytes.NewReader(in)))
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(iotest.OneByteReader(&singleByteReader{r: iotest.HalfReader(bytes.NewReader(in)), table: tc.table, name: tc.name, line: 1}))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s, round %d: %d bytes decoded differ from x/text's %d", tc.name, round, len(got), len(want))
			}
		}
	}
	// An undefined windows-1252 byte is named with its line.
	in := strings.Repeat("a;b;c\n", 1000) + "x;\x81;y\n"
	_, err := io.ReadAll(&singleByteReader{r: strings.NewReader(in), table: &cp1252Table, name: EncodingCP, line: 1})
	if err == nil || !strings.Contains(err.Error(), "byte 0x81 is not a windows-1252 character") {
		t.Fatalf("err = %v", err)
	}
	if fe, ok := err.(*FileError); !ok || fe.Line != 1001 {
		t.Fatalf("err = %#v, want a FileError on line 1001", err)
	}
}

func BenchmarkSingleByteReader(b *testing.B) {
	line := []byte("199001011234;2020-01-01;Kärlkramp, ospecifik;I209;ICD-10-SE;Läkare på akutmottagningen\n")
	data := bytes.Repeat(line, 100_000)
	for i := range data {
		if data[i] >= 0x80 { // make it latin-1: ä and å as single bytes
			data[i] = 0xE4
		}
	}
	b.SetBytes(int64(len(data)))
	for _, tc := range []struct {
		name string
		r    func() io.Reader
	}{
		{"lopnr", func() io.Reader {
			return &singleByteReader{r: bytes.NewReader(data), table: &latin1Table, name: EncodingLatin, line: 1}
		}},
		{"x-text", func() io.Reader { return charmap.ISO8859_1.NewDecoder().Reader(bytes.NewReader(data)) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				io.Copy(io.Discard, tc.r())
			}
		})
	}
}
