// Package custody owns which key-encryption key (KEK) seals this
// installation's secrets, and keeps every sealed value readable through a
// rotation, a restart or a node that joins with the wrong key.
//
// The KEKs themselves live in a [seal.Source] (a file, an environment
// variable, a PKCS#11 token); the database records only their ids and states
// (store.KEKRecord): exactly one is active, and new seals use it on every
// node. At start, [Open] refuses a node whose source does not hold the active
// KEK, and counts every sealed value of the schema (store.SealedColumns) by
// KEK id, refusing to start while any names a KEK the source lacks. While
// running, the manager re-reads the active id every RefreshEvery: a node
// that learns of a KEK it does not hold stops sealing, reports not ready, and
// (through [Manager.Ready]) stops taking run jobs until its source has it.
//
// [Manager.Rotate] stages a new KEK in the source, makes it active in the
// database, re-wraps every sealed value in small compare-and-swap batches,
// verifies that every value opens under the new KEK alone, and only then
// retires the old one and lets the source drop it. A crash at any point
// leaves every value readable under the old or the new KEK, and the next
// start finishes the rotation.
package custody

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/seal"
	"github.com/trustflow/trustflow/internal/store"
)

// Config configures a Manager. Store, Audit and Source are required.
type Config struct {
	Store  *store.Store
	Audit  *audit.Log
	Source seal.Source
	// Clock defaults to the wall clock.
	Clock clock.Clock
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// AllowMissingKEK starts the node even when sealed values name KEKs its
	// source does not hold (those values stay unreadable); the start is
	// audited as kek.missing_allowed.
	AllowMissingKEK bool
	// RefreshEvery is how often the node re-reads the active KEK id.
	// Defaults to 2s.
	RefreshEvery time.Duration
	// BatchSize is how many values one re-wrap transaction changes.
	// Defaults to 200.
	BatchSize int
	// OnKeyring receives every keyring the manager switches to (the trust
	// store's UseKeyring). Optional.
	OnKeyring func(*seal.Keyring)
}

func (c Config) withDefaults() Config {
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.RefreshEvery == 0 {
		c.RefreshEvery = 2 * time.Second
	}
	if c.BatchSize == 0 {
		c.BatchSize = 200
	}
	return c
}

