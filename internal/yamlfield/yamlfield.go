// Package yamlfield decodes the YAML that people write for lopnr (job
// specs, profiles, approved variable lists) strictly, and turns the YAML
// library's errors into ones that name the field path and line they are
// about: "sources[2].header: line 9: want true or false, not \"maybe\"",
// not "yaml: unmarshal errors: line 9: cannot unmarshal !!str `maybe` into
// bool".
//
// A document that is not YAML at all has no fields to name; its error
// names the line.
package yamlfield

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/lopnr/lopnr/linkage/personnummer"
)

// Error is one problem in a YAML document. Path is the field path
// (sources[2].header) when the problem is in a field, "" when the document
// does not parse; Line is 1-based, 0 when unknown.
type Error struct {
	Path string
	Line int
	Msg  string
}

// Error says what is wrong where, with anything shaped like an identity
// number redacted: a value or key of the document may be one (a list
// pasted under the wrong key), and errors reach logs and status messages.
func (e *Error) Error() string {
	var b strings.Builder
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	b.WriteString(e.Msg)
	return personnummer.Redact(b.String())
}

// Decode decodes one YAML document in b into v, refusing fields v does not
// have. The errors are *Error, each naming a field path or a line.
func Decode(b []byte, v any) []error {
	if line, msg := badText(b); msg != "" {
		return []error{&Error{Line: line, Msg: msg}}
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	err := dec.Decode(v)
	if errors.Is(err, io.EOF) {
		return []error{&Error{Line: 1, Msg: "empty document"}}
	}
	if err == nil {
		var more yaml.Node
		if dec.Decode(&more) == nil {
			return []error{&Error{Line: more.Line, Msg: "a second document: want one"}}
		}
		return nil
	}
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		line, msg := splitLine(strings.TrimPrefix(err.Error(), "yaml: "))
		if line == 0 { // the library names no line where the text ends early
			line = bytes.Count(b, []byte("\n")) + 1
		}
		return []error{&Error{Line: line, Msg: msg}}
	}
	nodes := lineNodes(b, v)
	var errs []error
	for _, m := range te.Errors {
		line, msg := splitLine(m)
		ty := parseTypeError(msg)
		errs = append(errs, &Error{Path: nodes.path(line, ty), Line: line, Msg: ty.String()})
	}
	return errs
}

// badText finds what the YAML library would refuse without naming a line:
// bytes that are not UTF-8, and characters YAML does not allow in a
// document (control characters but tab and line ends, a byte order mark
// past the start).
func badText(b []byte) (line int, msg string) {
	line = 1
	for off := 0; off < len(b); {
		r, size := utf8.DecodeRune(b[off:])
		switch {
		case r == utf8.RuneError && size == 1:
			return line, "not UTF-8 text"
		case r == '\n':
			line++
		case r == '\t', r == '\r', r == 0x85, r == 0xfeff && off == 0:
		case r < 0x20, r >= 0x7f && r < 0xa0, r == 0xfeff, r == 0xfffe, r == 0xffff:
			return line, fmt.Sprintf("character %U is not allowed in YAML", r)
		}
		off += size
	}
	return 0, ""
}

var lineNo = regexp.MustCompile(`^line (\d+): `)

// splitLine takes "line N: " off the front of a message.
func splitLine(m string) (int, string) {
	loc := lineNo.FindStringSubmatchIndex(m)
	if loc == nil {
		return 0, m
	}
	n, _ := strconv.Atoi(m[loc[2]:loc[3]])
	return n, m[loc[1]:]
}

var (
	unknownField = regexp.MustCompile(`^field (\S+) not found in type \S+$`)
	cannotDecode = regexp.MustCompile("^cannot unmarshal !!(\\w+) (`.*`|) ?into (.+)$")
)

// typeError is one of the YAML library's type errors, read: a field the
// type does not have, or a value of one kind that would not decode into
// a Go type; msg as it came otherwise.
type typeError struct {
	msg     string
	unknown string // the unknown field's name
	tag     string // !!seq, !!map, !!str, …
	into    string // the Go type
}

func parseTypeError(msg string) typeError {
	if m := unknownField.FindStringSubmatch(msg); m != nil {
		return typeError{msg: msg, unknown: m[1]}
	}
	if m := cannotDecode.FindStringSubmatch(msg); m != nil {
		return typeError{msg: msg, tag: "!!" + m[1], into: m[3]}
	}
	return typeError{msg: msg}
}

// String says the error in the words of the document, not of Go.
func (te typeError) String() string {
	switch {
	case te.unknown != "":
		return "unknown field " + strconv.Quote(te.unknown)
	case te.tag == "":
		return te.msg
	}
	want := te.into
	switch {
	case strings.HasPrefix(want, "[]"):
		want = "a list"
	case strings.HasPrefix(want, "map["), strings.Contains(want, "."):
		want = "a mapping of fields"
	case want == "bool":
		want = "true or false"
	case strings.HasPrefix(want, "int"), strings.HasPrefix(want, "uint"):
		want = "a whole number"
	}
	got := map[string]string{"!!seq": "a list", "!!map": "a mapping", "!!str": "text", "!!int": "a number", "!!float": "a number", "!!bool": "true or false", "!!null": "nothing"}[te.tag]
	if got == "" {
		got = strings.TrimPrefix(te.tag, "!!")
	}
	return fmt.Sprintf("want %s, not %s", want, got)
}

