package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/connector"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/flow"
	"github.com/trustflow/trustflow/internal/seal"
	"github.com/trustflow/trustflow/internal/store"
)

// onErrorPrefix starts the paths of on_error steps.
const onErrorPrefix = "on_error."

// maxRetryAfter caps a server's Retry-After.
const maxRetryAfter = time.Hour

// advance moves one run, whose lease l holds, as far as it can go. It
// returns nil when the run has ended (or has nothing to do), a snooze when
// it is due again later, and any other error when the advance failed (the
// dispatcher tries again with backoff).
func (e *Engine) advance(ctx context.Context, l *lease) error {
	if e.cfg.KeysReady != nil {
		if err := e.cfg.KeysReady(); err != nil {
			// Without the active KEK this node can neither open the run's
			// sealed values nor seal new ones: leave the run to a node
			// that can, or to this one once its source has the key.
			return snooze(keysRetry)
		}
	}
	var r store.Run
	if l.fresh != nil {
		// Started by this node a moment ago: nothing to read back.
		r = *l.fresh
	} else {
		var err error
		r, err = e.st.Run(ctx, l.run)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
	}
	if terminal(r.Status) {
		return nil
	}
	x, err := e.newExecution(ctx, r, l.fresh != nil)
	if errors.Is(err, seal.ErrUnknownKEK) {
		// Sealed by a KEK this node does not hold yet (a rotation on
		// another node): a rotation must never fail a run.
		e.log.Warn("run sealed under a key-encryption key this node does not hold; retrying", "run", l.run, "err", err)
		return snooze(keysRetry)
	}
	if err != nil {
		return err
	}
	x.lease = l
	// The node holds only so much run state at once (limits.go).
	if !e.held.enter(x.stateBytes) {
		return snooze(heldRetry)
	}
	defer x.leave()
	err = x.advance(ctx)
	var sn *snoozed
	switch {
	case err == nil:
	case errors.Is(err, errLeaseLost):
		// The checkpoints are another worker's to write now; the calls
		// this advance made are facts, and their audit records are kept.
		if rerr := x.keepAudit(context.WithoutCancel(ctx)); rerr != nil {
			return errors.Join(err, rerr)
		}
	case l.unrecorded != nil && !l.released:
		// A run in memory that yields (its advance failed, say) before its
		// first commit is recorded now, with what it did so far.
		due := e.clock.Now().Add(time.Second)
		if errors.As(err, &sn) {
			due = e.clock.Now().Add(sn.d)
		}
		if rerr := x.commit(context.WithoutCancel(ctx), false, func(tx *store.Tx) error { return x.yieldTx(ctx, tx, &due) }); rerr != nil {
			return errors.Join(err, rerr)
		}
	case !errors.As(err, &sn):
		// The advance failed: what it already did (checkpoints, the audit
		// records of its calls) is kept if the database takes it.
		if rerr := x.commit(context.WithoutCancel(ctx), false, func(*store.Tx) error { return nil }); rerr != nil {
			e.log.Warn("keep what a failed advance did", "run", l.run, "err", rerr)
		}
	}
	return err
}

// keysRetry is how soon a run job snoozed for want of a key-encryption key
// is tried again.
const keysRetry = time.Second

// execution is one advance of one run.
type execution struct {
	e        *Engine
	run      store.Run
	doc      *flow.Document
	input    map[string]any
	runInfo  map[string]any
	actor    audit.Actor
	deadline time.Time
	// sec says which values of the flow are computed from secrets; red
	// removes the run's secret values from what it stores (redact.go).
	sec      *flow.Secrets
	red      *redactor
	warnFull sync.Once
	// lease is this advance's hold on the run.
	lease *lease
	// pendSteps and pendAudit are the checkpoints and the calls' audit
	// records written since the last commit (commit), in order; flushMu
	// serialises commits.
	pendSteps []store.Step
	pendAudit []audit.Entry
	flushMu   sync.Mutex
	txPending *pendingWrites // the commit under way's, while flushMu is held

	mu  sync.Mutex
	cps map[string]store.Step
	seq int64
	// stateBytes is what the checkpoints hold (stateSize), for the run
	// state limit.
	stateBytes int64
}

// newExecution prepares an advance of r; fresh says r has just been
// inserted (it has no checkpoints yet).
func (e *Engine) newExecution(ctx context.Context, r store.Run, fresh bool) (*execution, error) {
	doc, err := e.document(ctx, r.FlowName, r.FlowVersion)
	if err != nil {
		return nil, err
	}
	input, inherited, err := e.openInput(r)
	if err != nil {
		return nil, err
	}
	var steps []store.Step
	if !fresh {
		if steps, err = e.st.Steps(ctx, r.ID); err != nil {
			return nil, err
		}
	}
	x := &execution{e: e, run: r, doc: doc, input: input, cps: map[string]store.Step{},
		deadline: e.clock.Now().Add(e.cfg.Budget),
		actor:    audit.Actor{ID: "run/" + r.ID, Name: r.FlowName, Role: "engine"}}
	for _, s := range steps {
		if s.State, err = e.openState(r.ID, s); err != nil {
			return nil, err
		}
		x.cps[s.Path] = s
		x.stateBytes += stateSize(s)
		if s.Seq > x.seq {
			x.seq = s.Seq
		}
	}
	// The run keeps its secret inputs (declared, or marked by the run that
	// started it), and the secrets its callers carried down, out of what
	// it stores.
	var marked []string
	if inherited != nil {
		marked = inherited.Inputs
	}
	x.sec, x.red = doc.Secrets(marked), newRedactor()
	x.red.add(secretValues(x.sec, input)...)
	switch {
	case inherited != nil:
		x.red.add(inherited.Redact...)
	case r.ParentRunID != "":
		// Started before runs carried their callers' secrets.
		values, err := e.ancestorSecrets(ctx, r.ParentRunID)
		if err != nil {
			return nil, fmt.Errorf("engine: run %s: %w", r.ID, err)
		}
		x.red.add(values...)
	}
	started := r.CreatedAt
	if r.StartedAt != nil {
		started = *r.StartedAt
	}
	x.runInfo = map[string]any{"id": r.ID, "flow": r.FlowName, "version": int64(r.FlowVersion), "started_at": started.UTC().Format(time.RFC3339Nano)}
	return x, nil
}

// outcome is what executing steps came to.
type outcome struct {
	// pause, when set, stops the advance; the run continues after it.
	pause    *time.Duration
	sleeping bool
	failure  *RunError
}

func pauseFor(d time.Duration, sleeping bool) outcome { return outcome{pause: &d, sleeping: sleeping} }

func (o outcome) done() bool { return o.pause == nil && o.failure == nil }

