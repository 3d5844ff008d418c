package custody

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/seal"
	"github.com/trustflow/trustflow/internal/store"
)

// Result reports a rotation.
type Result struct {
	// FromKEKs are the KEKs retired by the rotation.
	FromKEKs []string `json:"from_kek_ids"`
	// ToKEK is the KEK every sealed value is now wrapped by.
	ToKEK string `json:"to_kek_id"`
	// Keys is how many sealed values were re-wrapped.
	Keys int `json:"keys"`
	// Total is how many values were wrapped by another KEK when the
	// re-wrap began.
	Total int `json:"total"`
	// Verified is how many sealed values were opened under ToKEK alone
	// before the old KEKs were retired.
	Verified int `json:"verified"`
	// Columns counts the re-wrapped values by kind ("run input": 3).
	Columns map[string]int `json:"columns"`
}

// Progress receives the re-wrap's progress: done of total values.
type Progress func(done, total int)

// Rotate stages a new KEK in the source, makes it the active one, re-wraps
// every sealed value under it, verifies that each opens under it alone, and
// then retires the old KEK. A source that cannot create keys (env://) rotates
// to the key it now holds first, if that is not the active one. An
// unfinished rotation is finished instead of starting another.
func (m *Manager) Rotate(ctx context.Context, actor audit.Actor, progress Progress) (Result, error) {
	m.rotating.Lock()
	defer m.rotating.Unlock()
	if err := m.Ready(); err != nil {
		return Result{}, err
	}
	recs, err := m.cfg.Store.KEKs(ctx)
	if err != nil {
		return Result{}, err
	}
	if retiring(recs) {
		m.cfg.Logger.Warn("finishing an unfinished key-encryption key rotation first", "kek_id", activeOf(recs))
		return m.finish(ctx, actor, progress)
	}
	from := activeOf(recs)
	next, err := m.cfg.Source.Stage(ctx)
	if errors.Is(err, seal.ErrReadOnlySource) {
		next, err = m.sourceCurrent(ctx, from, err)
	}
	if err != nil {
		return Result{}, fmt.Errorf("custody: rotate: %w", err)
	}
	now := m.cfg.Clock.Now()
	err = m.cfg.Store.InTx(ctx, func(tx *store.Tx) error {
		if err := tx.LockKEKs(ctx); err != nil {
			return err
		}
		recs, err := tx.KEKs(ctx)
		if err != nil {
			return err
		}
		if a := activeOf(recs); a != from || retiring(recs) {
			return fmt.Errorf("another node changed the active key-encryption key to %s meanwhile; run kek rotate again to finish its rotation", a)
		}
		for _, r := range recs {
			if r.ID == from {
				r.State = store.KEKRetiring
				if err := tx.PutKEK(ctx, r); err != nil {
					return err
				}
			}
		}
		if err := tx.PutKEK(ctx, store.KEKRecord{ID: next.ID(), State: store.KEKActive, Source: m.cfg.Source.String(), CreatedAt: now, ActivatedAt: &now}); err != nil {
			return err
		}
		_, err = m.cfg.Audit.Append(ctx, tx, audit.Entry{Actor: actor, Action: "kek.rotate.begin", Target: "kek/" + next.ID(),
			Details: map[string]any{"from_kek_id": from, "to_kek_id": next.ID(), "source": m.cfg.Source.String()}})
		return err
	})
	if err != nil {
		return Result{}, fmt.Errorf("custody: rotate: %w", err)
	}
	m.mu.Lock()
	m.held[next.ID()] = next
	m.activeID = next.ID()
	m.publish()
	m.mu.Unlock()
	m.cfg.Logger.Info("rotating the key-encryption key", "from", from, "to", next.ID())
	return m.finish(ctx, actor, progress)
}

// sourceCurrent returns the key a read-only source now holds first, when
// it is not the active one: the operator put a new key there.
func (m *Manager) sourceCurrent(ctx context.Context, active string, stageErr error) (*seal.KEK, error) {
	keks, err := m.cfg.Source.Load(ctx)
	if err != nil {
		return nil, err
	}
	if len(keks) == 0 || keks[0].ID() == active {
		return nil, stageErr
	}
	return keks[0], nil
}

