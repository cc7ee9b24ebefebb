package yamlfield

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

type source struct {
	Name   string `yaml:"name"`
	Header *bool  `yaml:"header"`
}

type doc struct {
	Sources []source          `yaml:"sources"`
	Rename  map[string]string `yaml:"rename"`
}

func ExampleDecode() {
	var d doc
	for _, err := range Decode([]byte("sources:\n  - name: par\n  - name: lmed\n    header: maybe\n    hedaer: true\n"), &d) {
		fmt.Println(err)
	}
	// Output:
	// sources[1].header: line 4: want true or false, not text
	// sources[1].hedaer: line 5: unknown field "hedaer"
}

func TestDecodeNamesFieldOrLine(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"sources: {name: x}\n", "sources: line 1: want a list, not a mapping"},
		{"sources:\n  - [a]\n", "sources[0]: line 2: want a mapping of fields, not a list"},
		{"rename: [a]\n", "rename: line 1: want a mapping of fields, not a list"},
		{"sources: [\n", "line 1: did not find expected node content"},
		{"sources:\n  - {name: [x], header: true}\n", "sources[0].name: line 2: want string, not a list"},
		{"sources:\n  - name: x\n    header: {a: b}\n", "sources[0].header: line 3: want true or false, not a mapping"},
		{"sources: []\n\"", "line 2: found unexpected end of stream"},
		{"a: 1\n# \xc3\n", "line 2: not UTF-8 text"},
		{"a: 1\n\nb: \x01\n", "line 3: character U+0001 is not allowed in YAML"},
		{"", "line 1: empty document"},
		{"sources: []\n---\nsources: []\n", "line 2: a second document: want one"},
	} {
		var d doc
		errs := Decode([]byte(tc.yaml), &d)
		if len(errs) != 1 || errs[0].Error() != tc.want {
			t.Errorf("%q: errors %v, want %q", tc.yaml, errs, tc.want)
		}
		if err := Named(errs); err != nil {
			t.Errorf("%q: %v", tc.yaml, err)
		}
	}
	var d doc
	if errs := Decode([]byte("\ufeffsources: [{name: a, header: false}]\nrename: {}\n"), &d); errs != nil || len(d.Sources) != 1 {
		t.Fatalf("a valid document with a byte order mark: %v", errs)
	}
}

func TestNamedRefusesBareErrors(t *testing.T) {
	for _, errs := range [][]error{nil, {errors.New("x")}, {&Error{Msg: "x"}}, {&Error{Path: "a"}}} {
		if Named(errs) == nil {
			t.Errorf("Named(%v) = nil", errs)
		}
	}
}

// dropsHeader parses a doc and loses every header: RoundTrip must see it.
func dropsHeader(b []byte) (*doc, error) {
	var d doc
	if errs := Decode(b, &d); errs != nil {
		return nil, errors.Join(errs...)
	}
	for i := range d.Sources {
		d.Sources[i].Header = nil
	}
	return &d, nil
}

func TestRoundTrip(t *testing.T) {
	yes := true
	d := doc{Sources: []source{{Name: "a", Header: &yes}}, Rename: map[string]string{}}
	parse := func(b []byte) (*doc, error) {
		var d doc
		return &d, errors.Join(Decode(b, &d)...)
	}
	if err := RoundTrip(&d, parse); err != nil {
		t.Fatalf("an empty map against none: %v", err)
	}
	if err := RoundTrip(&d, dropsHeader); err == nil || !strings.Contains(err.Error(), "changed the value") {
		t.Fatalf("a parser that drops a field: %v", err)
	}
}
