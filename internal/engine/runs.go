package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/flow"
	"github.com/trustflow/trustflow/internal/store"
)

// inputError is a run input that does not match the flow's input schema: an
// errs.Invalid error with code invalid_input naming each problem.
func inputError(problems []flow.Problem) *errs.Error {
	parts := make([]string, 0, len(problems))
	for _, p := range problems {
		parts = append(parts, p.Path+": "+p.Message)
	}
	hint := ""
	if len(problems) > 0 {
		hint = problems[0].Hint
	}
	return &errs.Error{Kind: errs.Invalid, Code: flow.CodeInvalidInput, Message: strings.Join(parts, "; "), Hint: hint, Problems: problems, Op: "engine"}
}

// conflict is a run change refused because of the run's state.
func conflict(code, msg, hint string) *errs.Error {
	e := errs.ConflictWith(code, msg, hint)
	e.Op = "engine"
	return e
}

// StartRequest starts a run.
type StartRequest struct {
	Flow    string
	Input   map[string]any
	Trigger string // manual (default), webhook, schedule, event
	Actor   audit.Actor
	// ParentRun and ParentStep link a sub-flow's run to its caller.
	ParentRun, ParentStep string
	// Redact lists secret values (a calling run's, and those it computed
	// from them) this run keeps out of what it stores; SecretInputs names
	// the input fields the caller computed from its secrets, which this run
	// treats as secret inputs. Both are sealed with the run's input.
	Redact       []string
	SecretInputs []string
}

func runAAD(id string) []byte { return store.RunInputAAD(id) }

// StartRun validates the input and writes the run, due at once, and its
// audit record in one transaction: a run is never lost between accepted
// and advanced. When this node has a worker free, the run is leased to it in
// that transaction and advanced at once.
func (e *Engine) StartRun(ctx context.Context, req StartRequest) (RunView, error) {
	var out RunView
	start := func(inMemory bool) error {
		return e.startInline(func(l *lease) error {
			if l != nil {
				l.inMemoryOK = inMemory
			}
			return e.st.InTxGrouped(ctx, func(tx *store.Tx) error {
				r, err := e.startRunTx(ctx, tx, req, l)
				if err != nil {
					return err
				}
				out = runView(r, nil)
				return nil
			})
		})
	}
	err := start(true)
	var im *inMemoryStart
	if errors.As(err, &im) {
		v, ok, err := e.startInMemory(ctx, req, im.head, im.doc)
		if ok {
			return v, err
		}
		// No worker free any more: the run starts durably.
		err = start(false)
		return out, err
	}
	return out, err
}

// inMemoryStart is startRunTx's answer for a run that is to start in
// memory (settings.durability: none) instead: its transaction changes
// nothing and is rolled back.
type inMemoryStart struct {
	head store.Flow
	doc  *flow.Document
}

func (*inMemoryStart) Error() string { return "engine: the run starts in memory" }

// startInline calls start, a transaction that may start one run, with a
// lease of this node when it has a worker free (nil otherwise), and
// advances the run start started under it as soon as start returns. A
// start that PostgreSQL rolled back to break a deadlock (a transaction that
// locked the audit chain's head before the flow, such as a trust store
// rotation that emits an event) changed nothing and runs again.
func (e *Engine) startInline(start func(l *lease) error) error {
	var l *lease
	if e.d.trySlot() {
		var err error
		if l, err = e.d.newLease(""); err != nil {
			e.d.giveSlot()
			l = nil
		}
	}
	err := store.RetryOnDeadlock(func() error { return start(l) })
	if l == nil {
		return err
	}
	if err != nil || l.run == "" {
		e.d.giveSlot()
		return err
	}
	e.d.begin(l)
	return nil
}

// wakeTx makes a run due now, inside tx, and wakes the dispatcher (of
// this node, and on PostgreSQL of every node) when tx commits.
func (e *Engine) wakeTx(ctx context.Context, tx *store.Tx, id string) error {
	if err := tx.WakeRun(ctx, id, e.clock.Now()); err != nil {
		return err
	}
	return e.dueTx(ctx, tx)
}

