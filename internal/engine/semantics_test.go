package engine_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/api"
	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/engine"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/flow"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

const switchFlow = `apiVersion: trustflow/v1
kind: Flow
name: classify
trigger: {manual: {}}
input:
  n: {type: integer, required: true}
steps:
  - id: size
    switch:
      - case: ${input.n > 10}
        steps:
          - id: big
            set: {label: big}
      - case: ${input.n > 5}
        steps:
          - id: medium
            set: {label: medium}
      - case: ${input.n > 0}
        steps:
          - id: small
            set: {label: small}
      - default: true
        steps:
          - id: none
            set: {label: none}
output: {case: "${steps.size.case}"}
`

func TestSwitchTakesFirstMatchingCaseElseDefault(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		e.apply(t, switchFlow)
		for _, tc := range []struct {
			n      int
			taken  any
			branch string
		}{
			{n: 20, taken: float64(0), branch: "big"}, // every case matches: the first wins
			{n: 7, taken: float64(1), branch: "medium"},
			{n: 3, taken: float64(2), branch: "small"},
			{n: -1, taken: "default", branch: "none"},
		} {
			run := e.run(t, "classify", map[string]any{"n": tc.n})
			require.Equal(t, engine.StatusSucceeded, run.Status, "%+v", run.Error)
			require.Equal(t, map[string]any{"case": tc.taken}, run.Output, "n=%d", tc.n)
			got := steps(run)
			require.Equal(t, map[string]any{"case": tc.taken}, got["size"].Output)
			require.Equal(t, map[string]any{"label": tc.branch}, got["size."+tc.branch].Output)
			var paths []string
			for _, s := range run.Steps {
				paths = append(paths, s.Path)
			}
			require.ElementsMatch(t, []string{"size", "size." + tc.branch}, paths, "only the taken branch runs")
		}
	})
}

const failFlow = `apiVersion: trustflow/v1
kind: Flow
name: fails
trigger: {manual: {}}
input:
  who: {type: string, required: true}
steps:
  - id: lookup
    call: {connector: hr, method: GET, path: /ok/lookup}
  - id: boom
    fail: {message: "no such user ${input.who}", code: user_missing}
  - id: never
    set: {reached: true}
on_error:
  - id: notify
    call:
      connector: directory
      method: POST
      path: /ok/notify
      body: {step: "${error.step}", code: "${error.code}", message: "${error.message}"}
  - id: worse
    fail: on_error failed too
`

func TestFailStepFailsTheRunAndRunsOnError(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		e.apply(t, failFlow)
		run := e.run(t, "fails", map[string]any{"who": "bob"})
		require.Equal(t, engine.StatusFailed, run.Status, "on_error does not change the outcome")
		require.Equal(t, &engine.RunError{Step: "boom", Code: "user_missing", Message: "no such user bob"}, run.Error)
		got := steps(run)
		require.Equal(t, engine.StepSucceeded, got["lookup"].Status)
		require.Equal(t, engine.StepFailed, got["boom"].Status)
		require.Equal(t, &engine.RunError{Step: "boom", Code: "user_missing", Message: "no such user bob"}, got["boom"].Error)
		require.NotContains(t, got, "never", "no step runs after the failed one")

		notify := got["on_error.notify"]
		require.Equal(t, engine.StepSucceeded, notify.Status)
		want := map[string]any{"step": "boom", "code": "user_missing", "message": "no such user bob"}
		require.Equal(t, want, notify.Output.(map[string]any)["body"].(map[string]any)["body"])
		reqs := e.dir.requests(run.ID + "/on_error.notify")
		require.Len(t, reqs, 1, "the on_error call happened once")
		var sent map[string]any
		require.NoError(t, json.Unmarshal([]byte(reqs[0].Body), &sent))
		require.Equal(t, want, sent)
		require.Equal(t, engine.StepFailed, got["on_error.worse"].Status)
		require.Equal(t, "on_error failed too", got["on_error.worse"].Error.Message)
		require.Equal(t, "fail", got["on_error.worse"].Error.Code, "a fail step without a code has code fail")
	})
}

const continueFlow = `apiVersion: trustflow/v1
kind: Flow
name: carries-on
trigger: {manual: {}}
steps:
  - id: flaky
    call: {connector: hr, method: GET, path: /status/500}
    continue_on_error: true
  - id: after
    set:
      code: ${steps.flaky.error.code}
      status: ${steps.flaky.error.status}
      step: ${steps.flaky.error.step}
output: ${steps.after}
`

