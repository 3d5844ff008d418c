package flow

import (
	"slices"
	"time"
)

// Defaults and limits of the flow language.
const (
	APIVersion = "trustflow/v1" // the only apiVersion Parse accepts
	KindFlow   = "Flow"         // the only kind Parse accepts

	MaxDocumentBytes   = 1 << 20   // a flow document's size limit
	MaxSteps           = 1000      // steps in one flow, nested and on_error included
	MaxDepth           = 16        // nesting depth of step lists; top-level steps are at depth 1
	MaxExpressions     = 10000     // ${...} expressions and conditions in one flow
	MaxExpressionBytes = 256 << 10 // their text, in bytes
	MaxInputBytes      = 1 << 20   // a run's input, JSON-encoded

	DefaultCallTimeout      = 30 * time.Second // a call's per-attempt timeout
	DefaultMaxResponseBytes = 10 << 20         // a call's response body limit
	MaxMaxResponseBytes     = 100 << 20        // the largest max_response_bytes accepted
	DefaultLoopVariable     = "item"           // foreach's `as`
	MaxForeachConcurrency   = 64               // foreach's largest concurrency
	MaxRetryAttempts        = 100              // retry.max_attempts' largest value
	MaxBackoff              = 24 * time.Hour   // retry backoffs' largest value
	MaxRetryMultiplier      = 10.0             // retry.multiplier's largest value
	MinScheduleInterval     = time.Second      // the shortest @every a schedule takes
)

// Step kinds.
const (
	KindCall    = "call"
	KindSet     = "set"
	KindIf      = "if"
	KindSwitch  = "switch"
	KindForeach = "foreach"
	KindSleep   = "sleep"
	KindFlowRun = "flow"
	KindFail    = "fail"
)

// Trigger kinds.
const (
	TriggerManual   = "manual"
	TriggerSchedule = "schedule"
	TriggerWebhook  = "webhook"
	TriggerEvent    = "event"
)

// Webhook authentication modes.
const (
	WebhookToken = "token"
	WebhookHMAC  = "hmac"
)

// Input types.
const (
	TypeString  = "string"
	TypeNumber  = "number"
	TypeInteger = "integer"
	TypeBoolean = "boolean"
	TypeObject  = "object"
	TypeArray   = "array"
)

// Document is a parsed, validated flow document. It is immutable once
// Parse returns it and safe for concurrent use.
type Document struct {
	APIVersion, Kind, Name, Description string
	Trigger                             Trigger
	// Inputs are in document order.
	Inputs []Input
	// InputDeclared is true when the document has an input section. Without
	// one, a run accepts any input and expressions read it untyped.
	InputDeclared bool
	Settings      Settings
	// Limits lower the server's run limits for this flow's runs.
	Limits Limits
	Steps  []*Step
	// Output is nil when the document has none.
	Output  *Value
	OnError []*Step
	// Source is the document as given to Parse.
	Source []byte
	// Digest is the hex SHA-256 of a canonical JSON encoding of the document's
	// data: comments, whitespace, quoting, key order and YAML-or-JSON do not
	// change it; any change of a value does.
	Digest string
}

// Trigger says what starts a run. Exactly one kind is set.
type Trigger struct {
	// Kind is manual, schedule, webhook or event.
	Kind string
	// Cron is the schedule's standard 5-field cron expression (or a
	// descriptor such as @daily); Timezone its IANA zone, default "UTC".
	Cron, Timezone string
	// WebhookAuth is token (the default) or hmac.
	WebhookAuth string
	// EventType is the lifecycle event, e.g. identity.expiring.
	EventType string
}

// Input declares one field of a run's input.
type Input struct {
	Name string
	// Type is string (the default), number, integer, boolean, object or array.
	Type     string
	Required bool
	// Default is used when the field is absent; HasDefault tells a null
	// default from none.
	Default     any
	HasDefault  bool
	Description string
	// Secret inputs are redacted wherever runs are stored or shown.
	Secret bool
}

// Settings bound the runs of a flow.
type Settings struct {
	// Concurrency is the most runs of this flow at once; 0 means unlimited.
	Concurrency int
	// Timeout bounds a whole run; 0 means none.
	Timeout time.Duration
	// Durability is DurabilityDurable (the default: the run is recorded
	// when it starts and checkpointed at every step) or DurabilityNone (it
	// runs in memory and is recorded once, when it ends or first waits).
	Durability string
}

