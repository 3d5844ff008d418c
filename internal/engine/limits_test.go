package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/api"
	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/engine"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

// applyProblems applies documents that must be refused and returns the
// problems; nothing may be stored.
func (e *env) applyProblems(t *testing.T, docs ...string) []string {
	t.Helper()
	before, err := e.eng.ListFlows(context.Background())
	require.NoError(t, err)
	var srcs []engine.Source
	for i, d := range docs {
		srcs = append(srcs, engine.Source{Filename: fmt.Sprintf("flow-%d.yaml", i), Source: d})
	}
	_, err = e.eng.Apply(context.Background(), admin, srcs)
	var ae *errs.Error
	require.ErrorAs(t, err, &ae)
	var out []string
	for _, p := range ae.Problems {
		require.NotEmpty(t, p.Hint, "%s", p)
		out = append(out, p.String())
	}
	after, err := e.eng.ListFlows(context.Background())
	require.NoError(t, err)
	require.Equal(t, len(before), len(after), "a refused apply stores nothing")
	for i := range before {
		require.Equal(t, before[i].Version, after[i].Version, "a refused apply stores nothing")
	}
	return out
}

// failedStep returns a run's failed step at path.
func failedStep(t *testing.T, run engine.RunView, path string) engine.StepView {
	t.Helper()
	s, ok := steps(run)[path]
	require.True(t, ok, "run %s has no step %s", run.ID, path)
	require.Equal(t, engine.StepFailed, s.Status, "%+v", s)
	return s
}

// ---- foreach results (issue 12, item 6) ----

const eachCall = `apiVersion: trustflow/v1
kind: Flow
name: each-call
trigger: {manual: {}}
input:
  items: {type: array, required: true}
steps:
  - id: each
    foreach: ${input.items}
    concurrency: 64
    steps:
      - id: c
        call: {connector: hr, method: GET, path: "/ok/item/${item}"}
  - id: nap
    sleep: 10ms
  - id: count
    set:
      n: ${size(steps.each.results)}
      last: ${steps.each.results[size(steps.each.results) - 1].c.status}
      keys: ${size(steps.each.results.map(r, r.c.body.key))}
      verified: ${steps.each.results.all(r, r.c.tls.server_requested_client_cert)}
output: ${steps.count}
`

// Reading a foreach's results whose items hold call results used to fail
// ("ran over its memory limit") with one item. It works up to the item
// limit, before and after the run resumes (the sleep ends an advance: the
// results are read back from the checkpoints).
func TestForeachResultsOfCallsAreReadable(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		e.apply(t, eachCall)
		for _, n := range []int{1, 100, 10_000} {
			items := make([]any, n)
			for i := range items {
				items[i] = i
			}
			run := e.waitLong(t, e.start(t, "each-call", map[string]any{"items": items}).ID, 5*time.Minute)
			require.Equal(t, engine.StatusSucceeded, run.Status, "%d items: %+v", n, run.Error)
			require.Equal(t, map[string]any{"n": float64(n), "last": float64(200), "keys": float64(n), "verified": true}, run.Output, "%d items", n)
			require.Equal(t, 1, e.dir.count(fmt.Sprintf("%s/each[%d].c", run.ID, n-1)), "the last item made its call")
		}
	})
}

// waitLong is wait with a longer bound, for runs of many steps.
func (e *env) waitLong(t testing.TB, id string, limit time.Duration) engine.RunView {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	run, err := e.eng.Wait(ctx, id)
	require.NoError(t, err)
	require.Contains(t, []string{engine.StatusSucceeded, engine.StatusFailed, engine.StatusCancelled}, run.Status, "run %s did not end in %s", id, limit)
	return run
}

// ---- sub-flow depth and cycles ----

func chainFlow(i, last int) string {
	next := fmt.Sprintf("  - id: next\n    flow: {name: chain-%d}\n", i+1)
	if i == last {
		next = "  - id: bottom\n    set: {depth: 0}\n"
	}
	return fmt.Sprintf("apiVersion: trustflow/v1\nkind: Flow\nname: chain-%d\ntrigger: {manual: {}}\nsteps:\n%s", i, next)
}

