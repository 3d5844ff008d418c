package flow

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// evalHead declares inputs of every type for expressions under test.
const evalHead = `apiVersion: trustflow/v1
kind: Flow
name: eval
trigger: {manual: {}}
input:
  n: {type: integer}
  ratio: {type: number}
  name: {type: string}
  flag: {type: boolean}
  obj: {type: object}
  list: {type: array}
  opt: {type: string}
steps:
  - id: lookup
    call: {connector: hr, path: /users}
  - id: skipped_one
    if: 'false'
    set: {}
  - id: a
    set:
      x: |-
        `

// evalScope is the scope expressions under test see.
func evalScope() Scope {
	return Scope{
		Input: map[string]any{
			"n": int64(41), "ratio": 0.25, "name": "alice", "flag": true,
			"obj": map[string]any{"k": "v"}, "list": []any{"x", int64(2)},
		},
		Steps: map[string]any{
			"lookup": map[string]any{"status": 200, "body": map[string]any{
				"active": true, "login": "alice", "groups": []any{"admins", "ops"},
				"user": map[string]any{"name": "Alice"},
			}},
			"skipped_one": map[string]any{"skipped": true},
		},
		Run: map[string]any{"id": "run-1", "flow": "eval", "version": int64(3), "started_at": "2025-06-01T11:00:00Z"},
		Now: func() time.Time { return time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC) },
	}
}

// evalExpr parses a flow whose step `a` sets x to src and evaluates x.
func evalExpr(t *testing.T, src string, s Scope) (any, error) {
	t.Helper()
	d := mustParse(t, evalHead+src+"\n")
	return d.Step("a").Set["x"].Eval(context.Background(), s)
}

func TestEvalTypedExpressions(t *testing.T) {
	t.Parallel()
	for src, want := range map[string]any{
		"${input.n + 1}":                              int64(42),
		"${input.ratio * 2.0}":                        0.5,
		"${input.name}":                               "alice",
		"${input.flag}":                               true,
		"${input.obj}":                                map[string]any{"k": "v"},
		"${input.list}":                               []any{"x", int64(2)},
		"${null}":                                     nil,
		"${7u}":                                       int64(7),
		"${[1, 'a', true, null, 2.5]}":                []any{int64(1), "a", true, nil, 2.5},
		"${{'b': 1, 'a': {'c': [1]}}}":                map[string]any{"b": int64(1), "a": map[string]any{"c": []any{int64(1)}}},
		"${{1: 'one', true: 'yes'}}":                  map[string]any{"1": "one", "true": "yes"},
		"${steps.lookup.status}":                      int64(200),
		"${steps.lookup.body.user.name}":              "Alice",
		"${steps.skipped_one.skipped}":                true,
		"${run.id}":                                   "run-1",
		"${run.version + 1}":                          int64(4),
		"${run.started_at}":                           "2025-06-01T11:00:00Z",
		"${timestamp('2024-01-02T03:04:05.5+02:00')}": "2024-01-02T01:04:05.5Z",
		"${duration('90m')}":                          "5400s",
		"${b'hi'}":                                    "hi",
		"${type(1)}":                                  "int",
		"${input.?opt.orValue('none')}":               "none",
		"${has(input.opt)}":                           false,
		"${has(input.name)}":                          true,
		"${steps.lookup.status > 199.5}":              true,
	} {
		got, err := evalExpr(t, src, evalScope())
		require.NoError(t, err, src)
		require.Equal(t, want, got, src)
	}
}

