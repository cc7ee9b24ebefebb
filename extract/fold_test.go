package extract

import (
	"testing"
	"unicode"
	"unicode/utf8"
)

// TestFoldDigits: every decimal digit of Unicode is in a run of ten, 0 to
// 9, as digitValue takes them, and fold reads it as its ASCII digit.
func TestFoldDigits(t *testing.T) {
	check := func(lo, hi, stride uint32) {
		if stride != 1 || (hi-lo+1)%10 != 0 {
			t.Errorf("decimal digits %U-%U (stride %d) are not whole runs of ten", lo, hi, stride)
		}
	}
	for _, g := range unicode.Nd.R16 {
		check(uint32(g.Lo), uint32(g.Hi), uint32(g.Stride))
	}
	for _, g := range unicode.Nd.R32 {
		check(g.Lo, g.Hi, g.Stride)
	}
	for r, want := range map[rune]rune{'7': '7', '０': '0', '９': '9', '٣': '3', '۵': '5', '५': '5', 0x1d7ce: '0', 0x1d7ff: '9'} {
		if got := fold(r); got != want {
			t.Errorf("fold(%U) = %q, want %q", r, got, want)
		}
	}
	for r, want := range map[rune]rune{'‐': '-', '–': '-', '—': '-', '―': '-', '−': '-', '－': '-', '＋': '+', '\u00ad': -1, '\u200b': -1, '\ufeff': -1, '\u0301': -1, 'ö': 'ö', ' ': ' ', '\u00a0': '\u00a0', '\u202f': '\u202f'} {
		if got := fold(r); got != want {
			t.Errorf("fold(%U) = %q, want %q", r, got, want)
		}
	}
}

// TestCSVGuardSeesEveryFirstByteFoldChanges: the CSV guard's class table
// sends to the slow path the first byte of every character that fold
// changes (the others it takes as the common byte, unread).
func TestCSVGuardSeesEveryFirstByteFoldChanges(t *testing.T) {
	for r := rune(0x80); r <= unicode.MaxRune; r++ {
		if !utf8.ValidRune(r) || fold(r) == r {
			continue
		}
		var b [utf8.UTFMax]byte
		utf8.EncodeRune(b[:], r)
		if numberClass[b[0]]&wide == 0 {
			t.Fatalf("fold changes %U, but its first byte %#x is not marked", r, b[0])
		}
	}
}
