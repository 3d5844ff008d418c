package store

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// ChildRuns returns the ids of the runs a run started as sub-flows whose
// status is one of statuses, oldest first, inside the transaction.
func (t *Tx) ChildRuns(ctx context.Context, parentID string, statuses ...string) ([]string, error) {
	args := []any{parentID}
	var ph []string
	for _, st := range statuses {
		args = append(args, st)
		ph = append(ph, fmt.Sprintf("$%d", len(args)))
	}
	rows, err := t.tx.QueryContext(ctx, "SELECT id FROM runs WHERE parent_run_id = $1 AND status IN ("+strings.Join(ph, ", ")+") ORDER BY created_at, id", args...)
	if err != nil {
		return nil, fmt.Errorf("store: sub-runs of %s: %w", parentID, mapErr(err))
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("store: sub-runs of %s: %w", parentID, err)
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// EndSteps sets the status of a run's checkpoints whose status is one of
// from to status, finished at at (a cancelled run's sleeping step ends
// cancelled). It returns how many it changed.
func (t *Tx) EndSteps(ctx context.Context, runID, status string, at time.Time, from ...string) (int64, error) {
	args := []any{runID, status, micros(at)}
	var ph []string
	for _, st := range from {
		args = append(args, st)
		ph = append(ph, fmt.Sprintf("$%d", len(args)))
	}
	res, err := t.tx.ExecContext(ctx, "UPDATE run_steps SET status = $2, finished_at = $3, next_attempt_at = NULL WHERE run_id = $1 AND status IN ("+strings.Join(ph, ", ")+")", args...)
	if err != nil {
		return 0, fmt.Errorf("store: end steps of %s: %w", runID, mapErr(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("store: end steps of %s: %w", runID, err)
	}
	return n, nil
}
