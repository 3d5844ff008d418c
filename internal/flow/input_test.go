package flow

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/errs"
)

// inputFlow declares inputs of every type.
const inputFlow = `apiVersion: trustflow/v1
kind: Flow
name: inputs
trigger: {manual: {}}
input:
  user_id: {type: string, required: true}
  count: {type: integer, default: 3}
  ratio: {type: number}
  dry_run: {type: boolean, default: false}
  labels: {type: object, default: {team: iam}}
  groups: {type: array}
  token: {type: string, secret: true}
  note: {description: typed string by default}
steps: [{id: a, set: {}}]
`

// inputProblems returns the problems of a rejected input as path: message.
func inputProblems(t *testing.T, err error) []string {
	t.Helper()
	var verr *errs.Error
	require.ErrorAs(t, err, &verr)
	var out []string
	for _, p := range verr.Problems {
		require.Empty(t, p.File)
		require.Zero(t, p.Line)
		require.NotEmpty(t, p.Hint)
		out = append(out, p.Path+": "+p.Message)
	}
	return out
}

func TestCheckInput(t *testing.T) {
	t.Parallel()
	d := mustParse(t, inputFlow)
	require.Equal(t, TypeString, d.Inputs[7].Type)

	got, err := d.CheckInput(map[string]any{"user_id": "u1"})
	require.NoError(t, err)
	require.Equal(t, map[string]any{"user_id": "u1", "count": int64(3), "dry_run": false, "labels": map[string]any{"team": "iam"}}, got)

	// Defaults are copies: changing one run's input leaves the next alone.
	got["labels"].(map[string]any)["team"] = "changed"
	again, err := d.CheckInput(map[string]any{"user_id": "u1"})
	require.NoError(t, err)
	require.Equal(t, "iam", again["labels"].(map[string]any)["team"])

	// Input decoded from JSON: numbers are float64 or json.Number; they are
	// normalized to each input's type. A null counts as absent.
	var in map[string]any
	require.NoError(t, json.Unmarshal([]byte(`{"user_id": "u2", "count": 7, "ratio": 1, "groups": ["a", 2], "labels": null, "token": "s3cret"}`), &in))
	got, err = d.CheckInput(in)
	require.NoError(t, err)
	require.Equal(t, map[string]any{
		"user_id": "u2", "count": int64(7), "ratio": 1.0, "groups": []any{"a", float64(2)},
		"labels": map[string]any{"team": "iam"}, "dry_run": false, "token": "s3cret",
	}, got)
	require.Equal(t, float64(7), in["count"], "the given input is not changed")

	num, err := DecodeJSON([]byte(`{"user_id": "u3", "count": 8, "ratio": 2}`))
	require.NoError(t, err)
	got, err = d.CheckInput(num.(map[string]any))
	require.NoError(t, err)
	require.Equal(t, int64(8), got["count"])
	require.Equal(t, 2.0, got["ratio"])

	_, err = d.CheckInput(nil)
	require.Equal(t, []string{"input.user_id: required"}, inputProblems(t, err))

	_, err = d.CheckInput(map[string]any{
		"user_id": 42, "count": 1.5, "ratio": "x", "dry_run": "no", "labels": []any{}, "groups": map[string]any{},
		"userid": "x", "zzz": 1,
	})
	require.Equal(t, []string{
		"input.userid: not an input of this flow",
		"input.zzz: not an input of this flow",
		"input.user_id: must be a string, not a number",
		"input.count: must be an integer, not 1.5",
		"input.ratio: must be a number, not a string",
		"input.dry_run: must be a boolean, not a string",
		"input.labels: must be an object, not an array",
		"input.groups: must be an array, not an object",
	}, inputProblems(t, err))
	var verr *errs.Error
	require.ErrorAs(t, err, &verr)
	require.Equal(t, "did you mean `user_id`?", verr.Problems[0].Hint)
	require.EqualError(t, err, strings.Join([]string{
		"input.userid: not an input of this flow (did you mean `user_id`?)",
		"input.zzz: not an input of this flow (use one of: user_id, count, ratio, dry_run, labels, groups, token, note)",
		"input.user_id: must be a string, not a number (give a value of type string)",
		"input.count: must be an integer, not 1.5 (give a value of type integer)",
		"input.ratio: must be a number, not a string (give a value of type number)",
		"input.dry_run: must be a boolean, not a string (give a value of type boolean)",
		"input.labels: must be an object, not an array (give a value of type object)",
		"input.groups: must be an array, not an object (give a value of type array)",
	}, "\n"))

	_, err = d.CheckInput(map[string]any{"user_id": strings.Repeat("x", MaxInputBytes)})
	require.Equal(t, []string{"input: is 1048640 bytes; the limit is 1 MiB"}, inputProblems(t, err))
}

