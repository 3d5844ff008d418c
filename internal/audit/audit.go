// Package audit owns trustflow's tamper-evident audit log: records appended
// inside the caller's transaction, each committing to its predecessor with a
// SHA-256 hash chain; verification of the whole chain; export as JSON lines.
package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/store"
)

// Outcomes of an audited action.
const (
	OutcomeSuccess = "success"
	OutcomeFailure = "failure"
	OutcomeDenied  = "denied"
)

// Actor is who caused a change: a token's principal, or the system itself.
type Actor struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Role string `json:"role"`
}

// System is the actor for changes trustflow makes on its own (bootstrap,
// schedules, expiry scans).
var System = Actor{ID: "system", Name: "trustflow", Role: "system"}

// Entry is what a caller asks to record. Details must never hold a secret.
type Entry struct {
	Actor   Actor
	Action  string // dotted verb, e.g. "token.create"
	Target  string // what was acted on, e.g. "token/tok_1a2b"
	Outcome string // success (default), failure or denied
	Details map[string]any
}

// Record is a stored, chained audit record.
type Record struct {
	Seq      int64           `json:"seq"`
	Time     time.Time       `json:"time"`
	Actor    Actor           `json:"actor"`
	Action   string          `json:"action"`
	Target   string          `json:"target"`
	Outcome  string          `json:"outcome"`
	Details  json.RawMessage `json:"details"`
	PrevHash string          `json:"prev_hash"`
	Hash     string          `json:"hash"`
}

// Log appends to and reads the audit chain.
type Log struct {
	store *store.Store
	clock clock.Clock
}

// New returns a Log over st. A nil clock means the wall clock.
func New(st *store.Store, c clock.Clock) *Log {
	if c == nil {
		c = clock.Real{}
	}
	return &Log{store: st, clock: c}
}

// canonical is the exact byte layout a record's hash commits to: a JSON
// object with fixed field order, time in RFC 3339 with microseconds in UTC,
// and details as stored.
type canonical struct {
	V        int             `json:"v"`
	Seq      int64           `json:"seq"`
	Time     string          `json:"time"`
	Actor    Actor           `json:"actor"`
	Action   string          `json:"action"`
	Target   string          `json:"target"`
	Outcome  string          `json:"outcome"`
	Details  json.RawMessage `json:"details"`
	PrevHash string          `json:"prev_hash"`
}

const timeLayout = "2006-01-02T15:04:05.000000Z07:00"

// Hash computes the hash a record must carry.
func Hash(r Record) (string, error) {
	details := r.Details
	if len(details) == 0 {
		details = json.RawMessage("{}")
	}
	b, err := json.Marshal(canonical{
		V: 1, Seq: r.Seq, Time: r.Time.UTC().Format(timeLayout), Actor: r.Actor,
		Action: r.Action, Target: r.Target, Outcome: r.Outcome, Details: details, PrevHash: r.PrevHash,
	})
	if err != nil {
		return "", fmt.Errorf("audit: encode record %d: %w", r.Seq, err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// Append records e inside tx, chained after the current head. It must run in
// the same transaction as the change it records.
func (l *Log) Append(ctx context.Context, tx *store.Tx, e Entry) (Record, error) {
	if e.Action == "" {
		return Record{}, errors.New("audit: append: action is required")
	}
	if e.Outcome == "" {
		e.Outcome = OutcomeSuccess
	}
	details := e.Details
	if details == nil {
		details = map[string]any{}
	}
	// encoding/json sorts map keys, which makes this encoding canonical.
	db, err := json.Marshal(details)
	if err != nil {
		return Record{}, fmt.Errorf("audit: append %s: encode details: %w", e.Action, err)
	}
	head, err := tx.LockAuditHead(ctx)
	if err != nil {
		return Record{}, fmt.Errorf("audit: append %s: %w", e.Action, err)
	}
	r := Record{
		Seq:      head.Seq + 1,
		Time:     l.clock.Now().UTC().Truncate(time.Microsecond),
		Actor:    e.Actor,
		Action:   e.Action,
		Target:   e.Target,
		Outcome:  e.Outcome,
		Details:  db,
		PrevHash: head.Hash,
	}
	if r.Hash, err = Hash(r); err != nil {
		return Record{}, err
	}
	if err := tx.AppendAudit(ctx, toStore(r)); err != nil {
		return Record{}, fmt.Errorf("audit: append %s: %w", e.Action, err)
	}
	return r, nil
}

// Record appends e in a transaction of its own, for events that change
// nothing else (a refused request, a failed handshake).
func (l *Log) Record(ctx context.Context, e Entry) error {
	return l.store.InTx(ctx, func(tx *store.Tx) error {
		_, err := l.Append(ctx, tx, e)
		return err
	})
}

func toStore(r Record) store.AuditRecord {
	return store.AuditRecord{
		Seq: r.Seq, Time: r.Time, ActorID: r.Actor.ID, ActorName: r.Actor.Name, ActorRole: r.Actor.Role,
		Action: r.Action, Target: r.Target, Outcome: r.Outcome, Details: string(r.Details),
		PrevHash: r.PrevHash, Hash: r.Hash,
	}
}

func fromStore(r store.AuditRecord) Record {
	return Record{
		Seq: r.Seq, Time: r.Time, Actor: Actor{ID: r.ActorID, Name: r.ActorName, Role: r.ActorRole},
		Action: r.Action, Target: r.Target, Outcome: r.Outcome, Details: json.RawMessage(r.Details),
		PrevHash: r.PrevHash, Hash: r.Hash,
	}
}

// Filter selects records for List and Export.
type Filter = store.AuditFilter

// List returns one page of records, newest first unless f.Ascending.
func (l *Log) List(ctx context.Context, f Filter) ([]Record, error) {
	rows, err := l.store.ListAudit(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("audit: list: %w", err)
	}
	out := make([]Record, len(rows))
	for i, r := range rows {
		out[i] = fromStore(r)
	}
	return out, nil
}

// Export writes every record matching f, oldest first, as JSON lines.
func (l *Log) Export(ctx context.Context, w io.Writer, f Filter) (int, error) {
	f.Ascending = true
	f.BeforeSeq = 0
	f.Limit = 1000
	enc := json.NewEncoder(w)
	n := 0
	for {
		page, err := l.List(ctx, f)
		if err != nil {
			return n, err
		}
		for _, r := range page {
			if err := enc.Encode(r); err != nil {
				return n, fmt.Errorf("audit: export record %d: %w", r.Seq, err)
			}
			n++
		}
		if len(page) < f.Limit {
			return n, nil
		}
		f.AfterSeq = page[len(page)-1].Seq
	}
}
