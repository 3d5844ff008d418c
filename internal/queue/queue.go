// Package queue is trustflow's thin wrapper over River, the durable job
// queue: one job kind ("advance this run"), inserted in the caller's
// transaction so that a run, its audit record and its job commit together;
// workers that call the engine; snoozes that make sleeps and retry backoff
// durable; and River's rescue of jobs whose node died.
package queue

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverdatabasesql"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/trustflow/trustflow/internal/store"
)

// RunArgs is the job that advances one run as far as it can go.
type RunArgs struct {
	RunID string `json:"run_id"`
}

// Kind names the job kind in River's table.
func (RunArgs) Kind() string { return "trustflow.run" }

// Handler advances a run. Returning Snooze(d) reschedules the job after d
// (durably); any other error is retried by River with backoff.
type Handler func(ctx context.Context, runID string) error

// Snooze asks for the job to run again after d, without counting an attempt.
func Snooze(d time.Duration) error {
	if d < 0 {
		d = 0
	}
	return river.JobSnooze(d)
}

// Config configures the queue. Store is required.
type Config struct {
	Store *store.Store
	// Workers is how many runs one node advances at once. Defaults to 16.
	Workers int
	// PollInterval is how often idle workers look for due jobs (River's
	// FetchPollInterval; SQLite has no LISTEN/NOTIFY). Defaults to 50ms.
	PollInterval time.Duration
	// JobTimeout bounds one job execution. The engine yields well before
	// it. Defaults to 5m.
	JobTimeout time.Duration
	// RescueAfter is how long a job may stay running before River rescues
	// it (its node died). Must exceed JobTimeout. Defaults to JobTimeout+1m.
	RescueAfter time.Duration
	// Logger defaults to slog.Default(), at warning level for River.
	Logger *slog.Logger
	// OnSchedule starts a flow's scheduled run (see SetSchedules).
	OnSchedule func(ctx context.Context, flow string) error
	// OnScan runs the periodic expiry scan, every ScanInterval (default
	// 1h), on the leader only.
	OnScan       func(ctx context.Context) error
	ScanInterval time.Duration
}

// Queue is the run queue.
type Queue struct {
	client *river.Client[*sql.Tx]
	st     *store.Store
	sched  schedules
}

// New builds the queue, migrating River's tables.
func New(ctx context.Context, cfg Config, h Handler) (*Queue, error) {
	if cfg.Store == nil || h == nil {
		return nil, errors.New("queue: Store and a handler are required")
	}
	if cfg.Workers == 0 {
		cfg.Workers = 16
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 50 * time.Millisecond
	}
	if cfg.JobTimeout == 0 {
		cfg.JobTimeout = 5 * time.Minute
	}
	if cfg.RescueAfter == 0 {
		cfg.RescueAfter = cfg.JobTimeout + time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	var driver riverdriver.Driver[*sql.Tx]
	switch cfg.Store.Dialect() {
	case store.SQLite:
		driver = riversqlite.New(cfg.Store.DB())
	case store.Postgres:
		driver = riverdatabasesql.New(cfg.Store.DB())
	default:
		return nil, fmt.Errorf("queue: unsupported dialect %q", cfg.Store.Dialect())
	}
	mig, err := rivermigrate.New(driver, &rivermigrate.Config{Logger: quiet(cfg.Logger)})
	if err != nil {
		return nil, fmt.Errorf("queue: migrate: %w", err)
	}
	if _, err := mig.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return nil, fmt.Errorf("queue: migrate: %w", err)
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, river.WorkFunc(func(ctx context.Context, job *river.Job[RunArgs]) error {
		return h(ctx, job.Args.RunID)
	}))
	if cfg.OnSchedule != nil {
		river.AddWorker(workers, runScheduled(cfg.OnSchedule))
	}
	if cfg.OnScan != nil {
		river.AddWorker(workers, runScan(cfg.OnScan))
	}
	client, err := river.NewClient(driver, &river.Config{
		Queues:               map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: cfg.Workers}},
		Workers:              workers,
		FetchPollInterval:    cfg.PollInterval,
		FetchCooldown:        time.Millisecond,
		JobTimeout:           cfg.JobTimeout,
		RescueStuckJobsAfter: cfg.RescueAfter,
		MaxAttempts:          1000,
		Logger:               quiet(cfg.Logger),
	})
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	q := &Queue{client: client, st: cfg.Store, sched: schedules{ids: map[string]bool{}}}
	if cfg.OnScan != nil {
		if cfg.ScanInterval == 0 {
			cfg.ScanInterval = time.Hour
		}
		q.addScan(cfg.ScanInterval)
	}
	return q, nil
}

// quiet passes River's warnings and errors on, not its routine chatter.
func quiet(l *slog.Logger) *slog.Logger {
	return slog.New(levelFilter{Handler: l.Handler(), min: slog.LevelWarn})
}

type levelFilter struct {
	slog.Handler
	min slog.Level
}

func (f levelFilter) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= f.min && f.Handler.Enabled(ctx, l)
}

// EnqueueTx inserts a job for run inside tx, due at at (zero: now).
func (q *Queue) EnqueueTx(ctx context.Context, tx *store.Tx, runID string, at time.Time) error {
	opts := &river.InsertOpts{}
	if !at.IsZero() {
		opts.ScheduledAt = at
	}
	if _, err := q.client.InsertTx(ctx, tx.SQL(), RunArgs{RunID: runID}, opts); err != nil {
		return fmt.Errorf("queue: enqueue run %s: %w", runID, err)
	}
	return nil
}

// Start starts the workers.
//
// On SQLite it first makes the jobs left running by this node's previous
// process available again. SQLite means one node, so a job found running
// before the workers start belongs to a process that died (killed, power
// lost); River would rescue it only after RescueAfter plus its rescuer's
// 30s interval, and only once this node is elected leader. On PostgreSQL
// other nodes may be working those jobs: River's rescuer decides.
func (q *Queue) Start(ctx context.Context) error {
	if q.st.Dialect() == store.SQLite {
		if _, err := q.st.DB().ExecContext(ctx, "UPDATE river_job SET state = 'available' WHERE state = 'running' AND queue = $1", river.QueueDefault); err != nil {
			return fmt.Errorf("queue: make the jobs of a dead process available: %w", err)
		}
	}
	if err := q.client.Start(ctx); err != nil {
		return fmt.Errorf("queue: start: %w", err)
	}
	return nil
}

// Stop stops fetching, lets running jobs finish until ctx ends, then
// cancels them (their runs resume from their last checkpoint).
func (q *Queue) Stop(ctx context.Context) error {
	if err := q.client.Stop(ctx); err != nil {
		if err := q.client.StopAndCancel(context.Background()); err != nil {
			return fmt.Errorf("queue: stop: %w", err)
		}
	}
	return nil
}