// The sub-flow depth counts across flows; the server's limit and a flow's
// own stop a chain, and the failure climbs back to the run that started it.
func TestSubflowDepthLimit(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnvWith(t, st, func(c *engine.Config) { c.Limits.SubflowDepth = 3 })
		var docs []string
		for i := 5; i >= 0; i-- {
			docs = append(docs, chainFlow(i, 5))
		}
		e.apply(t, docs...)

		// chain-2 → 3 → 4 → 5: three levels below chain-2, within the limit.
		ok := e.run(t, "chain-2", nil)
		require.Equal(t, engine.StatusSucceeded, ok.Status, "%+v", ok.Error)

		// chain-0 → 1 → 2 → 3 → (4 refused): a fourth level is one too many.
		run := e.run(t, "chain-0", nil)
		require.Equal(t, engine.StatusFailed, run.Status)
		require.Equal(t, "subflow_failed", run.Error.Code)
		deepest := e.deepest(t, run.ID)
		require.Equal(t, "chain-3", deepest.Flow)
		s := failedStep(t, deepest, "next")
		require.Equal(t, "limit_subflow_depth", s.Error.Code)
		require.Contains(t, s.Error.Message, "flow chain-4 would run 4 levels of sub-flows below run "+run.ID+" of chain-0: chain-0 → chain-1 → chain-2 → chain-3 → chain-4 (limit subflow_depth: 3)")
		require.Contains(t, s.Error.Hint, "--max-subflow-depth")

		// A flow's own limit is lower still: chain-1 allows one level.
		e.apply(t, strings.Replace(chainFlow(1, 5), "trigger: {manual: {}}\n", "trigger: {manual: {}}\nlimits: {subflow_depth: 1}\n", 1))
		run = e.run(t, "chain-0", nil)
		require.Equal(t, engine.StatusFailed, run.Status)
		deepest = e.deepest(t, run.ID)
		require.Equal(t, "chain-2", deepest.Flow)
		s = failedStep(t, deepest, "next")
		require.Equal(t, "limit_subflow_depth", s.Error.Code)
		require.Contains(t, s.Error.Message, "would run 2 levels of sub-flows below run ")
		require.Contains(t, s.Error.Message, "of chain-1: chain-1 → chain-2 → chain-3 (limit subflow_depth: 1)")
	})
}

// deepest follows a run's sub-runs down to the last.
func (e *env) deepest(t *testing.T, id string) engine.RunView {
	t.Helper()
	for {
		kids, err := e.eng.ListRuns(context.Background(), engine.RunFilter{Parent: id})
		require.NoError(t, err)
		if len(kids) == 0 {
			run, err := e.eng.GetRun(context.Background(), id)
			require.NoError(t, err)
			return run
		}
		require.Len(t, kids, 1)
		id = kids[0].ID
	}
}

const loopA = `apiVersion: trustflow/v1
kind: Flow
name: loop-a
trigger: {manual: {}}
steps:
  - id: call_b
    flow: {name: loop-b}
`

const loopB = `apiVersion: trustflow/v1
kind: Flow
name: loop-b
trigger: {manual: {}}
steps:
  - id: call_a
    flow: {name: loop-a}
`

// Flows that run each other are refused at apply, in one apply or across
// stored flows.
func TestApplyRefusesSubflowCycles(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		got := e.applyProblems(t, loopA, loopB)
		require.Equal(t, []string{
			"flow-0.yaml:6:5: call_b.flow: loop-a → loop-b → loop-a: sub-flows that run each other would recurse without end (remove the call that closes the cycle; repeat work with foreach instead)",
			"flow-1.yaml:6:5: call_a.flow: loop-b → loop-a → loop-b: sub-flows that run each other would recurse without end (remove the call that closes the cycle; repeat work with foreach instead)",
		}, got)

		// a → b is stored; c → a is stored; b → c closes a → b → c → a.
		e.apply(t, strings.Replace(loopB, "  - id: call_a\n    flow: {name: loop-a}\n", "  - id: end\n    set: {}\n", 1))
		e.apply(t, loopA)
		e.apply(t, strings.NewReplacer("loop-a", "loop-c", "call_b", "call_a", "name: loop-b", "name: loop-a").Replace(loopA))
		got = e.applyProblems(t, strings.NewReplacer("call_a", "call_c", "{name: loop-a}", "{name: loop-c}").Replace(loopB))
		require.Equal(t, []string{"flow-0.yaml:6:5: call_c.flow: loop-b → loop-c → loop-a → loop-b: sub-flows that run each other would recurse without end (remove the call that closes the cycle; repeat work with foreach instead)"}, got)
	})
}

