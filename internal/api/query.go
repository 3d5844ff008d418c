package api

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/trustflow/trustflow/internal/errs"
)

// Param is one query parameter of a route: what it means and which values it
// takes. A route's Params document it in the OpenAPI document and validate
// every request to it: wrap refuses a parameter the route does not list, a
// value of the wrong kind or out of range, an empty value and a parameter
// given twice, each with 400 naming the parameter.
type Param struct {
	Name string
	Desc string
	// Kind is what the value must be. The zero kind is any non-empty string.
	Kind ParamKind
	// Enum lists the values a ParamString may take; empty allows any.
	Enum []string
	// Min and Max bound a ParamInteger (inclusive) or a ParamDuration (as
	// a time.Duration). Max 0 means no upper bound.
	Min, Max int64
	// Message and Hint, when set, replace the default words of the error
	// for a value of the wrong kind or out of range.
	Message, Hint string
}

// ParamKind is the kind of value a query parameter takes.
type ParamKind uint8

// The kinds of query parameter values.
const (
	ParamString ParamKind = iota
	// ParamInteger is a base-10 integer within Min and Max.
	ParamInteger
	// ParamTime is an RFC 3339 time, e.g. 2026-01-31T00:00:00Z.
	ParamTime
	// ParamDuration is a Go duration within Min and Max, e.g. 30s.
	ParamDuration
	// ParamBoolean is true or false.
	ParamBoolean
)

// maxQueryValue is the longest value a query parameter may have (limit
// query_value); names and filters are far shorter.
const maxQueryValue = 1024

// Query is a request's validated query parameters.
type Query struct {
	vals map[string]any
}

// Has reports whether the parameter was given.
func (q Query) Has(name string) bool { _, ok := q.vals[name]; return ok }

// String is a ParamString's value, "" when absent.
func (q Query) String(name string) string { v, _ := q.vals[name].(string); return v }

// Int is a ParamInteger's value, 0 when absent.
func (q Query) Int(name string) int64 { v, _ := q.vals[name].(int64); return v }

// Time is a ParamTime's value, the zero time when absent.
func (q Query) Time(name string) time.Time { v, _ := q.vals[name].(time.Time); return v }

// Duration is a ParamDuration's value, 0 when absent.
func (q Query) Duration(name string) time.Duration { v, _ := q.vals[name].(time.Duration); return v }

// Bool is a ParamBoolean's value, false when absent.
func (q Query) Bool(name string) bool { v, _ := q.vals[name].(bool); return v }

// ordered refuses a range whose start (a ParamTime) is after its end.
func (q Query) ordered(from, to string) error {
	a, b := q.Time(from), q.Time(to)
	if q.Has(from) && q.Has(to) && a.After(b) {
		return errs.InvalidField(from, fmt.Sprintf("%s is after %s=%s", a.Format(time.RFC3339Nano), to, b.Format(time.RFC3339Nano)),
			fmt.Sprintf("give %s at or before %s, or leave one of them out", from, to))
	}
	return nil
}

// parseQuery validates a raw query string against params. It parses the
// string itself rather than through url.ParseQuery, which drops a pair it
// cannot decode and so would ignore ?limit=%zz.
func parseQuery(raw string, params []Param) (Query, error) {
	q := Query{vals: map[string]any{}}
	if raw == "" {
		return q, nil
	}
	for _, pair := range strings.Split(raw, "&") {
		if pair == "" {
			continue
		}
		rawName, rawValue, _ := strings.Cut(pair, "=")
		name, err := url.QueryUnescape(rawName)
		if err != nil {
			return Query{}, errs.InvalidField("query", fmt.Sprintf("parameter name %q is not valid URL encoding", clip(rawName)),
				"percent-encode reserved characters as %XX with two hex digits")
		}
		p, ok := findParam(params, name)
		if !ok {
			return Query{}, errs.InvalidField(clip(name), "unknown query parameter", takes(params))
		}
		if _, dup := q.vals[name]; dup {
			return Query{}, errs.InvalidField(name, "is given more than once", "give "+name+" once")
		}
		value, err := url.QueryUnescape(rawValue)
		if err != nil {
			return Query{}, errs.InvalidField(name, fmt.Sprintf("%q is not valid URL encoding", clip(rawValue)),
				"percent-encode reserved characters as %XX with two hex digits, e.g. %2B for +")
		}
		v, err := p.parse(value)
		if err != nil {
			return Query{}, err
		}
		q.vals[name] = v
	}
	return q, nil
}

func findParam(params []Param, name string) (Param, bool) {
	for _, p := range params {
		if p.Name == name {
			return p, true
		}
	}
	return Param{}, false
}

