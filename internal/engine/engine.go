// Package engine owns runs: applying flow documents (every version kept),
// starting runs (the run and its audit record in one transaction, leased to
// the starting node, which advances it at once), the dispatcher that
// advances due runs under one renewed lease each (dispatch.go), the executor
// that advances a run step by step with a checkpoint after every step,
// durable sleeps and retry backoff (the run is due again later),
// cancellation, retry from the failed step, sub-flows, and the triggers that
// start runs (API, webhook, event, schedule).
package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/connector"
	"github.com/trustflow/trustflow/internal/flow"
	"github.com/trustflow/trustflow/internal/queue"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/truststore"
)

// Run statuses.
const (
	StatusQueued    = "queued"
	StatusRunning   = "running"
	StatusSleeping  = "sleeping"
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
	StatusCancelled = "cancelled"
)

// Step statuses.
const (
	StepPending   = "pending"
	StepRunning   = "running"
	StepSucceeded = "succeeded"
	StepFailed    = "failed"
	StepSkipped   = "skipped"
	StepCancelled = "cancelled"
)

func terminal(status string) bool {
	return status == StatusSucceeded || status == StatusFailed || status == StatusCancelled
}

// Config configures the engine. Store, Audit, Connectors and Trust are
// required.
type Config struct {
	Store      *store.Store
	Audit      *audit.Log
	Connectors *connector.Service
	Trust      *truststore.Service
	// Clock defaults to the wall clock.
	Clock clock.Clock
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Workers is how many runs this node advances at once. Defaults to 16.
	Workers int
	// PollInterval is how often the dispatcher looks for due runs and
	// expired leases when nothing wakes it (a run started or woken on this
	// node, or on PostgreSQL on any node, wakes it at once, and it sleeps
	// until the next due run). Defaults to 1s on PostgreSQL (another node's
	// expired leases), 30s on SQLite.
	PollInterval time.Duration
	// JobTimeout bounds one advance of a run; the executor yields after
	// Budget, well before it. Defaults to 5m.
	JobTimeout time.Duration
	// LeaseTTL is how long a node's lease of a run outlives its last
	// renewal (every LeaseTTL/3): a node that dies loses its runs to
	// another within LeaseTTL plus PollInterval. Defaults to 10s.
	LeaseTTL time.Duration
	// Budget is how long one advance runs steps before it yields the
	// worker (the run continues at once). Defaults to 10s.
	Budget time.Duration
	// Node names this process in run leases. Defaults to a random id.
	Node string
	// ScanInterval is how often the leader scans for expiring identities
	// and CAs. Defaults to 1h.
	ScanInterval time.Duration
	// KeysReady, when set, reports whether this node holds the active
	// key-encryption key; while it returns an error the node takes no run
	// job (each is snoozed for another node, or for later).
	KeysReady func() error
	// Limits are the server's limits on runs; zero fields take their
	// defaults (see Limits).
	Limits Limits
	// WebhookWindow is how far a signed webhook's timestamp may be from
	// this node's clock, either way; an accepted request's signature is
	// remembered (and its replay refused) that long. Defaults to 5m.
	WebhookWindow time.Duration
	// WebhookDeliveryTTL is how long an X-Trustflow-Delivery id maps to the
	// run its first delivery started. Defaults to 24h.
	WebhookDeliveryTTL time.Duration
}

// Engine runs flows.
type Engine struct {
	cfg   Config
	st    *store.Store
	audit *audit.Log
	conns *connector.Service
	trust *truststore.Service
	clock clock.Clock
	log   *slog.Logger
	q     *queue.Queue
	d     *dispatcher

	mu   sync.Mutex
	docs map[string]*flow.Document // "name@version" -> parsed document

	waitMu  sync.Mutex
	waiters map[string][]chan RunView
	// ended rings the ids of the last runs that ended here unwaited for.
	ended     []string
	endedNext int

	hookDummy webhookDummy

	stopSync context.CancelFunc

	// work bounds the steps of this node that evaluate and build their
	// results at once (limits.go).
	work workSlots
	// answers bounds the bytes of call requests and answers this node
	// holds at once (limits.go).
	answers *answerBudget
	// held bounds the run state this node's executions hold at once
	// (limits.go).
	held *heldState
}