func TestCheckInputWithoutSchema(t *testing.T) {
	t.Parallel()
	// Without an input section any input is accepted (a webhook's payload).
	d := mustParse(t, "apiVersion: trustflow/v1\nkind: Flow\nname: t\ntrigger: {webhook: {}}\nsteps: [{id: a, set: {x: '${input.anything}'}}]\n")
	got, err := d.CheckInput(map[string]any{"anything": 1, "nested": map[string]any{"n": float64(2)}})
	require.NoError(t, err)
	require.Equal(t, map[string]any{"anything": int64(1), "nested": map[string]any{"n": float64(2)}}, got)

	// An empty input section means the flow takes no input.
	d = mustParse(t, "apiVersion: trustflow/v1\nkind: Flow\nname: t\ntrigger: {manual: {}}\ninput: {}\nsteps: [{id: a, set: {}}]\n")
	got, err = d.CheckInput(nil)
	require.NoError(t, err)
	require.Empty(t, got)
	_, err = d.CheckInput(map[string]any{"x": 1})
	require.Equal(t, []string{"input.x: not an input of this flow"}, inputProblems(t, err))
	var verr *errs.Error
	require.ErrorAs(t, err, &verr)
	require.Equal(t, "this flow takes no input", verr.Problems[0].Hint)
}

func TestRedact(t *testing.T) {
	t.Parallel()
	d := mustParse(t, inputFlow)
	in := map[string]any{"user_id": "u1", "token": "s3cret", "extra": "kept"}
	require.Equal(t, map[string]any{"user_id": "u1", "token": Redacted, "extra": "kept"}, d.Redact(in))
	require.Equal(t, "s3cret", in["token"], "Redact returns a copy")
	require.Equal(t, map[string]any{"user_id": "u1"}, d.Redact(map[string]any{"user_id": "u1"}))
	require.Nil(t, d.Redact(nil))
}

// TestCheckInputNeverQuotesASecret: a secret input of the wrong type is
// refused without its value in the message.
func TestCheckInputNeverQuotesASecret(t *testing.T) {
	d, err := Parse("s.yaml", []byte(`apiVersion: trustflow/v1
kind: Flow
name: secret-input
trigger: {manual: {}}
input:
  pin: {type: integer, secret: true}
steps:
  - id: a
    set: {x: 1}
`))
	require.NoError(t, err)
	_, err = d.CheckInput(map[string]any{"pin": 1234.5})
	var ve *errs.Error
	require.ErrorAs(t, err, &ve)
	require.Len(t, ve.Problems, 1)
	require.Equal(t, "input.pin", ve.Problems[0].Path)
	require.Equal(t, "must be an integer", ve.Problems[0].Message)
	require.NotContains(t, err.Error(), "1234")
}