func TestEvalInterpolation(t *testing.T) {
	t.Parallel()
	for src, want := range map[string]string{
		"n=${input.n} r=${input.ratio} neg=${-3} f=${2.0} big=${1e21} tiny=${0.000001}": "n=41 r=0.25 neg=-3 f=2 big=1e+21 tiny=0.000001",
		"b=${false} s=${input.name} null=[${null}]":                                     "b=false s=alice null=[]",
		"l=${[1, 'a', null]} m=${{'b': 2, 'a': 'x'}}":                                   `l=[1,"a",null] m={"a":"x","b":2}`,
		"nested=${{'k': [1.5, {'z': true}]}} html=${{'a': '<b>&'}}":                     `nested={"k":[1.5,{"z":true}]} html={"a":"<b>&"}`,
		"at ${timestamp('2024-01-02T03:04:05Z')} for ${duration('1h30m')}":              "at 2024-01-02T03:04:05Z for 5400s",
		"u=${7u} bytes=${b'ok'} opt=${optional.none()} some=${optional.of(1)}":          "u=7 bytes=ok opt= some=1",
		"/users/${input.name}/groups/${steps.lookup.body.groups[1]}":                    "/users/alice/groups/ops",
		"$${literal} and ${'x'}":                                                        "${literal} and x",
		"cost $$5 and $${ ${'}'} ${ {'a': '}'}.a }":                                     "cost $$5 and ${ } }",
		"no expressions at all":                                                         "no expressions at all",
		"$${input.n}":                                                                   "${input.n}",
	} {
		got, err := evalExpr(t, src, evalScope())
		require.NoError(t, err, src)
		require.Equal(t, want, got, src)
	}
}