// Durability settings (settings.durability).
const (
	DurabilityDurable = "durable"
	DurabilityNone    = "none"
)

// InMemory reports whether runs of the flow run in memory until they end
// (settings.durability: none).
func (s Settings) InMemory() bool { return s.Durability == DurabilityNone }

// Limits lower the server's limits for the runs of one flow (the limits:
// block). A zero field means the server's limit. Parse checks that each
// is a positive whole number; the server refuses, at apply, a value over
// its own limit.
type Limits struct {
	// SubflowDepth is how many levels of sub-flow runs a run of this flow
	// may have below it.
	SubflowDepth int64
	// ForeachItems is the most items one foreach step iterates over.
	ForeachItems int64
	// StepOutputBytes bounds one step's stored result, JSON-encoded.
	StepOutputBytes int64
	// RunStateBytes bounds what a run's checkpoints hold: its step
	// results, states and errors.
	RunStateBytes int64
	// RunsInFlight is the most runs of this flow queued, running or
	// sleeping at once; a start over it is refused.
	RunsInFlight int64
	// pos holds the line and column of each key given.
	pos map[string][2]int
}

// Limit keys, as written in the limits: block.
const (
	LimitSubflowDepth    = "subflow_depth"
	LimitForeachItems    = "foreach_items"
	LimitStepOutputBytes = "step_output_bytes"
	LimitRunStateBytes   = "run_state_bytes"
	LimitRunsInFlight    = "runs_in_flight"
)

// LimitKeys are the keys of the limits: block, in the order they are
// documented.
var LimitKeys = []string{LimitSubflowDepth, LimitForeachItems, LimitStepOutputBytes, LimitRunStateBytes, LimitRunsInFlight}

// Get returns the value of a limit key (0 when not given).
func (l Limits) Get(key string) int64 {
	switch key {
	case LimitSubflowDepth:
		return l.SubflowDepth
	case LimitForeachItems:
		return l.ForeachItems
	case LimitStepOutputBytes:
		return l.StepOutputBytes
	case LimitRunStateBytes:
		return l.RunStateBytes
	case LimitRunsInFlight:
		return l.RunsInFlight
	}
	return 0
}

// Pos returns the line and column of a limit key's value in the document;
// 0, 0 when the key was not given.
func (l Limits) Pos(key string) (line, column int) {
	p := l.pos[key]
	return p[0], p[1]
}

// Step is one step; which fields are set depends on Kind.
type Step struct {
	ID string
	// Kind is call, set, if, switch, foreach, sleep, flow or fail.
	Kind string
	// Line and Column locate the step in the document.
	Line, Column int
	// If is the guard (false: the step is skipped); for kind if, the condition.
	// Nil when absent.
	If *Expr
	// Retry has its defaults filled in (1 attempt, 1s, 1m, 2).
	Retry Retry
	// Timeout bounds one attempt; 0 means the kind's default (see
	// AttemptTimeout).
	Timeout         time.Duration
	ContinueOnError bool

	// Call is set for kind call.
	Call *Call
	// Set and SetKeys (document order) are set for kind set.
	Set     map[string]*Value
	SetKeys []string
	// Then and Else are set for kind if.
	Then, Else []*Step
	// Cases, Default and HasDefault are set for kind switch.
	Cases      []Case
	Default    []*Step
	HasDefault bool
	// Foreach (the list), As (default "item"), Concurrency (1..64, default 1)
	// and Body are set for kind foreach.
	Foreach     *Value
	As          string
	Concurrency int
	Body        []*Step
	// SleepFor (a fixed duration) or SleepUntil (a timestamp) is set for
	// kind sleep.
	SleepFor   time.Duration
	SleepUntil *Value
	// SubFlow (a flow name) and SubInput (nil when absent) are set for kind
	// flow.
	SubFlow  string
	SubInput *Value
	// FailMessage and FailCode (nil when absent) are set for kind fail.
	FailMessage, FailCode *Value
}

// AttemptTimeout is the timeout of one attempt of the step: Timeout, or the
// kind's default when Timeout is 0 (DefaultCallTimeout for call, none for
// the other kinds).
func (s *Step) AttemptTimeout() time.Duration {
	if s.Timeout == 0 && s.Kind == KindCall {
		return DefaultCallTimeout
	}
	return s.Timeout
}