// scope is what expressions in one place of the flow see.
type scope struct {
	steps map[string]any
	vars  map[string]any
	err   map[string]any
	// secretVars names the loop variables over lists that read a secret.
	secretVars map[string]bool
}

func (x *execution) flowScope(sc *scope) flow.Scope {
	return flow.Scope{Input: x.input, Steps: sc.steps, Run: x.runInfo, Error: sc.err, Vars: sc.vars}
}

func (x *execution) advance(ctx context.Context) error {
	r := x.run
	now := x.e.clock.Now()
	if r.CancelRequested {
		return x.finish(ctx, StatusCancelled, nil, &RunError{Code: "cancelled", Message: "the run was cancelled"})
	}
	if r.Status == StatusQueued {
		if limit := x.doc.Settings.Concurrency; limit > 0 {
			ok, err := x.claimSlot(ctx, limit)
			if err != nil {
				return err
			}
			if !ok {
				return snooze(time.Second)
			}
		}
	}
	if r.Status != StatusRunning {
		if err := x.setStatus(ctx, StatusRunning); err != nil {
			return err
		}
	}
	if t := x.doc.Settings.Timeout; t > 0 && x.run.StartedAt != nil && now.Sub(*x.run.StartedAt) > t && x.run.Error == "" {
		return x.fail(ctx, &RunError{Code: "run_timeout", Message: fmt.Sprintf("the run exceeded its timeout of %s", t), Hint: "raise settings.timeout, or find the slow step in the run's timeline"})
	}
	if rerr := x.overDuration(now); rerr != nil {
		return x.fail(ctx, rerr)
	}
	sc := &scope{steps: x.results(), vars: map[string]any{}}
	if x.run.Error != "" {
		// The run failed earlier: finish its on_error steps.
		return x.onError(ctx, sc)
	}
	out := x.steps(ctx, x.doc.Steps, "", sc)
	switch {
	case out.failure != nil:
		return x.fail(ctx, out.failure)
	case out.pause != nil:
		return x.pause(ctx, out)
	}
	var output any
	if x.doc.Output != nil {
		ev, err := x.eval(ctx, x.doc.Output, sc)
		if err != nil {
			return x.fail(ctx, exprFailure("output", err))
		}
		output = ev.Masked
	}
	if rerr := x.outputLimit(output); rerr != nil {
		return x.fail(ctx, rerr)
	}
	return x.finish(ctx, StatusSucceeded, output, nil)
}

// results rebuilds steps.<id> from the checkpoints of top-level and
// branch steps (loop iterations are not visible outside their loop).
func (x *execution) results() map[string]any {
	out := map[string]any{}
	for path, cp := range x.cps {
		if strings.Contains(path, "[") || !completed(cp) {
			continue
		}
		out[cp.StepID] = x.result(cp)
	}
	return out
}

func completed(cp store.Step) bool {
	return cp.Status == StepSucceeded || cp.Status == StepSkipped || (cp.Status == StepFailed && cp.State == `{"continued":true}`)
}

// result is a checkpointed step's result as expressions see it (integers
// as int64, as when the step first ran).
func (x *execution) result(cp store.Step) any {
	if r, ok := stateResult(cp.State); ok {
		return r
	}
	if cp.Output == "" {
		return map[string]any{}
	}
	v, err := flow.DecodeJSON([]byte(cp.Output))
	if err != nil || v == nil {
		return map[string]any{}
	}
	if m, ok := v.(map[string]any); ok && cp.Kind == flow.KindForeach && m["truncated"] == true {
		// Kept truncated: its iterations hold it whole.
		if r, ok := x.foreachResult(cp); ok {
			return r
		}
	}
	return v
}

func (x *execution) checkpoint(path string) (store.Step, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	cp, ok := x.cps[path]
	return cp, ok
}

// save writes a step checkpoint, redacting secret inputs and bounding the
// stored size.
func (x *execution) save(ctx context.Context, cp store.Step) error {
	x.mu.Lock()
	x.seq++
	cp.Seq = x.seq
	x.mu.Unlock()
	cp.RunID = x.run.ID
	if shown := x.red.json(cp.Output); shown != cp.Output {
		// Stored redacted; a resumed run reads it whole from the sealed state.
		cp.State, cp.Output = withResult(cp.State, cp.Output), shown
	}
	cp.Error = x.red.json(cp.Error)
	cp.Evidence = x.red.json(cp.Evidence)
	if lim := x.limits().StepOutputBytes; int64(len(cp.Output)) > lim {
		cp.Output = encode(truncated(cp.Output, lim))
	}
	stored := cp
	// A state read back sealed names its KEK; stored in clear, it names none.
	stored.StateKEKID = ""
	if x.sealState(cp.State) {
		// The state (a foreach's items, say) holds a secret input, and a
		// resumed run needs it whole: it is stored sealed, not redacted.
		blob, kek, err := x.e.trust.SealSecret([]byte(cp.State), store.StepStateAAD(x.run.ID, cp.Path))
		if err != nil {
			return err
		}
		stored.State, stored.StateKEKID = store.EncodeSealedText(blob), kek
	}
	x.mu.Lock()
	x.pendSteps = append(x.pendSteps, stored)
	x.account(cp)
	x.cps[cp.Path] = cp
	x.mu.Unlock()
	return nil
}

// stageAudit keeps a call's audit record for the next commit.
func (x *execution) stageAudit(e audit.Entry) {
	x.mu.Lock()
	x.pendAudit = append(x.pendAudit, e)
	x.mu.Unlock()
}

