// Package audit owns trustflow's tamper-evident audit log: records appended
// inside the caller's transaction, each committing to its predecessor;
// signed checkpoints that anchor the chain outside the database;
// verification of the whole chain against them; export as JSON lines.
//
// # The chain
//
// Each record stores a MAC over a canonical JSON encoding of itself, which
// includes the previous record's MAC (prev_hash), so an edited, inserted,
// removed or reordered record breaks the chain. The MAC is HMAC-SHA256 under
// the audit key ([Key]), which lives outside the database (a file in the
// data dir, or an environment variable): someone who can write the database
// but does not hold the key cannot recompute the chain after an edit.
// Records written before the database had an audit key keep their unkeyed
// SHA-256 link ([Hash]); the first keyed record commits to the last of them,
// so they stay covered. The database records the key's id and the first
// keyed record (keyed_from), and a node whose key has another id refuses to
// start ([WrongKeyError]).
//
// # Checkpoints
//
// A MAC chain alone cannot show that records at its end were removed and
// the head moved back. A [Checkpoint] is the head (seq and MAC) signed with
// an Ed25519 key derived from the audit key; its public key can be given to
// an assessor, who verifies it without any secret. Checkpoints are made
// every few minutes or records ([Log.Start]) and on demand
// ([Log.Checkpoint]), each only after the records since the previous one
// were verified; each is written to the log stream, the database, and the
// node's data dir (audit.checkpoint, the latest only). [Log.Verify] checks
// the chain against all of them, so a truncation behind any checkpoint
// outside the database is detected.
package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
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
	// KeyID names the audit key whose HMAC-SHA256 Hash is; empty for a
	// record written before the database had an audit key, whose Hash is
	// the SHA-256 of [Hash].
	KeyID string `json:"key_id,omitempty"`
}

