package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// maxGroup bounds how many callers' functions share one grouped
// transaction, so that a batch's commit answers its first caller soon.
const maxGroup = 64

// errClosed answers a grouped call made on, or still queued at, a closed
// store.
var errClosed = errors.New("store: the store is closed")

// A grouped request's states: queued, taken by the writer, or given up by
// its caller before the writer took it.
const (
	groupPending int32 = iota
	groupStarted
	groupCancelled
)

// groupReq is one caller's function waiting in the group writer.
type groupReq struct {
	fn    func(tx *Tx) error
	tx    *Tx // the Tx fn ran with, once it has run
	state atomic.Int32
	done  chan groupResult // buffered: the writer never blocks answering
}

// groupResult is what the writer answers a caller: fn's error (or the
// commit's), or the value fn panicked with.
type groupResult struct {
	// committed is the Tx of a function whose changes committed, for its
	// AfterCommit hooks.
	committed *Tx
	err       error
	panicked  bool
	panicVal  any
}

// grouper is the SQLite group writer: one goroutine, started by the first
// grouped call and stopped by Close, that runs every pending function in one
// transaction.
type grouper struct {
	mu      sync.Mutex
	started bool
	closed  bool
	reqs    chan *groupReq // unbuffered: a request sent is the writer's to answer
	stop    chan struct{}
	done    chan struct{}
}

// InTxGrouped runs fn in a write transaction like InTx: fn's changes commit
// when it returns nil and not at all otherwise, and the call returns only
// once they are committed (as durably as InTx's: the store's synchronous
// setting is unchanged).
//
// On SQLite, concurrent callers share the transaction: one writer goroutine
// takes up to 64 pending functions, begins one transaction (BEGIN
// IMMEDIATE), runs each function inside a SAVEPOINT of its own, rolling
// back to it when the function fails (the caller gets its own error, the
// others still commit), and commits once for all of them; when that commit
// fails every caller whose function succeeded gets the error. A caller
// alone is never made to wait for company: the batch is whatever is
// pending when the writer is free, which is one function at concurrency 1.
// A caller whose context ends before its function starts is dropped from
// the batch and gets the context's error; once the function has started,
// the call waits for the outcome of the commit. The function's statements
// through Tx run with its context's values but not its cancellation (an
// interrupted statement can roll back the whole shared transaction); the
// transaction from Tx.SQL is shared with other callers and must not be
// committed or rolled back by fn (should the transaction be lost under the
// writer anyway, every caller in it gets an error and the functions not
// yet run go on in a new one). A panic in fn rolls back fn's savepoint,
// the others still commit, and the panic is raised again in the caller's
// goroutine, as InTx does. Tx.AfterCommit hooks run, in the caller's
// goroutine, for just the functions whose changes committed. fn must not
// start another transaction on the store (neither does it under InTx,
// whose SQLite writer is one connection).
//
// On PostgreSQL InTxGrouped is InTx: concurrent transactions already commit
// in parallel there, and running several callers' functions in one
// transaction would hold the row locks of each for all of them, risking
// deadlocks between batches.
func (s *Store) InTxGrouped(ctx context.Context, fn func(tx *Tx) error) error {
	if s.dialect != SQLite {
		return s.InTx(ctx, fn)
	}
	g := &s.group
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return errClosed
	}
	if !g.started {
		g.started = true
		g.reqs = make(chan *groupReq)
		g.stop = make(chan struct{})
		g.done = make(chan struct{})
		go s.groupWriter()
	}
	reqs, stop := g.reqs, g.stop
	g.mu.Unlock()

	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: grouped transaction not started: %w", err)
	}
	r := &groupReq{fn: fn, done: make(chan groupResult, 1)}
	select {
	case reqs <- r:
	case <-stop:
		return errClosed
	case <-ctx.Done():
		return fmt.Errorf("store: grouped transaction not started: %w", ctx.Err())
	}
	var res groupResult
	select {
	case res = <-r.done:
	case <-ctx.Done():
		if r.state.CompareAndSwap(groupPending, groupCancelled) {
			return fmt.Errorf("store: grouped transaction not started: %w", ctx.Err())
		}
		// fn has started: its outcome is only known after the commit.
		res = <-r.done
	}
	if res.panicked {
		panic(res.panicVal)
	}
	if res.err == nil && res.committed != nil {
		res.committed.committed() // in the caller's goroutine, as under InTx
	}
	return res.err
}

// closeGroup stops the group writer, after the batch it is running. Called
// by Close before the pools close.
func (s *Store) closeGroup() {
	g := &s.group
	g.mu.Lock()
	started := g.started && !g.closed
	g.closed = true
	if started {
		close(g.stop)
	}
	g.mu.Unlock()
	if started {
		<-g.done
	}
}

