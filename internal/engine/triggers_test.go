package engine_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/engine"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
	"github.com/trustflow/trustflow/internal/truststore"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

const onExpiring = `apiVersion: trustflow/v1
kind: Flow
name: ticket-expiring
trigger: {event: {type: identity.expiring}}
input:
  event: {type: string}
  data: {type: object}
steps:
  - id: note
    set: {identity: "${input.data.identity}", days: "${input.data.days_left}", threshold: "${input.data.threshold_days}"}
output: ${steps.note}
`

const onRotated = `apiVersion: trustflow/v1
kind: Flow
name: on-rotated
trigger: {event: {type: identity.rotated}}
input:
  event: {type: string}
  data: {type: object}
steps:
  - id: note
    set: {version: "${input.data.version}"}
`

func TestExpiryScanFiresOncePerThreshold(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newEnv(t, st)
		_, err := e.eng.Apply(ctx, admin, []engine.Source{{Filename: "x.yaml", Source: onExpiring}})
		require.NoError(t, err)
		runs := func() []engine.RunView {
			rs, err := e.eng.ListRuns(ctx, engine.RunFilter{Flow: "ticket-expiring"})
			require.NoError(t, err)
			return rs
		}
		// The test CA's client certificates live far longer than 30 days:
		// nothing fires.
		require.NoError(t, e.eng.Scan(ctx))
		require.Empty(t, runs())
		require.NoError(t, e.eng.Scan(ctx))
		require.Empty(t, runs())

		// An identity 5 days from expiry crosses 30, 14 and 7: one run,
		// for the nearest threshold; scanning again fires nothing new.
		now := time.Now()
		soon := e.ca.IssueClient(t, "soon", truststoretest.Validity(now.Add(-time.Hour), now.Add(5*24*time.Hour-time.Minute)))
		_, err = e.trust.Import(ctx, admin, truststore.ImportRequest{Name: "soon", Material: truststore.Material{Cert: soon.CertPEM(), Key: soon.KeyPEM()}})
		require.NoError(t, err)
		require.NoError(t, e.eng.Scan(ctx))
		require.NoError(t, e.eng.Scan(ctx))
		rs := runs()
		require.Len(t, rs, 1)
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		done, err := e.eng.Wait(wctx, rs[0].ID)
		require.NoError(t, err)
		require.Equal(t, engine.StatusSucceeded, done.Status)
		require.Equal(t, map[string]any{"identity": "soon", "days": float64(4), "threshold": float64(7)}, done.Output)
	})
}

func TestRotationEmitsIdentityRotated(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newEnv(t, st)
		_, err := e.eng.Apply(ctx, admin, []engine.Source{{Filename: "r.yaml", Source: onRotated}})
		require.NoError(t, err)
		e.trust.SetEventSink(e.eng.TrustEvents())
		leaf := e.ca.IssueClient(t, "next")
		_, err = e.trustRotate(ctx, leaf)
		require.NoError(t, err)
		rs, err := e.eng.ListRuns(ctx, engine.RunFilter{Flow: "on-rotated"})
		require.NoError(t, err)
		require.Len(t, rs, 1)
		require.Equal(t, "event:identity.rotated", rs[0].Trigger)
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		done, err := e.eng.Wait(wctx, rs[0].ID)
		require.NoError(t, err)
		require.Equal(t, engine.StatusSucceeded, done.Status)
	})
}

const everyTwoSeconds = `apiVersion: trustflow/v1
kind: Flow
name: tick
trigger: {schedule: {cron: "@every 2s"}}
steps:
  - id: note
    set: {at: "${run.started_at}"}
`

// TestScheduleFiresOncePerTickAcrossNodes runs two engines (two nodes) on
// one database: River's leader alone enqueues each tick, so no tick fires
// twice.
func TestScheduleFiresOncePerTickAcrossNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for several schedule ticks")
	}
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		var cfg engine.Config
		e := newEnvWith(t, st, func(c *engine.Config) { cfg = *c })
		cfg.Node = "second-node"
		second, err := engine.New(ctx, cfg)
		require.NoError(t, err)
		require.NoError(t, second.Start(ctx))
		t.Cleanup(func() { second.Stop(context.Background()) })

		_, err = e.eng.Apply(ctx, admin, []engine.Source{{Filename: "tick.yaml", Source: everyTwoSeconds}})
		require.NoError(t, err)
		require.NoError(t, second.SyncSchedules(ctx))

		deadline := time.Now().Add(40 * time.Second)
		var runs []engine.RunView
		for time.Now().Before(deadline) {
			runs, err = e.eng.ListRuns(ctx, engine.RunFilter{Flow: "tick"})
			require.NoError(t, err)
			if len(runs) >= 3 {
				break
			}
			time.Sleep(200 * time.Millisecond) // polling the database for ticks, bounded by the deadline
		}
		require.GreaterOrEqual(t, len(runs), 3, "the schedule fired %d times in 40s", len(runs))
		for i := 1; i < len(runs); i++ {
			gap := runs[i-1].CreatedAt.Sub(runs[i].CreatedAt)
			require.Greater(t, gap, time.Second, "two runs %s apart: a tick fired twice", gap)
		}
		for _, r := range runs {
			require.Equal(t, "schedule", r.Trigger)
		}
	})
}

