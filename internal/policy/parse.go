package policy

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/trustflow/trustflow/internal/errs"
)

// MaxDocumentBytes bounds a policy document.
const MaxDocumentBytes = 1 << 20

// schema lists the keys each mapping of a document may hold; nil means a
// scalar or a sequence of scalars.
type schema map[string]schema

var ruleSchema = schema{"host": nil, "ports": nil}

var documentSchema = schema{
	"apiVersion": nil, "kind": nil,
	"egress": {"default": nil, "allow": {"[]": ruleSchema}},
	"tls": {"min_version": nil, "cipher_suites": nil, "curves": nil, "require_mtls": nil, "allow_system_roots": nil,
		"allow_plaintext": nil, "allow_no_client_auth_request": nil},
	"identities": {"min_rsa_bits": nil, "min_ec_bits": nil, "max_lifetime": nil, "require_client_auth_eku": nil},
}

var yamlLineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// Parse reads a policy document (YAML or JSON), refusing unknown keys at
// their line and column, and checks it. Keys left out keep their defaults.
// The error is an errs.Invalid with code invalid_policy and a problem per
// fault.
func Parse(filename string, data []byte) (*Policy, error) {
	fail := func(ps ...errs.Problem) error {
		for i := range ps {
			ps[i].File = filename
		}
		first := ps[0]
		first.Hint = ""
		msg := first.String()
		if len(ps) > 1 {
			msg += fmt.Sprintf(" (and %d more)", len(ps)-1)
		}
		return &errs.Error{Kind: errs.Invalid, Code: "invalid_policy", Message: msg, Hint: ps[0].Hint, Problems: ps, Op: "policy"}
	}
	if len(data) > MaxDocumentBytes {
		return nil, fail(errs.Problem{Message: fmt.Sprintf("the document is %d bytes; the limit max_document_bytes is %d", len(data), MaxDocumentBytes), Hint: "a policy is a few kilobytes; check the file"})
	}
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		return nil, fail(yamlProblem(err, "write a YAML or JSON mapping with apiVersion: trustflow/v1 and kind: Policy"))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, fail(errs.Problem{Line: extra.Line, Column: extra.Column, Message: "the file holds more than one document", Hint: "keep one Policy document per file"})
	}
	if len(root.Content) != 1 || root.Content[0].Kind != yaml.MappingNode {
		return nil, fail(errs.Problem{Line: root.Line, Column: root.Column, Message: "the document is not a mapping", Hint: "start with apiVersion: trustflow/v1 and kind: Policy"})
	}
	var ps []errs.Problem
	checkKeys(root.Content[0], documentSchema, "", &ps)
	if len(ps) > 0 {
		return nil, fail(ps...)
	}
	doc := Default()
	doc.APIVersion, doc.Kind = "", ""
	if err := root.Content[0].Decode(&doc); err != nil {
		return nil, fail(yamlProblem(err, "check the value's type: booleans true/false, numbers without quotes, lists in [ ]"))
	}
	if doc.APIVersion == "" || doc.Kind == "" {
		return nil, fail(errs.Problem{Line: 1, Column: 1, Message: "apiVersion and kind are required", Hint: "start with apiVersion: trustflow/v1 and kind: Policy"})
	}
	p, err := Compile(doc)
	if err != nil {
		e, _ := errs.As(err)
		line, col := locate(root.Content[0], e.Field)
		return nil, fail(errs.Problem{Line: line, Column: col, Path: e.Field, Message: e.Message, Hint: e.Hint})
	}
	return p, nil
}

// checkKeys reports every key of n that s does not list.
func checkKeys(n *yaml.Node, s schema, path string, ps *[]errs.Problem) {
	switch n.Kind {
	case yaml.MappingNode:
		if s == nil {
			*ps = append(*ps, errs.Problem{Line: n.Line, Column: n.Column, Path: path, Message: "is a mapping where a value belongs", Hint: "write a single value"})
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			sub, ok := s[k.Value]
			p := join(path, k.Value)
			if !ok {
				keys := make([]string, 0, len(s))
				for key := range s {
					keys = append(keys, key)
				}
				slices.Sort(keys)
				*ps = append(*ps, errs.Problem{Line: k.Line, Column: k.Column, Path: p, Message: fmt.Sprintf("unknown key %q", k.Value), Hint: "the keys here are " + strings.Join(keys, ", ")})
				continue
			}
			checkKeys(v, sub, p, ps)
		}
	case yaml.SequenceNode:
		item := s["[]"]
		for i, c := range n.Content {
			if item != nil {
				checkKeys(c, item, fmt.Sprintf("%s[%d]", path, i), ps)
			}
		}
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// locate finds the line and column of the value at a field path such as
// egress.allow[1].ports, or of the nearest node above it that exists.
func locate(n *yaml.Node, field string) (int, int) {
	cur := n
	for part := range strings.SplitSeq(field, ".") {
		name, idx := part, -1
		if i := strings.IndexByte(part, '['); i >= 0 {
			name = part[:i]
			idx, _ = strconv.Atoi(strings.TrimSuffix(part[i+1:], "]"))
		}
		next := mapValue(cur, name)
		if next == nil {
			break
		}
		cur = next
		if idx >= 0 {
			if cur.Kind != yaml.SequenceNode || idx >= len(cur.Content) {
				break
			}
			cur = cur.Content[idx]
		}
	}
	return cur.Line, cur.Column
}

// mapValue is the value of key in mapping n, or nil.
func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// yamlProblem turns a YAML error into a problem with its line.
func yamlProblem(err error, hint string) errs.Problem {
	var te *yaml.TypeError
	msgs := []string{err.Error()}
	if errors.As(err, &te) {
		msgs = te.Errors
	}
	m := strings.TrimPrefix(msgs[0], "yaml: ")
	p := errs.Problem{Message: m, Hint: hint}
	if sm := yamlLineRE.FindStringSubmatch(m); sm != nil {
		p.Line, _ = strconv.Atoi(sm[1])
		p.Message = sm[2]
	}
	return p
}