func TestEvalFunctions(t *testing.T) {
	t.Parallel()
	for src, want := range map[string]any{
		"${'Hello World'.lowerAscii().split(' ')}":             []any{"hello", "world"},
		"${'abc'.upperAscii()}":                                "ABC",
		"${'a-b-c'.replace('-', '+')}":                         "a+b+c",
		"${['a', 'b'].join(', ')}":                             "a, b",
		"${'%s=%d'.format(['x', 1])}":                          "x=1",
		"${'  t  '.trim()}":                                    "t",
		"${'abcdef'.substring(1, 3)}":                          "bc",
		"${'abc'.charAt(1)}":                                   "b",
		"${'abc'.indexOf('c')}":                                int64(2),
		"${'abc'.reverse()}":                                   "cba",
		"${strings.quote('a\"b')}":                             `"a\"b"`,
		"${base64.encode('hello')}":                            "aGVsbG8=",
		"${base64.encode(b'hello')}":                           "aGVsbG8=",
		"${string(base64.decode('aGVsbG8='))}":                 "hello",
		"${base64.decode('aGVsbG8=')}":                         "hello",
		"${json.encode({'b': [1, 2.5], 'a': 'x', 'n': null})}": `{"a":"x","b":[1,2.5],"n":null}`,
		"${json.encode(input.list)}":                           `["x",2]`,
		`${json.decode('{"a": [1, 2.5, "x", null, true]}')}`:   map[string]any{"a": []any{int64(1), 2.5, "x", nil, true}},
		`${json.decode('{"n": 3}').n + 1}`:                     int64(4),
		"${now()}":                                             "2025-06-01T12:00:00Z",
		"${now() == now()}":                                    true,
		"${string(now() - run.started_at)}":                    "3600s",
		"${now() - duration('1h') == run.started_at}":          true,
		"${uuid() != uuid()}":                                  true,
		"${steps.lookup.body.groups.map(g, g.upperAscii())}":   []any{"ADMINS", "OPS"},
		"${steps.lookup.body.groups.exists(g, g == 'ops')}":    true,
		"${size(steps.lookup.body.groups)}":                    int64(2),
		"${int('42') + 1}":                                     int64(43),
		"${matches('abc', '^a')}":                              true,
	} {
		got, err := evalExpr(t, src, evalScope())
		require.NoError(t, err, src)
		require.Equal(t, want, got, src)
	}

	got, err := evalExpr(t, "${uuid()}", evalScope())
	require.NoError(t, err)
	require.Regexp(t, regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`), got)

	// now() reads the clock once per evaluation, and the real clock when
	// the scope has none.
	s := evalScope()
	s.Now = nil
	before := time.Now().UTC()
	got, err = evalExpr(t, "${now()}", s)
	require.NoError(t, err)
	at, err := time.Parse(time.RFC3339Nano, got.(string))
	require.NoError(t, err)
	require.False(t, at.Before(before.Truncate(time.Second)))
}

func TestEvalValues(t *testing.T) {
	t.Parallel()
	d := mustParse(t, `apiVersion: trustflow/v1
kind: Flow
name: values
trigger: {manual: {}}
input:
  user_id: {type: string, required: true}
  n: {type: integer}
steps:
  - id: lookup
    call:
      connector: hr
      method: POST
      path: "/users/${input.user_id}"
      query: {page: "${input.n}", q: "name:${input.user_id}", tags: [a, "${input.n}"]}
      body:
        user: "${input.user_id}"
        n: ${input.n}
        list: [1, "${input.n + 1}", {deep: "id-${input.user_id}"}, null]
        static: {a: [true, 1.5]}
  - id: groups
    foreach: ${steps.lookup.body.groups}
    as: group
    steps:
      - id: remove
        set:
          path: "/groups/${group}/members/${input.user_id}"
          at: ${index}
          prev: "${steps.lookup.status}"
output: {status: "${steps.lookup.status}", static: [1, 2]}
on_error:
  - id: alert
    set:
      text: "${error.step} failed: ${error.message} (${has(error.status) ? string(error.status) : 'no status'})"
      code: ${error.code}
`)
	ctx := context.Background()
	in := Scope{Input: map[string]any{"user_id": "u1", "n": int64(2)}}

	call := d.Step("lookup").Call
	got, err := call.Path.Eval(ctx, in)
	require.NoError(t, err)
	require.Equal(t, "/users/u1", got)
	got, err = call.Query["page"].Eval(ctx, in)
	require.NoError(t, err)
	require.Equal(t, int64(2), got)
	got, err = call.Query["tags"].Eval(ctx, in)
	require.NoError(t, err)
	require.Equal(t, []any{"a", int64(2)}, got)
	body, err := call.Body.Eval(ctx, in)
	require.NoError(t, err)
	require.Equal(t, map[string]any{
		"user":   "u1",
		"n":      int64(2),
		"list":   []any{int64(1), int64(3), map[string]any{"deep": "id-u1"}, nil},
		"static": map[string]any{"a": []any{true, 1.5}},
	}, body)

	// Every evaluation returns new maps and lists.
	body.(map[string]any)["user"] = "changed"
	body.(map[string]any)["static"].(map[string]any)["a"].([]any)[0] = false
	again, err := call.Body.Eval(ctx, in)
	require.NoError(t, err)
	require.Equal(t, "u1", again.(map[string]any)["user"])
	require.Equal(t, true, again.(map[string]any)["static"].(map[string]any)["a"].([]any)[0])
	out, err := d.Output.Eval(ctx, Scope{Steps: map[string]any{"lookup": map[string]any{"status": 201}}})
	require.NoError(t, err)
	require.Equal(t, map[string]any{"status": int64(201), "static": []any{int64(1), int64(2)}}, out)
	out.(map[string]any)["static"].([]any)[0] = "x"
	out, err = d.Output.Eval(ctx, Scope{Steps: map[string]any{"lookup": map[string]any{"status": 201}}})
	require.NoError(t, err)
	require.Equal(t, []any{int64(1), int64(2)}, out.(map[string]any)["static"])
	require.Len(t, d.Output.Exprs(), 1)
	require.Equal(t, "steps.lookup.status", d.Output.Exprs()[0].Source)

	// Literal reports values without expressions.
	static, ok := call.Body.fields["static"].Literal()
	require.True(t, ok)
	require.Equal(t, map[string]any{"a": []any{true, 1.5}}, static)
	_, ok = call.Body.Literal()
	require.False(t, ok)
	require.Len(t, call.Body.Exprs(), 4)

	// foreach variables: the loop variable, index, and this iteration's steps.
	remove := d.Step("remove")
	loop := Scope{Input: in.Input, Vars: map[string]any{"group": "admins", "index": int64(3)}, Steps: map[string]any{}}
	loop.Steps["lookup"] = map[string]any{"status": 200}
	for key, want := range map[string]any{"path": "/groups/admins/members/u1", "at": int64(3), "prev": int64(200)} {
		got, err := remove.Set[key].Eval(ctx, loop)
		require.NoError(t, err, key)
		require.Equal(t, want, got, key)
	}
	require.Equal(t, []string{"path", "at", "prev"}, remove.SetKeys)

	// error variables inside on_error.
	alert := d.Step("alert")
	failure := Scope{Error: map[string]any{"step": "lookup", "code": "http_status", "message": "status 503", "status": 503}}
	got, err = alert.Set["text"].Eval(ctx, failure)
	require.NoError(t, err)
	require.Equal(t, "lookup failed: status 503 (503)", got)
	failure.Error = map[string]any{"step": "lookup", "code": "tls", "message": "unknown authority"}
	got, err = alert.Set["text"].Eval(ctx, failure)
	require.NoError(t, err)
	require.Equal(t, "lookup failed: unknown authority (no status)", got)
	got, err = alert.Set["code"].Eval(ctx, failure)
	require.NoError(t, err)
	require.Equal(t, "tls", got)

	var nilValue *Value
	got, err = nilValue.Eval(ctx, in)
	require.NoError(t, err)
	require.Nil(t, got)
}

func TestEvalBool(t *testing.T) {
	t.Parallel()
	d, err := Parse("offboard-user.yaml", readFixture(t, "valid/offboard-user.yaml"))
	require.NoError(t, err)
	guard := d.Step("decide").If
	ctx := context.Background()

	ok, err := guard.EvalBool(ctx, evalScope())
	require.NoError(t, err)
	require.True(t, ok)
	s := evalScope()
	s.Steps["lookup"].(map[string]any)["status"] = 404
	ok, err = guard.EvalBool(ctx, s)
	require.NoError(t, err)
	require.False(t, ok)

	var none *Expr
	ok, err = none.EvalBool(ctx, Scope{})
	require.NoError(t, err)
	require.True(t, ok, "no condition is true")

	// A dynamic value that is not a boolean is an error, not false.
	s.Steps["lookup"] = map[string]any{"status": 200, "body": map[string]any{"active": "yes"}}
	_, err = guard.EvalBool(ctx, s)
	var eerr *EvalError
	require.ErrorAs(t, err, &eerr)
	require.Equal(t, "no such overload", eerr.Message)
	require.Equal(t, "steps[1].if", eerr.Path)
	require.Equal(t, [2]int{14, 9}, [2]int{eerr.Line, eerr.Column})
	require.EqualError(t, err, "flow: steps[1].if (line 14, column 9): ${steps.lookup.status == 200 && steps.lookup.body.active}: no such overload")

	d = mustParse(t, evalHead+"x\n    if: ${steps.lookup.body.active}\n")
	_, err = d.Step("a").If.EvalBool(ctx, s)
	require.ErrorAs(t, err, &eerr)
	require.Equal(t, "a condition must be a boolean, this one is a string", eerr.Message)
}

func TestEvalErrors(t *testing.T) {
	t.Parallel()
	for src, message := range map[string]string{
		"${input.opt}":                     "input.opt is not set (test it with has(input.opt))",
		"${steps.lookup.body.missing}":     "no such key: missing",
		"${1 / 0}":                         "division by zero",
		"${double('nan')}":                 "the result NaN is not a finite number",
		"${b'\\xff'}":                      "bytes are not valid UTF-8 text; encode them with base64.encode()",
		"${json.decode('{nope')}":          "json.decode: invalid character 'n' looking for beginning of object key string",
		"${18446744073709551615u}":         "unsigned integer 18446744073709551615 is too large",
		"${{'1': 'a', 1: 'b'}.size() > 0}": "",
	} {
		got, err := evalExpr(t, src, evalScope())
		if message == "" {
			require.NoError(t, err, src)
			require.Equal(t, true, got)
			continue
		}
		var eerr *EvalError
		require.ErrorAs(t, err, &eerr, src)
		require.Equal(t, message, eerr.Message, src)
		require.Equal(t, "steps[2].set.x", eerr.Path)
		require.Equal(t, [2]int{22, 9}, [2]int{eerr.Line, eerr.Column})
		require.Equal(t, strings.TrimSuffix(strings.TrimPrefix(src, "${"), "}"), eerr.Expr)
	}

	// Map keys that collide as text are an error rather than a lost value.
	_, err := evalExpr(t, "${{'1': 'a', 1: 'b'}}", evalScope())
	require.ErrorContains(t, err, `map keys collide as text: "1"`)

	// A typed input given as a JSON number is read as its declared type.
	s := evalScope()
	s.Input["n"] = float64(41)
	got, err := evalExpr(t, "${input.n + 1}", s)
	require.NoError(t, err)
	require.Equal(t, int64(42), got)
	s.Input["n"] = "41"
	_, err = evalExpr(t, "${input.n + 1}", s)
	require.ErrorContains(t, err, "input.n is a string, not an integer")
}

func TestEvalCostLimit(t *testing.T) {
	t.Parallel()
	const ten = "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"
	runaway := "${" + ten + ".map(a, " + ten + ".map(b, " + ten + ".map(c, " + ten + ".map(d, " + ten +
		".map(e, " + ten + ".map(f, " + ten + ".map(g, a + b + c + d + e + f + g)))))))}"

	start := time.Now()
	_, err := evalExpr(t, runaway, evalScope())
	require.Less(t, time.Since(start), 5*time.Second)
	require.ErrorIs(t, err, ErrCostLimit)
	var eerr *EvalError
	require.ErrorAs(t, err, &eerr)
	require.Equal(t, "the expression ran over its cost limit (1000000); it works on too much data", eerr.Message)

	// Lists that share their elements grow without costing much; the
	// memory limit stops them before their conversion could.
	doubling := "${[[1]]" + strings.Repeat(".map(x, [x, x])", 40) + "}"
	start = time.Now()
	_, err = evalExpr(t, doubling, evalScope())
	require.Less(t, time.Since(start), 5*time.Second)
	require.ErrorIs(t, err, ErrCostLimit)

	// The caller's deadline interrupts a long evaluation.
	d := mustParse(t, evalHead+runaway+"\n")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	_, err = d.Step("a").Set["x"].Eval(ctx, evalScope())
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorAs(t, err, &eerr)
	require.True(t, strings.HasPrefix(eerr.Message, "evaluation interrupted: "), eerr.Message)

	// A cancelled context stops evaluation before it starts.
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	_, err = d.Step("a").Set["x"].Eval(ctx, evalScope())
	require.ErrorIs(t, err, context.Canceled)
}

func TestText(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   any
		want string
	}{
		{nil, ""},
		{"s", "s"},
		{true, "true"},
		{int64(-12), "-12"},
		{12, "12"},
		{1.0, "1"},
		{1.25, "1.25"},
		{1e21, "1e+21"},
		{[]any{int64(1), "a", nil}, `[1,"a",null]`},
		{map[string]any{"b": 1, "a": "<&>"}, `{"a":"<&>","b":1}`},
		{time.Date(2025, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600)), "2025-01-02T02:04:05Z"},
	} {
		require.Equal(t, c.want, Text(c.in), "%v", c.in)
	}
}

func TestDecodeJSON(t *testing.T) {
	t.Parallel()
	got, err := DecodeJSON([]byte(`{"i": 3, "f": 3.0, "e": 1e3, "big": 12345678901234567890, "l": [true, null, "s"]}`))
	require.NoError(t, err)
	require.Equal(t, map[string]any{"i": int64(3), "f": 3.0, "e": 1000.0, "big": 1.2345678901234567e19, "l": []any{true, nil, "s"}}, got)
	_, err = DecodeJSON([]byte(`{} {}`))
	require.EqualError(t, err, "unexpected data after the JSON value")
	_, err = DecodeJSON([]byte(`{`))
	require.Error(t, err)
}

func TestEvalConcurrent(t *testing.T) {
	t.Parallel()
	d, err := Parse("offboard-user.yaml", readFixture(t, "valid/offboard-user.yaml"))
	require.NoError(t, err)
	path := d.Step("remove").Call.Path
	guard := d.Step("decide").If
	done := make(chan error)
	for i := range 8 {
		go func() {
			s := evalScope()
			s.Vars = map[string]any{"group": "g", "index": int64(i)}
			s.Input = map[string]any{"user_id": "u"}
			for range 50 {
				v, err := path.Eval(context.Background(), s)
				if err != nil || v != "/groups/g/members/u" {
					done <- fmt.Errorf("path: %v %w", v, err)
					return
				}
				if ok, err := guard.EvalBool(context.Background(), s); err != nil || !ok {
					done <- fmt.Errorf("guard: %v %w", ok, err)
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		require.NoError(t, <-done)
	}
}