// New returns an unkeyed Log over st, for tests and tools that read: it
// appends SHA-256-linked records while the chain has none keyed, refuses to
// append once it is keyed, and makes no checkpoints. The server opens a
// keyed Log with [Open]. A nil clock means the wall clock.
func New(st *store.Store, c clock.Clock) *Log {
	cfg := Config{Store: st, Clock: c}.withDefaults()
	return &Log{cfg: cfg, store: st, clock: cfg.Clock, log: cfg.Logger, stop: make(chan struct{}), done: make(chan struct{})}
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

// canonicalKeyed is the layout a keyed record's MAC commits to: the
// unkeyed layout with v 2 and the audit key's id last.
type canonicalKeyed struct {
	canonical
	KeyID string `json:"key_id"`
}

func canonicalOf(r Record, v int) canonical {
	details := r.Details
	if len(details) == 0 {
		details = json.RawMessage("{}")
	}
	return canonical{
		V: v, Seq: r.Seq, Time: r.Time.UTC().Format(timeLayout), Actor: r.Actor,
		Action: r.Action, Target: r.Target, Outcome: r.Outcome, Details: details, PrevHash: r.PrevHash,
	}
}

// Hash computes the hash an unkeyed record (one without a KeyID, written
// before the database had an audit key) must carry: the SHA-256, in hex,
// of its canonical encoding. It refuses a keyed record, whose MAC needs the
// audit key ([Key.MAC]).
func Hash(r Record) (string, error) {
	if r.KeyID != "" {
		return "", fmt.Errorf("audit: record %d is keyed under audit key %s: its hash is an HMAC that needs the key", r.Seq, r.KeyID)
	}
	b, err := json.Marshal(canonicalOf(r, 1))
	if err != nil {
		return "", fmt.Errorf("audit: encode record %d: %w", r.Seq, err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// MAC computes the hash a record keyed under k must carry: HMAC-SHA256, in
// hex, of its canonical encoding with v 2 and k's id. It refuses a record
// that names another key.
func (k *Key) MAC(r Record) (string, error) {
	if r.KeyID != k.id {
		return "", fmt.Errorf("audit: record %d names audit key %q, not %s", r.Seq, r.KeyID, k.id)
	}
	b, err := json.Marshal(canonicalKeyed{canonical: canonicalOf(r, 2), KeyID: r.KeyID})
	if err != nil {
		return "", fmt.Errorf("audit: encode record %d: %w", r.Seq, err)
	}
	m := k.newMAC()
	m.Write(b)
	return hex.EncodeToString(m.Sum(nil)), nil
}

// NotKeyedError means an append was refused because the chain is keyed
// under an audit key this Log does not hold.
type NotKeyedError struct {
	// KeyID is the key the chain's head is keyed under.
	KeyID string
	// Holds is this Log's key id; empty for an unkeyed Log.
	Holds string
}

func (e *NotKeyedError) Error() string {
	if e.Holds == "" {
		return fmt.Sprintf("audit: the chain is keyed under audit key %s and this log holds no audit key; append through the server (audit.Open)", e.KeyID)
	}
	return fmt.Sprintf("audit: the chain is keyed under audit key %s, not this node's %s", e.KeyID, e.Holds)
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
	return l.appendAt(ctx, tx, head, e.Actor, e.Action, e.Target, e.Outcome, db)
}

// appendAt chains a record after head, which the caller holds.
func (l *Log) appendAt(ctx context.Context, tx *store.Tx, head store.AuditHead, actor Actor, action, target, outcome string, details []byte) (Record, error) {
	key := l.key
	if head.KeyID != "" && (key == nil || key.id != head.KeyID) {
		nk := &NotKeyedError{KeyID: head.KeyID}
		if key != nil {
			nk.Holds = key.id
		}
		return Record{}, fmt.Errorf("audit: append %s: %w", action, nk)
	}
	r := Record{
		Seq:      head.Seq + 1,
		Time:     l.clock.Now().UTC().Truncate(time.Microsecond),
		Actor:    actor,
		Action:   action,
		Target:   target,
		Outcome:  outcome,
		Details:  details,
		PrevHash: head.Hash,
	}
	var err error
	if key != nil {
		r.KeyID = key.id
		r.Hash, err = key.MAC(r)
	} else {
		r.Hash, err = Hash(r)
	}
	if err != nil {
		return Record{}, err
	}
	if err := tx.AppendAudit(ctx, toStore(r)); err != nil {
		return Record{}, fmt.Errorf("audit: append %s: %w", action, err)
	}
	return r, nil
}

// Record appends e in a transaction of its own, for events that change
// nothing else (a refused request, a failed handshake). Concurrent Records
// share their commit (store.InTxGrouped): each still returns only once its
// record is committed, and one that fails adds nothing to the chain.
func (l *Log) Record(ctx context.Context, e Entry) error {
	return l.store.InTxGrouped(ctx, func(tx *store.Tx) error {
		_, err := l.Append(ctx, tx, e)
		return err
	})
}

func toStore(r Record) store.AuditRecord {
	return store.AuditRecord{
		Seq: r.Seq, Time: r.Time, ActorID: r.Actor.ID, ActorName: r.Actor.Name, ActorRole: r.Actor.Role,
		Action: r.Action, Target: r.Target, Outcome: r.Outcome, Details: string(r.Details),
		PrevHash: r.PrevHash, Hash: r.Hash, KeyID: r.KeyID,
	}
}

func fromStore(r store.AuditRecord) Record {
	return Record{
		Seq: r.Seq, Time: r.Time, Actor: Actor{ID: r.ActorID, Name: r.ActorName, Role: r.ActorRole},
		Action: r.Action, Target: r.Target, Outcome: r.Outcome, Details: json.RawMessage(r.Details),
		PrevHash: r.PrevHash, Hash: r.Hash, KeyID: r.KeyID,
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

// ExportedCheckpoint is the form of a checkpoint line in an export:
// {"checkpoint": {...}}. No record line has a "checkpoint" field.
type ExportedCheckpoint struct {
	Checkpoint Checkpoint `json:"checkpoint"`
}

// Export writes every record matching f, oldest first, as JSON lines, and
// between them every checkpoint in the database (filtered by f.Since and
// f.Until on its time only) as a line {"checkpoint": {...}}, right after
// the records up to the one it covers. It returns the number of records
// written.
func (l *Log) Export(ctx context.Context, w io.Writer, f Filter) (int, error) {
	f.Ascending = true
	f.BeforeSeq = 0
	f.Limit = 1000
	keys, err := l.store.AuditKeys(ctx)
	if err != nil {
		return 0, fmt.Errorf("audit: export: %w", err)
	}
	pubs := map[string]string{}
	for _, k := range keys {
		pubs[k.ID] = k.PublicKey
	}
	enc := json.NewEncoder(w)
	cps := checkpointStream{store: l.store, after: f.AfterSeq, since: f.Since, until: f.Until, pubs: pubs, enc: enc}
	n := 0
	for {
		page, err := l.List(ctx, f)
		if err != nil {
			return n, err
		}
		for _, r := range page {
			if err := cps.writeBefore(ctx, r.Seq); err != nil {
				return n, err
			}
			if err := enc.Encode(r); err != nil {
				return n, fmt.Errorf("audit: export record %d: %w", r.Seq, err)
			}
			n++
		}
		if len(page) < f.Limit {
			return n, cps.writeBefore(ctx, math.MaxInt64)
		}
		f.AfterSeq = page[len(page)-1].Seq
	}
}

// checkpointStream writes the database's checkpoints in seq order.
type checkpointStream struct {
	store        *store.Store
	after        int64
	since, until time.Time
	pubs         map[string]string
	enc          *json.Encoder
	page         []store.AuditCheckpoint
	done         bool
}

// writeBefore writes every checkpoint not yet written whose seq is below
// seq.
func (s *checkpointStream) writeBefore(ctx context.Context, seq int64) error {
	for {
		if len(s.page) == 0 && !s.done {
			page, err := s.store.AuditCheckpoints(ctx, s.after, 1000)
			if err != nil {
				return fmt.Errorf("audit: export: %w", err)
			}
			s.page, s.done = page, len(page) < 1000
		}
		if len(s.page) == 0 || s.page[0].Seq >= seq {
			return nil
		}
		c := s.page[0]
		s.page, s.after = s.page[1:], c.Seq
		if (!s.since.IsZero() && c.Time.Before(s.since)) || (!s.until.IsZero() && !c.Time.Before(s.until)) {
			continue
		}
		if err := s.enc.Encode(ExportedCheckpoint{Checkpoint: fromStoreCheckpoint(c, s.pubs)}); err != nil {
			return fmt.Errorf("audit: export checkpoint %d: %w", c.Seq, err)
		}
	}
}