func TestContinueOnErrorExposesTheError(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		e.apply(t, continueFlow)
		run := e.run(t, "carries-on", nil)
		require.Equal(t, engine.StatusSucceeded, run.Status, "%+v", run.Error)
		require.Nil(t, run.Error)
		require.Equal(t, map[string]any{"code": "http_status", "status": float64(500), "step": "flaky"}, run.Output)
		got := steps(run)
		require.Equal(t, engine.StepFailed, got["flaky"].Status)
		require.Equal(t, 500, got["flaky"].Error.Status)
		require.Equal(t, 1, got["flaky"].Attempts, "500 is not retried")
		require.Equal(t, engine.StepSucceeded, got["after"].Status)
	})
}

const guardFlow = `apiVersion: trustflow/v1
kind: Flow
name: guarded
trigger: {manual: {}}
input:
  go: {type: boolean, default: false}
steps:
  - id: maybe
    if: ${input.go}
    call: {connector: hr, method: POST, path: /ok/maybe}
  - id: check
    set: {skipped: "${has(steps.maybe.skipped) && steps.maybe.skipped}"}
output: ${steps.check}
`

func TestGuardFalseSkipsTheStep(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		e.apply(t, guardFlow)
		run := e.run(t, "guarded", nil)
		require.Equal(t, engine.StatusSucceeded, run.Status, "%+v", run.Error)
		require.Equal(t, map[string]any{"skipped": true}, run.Output)
		got := steps(run)
		require.Equal(t, engine.StepSkipped, got["maybe"].Status)
		require.Equal(t, map[string]any{"skipped": true}, got["maybe"].Output)
		require.Zero(t, e.dir.count(run.ID+"/maybe"), "a skipped call sends nothing")

		run = e.run(t, "guarded", map[string]any{"go": true})
		require.Equal(t, engine.StatusSucceeded, run.Status, "%+v", run.Error)
		require.Equal(t, map[string]any{"skipped": false}, run.Output)
		require.Equal(t, 1, e.dir.count(run.ID+"/maybe"))
	})
}

const expectFlow = `apiVersion: trustflow/v1
kind: Flow
name: expects
trigger: {manual: {}}
input:
  code: {type: integer, required: true}
steps:
  - id: probe
    call: {connector: hr, method: GET, path: "/status/${input.code}", expect: [200, 404]}
    retry: {max_attempts: 3, initial_backoff: 10ms}
output: {status: "${steps.probe.status}"}
`

func TestCallExpectListDecidesSuccess(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		e.apply(t, expectFlow)
		run := e.run(t, "expects", map[string]any{"code": 404})
		require.Equal(t, engine.StatusSucceeded, run.Status, "%+v", run.Error)
		require.Equal(t, map[string]any{"status": float64(404)}, run.Output)

		// 201 is a 2xx but not in the list: the step fails, without retry.
		run = e.run(t, "expects", map[string]any{"code": 201})
		require.Equal(t, engine.StatusFailed, run.Status)
		require.Equal(t, "http_status", run.Error.Code)
		require.Equal(t, 201, run.Error.Status)
		require.Equal(t, 1, steps(run)["probe"].Attempts)
		require.Equal(t, 1, e.dir.count(run.ID+"/probe"))
	})
}

const retryFlow = `apiVersion: trustflow/v1
kind: Flow
name: retries
trigger: {manual: {}}
input:
  path: {type: string, required: true}
steps:
  - id: call
    call: {connector: hr, method: POST, path: "${input.path}"}
    retry: {max_attempts: 3, initial_backoff: 10ms, max_backoff: 20ms}
`

