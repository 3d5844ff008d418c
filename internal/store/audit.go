package store

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// AuditRecord is one stored audit record. The audit package computes Hash;
// the store keeps the fields exactly as given so the hash can be recomputed.
type AuditRecord struct {
	Seq       int64
	Time      time.Time
	ActorID   string
	ActorName string
	ActorRole string
	Action    string
	Target    string
	Outcome   string
	Details   string // canonical JSON, stored verbatim
	PrevHash  string
	Hash      string
}

// AuditHead is the chain's head: the last record's sequence and hash.
type AuditHead struct {
	Seq  int64
	Hash string
}

const auditColumns = "seq, time, actor_id, actor_name, actor_role, action, target, outcome, details, prev_hash, hash"

func scanAudit(row interface{ Scan(...any) error }) (AuditRecord, error) {
	var r AuditRecord
	var t int64
	if err := row.Scan(&r.Seq, &t, &r.ActorID, &r.ActorName, &r.ActorRole, &r.Action, &r.Target, &r.Outcome, &r.Details, &r.PrevHash, &r.Hash); err != nil {
		return AuditRecord{}, err
	}
	r.Time = fromMicros(t)
	return r, nil
}

// LockAuditHead reads the chain head and, on PostgreSQL, locks its row until
// the transaction ends, so concurrent appends queue behind each other. On
// SQLite the single writer connection already serialises them.
func (t *Tx) LockAuditHead(ctx context.Context) (AuditHead, error) {
	q := "SELECT seq, hash FROM audit_head WHERE id = 1"
	if t.dialect == Postgres {
		q += " FOR UPDATE"
	}
	var h AuditHead
	if err := t.tx.QueryRowContext(ctx, q).Scan(&h.Seq, &h.Hash); err != nil {
		return AuditHead{}, fmt.Errorf("store: lock audit head: %w", mapErr(err))
	}
	return h, nil
}

// AppendAudit inserts a record and moves the head to it. The caller must
// hold the head (LockAuditHead) in the same transaction.
func (t *Tx) AppendAudit(ctx context.Context, r AuditRecord) error {
	if _, err := t.tx.ExecContext(ctx, "INSERT INTO audit_records ("+auditColumns+") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
		r.Seq, micros(r.Time), r.ActorID, r.ActorName, r.ActorRole, r.Action, r.Target, r.Outcome, r.Details, r.PrevHash, r.Hash); err != nil {
		return fmt.Errorf("store: append audit record %d: %w", r.Seq, mapErr(err))
	}
	res, err := t.tx.ExecContext(ctx, "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1 AND seq = $3", r.Seq, r.Hash, r.Seq-1)
	if err != nil {
		return fmt.Errorf("store: move audit head to %d: %w", r.Seq, mapErr(err))
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return fmt.Errorf("store: move audit head to %d: head moved concurrently: %w", r.Seq, ErrConflict)
	}
	return nil
}

// AuditHead reads the chain head without locking it.
func (s *Store) AuditHead(ctx context.Context) (AuditHead, error) {
	var h AuditHead
	if err := s.read.QueryRowContext(ctx, "SELECT seq, hash FROM audit_head WHERE id = 1").Scan(&h.Seq, &h.Hash); err != nil {
		return AuditHead{}, fmt.Errorf("store: read audit head: %w", mapErr(err))
	}
	return h, nil
}

// AuditFilter selects audit records. Zero fields do not filter.
type AuditFilter struct {
	Action string // exact action, or a prefix ending in "." or "*" ("token." / "token.*")
	Actor  string // actor id or name
	Target string
	Since  time.Time
	Until  time.Time
	// BeforeSeq returns records with seq < BeforeSeq (newest-first paging).
	BeforeSeq int64
	// AfterSeq returns records with seq > AfterSeq (oldest-first paging).
	AfterSeq int64
	// Ascending orders oldest first; the default is newest first.
	Ascending bool
	// Limit bounds the page. Defaults to 100.
	Limit int
}

// ListAudit returns one page of records matching f.
func (s *Store) ListAudit(ctx context.Context, f AuditFilter) ([]AuditRecord, error) {
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if f.Action != "" {
		if strings.HasSuffix(f.Action, "*") || strings.HasSuffix(f.Action, ".") {
			prefix := strings.TrimSuffix(f.Action, "*")
			// substr avoids LIKE's wildcard characters in user input.
			where = append(where, "substr(action, 1, "+arg(len(prefix))+") = "+arg(prefix))
		} else {
			where = append(where, "action = "+arg(f.Action))
		}
	}
	if f.Actor != "" {
		p := arg(f.Actor)
		where = append(where, "(actor_id = "+p+" OR actor_name = "+p+")")
	}
	if f.Target != "" {
		where = append(where, "target = "+arg(f.Target))
	}
	if !f.Since.IsZero() {
		where = append(where, "time >= "+arg(micros(f.Since)))
	}
	if !f.Until.IsZero() {
		where = append(where, "time < "+arg(micros(f.Until)))
	}
	if f.BeforeSeq > 0 {
		where = append(where, "seq < "+arg(f.BeforeSeq))
	}
	if f.AfterSeq > 0 {
		where = append(where, "seq > "+arg(f.AfterSeq))
	}
	if f.Limit <= 0 {
		f.Limit = 100
	}
	q := "SELECT " + auditColumns + " FROM audit_records"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	if f.Ascending {
		q += " ORDER BY seq ASC"
	} else {
		q += " ORDER BY seq DESC"
	}
	q += " LIMIT " + arg(f.Limit)
	rows, err := s.read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: list audit records: %w", err)
	}
	defer rows.Close()
	var out []AuditRecord
	for rows.Next() {
		r, err := scanAudit(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list audit records: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list audit records: %w", err)
	}
	return out, nil
}
