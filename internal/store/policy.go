package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// PolicyRecord is the stored egress and TLS policy document (JSON).
type PolicyRecord struct {
	Document  []byte
	Revision  int64
	UpdatedAt time.Time
	UpdatedBy string
}

// Policy returns the stored policy, or ErrNotFound when none was ever set.
func (s *Store) Policy(ctx context.Context) (PolicyRecord, error) { return getPolicy(ctx, s.read) }

// Policy returns the stored policy inside the transaction.
func (t *Tx) Policy(ctx context.Context) (PolicyRecord, error) { return getPolicy(ctx, t.tx) }

// PolicyRevision returns the stored policy's revision, 0 when none was set:
// a cheap check for a change made on another node.
func (s *Store) PolicyRevision(ctx context.Context) (int64, error) {
	var rev int64
	err := s.read.QueryRowContext(ctx, "SELECT revision FROM policy WHERE id = 1").Scan(&rev)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("store: policy revision: %w", err)
	}
	return rev, nil
}

func getPolicy(ctx context.Context, q querier) (PolicyRecord, error) {
	var p PolicyRecord
	var doc string
	var at int64
	err := q.QueryRowContext(ctx, "SELECT document, revision, updated_at, updated_by FROM policy WHERE id = 1").Scan(&doc, &p.Revision, &at, &p.UpdatedBy)
	if errors.Is(err, sql.ErrNoRows) {
		return PolicyRecord{}, ErrNotFound
	}
	if err != nil {
		return PolicyRecord{}, fmt.Errorf("store: policy: %w", err)
	}
	p.Document, p.UpdatedAt = []byte(doc), fromMicros(at)
	return p, nil
}

// PutPolicy stores the policy document with the next revision, if the
// stored revision is still expect (0 for none): a change made meanwhile on
// another node makes it ErrConflict. It returns the new revision.
func (t *Tx) PutPolicy(ctx context.Context, doc []byte, expect int64, by string, at time.Time) (int64, error) {
	var res sql.Result
	var err error
	if expect == 0 {
		res, err = t.tx.ExecContext(ctx, "INSERT INTO policy (id, document, revision, updated_at, updated_by) VALUES (1, $1, 1, $2, $3) ON CONFLICT (id) DO NOTHING",
			string(doc), micros(at), by)
	} else {
		res, err = t.tx.ExecContext(ctx, "UPDATE policy SET document = $1, revision = revision + 1, updated_at = $2, updated_by = $3 WHERE id = 1 AND revision = $4",
			string(doc), micros(at), by, expect)
	}
	if err != nil {
		return 0, fmt.Errorf("store: put policy: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("store: put policy: %w", err)
	}
	if n != 1 {
		return 0, fmt.Errorf("store: put policy: revision %d is no longer current: %w", expect, ErrConflict)
	}
	return expect + 1, nil
}
