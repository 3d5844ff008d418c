package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/flow"
	"github.com/trustflow/trustflow/internal/store"
)

// errCancelling stops a sub-run's start in a run being cancelled.
var errCancelling = errors.New("engine: the run is being cancelled")

// cancelTree asks every sub-run of run root still queued, running or
// sleeping, and theirs, to stop, inside tx: each is marked, audited as
// run.cancel (naming the run it was cancelled with) and woken. Runs
// already asked are left as they are, with their sub-runs. Every run row
// is locked before the audit chain's head, parents before their sub-runs
// (the order of every transaction of the engine on PostgreSQL, so that
// none deadlocks another).
func (e *Engine) cancelTree(ctx context.Context, tx *store.Tx, actor audit.Actor, root string) error {
	now := e.clock.Now().UTC().Truncate(time.Microsecond)
	parents := []string{root}
	var entries []audit.Entry
	for len(parents) > 0 {
		pid := parents[0]
		parents = parents[1:]
		kids, err := tx.ChildRuns(ctx, pid, StatusQueued, StatusRunning, StatusSleeping)
		if err != nil {
			return err
		}
		for _, id := range kids {
			r, err := tx.RunForUpdate(ctx, id)
			if err != nil {
				return err
			}
			if terminal(r.Status) || r.CancelRequested {
				continue
			}
			r.CancelRequested, r.UpdatedAt = true, now
			if err := tx.UpdateRun(ctx, r); err != nil {
				return err
			}
			details := map[string]any{"flow": r.FlowName, "status": r.Status, "parent_run": pid, "cancelled_with": root}
			entries = append(entries, audit.Entry{Actor: actor, Action: "run.cancel", Target: "run/" + id, Details: details})
			if err := e.wakeTx(ctx, tx, id); err != nil {
				return err
			}
			parents = append(parents, id)
		}
	}
	return e.appendAll(ctx, tx, entries)
}

// endCancelled ends, inside the transaction that cancels the run, the
// steps it left unfinished (a sleep, a retry's backoff, the wait for a
// sub-run): they are cancelled, not running. Sub-runs not yet asked to
// stop are asked now.
func (x *execution) endCancelled(ctx context.Context, tx *store.Tx, at time.Time) error {
	if _, err := tx.EndSteps(ctx, x.run.ID, StepCancelled, at, StepRunning, StepPending); err != nil {
		return err
	}
	return x.e.cancelTree(ctx, tx, x.actor, x.run.ID)
}

// stillWanted refuses, inside the transaction that would start a sub-run,
// to start one for a run that is being cancelled: a cancel commits either
// before (and the sub-run is not started) or after (and finds it).
func (x *execution) stillWanted(ctx context.Context, tx *store.Tx) error {
	r, err := x.runForUpdate(ctx, tx)
	if err != nil {
		return err
	}
	if r.CancelRequested {
		return errCancelling
	}
	return nil
}

// startRefused turns a sub-run's refused start into the step's outcome: a
// cancelled run ends at once, a limit fails the step with its code.
func (x *execution) startRefused(ctx context.Context, s *flow.Step, cp store.Step, sc *scope, err error) (outcome, bool) {
	if errors.Is(err, errCancelling) {
		return pauseFor(0, false), true
	}
	if le, ok := errs.As(err); ok && le.Kind == errs.Limit {
		return x.stepFailed(ctx, s, cp, sc, limitFailure(cp.Path, le), nil), true
	}
	return outcome{}, false
}

// outputLimit says whether a run's output is over the step output limit.
func (x *execution) outputLimit(output any) *RunError {
	lim := x.limits().StepOutputBytes
	if n := int64(len(encode(output))); n > lim {
		le := errs.LimitReached("step_output", lim, fmt.Sprintf("the run's output is %d bytes", n),
			"return less in output (pick fields); a flow's limits.step_output_bytes may lower the limit, the server's --max-step-output raise it")
		return limitFailure("output", le)
	}
	return nil
}