// A cycle that got past apply (two applies at once, each adding one call)
// stops at the depth limit: the runaway of issue 12 made 379 runs in 8 s
// and went on; now it makes the limit's worth and fails.
func TestMutualRecursionStopsAtTheDepthLimit(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newEnv(t, st)
		e.apply(t, strings.Replace(loopB, "  - id: call_a\n    flow: {name: loop-a}\n", "  - id: end\n    set: {}\n", 1))
		e.apply(t, loopA)
		raceCycle(t, st)

		run := e.waitLong(t, e.start(t, "loop-a", nil).ID, time.Minute)
		require.Equal(t, engine.StatusFailed, run.Status)
		all, err := e.eng.ListRuns(ctx, engine.RunFilter{Limit: 1000})
		require.NoError(t, err)
		require.Len(t, all, engine.DefaultSubflowDepth+1, "the root and %d levels below it", engine.DefaultSubflowDepth)
		for _, r := range all {
			require.Equal(t, engine.StatusFailed, r.Status, "run %s of %s", r.ID, r.Flow)
		}
		deepest := e.deepest(t, run.ID)
		require.Equal(t, "limit_subflow_depth", failedStep(t, deepest, map[string]string{"loop-a": "call_b", "loop-b": "call_a"}[deepest.Flow]).Error.Code)
	})
}

// ---- limits at apply ----

// A flow asking for more than the server allows is refused at apply, each
// problem naming the field and the server's limit.
func TestApplyRefusesWhatIsOverTheServersLimits(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnvWith(t, st, func(c *engine.Config) { c.Limits.ForeachItems = 3 })
		got := e.applyProblems(t, `apiVersion: trustflow/v1
kind: Flow
name: greedy
trigger: {manual: {}}
settings: {timeout: 400d}
limits:
  subflow_depth: 9
  foreach_items: 4
  step_output_bytes: 2097152
  run_state_bytes: 1073741824
  runs_in_flight: 101
steps:
  - id: each
    foreach: [1, 2, 3, 4]
    steps:
      - id: nap
        sleep: 106751d
`)
		require.Equal(t, []string{
			"flow-0.yaml:7:18: limits.subflow_depth: 9 is over this server's limit of 8 (limit subflow_depth: 8) (a flow may only lower the server's limits: write at most 8, or start the servers with a larger --max-subflow-depth)",
			"flow-0.yaml:8:18: limits.foreach_items: 4 is over this server's limit of 3 (limit foreach_items: 3) (a flow may only lower the server's limits: write at most 3, or start the servers with a larger --max-foreach-items)",
			"flow-0.yaml:9:22: limits.step_output_bytes: 2097152 is over this server's limit of 1048576 (limit step_output_bytes: 1048576) (a flow may only lower the server's limits: write at most 1048576, or start the servers with a larger --max-step-output)",
			"flow-0.yaml:10:20: limits.run_state_bytes: 1073741824 is over this server's limit of 16777216 (limit run_state_bytes: 16777216) (a flow may only lower the server's limits: write at most 16777216, or start the servers with a larger --max-run-state)",
			"flow-0.yaml:11:19: limits.runs_in_flight: 101 is over this server's limit of 100 (limit runs_in_flight: 100) (a flow may only lower the server's limits: write at most 100, or start the servers with a larger --max-runs-in-flight)",
			"flow-0.yaml: settings.timeout: a timeout of 400d is longer than a run may last on this server (limit run_duration: 30d) (write at most 30d, or start the servers with a larger --max-run-duration)",
			"flow-0.yaml:13:5: each.foreach: 4 items are more than one foreach may take (limit foreach_items: 3) (split the list over several steps or runs)",
			"flow-0.yaml:16:9: each.nap.sleep: a sleep of 106751d is longer than a run may last on this server (limit run_duration: 30d) (sleep for less; a longer wait is better started again by a schedule)",
		}, got)

		// A sleep longer than the flow's own timeout can never end either.
		got = e.applyProblems(t, "apiVersion: trustflow/v1\nkind: Flow\nname: naps\ntrigger: {manual: {}}\nsettings: {timeout: 1h}\nsteps:\n  - id: nap\n    sleep: 2h\n")
		require.Equal(t, []string{"flow-0.yaml:7:5: nap.sleep: a sleep of 2h0m0s is longer than the flow's settings.timeout (1h0m0s) (sleep for less; a longer wait is better started again by a schedule)"}, got)

		// A schedule firing more than once a second is refused by the
		// language itself.
		got = e.applyProblems(t, "apiVersion: trustflow/v1\nkind: Flow\nname: busy\ntrigger: {schedule: {cron: '@every 1ns'}}\nsteps: [{id: a, set: {}}]\n")
		require.Len(t, got, 1)
		require.Contains(t, got[0], "trigger.schedule.cron: a schedule fires at most once a second, in whole seconds; @every 1ns is not")
	})
}