// takes is the hint for an unknown parameter: the ones the route takes.
func takes(params []Param) string {
	if len(params) == 0 {
		return "this endpoint takes no query parameters; remove it"
	}
	names := make([]string, len(params))
	for i, p := range params {
		names[i] = p.Name
	}
	return "this endpoint takes " + strings.Join(names, ", ") + "; see /api/v1/openapi.json"
}

// clip shortens a value quoted in an error.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// parse checks one value against p.
func (p Param) parse(v string) (any, error) {
	if v == "" {
		return nil, errs.InvalidField(p.Name, "is empty", "give a value ("+p.example()+") or leave the parameter out")
	}
	if len(v) > maxQueryValue {
		return nil, errs.InvalidField(p.Name, fmt.Sprintf("is %d bytes long (limit query_value: %d)", len(v), maxQueryValue), "give a shorter value")
	}
	switch p.Kind {
	case ParamInteger:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < p.Min || (p.Max != 0 && n > p.Max) {
			return nil, p.invalid(v)
		}
		return n, nil
	case ParamTime:
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return nil, p.invalid(v)
		}
		return t, nil
	case ParamDuration:
		d, err := time.ParseDuration(v)
		if err != nil || int64(d) < p.Min || (p.Max != 0 && int64(d) > p.Max) {
			return nil, p.invalid(v)
		}
		return d, nil
	case ParamBoolean:
		switch v {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
		return nil, p.invalid(v)
	}
	if len(p.Enum) > 0 {
		for _, e := range p.Enum {
			if v == e {
				return v, nil
			}
		}
		return nil, p.invalid(v)
	}
	return v, nil
}

// invalid is the error for a value of the wrong kind or out of range.
func (p Param) invalid(v string) *errs.Error {
	msg, hint := p.Message, p.Hint
	if msg == "" {
		switch p.Kind {
		case ParamInteger:
			msg = fmt.Sprintf("%q is not an integer of %d or more", clip(v), p.Min)
			if p.Max != 0 {
				msg = fmt.Sprintf("must be an integer from %d to %d", p.Min, p.Max)
			}
		case ParamTime:
			msg = "not an RFC 3339 time"
		case ParamDuration:
			msg = fmt.Sprintf("%q is not a duration from %s to %s", clip(v), time.Duration(p.Min), time.Duration(p.Max))
		case ParamBoolean:
			msg = fmt.Sprintf("%q is not true or false", clip(v))
		default:
			msg = fmt.Sprintf("%q is not one of %s", clip(v), strings.Join(p.Enum, ", "))
		}
	}
	if hint == "" {
		switch {
		case len(p.Enum) > 0:
			hint = "use one of " + strings.Join(p.Enum, ", ")
		case p.Kind == ParamTime:
			hint = "use e.g. " + p.example()
		default:
			hint = "use e.g. " + p.Name + "=" + p.example()
		}
	}
	return errs.InvalidField(p.Name, msg, hint)
}

// example is a valid value of p.
func (p Param) example() string {
	switch {
	case len(p.Enum) > 0:
		return p.Enum[0]
	case p.Kind == ParamInteger:
		if p.Max >= 100 && p.Min <= 100 {
			return "100"
		}
		return strconv.FormatInt(max(p.Min, 1), 10)
	case p.Kind == ParamTime:
		return "2026-01-31T00:00:00Z"
	case p.Kind == ParamDuration:
		return "30s"
	case p.Kind == ParamBoolean:
		return "true"
	}
	return "a name"
}

// schema is p's OpenAPI schema.
func (p Param) schema() map[string]any {
	switch p.Kind {
	case ParamInteger:
		s := map[string]any{"type": "integer", "minimum": p.Min}
		if p.Max != 0 {
			s["maximum"] = p.Max
		}
		return s
	case ParamTime:
		return map[string]any{"type": "string", "format": "date-time"}
	case ParamDuration:
		s := map[string]any{"type": "string", "format": "go-duration", "x-minimum": time.Duration(p.Min).String()}
		if p.Max != 0 {
			s["x-maximum"] = time.Duration(p.Max).String()
		}
		return s
	case ParamBoolean:
		return map[string]any{"type": "boolean"}
	}
	s := map[string]any{"type": "string", "minLength": 1, "maxLength": maxQueryValue}
	if len(p.Enum) > 0 {
		s["enum"] = p.Enum
	}
	return s
}

type queryKey struct{}

// queryOf is the request's validated query (set by wrap).
func queryOf(r *http.Request) Query {
	q, _ := r.Context().Value(queryKey{}).(Query)
	return q
}

func withQuery(ctx context.Context, q Query) context.Context {
	return context.WithValue(ctx, queryKey{}, q)
}
