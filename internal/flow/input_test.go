package flow

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
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
	var verr *ValidationError
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
	var verr *ValidationError
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
	var verr *ValidationError
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
	var ve *ValidationError
	require.ErrorAs(t, err, &ve)
	require.Len(t, ve.Problems, 1)
	require.Equal(t, "input.pin", ve.Problems[0].Path)
	require.Equal(t, "must be an integer", ve.Problems[0].Message)
	require.NotContains(t, err.Error(), "1234")
}