// Call is an HTTP request through a named connector.
type Call struct {
	Connector string
	// Method is an HTTP method, default GET.
	Method string
	// Path is joined to the connector's base URL.
	Path *Value
	// Query and Headers are nil when absent.
	Query   map[string]*Value
	Headers map[string]*Value
	// Body is nil when absent.
	Body *Value
	// Expect lists the statuses that count as success; empty means any 2xx.
	Expect []int
	// MaxResponseBytes bounds the response body kept; default 10 MiB.
	MaxResponseBytes int64
}

// Accepts reports whether a response status counts as success.
func (c *Call) Accepts(status int) bool {
	if len(c.Expect) == 0 {
		return status >= 200 && status <= 299
	}
	return slices.Contains(c.Expect, status)
}

// Retry says how often a failed step is tried again.
type Retry struct {
	// MaxAttempts counts the first try; default 1 (no retry).
	MaxAttempts int
	// InitialBackoff (default 1s) grows by Multiplier (default 2) after each
	// attempt, up to MaxBackoff (default 1m, or InitialBackoff when larger).
	InitialBackoff, MaxBackoff time.Duration
	Multiplier                 float64
}

// Backoff is the wait before attempt n+1 after attempt n failed (n >= 1),
// before jitter: InitialBackoff * Multiplier^(n-1), capped at MaxBackoff.
func (r Retry) Backoff(n int) time.Duration {
	d := float64(r.InitialBackoff)
	for i := 1; i < n && d < float64(r.MaxBackoff); i++ {
		d *= r.Multiplier
	}
	if d > float64(r.MaxBackoff) {
		return r.MaxBackoff
	}
	return time.Duration(d)
}

// Case is one branch of a switch step.
type Case struct {
	When  *Expr
	Steps []*Step
}

// Walk calls fn for every step, nested ones included, in document order
// (steps, then on_error), with its step path: the ids of the enclosing steps
// and the step's own, joined with dots (e.g. groups.remove). It stops at the
// first error fn returns and returns it.
func (d *Document) Walk(fn func(path string, s *Step) error) error {
	var err error
	d.visit(func(path string, s *Step) bool {
		err = fn(path, s)
		return err == nil
	})
	return err
}

// visit calls fn like Walk does until fn returns false.
func (d *Document) visit(fn func(path string, s *Step) bool) {
	if visitSteps("", d.Steps, fn) {
		visitSteps("", d.OnError, fn)
	}
}

func visitSteps(prefix string, steps []*Step, fn func(string, *Step) bool) bool {
	for _, s := range steps {
		path := s.ID
		if prefix != "" {
			path = prefix + "." + s.ID
		}
		if !fn(path, s) {
			return false
		}
		for _, list := range s.children() {
			if !visitSteps(path, list, fn) {
				return false
			}
		}
	}
	return true
}

// children returns the step lists nested in s, in document order.
func (s *Step) children() [][]*Step {
	switch s.Kind {
	case KindIf:
		return [][]*Step{s.Then, s.Else}
	case KindSwitch:
		lists := make([][]*Step, 0, len(s.Cases)+1)
		for _, c := range s.Cases {
			lists = append(lists, c.Steps)
		}
		if s.HasDefault {
			lists = append(lists, s.Default)
		}
		return lists
	case KindForeach:
		return [][]*Step{s.Body}
	}
	return nil
}

// Step returns the step with the given id, nested or not, or nil.
func (d *Document) Step(id string) *Step {
	var found *Step
	d.visit(func(_ string, s *Step) bool {
		if s.ID == id {
			found = s
		}
		return found == nil
	})
	return found
}

// Connectors returns the names of the connectors the flow calls, sorted,
// each once.
func (d *Document) Connectors() []string {
	var names []string
	d.visit(func(_ string, s *Step) bool {
		if s.Call != nil {
			names = append(names, s.Call.Connector)
		}
		return true
	})
	slices.Sort(names)
	return slices.Compact(names)
}

// SubFlows returns the names of the flows the flow runs as sub-flows,
// sorted, each once.
func (d *Document) SubFlows() []string {
	var names []string
	d.visit(func(_ string, s *Step) bool {
		if s.Kind == KindFlowRun {
			names = append(names, s.SubFlow)
		}
		return true
	})
	slices.Sort(names)
	return slices.Compact(names)
}