// ---- limits at run time ----

const bounded = `apiVersion: trustflow/v1
kind: Flow
name: bounded
trigger: {manual: {}}
input:
  n: {type: integer, default: 3}
  text: {type: string, default: "x"}
  until: {type: string, default: ""}
limits: {foreach_items: 5, step_output_bytes: 4096, run_state_bytes: 65536}
steps:
  - id: each
    foreach: ${input.text.split('').map(c, c)}
    steps:
      - id: echo
        set: {c: "${item}"}
  - id: big
    if: ${size(input.text) > 5}
    set: {text: "${input.text}"}
  - id: echo_call
    if: ${size(input.text) > 5}
    call: {connector: hr, method: POST, path: /ok/echo, body: {text: "${input.text}"}}
    continue_on_error: true
  - id: nap
    if: ${input.until != ''}
    sleep: {until: "${input.until}"}
output: {items: "${size(steps.each.results)}"}
`

func TestRunTimeLimits(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		e.apply(t, bounded)

		ok := e.run(t, "bounded", map[string]any{"text": "abcde"})
		require.Equal(t, engine.StatusSucceeded, ok.Status, "%+v", ok.Error)
		require.Equal(t, map[string]any{"items": float64(5)}, ok.Output)

		// foreach: six items are one over the flow's limit.
		run := e.run(t, "bounded", map[string]any{"text": "abcdef"})
		require.Equal(t, engine.StatusFailed, run.Status)
		s := failedStep(t, run, "each")
		require.Equal(t, "limit_foreach_items", s.Error.Code)
		require.Equal(t, "the list has 6 items (limit foreach_items: 5)", s.Error.Message)
		require.Equal(t, "limit_foreach_items", run.Error.Code)

		// A step output over the flow's 4 KiB fails the step; its stored
		// result is kept truncated, with a flag saying so.
		text := strings.Repeat("y", 5000)
		run = e.run(t, "bounded", map[string]any{"text": text, "n": 1})
		require.Equal(t, engine.StatusFailed, run.Status)
		require.Equal(t, "limit_foreach_items", run.Error.Code, "5000 characters are 5000 items")
		e.apply(t, strings.Replace(bounded, "foreach: ${input.text.split('').map(c, c)}", "foreach: ${input.text.split('').map(c, c).filter(c, false)}", 1))
		run = e.run(t, "bounded", map[string]any{"text": text})
		require.Equal(t, engine.StatusFailed, run.Status)
		s = failedStep(t, run, "big")
		require.Equal(t, "limit_step_output", s.Error.Code)
		require.Equal(t, "the step's result is 5011 bytes (limit step_output: 4096)", s.Error.Message)
		out := s.Output.(map[string]any)
		require.Equal(t, true, out["truncated"])
		require.Equal(t, float64(5011), out["size"])
		require.Equal(t, `{"text":"yyy`, out["preview"].(string)[:12])
		require.LessOrEqual(t, len(out["preview"].(string)), 2048)

		// A call whose answer is over the limit fails the same way; with
		// continue_on_error the run goes on and sees why.
		e.apply(t, strings.NewReplacer("foreach: ${input.text.split('').map(c, c)}", "foreach: ${[]}",
			"    if: ${size(input.text) > 5}\n    set:", "    if: ${false}\n    set:").Replace(bounded))
		run = e.run(t, "bounded", map[string]any{"text": text})
		require.Equal(t, engine.StatusSucceeded, run.Status, "%+v", run.Error)
		s = failedStep(t, run, "echo_call")
		require.Equal(t, "limit_step_output", s.Error.Code)
		require.Equal(t, 1, e.dir.count(run.ID+"/echo_call"))

		// A computed sleep past the run's limit (30 days from its start).
		far := time.Now().Add(292 * 365 * 24 * time.Hour).UTC().Format(time.RFC3339)
		run = e.run(t, "bounded", map[string]any{"until": far})
		require.Equal(t, engine.StatusFailed, run.Status)
		s = failedStep(t, run, "nap")
		require.Equal(t, "limit_run_duration", s.Error.Code)
		require.Contains(t, s.Error.Message, "a sleep until "+far+" would end after the run may last (30d from its start: ")
		require.True(t, strings.HasSuffix(s.Error.Message, "(limit run_duration: 30d)"), s.Error.Message)
	})
}

