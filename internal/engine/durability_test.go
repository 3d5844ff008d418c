package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/engine"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

const inMemoryFlow = `apiVersion: trustflow/v1
kind: Flow
name: quick
trigger: {manual: {}}
settings: {durability: none}
input:
  token: {type: string, secret: true}
steps:
  - id: get
    call: {connector: hr, method: GET, path: /ok/get, headers: {X-Token: "${input.token}"}}
  - id: note
    set: {status: "${steps.get.status}"}
output: {status: "${steps.note.status}"}
`

const inMemorySleeper = `apiVersion: trustflow/v1
kind: Flow
name: dozy
trigger: {manual: {}}
settings: {durability: none}
steps:
  - id: first
    call: {connector: hr, method: GET, path: /ok/first}
  - id: nap
    sleep: 300ms
  - id: second
    call: {connector: hr, method: GET, path: /ok/second}
`

// A flow with durability: none writes nothing while its run is under way,
// and the whole run — the run, its steps, and its run.start, call and end
// audit records, in that order — once it ends.
func TestDurabilityNoneRecordsTheRunOnceAtTheEnd(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newEnv(t, st)
		e.apply(t, inMemoryFlow)
		inCall := make(chan struct{})
		release := make(chan struct{})
		e.dir.delay = func() time.Duration {
			close(inCall)
			<-release
			return 0
		}
		head, err := st.AuditHead(ctx)
		require.NoError(t, err)
		run, err := e.eng.StartRun(ctx, engine.StartRequest{Flow: "quick", Input: map[string]any{"token": "tok-very-secret"}, Actor: admin})
		require.NoError(t, err)
		require.Equal(t, engine.StatusRunning, run.Status)
		<-inCall
		// Mid-call: no trace of the run in the database.
		_, err = e.eng.GetRun(ctx, run.ID)
		require.Equal(t, errs.NotFound, errs.KindOf(err), "the run is in memory until it ends: %v", err)
		now, err := st.AuditHead(ctx)
		require.NoError(t, err)
		require.Equal(t, head.Seq, now.Seq, "nothing audited while the run is in memory")
		close(release)

		done := e.wait(t, run.ID)
		require.Equal(t, engine.StatusSucceeded, done.Status, "%+v", done.Error)
		require.Equal(t, map[string]any{"status": float64(200)}, done.Output)
		read, err := e.eng.GetRun(ctx, run.ID)
		require.NoError(t, err)
		require.Equal(t, engine.StatusSucceeded, read.Status)
		require.Len(t, read.Steps, 2)
		require.Equal(t, "[redacted]", read.Input["token"])
		recs, err := e.audit.List(ctx, audit.Filter{Target: "run/" + run.ID, Ascending: true, Limit: 10})
		require.NoError(t, err)
		var actions []string
		for _, r := range recs {
			actions = append(actions, r.Action)
		}
		require.Equal(t, []string{"run.start", "run.succeeded"}, actions)
		calls, err := e.audit.List(ctx, audit.Filter{Action: "connector.call", Target: "run/" + run.ID + "/get", Limit: 10})
		require.NoError(t, err)
		require.Len(t, calls, 1, "the call is audited")
		require.Greater(t, calls[0].Seq, recs[0].Seq)
		require.Less(t, calls[0].Seq, recs[1].Seq)
		// One transaction: the records are consecutive.
		require.Equal(t, recs[0].Seq+2, recs[1].Seq)
		v, err := e.audit.Verify(ctx)
		require.NoError(t, err)
		require.True(t, v.OK, "%+v", v)
	})
}

// A run in memory that waits (a sleep) is recorded then, and goes on as a
// durable run.
func TestDurabilityNoneRecordsARunThatWaits(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		e.apply(t, inMemorySleeper)
		run := e.start(t, "dozy", nil)
		var sleeping engine.RunView
		for deadline := time.Now().Add(20 * time.Second); sleeping.Status != engine.StatusSleeping; time.Sleep(5 * time.Millisecond) {
			require.True(t, time.Now().Before(deadline), "the run was never recorded sleeping")
			var err error
			sleeping, err = e.eng.GetRun(context.Background(), run.ID)
			if errs.KindOf(err) == errs.NotFound {
				continue // not recorded yet
			}
			require.NoError(t, err)
		}
		require.Equal(t, engine.StepSucceeded, steps(sleeping)["first"].Status)
		done := e.wait(t, run.ID)
		require.Equal(t, engine.StatusSucceeded, done.Status, "%+v", done.Error)
		require.Len(t, done.Steps, 3)
		require.Equal(t, 1, e.dir.count(run.ID+"/first"))
		require.Equal(t, 1, e.dir.count(run.ID+"/second"))
	})
}

// An advance whose lease expired under it (its renewals failed) and was
// taken stops at its next commit, writing no checkpoint, but keeps the
// audit record of the call it made; the run then ends once, under the new
// lease, with one checkpoint per step.
func TestAnAdvanceThatLostItsLeaseChangesNothingButItsCallsRecords(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newEnv(t, st)
		e.apply(t, `apiVersion: trustflow/v1
kind: Flow
name: slow
trigger: {manual: {}}
steps:
  - id: get
    call: {connector: hr, method: GET, path: /ok/get}
`)
		inCall := make(chan struct{}, 2)
		release := make(chan struct{})
		e.dir.delay = func() time.Duration {
			inCall <- struct{}{}
			<-release
			return 0
		}
		run := e.start(t, "slow", nil)
		<-inCall
		// The lease is lost: another owner, expired.
		require.NoError(t, st.InTx(ctx, func(tx *store.Tx) error {
			r, err := tx.RunForUpdate(ctx, run.ID)
			if err != nil {
				return err
			}
			r.LeaseOwner, r.LeaseUntil = "node_elsewhere/x", time.Now().Add(-time.Second)
			return tx.UpdateRun(ctx, r)
		}))
		close(release)
		done := e.wait(t, run.ID)
		require.Equal(t, engine.StatusSucceeded, done.Status, "%+v", done.Error)
		require.Len(t, done.Steps, 1)
		key := run.ID + "/get"
		require.Equal(t, 2, e.dir.count(key), "the call ran again under the new lease, with the same Idempotency-Key")
		calls, err := e.audit.List(ctx, audit.Filter{Action: "connector.call", Target: "run/" + key, Limit: 10})
		require.NoError(t, err)
		require.Len(t, calls, 2, "both calls are audited")
		ends, err := e.audit.List(ctx, audit.Filter{Action: "run.succeeded", Target: "run/" + run.ID, Limit: 10})
		require.NoError(t, err)
		require.Len(t, ends, 1, "the run ended once")
		require.Contains(t, e.log.String(), "lease expired")
	})
}
