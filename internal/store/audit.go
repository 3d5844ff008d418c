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
	// KeyID names the audit key whose HMAC Hash is; empty for a record
	// written before the database had an audit key (Hash is then SHA-256).
	KeyID string
}

// AuditHead is the chain's head: the last record's sequence, hash and
// audit key id.
type AuditHead struct {
	Seq   int64
	Hash  string
	KeyID string
}

const auditColumns = "seq, time, actor_id, actor_name, actor_role, action, target, outcome, details, prev_hash, hash, key_id"

func scanAudit(row interface{ Scan(...any) error }) (AuditRecord, error) {
	var r AuditRecord
	var t int64
	if err := row.Scan(&r.Seq, &t, &r.ActorID, &r.ActorName, &r.ActorRole, &r.Action, &r.Target, &r.Outcome, &r.Details, &r.PrevHash, &r.Hash, &r.KeyID); err != nil {
		return AuditRecord{}, err
	}
	r.Time = fromMicros(t)
	return r, nil
}

// LockAuditHead reads the chain head and, on PostgreSQL, locks its row until
// the transaction ends, so concurrent appends queue behind each other. On
// SQLite the single writer connection already serialises them. Once this
// transaction has appended a record, the head is the one it moved to, and
// nothing is read.
func (t *Tx) LockAuditHead(ctx context.Context) (AuditHead, error) {
	if t.auditHead != nil {
		return *t.auditHead, nil
	}
	q := "SELECT seq, hash, key_id FROM audit_head WHERE id = 1"
	if t.dialect == Postgres {
		q += " FOR UPDATE"
	}
	var h AuditHead
	if err := t.tx.QueryRowContext(ctx, q).Scan(&h.Seq, &h.Hash, &h.KeyID); err != nil {
		return AuditHead{}, fmt.Errorf("store: lock audit head: %w", mapErr(err))
	}
	return h, nil
}

const insertAudit = "INSERT INTO audit_records (" + auditColumns + ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"

// appendAuditPostgres inserts the record and moves the head in one
// statement: one round trip fewer while the head's row lock is held.
const appendAuditPostgres = "WITH ins AS (" + insertAudit + " RETURNING seq) " +
	"UPDATE audit_head SET seq = $1, hash = $11, key_id = $12 WHERE id = 1 AND seq = $13 AND EXISTS (SELECT 1 FROM ins)"

// AppendAudit inserts a record and moves the head to it. The caller must
// hold the head (LockAuditHead) in the same transaction. On PostgreSQL both
// run as one statement; the head still moves only from r.Seq-1.
func (t *Tx) AppendAudit(ctx context.Context, r AuditRecord) error {
	args := []any{r.Seq, micros(r.Time), r.ActorID, r.ActorName, r.ActorRole, r.Action, r.Target, r.Outcome, r.Details, r.PrevHash, r.Hash, r.KeyID}
	if t.dialect == Postgres {
		res, err := t.tx.ExecContext(ctx, appendAuditPostgres, append(args, r.Seq-1)...)
		if err != nil {
			return fmt.Errorf("store: append audit record %d: %w", r.Seq, mapErr(err))
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return fmt.Errorf("store: move audit head to %d: head moved concurrently: %w", r.Seq, ErrConflict)
		}
		t.auditHead = &AuditHead{Seq: r.Seq, Hash: r.Hash, KeyID: r.KeyID}
		return nil
	}
	if _, err := t.tx.ExecContext(ctx, insertAudit, args...); err != nil {
		return fmt.Errorf("store: append audit record %d: %w", r.Seq, mapErr(err))
	}
	res, err := t.tx.ExecContext(ctx, "UPDATE audit_head SET seq = $1, hash = $2, key_id = $3 WHERE id = 1 AND seq = $4", r.Seq, r.Hash, r.KeyID, r.Seq-1)
	if err != nil {
		return fmt.Errorf("store: move audit head to %d: %w", r.Seq, mapErr(err))
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return fmt.Errorf("store: move audit head to %d: head moved concurrently: %w", r.Seq, ErrConflict)
	}
	t.auditHead = &AuditHead{Seq: r.Seq, Hash: r.Hash, KeyID: r.KeyID}
	return nil
}

