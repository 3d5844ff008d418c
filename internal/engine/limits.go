package engine

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/flow"
	"github.com/trustflow/trustflow/internal/store"
)

// Defaults of the server's run limits (Limits).
const (
	DefaultSubflowDepth    = 8
	DefaultForeachItems    = 10_000
	DefaultStepOutputBytes = 1 << 20
	DefaultRunStateBytes   = 16 << 20
	DefaultRunDuration     = 30 * 24 * time.Hour
	DefaultRunsInFlight    = 100
)

// Limits are the server's limits on runs. They are the limits of every
// flow that sets none, and caps: a flow's limits block may only lower them
// (apply refuses a value over the server's). Zero fields mean the default.
type Limits struct {
	// SubflowDepth is how many levels of sub-flow runs may nest below a
	// run, counted across flows (a → b → a counts 2). Defaults to 8.
	SubflowDepth int
	// ForeachItems is the most items one foreach step iterates over.
	// Defaults to 10,000.
	ForeachItems int
	// StepOutputBytes bounds a step's result as stored (JSON), and a run's
	// output. Defaults to 1 MiB.
	StepOutputBytes int64
	// RunStateBytes bounds what one run's checkpoints hold: results,
	// states and errors, counted in clear. Defaults to 16 MiB.
	RunStateBytes int64
	// RunDuration bounds a run from its start to its end, sleeps
	// included. Defaults to 30 days.
	RunDuration time.Duration
	// RunsInFlight is the most runs of one flow queued, running or
	// sleeping at once; a start over it is refused. Defaults to 100.
	RunsInFlight int
}

// withDefaults fills the zero fields.
func (l Limits) withDefaults() Limits {
	if l.SubflowDepth <= 0 {
		l.SubflowDepth = DefaultSubflowDepth
	}
	if l.ForeachItems <= 0 {
		l.ForeachItems = DefaultForeachItems
	}
	if l.StepOutputBytes <= 0 {
		l.StepOutputBytes = DefaultStepOutputBytes
	}
	if l.RunStateBytes <= 0 {
		l.RunStateBytes = DefaultRunStateBytes
	}
	if l.RunDuration <= 0 {
		l.RunDuration = DefaultRunDuration
	}
	if l.RunsInFlight <= 0 {
		l.RunsInFlight = DefaultRunsInFlight
	}
	return l
}

// of returns the limits of a flow's runs: the server's, lowered by the
// flow's limits block.
func (l Limits) of(d *flow.Document) Limits {
	lower := func(cur int64, v int64) int64 {
		if v > 0 && v < cur {
			return v
		}
		return cur
	}
	fl := d.Limits
	l.SubflowDepth = int(lower(int64(l.SubflowDepth), fl.SubflowDepth))
	l.ForeachItems = int(lower(int64(l.ForeachItems), fl.ForeachItems))
	l.StepOutputBytes = lower(l.StepOutputBytes, fl.StepOutputBytes)
	l.RunStateBytes = lower(l.RunStateBytes, fl.RunStateBytes)
	l.RunsInFlight = int(lower(int64(l.RunsInFlight), fl.RunsInFlight))
	return l
}

// caps maps each key of the limits block to the server's value and the
// serve flag that sets it.
func (l Limits) caps() map[string]struct {
	value int64
	flag  string
} {
	return map[string]struct {
		value int64
		flag  string
	}{
		flow.LimitSubflowDepth:    {int64(l.SubflowDepth), "--max-subflow-depth"},
		flow.LimitForeachItems:    {int64(l.ForeachItems), "--max-foreach-items"},
		flow.LimitStepOutputBytes: {l.StepOutputBytes, "--max-step-output"},
		flow.LimitRunStateBytes:   {l.RunStateBytes, "--max-run-state"},
		flow.LimitRunsInFlight:    {int64(l.RunsInFlight), "--max-runs-in-flight"},
	}
}

// limits are the limits of this run's flow.
func (x *execution) limits() Limits { return x.e.cfg.Limits.of(x.doc) }

// limitFailure is a step or run failure for a reached limit: its code is
// limit_<name>.
func limitFailure(step string, e *errs.Error) *RunError {
	return &RunError{Step: step, Code: "limit_" + e.Code, Message: e.Message, Hint: e.Hint}
}

