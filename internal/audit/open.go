package audit

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/store"
)

// CheckpointFileName is the node's copy of the latest checkpoint, in its
// data dir.
const CheckpointFileName = "audit.checkpoint"

// Config configures a keyed Log. Store and Source are required.
type Config struct {
	Store *store.Store
	// Source holds the audit key. On a database that records no audit key,
	// Open creates the key there if it has none.
	Source KeySource
	// Clock defaults to the wall clock.
	Clock clock.Clock
	// Logger receives every checkpoint (message "audit checkpoint") and
	// every problem the checkpointer finds. Defaults to slog.Default().
	Logger *slog.Logger
	// DataDir is where the node keeps its copy of the latest checkpoint
	// (DataDir/audit.checkpoint). Empty keeps none.
	DataDir string
	// CheckpointEvery is how long after the latest checkpoint a new one is
	// made, if records were appended since. Defaults to 5m.
	CheckpointEvery time.Duration
	// CheckpointRecords is how many records appended since the latest
	// checkpoint make a new one before CheckpointEvery. Defaults to 1000.
	CheckpointRecords int64
	// PollEvery is how often the checkpointer looks at the head. Defaults
	// to 10s, or CheckpointEvery when that is shorter.
	PollEvery time.Duration
}

func (c Config) withDefaults() Config {
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.CheckpointEvery == 0 {
		c.CheckpointEvery = 5 * time.Minute
	}
	if c.CheckpointRecords == 0 {
		c.CheckpointRecords = 1000
	}
	if c.PollEvery == 0 {
		c.PollEvery = min(10*time.Second, c.CheckpointEvery)
	}
	return c
}

// Log appends to and reads the audit chain, and makes its checkpoints.
type Log struct {
	cfg   Config
	store *store.Store
	clock clock.Clock
	log   *slog.Logger
	// key is nil for an unkeyed Log (New).
	key *Key
	// keyedFrom is the first keyed record as the database said at Open.
	keyedFrom int64

	// Created reports that Open created the audit key in its source.
	Created bool
	// Registered reports that Open keyed the chain: it recorded the audit
	// key in a database that had none and appended the first keyed record.
	Registered bool

	cpMu sync.Mutex // one checkpoint at a time in this process; guards the file

	problemMu   sync.Mutex
	lastProblem string // the broken chain last logged

	started  atomic.Bool
	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

// WrongKeyError means the node's audit key is not the one the database's
// chain is keyed under.
type WrongKeyError struct {
	// Expected is the audit key id recorded in the database.
	Expected string
	// Source describes where this node looked.
	Source string
	// Holds is the id of the key the source holds; empty when none.
	Holds string
}

func (e *WrongKeyError) Error() string {
	holds := "no key"
	if e.Holds != "" {
		holds = e.Holds
	}
	return fmt.Sprintf("audit: the database's audit chain is keyed under audit key %s, but this node's source %s holds %s; "+
		"copy the audit key from a node that serves this database (its data dir's audit.key file, or the same --audit-key) and start again",
		e.Expected, e.Source, holds)
}

// Open opens the keyed audit log: it loads the node's audit key and checks
// that it is the key the database records. On a database that records none
// (a new installation, or one from before audit keys) it creates the key in
// the source if the source has none, records its id and public key, appends
// the first keyed record (audit.key.record, which commits to the last
// unkeyed one), and makes the first checkpoint.
func Open(ctx context.Context, cfg Config) (*Log, error) {
	if cfg.Store == nil || cfg.Source == nil {
		return nil, errors.New("audit: Store and Source are required")
	}
	cfg = cfg.withDefaults()
	l := &Log{cfg: cfg, store: cfg.Store, clock: cfg.Clock, log: cfg.Logger, stop: make(chan struct{}), done: make(chan struct{})}
	key, err := cfg.Source.Load(ctx)
	if err != nil && !errors.Is(err, ErrNoKey) {
		return nil, fmt.Errorf("audit: load the audit key: %w", err)
	}
	reg, err := cfg.Store.AuditKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit: open: %w", err)
	}
	if len(reg) == 0 {
		seq, id, err := cfg.Store.FirstKeyedAuditRecord(ctx)
		switch {
		case err == nil:
			return nil, fmt.Errorf("audit: record %d and later are keyed under audit key %s, but the database records no audit key (its audit_keys row was deleted); "+
				"restore that row from a backup: a chain that was keyed is never keyed again from a later record", seq, id)
		case !errors.Is(err, store.ErrNotFound):
			return nil, fmt.Errorf("audit: open: %w", err)
		}
		if key == nil {
			if key, err = cfg.Source.Create(ctx); errors.Is(err, fs.ErrExist) {
				key, err = cfg.Source.Load(ctx) // another process on this data dir created it first
			} else if err == nil {
				l.Created = true
			}
			if err != nil {
				return nil, fmt.Errorf("audit: create the audit key: %w", err)
			}
		}
		l.key = key
		if err := l.register(ctx); err != nil {
			return nil, err
		}
		if reg, err = cfg.Store.AuditKeys(ctx); err != nil {
			return nil, fmt.Errorf("audit: open: %w", err)
		}
	}
	if len(reg) != 1 {
		return nil, fmt.Errorf("audit: the database records %d audit keys; this version keys the chain under exactly one", len(reg))
	}
	want := reg[0]
	if key == nil || key.ID() != want.ID {
		e := &WrongKeyError{Expected: want.ID, Source: cfg.Source.String()}
		if key != nil {
			e.Holds = key.ID()
		}
		return nil, e
	}
	if want.PublicKey != base64.StdEncoding.EncodeToString(key.pub) {
		return nil, fmt.Errorf("audit: the database records audit key %s with public key %s, which is not that key's public key (%s): the audit_keys row was edited; set public_key back",
			want.ID, want.PublicKey, base64.StdEncoding.EncodeToString(key.pub))
	}
	l.key, l.keyedFrom = key, want.KeyedFrom
	if l.Registered {
		if _, err := l.Checkpoint(ctx, nil); err != nil {
			var broken *BrokenError
			if errors.As(err, &broken) && l.checkpointFile() != "" {
				return nil, fmt.Errorf("audit: the first checkpoint of this database: %w; if this database replaced the one the data dir's %s describes on purpose "+
					"(a new or restored database), move that file aside and start again", err, CheckpointFileName)
			}
			return nil, err
		}
	}
	return l, nil
}