// groupWriter takes whatever is pending, up to maxGroup functions, and
// runs it as one transaction, until Close.
func (s *Store) groupWriter() {
	g := &s.group
	defer close(g.done)
	batch := make([]*groupReq, 0, maxGroup)
	for {
		select {
		case r := <-g.reqs:
			batch = append(batch[:0], r)
		case <-g.stop:
			return
		}
	fill:
		for len(batch) < maxGroup {
			select {
			case r := <-g.reqs:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		s.runGroup(batch)
		clear(batch)
	}
}

// runGroup runs batch in one transaction and answers every request in it.
func (s *Store) runGroup(batch []*groupReq) {
	for len(batch) > 0 {
		live := false
		for _, r := range batch {
			if r.state.Load() == groupPending {
				live = true
				break
			}
		}
		if !live {
			return // every caller gave up before its turn
		}
		batch = s.runGroupTx(batch)
	}
}

// runGroupTx runs batch in one transaction. It returns the requests it
// did not get to because the transaction was lost under them (a function
// ended it, or a statement's failure rolled it back); they run in another.
func (s *Store) runGroupTx(batch []*groupReq) (rest []*groupReq) {
	// The transaction is the writer's, not any caller's: a caller's context
	// ending must not roll back the others' work.
	bg := context.Background()
	sqlTx, err := s.write.BeginTx(bg, nil)
	if err != nil {
		err = fmt.Errorf("store: begin grouped transaction: %w", err)
		for _, r := range batch {
			if r.state.CompareAndSwap(groupPending, groupStarted) {
				r.done <- groupResult{err: err}
			}
		}
		return nil
	}
	tc := &txConn{Tx: sqlTx, stmts: s.write.stmts, detach: true}
	if r := soleLive(batch); r != nil && r.state.CompareAndSwap(groupPending, groupStarted) {
		// Alone in its batch: the transaction is its own, as under InTx,
		// and needs no savepoint.
		r.tx = &Tx{tx: tc, dialect: s.dialect}
		res := callGrouped(r.fn, r.tx)
		if res.err != nil || res.panicked {
			if rbErr := sqlTx.Rollback(); rbErr != nil && !errors.Is(rbErr, sql.ErrTxDone) && !res.panicked {
				res.err = errors.Join(res.err, fmt.Errorf("store: rollback: %w", rbErr))
			}
		} else if err := sqlTx.Commit(); err != nil {
			res.err = fmt.Errorf("store: commit: %w", mapErr(err))
		} else {
			res.committed = r.tx
		}
		r.done <- res
		tc.prepareMissed(bg)
		return nil
	}
	var ok []*groupReq
	for i, r := range batch {
		if !r.state.CompareAndSwap(groupPending, groupStarted) {
			continue // its caller gave up and has returned
		}
		res, lost := s.runSavepoint(tc, r)
		if lost != nil {
			_ = sqlTx.Rollback() // the transaction is gone already; ending it is all that is left
			lostErr := fmt.Errorf("store: grouped transaction rolled back by another caller's statement, nothing was committed: %w", lost)
			for _, o := range ok {
				o.done <- groupResult{err: lostErr}
			}
			if !res.panicked {
				res.err = errors.Join(res.err, lostErr)
			}
			r.done <- res
			tc.prepareMissed(bg)
			return batch[i+1:]
		}
		if res.err == nil && !res.panicked {
			ok = append(ok, r)
			continue
		}
		// Its changes are undone; its outcome is known now.
		r.done <- res
	}
	if err := sqlTx.Commit(); err != nil {
		err = fmt.Errorf("store: commit grouped transaction of %d callers: %w", len(ok), mapErr(err))
		for _, r := range ok {
			r.done <- groupResult{err: err}
		}
	} else {
		for _, r := range ok {
			r.done <- groupResult{committed: r.tx}
		}
	}
	tc.prepareMissed(bg)
	return nil
}

// soleLive returns the batch's only request its caller still waits for,
// or nil when there are several (or none).
func soleLive(batch []*groupReq) *groupReq {
	var live *groupReq
	for _, r := range batch {
		if r.state.Load() != groupPending {
			continue
		}
		if live != nil {
			return nil
		}
		live = r
	}
	return live
}

// runSavepoint runs r's function in a savepoint of tc, releasing it when
// the function succeeds and rolling back to it otherwise. lost is not nil
// when the savepoint could not be made, released or rolled back to: the
// transaction itself is then no longer usable.
func (s *Store) runSavepoint(tc *txConn, r *groupReq) (res groupResult, lost error) {
	bg := context.Background()
	if _, err := tc.ExecContext(bg, "SAVEPOINT grouped"); err != nil {
		return groupResult{err: fmt.Errorf("store: start savepoint: %w", err)}, err
	}
	// Each function has a Tx of its own (its AfterCommit hooks) over the
	// shared transaction.
	r.tx = &Tx{tx: tc, dialect: s.dialect}
	res = callGrouped(r.fn, r.tx)
	if res.err == nil && !res.panicked {
		if _, err := tc.ExecContext(bg, "RELEASE grouped"); err != nil {
			return groupResult{err: fmt.Errorf("store: release savepoint: %w", mapErr(err))}, err
		}
		return res, nil
	}
	if _, err := tc.ExecContext(bg, "ROLLBACK TO grouped"); err != nil {
		res.err = errors.Join(res.err, fmt.Errorf("store: roll back to savepoint: %w", err))
		return res, err
	}
	if _, err := tc.ExecContext(bg, "RELEASE grouped"); err != nil {
		res.err = errors.Join(res.err, fmt.Errorf("store: release savepoint: %w", err))
		return res, err
	}
	return res, nil
}

// callGrouped calls fn, turning a panic into a result the caller re-raises.
func callGrouped(fn func(tx *Tx) error, tx *Tx) (res groupResult) {
	defer func() {
		if p := recover(); p != nil {
			res = groupResult{panicked: true, panicVal: p}
		}
	}()
	return groupResult{err: fn(tx)}
}