// commit writes, in one transaction, the checkpoints and audit records
// written since the last commit and fn's change (fn may be nil). A step's
// checkpoint is thereby committed with the change that follows it (the
// next step's start, a pause, the run's end) rather than on its own; it is
// always committed before the run's next call, sub-run, or sleep, so no
// effect outside the run depends on a step whose checkpoint could be lost.
//
// The transaction locks the run's row first (its parent's before it when
// lockParent, as the end of a sub-run wakes its parent), then what fn
// locks, and the audit chain's head last: on PostgreSQL every transaction
// of the engine locks in that order, so none deadlocks another.
func (x *execution) commit(ctx context.Context, lockParent bool, fn func(tx *store.Tx) error) error {
	x.flushMu.Lock()
	defer x.flushMu.Unlock()
	x.mu.Lock()
	p := &pendingWrites{steps: x.pendSteps, entries: x.pendAudit}
	entries := p.entries
	x.mu.Unlock()
	unrecorded := x.lease != nil && x.lease.unrecorded != nil
	if (len(p.steps) == 0 && len(p.entries) == 0 || unrecorded) && fn == nil {
		// A run in memory (durability: none) writes nothing before it ends
		// or first waits.
		return nil
	}
	x.txPending = p
	defer func() { x.txPending = nil }()
	// Concurrent runs' commits share transactions (store.InTxGrouped); each
	// returns only once its own is durable.
	err := x.e.st.InTxGrouped(ctx, func(tx *store.Tx) error {
		p.written, p.locked = false, nil
		if unrecorded {
			// The run's first commit records it, as it started; its
			// run.start record goes first among the commit's records.
			if err := x.e.recordStart(ctx, tx, x.lease, x.run); err != nil {
				return err
			}
			p.entries = append([]audit.Entry{*x.lease.unrecorded}, entries...)
		}
		if lockParent && x.run.ParentRunID != "" && tx.Dialect() == store.Postgres {
			if _, err := tx.RunForUpdate(ctx, x.run.ParentRunID); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
		r, err := tx.RunForUpdate(ctx, x.run.ID)
		if err != nil {
			return err
		}
		if l := x.lease; l != nil && r.LeaseOwner != l.owner {
			// The lease expired (its renewals failed) and another worker
			// may hold the run now: this advance must change nothing more.
			return fmt.Errorf("engine: run %s: %w", x.run.ID, errLeaseLost)
		}
		p.locked = &r
		if fn != nil {
			if err := fn(tx); err != nil {
				return err
			}
		}
		return x.writePending(ctx, tx)
	})
	if err != nil {
		return err
	}
	x.mu.Lock()
	x.pendSteps, x.pendAudit = x.pendSteps[len(p.steps):], x.pendAudit[len(entries):]
	x.mu.Unlock()
	if unrecorded {
		x.lease.unrecorded = nil
	}
	return nil
}

// recordStart writes, inside tx, a run that started in memory under l: the
// run r as it started, still leased to l (for another LeaseTTL from now:
// the lease of a run that ran long in memory has been renewed only in
// memory) and due now.
func (e *Engine) recordStart(ctx context.Context, tx *store.Tx, l *lease, r store.Run) error {
	now := e.clock.Now().UTC().Truncate(time.Microsecond)
	r.LeaseOwner, r.LeaseUntil, r.DueAt = l.owner, now.Add(e.cfg.LeaseTTL), &now
	return tx.InsertRun(ctx, r)
}

// recordLate records a run that started in memory and yields before its
// first commit (its node lacked a key or room for its state, or its advance
// failed): it is written as it started, due again at due, its lease given
// up.
func (e *Engine) recordLate(ctx context.Context, l *lease, due time.Time) error {
	r := *l.fresh
	r.LeaseOwner, r.LeaseUntil, r.DueAt = "", time.Time{}, &due
	err := e.st.InTxGrouped(ctx, func(tx *store.Tx) error {
		if err := tx.InsertRun(ctx, r); err != nil {
			return err
		}
		if _, err := e.audit.Append(ctx, tx, *l.unrecorded); err != nil {
			return err
		}
		return e.dueTx(ctx, tx)
	})
	if err != nil {
		return err
	}
	l.unrecorded, l.released = nil, true
	return nil
}

// keepAudit appends, in a transaction of their own, the audit records of
// the calls this advance made and has not committed.
func (x *execution) keepAudit(ctx context.Context) error {
	x.flushMu.Lock()
	defer x.flushMu.Unlock()
	x.mu.Lock()
	entries := x.pendAudit
	x.mu.Unlock()
	if len(entries) == 0 {
		return nil
	}
	if err := x.e.st.InTxGrouped(ctx, func(tx *store.Tx) error { return x.e.appendAll(ctx, tx, entries) }); err != nil {
		return err
	}
	x.mu.Lock()
	x.pendAudit = x.pendAudit[len(entries):]
	x.mu.Unlock()
	return nil
}

// errLeaseLost ends an advance whose lease another worker may hold now.
var errLeaseLost = errors.New("this node's lease of the run expired")

// pendingWrites are what one commit writes besides its change.
type pendingWrites struct {
	steps   []store.Step
	entries []audit.Entry
	written bool
	// locked is the run's row as the commit locked it (PostgreSQL), for
	// the change's first read of it.
	locked *store.Run
}

// runForUpdate reads the run's row inside tx, the commit's transaction:
// the row the commit locked, the first time, or read again.
func (x *execution) runForUpdate(ctx context.Context, tx *store.Tx) (store.Run, error) {
	if p := x.txPending; p != nil && p.locked != nil {
		r := *p.locked
		p.locked = nil
		return r, nil
	}
	return tx.RunForUpdate(ctx, x.run.ID)
}

// writePending writes the commit's checkpoints and audit records into tx,
// once: a change that appends audit records of its own calls it first, so
// that the chain has the calls before what followed them.
func (x *execution) writePending(ctx context.Context, tx *store.Tx) error {
	p := x.txPending
	if p == nil || p.written {
		return nil
	}
	p.written = true
	for _, st := range p.steps {
		if err := tx.PutStep(ctx, st); err != nil {
			return err
		}
	}
	return x.e.appendAll(ctx, tx, p.entries)
}

// appendAll appends audit records, in order, inside tx.
func (e *Engine) appendAll(ctx context.Context, tx *store.Tx, entries []audit.Entry) error {
	for _, en := range entries {
		if _, err := e.audit.Append(ctx, tx, en); err != nil {
			return err
		}
	}
	return nil
}

// openState returns a stored step state in clear.
func (e *Engine) openState(runID string, st store.Step) (string, error) {
	blob, sealed, err := store.DecodeSealedText(st.State)
	if !sealed {
		return st.State, nil
	}
	if err != nil {
		return "", fmt.Errorf("engine: run %s step %s: sealed state: %w", runID, st.Path, err)
	}
	raw, err := e.trust.OpenSecret(blob, store.StepStateAAD(runID, st.Path))
	if err != nil {
		return "", fmt.Errorf("engine: run %s step %s: sealed state: %w", runID, st.Path, err)
	}
	return string(raw), nil
}

func encode(v any) string {
	if v == nil {
		return ""
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%q", fmt.Sprint(v))
	}
	return string(b)
}

func exprFailure(where string, err error) *RunError {
	return exprLimit(&RunError{Step: where, Code: "expression", Message: err.Error(), Hint: "check the expression against the run's data (`trustflow run show`)"}, err)
}

func (x *execution) overBudget() bool {
	return x.e.clock.Now().After(x.deadline) || x.crowded()
}

// steps runs a list of steps in order.
func (x *execution) steps(ctx context.Context, list []*flow.Step, prefix string, sc *scope) outcome {
	for _, s := range list {
		if x.overBudget() {
			return pauseFor(0, false)
		}
		if err := ctx.Err(); err != nil {
			// The worker is stopping: resume from the last checkpoint.
			return pauseFor(0, false)
		}
		out := x.step(ctx, s, prefix+s.ID, sc)
		if !out.done() {
			return out
		}
	}
	return outcome{}
}

// step runs one step unless its checkpoint says it already completed.
func (x *execution) step(ctx context.Context, s *flow.Step, path string, sc *scope) outcome {
	cp, have := x.checkpoint(path)
	if have && completed(cp) {
		sc.steps[s.ID] = x.result(cp)
		return outcome{}
	}
	if !have {
		now := x.e.clock.Now()
		cp = store.Step{Path: path, StepID: s.ID, Kind: s.Kind, Status: StepRunning, StartedAt: &now, State: "{}"}
	}
	if leafStep(s.Kind) {
		// What a step builds is bounded; how many build at once is too.
		if !x.e.work.take(ctx) {
			return pauseFor(0, false)
		}
		defer x.e.work.give()
	}
	if s.If != nil && s.Kind != flow.KindIf {
		ok, err := x.cond(ctx, s.If, sc)
		if err != nil {
			return x.stepFailed(ctx, s, cp, sc, exprFailure(path, err), nil)
		}
		if !ok {
			cp.Status, cp.Output = StepSkipped, `{"skipped":true}`
			return x.completeStep(ctx, s, cp, sc)
		}
	}
	switch s.Kind {
	case flow.KindSet:
		out, shown := map[string]any{}, map[string]any{}
		for _, k := range s.SetKeys {
			ev, err := x.eval(ctx, s.Set[k], sc)
			if err != nil {
				return x.stepFailed(ctx, s, cp, sc, exprFailure(path+".set."+k, err), nil)
			}
			out[k], shown[k] = ev.Value, ev.Masked
		}
		cp.Status, cp.Output = StepSucceeded, encode(shown)
		return x.completeMasked(ctx, s, cp, sc, out)
	case flow.KindFail:
		msg, err := x.eval(ctx, s.FailMessage, sc)
		if err != nil {
			return x.stepFailed(ctx, s, cp, sc, exprFailure(path+".fail", err), nil)
		}
		code := "fail"
		if s.FailCode != nil {
			c, err := x.eval(ctx, s.FailCode, sc)
			if err != nil {
				return x.stepFailed(ctx, s, cp, sc, exprFailure(path+".code", err), nil)
			}
			code = fmt.Sprint(c.Masked)
		}
		return x.stepFailed(ctx, s, cp, sc, &RunError{Step: path, Code: code, Message: fmt.Sprint(msg.Masked)}, nil)
	case flow.KindSleep:
		return x.sleep(ctx, s, cp, sc)
	case flow.KindCall:
		return x.call(ctx, s, cp, sc)
	case flow.KindIf, flow.KindSwitch:
		return x.branch(ctx, s, cp, sc)
	case flow.KindForeach:
		return x.foreach(ctx, s, cp, sc)
	case flow.KindFlowRun:
		return x.subflow(ctx, s, cp, sc)
	}
	return x.stepFailed(ctx, s, cp, sc, &RunError{Step: path, Code: "unknown_step", Message: "unknown step kind " + s.Kind}, nil)
}

// completeStep checkpoints a finished step and makes its result visible.
func (x *execution) completeStep(ctx context.Context, s *flow.Step, cp store.Step, sc *scope) outcome {
	if rerr := x.outputOver(s, cp); rerr != nil && cp.Status == StepSucceeded {
		return x.stepFailed(ctx, s, cp, sc, rerr, truncated(cp.Output, x.limits().StepOutputBytes))
	}
	if rerr := x.stateOver(cp); rerr != nil {
		return x.stepFailed(ctx, s, cp, sc, rerr, nil)
	}
	now := x.e.clock.Now()
	cp.FinishedAt = &now
	cp.NextAttemptAt = nil
	if cp.StartedAt != nil {
		cp.DurationMS = now.Sub(*cp.StartedAt).Milliseconds()
	}
	if err := x.save(ctx, cp); err != nil {
		return outcome{failure: &RunError{Step: cp.Path, Code: "checkpoint", Message: err.Error()}}
	}
	sc.steps[s.ID] = x.result(cp)
	return outcome{}
}

// stepFailed records a failed step: with continue_on_error the run goes on
// and steps.<id>.error is set; otherwise the run fails.
func (x *execution) stepFailed(ctx context.Context, s *flow.Step, cp store.Step, sc *scope, rerr *RunError, partial map[string]any) outcome {
	if rerr.Step == "" {
		rerr.Step = cp.Path
	}
	cp.Status = StepFailed
	cp.Error = encode(rerr)
	result := map[string]any{}
	for k, v := range partial {
		result[k] = v
	}
	errMap := map[string]any{"step": rerr.Step, "code": rerr.Code, "message": rerr.Message}
	if rerr.Status != 0 {
		errMap["status"] = int64(rerr.Status)
	}
	result["error"] = errMap
	cp.Output = encode(result)
	if lim := x.limits().StepOutputBytes; int64(len(cp.Output)) > lim {
		// A partial result (a refused call's body) over the limit.
		cp.Output = encode(map[string]any{"error": errMap, "truncated": true, "size": len(cp.Output)})
	}
	if s.ContinueOnError {
		cp.State = `{"continued":true}`
		return x.completeStep(ctx, s, cp, sc)
	}
	now := x.e.clock.Now()
	cp.FinishedAt = &now
	if cp.StartedAt != nil {
		cp.DurationMS = now.Sub(*cp.StartedAt).Milliseconds()
	}
	if err := x.save(ctx, cp); err != nil {
		return outcome{failure: &RunError{Step: cp.Path, Code: "checkpoint", Message: err.Error()}}
	}
	return outcome{failure: rerr}
}

type stepState struct {
	Until  string `json:"until,omitempty"`
	Branch string `json:"branch,omitempty"`
	Case   *int   `json:"case,omitempty"`
	Items  []any  `json:"items,omitempty"`
	Child  string `json:"child,omitempty"`
	Looped bool   `json:"looped,omitempty"`
	// Secret says the items come from a list that reads a secret (the
	// state is then stored sealed).
	Secret bool `json:"secret,omitempty"`
}

func readState(cp store.Step) stepState {
	var st stepState
	_ = json.Unmarshal([]byte(cp.State), &st) // written by encode: an unreadable state restarts the step
	return st
}

func (x *execution) sleep(ctx context.Context, s *flow.Step, cp store.Step, sc *scope) outcome {
	st := readState(cp)
	now := x.e.clock.Now()
	var until time.Time
	if st.Until != "" {
		t, err := time.Parse(time.RFC3339Nano, st.Until)
		if err == nil {
			until = t
		}
	}
	if until.IsZero() {
		if s.SleepUntil != nil {
			ev, err := x.eval(ctx, s.SleepUntil, sc)
			if err != nil {
				return x.stepFailed(ctx, s, cp, sc, exprFailure(cp.Path+".until", err), nil)
			}
			t, err := time.Parse(time.RFC3339Nano, fmt.Sprint(ev.Value))
			if err != nil {
				return x.stepFailed(ctx, s, cp, sc, &RunError{Code: "expression", Message: fmt.Sprintf("sleep until %v: not an RFC 3339 timestamp", ev.Masked)}, nil)
			}
			until = t
		} else {
			until = now.Add(s.SleepFor)
		}
		if rerr := x.sleepOver(cp.Path, until); rerr != nil {
			return x.stepFailed(ctx, s, cp, sc, rerr, nil)
		}
		cp.State = encode(stepState{Until: until.UTC().Format(time.RFC3339Nano)})
		if err := x.save(ctx, cp); err != nil {
			return outcome{failure: &RunError{Step: cp.Path, Code: "checkpoint", Message: err.Error()}}
		}
	}
	if now.Before(until) {
		return pauseFor(until.Sub(now), true)
	}
	cp.Status, cp.Output = StepSucceeded, "{}"
	return x.completeStep(ctx, s, cp, sc)
}

func (x *execution) branch(ctx context.Context, s *flow.Step, cp store.Step, sc *scope) outcome {
	st := readState(cp)
	var list []*flow.Step
	var result map[string]any
	if s.Kind == flow.KindIf {
		if st.Branch == "" {
			ok, err := x.cond(ctx, s.If, sc)
			if err != nil {
				return x.stepFailed(ctx, s, cp, sc, exprFailure(cp.Path+".if", err), nil)
			}
			st.Branch = "else"
			if ok {
				st.Branch = "then"
			}
			cp.State = encode(st)
			if err := x.save(ctx, cp); err != nil {
				return outcome{failure: &RunError{Step: cp.Path, Code: "checkpoint", Message: err.Error()}}
			}
		}
		list = s.Else
		if st.Branch == "then" {
			list = s.Then
		}
		result = map[string]any{"branch": st.Branch}
	} else {
		if st.Case == nil {
			taken := -1
			for i, c := range s.Cases {
				ok, err := x.cond(ctx, c.When, sc)
				if err != nil {
					return x.stepFailed(ctx, s, cp, sc, exprFailure(fmt.Sprintf("%s.switch[%d].case", cp.Path, i), err), nil)
				}
				if ok {
					taken = i
					break
				}
			}
			st.Case = &taken
			cp.State = encode(st)
			if err := x.save(ctx, cp); err != nil {
				return outcome{failure: &RunError{Step: cp.Path, Code: "checkpoint", Message: err.Error()}}
			}
		}
		if *st.Case >= 0 {
			list = s.Cases[*st.Case].Steps
			result = map[string]any{"case": int64(*st.Case)}
		} else {
			list = s.Default
			result = map[string]any{"case": "default"}
		}
	}
	out := x.steps(ctx, list, cp.Path+".", sc)
	if !out.done() {
		return out
	}
	cp.Status, cp.Output = StepSucceeded, encode(result)
	return x.completeStep(ctx, s, cp, sc)
}

func (x *execution) foreach(ctx context.Context, s *flow.Step, cp store.Step, sc *scope) outcome {
	st := readState(cp)
	if !st.Looped {
		ev, err := x.eval(ctx, s.Foreach, sc)
		if err != nil {
			return x.stepFailed(ctx, s, cp, sc, exprFailure(cp.Path+".foreach", err), nil)
		}
		items, ok := ev.Value.([]any)
		if !ok && ev.Value != nil {
			return x.stepFailed(ctx, s, cp, sc, &RunError{Code: "expression", Message: fmt.Sprintf("foreach needs a list, got %T", ev.Value), Hint: "make the expression return a list"}, nil)
		}
		if rerr := x.foreachOver(cp.Path, len(items)); rerr != nil {
			return x.stepFailed(ctx, s, cp, sc, rerr, nil)
		}
		// The items are checkpointed so that a resumed run iterates the
		// same list, whatever the expression would say now.
		st = stepState{Items: items, Looped: true, Secret: ev.Secret}
		cp.State = encode(st)
		if err := x.save(ctx, cp); err != nil {
			return outcome{failure: &RunError{Step: cp.Path, Code: "checkpoint", Message: err.Error()}}
		}
	}
	conc := max(s.Concurrency, 1)
	results := make([]any, len(st.Items))
	outs := make([]outcome, len(st.Items))
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	for i, item := range st.Items {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			child := &scope{steps: map[string]any{}, vars: map[string]any{}, err: sc.err, secretVars: map[string]bool{}}
			for k, v := range sc.steps {
				child.steps[k] = v
			}
			for k, v := range sc.vars {
				child.vars[k] = v
			}
			for k, v := range sc.secretVars {
				child.secretVars[k] = v
			}
			child.vars[s.As], child.secretVars[s.As] = item, st.Secret
			child.vars["index"] = int64(i)
			outs[i] = x.steps(ctx, s.Body, fmt.Sprintf("%s[%d].", cp.Path, i), child)
			iter := map[string]any{}
			for _, b := range s.Body {
				if r, ok := child.steps[b.ID]; ok {
					iter[b.ID] = r
				}
			}
			results[i] = iter
		}()
	}
	wg.Wait()
	var pause *time.Duration
	sleeping := true
	for _, o := range outs {
		if o.failure != nil {
			return outcome{failure: o.failure}
		}
		if o.pause != nil {
			if pause == nil || *o.pause < *pause {
				pause = o.pause
			}
			sleeping = sleeping && o.sleeping
		}
	}
	if pause != nil {
		return outcome{pause: pause, sleeping: sleeping}
	}
	cp.Status, cp.Output = StepSucceeded, encode(map[string]any{"results": x.shownResults(cp.Path, s.Body, results)})
	return x.completeMasked(ctx, s, cp, sc, map[string]any{"results": results})
}