// dueTx wakes the dispatchers when tx, which made a run due, commits.
func (e *Engine) dueTx(ctx context.Context, tx *store.Tx) error {
	tx.AfterCommit(e.d.poke)
	return tx.Notify(ctx, runsChannel)
}

// startRunTx starts a run inside tx. With a lease l, the run is leased to
// it (and, when the flow bounds no concurrency, starts running at once);
// without, the dispatchers are woken to claim it.
func (e *Engine) startRunTx(ctx context.Context, tx *store.Tx, req StartRequest, l *lease) (store.Run, error) {
	head, err := tx.FlowByName(ctx, req.Flow)
	if errors.Is(err, store.ErrNotFound) {
		return store.Run{}, notFound("flow", req.Flow)
	} else if err != nil {
		return store.Run{}, err
	}
	d, err := e.document(ctx, head.Name, head.CurrentVersion)
	if err != nil {
		return store.Run{}, err
	}
	if l != nil && l.inMemoryOK && inMemory(d, req) {
		return store.Run{}, &inMemoryStart{head: head, doc: d}
	}
	p, err := e.prepareRun(head, d, req)
	if err != nil {
		return store.Run{}, err
	}
	if err := e.checkStart(ctx, tx, head.Name, d, req.ParentRun); err != nil {
		return store.Run{}, err
	}
	r := p.run
	if l != nil {
		r.LeaseOwner, r.LeaseUntil = l.owner, r.CreatedAt.Add(e.cfg.LeaseTTL)
		if d.Settings.Concurrency == 0 {
			r.Status, r.StartedAt = StatusRunning, &r.CreatedAt
		}
	}
	if err := tx.InsertRun(ctx, r); err != nil {
		return store.Run{}, err
	}
	if _, err := e.audit.Append(ctx, tx, p.started); err != nil {
		return store.Run{}, err
	}
	if l != nil {
		l.run, l.fresh = r.ID, &r
	} else if err := e.dueTx(ctx, tx); err != nil {
		return store.Run{}, err
	}
	return r, nil
}

// preparedRun is a run checked and built, not yet written.
type preparedRun struct {
	run     store.Run
	started audit.Entry // its run.start record
}

// prepareRun checks a run's input against the flow and builds the run (its
// input sealed) and its run.start record.
func (e *Engine) prepareRun(head store.Flow, d *flow.Document, req StartRequest) (preparedRun, error) {
	in := req.Input
	if in == nil {
		in = map[string]any{}
	}
	sec := d.Secrets(req.SecretInputs)
	checked, err := sec.CheckInput(in)
	if err != nil {
		if ve, ok := errs.As(err); ok && ve.Code == flow.CodeInvalidInput {
			// The input does not match the flow's inputs: name each problem.
			return preparedRun{}, inputError(ve.Problems)
		}
		return preparedRun{}, err
	}
	id, err := newID("run_")
	if err != nil {
		return preparedRun{}, err
	}
	var inherit *carried
	if req.ParentRun != "" {
		inherit = &carried{Redact: req.Redact, Inputs: req.SecretInputs}
	}
	raw, err := encodeRunInput(checked, inherit)
	if err != nil {
		return preparedRun{}, fmt.Errorf("engine: encode input: %w", err)
	}
	sealed, kek, err := e.trust.SealSecret(raw, runAAD(id))
	clear(raw)
	if err != nil {
		return preparedRun{}, err
	}
	red := newRedactor()
	red.add(secretValues(sec, checked)...)
	red.add(req.Redact...)
	shown, _ := red.value(sec.RedactInput(checked))
	redacted, err := json.Marshal(shown)
	if err != nil {
		return preparedRun{}, fmt.Errorf("engine: encode input: %w", err)
	}
	trigger := req.Trigger
	if trigger == "" {
		trigger = "manual"
	}
	now := e.clock.Now().UTC().Truncate(time.Microsecond)
	r := store.Run{ID: id, FlowName: head.Name, FlowVersion: head.CurrentVersion, Status: StatusQueued, TriggerKind: trigger,
		Input: string(redacted), InputSealed: sealed, KEKID: kek, ParentRunID: req.ParentRun, ParentStep: req.ParentStep,
		CreatedBy: req.Actor.ID, CreatedAt: now, UpdatedAt: now, DueAt: &now}
	details := map[string]any{"flow": head.Name, "version": head.CurrentVersion, "trigger": trigger}
	if req.ParentRun != "" {
		details["parent_run"] = req.ParentRun
		details["parent_step"] = req.ParentStep
	}
	return preparedRun{run: r, started: audit.Entry{Actor: req.Actor, Action: "run.start", Target: "run/" + id, Details: details}}, nil
}

