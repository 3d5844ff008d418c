package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// KEK states recorded in the keks table.
const (
	KEKActive   = "active"
	KEKRetiring = "retiring"
	KEKRetired  = "retired"
)

// KEKRecord is what the database knows of a key-encryption key: its id and
// state, never the key.
type KEKRecord struct {
	ID          string
	State       string
	Source      string
	CreatedAt   time.Time
	ActivatedAt *time.Time
	RetiredAt   *time.Time
}

const kekColumns = "id, state, source, created_at, activated_at, retired_at"

func scanKEK(row interface{ Scan(...any) error }) (KEKRecord, error) {
	var k KEKRecord
	var c int64
	var a, r sql.NullInt64
	if err := row.Scan(&k.ID, &k.State, &k.Source, &c, &a, &r); err != nil {
		return KEKRecord{}, err
	}
	k.CreatedAt = fromMicros(c)
	k.ActivatedAt, k.RetiredAt = fromNullMicros(a), fromNullMicros(r)
	return k, nil
}

// KEKs lists the recorded key-encryption keys, oldest first.
func (s *Store) KEKs(ctx context.Context) ([]KEKRecord, error) {
	return queryKEKs(ctx, s.read)
}

// KEKs lists the recorded key-encryption keys inside the transaction.
func (t *Tx) KEKs(ctx context.Context) ([]KEKRecord, error) { return queryKEKs(ctx, t.tx) }

func queryKEKs(ctx context.Context, q querier) ([]KEKRecord, error) {
	rows, err := q.QueryContext(ctx, "SELECT "+kekColumns+" FROM keks ORDER BY created_at, id")
	if err != nil {
		return nil, fmt.Errorf("store: key-encryption keys: %w", err)
	}
	defer rows.Close()
	var out []KEKRecord
	for rows.Next() {
		k, err := scanKEK(rows)
		if err != nil {
			return nil, fmt.Errorf("store: key-encryption keys: %w", err)
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// PutKEK inserts or updates a key-encryption key's record.
func (t *Tx) PutKEK(ctx context.Context, k KEKRecord) error {
	_, err := t.tx.ExecContext(ctx, "INSERT INTO keks ("+kekColumns+") VALUES ($1, $2, $3, $4, $5, $6) "+
		"ON CONFLICT (id) DO UPDATE SET state = excluded.state, source = excluded.source, activated_at = excluded.activated_at, retired_at = excluded.retired_at",
		k.ID, k.State, k.Source, micros(k.CreatedAt), nullMicros(k.ActivatedAt), nullMicros(k.RetiredAt))
	if err != nil {
		return fmt.Errorf("store: record key-encryption key %s: %w", k.ID, mapErr(err))
	}
	return nil
}

// LockKEKs serialises key-encryption key changes across nodes for the rest
// of the transaction (on SQLite the single writer already does).
func (t *Tx) LockKEKs(ctx context.Context) error {
	if t.dialect != Postgres {
		return nil
	}
	if _, err := t.tx.ExecContext(ctx, "LOCK TABLE keks IN EXCLUSIVE MODE"); err != nil {
		return fmt.Errorf("store: lock key-encryption keys: %w", err)
	}
	return nil
}