func TestRetryRules(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		e.apply(t, retryFlow)

		t.Run("4xx fails at once", func(t *testing.T) {
			run := e.run(t, "retries", map[string]any{"path": "/status/400"})
			require.Equal(t, engine.StatusFailed, run.Status)
			require.Equal(t, &engine.RunError{Step: "call", Code: "http_status", Status: 400,
				Message: "POST /status/400 answered 400, which is not an expected status", Hint: "add the status to the step's expect list if it is fine"}, run.Error)
			require.Equal(t, 1, steps(run)["call"].Attempts)
			require.Equal(t, 1, e.dir.count(run.ID+"/call"))
		})

		t.Run("retries exhausted", func(t *testing.T) {
			run := e.run(t, "retries", map[string]any{"path": "/status/503"})
			require.Equal(t, engine.StatusFailed, run.Status)
			require.Equal(t, 503, run.Error.Status)
			require.Equal(t, 3, steps(run)["call"].Attempts, "attempts == max_attempts")
			require.Equal(t, 3, e.dir.count(run.ID+"/call"), "every attempt carried the same Idempotency-Key")
		})

		t.Run("429 Retry-After is honoured", func(t *testing.T) {
			e.dir.mu.Lock()
			e.dir.script["limited"] = []int{http.StatusTooManyRequests}
			e.dir.mu.Unlock()
			run := e.start(t, "retries", map[string]any{"path": "/script/limited?retry_after=1"})
			// A run in retry backoff is sleeping.
			waiting := e.until(t, run.ID, "sleeping in backoff after the 429", func(r engine.RunView) bool {
				s, ok := steps(r)["call"]
				return ok && s.NextAttempt != nil && r.Status == engine.StatusSleeping
			})
			first := e.dir.requests(run.ID + "/call")
			require.Len(t, first, 1)
			next := *steps(waiting)["call"].NextAttempt
			require.GreaterOrEqual(t, next.Sub(first[0].At), time.Second, "next_attempt_at is at least Retry-After after the attempt")

			done := e.wait(t, run.ID)
			require.Equal(t, engine.StatusSucceeded, done.Status, "%+v", done.Error)
			require.Equal(t, 2, steps(done)["call"].Attempts)
			reqs := e.dir.requests(run.ID + "/call")
			require.Len(t, reqs, 2)
			require.GreaterOrEqual(t, reqs[1].At.Sub(reqs[0].At), time.Second, "the retry waited for Retry-After, not the 10ms backoff")
		})
	})
}

const sleepFlow = `apiVersion: trustflow/v1
kind: Flow
name: naps
trigger: {manual: {}}
input:
  nap: {type: string, default: 1h}
steps:
  - id: before
    call: {connector: hr, method: POST, path: /ok/before}
  - id: nap
    sleep: {until: "${string(now() + duration(input.nap))}"}
  - id: after
    call: {connector: hr, method: POST, path: /ok/after}
`

func TestDurableSleepAndCancel(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newEnv(t, st)
		e.apply(t, sleepFlow)

		short := e.run(t, "naps", map[string]any{"nap": "300ms"})
		require.Equal(t, engine.StatusSucceeded, short.Status, "%+v", short.Error)
		before, after := e.dir.requests(short.ID+"/before"), e.dir.requests(short.ID+"/after")
		require.Len(t, before, 1)
		require.Len(t, after, 1)
		require.GreaterOrEqual(t, after[0].At.Sub(before[0].At), 300*time.Millisecond)

		run := e.start(t, "naps", nil)
		sleeping := e.until(t, run.ID, "the sleep", func(r engine.RunView) bool { return r.Status == engine.StatusSleeping })
		require.Equal(t, engine.StepRunning, steps(sleeping)["nap"].Status)
		require.Equal(t, engine.StepSucceeded, steps(sleeping)["before"].Status)

		asked := time.Now()
		_, err := e.eng.Cancel(ctx, admin, run.ID)
		require.NoError(t, err)
		done := e.wait(t, run.ID)
		require.Equal(t, engine.StatusCancelled, done.Status)
		require.Less(t, time.Since(asked), 5*time.Second, "a sleeping run is cancelled promptly, not after its sleep")
		require.Equal(t, "cancelled", done.Error.Code)
		require.Zero(t, e.dir.count(run.ID+"/after"))

		_, err = e.eng.Cancel(ctx, admin, run.ID)
		var ce *errs.Error
		require.ErrorAs(t, err, &ce)
		require.Equal(t, "run_finished", ce.Code)
	})
}

const retryRunFlow = `apiVersion: trustflow/v1
kind: Flow
name: resumable
trigger: {manual: {}}
steps:
  - id: first
    call: {connector: hr, method: POST, path: /ok/first}
  - id: each
    foreach: ${[1, 2]}
    steps:
      - id: item
        call: {connector: hr, method: POST, path: "/ok/item/${item}"}
  - id: second
    call: {connector: hr, method: POST, path: /script/second}
  - id: third
    call: {connector: hr, method: POST, path: /ok/third}
output: {first: "${steps.first.body.n}", third: "${steps.third.body.n}"}
`