// inMemory reports whether a run of d, asked for by req, runs in memory:
// the flow has settings.durability: none and bounds no concurrency, and the
// run is top-level and started by hand or by a webhook (a schedule's tick
// happens once: its run is recorded at once).
func inMemory(d *flow.Document, req StartRequest) bool {
	switch req.Trigger {
	case "", "manual", "webhook":
	default:
		return false
	}
	return d.Settings.InMemory() && d.Settings.Concurrency == 0 && req.ParentRun == ""
}

// startInMemory starts, without writing anything yet, a run of flow head
// (whose current document is d) that inMemory allows, on a worker of this
// node: the run is recorded, whole, when it ends (or first waits: a
// sleep, a retry's backoff, a sub-run). ok is false when no worker is free
// any more: the run must then start durably.
func (e *Engine) startInMemory(ctx context.Context, req StartRequest, head store.Flow, d *flow.Document) (v RunView, ok bool, err error) {
	if !e.d.trySlot() {
		return RunView{}, false, nil
	}
	l, err := e.d.newLease("")
	if err != nil {
		e.d.giveSlot()
		return RunView{}, true, err
	}
	p, err := e.prepareRun(head, d, req)
	if err == nil {
		err = e.checkStart(ctx, e.st, head.Name, d, "")
	}
	if err != nil {
		e.d.giveSlot()
		return RunView{}, true, err
	}
	r := p.run
	r.Status, r.StartedAt = StatusRunning, &r.CreatedAt
	r.LeaseOwner, r.LeaseUntil = l.owner, r.CreatedAt.Add(e.cfg.LeaseTTL)
	l.run, l.fresh, l.unrecorded = r.ID, &r, &p.started
	if !e.d.begin(l) {
		return RunView{}, true, &errs.Error{Kind: errs.Unavailable, Code: "stopping", Message: "this server is stopping and starts no run",
			Hint: "send it again: to another node, or to this one once it has restarted", Op: "engine: start run"}
	}
	return runView(r, nil), true, nil
}

// RunView is a run's public view.
type RunView struct {
	ID          string         `json:"id"`
	Flow        string         `json:"flow"`
	FlowVersion int            `json:"flow_version"`
	Status      string         `json:"status"`
	Trigger     string         `json:"trigger"`
	Input       map[string]any `json:"input"`
	Output      any            `json:"output"`
	Error       *RunError      `json:"error,omitempty"`
	ParentRun   string         `json:"parent_run,omitempty"`
	ParentStep  string         `json:"parent_step,omitempty"`
	CreatedAt   time.Time      `json:"created_at"`
	StartedAt   *time.Time     `json:"started_at,omitempty"`
	FinishedAt  *time.Time     `json:"finished_at,omitempty"`
	Steps       []StepView     `json:"steps,omitempty"`
}

// RunError is why a run (or a step) failed.
type RunError struct {
	Step    string `json:"step,omitempty"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"`
	Status  int    `json:"status,omitempty"`
}