// Manager holds the node's keyring and keeps it in step with the database.
type Manager struct {
	cfg Config
	// Created reports that Open created the source's first KEK.
	Created bool

	keyring atomic.Pointer[seal.Keyring]

	mu       sync.Mutex
	held     map[string]*seal.KEK
	activeID string
	notReady error // non-nil while the node lacks the active KEK

	rotating sync.Mutex // one rotation at a time in this process

	started  atomic.Bool
	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

// WrongKEKError means the node's source does not hold the KEK the database
// names as active.
type WrongKEKError struct {
	// Expected is the active KEK id recorded in the database.
	Expected string
	// Source describes where this node looked.
	Source string
	// Holds lists the ids the source holds.
	Holds []string
}

func (e *WrongKEKError) Error() string {
	holds := "no key"
	if len(e.Holds) > 0 {
		holds = strings.Join(e.Holds, ", ")
	}
	return fmt.Sprintf("custody: the database's active key-encryption key is %s, but this node's source %s holds %s; "+
		"copy the key from a node that serves this database (its data dir's kek file, or the same --kek) and start again",
		e.Expected, e.Source, holds)
}

// MissingKEKError means stored sealed values name KEKs the source does not
// hold.
type MissingKEKError struct {
	Source string
	// Missing maps each missing KEK id to "table.column: n" counts.
	Missing map[string][]string
}

func (e *MissingKEKError) Error() string {
	ids := make([]string, 0, len(e.Missing))
	for id := range e.Missing {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = id + " (" + strings.Join(e.Missing[id], ", ") + ")"
	}
	return fmt.Sprintf("custody: sealed values in the database are wrapped by key-encryption keys that %s does not hold: %s; "+
		"give this node those keys (as previous keys of its source), or start with --allow-missing-kek to serve anyway (those values stay unreadable; audited)",
		e.Source, strings.Join(parts, "; "))
}

// Open loads the node's KEKs, records the first one when the database knows
// none, and checks that the source holds the active KEK and every KEK that a
// stored value names. It finishes an interrupted rotation before returning.
func Open(ctx context.Context, cfg Config) (*Manager, error) {
	cfg = cfg.withDefaults()
	if cfg.Store == nil || cfg.Audit == nil || cfg.Source == nil {
		return nil, errors.New("custody: Store, Audit and Source are required")
	}
	m := &Manager{cfg: cfg, held: map[string]*seal.KEK{}, stop: make(chan struct{}), done: make(chan struct{})}
	keks, err := cfg.Source.Load(ctx)
	if err != nil && !errors.Is(err, seal.ErrNoKEK) {
		return nil, fmt.Errorf("custody: load key-encryption keys: %w", err)
	}
	recs, err := cfg.Store.KEKs(ctx)
	if err != nil {
		return nil, err
	}
	counts, err := cfg.Store.SealedKEKCounts(ctx)
	if err != nil {
		return nil, err
	}
	active := activeOf(recs)
	if active == "" {
		if keks, err = m.recordFirst(ctx, keks, counts); err != nil {
			return nil, err
		}
		if recs, err = cfg.Store.KEKs(ctx); err != nil {
			return nil, err
		}
		active = activeOf(recs)
	}
	for _, k := range keks {
		m.held[k.ID()] = k
	}
	if m.held[active] == nil {
		return nil, &WrongKEKError{Expected: active, Source: cfg.Source.String(), Holds: ids(keks)}
	}
	missing := map[string][]string{}
	for col, byKEK := range counts {
		for id, n := range byKEK {
			if m.held[id] == nil {
				missing[id] = append(missing[id], fmt.Sprintf("%s: %d", col, n))
			}
		}
	}
	if len(missing) > 0 {
		merr := &MissingKEKError{Source: cfg.Source.String(), Missing: missing}
		if !cfg.AllowMissingKEK {
			return nil, merr
		}
		cfg.Logger.Warn("starting with sealed values this node cannot open (--allow-missing-kek)", "err", merr)
		if err := cfg.Audit.Record(ctx, audit.Entry{Actor: audit.System, Action: "kek.missing_allowed", Target: "kek/" + active,
			Details: map[string]any{"missing": missing, "source": cfg.Source.String()}}); err != nil {
			return nil, err
		}
	}
	m.activeID = active
	m.publish()
	if err := m.resume(ctx, recs); err != nil {
		return nil, err
	}
	return m, nil
}

// recordFirst records the first active KEK of a database that records none:
// a new installation (the source's key is created if it has none) or one
// from before KEK ids were recorded. It never creates a key for a database
// that already holds sealed values.
func (m *Manager) recordFirst(ctx context.Context, keks []*seal.KEK, counts map[string]map[string]int) ([]*seal.KEK, error) {
	if len(keks) == 0 {
		if n, cols := total(counts); n > 0 {
			return nil, fmt.Errorf("custody: %s holds no key-encryption key, but the database holds %d sealed values (%s); "+
				"copy the key they were sealed with from a node that serves this database, or point --kek at it; no new key was created",
				m.cfg.Source, n, strings.Join(cols, ", "))
		}
		k, err := m.cfg.Source.Create(ctx)
		if err != nil {
			return nil, fmt.Errorf("custody: create the first key-encryption key: %w", err)
		}
		m.Created = true
		keks = []*seal.KEK{k}
	}
	first := keks[0]
	now := m.cfg.Clock.Now()
	err := m.cfg.Store.InTx(ctx, func(tx *store.Tx) error {
		if err := tx.LockKEKs(ctx); err != nil {
			return err
		}
		recs, err := tx.KEKs(ctx)
		if err != nil {
			return err
		}
		if activeOf(recs) != "" {
			return nil // another node recorded one first
		}
		if err := tx.PutKEK(ctx, store.KEKRecord{ID: first.ID(), State: store.KEKActive, Source: m.cfg.Source.String(), CreatedAt: now, ActivatedAt: &now}); err != nil {
			return err
		}
		_, err = m.cfg.Audit.Append(ctx, tx, audit.Entry{Actor: audit.System, Action: "kek.record", Target: "kek/" + first.ID(),
			Details: map[string]any{"source": m.cfg.Source.String(), "created": m.Created}})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("custody: record the active key-encryption key: %w", err)
	}
	return keks, nil
}

// Keyring returns the keyring in use.
func (m *Manager) Keyring() *seal.Keyring { return m.keyring.Load() }

// ActiveID returns the id of the KEK new seals use.
func (m *Manager) ActiveID() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.activeID
}

// Ready returns nil while the node holds the active KEK, and otherwise an
// error that names the KEK it lacks. A node that is not ready seals nothing
// and takes no run jobs.
func (m *Manager) Ready() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.notReady
}

// publish builds the keyring from the held keys (the active one current, or
// none while it is missing) and hands it out. Callers hold m.mu or are Open.
func (m *Manager) publish() {
	cur := m.held[m.activeID]
	var others []*seal.KEK
	for id, k := range m.held {
		if id != m.activeID {
			others = append(others, k)
		}
	}
	sort.Slice(others, func(i, j int) bool { return others[i].ID() < others[j].ID() })
	kr := seal.NewKeyring(cur, others...)
	m.keyring.Store(kr)
	if m.cfg.OnKeyring != nil {
		m.cfg.OnKeyring(kr)
	}
}