func TestRetryRestartsFromTheFailedStep(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newEnv(t, st)
		e.apply(t, retryRunFlow)
		e.dir.mu.Lock()
		e.dir.script["second"] = []int{http.StatusConflict}
		e.dir.mu.Unlock()
		run := e.run(t, "resumable", nil)
		require.Equal(t, engine.StatusFailed, run.Status)
		require.Equal(t, "second", run.Error.Step)

		_, err := e.eng.Retry(ctx, admin, run.ID)
		require.NoError(t, err)
		done := e.wait(t, run.ID)
		require.Equal(t, engine.StatusSucceeded, done.Status, "%+v", done.Error)
		require.Equal(t, map[string]any{"first": float64(1), "third": float64(1)}, done.Output)
		for key, want := range map[string]int{"first": 1, "each[0].item": 1, "each[1].item": 1, "second": 2, "third": 1} {
			require.Equal(t, want, e.dir.count(run.ID+"/"+key), "requests for %s", key)
		}
		require.Equal(t, 1, steps(done)["second"].Attempts, "the retried step starts its attempts afresh")

		_, err = e.eng.Retry(ctx, admin, run.ID)
		var ce *errs.Error
		require.ErrorAs(t, err, &ce)
		require.Equal(t, "run_not_failed", ce.Code)
	})
}

const childFlow = `apiVersion: trustflow/v1
kind: Flow
name: double
trigger: {manual: {}}
input:
  x: {type: integer, required: true}
steps:
  - id: calc
    set: {doubled: "${input.x * 2}"}
output: {doubled: "${steps.calc.doubled}"}
`

const parentFlow = `apiVersion: trustflow/v1
kind: Flow
name: parent
trigger: {manual: {}}
input:
  n: {type: integer, required: true}
steps:
  - id: child
    flow: {name: double, input: {x: "${input.n}"}}
  - id: use
    set: {got: "${steps.child.doubled}"}
output: ${steps.use}
`

func TestSubFlowReturnsTheChildsOutput(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newEnv(t, st)
		e.apply(t, childFlow, parentFlow)
		started := time.Now()
		run := e.run(t, "parent", map[string]any{"n": 21})
		require.Equal(t, engine.StatusSucceeded, run.Status, "%+v", run.Error)
		require.Equal(t, map[string]any{"got": float64(42)}, run.Output)
		require.Less(t, time.Since(started), 10*time.Second, "the child wakes its parent; the parent does not wait for its backstop")
		require.Equal(t, map[string]any{"doubled": float64(42)}, steps(run)["child"].Output)

		children, err := e.eng.ListRuns(ctx, engine.RunFilter{Parent: run.ID})
		require.NoError(t, err)
		require.Len(t, children, 1)
		child := children[0]
		require.Equal(t, "double", child.Flow)
		require.Equal(t, run.ID, child.ParentRun)
		require.Equal(t, "child", child.ParentStep)
		require.Equal(t, "flow", child.Trigger)
		require.Equal(t, engine.StatusSucceeded, child.Status)
		require.Equal(t, map[string]any{"x": float64(21)}, child.Input)

		// A child that refuses its input fails the step.
		_, err = e.eng.Apply(ctx, admin, []engine.Source{{Filename: "p.yaml", Source: strings.Replace(parentFlow, `{x: "${input.n}"}`, `{y: "${input.n}"}`, 1)}})
		require.NoError(t, err)
		bad := e.run(t, "parent", map[string]any{"n": 1})
		require.Equal(t, engine.StatusFailed, bad.Status)
		require.Equal(t, "subflow_input", bad.Error.Code)
	})
}

const inputFlow = `apiVersion: trustflow/v1
kind: Flow
name: typed
trigger: {manual: {}}
input:
  x: {type: string, required: true}
  n: {type: integer, default: 3}
steps:
  - id: echo
    set: {x: "${input.x}", n: "${input.n}"}
`

func TestStartRunValidatesInput(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newEnv(t, st)
		e.apply(t, inputFlow)
		_, err := e.eng.StartRun(ctx, engine.StartRequest{Flow: "typed", Input: map[string]any{"n": 1}, Actor: admin})
		var ie *errs.Error
		require.ErrorAs(t, err, &ie)
		require.Len(t, ie.Problems, 1)
		require.Equal(t, "input.x", ie.Problems[0].Path)
		require.Contains(t, err.Error(), "input.x")

		_, err = e.eng.StartRun(ctx, engine.StartRequest{Flow: "typed", Input: map[string]any{"x": "a", "n": "three", "extra": true}, Actor: admin})
		require.ErrorAs(t, err, &ie)
		var paths []string
		for _, p := range ie.Problems {
			paths = append(paths, p.Path)
		}
		require.ElementsMatch(t, []string{"input.n", "input.extra"}, paths)

		runs, err := e.eng.ListRuns(ctx, engine.RunFilter{Flow: "typed"})
		require.NoError(t, err)
		require.Empty(t, runs, "a refused input starts no run")

		_, err = e.eng.StartRun(ctx, engine.StartRequest{Flow: "no-such-flow", Actor: admin})
		require.ErrorIs(t, err, store.ErrNotFound)

		run := e.run(t, "typed", map[string]any{"x": "a"})
		require.Equal(t, engine.StatusSucceeded, run.Status)
		require.Equal(t, map[string]any{"x": "a", "n": float64(3)}, run.Input, "defaults are filled in")
	})
}

