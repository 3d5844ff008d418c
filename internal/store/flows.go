package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"
)

// Flow is a stored flow's head: its current version.
type Flow struct {
	Name           string
	CurrentVersion int
	TriggerKind    string
	WebhookSecret  []byte // sealed
	KEKID          string
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// FlowVersion is one applied version of a flow document.
type FlowVersion struct {
	FlowName  string
	Version   int
	Digest    string
	Filename  string
	Source    string
	CreatedAt time.Time
	CreatedBy string
}

const flowColumns = "name, current_version, trigger_kind, webhook_secret, kek_id, created_at, updated_at"

func scanFlow(row interface{ Scan(...any) error }) (Flow, error) {
	var f Flow
	var c, u int64
	if err := row.Scan(&f.Name, &f.CurrentVersion, &f.TriggerKind, &f.WebhookSecret, &f.KEKID, &c, &u); err != nil {
		return Flow{}, err
	}
	f.CreatedAt, f.UpdatedAt = fromMicros(c), fromMicros(u)
	return f, nil
}

// FlowByName reads a flow inside the transaction (locking it on PostgreSQL).
func (t *Tx) FlowByName(ctx context.Context, name string) (Flow, error) {
	q := "SELECT " + flowColumns + " FROM flows WHERE name = $1"
	if t.dialect == Postgres {
		q += " FOR UPDATE"
	}
	f, err := scanFlow(t.tx.QueryRowContext(ctx, q, name))
	if err != nil {
		return Flow{}, fmt.Errorf("store: get flow %q: %w", name, mapErr(err))
	}
	return f, nil
}

// FlowByName reads a flow.
func (s *Store) FlowByName(ctx context.Context, name string) (Flow, error) {
	f, err := scanFlow(s.read.QueryRowContext(ctx, "SELECT "+flowColumns+" FROM flows WHERE name = $1", name))
	if err != nil {
		return Flow{}, fmt.Errorf("store: get flow %q: %w", name, mapErr(err))
	}
	return f, nil
}

// InsertFlow stores a new flow head.
func (t *Tx) InsertFlow(ctx context.Context, f Flow) error {
	_, err := t.tx.ExecContext(ctx, "INSERT INTO flows ("+flowColumns+") VALUES ($1, $2, $3, $4, $5, $6, $7)",
		f.Name, f.CurrentVersion, f.TriggerKind, f.WebhookSecret, f.KEKID, micros(f.CreatedAt), micros(f.UpdatedAt))
	if err != nil {
		return fmt.Errorf("store: insert flow %q: %w", f.Name, mapErr(err))
	}
	return nil
}

// UpdateFlow moves a flow's head.
func (t *Tx) UpdateFlow(ctx context.Context, f Flow) error {
	res, err := t.tx.ExecContext(ctx, "UPDATE flows SET current_version = $1, trigger_kind = $2, webhook_secret = $3, kek_id = $4, updated_at = $5 WHERE name = $6",
		f.CurrentVersion, f.TriggerKind, f.WebhookSecret, f.KEKID, micros(f.UpdatedAt), f.Name)
	if err != nil {
		return fmt.Errorf("store: update flow %q: %w", f.Name, mapErr(err))
	}
	return expectOne(res, "update flow "+f.Name)
}

// DeleteFlow removes a flow's head; its versions (and runs) are kept.
func (t *Tx) DeleteFlow(ctx context.Context, name string) error {
	res, err := t.tx.ExecContext(ctx, "DELETE FROM flows WHERE name = $1", name)
	if err != nil {
		return fmt.Errorf("store: delete flow %q: %w", name, mapErr(err))
	}
	return expectOne(res, "delete flow "+name)
}

// LastFlowVersion is the highest version ever stored under a flow's name
// (0 when none), so that a flow applied again after its removal never
// reuses a number.
func (t *Tx) LastFlowVersion(ctx context.Context, name string) (int, error) {
	var v int
	if err := t.tx.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM flow_versions WHERE flow_name = $1", name).Scan(&v); err != nil {
		return 0, fmt.Errorf("store: last version of flow %q: %w", name, err)
	}
	return v, nil
}

// InsertFlowVersion stores an applied version.
func (t *Tx) InsertFlowVersion(ctx context.Context, v FlowVersion) error {
	_, err := t.tx.ExecContext(ctx, "INSERT INTO flow_versions (flow_name, version, digest, filename, source, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
		v.FlowName, v.Version, v.Digest, v.Filename, v.Source, micros(v.CreatedAt), v.CreatedBy)
	if err != nil {
		return fmt.Errorf("store: insert flow version %s/%d: %w", v.FlowName, v.Version, mapErr(err))
	}
	return nil
}

const flowVersionColumns = "flow_name, version, digest, filename, source, created_at, created_by"

