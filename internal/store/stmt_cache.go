package store

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"sync"
)

// maxCachedStatements bounds each pool's statement cache. Queries whose
// text is built at run time (filters, IN lists) have a bounded number of
// shapes; past the bound, new texts run unprepared.
const maxCachedStatements = 256

// stmtCache holds the statements prepared on one *sql.DB, keyed by their
// SQL text, so that a hot query is parsed once per connection instead of on
// every call. database/sql prepares a cached statement lazily on each
// connection of the pool that runs it.
type stmtCache struct {
	db *sql.DB

	mu     sync.RWMutex
	stmts  map[string]*sql.Stmt
	closed bool
}

func newStmtCache(db *sql.DB) *stmtCache {
	return &stmtCache{db: db, stmts: map[string]*sql.Stmt{}}
}

// lookup returns the statement prepared for q, or nil.
func (c *stmtCache) lookup(q string) *sql.Stmt {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.stmts[q]
}

// full reports whether q can no longer be added.
func (c *stmtCache) full() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.closed || len(c.stmts) >= maxCachedStatements
}

// prepare returns the statement for q, preparing it on the pool when it is
// new. It returns nil when the cache is closed or full or the preparation
// fails: the caller then runs q as text, which reports any error in q
// exactly as before. It must not be called while the caller holds the
// pool's only connection (SQLite's writer, inside a transaction).
func (c *stmtCache) prepare(ctx context.Context, q string) *sql.Stmt {
	if st := c.lookup(q); st != nil {
		return st
	}
	if c.full() {
		return nil
	}
	st, err := c.db.PrepareContext(ctx, q)
	if err != nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if prev, ok := c.stmts[q]; ok || c.closed || len(c.stmts) >= maxCachedStatements {
		// Another caller prepared it first, or the cache closed or filled
		// meanwhile; this statement was never used, so closing it cannot fail
		// a query.
		_ = st.Close()
		return prev
	}
	c.stmts[q] = st
	return st
}

// close closes every cached statement; later queries run as text.
func (c *stmtCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var err error
	for q, st := range c.stmts {
		err = errors.Join(err, st.Close())
		delete(c.stmts, q)
	}
	return err
}

// pool is a *sql.DB whose queries run as statements prepared once per pool.
// A nil stmts runs every query as text.
type pool struct {
	*sql.DB
	stmts *stmtCache
}

func newPool(db *sql.DB) *pool { return &pool{DB: db, stmts: newStmtCache(db)} }

func (p *pool) stmt(ctx context.Context, q string) *sql.Stmt {
	if p.stmts == nil {
		return nil
	}
	return p.stmts.prepare(ctx, q)
}

func (p *pool) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if st := p.stmt(ctx, q); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return p.DB.ExecContext(ctx, q, args...)
}

func (p *pool) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if st := p.stmt(ctx, q); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return p.DB.QueryContext(ctx, q, args...)
}

func (p *pool) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	if st := p.stmt(ctx, q); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return p.DB.QueryRowContext(ctx, q, args...)
}

// close closes the cached statements, then the pool.
func (p *pool) close() error {
	var err error
	if p.stmts != nil {
		err = p.stmts.close()
	}
	return errors.Join(err, p.DB.Close())
}

// txConn is a write transaction whose ExecContext and QueryRowContext reuse
// the write pool's prepared statements (Tx.StmtContext binds them to the transaction's
// connection, preparing them there first if needed). A text the pool has
// not prepared yet runs as text and is remembered in missed: the
// transaction holds the connection SQLite's writer pool would prepare on,
// so InTx prepares the missed texts once the transaction has ended.
type txConn struct {
	*sql.Tx
	stmts  *stmtCache
	missed []string
	// detach runs statements without their context's cancellation: in a
	// grouped transaction (InTxGrouped) an interrupted statement could roll
	// back the other callers' work with it.
	detach bool
}

// ctx is the context a statement of the transaction runs with.
func (t *txConn) ctx(ctx context.Context) context.Context {
	if t.detach {
		return context.WithoutCancel(ctx)
	}
	return ctx
}

func (t *txConn) stmt(ctx context.Context, q string) *sql.Stmt {
	if t.stmts == nil {
		return nil
	}
	if st := t.stmts.lookup(q); st != nil {
		return t.Tx.StmtContext(ctx, st)
	}
	if !t.stmts.full() && !slices.Contains(t.missed, q) {
		t.missed = append(t.missed, q)
	}
	return nil
}

func (t *txConn) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	ctx = t.ctx(ctx)
	if st := t.stmt(ctx, q); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return t.Tx.ExecContext(ctx, q, args...)
}

// QueryContext runs q as text. In a transaction every statement shares one
// connection, and SQLite's prepared statement is one cursor: running the
// same text again while these rows are open (a nested loop over the run
// tree, say) would reset it under them. A text runs on its own statement.
func (t *txConn) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	ctx = t.ctx(ctx)
	return t.Tx.QueryContext(ctx, q, args...)
}

// QueryRowContext uses the cached statement: callers scan the row at once,
// which closes its cursor before the statement can run again.
func (t *txConn) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	ctx = t.ctx(ctx)
	if st := t.stmt(ctx, q); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return t.Tx.QueryRowContext(ctx, q, args...)
}

// prepareMissed prepares, on the pool, the texts the ended transaction ran
// unprepared. A text that fails to prepare keeps running as text.
func (t *txConn) prepareMissed(ctx context.Context) {
	if t.stmts == nil {
		return
	}
	for _, q := range t.missed {
		t.stmts.prepare(ctx, q)
	}
	t.missed = nil
}