// formatDuration writes a duration in whole days when it is whole days.
func formatDuration(d time.Duration) string {
	if d >= 24*time.Hour && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

// checkLimits reports, for apply, what in a document goes over the
// server's limits: a limits block asking for more than the server allows,
// a settings.timeout or a literal sleep longer than a run may last, a
// literal foreach list over the item limit.
func (e *Engine) checkLimits(file string, d *flow.Document) []flow.Problem {
	var out []flow.Problem
	server := e.cfg.Limits
	caps := server.caps()
	for _, key := range flow.LimitKeys {
		v := d.Limits.Get(key)
		c := caps[key]
		if v > c.value {
			line, col := d.Limits.Pos(key)
			out = append(out, flow.Problem{File: file, Line: line, Column: col, Path: "limits." + key,
				Message: fmt.Sprintf("%d is over this server's limit of %d (limit %s: %d)", v, c.value, key, c.value),
				Hint:    fmt.Sprintf("a flow may only lower the server's limits: write at most %d, or start the servers with a larger %s", c.value, c.flag)})
		}
	}
	if t := d.Settings.Timeout; t > server.RunDuration {
		out = append(out, flow.Problem{File: file, Path: "settings.timeout",
			Message: fmt.Sprintf("a timeout of %s is longer than a run may last on this server (limit run_duration: %s)", formatDuration(t), formatDuration(server.RunDuration)),
			Hint:    fmt.Sprintf("write at most %s, or start the servers with a larger --max-run-duration", formatDuration(server.RunDuration))})
	}
	lim := server.of(d)
	longest, what := lim.RunDuration, "a run may last on this server (limit run_duration: "+formatDuration(lim.RunDuration)+")"
	if t := d.Settings.Timeout; t > 0 && t < longest {
		longest, what = t, "the flow's settings.timeout ("+formatDuration(t)+")"
	}
	_ = d.Walk(func(path string, s *flow.Step) error { // the callback never fails
		switch {
		case s.Kind == flow.KindSleep && s.SleepFor > longest:
			out = append(out, flow.Problem{File: file, Line: s.Line, Column: s.Column, Path: path + ".sleep",
				Message: fmt.Sprintf("a sleep of %s is longer than %s", formatDuration(s.SleepFor), what),
				Hint:    "sleep for less; a longer wait is better started again by a schedule"})
		case s.Kind == flow.KindForeach && s.Foreach != nil:
			if v, ok := s.Foreach.Literal(); ok {
				if items, ok := v.([]any); ok && len(items) > lim.ForeachItems {
					out = append(out, flow.Problem{File: file, Line: s.Line, Column: s.Column, Path: path + ".foreach",
						Message: fmt.Sprintf("%d items are more than one foreach may take (limit foreach_items: %d)", len(items), lim.ForeachItems),
						Hint:    "split the list over several steps or runs"})
				}
			}
		}
		return nil
	})
	return out
}

// checkCycles refuses sub-flow calls that make a cycle: a flow that runs
// itself through others (a → b → a) would recurse until the depth limit
// stops it. The graph is the documents being applied and the current
// versions of the other stored flows.
func (e *Engine) checkCycles(ctx context.Context, files []string, docs []*flow.Document) ([]flow.Problem, error) {
	calls := map[string][]string{}
	batch := map[string]int{}
	for i, d := range docs {
		if d != nil {
			calls[d.Name] = d.SubFlows()
			batch[d.Name] = i
		}
	}
	heads, err := e.st.ListFlows(ctx)
	if err != nil {
		return nil, err
	}
	for _, h := range heads {
		if _, ok := batch[h.Name]; ok {
			continue
		}
		d, err := e.document(ctx, h.Name, h.CurrentVersion)
		if err != nil {
			return nil, err
		}
		calls[h.Name] = d.SubFlows()
	}
	var out []flow.Problem
	for i, d := range docs {
		if d == nil {
			continue
		}
		// One problem per calling step whose callee leads back here.
		_ = d.Walk(func(path string, s *flow.Step) error { // the callback never fails
			if s.Kind != flow.KindFlowRun {
				return nil
			}
			cycle := pathBack(calls, s.SubFlow, d.Name)
			if cycle == nil {
				return nil
			}
			chain := append([]string{d.Name}, cycle...)
			out = append(out, flow.Problem{File: files[i], Line: s.Line, Column: s.Column, Path: path + ".flow",
				Message: fmt.Sprintf("%s: sub-flows that run each other would recurse without end", strings.Join(chain, " → ")),
				Hint:    "remove the call that closes the cycle; repeat work with foreach instead"})
			return nil
		})
	}
	return out, nil
}

// pathBack returns the flows from from to to along calls (both included),
// or nil when to cannot be reached.
func pathBack(calls map[string][]string, from, to string) []string {
	seen := map[string]bool{}
	var walk func(name string) []string
	walk = func(name string) []string {
		if name == to {
			return []string{to}
		}
		if seen[name] {
			return nil
		}
		seen[name] = true
		for _, next := range calls[name] {
			if rest := walk(next); rest != nil {
				return append([]string{name}, rest...)
			}
		}
		return nil
	}
	return walk(from)
}

// checkStart refuses a start over the flow's runs-in-flight limit, or a
// sub-run nested deeper than the sub-flow depth allows, for the flow's own
// limit and every calling run's.
// runCounter counts a flow's runs: a transaction, or the store itself for
// a run that starts in memory.
type runCounter interface {
	CountRuns(ctx context.Context, flow string, statuses ...string) (int, error)
}

func (e *Engine) checkStart(ctx context.Context, tx runCounter, name string, d *flow.Document, parent string) error {
	lim := e.cfg.Limits.of(d)
	n, err := tx.CountRuns(ctx, name, StatusQueued, StatusRunning, StatusSleeping)
	if err != nil {
		return err
	}
	if n >= lim.RunsInFlight {
		le := errs.LimitReached("runs_in_flight", int64(lim.RunsInFlight), fmt.Sprintf("flow %s already has %d %s queued, running or sleeping", name, n, plural(n, "run", "runs")),
			"wait for some to end, or cancel them (`trustflow run list --flow "+name+"`); a flow's limits.runs_in_flight may lower the limit, the server's --max-runs-in-flight raise it")
		le.Op = "engine: start run"
		return le
	}
	chain := []string{name}
	for depth, pid := 1, parent; pid != ""; depth++ {
		r, err := e.st.Run(ctx, pid)
		if err != nil {
			return fmt.Errorf("engine: start run of %s: its calling run %s: %w", name, pid, err)
		}
		chain = append(chain, r.FlowName)
		pd, err := e.document(ctx, r.FlowName, r.FlowVersion)
		if err != nil {
			return err
		}
		if max := e.cfg.Limits.of(pd).SubflowDepth; depth > max {
			slices.Reverse(chain)
			le := errs.LimitReached("subflow_depth", int64(max), fmt.Sprintf("flow %s would run %d levels of sub-flows below run %s of %s: %s",
				name, depth, r.ID, r.FlowName, strings.Join(chain, " → ")),
				"flows that run each other never end; break the cycle. A flow's limits.subflow_depth may lower the limit, the server's --max-subflow-depth raise it")
			le.Op = "engine: start run"
			return le
		}
		pid = r.ParentRunID
	}
	return nil
}

// outputOver says whether a finished step's result is over the step output
// limit: the step fails (its stored output is kept truncated, with a flag
// saying so). A foreach's result, made of its iterations' results (each
// within the limit and checkpointed), is stored truncated without failing.
func (x *execution) outputOver(s *flow.Step, cp store.Step) *RunError {
	lim := x.limits().StepOutputBytes
	if int64(len(cp.Output)) <= lim || s.Kind == flow.KindForeach {
		return nil
	}
	le := errs.LimitReached("step_output", lim, fmt.Sprintf("the step's result is %d bytes", len(cp.Output)),
		"return less (a call's max_response_bytes keeps a truncated body; a set step can pick fields); a flow's limits.step_output_bytes may lower the limit, the server's --max-step-output raise it")
	return limitFailure(cp.Path, le)
}

// previewBytes is how much of a result over the step output limit is kept.
const previewBytes = 16 << 10

// truncated is what is stored of a result over the step output limit: its
// size and the start of its text.
func truncated(output string, limit int64) map[string]any {
	n := min(int64(len(output)), min(previewBytes, limit/2))
	return map[string]any{"truncated": true, "size": len(output), "preview": output[:n]}
}

// stateSize is what a checkpoint counts towards the run's state: its
// result, state and error, what a resumed run reads back. (Evidence, a
// call's handshake, is bounded by the handshake and repeated in the
// result's tls.)
func stateSize(cp store.Step) int64 {
	return int64(len(cp.Output) + len(cp.State) + len(cp.Error))
}

// stateOver says whether checkpointing cp would take the run's state over
// its limit. Failed and cancelled checkpoints always fit: they say why.
func (x *execution) stateOver(cp store.Step) *RunError {
	if cp.Status == StepFailed || cp.Status == StepCancelled {
		return nil
	}
	lims := x.limits()
	lim := lims.StepOutputBytes
	if int64(len(cp.Output)) > lim {
		// Stored truncated (a foreach's results).
		cp.Output = encode(truncated(cp.Output, lim))
	}
	lim = lims.RunStateBytes
	x.mu.Lock()
	prev, total := x.cps[cp.Path], x.stateBytes
	x.mu.Unlock()
	next := total - stateSize(prev) + stateSize(cp)
	if next <= lim || next <= total {
		return nil
	}
	le := errs.LimitReached("run_state", lim, fmt.Sprintf("the run's checkpoints would hold %d bytes", next),
		"keep less in step results (pick fields with a set step, page through large lists in sub-flows); a flow's limits.run_state_bytes may lower the limit, the server's --max-run-state raise it")
	return limitFailure(cp.Path, le)
}

// startedAt is when the run started.
func (x *execution) startedAt() time.Time {
	if x.run.StartedAt != nil {
		return *x.run.StartedAt
	}
	return x.run.CreatedAt
}

// overDuration says whether the run has lasted longer than the server
// allows (settings.timeout, when shorter, is checked as run_timeout).
func (x *execution) overDuration(now time.Time) *RunError {
	lim := x.limits().RunDuration
	if x.run.StartedAt == nil || now.Sub(*x.run.StartedAt) <= lim || x.run.Error != "" {
		return nil
	}
	return limitFailure("", durationLimit(lim, fmt.Sprintf("the run has lasted longer than %s", formatDuration(lim)),
		"finish sooner; a longer wait is better started again by a schedule; the server's --max-run-duration sets the limit"))
}

// sleepOver says whether a sleep until until would end after the run may
// last.
func (x *execution) sleepOver(path string, until time.Time) *RunError {
	lim := x.limits().RunDuration
	end := x.startedAt().Add(lim)
	if !until.After(end) {
		return nil
	}
	return limitFailure(path, durationLimit(lim, fmt.Sprintf("a sleep until %s would end after the run may last (%s from its start: %s)",
		until.UTC().Format(time.RFC3339), formatDuration(lim), end.UTC().Format(time.RFC3339)),
		"sleep for less; a longer wait is better started again by a schedule"))
}

// durationLimit is the error of the run_duration limit.
func durationLimit(lim time.Duration, msg, hint string) *errs.Error {
	return &errs.Error{Kind: errs.Limit, Code: "run_duration", Message: fmt.Sprintf("%s (limit run_duration: %s)", msg, formatDuration(lim)), Hint: hint}
}

// foreachOver says whether a foreach's list is over the item limit.
func (x *execution) foreachOver(path string, n int) *RunError {
	lim := x.limits().ForeachItems
	if n <= lim {
		return nil
	}
	le := errs.LimitReached("foreach_items", int64(lim), fmt.Sprintf("the list has %d items", n),
		"split the list over several steps or runs (a sub-flow per page); a flow's limits.foreach_items may lower the limit, the server's --max-foreach-items raise it")
	return limitFailure(path, le)
}

// exprLimit gives an expression failure over a limit of the expression
// language its own code.
func exprLimit(rerr *RunError, err error) *RunError {
	switch {
	case errors.Is(err, flow.ErrMemoryLimit):
		rerr.Code = "limit_expression_memory"
	case errors.Is(err, flow.ErrCostLimit):
		rerr.Code = "limit_expression_cost"
	case errors.Is(err, flow.ErrResultLimit):
		rerr.Code = "limit_expression_result"
	}
	return rerr
}

// foreachResult rebuilds a foreach's result from its iterations'
// checkpoints, for a run resumed after its stored result was kept
// truncated.
func (x *execution) foreachResult(cp store.Step) (any, bool) {
	s := x.doc.Step(cp.StepID)
	st := readState(cp)
	if s == nil || !st.Looped {
		return nil, false
	}
	results := make([]any, len(st.Items))
	for i := range st.Items {
		iter := map[string]any{}
		for _, b := range s.Body {
			if c, ok := x.checkpoint(fmt.Sprintf("%s[%d].%s", cp.Path, i, b.ID)); ok && completed(c) {
				iter[b.ID] = x.result(c)
			}
		}
		results[i] = iter
	}
	return map[string]any{"results": results}, true
}

// workSlots bounds how many steps of one node evaluate their expressions
// and build their results at once, whatever the runs and their foreach
// concurrency: each may build up to a few times the step output limit,
// and the node has only so many cores to build with. A call gives its
// slot back while it waits for the server. Steps that hold other steps
// (if, switch, foreach) take none, so a slot never waits for another.
type workSlots chan struct{}

// newWorkSlots makes four slots per core, at least 8.
func newWorkSlots() workSlots { return make(workSlots, max(8, 4*runtime.GOMAXPROCS(0))) }

// take waits for a slot; false when ctx ends first.
func (w workSlots) take(ctx context.Context) bool {
	select {
	case w <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

// takeAlways waits for a slot (the holders give theirs back when their
// step ends).
func (w workSlots) takeAlways() { w <- struct{}{} }

// give returns a slot.
func (w workSlots) give() { <-w }

// leafStep says whether a step kind runs no other steps.
func leafStep(kind string) bool {
	return kind != flow.KindIf && kind != flow.KindSwitch && kind != flow.KindForeach
}

// minAnswerBudget is the least a node keeps for call requests and answers.
const minAnswerBudget = 32 << 20

// answerBudget bounds the bytes of call requests and answers one node
// holds at once: a call reserves its request body and the most of its
// answer it will read (max_response_bytes, at most the step output
// limit) from it before it is sent, and gives it back when the step ends.
// Calls beyond it wait for room. The budget is 64 MiB or four step
// outputs, whichever is more; a call reserving more takes all of it.
type answerBudget struct {
	size int64
	sem  *semaphore.Weighted
}

func newAnswerBudget(l Limits) *answerBudget {
	size := max(int64(minAnswerBudget), 4*l.StepOutputBytes)
	return &answerBudget{size: size, sem: semaphore.NewWeighted(size)}
}

// take reserves n bytes (at most the whole budget); false when ctx ends
// first.
func (b *answerBudget) take(ctx context.Context, n int64) (int64, bool) {
	n = min(max(n, 1), b.size)
	if err := b.sem.Acquire(ctx, n); err != nil {
		return 0, false
	}
	return n, true
}

// give returns what take reserved.
func (b *answerBudget) give(n int64) { b.sem.Release(n) }

// heldRetry is how soon a run that found the node holding all the run
// state it may tries again.
const heldRetry = time.Second

// heldBudget is how much run state one node holds at once: four runs at
// the run state limit.
func heldBudget(l Limits) int64 { return 2 * l.RunStateBytes }

// heldState bounds the run state (stateSize, as stored; a run in memory
// holds about twice that) the executions of one node hold at once. A run
// is taken up only while the node has room for what it holds, unless
// nothing else runs; a run that holds more than its share when the node
// is over the budget yields at its next step (it resumes from its
// checkpoints, on this node or another, when there is room).
type heldState struct {
	mu            sync.Mutex
	budget, total int64
	active        int
}

// enter takes up an execution holding n bytes; false when there is no
// room for it.
func (h *heldState) enter(n int64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.active > 0 && h.total+n > h.budget {
		return false
	}
	h.active++
	h.total += n
	return true
}

// grow adds n bytes to what the node holds.
func (h *heldState) grow(n int64) {
	h.mu.Lock()
	h.total += n
	h.mu.Unlock()
}

// leave ends an execution that held n bytes.
func (h *heldState) leave(n int64) {
	h.mu.Lock()
	h.active--
	h.total -= n
	h.mu.Unlock()
}

// over says whether an execution holding n bytes should yield: the node
// is over its budget and this one holds more than its share.
func (h *heldState) over(n int64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.active > 1 && h.total > h.budget && n > h.budget/int64(h.active)
}

// account records cp's size in the run's state and the node's (x.mu
// held).
func (x *execution) account(cp store.Step) {
	delta := stateSize(cp) - stateSize(x.cps[cp.Path])
	x.stateBytes += delta
	x.e.held.grow(delta)
}

// crowded says whether this run should yield for the node's run state.
func (x *execution) crowded() bool {
	x.mu.Lock()
	n := x.stateBytes
	x.mu.Unlock()
	return x.e.held.over(n)
}

// leave gives back what this execution held.
func (x *execution) leave() {
	x.mu.Lock()
	n := x.stateBytes
	x.mu.Unlock()
	x.e.held.leave(n)
}

// plural picks the word for n.
func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
