package synth

import (
	"fmt"
	"strings"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"

	"github.com/lopnr/lopnr/linkage"
)

// Plausible codes. ICD-10-SE codes are written without a dot mostly and
// with one (I21.9) sometimes.
var (
	icdCodes = []string{
		"I10", "I109", "E119", "E110", "E785", "E669", "J189", "J440", "J449", "J069",
		"C509", "C61", "C349", "C189", "F329", "F412", "F100", "F03", "G409", "I489",
		"I509", "I639", "I200", "I209", "I251", "I252", "I269", "I802", "K359", "K802",
		"N390", "N179", "M170", "M545", "S720", "S525", "Z511", "Z038", "R074", "R100",
		"R509", "A419", "L039", "O800",
	}
	// amiCodes are acute myocardial infarction (I21) and subsequent
	// infarction (I22): what the job's cohort criterion looks for.
	amiCodes = []string{"I210", "I211", "I212", "I213", "I214", "I219", "I220", "I221", "I228", "I229"}
	kvaCodes = []string{
		"FNG02", "FNG05", "FNA00", "DT016", "TJD20", "AF021", "AF022", "AQ014", "DG001", "XS100",
		"TNX10", "AA028", "NFB49", "JKA21", "UJD02", "DV051", "QB008", "PA001",
	}
	atcCodes = []string{
		"C07AB02", "A10BA02", "N02BE01", "C10AA01", "B01AC06", "C09AA05", "N06AB06", "R03AC02",
		"J01CE02", "H03AA01", "A02BC01", "C03CA01", "N05CF01", "M01AE01", "B01AC04", "C08CA01",
		"N02AA01", "C01DA02", "C09CA06", "A10BJ02",
	}
)

// blanked is the value of a code withheld by the register.
var blanked = []byte("BLANKED")

// codePool is a list of code values to draw from, formatting included.
type codePool struct{ vals [][]byte }

func (c *codePool) add(s string, times int) {
	for range times {
		c.vals = append(c.vals, []byte(s))
	}
}

func dotted(s string) string { return s[:3] + "." + s[3:] }

// icdPool is ICD-10-SE codes, one in ten with a dot.
func icdPool(codes []string) *codePool {
	p := &codePool{}
	for _, c := range codes {
		if len(c) > 3 {
			p.add(c, 9)
			p.add(dotted(c), 1)
		} else {
			p.add(c, 10)
		}
	}
	return p
}

func plainPool(codes ...[]string) *codePool {
	p := &codePool{}
	for _, cs := range codes {
		for _, c := range cs {
			p.add(c, 1)
		}
	}
	return p
}

var (
	// poolICD has AMI codes too; poolICDNoAMI is for the cohort source,
	// where AMI codes are only planted.
	poolICD      = icdPool(append(append([]string{}, icdCodes...), amiCodes...))
	poolICDNoAMI = icdPool(icdCodes)
	poolKVA      = plainPool(kvaCodes)
	poolATC      = plainPool(atcCodes)
	poolMixed    = func() *codePool {
		p := icdPool(append(append([]string{}, icdCodes...), amiCodes...))
		p.vals = append(p.vals, plainPool(kvaCodes, kvaCodes, atcCodes, atcCodes).vals...)
		return p
	}()
	// poolAMI is what a planted event carries: mostly plain, sometimes
	// with a dot, rarely in lower case.
	poolAMI = func() *codePool {
		p := &codePool{}
		for _, c := range amiCodes {
			p.add(c, 16)
			p.add(dotted(c), 3)
			p.add(strings.ToLower(dotted(c)), 1)
		}
		return p
	}()
)

func poolFor(system string, cohortSource bool) *codePool {
	switch system {
	case "KVÅ":
		return poolKVA
	case "ATC":
		return poolATC
	case "mixed":
		return poolMixed
	}
	if cohortSource {
		return poolICDNoAMI
	}
	return poolICD
}

// takecareTexts are TakeCare's free text: Swedish letters, and some with
// the delimiter and quotes, so that they must be quoted.
var takecareTexts = []string{
	"Inläggning för bröstsmärta; EKG utan anmärkning",
	`Pat. uppger "tryck över bröstet" sedan i morse`,
	"Ordinerat Trombyl 75 mg x 1",
	"Återbesök om 3 månader",
	`Blodtryck 145/90; kontroll på vårdcentralen "om två veckor"`,
	"Sårläkning utan komplikationer",
	"Remiss till ögonkliniken, Södersjukhuset",
	"Överförd till avd. 12 (hjärtintensiven)",
	"Diabetes typ 2, välreglerad",
	"Förnyat recept; Alvedon vid behov",
	"Hosta och feber sedan fem dagar. Lungröntgen: infiltrat höger",
	"Kontroll efter PCI, mår bra",
	`Anhörig (dotter) meddelar att pat. "inte orkar längre"`,
	"Fallolycka i hemmet; misstänkt höftfraktur",
	"Influensavaccination given",
	"Ångest och sömnsvårigheter",
	"Utskriven till särskilt boende",
	"Telefonkontakt: provsvar normala",
}

// junkIdentities are values found in identity columns that are no number
// at all ("format").
var junkIdentities = []string{
	"okänd", "saknas", "NULL", "N/A", "?", "-", "0", "uppgift saknas", "ÅÅÅÅMMDD-NNNN", "XXXXXXXX-XXXX",
	"Sekretess", "ej angivet",
}

// encodingFor returns the encoder of a profile encoding name.
func encodingFor(name string) encoding.Encoding {
	switch name {
	case linkage.EncodingLatin:
		return charmap.ISO8859_1
	case linkage.EncodingCP:
		return charmap.Windows1252
	}
	return nil
}

// encode returns s in the encoding (UTF-8 for nil), or an error when the
// encoding cannot represent it.
func encode(enc encoding.Encoding, s string) ([]byte, error) {
	if enc == nil {
		return []byte(s), nil
	}
	b, err := enc.NewEncoder().Bytes([]byte(s))
	if err != nil {
		return nil, fmt.Errorf("synth: %q: %w", s, err)
	}
	return b, nil
}

// quoteField quotes a field RFC 4180 style when it holds the delimiter, a
// quote or a line break.
func quoteField(s string, delim byte) string {
	if !strings.ContainsAny(s, string(delim)+"\"\r\n") {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}