const secretFlow = `apiVersion: trustflow/v1
kind: Flow
name: secretive
trigger: {manual: {}}
input:
  user: {type: string, required: true}
  token: {type: string, secret: true, required: true}
steps:
  - id: send
    call:
      connector: hr
      method: POST
      path: /ok/send
      headers: {X-Api-Token: "${input.token}"}
      body: {token: "${input.token}", user: "${input.user}"}
  - id: keep
    set: {copy: "${input.token}", echoed: "${steps.send.body.body.token}"}
  - id: boom
    fail: "token ${input.token} was refused"
output: ${steps.keep}
on_error:
  - id: report
    set: {message: "${error.message}"}
`

const failedEventFlow = `apiVersion: trustflow/v1
kind: Flow
name: on-failure
trigger: {event: {type: run.failed}}
steps:
  - id: alert
    call: {connector: directory, method: POST, path: /ok/alert, body: "${input}"}
output: ${steps.alert.body.body}
`

func TestSecretInputsAreRedactedEverywhere(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newEnv(t, st)
		const secret = "sk-live-7f3a9c2e"
		e.apply(t, secretFlow, failedEventFlow)
		run := e.run(t, "secretive", map[string]any{"user": "bob", "token": secret})
		require.Equal(t, engine.StatusFailed, run.Status)
		require.Equal(t, "[redacted]", run.Input["token"])
		require.Equal(t, "bob", run.Input["user"])
		require.Equal(t, "token [redacted] was refused", run.Error.Message)
		got := steps(run)
		require.Equal(t, map[string]any{"copy": "[redacted]", "echoed": "[redacted]"}, got["keep"].Output)
		require.Equal(t, map[string]any{"message": "token [redacted] was refused"}, got["on_error.report"].Output)

		// The endpoint got the real value: redaction is about what is kept.
		reqs := e.dir.requests(run.ID + "/send")
		require.Len(t, reqs, 1)
		require.Contains(t, reqs[0].Body, secret)

		// The run.failed event's run must not carry it either.
		var alert engine.RunView
		deadline := time.Now().Add(20 * time.Second)
		for {
			rs, err := e.eng.ListRuns(ctx, engine.RunFilter{Flow: "on-failure"})
			require.NoError(t, err)
			if len(rs) == 1 {
				alert = e.wait(t, rs[0].ID)
				break
			}
			require.True(t, time.Now().Before(deadline), "no on-failure run")
			time.Sleep(10 * time.Millisecond)
		}
		require.Equal(t, engine.StatusSucceeded, alert.Status, "%+v", alert.Error)

		// Everything shown...
		for _, id := range []string{run.ID, alert.ID} {
			v, err := e.eng.GetRun(ctx, id)
			require.NoError(t, err)
			raw, err := json.Marshal(v)
			require.NoError(t, err)
			require.NotContains(t, string(raw), secret)
		}
		list, err := e.eng.ListRuns(ctx, engine.RunFilter{})
		require.NoError(t, err)
		raw, err := json.Marshal(list)
		require.NoError(t, err)
		require.NotContains(t, string(raw), secret)
		// ...and everything stored, the audit chain included.
		for _, q := range []string{
			"SELECT input || output || error FROM runs",
			"SELECT state || output || evidence || error FROM run_steps",
			"SELECT action || target || details FROM audit_records",
		} {
			rows, err := st.DB().QueryContext(ctx, q)
			require.NoError(t, err)
			for rows.Next() {
				var s string
				require.NoError(t, rows.Scan(&s))
				require.NotContains(t, s, secret, q)
			}
			require.NoError(t, rows.Err())
			rows.Close()
		}
	})
}

const oneAtATime = `apiVersion: trustflow/v1
kind: Flow
name: serial
trigger: {manual: {}}
settings: {concurrency: 1}
steps:
  - id: begin
    call: {connector: hr, method: POST, path: /ok/begin}
  - id: nap
    sleep: 100ms
  - id: end
    call: {connector: hr, method: POST, path: /ok/end}
`