func (x *execution) subflow(ctx context.Context, s *flow.Step, cp store.Step, sc *scope) outcome {
	st := readState(cp)
	if st.Child == "" {
		var in map[string]any
		var marked []string
		if s.SubInput != nil {
			ev, err := x.eval(ctx, s.SubInput, sc)
			if err != nil {
				return x.stepFailed(ctx, s, cp, sc, exprFailure(cp.Path+".input", err), nil)
			}
			m, ok := ev.Value.(map[string]any)
			if !ok && ev.Value != nil {
				return x.stepFailed(ctx, s, cp, sc, &RunError{Code: "expression", Message: fmt.Sprintf("a sub-flow's input must be a map, got %T", ev.Value)}, nil)
			}
			in, marked = m, ev.SecretKeys
		}
		var child store.Run
		err := x.commit(ctx, false, func(tx *store.Tx) error {
			// The child's flow row before the audit chain's head (which the
			// run's records and the child's run.start take), as every start
			// locks them.
			if _, err := tx.FlowByName(ctx, s.SubFlow); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
			if err := x.writePending(ctx, tx); err != nil {
				return err
			}
			if err := x.stillWanted(ctx, tx); err != nil {
				return err
			}
			var err error
			child, err = x.e.startRunTx(ctx, tx, StartRequest{Flow: s.SubFlow, Input: in, Trigger: "flow", Actor: x.actor, ParentRun: x.run.ID, ParentStep: cp.Path,
				Redact: x.red.values(), SecretInputs: marked}, nil)
			if err != nil {
				return err
			}
			cp.State = encode(stepState{Child: child.ID})
			x.mu.Lock()
			x.seq++
			cp.Seq, cp.RunID = x.seq, x.run.ID
			x.mu.Unlock()
			return tx.PutStep(ctx, cp)
		})
		if err != nil {
			if ie, ok := errs.As(err); ok && ie.Code == flow.CodeInvalidInput {
				return x.stepFailed(ctx, s, cp, sc, &RunError{Code: "subflow_input", Message: "engine: " + ie.Message}, nil)
			}
			if out, ok := x.startRefused(ctx, s, cp, sc, err); ok {
				return out
			}
			return outcome{failure: &RunError{Step: cp.Path, Code: "subflow_start", Message: err.Error()}}
		}
		x.mu.Lock()
		x.cps[cp.Path] = cp
		x.mu.Unlock()
		return pauseFor(30*time.Second, true)
	}
	child, err := x.e.st.Run(ctx, st.Child)
	if err != nil {
		return outcome{failure: &RunError{Step: cp.Path, Code: "subflow", Message: err.Error()}}
	}
	switch child.Status {
	case StatusSucceeded:
		cp.Status, cp.Output = StepSucceeded, child.Output
		if cp.Output == "" {
			cp.Output = "null"
		}
		return x.completeStep(ctx, s, cp, sc)
	case StatusFailed, StatusCancelled:
		msg := "sub-flow run " + child.ID + " " + child.Status
		if re := decodeError(child.Error); re != nil {
			msg += ": " + re.Message
		}
		return x.stepFailed(ctx, s, cp, sc, &RunError{Code: "subflow_" + child.Status, Message: msg}, nil)
	}
	// The child wakes this run when it ends; this is a backstop.
	return pauseFor(30*time.Second, true)
}