// secretsFlow reads its secret input in every way an expression can.
const secretsFlow = `apiVersion: trustflow/v1
kind: Flow
name: secrets
trigger: {manual: {}}
input:
  user: {type: string}
  token: {type: string, secret: true}
  list: {type: array}
steps:
  - id: keep
    set: {copy: "${input.token}", plain: "${input.user}", line: "Bearer ${input.token}", size: "${input.token.size()}"}
  - id: each
    foreach: ${[input.token, "x"]}
    steps:
      - id: inner
        set: {v: "${item}"}
  - id: plain_loop
    foreach: ${input.list}
    as: entry
    steps:
      - id: other
        set: {v: "${entry}"}
  - id: use
    set:
      a: ${input.token.upperAscii()}
      b: ${input.?token.orValue("")}
      c: ${has(input.token)}
      d: ${json.encode(input)}
      e: ${steps.keep.copy}
      f: ${steps.keep.plain}
      g: ${steps.keep}
      h: ${steps.each.results}
      i: ${steps.plain_loop.results}
      j: ${input.user + "!"}
      k: ${[1, 2].map(x, x + input.token.size())}
output: ${steps.use}
`

// TestSecretsTellWhatReadsASecret checks the analysis against each kind of
// reference: fields, indexes, optional fields, the whole input, set steps'
// fields and whole results, a foreach's results, loop variables; a
// presence test reads nothing.
func TestSecretsTellWhatReadsASecret(t *testing.T) {
	t.Parallel()
	d := mustParse(t, secretsFlow)
	sec := d.Secrets(nil)
	require.False(t, sec.None())
	require.Equal(t, []string{"token"}, sec.Inputs())
	use := d.Step("use")
	want := map[string]bool{"a": true, "b": true, "c": false, "d": true, "e": true, "f": false, "g": true, "h": true, "i": false, "j": false, "k": true}
	for k, secret := range want {
		require.Equal(t, secret, sec.Reads(use.Set[k], nil), "use.%s", k)
	}
	inner, other := d.Step("inner"), d.Step("other")
	require.False(t, sec.Reads(inner.Set["v"], nil), "item is secret only in a loop over a secret list")
	require.True(t, sec.Reads(inner.Set["v"], map[string]bool{"item": true}))
	require.True(t, sec.Reads(d.Step("each").Foreach, nil))
	require.False(t, sec.Reads(d.Step("plain_loop").Foreach, nil))
	require.False(t, sec.Reads(other.Set["v"], map[string]bool{"item": true}))
	require.True(t, sec.Reads(d.Output, nil))

	// Untyped input (no input section) is read by index too; an input a
	// calling run marked secret is one.
	untyped := mustParse(t, `apiVersion: trustflow/v1
kind: Flow
name: untyped
trigger: {manual: {}}
steps:
  - id: a
    set: {i: '${input["token"]}', j: '${input["user"]}', k: '${input[input.user]}', l: '${input.token}'}
`)
	us := untyped.Secrets([]string{"token"})
	for k, secret := range map[string]bool{"i": true, "j": false, "k": true, "l": true} {
		require.Equal(t, secret, us.Reads(untyped.Step("a").Set[k], nil), "a.%s", k)
	}
	require.True(t, untyped.Secrets(nil).None())

	// A flow's own inputs a calling run marked secret are secret too.
	marked := d.Secrets([]string{"user"})
	require.Equal(t, []string{"token", "user"}, marked.Inputs())
	require.True(t, marked.Reads(use.Set["f"], nil))
	require.True(t, marked.Reads(use.Set["j"], nil))
	require.Equal(t, map[string]any{"user": Redacted, "token": Redacted, "n": 1}, marked.RedactInput(map[string]any{"user": "bob", "token": "t", "n": 1}))

	// A document without secrets reads none.
	none := mustParse(t, "apiVersion: trustflow/v1\nkind: Flow\nname: t\ntrigger: {manual: {}}\nsteps: [{id: a, set: {x: '${input}'}}]\n").Secrets(nil)
	require.True(t, none.None())
}