func TestConcurrencyOneSerialisesRuns(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		e.apply(t, oneAtATime)
		var ids []string
		for range 4 {
			ids = append(ids, e.start(t, "serial", nil).ID)
		}
		type span struct{ from, to time.Time }
		var spans []span
		for _, id := range ids {
			run := e.wait(t, id)
			require.Equal(t, engine.StatusSucceeded, run.Status, "%+v", run.Error)
			begin, end := e.dir.requests(id+"/begin"), e.dir.requests(id+"/end")
			require.Len(t, begin, 1)
			require.Len(t, end, 1)
			spans = append(spans, span{begin[0].At, end[0].At})
		}
		for i, a := range spans {
			for j, b := range spans {
				if i < j {
					overlap := a.from.Before(b.to) && b.from.Before(a.to)
					require.False(t, overlap, "runs %d and %d overlapped: %v and %v", i, j, a, b)
				}
			}
		}
	})
}

func TestApplyRefusesInvalidDocumentsAndStoresNothing(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newEnv(t, st)
		unknown := `apiVersion: trustflow/v1
kind: Flow
name: unknown-connector
trigger: {manual: {}}
steps:
  - id: lookup
    call: {connector: nowhere, method: GET, path: /x}
`
		syntax := `apiVersion: trustflow/v1
kind: Flow
name: broken
trigger: {manual: {}}
steps:
  - id: use
    set: {v: "${1 +}"}
`
		_, err := e.eng.Apply(ctx, admin, []engine.Source{
			{Filename: "good.yaml", Source: childFlow},
			{Filename: "unknown.yaml", Source: unknown},
			{Filename: "syntax.yaml", Source: syntax},
		})
		var ae *errs.Error
		require.ErrorAs(t, err, &ae)
		require.Len(t, ae.Problems, 2, "%v", ae)
		got := map[string]flow.Problem{}
		for _, p := range ae.Problems {
			got[p.File] = p
		}
		conn := got["unknown.yaml"]
		require.Equal(t, "lookup.call.connector", conn.Path)
		require.Equal(t, 6, conn.Line, "the step's position")
		require.Equal(t, 5, conn.Column, "%+v", conn)
		require.Contains(t, conn.Message, `"nowhere"`)
		syn := got["syntax.yaml"]
		require.Equal(t, "steps[0].set.v", syn.Path)
		require.Equal(t, 7, syn.Line)
		require.NotZero(t, syn.Column)
		require.Contains(t, err.Error(), "syntax.yaml:7:")

		flows, err := e.eng.ListFlows(ctx)
		require.NoError(t, err)
		require.Empty(t, flows, "a refused apply stores no document, the valid ones included")
		var n int
		require.NoError(t, st.DB().QueryRowContext(ctx, "SELECT COUNT(*) FROM flow_versions").Scan(&n))
		require.Zero(t, n)
	})
}

func TestApplyVersions(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newEnv(t, st)
		require.Equal(t, []engine.Applied{{Name: "double", Version: 1, Changed: true, Filename: "flow-0.yaml"}}, e.apply(t, childFlow))
		same := "# reformatted\n" + strings.Replace(childFlow, "trigger: {manual: {}}", "trigger:\n  manual: {}", 1)
		require.Equal(t, []engine.Applied{{Name: "double", Version: 1, Changed: false, Filename: "flow-0.yaml"}}, e.apply(t, same))
		f, err := e.eng.GetFlow(ctx, "double")
		require.NoError(t, err)
		require.Len(t, f.Versions, 1, "an unchanged document creates no version")

		changed := strings.Replace(childFlow, "input.x * 2", "input.x * 3", 1)
		require.Equal(t, []engine.Applied{{Name: "double", Version: 2, Changed: true, Filename: "flow-0.yaml"}}, e.apply(t, changed))
		f, err = e.eng.GetFlow(ctx, "double")
		require.NoError(t, err)
		require.Equal(t, 2, f.Version)
		require.Len(t, f.Versions, 2)
	})
}

const pinnedV1 = `apiVersion: trustflow/v1
kind: Flow
name: pinned
trigger: {manual: {}}
steps:
  - id: nap
    sleep: 700ms
  - id: mark
    set: {version: first}
output: ${steps.mark.version}
`

