package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/apiclient"
	"github.com/trustflow/trustflow/internal/cli"
	"github.com/trustflow/trustflow/internal/store"
)

const greetFlow = `apiVersion: trustflow/v1
kind: Flow
name: greet
trigger: {manual: {}}
input:
  who: {type: string, required: true}
steps:
  - id: hello
    set: {text: "hello ${input.who}"}
output: ${steps.hello.text}
`

// TestFlowApplyRunAndLoad applies a flow from a directory, runs it with
// --wait, shows the run, refuses a bad document naming its line, and
// measures the server with `trustflow load`.
func TestFlowApplyRunAndLoad(t *testing.T) {
	s := e2eStart(t, store.SQLite)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "greet.yaml"), []byte(greetFlow), 0o600))
	require.Equal(t, "flow greet: version 1 applied ("+filepath.Join(dir, "greet.yaml")+")\n", s.ok(t, "flow", "apply", "-f", dir))
	require.Equal(t, "flow greet: unchanged (version 1)\n", s.ok(t, "flow", "apply", "-f", dir))

	run := e2eStrict[apiclient.Run](t, s.ok(t, "flow", "run", "greet", "--input", `{"who":"ops"}`, "--wait", "-o", "json"))
	require.Equal(t, "succeeded", run.Status)
	require.Equal(t, "hello ops", run.Output)
	shown := e2eStrict[apiclient.Run](t, s.ok(t, "run", "show", run.ID, "-o", "json"))
	require.Len(t, shown.Steps, 1)
	require.Equal(t, "hello", shown.Steps[0].Path)
	require.Equal(t, map[string]any{"text": "hello ops"}, shown.Steps[0].Output)

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte(strings.Replace(greetFlow, "set:", "sett:", 1)), 0o600))
	r := s.cli(t, "flow", "apply", "-f", bad)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, bad+":9:5: steps[0].sett: unknown step kind")
	flows := e2eStrict[[]apiclient.Flow](t, s.ok(t, "flow", "list", "-o", "json"))
	require.Len(t, flows, 1, "a rejected document stores nothing")

	rep := e2eStrict[cli.LoadReport](t, s.ok(t, "load", "--flow", "greet", "--input", `{"who":"load"}`, "--runs", "20", "--concurrency", "4", "-o", "json"))
	require.Equal(t, 20, rep.Succeeded)
	require.Zero(t, rep.Failed+rep.Errors)
	require.Greater(t, rep.RunsPerSec, 0.0)
	require.LessOrEqual(t, rep.P50MS, rep.P99MS)
}