// resume finishes at start what an interrupted rotation left: values still
// wrapped by a retiring KEK, or a source that still holds retired keys.
func (m *Manager) resume(ctx context.Context, recs []store.KEKRecord) error {
	if retiring(recs) {
		m.cfg.Logger.Warn("finishing an interrupted key-encryption key rotation", "kek_id", activeOf(recs))
		if _, err := m.finish(ctx, audit.System, nil); err != nil {
			// Every value still opens under the keys this node holds (the
			// start checked): serve, and say what blocks the rotation.
			m.cfg.Logger.Error("the interrupted key-encryption key rotation cannot finish yet; every sealed value still opens under the keys held; fix the value named and run `trustflow kek rotate`",
				"err", err)
		}
		return nil
	}
	m.mu.Lock()
	extra := len(m.held) > 1
	active := m.activeID
	m.mu.Unlock()
	if !extra {
		return nil
	}
	counts, err := m.cfg.Store.SealedKEKCounts(ctx)
	if err != nil {
		return err
	}
	for _, byKEK := range counts {
		for id, n := range byKEK {
			if id != active && n > 0 {
				return nil // still needed: a rotation will re-wrap them
			}
		}
	}
	if err := m.cfg.Source.Commit(ctx, active); err != nil {
		// The extra keys are harmless; say so and go on.
		m.cfg.Logger.Warn("drop retired key-encryption keys from the source", "source", m.cfg.Source.String(), "err", err)
		return nil
	}
	return m.reload(ctx)
}

// finish re-wraps every value to the active KEK until a pass finds none
// left, verifies every value opens under it alone, retires the others and
// commits the source. It is safe to run again after any failure.
func (m *Manager) finish(ctx context.Context, actor audit.Actor, progress Progress) (Result, error) {
	// Once begun, the rotation goes on even if the caller goes away; a
	// crash is finished by the next start.
	ctx = context.WithoutCancel(ctx)
	m.mu.Lock()
	to := m.held[m.activeID]
	kr := m.keyring.Load()
	m.mu.Unlock()
	if to == nil {
		return Result{}, &WrongKEKError{Expected: m.ActiveID(), Source: m.cfg.Source.String()}
	}
	res := Result{ToKEK: to.ID(), FromKEKs: []string{}, Columns: map[string]int{}}
	counts, err := m.cfg.Store.SealedKEKCounts(ctx)
	if err != nil {
		return Result{}, err
	}
	for _, byKEK := range counts {
		for id, n := range byKEK {
			if id != to.ID() {
				res.Total += n
			}
		}
	}
	// Other nodes switch to the new KEK within RefreshEvery (wall-clock
	// time, whatever the injected clock says); a value one of them sealed
	// under the old KEK just before is caught by a later pass.
	settle := time.Now().Add(2 * m.cfg.RefreshEvery)
	for pass := 1; ; pass++ {
		n, err := m.rewrapAll(ctx, kr, to, &res, progress)
		if err != nil {
			return Result{}, err
		}
		if n == 0 && pass > 1 && !time.Now().Before(settle) {
			break
		}
		if n == 0 {
			select {
			case <-time.After(min(m.cfg.RefreshEvery, time.Until(settle)+time.Millisecond)):
			case <-m.stop:
				return Result{}, errors.New("custody: rotation interrupted by shutdown; the next start finishes it")
			}
		}
	}
	if res.Verified, err = m.verify(ctx, to); err != nil {
		return Result{}, err
	}
	now := m.cfg.Clock.Now()
	err = m.cfg.Store.InTx(ctx, func(tx *store.Tx) error {
		if err := tx.LockKEKs(ctx); err != nil {
			return err
		}
		recs, err := tx.KEKs(ctx)
		if err != nil {
			return err
		}
		if a := activeOf(recs); a != to.ID() {
			return fmt.Errorf("another node made %s the active key-encryption key meanwhile; run kek rotate again", a)
		}
		for _, r := range recs {
			if r.State == store.KEKRetiring {
				r.State, r.RetiredAt = store.KEKRetired, &now
				if err := tx.PutKEK(ctx, r); err != nil {
					return err
				}
				res.FromKEKs = append(res.FromKEKs, r.ID)
			}
		}
		sort.Strings(res.FromKEKs)
		_, err = m.cfg.Audit.Append(ctx, tx, audit.Entry{Actor: actor, Action: "kek.rotate", Target: "kek/" + to.ID(),
			Details: map[string]any{"from_kek_ids": res.FromKEKs, "to_kek_id": res.ToKEK, "keys": res.Keys, "verified": res.Verified, "columns": res.Columns}})
		return err
	})
	if err != nil {
		return Result{}, fmt.Errorf("custody: retire the old key-encryption keys: %w", err)
	}
	if err := m.cfg.Source.Commit(ctx, to.ID()); err != nil {
		return res, fmt.Errorf("custody: every value is re-wrapped and verified under %s, but %s could not drop the old key (it is harmless; the next start retries): %w",
			to.ID(), m.cfg.Source, err)
	}
	if err := m.reload(ctx); err != nil {
		return res, err
	}
	m.cfg.Logger.Info("rotated the key-encryption key", "to", to.ID(), "rewrapped", res.Keys, "verified", res.Verified)
	return res, nil
}