// register records l.key as the chain's audit key and appends the first
// keyed record, unless another node recorded a key first.
func (l *Log) register(ctx context.Context) error {
	now := l.clock.Now()
	err := l.store.InTx(ctx, func(tx *store.Tx) error {
		head, err := tx.LockAuditHead(ctx)
		if err != nil {
			return err
		}
		reg, err := tx.AuditKeys(ctx)
		if err != nil || len(reg) > 0 {
			return err // another node recorded one first
		}
		if head.KeyID != "" {
			return fmt.Errorf("the head (record %d) is keyed under audit key %s, but the database records no audit key", head.Seq, head.KeyID)
		}
		pub := base64.StdEncoding.EncodeToString(l.key.pub)
		if err := tx.PutAuditKey(ctx, store.AuditKey{ID: l.key.id, PublicKey: pub, KeyedFrom: head.Seq + 1, CreatedAt: now}); err != nil {
			return err
		}
		details, err := json.Marshal(map[string]any{"key_id": l.key.id, "public_key": pub, "keyed_from": head.Seq + 1,
			"unkeyed_records": head.Seq, "source": l.cfg.Source.String(), "created": l.Created})
		if err != nil {
			return err
		}
		if _, err := l.appendAt(ctx, tx, head, System, "audit.key.record", "audit-key/"+l.key.id, OutcomeSuccess, details); err != nil {
			return err
		}
		l.Registered = true
		return nil
	})
	if err != nil {
		l.Registered = false
		return fmt.Errorf("audit: record the audit key: %w", err)
	}
	return nil
}

// KeyID returns the id of the audit key; empty for an unkeyed Log.
func (l *Log) KeyID() string {
	if l.key == nil {
		return ""
	}
	return l.key.id
}

// checkpointFile is the node's checkpoint copy; empty when it keeps none.
func (l *Log) checkpointFile() string {
	if l.cfg.DataDir == "" {
		return ""
	}
	return filepath.Join(l.cfg.DataDir, CheckpointFileName)
}