func scanFlowVersion(row interface{ Scan(...any) error }) (FlowVersion, error) {
	var v FlowVersion
	var c int64
	if err := row.Scan(&v.FlowName, &v.Version, &v.Digest, &v.Filename, &v.Source, &c, &v.CreatedBy); err != nil {
		return FlowVersion{}, err
	}
	v.CreatedAt = fromMicros(c)
	return v, nil
}

// FlowVersion reads one version of a flow.
func (s *Store) FlowVersion(ctx context.Context, name string, version int) (FlowVersion, error) {
	v, err := scanFlowVersion(s.read.QueryRowContext(ctx, "SELECT "+flowVersionColumns+" FROM flow_versions WHERE flow_name = $1 AND version = $2", name, version))
	if err != nil {
		return FlowVersion{}, fmt.Errorf("store: get flow %q version %d: %w", name, version, mapErr(err))
	}
	return v, nil
}

// FlowVersions lists a flow's versions, newest first, without sources.
func (s *Store) FlowVersions(ctx context.Context, name string) ([]FlowVersion, error) {
	rows, err := s.read.QueryContext(ctx, "SELECT flow_name, version, digest, filename, '', created_at, created_by FROM flow_versions WHERE flow_name = $1 ORDER BY version DESC", name)
	if err != nil {
		return nil, fmt.Errorf("store: list versions of flow %q: %w", name, err)
	}
	defer rows.Close()
	var out []FlowVersion
	for rows.Next() {
		v, err := scanFlowVersion(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list versions of flow %q: %w", name, err)
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// ListFlows returns every flow head, by name.
func (s *Store) ListFlows(ctx context.Context) ([]Flow, error) {
	rows, err := s.read.QueryContext(ctx, "SELECT "+flowColumns+" FROM flows ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("store: list flows: %w", err)
	}
	defer rows.Close()
	var out []Flow
	for rows.Next() {
		f, err := scanFlow(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list flows: %w", err)
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

// Run is a stored run.
type Run struct {
	ID              string
	FlowName        string
	FlowVersion     int
	Status          string
	TriggerKind     string
	Input           string // JSON, secret inputs redacted
	InputSealed     []byte
	KEKID           string
	Output          string // JSON or ""
	Error           string // JSON or ""
	ParentRunID     string
	ParentStep      string
	CreatedBy       string
	CreatedAt       time.Time
	StartedAt       *time.Time
	FinishedAt      *time.Time
	UpdatedAt       time.Time
	LeaseOwner      string
	LeaseUntil      time.Time
	CancelRequested bool
	// DueAt is when the run is to be advanced next; nil once it has ended
	// (dispatch.go).
	DueAt *time.Time
	// Wakes counts the run's wake-ups (WakeRun).
	Wakes int64
}

const runColumns = "id, flow_name, flow_version, status, trigger_kind, input, input_sealed, kek_id, output, error, parent_run_id, parent_step, created_by, created_at, started_at, finished_at, updated_at, lease_owner, lease_until, cancel_requested, due_at, wakes"

func scanRun(row interface{ Scan(...any) error }) (Run, error) {
	var r Run
	var c, u, lu int64
	var st, fin, due sql.NullInt64
	if err := row.Scan(&r.ID, &r.FlowName, &r.FlowVersion, &r.Status, &r.TriggerKind, &r.Input, &r.InputSealed, &r.KEKID, &r.Output, &r.Error,
		&r.ParentRunID, &r.ParentStep, &r.CreatedBy, &c, &st, &fin, &u, &r.LeaseOwner, &lu, &r.CancelRequested, &due, &r.Wakes); err != nil {
		return Run{}, err
	}
	r.CreatedAt, r.UpdatedAt, r.LeaseUntil = fromMicros(c), fromMicros(u), fromMicros(lu)
	r.StartedAt, r.FinishedAt, r.DueAt = fromNullMicros(st), fromNullMicros(fin), fromNullMicros(due)
	return r, nil
}

// InsertRun stores a new run.
func (t *Tx) InsertRun(ctx context.Context, r Run) error {
	_, err := t.tx.ExecContext(ctx, "INSERT INTO runs ("+runColumns+") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)",
		r.ID, r.FlowName, r.FlowVersion, r.Status, r.TriggerKind, r.Input, r.InputSealed, r.KEKID, r.Output, r.Error, r.ParentRunID, r.ParentStep,
		r.CreatedBy, micros(r.CreatedAt), nullMicros(r.StartedAt), nullMicros(r.FinishedAt), micros(r.UpdatedAt), r.LeaseOwner, micros(r.LeaseUntil), r.CancelRequested,
		nullMicros(r.DueAt), r.Wakes)
	if err != nil {
		return fmt.Errorf("store: insert run %s: %w", r.ID, mapErr(err))
	}
	return nil
}

// RunForUpdate reads a run inside the transaction (locking it on PostgreSQL).
func (t *Tx) RunForUpdate(ctx context.Context, id string) (Run, error) {
	q := "SELECT " + runColumns + " FROM runs WHERE id = $1"
	if t.dialect == Postgres {
		q += " FOR UPDATE"
	}
	r, err := scanRun(t.tx.QueryRowContext(ctx, q, id))
	if err != nil {
		return Run{}, fmt.Errorf("store: get run %s: %w", id, mapErr(err))
	}
	return r, nil
}

// Run reads one run.
func (s *Store) Run(ctx context.Context, id string) (Run, error) {
	r, err := scanRun(s.read.QueryRowContext(ctx, "SELECT "+runColumns+" FROM runs WHERE id = $1", id))
	if err != nil {
		return Run{}, fmt.Errorf("store: get run %s: %w", id, mapErr(err))
	}
	return r, nil
}

// UpdateRun writes a run's mutable fields.
func (t *Tx) UpdateRun(ctx context.Context, r Run) error {
	res, err := t.tx.ExecContext(ctx, `UPDATE runs SET status = $1, output = $2, error = $3, started_at = $4, finished_at = $5, updated_at = $6,
		lease_owner = $7, lease_until = $8, cancel_requested = $9 WHERE id = $10`,
		r.Status, r.Output, r.Error, nullMicros(r.StartedAt), nullMicros(r.FinishedAt), micros(r.UpdatedAt), r.LeaseOwner, micros(r.LeaseUntil), r.CancelRequested, r.ID)
	if err != nil {
		return fmt.Errorf("store: update run %s: %w", r.ID, mapErr(err))
	}
	return expectOne(res, "update run "+r.ID)
}

// RunFilter selects runs; zero fields do not filter.
type RunFilter struct {
	Flow   string
	Status string
	Parent string
	Since  time.Time
	Until  time.Time
	// Before pages newest-first: runs created before this run id's time.
	BeforeCreated time.Time
	Limit         int
}

// ListRuns returns runs, newest first.
func (s *Store) ListRuns(ctx context.Context, f RunFilter) ([]Run, error) {
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if f.Flow != "" {
		where = append(where, "flow_name = "+arg(f.Flow))
	}
	if f.Status != "" {
		where = append(where, "status = "+arg(f.Status))
	}
	if f.Parent != "" {
		where = append(where, "parent_run_id = "+arg(f.Parent))
	}
	if !f.Since.IsZero() {
		where = append(where, "created_at >= "+arg(micros(f.Since)))
	}
	if !f.Until.IsZero() {
		where = append(where, "created_at < "+arg(micros(f.Until)))
	}
	if !f.BeforeCreated.IsZero() {
		where = append(where, "created_at < "+arg(micros(f.BeforeCreated)))
	}
	if f.Limit <= 0 {
		f.Limit = 100
	}
	q := "SELECT " + runColumns + " FROM runs"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY created_at DESC, id DESC LIMIT " + arg(f.Limit)
	rows, err := s.read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: list runs: %w", err)
	}
	defer rows.Close()
	var out []Run
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list runs: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// CountRuns counts a flow's runs in the given statuses, inside the
// transaction (so that a check and the change it allows commit together).
func (t *Tx) CountRuns(ctx context.Context, flow string, statuses ...string) (int, error) {
	return countRuns(ctx, t.tx, flow, statuses...)
}

// CountRuns counts a flow's runs in the given statuses.
func (s *Store) CountRuns(ctx context.Context, flow string, statuses ...string) (int, error) {
	return countRuns(ctx, s.read, flow, statuses...)
}

func countRuns(ctx context.Context, q querier, flow string, statuses ...string) (int, error) {
	args := []any{flow}
	var ph []string
	for _, st := range statuses {
		args = append(args, st)
		ph = append(ph, fmt.Sprintf("$%d", len(args)))
	}
	var n int
	if err := q.QueryRowContext(ctx, "SELECT COUNT(*) FROM runs WHERE flow_name = $1 AND status IN ("+strings.Join(ph, ", ")+")", args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: count runs of %q: %w", flow, err)
	}
	return n, nil
}

// Step is one step checkpoint of a run.
type Step struct {
	RunID         string
	Path          string
	StepID        string
	Kind          string
	Status        string
	Attempts      int
	State         string // JSON: what a resumed execution needs (foreach items, sleep deadline, child run)
	Output        string // JSON
	Evidence      string // JSON
	Error         string // JSON
	StartedAt     *time.Time
	FinishedAt    *time.Time
	NextAttemptAt *time.Time
	DurationMS    int64
	Seq           int64
	// StateKEKID names the KEK of a sealed State ("" when State is clear).
	StateKEKID string
}

const stepColumns = "run_id, path, step_id, kind, status, attempts, state, output, evidence, error, started_at, finished_at, next_attempt_at, duration_ms, seq, state_kek_id"

// PutStep writes a step checkpoint (insert or replace).
func (t *Tx) PutStep(ctx context.Context, st Step) error {
	q := "INSERT INTO run_steps (" + stepColumns + ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) " +
		"ON CONFLICT (run_id, path) DO UPDATE SET status = excluded.status, attempts = excluded.attempts, state = excluded.state, state_kek_id = excluded.state_kek_id, output = excluded.output, " +
		"evidence = excluded.evidence, error = excluded.error, started_at = excluded.started_at, finished_at = excluded.finished_at, " +
		"next_attempt_at = excluded.next_attempt_at, duration_ms = excluded.duration_ms, seq = excluded.seq"
	_, err := t.tx.ExecContext(ctx, q, st.RunID, st.Path, st.StepID, st.Kind, st.Status, st.Attempts, st.State, st.Output, st.Evidence, st.Error,
		nullMicros(st.StartedAt), nullMicros(st.FinishedAt), nullMicros(st.NextAttemptAt), st.DurationMS, st.Seq, st.StateKEKID)
	if err != nil {
		return fmt.Errorf("store: checkpoint %s/%s: %w", st.RunID, st.Path, mapErr(err))
	}
	return nil
}

// DeleteSteps removes checkpoints of a run whose status is one of statuses
// (a retry forgets the failed steps).
func (t *Tx) DeleteSteps(ctx context.Context, runID string, statuses ...string) error {
	args := []any{runID}
	var ph []string
	for _, st := range statuses {
		args = append(args, st)
		ph = append(ph, fmt.Sprintf("$%d", len(args)))
	}
	if _, err := t.tx.ExecContext(ctx, "DELETE FROM run_steps WHERE run_id = $1 AND status IN ("+strings.Join(ph, ", ")+")", args...); err != nil {
		return fmt.Errorf("store: forget steps of %s: %w", runID, mapErr(err))
	}
	return nil
}

// Steps lists a run's checkpoints in the order they were written.
func (s *Store) Steps(ctx context.Context, runID string) ([]Step, error) {
	rows, err := s.read.QueryContext(ctx, "SELECT "+stepColumns+" FROM run_steps WHERE run_id = $1 ORDER BY seq, path", runID)
	if err != nil {
		return nil, fmt.Errorf("store: steps of %s: %w", runID, err)
	}
	defer rows.Close()
	var out []Step
	for rows.Next() {
		var st Step
		var s1, f1, n1 sql.NullInt64
		if err := rows.Scan(&st.RunID, &st.Path, &st.StepID, &st.Kind, &st.Status, &st.Attempts, &st.State, &st.Output, &st.Evidence, &st.Error,
			&s1, &f1, &n1, &st.DurationMS, &st.Seq, &st.StateKEKID); err != nil {
			return nil, fmt.Errorf("store: steps of %s: %w", runID, err)
		}
		st.StartedAt, st.FinishedAt, st.NextAttemptAt = fromNullMicros(s1), fromNullMicros(f1), fromNullMicros(n1)
		out = append(out, st)
	}
	return out, rows.Err()
}

// DeleteStepsWithPrefix removes a run's checkpoints whose path starts with
// prefix.
func (t *Tx) DeleteStepsWithPrefix(ctx context.Context, runID, prefix string) error {
	if _, err := t.tx.ExecContext(ctx, "DELETE FROM run_steps WHERE run_id = $1 AND substr(path, 1, $2) = $3", runID, len(prefix), prefix); err != nil {
		return fmt.Errorf("store: forget steps of %s: %w", runID, mapErr(err))
	}
	return nil
}

// FlowsWithTrigger names the flows whose trigger is the event.
func (s *Store) FlowsWithTrigger(ctx context.Context, trigger string) ([]string, error) {
	rows, err := s.read.QueryContext(ctx, "SELECT name FROM flows WHERE trigger_kind = $1 ORDER BY name", trigger)
	if err != nil {
		return nil, fmt.Errorf("store: flows triggered by %s: %w", trigger, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("store: flows triggered by %s: %w", trigger, err)
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// MarkEvent records that the event named key was emitted, and reports
// whether it is new (false: it was emitted before).
func (t *Tx) MarkEvent(ctx context.Context, key string, at time.Time) (bool, error) {
	res, err := t.tx.ExecContext(ctx, "INSERT INTO events_emitted (key, emitted_at) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", key, micros(at))
	if err != nil {
		return false, fmt.Errorf("store: mark event %s: %w", key, mapErr(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("store: mark event %s: %w", key, err)
	}
	return n == 1, nil
}
