package flow

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
)

// Redacted replaces secret inputs in stored and displayed run data.
const Redacted = "[redacted]"

// CheckInput validates a run's input against the document's inputs and
// returns the input to run with: defaults filled in, numbers normalized
// (integer inputs int64, number inputs float64). A null field counts as
// absent. Problems (each named input.<name>) come back as a
// *ValidationError: a required input missing, a value of the wrong type, an
// input the document does not declare, an input over 1 MiB. A document
// without an input section accepts any input.
func (d *Document) CheckInput(in map[string]any) (map[string]any, error) {
	ps := problems{}
	out := make(map[string]any, len(d.Inputs))
	if !d.InputDeclared {
		for k, v := range in {
			n, err := normalize(v)
			if err != nil {
				ps.add(0, 0, "input."+k, "give JSON data", "%v", err)
				continue
			}
			out[k] = n
		}
	} else {
		names := make([]string, len(d.Inputs))
		for i, decl := range d.Inputs {
			names[i] = decl.Name
		}
		for _, k := range slices.Sorted(maps.Keys(in)) {
			if !slices.Contains(names, k) {
				hint := suggestHint(k, names)
				if len(names) == 0 {
					hint = "this flow takes no input"
				}
				ps.add(0, 0, "input."+k, hint, "not an input of this flow")
			}
		}
		for _, decl := range d.Inputs {
			v, given := in[decl.Name]
			if !given || v == nil {
				switch {
				case decl.HasDefault:
					out[decl.Name] = copyJSON(decl.Default)
				case decl.Required:
					ps.add(0, 0, "input."+decl.Name, "give a value of type "+decl.Type, "required")
				}
				continue
			}
			n, msg := conform(decl.Type, v)
			if msg != "" && decl.Secret {
				// A secret's value is never quoted, not even in an error.
				msg = "must be " + typeArticle(decl.Type)
			}
			if msg != "" {
				ps.add(0, 0, "input."+decl.Name, "give a value of type "+decl.Type, "%s", msg)
				continue
			}
			out[decl.Name] = n
		}
	}
	if err := ps.err(); err != nil {
		return nil, err
	}
	if b, err := json.Marshal(out); err != nil {
		return nil, &ValidationError{Problems: []Problem{{Path: "input", Message: "cannot be encoded as JSON", Hint: "give JSON data"}}}
	} else if len(b) > MaxInputBytes {
		return nil, &ValidationError{Problems: []Problem{{Path: "input", Message: fmt.Sprintf("is %d bytes; the limit is 1 MiB", len(b)),
			Hint: "pass references (ids, names) rather than the data itself"}}}
	}
	return out, nil
}

// Redact returns a copy of a run's input with the values of secret inputs
// replaced by "[redacted]". Nil stays nil.
func (d *Document) Redact(in map[string]any) map[string]any {
	if in == nil {
		return nil
	}
	out := maps.Clone(in)
	for _, decl := range d.Inputs {
		if _, ok := out[decl.Name]; ok && decl.Secret {
			out[decl.Name] = Redacted
		}
	}
	return out
}

// conform checks a value against an input type and normalizes it. It
// returns a message saying what is wrong, or "".
func conform(typ string, v any) (any, string) {
	n, err := normalize(v)
	if err != nil {
		return nil, err.Error()
	}
	bad := func() (any, string) { return nil, fmt.Sprintf("must be %s, not %s", typeArticle(typ), describe(n)) }
	switch typ {
	case TypeString:
		if _, ok := n.(string); !ok {
			return bad()
		}
	case TypeBoolean:
		if _, ok := n.(bool); !ok {
			return bad()
		}
	case TypeInteger:
		switch x := n.(type) {
		case int64:
		case float64:
			if x != math.Trunc(x) || math.Abs(x) > 1<<53 {
				return nil, fmt.Sprintf("must be an integer, not %v", x)
			}
			n = int64(x)
		default:
			return bad()
		}
	case TypeNumber:
		switch x := n.(type) {
		case int64:
			n = float64(x)
		case float64:
			if math.IsInf(x, 0) || math.IsNaN(x) {
				return nil, "must be a finite number"
			}
		default:
			return bad()
		}
	case TypeObject:
		if _, ok := n.(map[string]any); !ok {
			return bad()
		}
	case TypeArray:
		if _, ok := n.([]any); !ok {
			return bad()
		}
	}
	return n, ""
}

// typeArticle names an input type with its article.
func typeArticle(typ string) string {
	switch typ {
	case TypeInteger, TypeObject, TypeArray:
		return "an " + typ
	}
	return "a " + typ
}

// copyJSON deep-copies a JSON-like value.
func copyJSON(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = copyJSON(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = copyJSON(e)
		}
		return out
	}
	return v
}