func TestApplyRefusesAStepTimeoutLongerThanAnAdvance(t *testing.T) {
	st := storetest.Open(t, store.SQLite)
	e := newEnvWith(t, st, func(c *engine.Config) { c.JobTimeout = time.Minute })
	doc := `apiVersion: trustflow/v1
kind: Flow
name: slow
trigger: {manual: {}}
steps:
  - id: lookup
    call: {connector: hr, method: GET, path: /users/1}
    timeout: 5m
`
	_, err := e.eng.Apply(context.Background(), admin, []engine.Source{{Filename: "slow.yaml", Source: doc}})
	var ae *errs.Error
	require.ErrorAs(t, err, &ae)
	require.Len(t, ae.Problems, 1)
	require.Equal(t, "lookup.timeout", ae.Problems[0].Path)
	require.Equal(t, 6, ae.Problems[0].Line)
	require.Contains(t, ae.Problems[0].Message, "a timeout of 5m0s is longer than one advance of a run may take on this server (50s)")
	flows, err := e.eng.ListFlows(context.Background())
	require.NoError(t, err)
	require.Empty(t, flows)
}

const napFlow = `apiVersion: trustflow/v1
kind: Flow
name: nap
trigger: {manual: {}}
steps:
  - id: nap
    sleep: 300ms
  - id: done
    set: {v: %d}
output: ${steps.done.v}
`

// TestRemovedFlowKeepsItsVersions removes a flow while a run sleeps in it:
// the run still finishes on its pinned version, and the flow applied again
// continues the numbering instead of reusing version 1.
func TestRemovedFlowKeepsItsVersions(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newEnv(t, st)
		_, err := e.eng.Apply(ctx, admin, []engine.Source{{Filename: "nap.yaml", Source: fmt.Sprintf(napFlow, 1)}})
		require.NoError(t, err)
		run, err := e.eng.StartRun(ctx, engine.StartRequest{Flow: "nap", Actor: admin})
		require.NoError(t, err)
		require.NoError(t, e.eng.RemoveFlow(ctx, admin, "nap"))

		applied, err := e.eng.Apply(ctx, admin, []engine.Source{{Filename: "nap.yaml", Source: fmt.Sprintf(napFlow, 2)}})
		require.NoError(t, err)
		require.Equal(t, []engine.Applied{{Name: "nap", Version: 2, Changed: true, Filename: "nap.yaml"}}, applied)

		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		done, err := e.eng.Wait(wctx, run.ID)
		require.NoError(t, err)
		require.Equal(t, engine.StatusSucceeded, done.Status)
		require.Equal(t, 1, done.FlowVersion)
		require.Equal(t, float64(1), done.Output, "the run finished on the version it pinned")
	})
}

const secretParent = `apiVersion: trustflow/v1
kind: Flow
name: secret-parent
trigger: {manual: {}}
input:
  token: {type: string, secret: true}
steps:
  - id: each
    foreach: ${[input.token, "plain"]}
    steps:
      - id: hit
        call: {connector: hr, method: POST, path: "/ok/${item}"}
  - id: child
    flow: {name: secret-child, input: {passed: "${input.token}"}}
`

const secretChild = `apiVersion: trustflow/v1
kind: Flow
name: secret-child
trigger: {manual: {}}
input:
  passed: {type: string}
steps:
  - id: echo
    set: {v: "${input.passed}"}
output: ${steps.echo.v}
`

// TestSecretInputsStayOutOfStorage runs a flow whose secret input reaches a
// foreach's items, a call's path and a sub-flow's input: none of the
// stored rows or audit records holds it in clear, and the run still works.
func TestSecretInputsStayOutOfStorage(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newEnv(t, st)
		const secret = "s3cret-value-42"
		_, err := e.eng.Apply(ctx, admin, []engine.Source{{Filename: "c.yaml", Source: secretChild}, {Filename: "p.yaml", Source: secretParent}})
		require.NoError(t, err)
		run, err := e.eng.StartRun(ctx, engine.StartRequest{Flow: "secret-parent", Input: map[string]any{"token": secret}, Actor: admin})
		require.NoError(t, err)
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		done, err := e.eng.Wait(wctx, run.ID)
		require.NoError(t, err)
		require.Equal(t, engine.StatusSucceeded, done.Status, "%+v", done.Error)
		e.dir.mu.Lock()
		require.Equal(t, 1, e.dir.keys[run.ID+"/each[0].hit"], "the call with the secret in its path was made")
		e.dir.mu.Unlock()

		var sealed int
		require.NoError(t, st.DB().QueryRowContext(ctx, "SELECT COUNT(*) FROM run_steps WHERE path = 'each' AND substr(state, 1, 7) = 'sealed:'").Scan(&sealed))
		require.Equal(t, 1, sealed, "the foreach's items are stored sealed")
		for _, q := range []string{
			"SELECT state || output || evidence || error FROM run_steps",
			"SELECT input || output || error FROM runs",
			"SELECT details || target FROM audit_records",
		} {
			rows, err := st.DB().QueryContext(ctx, q)
			require.NoError(t, err)
			for rows.Next() {
				var text string
				require.NoError(t, rows.Scan(&text))
				require.NotContains(t, text, secret, q)
			}
			require.NoError(t, rows.Close())
		}
	})
}