// StepView is one step checkpoint's public view.
type StepView struct {
	Path        string     `json:"path"`
	ID          string     `json:"id"`
	Kind        string     `json:"kind"`
	Status      string     `json:"status"`
	Attempts    int        `json:"attempts"`
	Output      any        `json:"output,omitempty"`
	Evidence    any        `json:"evidence,omitempty"`
	Error       *RunError  `json:"error,omitempty"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	FinishedAt  *time.Time `json:"finished_at,omitempty"`
	DurationMS  int64      `json:"duration_ms"`
	NextAttempt *time.Time `json:"next_attempt_at,omitempty"`
}

func decodeJSON(s string) any {
	if s == "" {
		return nil
	}
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return s
	}
	return v
}

func decodeError(s string) *RunError {
	if s == "" {
		return nil
	}
	var re RunError
	if err := json.Unmarshal([]byte(s), &re); err != nil {
		return &RunError{Code: "unknown", Message: s}
	}
	return &re
}

func runView(r store.Run, steps []store.Step) RunView {
	v := RunView{ID: r.ID, Flow: r.FlowName, FlowVersion: r.FlowVersion, Status: r.Status, Trigger: r.TriggerKind,
		Output: decodeJSON(r.Output), Error: decodeError(r.Error), ParentRun: r.ParentRunID, ParentStep: r.ParentStep,
		CreatedAt: r.CreatedAt, StartedAt: r.StartedAt, FinishedAt: r.FinishedAt}
	if in, ok := decodeJSON(r.Input).(map[string]any); ok {
		v.Input = in
	} else {
		v.Input = map[string]any{}
	}
	for _, s := range steps {
		v.Steps = append(v.Steps, StepView{Path: s.Path, ID: s.StepID, Kind: s.Kind, Status: s.Status, Attempts: s.Attempts,
			Output: decodeJSON(s.Output), Evidence: decodeJSON(s.Evidence), Error: decodeError(s.Error),
			StartedAt: s.StartedAt, FinishedAt: s.FinishedAt, DurationMS: s.DurationMS, NextAttempt: s.NextAttemptAt})
	}
	return v
}

// GetRun returns a run with every step checkpoint.
func (e *Engine) GetRun(ctx context.Context, id string) (RunView, error) {
	r, err := e.st.Run(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return RunView{}, notFound("run", id)
	} else if err != nil {
		return RunView{}, err
	}
	steps, err := e.st.Steps(ctx, id)
	if err != nil {
		return RunView{}, err
	}
	return runView(r, steps), nil
}

// RunFilter selects runs.
type RunFilter = store.RunFilter

// ListRuns returns runs, newest first (without steps).
func (e *Engine) ListRuns(ctx context.Context, f RunFilter) ([]RunView, error) {
	rows, err := e.st.ListRuns(ctx, f)
	if err != nil {
		return nil, err
	}
	out := []RunView{}
	for _, r := range rows {
		out = append(out, runView(r, nil))
	}
	return out, nil
}

// Wait waits until the run ends or ctx is done, and returns it. A run
// being advanced on this node hands its final view over when it ends; any
// other is read from the database (another node may finish it).
func (e *Engine) Wait(ctx context.Context, id string) (RunView, error) {
	for first := true; ; first = false {
		ch, unsubscribe := e.subscribe(id)
		var v RunView
		if first && e.d.advancing(id) && !e.justEnded(id) {
			v.ID, v.Status = id, StatusRunning
		} else {
			var err error
			v, err = e.GetRun(ctx, id)
			if errs.KindOf(err) == errs.NotFound && e.d.advancing(id) {
				// Run in memory (durability: none), not recorded yet.
				v, err = RunView{ID: id, Status: StatusRunning}, nil
			}
			if err != nil || terminal(v.Status) {
				unsubscribe()
				return v, err
			}
		}
		t := time.NewTimer(500 * time.Millisecond) // another node may finish it
		select {
		case done, ok := <-ch:
			if ok {
				t.Stop()
				unsubscribe()
				return done, nil
			}
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			unsubscribe()
			if v.Flow == "" {
				// Not read yet: the caller gets the run as it stands.
				return e.GetRun(context.WithoutCancel(ctx), id)
			}
			return v, nil
		}
		t.Stop()
		unsubscribe()
	}
}

// Cancel asks a run to stop. A queued or sleeping run is cancelled at once;
// a running one stops after its current step.
func (e *Engine) Cancel(ctx context.Context, actor audit.Actor, id string) (RunView, error) {
	// Cancelling locks the run and then its sub-runs, while a finishing
	// sub-run locks itself and then its parent: on PostgreSQL the two can
	// deadlock, and the database rolls one back. The cancel is then run
	// again as a whole (it changed nothing).
	if err := store.RetryOnDeadlock(func() error { return e.cancelOnce(ctx, actor, id) }); err != nil {
		return RunView{}, err
	}
	return e.GetRun(ctx, id)
}

func (e *Engine) cancelOnce(ctx context.Context, actor audit.Actor, id string) error {
	return e.st.InTx(ctx, func(tx *store.Tx) error {
		r, err := tx.RunForUpdate(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return notFound("run", id)
		} else if err != nil {
			return err
		}
		if terminal(r.Status) {
			return conflict("run_finished", fmt.Sprintf("run %s already %s", id, r.Status), "nothing to cancel")
		}
		r.CancelRequested = true
		r.UpdatedAt = e.clock.Now()
		if err := tx.UpdateRun(ctx, r); err != nil {
			return err
		}
		// Its sub-runs, and theirs, stop with it (their rows are locked
		// before the audit chain's head: cancelTree).
		if err := e.cancelTree(ctx, tx, actor, id); err != nil {
			return err
		}
		if _, err := e.audit.Append(ctx, tx, audit.Entry{Actor: actor, Action: "run.cancel", Target: "run/" + id, Details: map[string]any{"flow": r.FlowName, "status": r.Status}}); err != nil {
			return err
		}
		// Wake the run so that a sleeping one is cancelled now.
		return e.wakeTx(ctx, tx, id)
	})
}

// Retry restarts a failed run from its failed step: the failed (and
// cancelled) checkpoints are forgotten, the completed ones kept.
func (e *Engine) Retry(ctx context.Context, actor audit.Actor, id string) (RunView, error) {
	err := e.st.InTx(ctx, func(tx *store.Tx) error {
		r, err := tx.RunForUpdate(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return notFound("run", id)
		} else if err != nil {
			return err
		}
		if r.Status != StatusFailed && r.Status != StatusCancelled {
			return conflict("run_not_failed", fmt.Sprintf("run %s is %s: only failed or cancelled runs can be retried", id, r.Status), "wait for it to end, or cancel it first")
		}
		if err := tx.DeleteSteps(ctx, id, StepFailed, StepCancelled, StepRunning); err != nil {
			return err
		}
		// on_error steps ran for the failure being retried; forget them too.
		if err := tx.DeleteStepsWithPrefix(ctx, id, onErrorPrefix); err != nil {
			return err
		}
		prev := r.Status
		r.Status, r.Error, r.Output, r.FinishedAt, r.CancelRequested = StatusQueued, "", "", nil, false
		r.UpdatedAt = e.clock.Now()
		if err := tx.UpdateRun(ctx, r); err != nil {
			return err
		}
		if _, err := e.audit.Append(ctx, tx, audit.Entry{Actor: actor, Action: "run.retry", Target: "run/" + id, Details: map[string]any{"flow": r.FlowName, "previous_status": prev}}); err != nil {
			return err
		}
		return e.wakeTx(ctx, tx, id)
	})
	if err != nil {
		return RunView{}, err
	}
	return e.GetRun(ctx, id)
}

func (e *Engine) newWebhookSecret(head *store.Flow) error {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return fmt.Errorf("engine: generate webhook secret: %w", err)
	}
	secret := []byte(hex.EncodeToString(b))
	sealed, kek, err := e.trust.SealSecret(secret, webhookAAD(head.Name))
	clear(secret)
	if err != nil {
		return err
	}
	head.WebhookSecret, head.KEKID = sealed, kek
	return nil
}

func webhookAAD(flow string) []byte { return store.WebhookSecretAAD(flow) }

// WebhookSecret returns the HMAC secret of a flow with an hmac webhook
// trigger; reading it is audited.
func (e *Engine) WebhookSecret(ctx context.Context, actor audit.Actor, name string) (string, error) {
	head, err := e.st.FlowByName(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return "", notFound("flow", name)
	} else if err != nil {
		return "", err
	}
	if len(head.WebhookSecret) == 0 {
		return "", conflict("no_webhook_secret", fmt.Sprintf("flow %q has no HMAC webhook trigger", name), "set trigger: {webhook: {auth: hmac}}")
	}
	raw, err := e.trust.OpenSecret(head.WebhookSecret, webhookAAD(name))
	if err != nil {
		return "", err
	}
	if err := e.audit.Record(ctx, audit.Entry{Actor: actor, Action: "flow.webhook_secret.read", Target: "flow/" + name}); err != nil {
		return "", err
	}
	return string(raw), nil
}