func TestRunPinsItsFlowVersion(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		e.apply(t, pinnedV1)
		old := e.start(t, "pinned", nil)
		e.until(t, old.ID, "the sleep", func(r engine.RunView) bool { return r.Status == engine.StatusSleeping })
		applied := e.apply(t, strings.Replace(pinnedV1, "version: first", "version: second", 1))
		require.Equal(t, 2, applied[0].Version)
		fresh := e.start(t, "pinned", nil)

		done := e.wait(t, old.ID)
		require.Equal(t, engine.StatusSucceeded, done.Status, "%+v", done.Error)
		require.Equal(t, 1, done.FlowVersion)
		require.Equal(t, "first", done.Output, "the run finished on the version it started with")
		now := e.wait(t, fresh.ID)
		require.Equal(t, 2, now.FlowVersion)
		require.Equal(t, "second", now.Output)
	})
}

const hookToken = `apiVersion: trustflow/v1
kind: Flow
name: hook-token
trigger: {webhook: {auth: token}}
input:
  user: {type: string, required: true}
steps:
  - id: greet
    set: {hello: "${input.user}"}
output: ${steps.greet}
`

const hookHMAC = `apiVersion: trustflow/v1
kind: Flow
name: hook-hmac
trigger: {webhook: {auth: hmac}}
steps:
  - id: greet
    set: {hello: "${input.user}"}
output: ${steps.greet}
`

func TestWebhookStartsRuns(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newEnv(t, st)
		e.apply(t, hookToken, hookHMAC)
		authn := auth.NewService(st, e.audit, nil)
		adminSecret, _, err := authn.Bootstrap(ctx)
		require.NoError(t, err)
		adminP, err := authn.Authenticate(ctx, adminSecret)
		require.NoError(t, err)
		_, operator, err := authn.Create(ctx, adminP, auth.CreateRequest{Name: "ops", Role: string(auth.RoleOperator)})
		require.NoError(t, err)
		_, auditor, err := authn.Create(ctx, adminP, auth.CreateRequest{Name: "audit", Role: string(auth.RoleAuditor)})
		require.NoError(t, err)
		srv := httptest.NewServer(api.New(api.Config{Store: st, Auth: authn, Audit: e.audit, Trust: e.trust, Connectors: e.conns, Engine: e.eng,
			Logger: slog.New(slog.NewTextHandler(e.log, nil))}).Handler())
		t.Cleanup(srv.Close)

		post := func(path, body string, header map[string]string) (int, engine.RunView) {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+path, strings.NewReader(body))
			require.NoError(t, err)
			req.Header.Set("Content-Type", "application/json")
			for k, v := range header {
				req.Header.Set(k, v)
			}
			resp, err := srv.Client().Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			var run engine.RunView
			if resp.StatusCode < 300 {
				require.NoError(t, json.NewDecoder(resp.Body).Decode(&run))
			}
			return resp.StatusCode, run
		}

		code, run := post("/hooks/hook-token?wait=20s", `{"user":"ann"}`, map[string]string{"Authorization": "Bearer " + operator})
		require.Equal(t, http.StatusOK, code)
		require.Equal(t, engine.StatusSucceeded, run.Status)
		require.Equal(t, "webhook", run.Trigger)
		require.Equal(t, map[string]any{"hello": "ann"}, run.Output)

		code, _ = post("/hooks/hook-token", `{"user":"ann"}`, nil)
		require.Equal(t, http.StatusUnauthorized, code)
		code, _ = post("/hooks/hook-token", `{"user":"ann"}`, map[string]string{"Authorization": "Bearer " + auditor})
		require.Equal(t, http.StatusForbidden, code, "an auditor may not start runs")
		code, _ = post("/hooks/hook-token", `{}`, map[string]string{"Authorization": "Bearer " + operator})
		require.Equal(t, http.StatusBadRequest, code, "the body is the run's input, validated")

		secret, err := e.eng.WebhookSecret(ctx, admin, "hook-hmac")
		require.NoError(t, err)
		body := `{"user":"bea"}`
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(ts + "." + body))
		signed := map[string]string{"X-Trustflow-Timestamp": ts, "X-Trustflow-Signature": "v1=" + hex.EncodeToString(mac.Sum(nil))}
		code, run = post("/hooks/hook-hmac?wait=20s", body, signed)
		require.Equal(t, http.StatusOK, code)
		require.Equal(t, engine.StatusSucceeded, run.Status, "%+v", run.Error)
		require.Equal(t, map[string]any{"hello": "bea"}, run.Output)
		require.Equal(t, "webhook", run.Trigger)

		code, _ = post("/hooks/hook-hmac", `{"user":"eve"}`, signed)
		require.Equal(t, http.StatusUnauthorized, code, "the signature covers the exact body")
		code, _ = post("/hooks/hook-hmac", body, signed)
		require.Equal(t, http.StatusConflict, code, "a replay starts nothing")
		code, _ = post("/hooks/classify", `{}`, map[string]string{"Authorization": "Bearer " + operator})
		require.Equal(t, http.StatusNotFound, code)

		runs, err := e.eng.ListRuns(ctx, engine.RunFilter{})
		require.NoError(t, err)
		require.Len(t, runs, 2, "refused webhooks start nothing")
	})
}