// retryable statuses of a call (FLOWS.md).
var retryableStatus = map[int]bool{429: true, 502: true, 503: true, 504: true}

func (x *execution) call(ctx context.Context, s *flow.Step, cp store.Step, sc *scope) outcome {
	now := x.e.clock.Now()
	if cp.NextAttemptAt != nil && now.Before(*cp.NextAttemptAt) {
		return pauseFor(cp.NextAttemptAt.Sub(now), true)
	}
	c := s.Call
	pv, err := x.eval(ctx, c.Path, sc)
	if err != nil {
		return x.stepFailed(ctx, s, cp, sc, exprFailure(cp.Path+".call.path", err), nil)
	}
	req := connector.Request{Method: c.Method, Path: fmt.Sprint(pv.Value), Header: http.Header{}, MaxResponseBytes: min(c.MaxResponseBytes, x.limits().StepOutputBytes),
		IdempotencyKey: x.run.ID + "/" + cp.Path, Actor: x.actor, AuditTarget: "run/" + x.run.ID + "/" + cp.Path, Redact: x.redact}
	if len(c.Query) > 0 {
		req.Query = url.Values{}
		for _, k := range sortedKeys(c.Query) {
			ev, err := x.eval(ctx, c.Query[k], sc)
			if err != nil {
				return x.stepFailed(ctx, s, cp, sc, exprFailure(cp.Path+".call.query."+k, err), nil)
			}
			req.Query.Set(k, text(ev.Value))
		}
	}
	for _, k := range sortedKeys(c.Headers) {
		ev, err := x.eval(ctx, c.Headers[k], sc)
		if err != nil {
			return x.stepFailed(ctx, s, cp, sc, exprFailure(cp.Path+".call.headers."+k, err), nil)
		}
		req.Header.Set(k, text(ev.Value))
	}
	if c.Body != nil {
		ev, err := x.eval(ctx, c.Body, sc)
		v := ev.Value
		if err != nil {
			return x.stepFailed(ctx, s, cp, sc, exprFailure(cp.Path+".call.body", err), nil)
		}
		if sv, ok := v.(string); ok {
			req.Body = []byte(sv)
			if req.Header.Get("Content-Type") == "" {
				req.Header.Set("Content-Type", "text/plain; charset=utf-8")
			}
		} else {
			req.Body = []byte(encode(v))
			if req.Header.Get("Content-Type") == "" {
				req.Header.Set("Content-Type", "application/json")
			}
		}
	}
	// What the run did so far is committed before the request leaves.
	if err := x.commit(ctx, false, nil); err != nil {
		// Nothing was sent: the advance yields, and pause's commit (or the
		// next advance) tries again.
		x.e.log.Warn("commit before a call failed; the run tries again", "run", x.run.ID, "step", cp.Path, "err", err)
		return pauseFor(0, false)
	}
	req.AuditTo = x.stageAudit
	x.e.work.give() // not while it waits for the server
	held, ok := x.e.answers.take(ctx, int64(len(req.Body))+req.MaxResponseBytes)
	if !ok {
		x.e.work.takeAlways()
		return pauseFor(0, false)
	}
	defer x.e.answers.give(held)
	actx, cancel := context.WithTimeout(ctx, s.AttemptTimeout())
	start := x.e.clock.Now()
	resp, err := x.e.conns.Do(actx, c.Connector, req)
	x.e.work.takeAlways()
	cancel()
	cp.Attempts++
	var rerr *RunError
	retryable := false
	var retryAfter time.Duration
	partial := map[string]any(nil)
	switch {
	case err != nil && ctx.Err() != nil:
		// The worker is stopping mid-call: the step runs again later.
		return pauseFor(0, false)
	case err != nil && errors.Is(err, seal.ErrUnknownKEK):
		// The connector's secret or identity key was re-wrapped by a
		// rotation on another node, and this node does not hold the new
		// KEK yet: a rotation must never fail a run, so try again soon.
		x.e.log.Warn("call needs a key-encryption key this node does not hold yet; retrying", "run", x.run.ID, "step", cp.Path, "err", err)
		cp.Attempts--
		return pauseFor(keysRetry, false)
	case err != nil:
		var ce *connector.CallError
		ie, isErr := errs.As(err)
		switch {
		case errors.As(err, &ce):
			rerr = &RunError{Code: ce.Code, Message: ce.Message, Hint: ce.Hint}
			retryable = ce.Retryable
			if ce.Evidence != nil {
				cp.Evidence = encode(ce.Evidence)
			}
		case isErr && ie.Kind == errs.Invalid:
			rerr = &RunError{Code: ie.Code, Message: ie.Public(), Hint: ie.Hint}
		default:
			rerr = &RunError{Code: "call_failed", Message: err.Error()}
			retryable = true
		}
	case !c.Accepts(resp.Status):
		evidence := encode(resp.Evidence)
		result := callResult(resp, evidence, x.e.clock.Now().Sub(start))
		partial = map[string]any{"status": result["status"], "headers": result["headers"], "body": result["body"]}
		cp.Evidence = evidence
		rerr = &RunError{Code: "http_status", Status: resp.Status, Message: fmt.Sprintf("%s %s answered %d, which is not an expected status", strings.ToUpper(req.Method), fmt.Sprint(pv.Masked), resp.Status),
			Hint: "add the status to the step's expect list if it is fine"}
		retryable = retryableStatus[resp.Status]
		retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), x.e.clock.Now())
	default:
		evidence := encode(resp.Evidence)
		result := callResult(resp, evidence, x.e.clock.Now().Sub(start))
		cp.Status, cp.Output, cp.Evidence = StepSucceeded, encode(result), evidence
		return x.completeStep(ctx, s, cp, sc)
	}
	if retryable && cp.Attempts < s.Retry.MaxAttempts {
		wait := jitter(s.Retry.Backoff(cp.Attempts))
		if retryAfter > wait {
			wait = retryAfter
		}
		next := x.e.clock.Now().Add(wait)
		cp.NextAttemptAt = &next
		cp.Error = encode(rerr)
		if err := x.save(ctx, cp); err != nil {
			return outcome{failure: &RunError{Step: cp.Path, Code: "checkpoint", Message: err.Error()}}
		}
		return pauseFor(wait, true)
	}
	return x.stepFailed(ctx, s, cp, sc, rerr, partial)
}