const stateHungry = `apiVersion: trustflow/v1
kind: Flow
name: hungry
trigger: {manual: {}}
input:
  n: {type: integer, required: true}
  pad: {type: string, required: true}
limits: {run_state_bytes: 20000}
steps:
  - id: each
    foreach: ${[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20].filter(i, i <= input.n)}
    steps:
      - id: pad
        set: {text: "${input.pad}"}
`

// A run's checkpoints together are bounded: the step that would take them
// over the limit fails, naming it.
func TestRunStateLimit(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		e.apply(t, stateHungry)
		pad := strings.Repeat("p", 1000)
		ok := e.run(t, "hungry", map[string]any{"n": 5, "pad": pad})
		require.Equal(t, engine.StatusSucceeded, ok.Status, "%+v", ok.Error)

		run := e.run(t, "hungry", map[string]any{"n": 20, "pad": pad})
		require.Equal(t, engine.StatusFailed, run.Status)
		require.Equal(t, "limit_run_state", run.Error.Code)
		require.Regexp(t, `^the run's checkpoints would hold \d+ bytes \(limit run_state: 20000\)$`, run.Error.Message)
		var stored int
		for _, s := range run.Steps {
			if s.Status == engine.StepSucceeded {
				stored++
			}
		}
		require.Less(t, stored, 20, "the run stopped storing before its 20 items")
	})
}

// A run that outlives the server's run duration fails, when it next
// wakes (here: from a retry's backoff), with limit_run_duration.
func TestRunDurationLimit(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnvWith(t, st, func(c *engine.Config) { c.Limits.RunDuration = time.Second })
		e.apply(t, `apiVersion: trustflow/v1
kind: Flow
name: patient
trigger: {manual: {}}
steps:
  - id: flaky
    call: {connector: hr, method: GET, path: /status/503}
    retry: {max_attempts: 3, initial_backoff: 1500ms}
`)
		run := e.run(t, "patient", nil)
		require.Equal(t, engine.StatusFailed, run.Status)
		require.Equal(t, "limit_run_duration", run.Error.Code)
		require.Equal(t, "the run has lasted longer than 1s (limit run_duration: 1s)", run.Error.Message)
		require.Equal(t, 1, e.dir.count(run.ID+"/flaky"), "the retry due after the limit was not made")
	})
}

const sleeper = `apiVersion: trustflow/v1
kind: Flow
name: sleeper
trigger: {manual: {}}
limits: {runs_in_flight: 2}
steps:
  - id: nap
    sleep: 1h
`

// A start over a flow's runs in flight is refused with errs.Limit, code
// runs_in_flight (the API answers 429); a sub-flow start over it fails
// its step; an event flow at its limit does not stop the change that
// emitted the event.
func TestRunsInFlightLimit(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newEnv(t, st)
		e.apply(t, sleeper, `apiVersion: trustflow/v1
kind: Flow
name: caller
trigger: {manual: {}}
steps:
  - id: sub
    flow: {name: sleeper}
`)
		first := e.start(t, "sleeper", nil)
		e.start(t, "sleeper", nil)
		_, err := e.eng.StartRun(ctx, engine.StartRequest{Flow: "sleeper", Actor: admin})
		require.ErrorIs(t, err, &errs.Error{Kind: errs.Limit, Code: "runs_in_flight"})
		le, _ := errs.As(err)
		require.Equal(t, "flow sleeper already has 2 runs queued, running or sleeping (limit runs_in_flight: 2)", le.Message)
		require.Contains(t, le.Hint, "--max-runs-in-flight")

		run := e.run(t, "caller", nil)
		require.Equal(t, engine.StatusFailed, run.Status)
		require.Equal(t, "limit_runs_in_flight", failedStep(t, run, "sub").Error.Code)

		// Over HTTP: 429 with the code.
		authn := auth.NewService(st, e.audit, nil)
		secret, _, err := authn.Bootstrap(ctx)
		require.NoError(t, err)
		srv := httptest.NewServer(api.New(api.Config{Store: st, Auth: authn, Audit: e.audit, Trust: e.trust, Connectors: e.conns, Engine: e.eng,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}).Handler())
		t.Cleanup(srv.Close)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/api/v1/flows/sleeper/runs", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
		var body struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
		require.Equal(t, "runs_in_flight", body.Error.Code)

		// Once one ends, a start is accepted again.
		_, err = e.eng.Cancel(ctx, admin, first.ID)
		require.NoError(t, err)
		e.wait(t, first.ID)
		e.start(t, "sleeper", nil)

		// An event's listener at its limit: the failing runs still end.
		e.apply(t, `apiVersion: trustflow/v1
kind: Flow
name: on-failure
trigger: {event: {type: run.failed}}
limits: {runs_in_flight: 1}
steps:
  - id: nap
    sleep: 1h
`, "apiVersion: trustflow/v1\nkind: Flow\nname: fails\ntrigger: {manual: {}}\nsteps: [{id: boom, fail: no}]\n")
		for range 2 {
			require.Equal(t, engine.StatusFailed, e.run(t, "fails", nil).Status)
		}
		listeners, err := e.eng.ListRuns(ctx, engine.RunFilter{Flow: "on-failure"})
		require.NoError(t, err)
		require.Len(t, listeners, 1, "the second event found its listener at its limit")
		require.Contains(t, e.log.String(), "event flow is at a limit")
	})
}

