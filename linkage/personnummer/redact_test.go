package personnummer

import (
	"fmt"
	"strings"
	"testing"
	"unicode"
)

func ExampleRedact() {
	fmt.Println(Redact("reason: asked by 900101-9802, and 189001019802 too; dnr 2026-01234-01"))
	fmt.Println(Redact("ref 0018900101-9802 on 2026-01-12, 18900101\u2013 9802"))
	// Output:
	// reason: asked by [redacted], and [redacted] too; dnr 2026-01234-01
	// ref [redacted] on 2026-01-12, [redacted]
}

// TestReasonKeepsNoDigitOfAnIdentityNumber replays a reason or a spec
// value that holds one of Skatteverket's test numbers, written every way a
// person or an editor writes one, and cut so that a pattern for the number
// alone matches it out of step ("0018900101-9802" kept "-9802"), or written
// with an en dash or a no-break space that it did not know: nothing of
// the number's digits is left, not even its last four.
func TestReasonKeepsNoDigitOfAnIdentityNumber(t *testing.T) {
	var numbers []string
	for _, file := range []string{"testpersonnummer.txt", "testsamordningsnummer.txt"} {
		ns := readTestNumbers(t, file)
		for i := 0; i < len(ns); i += len(ns) / 50 {
			numbers = append(numbers, ns[i])
		}
	}
	for _, n := range numbers { // YYYYMMDDNNNN
		long, short, last := n[:8], n[2:8], n[8:]
		var forms []string
		for _, sep := range []string{"", "-", "+", " ", "\u2013", "\u2212", "\u00a0", "\u2009"} {
			forms = append(forms, long+sep+last, short+sep+last)
		}
		forms = append(forms,
			"1"+n, "00"+long+"-"+last, "20"+short+"-"+last, short+last+"-"+last, // digits before
			n+"99", short+"-"+last+"-12", long+"-"+last+"+1", // digits after
			n+n, short+"-"+last+" "+short+"-"+last, // twice
			"19"+short+" - "+last, short+"-"+last+"A", "X"+n,
		)
		for _, f := range forms {
			for _, in := range []string{f, "reason: " + f + ".", "(" + f + ")", "pnr:" + f + ",", "asked by " + f + " twice"} {
				out := Redact(in)
				if strings.ContainsFunc(out, unicode.IsDigit) || strings.Contains(out, last) {
					t.Fatalf("Redact(%q) = %q: digits of the number are left", in, out)
				}
				if !strings.Contains(out, "[redacted]") {
					t.Fatalf("Redact(%q) = %q: nothing redacted", in, out)
				}
			}
		}
	}
}

// TestRedactKeepsWhatIsNotIdentityShaped: dates, diarienummer, counts and
// short codes stay as written.
func TestRedactKeepsWhatIsNotIdentityShaped(t *testing.T) {
	for _, s := range []string{
		"dnr 2026-01234-01",
		"on 2026-01-12 at 10:30, 42 rows",
		"codes I21, I22.1 and C50",
		"EPM 2026-00001-01; job 7f3a9c",
		"retain until 2027-02-23 (90 days)",
		"phone 08-123 45 67",
	} {
		if got := Redact(s); got != s {
			t.Errorf("Redact(%q) = %q", s, got)
		}
	}
}