// callResult is a call step's result: status, headers with lower-case
// names, the body parsed when it is JSON, the handshake evidence as tls,
// and the duration. evidence is resp.Evidence encoded.
func callResult(resp *connector.Response, evidence string, d time.Duration) map[string]any {
	headers := map[string]any{}
	for k, vs := range resp.Header {
		lk := strings.ToLower(k)
		if lk == "set-cookie" || lk == "authorization" || lk == "proxy-authorization" || lk == "cookie" {
			headers[lk] = "[redacted]"
			continue
		}
		headers[lk] = strings.Join(vs, ", ")
	}
	var body any = string(resp.Body)
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == "application/json" || strings.HasSuffix(mt, "+json") {
		if v, err := flow.DecodeJSON(resp.Body); err == nil {
			body = v
		}
	}
	out := map[string]any{"status": int64(resp.Status), "headers": headers, "body": body, "duration_ms": d.Milliseconds()}
	if resp.Evidence != nil {
		var ev map[string]any
		if err := json.Unmarshal([]byte(evidence), &ev); err == nil {
			out["tls"] = ev
		}
	}
	if resp.Truncated {
		out["truncated"] = true
	}
	return out
}

func parseRetryAfter(h string, now time.Time) time.Duration {
	if h == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.Atoi(strings.TrimSpace(h)); err == nil && secs >= 0 {
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(h); err == nil {
		d = t.Sub(now)
	}
	if d < 0 {
		return 0
	}
	return min(d, maxRetryAfter)
}

// jitter spreads a backoff by ±20%.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// text is how a value is written into a query parameter or header.
func text(v any) string { return flow.Text(v) }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// claimSlot starts a queued run of a flow with settings.concurrency if
// fewer than limit of its runs are running or sleeping. Counting and
// starting happen in one transaction under the flow's row lock (SQLite's
// single writer serialises them anyway): two workers cannot both take the
// last slot.
func (x *execution) claimSlot(ctx context.Context, limit int) (bool, error) {
	claimed := false
	err := x.e.st.InTx(ctx, func(tx *store.Tx) error {
		if _, err := tx.FlowByName(ctx, x.run.FlowName); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		n, err := tx.CountRuns(ctx, x.run.FlowName, StatusRunning, StatusSleeping)
		if err != nil {
			return err
		}
		if n >= limit {
			return nil
		}
		r, err := x.runForUpdate(ctx, tx)
		if err != nil {
			return err
		}
		now := x.e.clock.Now().UTC().Truncate(time.Microsecond)
		r.Status, r.UpdatedAt = StatusRunning, now
		if r.StartedAt == nil {
			r.StartedAt = &now
		}
		if err := tx.UpdateRun(ctx, r); err != nil {
			return err
		}
		x.run, claimed = r, true
		return nil
	})
	return claimed, err
}

// setStatus moves the run to status (recording when it started).
func (x *execution) setStatus(ctx context.Context, status string) error {
	return x.e.st.InTx(ctx, func(tx *store.Tx) error { return x.setStatusTx(ctx, tx, status) })
}

func (x *execution) setStatusTx(ctx context.Context, tx *store.Tx, status string) error {
	r, err := x.runForUpdate(ctx, tx)
	if err != nil {
		return err
	}
	now := x.e.clock.Now().UTC().Truncate(time.Microsecond)
	r.Status, r.UpdatedAt = status, now
	if r.StartedAt == nil && status == StatusRunning {
		r.StartedAt = &now
	}
	if err := tx.UpdateRun(ctx, r); err != nil {
		return err
	}
	tx.AfterCommit(func() { x.run = r })
	return nil
}

// pause saves the run's status and gives its lease up, in one transaction,
// until the run is due again.
func (x *execution) pause(ctx context.Context, out outcome) error {
	status := StatusRunning
	if out.sleeping && *out.pause > 0 {
		status = StatusSleeping
	}
	ctx = context.WithoutCancel(ctx)
	due := x.e.clock.Now().Add(*out.pause)
	err := x.commit(ctx, false, func(tx *store.Tx) error {
		if status != x.run.Status {
			if err := x.setStatusTx(ctx, tx, status); err != nil {
				return err
			}
		}
		return x.yieldTx(ctx, tx, &due)
	})
	if err != nil {
		return err
	}
	return snooze(*out.pause)
}

// yieldTx gives the run's lease up inside tx, the transaction of its last
// change in this advance; the run is due again at due (nil: it has ended).
func (x *execution) yieldTx(ctx context.Context, tx *store.Tx, due *time.Time) error {
	l := x.lease
	if l == nil {
		return nil
	}
	now := x.e.clock.Now()
	next, err := tx.YieldRun(ctx, l.run, l.owner, l.wakes, due, now)
	if err != nil {
		return err
	}
	tx.AfterCommit(func() {
		l.released = true
		x.e.d.dueAt(next)
	})
	return nil
}

// fail records the run's failure and runs its on_error steps.
func (x *execution) fail(ctx context.Context, rerr *RunError) error {
	// The error is stored, audited, shown and sent with run.failed: no
	// secret input may be in it.
	rerr = x.redactError(rerr)
	err := x.commit(ctx, false, func(tx *store.Tx) error {
		r, err := x.runForUpdate(ctx, tx)
		if err != nil {
			return err
		}
		r.Error, r.UpdatedAt = encode(rerr), x.e.clock.Now()
		if err := tx.UpdateRun(ctx, r); err != nil {
			return err
		}
		x.run = r
		return nil
	})
	if err != nil {
		return err
	}
	return x.onError(ctx, &scope{steps: x.results(), vars: map[string]any{}})
}

func (x *execution) onError(ctx context.Context, sc *scope) error {
	rerr := decodeError(x.run.Error)
	if len(x.doc.OnError) > 0 {
		sc.err = map[string]any{"step": rerr.Step, "code": rerr.Code, "message": rerr.Message}
		if rerr.Status != 0 {
			sc.err["status"] = int64(rerr.Status)
		}
		out := x.steps(ctx, x.doc.OnError, onErrorPrefix, sc)
		if out.pause != nil {
			return x.pause(ctx, out)
		}
		if out.failure != nil {
			x.e.log.Warn("on_error steps failed", "run", x.run.ID, "step", out.failure.Step, "error", x.redact(out.failure.Message))
		}
	}
	return x.finish(ctx, StatusFailed, nil, rerr)
}

// finish ends the run: status, output or error, audit record, the parent
// run woken, and the run.failed event emitted — in one transaction.
func (x *execution) finish(ctx context.Context, status string, output any, rerr *RunError) error {
	ctx = context.WithoutCancel(ctx)
	rerr = x.redactError(rerr)
	err := x.commit(ctx, true, func(tx *store.Tx) error {
		r, err := x.runForUpdate(ctx, tx)
		if err != nil {
			return err
		}
		if terminal(r.Status) {
			x.run = r
			return x.yieldTx(ctx, tx, nil)
		}
		now := x.e.clock.Now().UTC().Truncate(time.Microsecond)
		r.Status, r.FinishedAt, r.UpdatedAt = status, &now, now
		if r.StartedAt == nil {
			r.StartedAt = &now
		}
		if status == StatusCancelled {
			if err := x.endCancelled(ctx, tx, now); err != nil {
				return err
			}
		}
		if output != nil {
			r.Output = x.red.json(encode(output))
		}
		if rerr != nil {
			r.Error = encode(rerr)
		}
		if err := tx.UpdateRun(ctx, r); err != nil {
			return err
		}
		if err := x.yieldTx(ctx, tx, nil); err != nil {
			return err
		}
		if status == StatusFailed && !strings.HasPrefix(r.TriggerKind, "event:run.failed") {
			// The flows run.failed starts, before the audit chain's head.
			if err := x.e.lockListeners(ctx, tx, "run.failed"); err != nil {
				return err
			}
		}
		if err := x.writePending(ctx, tx); err != nil {
			return err
		}
		details := map[string]any{"flow": r.FlowName, "version": r.FlowVersion, "status": status}
		outcome := audit.OutcomeSuccess
		if rerr != nil {
			details["error"] = rerr
			outcome = audit.OutcomeFailure
		}
		if _, err := x.e.audit.Append(ctx, tx, audit.Entry{Actor: x.actor, Action: "run." + status, Target: "run/" + r.ID, Outcome: outcome, Details: details}); err != nil {
			return err
		}
		if r.ParentRunID != "" {
			if err := x.e.wakeTx(ctx, tx, r.ParentRunID); err != nil {
				return err
			}
		}
		if status == StatusFailed && !strings.HasPrefix(r.TriggerKind, "event:run.failed") {
			payload := map[string]any{"run_id": r.ID, "flow": r.FlowName, "error": map[string]any{"step": rerr.Step, "code": rerr.Code, "message": rerr.Message}}
			if err := x.e.emitTx(ctx, tx, "run.failed", payload); err != nil {
				return err
			}
		}
		x.run = r
		return nil
	})
	if err != nil {
		return err
	}
	if status == StatusCancelled {
		// Its unfinished steps were ended in the database (endCancelled).
		x.e.notify(x.run.ID, nil)
	} else {
		x.e.notify(x.run.ID, x.view)
	}
	return nil
}

// view is the run's view as GetRun would read it once it has ended.
func (x *execution) view() RunView {
	x.mu.Lock()
	steps := make([]store.Step, 0, len(x.cps))
	for _, cp := range x.cps {
		steps = append(steps, cp)
	}
	x.mu.Unlock()
	sort.Slice(steps, func(i, j int) bool { return steps[i].Seq < steps[j].Seq })
	return runView(x.run, steps)
}

// lockListeners locks, inside tx, the rows of the flows an event starts
// (PostgreSQL): a transaction that appends audit records before it emits
// takes them before the audit chain's head, as every start does.
func (e *Engine) lockListeners(ctx context.Context, tx *store.Tx, event string) error {
	if tx.Dialect() != store.Postgres {
		return nil
	}
	names, err := e.st.FlowsWithTrigger(ctx, "event:"+event)
	if err != nil {
		return err
	}
	for _, n := range names {
		if _, err := tx.FlowByName(ctx, n); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	return nil
}

// emitTx starts, inside tx, a run of every flow whose trigger is the event.
func (e *Engine) emitTx(ctx context.Context, tx *store.Tx, event string, payload map[string]any) error {
	names, err := e.st.FlowsWithTrigger(ctx, "event:"+event)
	if err != nil {
		return err
	}
	for _, n := range names {
		if _, err := e.startRunTx(ctx, tx, StartRequest{Flow: n, Input: map[string]any{"event": event, "data": payload}, Trigger: "event:" + event, Actor: audit.System}, nil); err != nil {
			if errs.CodeOf(err) == flow.CodeInvalidInput {
				e.log.Warn("event flow refused the event's input", "flow", n, "event", event, "err", err)
				continue
			}
			if errs.KindOf(err) == errs.Limit {
				// A listener at its limit must not undo the change that
				// emitted the event.
				e.log.Warn("event flow is at a limit; the event starts no run of it", "flow", n, "event", event, "err", err)
				continue
			}
			return err
		}
	}
	return nil
}

// Emit starts the flows that listen for a lifecycle event (used by the
// trust store's expiry scans and rotations).
func (e *Engine) Emit(ctx context.Context, event string, payload map[string]any) error {
	return e.st.InTx(ctx, func(tx *store.Tx) error { return e.emitTx(ctx, tx, event, payload) })
}