func TestSecretsEvalMasks(t *testing.T) {
	t.Parallel()
	d := mustParse(t, secretsFlow)
	sec := d.Secrets(nil)
	sc := Scope{Input: map[string]any{"user": "bob", "token": "ab", "list": []any{}}, Steps: map[string]any{}}
	keep := d.Step("keep")
	for k, want := range map[string]Evaluation{
		"copy":  {Value: "ab", Masked: Redacted, Secret: true, Derived: []string{"ab"}},
		"plain": {Value: "bob", Masked: "bob"},
		"line":  {Value: "Bearer ab", Masked: "Bearer [redacted]", Secret: true, Derived: []string{"ab", "Bearer ab"}},
		"size":  {Value: int64(2), Masked: Redacted, Secret: true},
	} {
		got, err := sec.Eval(context.Background(), keep.Set[k], sc, nil)
		require.NoError(t, err)
		require.Equal(t, want, got, k)
	}

	// A map's keys computed from a secret are named.
	v := mustParse(t, `apiVersion: trustflow/v1
kind: Flow
name: sub
trigger: {manual: {}}
input:
  token: {type: string, secret: true}
steps:
  - id: child
    flow: {name: other, input: {value: "${input.token}", n: 1, nested: {deep: "x${input.token}"}}}
  - id: whole
    flow: {name: other, input: "${ {'a': input.token, 'b': 'plain'} }"}
`)
	for id, keys := range map[string][]string{"child": {"nested", "value"}, "whole": {"a", "b"}} {
		got, err := v.Secrets(nil).Eval(context.Background(), v.Step(id).SubInput, sc, nil)
		require.NoError(t, err)
		require.Equal(t, keys, got.SecretKeys, id)
	}
}

// TestSecretsWithholdErrors: an expression that reads a secret and fails
// does not quote it; one that reads none keeps its message.
func TestSecretsWithholdErrors(t *testing.T) {
	t.Parallel()
	d := mustParse(t, `apiVersion: trustflow/v1
kind: Flow
name: fails
trigger: {manual: {}}
input:
  token: {type: string, secret: true}
  user: {type: string}
  list: {type: array}
steps:
  - id: a
    if: "${ {'a': 1}[input.token] > 0 }"
    set: {n: "${ {'a': 1}[input.token] }", m: "${ {'a': 1}[input.user] }", big: "${input.list.map(x, input.list.map(y, input.token + x))}"}
`)
	sec := d.Secrets(nil)
	sc := Scope{Input: map[string]any{"token": "s3cret-x", "user": "bob-x"}}
	a := d.Step("a")
	_, err := sec.Eval(context.Background(), a.Set["n"], sc, nil)
	var ee *EvalError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, withheldMessage, ee.Message)
	require.NotContains(t, err.Error(), "s3cret")
	_, err = sec.EvalBool(context.Background(), a.If, sc, nil)
	require.ErrorAs(t, err, &ee)
	require.Equal(t, withheldMessage, ee.Message)
	_, err = sec.Eval(context.Background(), a.Set["m"], sc, nil)
	require.ErrorAs(t, err, &ee)
	require.Contains(t, ee.Message, "bob-x", "an expression that reads no secret keeps CEL's message")
	list := make([]any, 2000)
	for i := range list {
		list[i] = "x"
	}
	sc.Input["list"] = list
	_, err = sec.Eval(context.Background(), a.Set["big"], sc, nil)
	require.ErrorIs(t, err, ErrCostLimit)
	require.ErrorAs(t, err, &ee)
	require.Contains(t, ee.Message, "cost limit", "a limit's message quotes nothing: it is kept, naming the limit")
}

// TestCheckInputNeverQuotesAMarkedInput: an input a calling run marked
// secret is refused without its value, like a declared one.
func TestCheckInputNeverQuotesAMarkedInput(t *testing.T) {
	t.Parallel()
	d := mustParse(t, "apiVersion: trustflow/v1\nkind: Flow\nname: t\ntrigger: {manual: {}}\ninput:\n  n: {type: integer}\nsteps: [{id: a, set: {}}]\n")
	_, err := d.Secrets([]string{"n"}).CheckInput(map[string]any{"n": 1234.5})
	require.Equal(t, []string{"input.n: must be an integer"}, inputProblems(t, err))
	_, err = d.CheckInput(map[string]any{"n": 1234.5})
	require.Equal(t, []string{"input.n: must be an integer, not 1234.5"}, inputProblems(t, err))
}