// New builds the engine and its queue (migrating the queue's tables).
func New(ctx context.Context, cfg Config) (*Engine, error) {
	if cfg.Store == nil || cfg.Audit == nil || cfg.Connectors == nil || cfg.Trust == nil {
		return nil, errors.New("engine: Store, Audit, Connectors and Trust are required")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.JobTimeout == 0 {
		cfg.JobTimeout = 5 * time.Minute
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
		if cfg.Store.Dialect() == store.SQLite {
			// One node: every change that makes a run due wakes the
			// dispatcher in-process, and it sleeps until the next due
			// run; the poll is only a backstop.
			cfg.PollInterval = sqlitePollInterval
		}
	}
	if cfg.Budget == 0 {
		cfg.Budget = 10 * time.Second
	}
	if cfg.Budget > cfg.JobTimeout/2 {
		cfg.Budget = cfg.JobTimeout / 2
	}
	cfg.Limits = cfg.Limits.withDefaults()
	if cfg.WebhookWindow <= 0 {
		cfg.WebhookWindow = DefaultWebhookWindow
	}
	if cfg.WebhookDeliveryTTL <= 0 {
		cfg.WebhookDeliveryTTL = DefaultWebhookDeliveryTTL
	}
	if cfg.Node == "" {
		id, err := newID("node_")
		if err != nil {
			return nil, err
		}
		cfg.Node = id
	}
	e := &Engine{cfg: cfg, st: cfg.Store, audit: cfg.Audit, conns: cfg.Connectors, trust: cfg.Trust, clock: cfg.Clock, log: cfg.Logger,
		docs: map[string]*flow.Document{}, waiters: map[string][]chan RunView{}, ended: make([]string, 64), work: newWorkSlots(), answers: newAnswerBudget(cfg.Limits), held: &heldState{budget: heldBudget(cfg.Limits)}}
	e.d = newDispatcher(e)
	q, err := queue.New(ctx, queue.Config{Store: cfg.Store, JobTimeout: cfg.JobTimeout, Logger: cfg.Logger,
		OnSchedule: e.onSchedule, OnScan: e.Scan, ScanInterval: cfg.ScanInterval})
	if err != nil {
		return nil, err
	}
	e.q = q
	return e, nil
}

// Start registers the schedules and starts the workers.
func (e *Engine) Start(ctx context.Context) error {
	if e.st.Dialect() == store.SQLite {
		// One node: leases held now were held by this node's previous
		// process, which died; its runs resume at once.
		if err := e.st.ReleaseRunLeases(ctx); err != nil {
			return err
		}
	}
	if err := e.SyncSchedules(ctx); err != nil {
		return err
	}
	if err := e.q.Start(ctx); err != nil {
		return err
	}
	e.d.start()
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	e.stopSync = cancel
	go e.syncLoop(sctx)
	return nil
}

// Stop stops the workers; runs being advanced resume from their last
// checkpoint on the next start (or on another node).
func (e *Engine) Stop(ctx context.Context) error {
	if e.stopSync != nil {
		e.stopSync()
	}
	return errors.Join(e.d.stop(ctx), e.q.Stop(ctx))
}

func newID(prefix string) (string, error) {
	b := make([]byte, 10)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("engine: generate id: %w", err)
	}
	return prefix + hex.EncodeToString(b), nil
}

// document returns the parsed document of a flow version, cached.
func (e *Engine) document(ctx context.Context, name string, version int) (*flow.Document, error) {
	key := fmt.Sprintf("%s@%d", name, version)
	e.mu.Lock()
	d := e.docs[key]
	e.mu.Unlock()
	if d != nil {
		return d, nil
	}
	v, err := e.st.FlowVersion(ctx, name, version)
	if err != nil {
		return nil, err
	}
	d, err = flow.Parse(v.Filename, []byte(v.Source))
	if err != nil {
		return nil, fmt.Errorf("engine: stored flow %s version %d no longer parses: %w", name, version, err)
	}
	e.mu.Lock()
	e.docs[key] = d
	e.mu.Unlock()
	return d, nil
}

// notify hands a run's final view to those waiting for it to end on this
// node (view nil: they read it from the database). With nobody waiting, the run is remembered as just ended (Wait,
// subscribed a moment too late, then reads it from the database).
func (e *Engine) notify(runID string, view func() RunView) {
	e.waitMu.Lock()
	ws := e.waiters[runID]
	delete(e.waiters, runID)
	if len(ws) == 0 {
		e.ended[e.endedNext%len(e.ended)] = runID
		e.endedNext++
	}
	e.waitMu.Unlock()
	if len(ws) == 0 {
		return
	}
	var v *RunView
	if view != nil {
		rv := view()
		v = &rv
	}
	for _, w := range ws {
		if v != nil {
			w <- *v
		}
		close(w)
	}
}

// justEnded reports whether the run ended on this node without a waiter a
// moment ago.
func (e *Engine) justEnded(runID string) bool {
	e.waitMu.Lock()
	defer e.waitMu.Unlock()
	for _, id := range e.ended {
		if id == runID {
			return true
		}
	}
	return false
}

// subscribe returns a channel that receives the run's final view when it
// ends on this node, and a function that forgets the subscription (always
// call it).
func (e *Engine) subscribe(runID string) (chan RunView, func()) {
	ch := make(chan RunView, 1)
	e.waitMu.Lock()
	e.waiters[runID] = append(e.waiters[runID], ch)
	e.waitMu.Unlock()
	return ch, func() {
		e.waitMu.Lock()
		defer e.waitMu.Unlock()
		ws := e.waiters[runID]
		for i, w := range ws {
			if w == ch {
				ws = append(ws[:i], ws[i+1:]...)
				break
			}
		}
		if len(ws) == 0 {
			delete(e.waiters, runID)
		} else {
			e.waiters[runID] = ws
		}
	}
}
