// Package queue is trustflow's thin wrapper over River, the durable job
// queue, for the periodic work of the server: flows' schedules (one job per
// due time, inserted by River's periodic jobs on the leader) and the expiry
// scan. Runs are not queued here: the engine dispatches them from the runs
// table under one lease each (engine/dispatch.go).
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

// RunArgs is the job that advanced one run before runs were dispatched from
// their own table (schema 12). A job of this kind left in the table is done
// at once: the migration made every run that had not ended due.
type RunArgs struct {
	RunID string `json:"run_id"`
}

// Kind names the job kind in River's table.
func (RunArgs) Kind() string { return "trustflow.run" }

// Config configures the queue. Store is required.
type Config struct {
	Store *store.Store
	// PollInterval is how often idle workers look for due jobs (River's
	// FetchPollInterval). Defaults to 1s: schedules fire within a second.
	PollInterval time.Duration
	// JobTimeout bounds one job execution. Defaults to 5m; a job left
	// running by a node that died is rescued a minute after it.
	JobTimeout time.Duration
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
func New(ctx context.Context, cfg Config) (*Queue, error) {
	if cfg.Store == nil {
		return nil, errors.New("queue: Store is required")
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.JobTimeout == 0 {
		cfg.JobTimeout = 5 * time.Minute
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
	river.AddWorker(workers, river.WorkFunc(func(context.Context, *river.Job[RunArgs]) error { return nil }))
	if cfg.OnSchedule != nil {
		river.AddWorker(workers, runScheduled(cfg.OnSchedule))
	}
	if cfg.OnScan != nil {
		river.AddWorker(workers, runScan(cfg.OnScan))
	}
	client, err := river.NewClient(driver, &river.Config{
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 4}},
		Workers:           workers,
		FetchPollInterval: cfg.PollInterval,
		// Its jobs (schedules, the scan) are found by the fetch poll; the
		// notifier would poll a table of its own as well (SQLite) or hold a
		// connection (PostgreSQL), for nothing faster than a second.
		PollOnly:             true,
		FetchCooldown:        time.Millisecond,
		JobTimeout:           cfg.JobTimeout,
		RescueStuckJobsAfter: cfg.JobTimeout + time.Minute,
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