// reload replaces the held keys with what the source holds now.
func (m *Manager) reload(ctx context.Context) error {
	keks, err := m.cfg.Source.Load(ctx)
	if err != nil {
		return fmt.Errorf("custody: reload key-encryption keys: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	held := map[string]*seal.KEK{}
	for _, k := range keks {
		held[k.ID()] = k
	}
	if held[m.activeID] == nil {
		return &WrongKEKError{Expected: m.activeID, Source: m.cfg.Source.String(), Holds: ids(keks)}
	}
	m.held = held
	m.publish()
	return nil
}

// rewrapAll re-wraps, column by column and batch by batch, every value not
// wrapped by to; it returns how many it changed.
func (m *Manager) rewrapAll(ctx context.Context, kr *seal.Keyring, to *seal.KEK, res *Result, progress Progress) (int, error) {
	changed := 0
	for _, c := range store.SealedColumns() {
		var after []any
		for {
			page, err := m.cfg.Store.SealedPage(ctx, nil, c, to.ID(), after, m.cfg.BatchSize)
			if err != nil {
				return changed, err
			}
			if len(page) == 0 {
				break
			}
			after = page[len(page)-1].Key
			n := 0
			err = m.cfg.Store.InTx(ctx, func(tx *store.Tx) error {
				n = 0
				for _, b := range page {
					blob, err := kr.Rewrap(b.Blob, to)
					if err != nil {
						return fmt.Errorf("custody: re-wrap the %s %v: %w", c.Name, b.Key, err)
					}
					ok, err := tx.ReplaceSealed(ctx, c, b, blob, to.ID())
					if err != nil {
						return err
					}
					if ok {
						n++
					}
				}
				return nil
			})
			if err != nil {
				return changed, err
			}
			changed += n
			res.Keys += n
			res.Columns[c.Name] += n
			if progress != nil {
				progress(res.Keys, max(res.Total, res.Keys))
			}
			if len(page) < m.cfg.BatchSize {
				break
			}
		}
	}
	return changed, nil
}

// verify opens every sealed value with a keyring holding only to, with the
// value's own additional data, and returns how many it opened.
func (m *Manager) verify(ctx context.Context, to *seal.KEK) (int, error) {
	only := seal.NewKeyring(to)
	n := 0
	for _, c := range store.SealedColumns() {
		var after []any
		for {
			page, err := m.cfg.Store.SealedPage(ctx, nil, c, "", after, m.cfg.BatchSize)
			if err != nil {
				return n, err
			}
			if len(page) == 0 {
				break
			}
			after = page[len(page)-1].Key
			for _, b := range page {
				plain, err := only.Open(b.Blob, c.AAD(b.Key))
				if err != nil {
					return n, fmt.Errorf("custody: verify: the %s %v does not open under the new key-encryption key %s; the old key is kept: %w", c.Name, b.Key, to.ID(), err)
				}
				clear(plain)
				n++
			}
			if len(page) < m.cfg.BatchSize {
				break
			}
		}
	}
	return n, nil
}

func retiring(recs []store.KEKRecord) bool {
	for _, r := range recs {
		if r.State == store.KEKRetiring {
			return true
		}
	}
	return false
}