// node is a field or list item of a document: its path, whether it is a
// mapping's key, its YAML tag (!!map, !!seq, !!str, …) and the Go type it
// decodes into ("" when not known).
type node struct {
	path string
	key  bool
	tag  string
	typ  string
}

// lines are a document's nodes by the line they start on, outer first.
type lines map[int][]node

// lineNodes reads a document's nodes, and the Go types they decode into
// from the type of v.
func lineNodes(b []byte, v any) lines {
	var doc yaml.Node
	if yaml.Unmarshal(b, &doc) != nil {
		return nil
	}
	ls := lines{}
	var walk func(n *yaml.Node, path string, t reflect.Type, depth int)
	walk = func(n *yaml.Node, path string, t reflect.Type, depth int) {
		if depth > 64 {
			return
		}
		for t != nil && t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if path != "" {
			nd := node{path: path, tag: n.ShortTag()}
			if t != nil {
				nd.typ = t.String()
			}
			ls[n.Line] = append(ls[n.Line], nd)
		}
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path, t, depth+1)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i]
				p := k.Value
				if path != "" {
					p = path + "." + p
				}
				ls[k.Line] = append(ls[k.Line], node{path: p, key: true})
				walk(n.Content[i+1], p, fieldType(t, k.Value), depth+1)
			}
		case yaml.SequenceNode:
			var elem reflect.Type
			if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
				elem = t.Elem()
			}
			for i, c := range n.Content {
				walk(c, fmt.Sprintf("%s[%d]", path, i), elem, depth+1)
			}
		}
	}
	walk(&doc, "", reflect.TypeOf(v), 0)
	return ls
}

// fieldType is the type of a mapping's value under key: a struct's field
// by its yaml name, or a map's value type.
func fieldType(t reflect.Type, key string) reflect.Type {
	switch {
	case t == nil:
		return nil
	case t.Kind() == reflect.Map:
		return t.Elem()
	case t.Kind() != reflect.Struct:
		return nil
	}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		if name == key && f.IsExported() {
			return f.Type
		}
	}
	return nil
}

// path finds the field a type error on line is about: the key it names
// as unknown, or the value on the line of the YAML kind and Go type it
// could not decode, or else the outermost field on the line.
func (ls lines) path(line int, te typeError) string {
	nodes := ls[line]
	if len(nodes) == 0 {
		return ""
	}
	for _, n := range nodes {
		switch {
		case te.unknown != "" && n.key && (n.path == te.unknown || strings.HasSuffix(n.path, "."+te.unknown)):
			return n.path
		case te.tag != "" && !n.key && n.tag == te.tag && n.typ == te.into:
			return n.path
		}
	}
	return nodes[0].path
}

// Named checks that each of errs is an *Error that names a field path or
// a line: the promise of every parser built on Decode, which fuzz tests
// hold it to.
func Named(errs []error) error {
	if len(errs) == 0 {
		return errors.New("no errors")
	}
	for _, e := range errs {
		var fe *Error
		switch {
		case !errors.As(e, &fe):
			return fmt.Errorf("error %q (%T) names no field", e, e)
		case fe.Path == "" && fe.Line <= 0:
			return fmt.Errorf("error %q names neither a field nor a line", e)
		case fe.Msg == "":
			return fmt.Errorf("error %q says nothing", e)
		}
	}
	return nil
}

// RoundTrip marshals *v to YAML, parses that with parse, and checks that
// it gives the same value (an empty list or mapping the same as none:
// YAML writes both as [] or {}). Fuzz tests of parsers built on Decode
// use it.
func RoundTrip[T any](v *T, parse func([]byte) (*T, error)) error {
	out, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Errorf("marshal: %w", err)
	}
	again, err := parse(out)
	if err != nil {
		return fmt.Errorf("the re-marshalled value does not parse: %w\n%s", err, out)
	}
	if !reflect.DeepEqual(emptyAsNil(v), emptyAsNil(again)) {
		return fmt.Errorf("the round trip changed the value:\n%#v\n%#v\nre-marshalled:\n%s", *v, *again, out)
	}
	return nil
}

// emptyAsNil returns a copy of *v in which empty slices and maps are nil.
func emptyAsNil[T any](v *T) T {
	c := *v
	clean(reflect.ValueOf(&c).Elem())
	return c
}

func clean(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			c := reflect.New(v.Elem().Type())
			c.Elem().Set(v.Elem())
			clean(c.Elem())
			v.Set(c)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Field(i).CanSet() {
				clean(v.Field(i))
			}
		}
	case reflect.Slice:
		if v.Len() == 0 {
			v.SetZero()
			return
		}
		c := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		reflect.Copy(c, v)
		for i := range c.Len() {
			clean(c.Index(i))
		}
		v.Set(c)
	case reflect.Map:
		if v.Len() == 0 {
			v.SetZero()
		}
	}
}