func TestRunFailedEventStartsListeningFlows(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newEnv(t, st)
		e.apply(t, failFlow, failedEventFlow)
		run := e.run(t, "fails", map[string]any{"who": "zed"})
		require.Equal(t, engine.StatusFailed, run.Status)

		var alerts []engine.RunView
		deadline := time.Now().Add(20 * time.Second)
		for len(alerts) == 0 {
			require.True(t, time.Now().Before(deadline), "no run.failed run")
			time.Sleep(10 * time.Millisecond)
			var err error
			alerts, err = e.eng.ListRuns(ctx, engine.RunFilter{Flow: "on-failure"})
			require.NoError(t, err)
		}
		require.Len(t, alerts, 1)
		alert := e.wait(t, alerts[0].ID)
		require.Equal(t, engine.StatusSucceeded, alert.Status, "%+v", alert.Error)
		require.Equal(t, "event:run.failed", alert.Trigger)
		want := map[string]any{"event": "run.failed", "data": map[string]any{"run_id": run.ID, "flow": "fails",
			"error": map[string]any{"step": "boom", "code": "user_missing", "message": "no such user zed"}}}
		require.Equal(t, want, alert.Input)
		require.Equal(t, want, alert.Output, "the listening flow's call carried the event")

		// A listener that fails itself starts no further run.
		_, err := e.eng.Apply(ctx, admin, []engine.Source{{Filename: "l.yaml", Source: strings.Replace(failedEventFlow, "/ok/alert", "/status/400", 1)}})
		require.NoError(t, err)
		run = e.run(t, "fails", map[string]any{"who": "amy"})
		require.Equal(t, engine.StatusFailed, run.Status)
		deadline = time.Now().Add(20 * time.Second)
		for {
			all, err := e.eng.ListRuns(ctx, engine.RunFilter{Flow: "on-failure"})
			require.NoError(t, err)
			if len(all) == 2 {
				second := e.wait(t, all[0].ID)
				require.Equal(t, engine.StatusFailed, second.Status)
				break
			}
			require.True(t, time.Now().Before(deadline), "no second run.failed run")
			time.Sleep(10 * time.Millisecond)
		}
		all, err := e.eng.ListRuns(ctx, engine.RunFilter{Flow: "on-failure"})
		require.NoError(t, err)
		require.Len(t, all, 2, "a failed listener does not trigger itself")
	})
}

const slowThenSleep = `apiVersion: trustflow/v1
kind: Flow
name: slow-then-sleep
trigger: {manual: {}}
steps:
  - id: slow
    call: {connector: hr, method: POST, path: /ok/slow}
  - id: nap
    sleep: 1h
`

func TestCancelOfARunningRunStopsItAfterItsCurrentStep(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newEnv(t, st)
		e.dir.mu.Lock()
		e.dir.delay = func() time.Duration { return 300 * time.Millisecond }
		e.dir.mu.Unlock()
		e.apply(t, slowThenSleep)
		run := e.start(t, "slow-then-sleep", nil)
		deadline := time.Now().Add(20 * time.Second)
		for e.dir.count(run.ID+"/slow") == 0 {
			require.True(t, time.Now().Before(deadline), "the call never arrived")
			time.Sleep(5 * time.Millisecond)
		}
		// The worker is inside the call: the cancel must not be lost.
		asked := time.Now()
		_, err := e.eng.Cancel(ctx, admin, run.ID)
		require.NoError(t, err)
		done := e.wait(t, run.ID)
		require.Equal(t, engine.StatusCancelled, done.Status)
		require.Less(t, time.Since(asked), 5*time.Second, "the cancel waited for the hour-long sleep")
		require.Equal(t, engine.StepSucceeded, steps(done)["slow"].Status, "the current step completed")
		require.Equal(t, 1, e.dir.count(run.ID+"/slow"))
	})
}