// ---- cancellation ----

const cancelTop = `apiVersion: trustflow/v1
kind: Flow
name: top
trigger: {manual: {}}
steps:
  - id: mid
    flow: {name: middle}
`

const cancelMiddle = `apiVersion: trustflow/v1
kind: Flow
name: middle
trigger: {manual: {}}
steps:
  - id: each
    foreach: ${[1, 2]}
    concurrency: 2
    steps:
      - id: low
        flow: {name: bottom}
`

const cancelBottom = `apiVersion: trustflow/v1
kind: Flow
name: bottom
trigger: {manual: {}}
steps:
  - id: nap
    sleep: 1h
`

// Cancelling a run cancels its sub-runs, theirs, and every sleeping or
// waiting step, which ends cancelled rather than running; each cancel is
// audited.
func TestCancelReachesSubRunsAndSleepingSteps(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newEnv(t, st)
		e.apply(t, cancelBottom, cancelMiddle, cancelTop)
		top := e.start(t, "top", nil)
		var bottoms []engine.RunView
		deadline := time.Now().Add(20 * time.Second)
		for len(bottoms) < 2 {
			require.True(t, time.Now().Before(deadline), "the bottom runs never slept")
			bottoms = bottoms[:0]
			rs, err := e.eng.ListRuns(ctx, engine.RunFilter{Flow: "bottom", Status: engine.StatusSleeping})
			require.NoError(t, err)
			bottoms = append(bottoms, rs...)
			time.Sleep(10 * time.Millisecond)
		}

		asked := time.Now()
		_, err := e.eng.Cancel(ctx, admin, top.ID)
		require.NoError(t, err)
		all, err := e.eng.ListRuns(ctx, engine.RunFilter{Limit: 100})
		require.NoError(t, err)
		require.Len(t, all, 4, "top, middle and two bottoms")
		for _, r := range all {
			done := e.wait(t, r.ID)
			require.Equal(t, engine.StatusCancelled, done.Status, "%s run %s", done.Flow, done.ID)
			for _, s := range done.Steps {
				require.NotEqual(t, engine.StepRunning, s.Status, "%s step %s of a cancelled run", done.Flow, s.Path)
			}
		}
		require.Less(t, time.Since(asked), 10*time.Second, "nobody waited for the hour-long sleeps")
		for _, b := range bottoms {
			done := e.wait(t, b.ID)
			require.Equal(t, engine.StepCancelled, steps(done)["nap"].Status)
		}
		topRun := e.wait(t, top.ID)
		require.Equal(t, engine.StepCancelled, steps(topRun)["mid"].Status, "the step waiting for its sub-run")

		// One run.cancel record per run, by the one who asked.
		recs, err := e.audit.List(ctx, audit.Filter{Action: "run.cancel", Limit: 100})
		require.NoError(t, err)
		require.Len(t, recs, 4)
		for _, r := range recs {
			require.Equal(t, admin.ID, r.Actor.ID)
			var details map[string]any
			require.NoError(t, json.Unmarshal(r.Details, &details))
			if r.Target != "run/"+top.ID {
				require.Equal(t, top.ID, details["cancelled_with"])
			}
		}

		// A cancelled run can be retried; its sub-runs start afresh.
		_, err = e.eng.Retry(ctx, admin, top.ID)
		require.NoError(t, err)
		e.until(t, top.ID, "a new sub-run", func(r engine.RunView) bool {
			kids, err := e.eng.ListRuns(ctx, engine.RunFilter{Parent: top.ID})
			require.NoError(t, err)
			return len(kids) == 2
		})
		_, err = e.eng.Cancel(ctx, admin, top.ID)
		require.NoError(t, err)
	})
}
