package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// Runs are dispatched from their own table. A run whose due_at has come is
// advanced by the node that holds its lease (lease_owner, lease_until): the
// node that started it takes the lease in the transaction that inserts it,
// any node takes the lease of a due run nobody holds, or whose holder
// stopped renewing it (the node died). The holder renews its leases while
// it works (ExtendRunLease) and gives the lease up with the time the run
// is due again (YieldRun), in the transaction of the run's last change when
// it can.

// DueRuns returns up to limit runs due at now whose lease is free or has
// expired, the longest due first.
func (s *Store) DueRuns(ctx context.Context, now time.Time, limit int) ([]string, error) {
	rows, err := s.read.QueryContext(ctx, "SELECT id FROM runs WHERE due_at IS NOT NULL AND due_at <= $1 AND (lease_owner = '' OR lease_until < $1) ORDER BY due_at LIMIT $2",
		micros(now), limit)
	if err != nil {
		return nil, fmt.Errorf("store: list due runs: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("store: list due runs: %w", err)
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// NextDue reports when the next run is due (ok false: none is); a leased
// run counts from its lease's expiry.
func (s *Store) NextDue(ctx context.Context) (at time.Time, ok bool, err error) {
	var due sql.NullInt64
	if err := s.read.QueryRowContext(ctx, "SELECT MIN(CASE WHEN lease_owner = '' OR lease_until < due_at THEN due_at ELSE lease_until END) FROM runs WHERE due_at IS NOT NULL").Scan(&due); err != nil {
		return time.Time{}, false, fmt.Errorf("store: next due run: %w", err)
	}
	if !due.Valid {
		return time.Time{}, false, nil
	}
	return fromMicros(due.Int64), true, nil
}

// ClaimRun gives owner the lease of a run that is due, until until, if no
// other owner holds an unexpired lease. It reports whether it did and the
// run's wake count when it did.
func (s *Store) ClaimRun(ctx context.Context, id, owner string, now, until time.Time) (ok bool, wakes int64, err error) {
	err = s.write.QueryRowContext(ctx, "UPDATE runs SET lease_owner = $1, lease_until = $2 WHERE id = $3 AND due_at IS NOT NULL AND due_at <= $4 AND (lease_owner = '' OR lease_until < $4) RETURNING wakes",
		owner, micros(until), id, micros(now)).Scan(&wakes)
	if errors.Is(err, sql.ErrNoRows) {
		return false, 0, nil
	}
	if err != nil {
		return false, 0, fmt.Errorf("store: lease run %s: %w", id, mapErr(err))
	}
	return true, wakes, nil
}

// ExtendRunLease renews owner's lease of a run until until. It reports
// false when owner no longer holds it.
func (s *Store) ExtendRunLease(ctx context.Context, id, owner string, until time.Time) (bool, error) {
	res, err := s.write.ExecContext(ctx, "UPDATE runs SET lease_until = $1 WHERE id = $2 AND lease_owner = $3", micros(until), id, owner)
	if err != nil {
		return false, fmt.Errorf("store: renew lease of run %s: %w", id, mapErr(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("store: renew lease of run %s: %w", id, err)
	}
	return n == 1, nil
}

// YieldRun gives owner's lease of a run up; the run is due again at due
// (nil: never, it has ended). A run woken since its owner read wakes is due
// at now whatever due says: the wake-up came during the advance, which may
// not have seen it. It returns when the run is due (nil: never, or the
// lease was not owner's).
func (s *Store) YieldRun(ctx context.Context, id, owner string, wakes int64, due *time.Time, now time.Time) (*time.Time, error) {
	return yieldRun(ctx, s.write, id, owner, wakes, due, now)
}

// YieldRun is Store.YieldRun inside the transaction of the run's last
// change.
func (t *Tx) YieldRun(ctx context.Context, id, owner string, wakes int64, due *time.Time, now time.Time) (*time.Time, error) {
	return yieldRun(ctx, t.tx, id, owner, wakes, due, now)
}

func yieldRun(ctx context.Context, q querier, id, owner string, wakes int64, due *time.Time, now time.Time) (*time.Time, error) {
	var next sql.NullInt64
	err := q.QueryRowContext(ctx, "UPDATE runs SET lease_owner = '', lease_until = 0, due_at = CASE WHEN wakes <> CAST($3 AS BIGINT) THEN CAST($4 AS BIGINT) ELSE CAST($5 AS BIGINT) END WHERE id = $1 AND lease_owner = $2 RETURNING due_at",
		id, owner, wakes, micros(now), nullMicros(due)).Scan(&next)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: release run %s: %w", id, mapErr(err))
	}
	return fromNullMicros(next), nil
}

// WakeRun makes a run due at at (or sooner, if it already is) and counts
// the wake-up, so that its owner, if it is being advanced, looks at it
// again.
func (t *Tx) WakeRun(ctx context.Context, id string, at time.Time) error {
	if _, err := t.tx.ExecContext(ctx, "UPDATE runs SET wakes = wakes + 1, due_at = CASE WHEN due_at IS NULL OR due_at > CAST($2 AS BIGINT) THEN CAST($2 AS BIGINT) ELSE due_at END WHERE id = $1",
		id, micros(at)); err != nil {
		return fmt.Errorf("store: wake run %s: %w", id, mapErr(err))
	}
	return nil
}

// ReleaseRunLeases gives up every run lease. Only a node that knows it is
// the only one (SQLite) may call it, at start, before it dispatches runs:
// the leases it finds were held by its own previous, dead process.
func (s *Store) ReleaseRunLeases(ctx context.Context) error {
	if _, err := s.write.ExecContext(ctx, "UPDATE runs SET lease_owner = '', lease_until = 0 WHERE lease_owner <> ''"); err != nil {
		return fmt.Errorf("store: release run leases: %w", mapErr(err))
	}
	return nil
}

// Notify tells every node listening on channel (Listen) that something
// changed, when tx commits. On SQLite, which has one node, it does nothing.
func (t *Tx) Notify(ctx context.Context, channel string) error {
	if t.dialect != Postgres {
		return nil
	}
	if _, err := t.tx.ExecContext(ctx, "SELECT pg_notify($1, '')", channel); err != nil {
		return fmt.Errorf("store: notify %s: %w", channel, mapErr(err))
	}
	return nil
}

// Listen calls fn for every notification on channel until ctx ends,
// reconnecting after a lost connection (fn is also called then: what was
// sent meanwhile was missed). On SQLite it returns at once.
func (s *Store) Listen(ctx context.Context, channel string, fn func()) error {
	if s.dialect != Postgres {
		return nil
	}
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, channel, fn)
		if ctx.Err() != nil {
			return nil
		}
		fn()
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		_ = err // the caller learns nothing it could act on; the retry is the handling
	}
	return nil
}

func (s *Store) listenOnce(ctx context.Context, channel string, fn func()) error {
	conn, err := s.write.DB.Conn(ctx)
	if err != nil {
		return fmt.Errorf("store: listen on %s: %w", channel, err)
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("store: listen on %s: not a pgx connection", channel)
		}
		pc := sc.Conn()
		if _, err := pc.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
			return fmt.Errorf("store: listen on %s: %w", channel, err)
		}
		for {
			if _, err := pc.WaitForNotification(ctx); err != nil {
				// The connection is in LISTEN mode, or broken: never hand it
				// back to the pool.
				return errors.Join(fmt.Errorf("store: listen on %s: %w", channel, err), driver.ErrBadConn)
			}
			fn()
		}
	})
}