// Start re-reads the active KEK every RefreshEvery until Stop.
func (m *Manager) Start(ctx context.Context) error {
	if !m.started.CompareAndSwap(false, true) {
		return errors.New("custody: already started")
	}
	go func() {
		defer close(m.done)
		t := time.NewTicker(m.cfg.RefreshEvery)
		defer t.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if err := m.Refresh(ctx); err != nil && ctx.Err() == nil {
					m.cfg.Logger.Warn("check the active key-encryption key", "err", err)
				}
			}
		}
	}()
	return nil
}

// Stop ends the refresh loop and waits for it. It is idempotent and safe
// without Start.
func (m *Manager) Stop() {
	m.stopOnce.Do(func() { close(m.stop) })
	if m.started.Load() {
		<-m.done
	}
}

// Refresh reads the active KEK id from the database and switches to it,
// loading it from the source when the node does not hold it yet.
func (m *Manager) Refresh(ctx context.Context) error {
	recs, err := m.cfg.Store.KEKs(ctx)
	if err != nil {
		return err
	}
	active := activeOf(recs)
	m.mu.Lock()
	_, held := m.held[active]
	same := active == m.activeID && held && m.notReady == nil
	m.mu.Unlock()
	if same || active == "" {
		return nil
	}
	var loadErr error
	var loaded []*seal.KEK
	if !held {
		loaded, loadErr = m.cfg.Source.Load(ctx)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range loaded {
		m.held[k.ID()] = k
	}
	m.activeID = active
	if m.held[active] == nil {
		if m.notReady == nil {
			m.cfg.Logger.Error("this node does not hold the active key-encryption key: it seals nothing and takes no run jobs until its source has it",
				"kek_id", active, "source", m.cfg.Source.String())
		}
		err := &WrongKEKError{Expected: active, Source: m.cfg.Source.String(), Holds: ids(loaded)}
		if loadErr != nil {
			err.Holds = nil
		}
		m.notReady = err
	} else {
		if m.notReady != nil {
			m.cfg.Logger.Info("this node holds the active key-encryption key again", "kek_id", active)
		}
		m.notReady = nil
	}
	m.publish()
	return loadErr
}

func activeOf(recs []store.KEKRecord) string {
	for _, r := range recs {
		if r.State == store.KEKActive {
			return r.ID
		}
	}
	return ""
}

func ids(keks []*seal.KEK) []string {
	out := make([]string, len(keks))
	for i, k := range keks {
		out[i] = k.ID()
	}
	return out
}

// total sums counts and names the columns that hold any.
func total(counts map[string]map[string]int) (int, []string) {
	n := 0
	var cols []string
	for col, byKEK := range counts {
		c := 0
		for _, v := range byKEK {
			c += v
		}
		if c > 0 {
			cols = append(cols, fmt.Sprintf("%s: %d", col, c))
		}
		n += c
	}
	sort.Strings(cols)
	return n, cols
}

// KEKStatus is one recorded key-encryption key.
type KEKStatus struct {
	ID          string     `json:"id"`
	State       string     `json:"state"`
	Source      string     `json:"source"`
	Held        bool       `json:"held"`
	CreatedAt   time.Time  `json:"created_at"`
	ActivatedAt *time.Time `json:"activated_at,omitempty"`
	RetiredAt   *time.Time `json:"retired_at,omitempty"`
}

// Status is what `kek status` shows: the keys, where this node's come from,
// whether it holds the active one, and how many sealed values each column
// holds under each key.
type Status struct {
	ActiveKEK string                    `json:"active_kek_id"`
	Source    string                    `json:"source"`
	Ready     bool                      `json:"ready"`
	Problem   string                    `json:"problem,omitempty"`
	KEKs      []KEKStatus               `json:"keks"`
	Sealed    map[string]map[string]int `json:"sealed"`
}

// Status reports the node's key custody.
func (m *Manager) Status(ctx context.Context) (Status, error) {
	recs, err := m.cfg.Store.KEKs(ctx)
	if err != nil {
		return Status{}, err
	}
	counts, err := m.cfg.Store.SealedKEKCounts(ctx)
	if err != nil {
		return Status{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st := Status{ActiveKEK: activeOf(recs), Source: m.cfg.Source.String(), Ready: m.notReady == nil, KEKs: []KEKStatus{}, Sealed: counts}
	if m.notReady != nil {
		st.Problem = m.notReady.Error()
	}
	for _, r := range recs {
		st.KEKs = append(st.KEKs, KEKStatus{ID: r.ID, State: r.State, Source: r.Source, Held: m.held[r.ID] != nil,
			CreatedAt: r.CreatedAt, ActivatedAt: r.ActivatedAt, RetiredAt: r.RetiredAt})
	}
	return st, nil
}