// AuditHead reads the chain head without locking it.
func (s *Store) AuditHead(ctx context.Context) (AuditHead, error) {
	var h AuditHead
	if err := s.read.QueryRowContext(ctx, "SELECT seq, hash, key_id FROM audit_head WHERE id = 1").Scan(&h.Seq, &h.Hash, &h.KeyID); err != nil {
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
	return listAudit(ctx, s.read, f)
}

// ListAudit returns one page of records matching f as the transaction
// sees them.
func (t *Tx) ListAudit(ctx context.Context, f AuditFilter) ([]AuditRecord, error) {
	return listAudit(ctx, t.tx, f)
}

func listAudit(ctx context.Context, db querier, f AuditFilter) ([]AuditRecord, error) {
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
	rows, err := db.QueryContext(ctx, q, args...)
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

// AuditKey is what the database knows of the audit key its chain is keyed
// under: the key's id and its Ed25519 checkpoint public key, never the key.
type AuditKey struct {
	ID string
	// PublicKey is the raw Ed25519 public key, in standard base64.
	PublicKey string
	// KeyedFrom is the first record chained under the key.
	KeyedFrom int64
	CreatedAt time.Time
}

// AuditKeys lists the recorded audit keys, oldest first.
func (s *Store) AuditKeys(ctx context.Context) ([]AuditKey, error) {
	return queryAuditKeys(ctx, s.read)
}

// AuditKeys lists the recorded audit keys inside the transaction.
func (t *Tx) AuditKeys(ctx context.Context) ([]AuditKey, error) { return queryAuditKeys(ctx, t.tx) }

func queryAuditKeys(ctx context.Context, db querier) ([]AuditKey, error) {
	rows, err := db.QueryContext(ctx, "SELECT key_id, public_key, keyed_from, created_at FROM audit_keys ORDER BY keyed_from, key_id")
	if err != nil {
		return nil, fmt.Errorf("store: audit keys: %w", err)
	}
	defer rows.Close()
	var out []AuditKey
	for rows.Next() {
		var k AuditKey
		var c int64
		if err := rows.Scan(&k.ID, &k.PublicKey, &k.KeyedFrom, &c); err != nil {
			return nil, fmt.Errorf("store: audit keys: %w", err)
		}
		k.CreatedAt = fromMicros(c)
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: audit keys: %w", err)
	}
	return out, nil
}

// PutAuditKey records the audit key the chain is keyed under from
// k.KeyedFrom. The caller holds the audit head (LockAuditHead).
func (t *Tx) PutAuditKey(ctx context.Context, k AuditKey) error {
	if _, err := t.tx.ExecContext(ctx, "INSERT INTO audit_keys (key_id, public_key, keyed_from, created_at) VALUES ($1, $2, $3, $4)",
		k.ID, k.PublicKey, k.KeyedFrom, micros(k.CreatedAt)); err != nil {
		return fmt.Errorf("store: record audit key %s: %w", k.ID, mapErr(err))
	}
	return nil
}

// FirstKeyedAuditRecord returns the lowest seq of a record that names an
// audit key, and that key's id; ErrNotFound when every record is unkeyed.
func (s *Store) FirstKeyedAuditRecord(ctx context.Context) (int64, string, error) {
	var seq int64
	var id string
	err := s.read.QueryRowContext(ctx, "SELECT seq, key_id FROM audit_records WHERE key_id <> '' ORDER BY seq LIMIT 1").Scan(&seq, &id)
	if err != nil {
		return 0, "", fmt.Errorf("store: first keyed audit record: %w", mapErr(err))
	}
	return seq, id, nil
}

// AuditCheckpoint is a signed checkpoint of the audit chain: the head at
// Seq was HeadHash, signed with the Ed25519 key of the audit key KeyID.
type AuditCheckpoint struct {
	Seq       int64
	HeadHash  string
	KeyedFrom int64
	Time      time.Time
	KeyID     string
	Signature string
}

const auditCheckpointColumns = "seq, head_hash, keyed_from, time, key_id, signature"

// PutAuditCheckpoint stores c unless a checkpoint of the same seq is
// stored already (another node signed the same head); inserted says which.
func (t *Tx) PutAuditCheckpoint(ctx context.Context, c AuditCheckpoint) (inserted bool, err error) {
	res, err := t.tx.ExecContext(ctx, "INSERT INTO audit_checkpoints ("+auditCheckpointColumns+") VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (seq) DO NOTHING",
		c.Seq, c.HeadHash, c.KeyedFrom, micros(c.Time), c.KeyID, c.Signature)
	if err != nil {
		return false, fmt.Errorf("store: store audit checkpoint %d: %w", c.Seq, mapErr(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("store: store audit checkpoint %d: %w", c.Seq, err)
	}
	return n == 1, nil
}

// AuditCheckpoint returns the checkpoint of record seq as the transaction
// sees it.
func (t *Tx) AuditCheckpoint(ctx context.Context, seq int64) (AuditCheckpoint, error) {
	c, err := scanAuditCheckpoint(t.tx.QueryRowContext(ctx, "SELECT "+auditCheckpointColumns+" FROM audit_checkpoints WHERE seq = $1", seq))
	if err != nil {
		return AuditCheckpoint{}, fmt.Errorf("store: audit checkpoint %d: %w", seq, mapErr(err))
	}
	return c, nil
}

// AuditCheckpoints returns up to limit checkpoints with seq > afterSeq,
// oldest first.
func (s *Store) AuditCheckpoints(ctx context.Context, afterSeq int64, limit int) ([]AuditCheckpoint, error) {
	rows, err := s.read.QueryContext(ctx, "SELECT "+auditCheckpointColumns+" FROM audit_checkpoints WHERE seq > $1 ORDER BY seq LIMIT $2", afterSeq, limit)
	if err != nil {
		return nil, fmt.Errorf("store: audit checkpoints: %w", err)
	}
	defer rows.Close()
	var out []AuditCheckpoint
	for rows.Next() {
		c, err := scanAuditCheckpoint(rows)
		if err != nil {
			return nil, fmt.Errorf("store: audit checkpoints: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: audit checkpoints: %w", err)
	}
	return out, nil
}

// LatestAuditCheckpoint returns the checkpoint with the highest seq;
// ErrNotFound when there is none.
func (s *Store) LatestAuditCheckpoint(ctx context.Context) (AuditCheckpoint, error) {
	c, err := scanAuditCheckpoint(s.read.QueryRowContext(ctx, "SELECT "+auditCheckpointColumns+" FROM audit_checkpoints ORDER BY seq DESC LIMIT 1"))
	if err != nil {
		return AuditCheckpoint{}, fmt.Errorf("store: latest audit checkpoint: %w", mapErr(err))
	}
	return c, nil
}

func scanAuditCheckpoint(row interface{ Scan(...any) error }) (AuditCheckpoint, error) {
	var c AuditCheckpoint
	var t int64
	if err := row.Scan(&c.Seq, &c.HeadHash, &c.KeyedFrom, &t, &c.KeyID, &c.Signature); err != nil {
		return AuditCheckpoint{}, err
	}
	c.Time = fromMicros(t)
	return c, nil
}
