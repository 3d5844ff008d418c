package engine

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/store"
)

// Runs are dispatched from the runs table (store/dispatch.go), not through
// a job queue. The node that starts a run takes its lease in the same
// transaction and advances it at once, in-process, when it has a worker
// free; otherwise, and whenever a run is due again (a sleep ended, a
// sub-run finished, a cancel), the dispatcher claims it: woken at once by
// the change on this node (Tx.AfterCommit) or, on PostgreSQL, on any node
// (LISTEN/NOTIFY), and at the latest at the next poll. One lease is the
// only ownership of a run: its holder renews it every LeaseTTL/3 while it
// works, so a node that dies loses its runs to another within LeaseTTL
// plus a poll.

// runsChannel is the PostgreSQL notification channel of due runs.
const runsChannel = "trustflow_runs"

// Dispatch defaults.
const (
	// DefaultLeaseTTL is how long a node's lease of a run outlives the
	// node's last renewal of it.
	DefaultLeaseTTL = 10 * time.Second
	// DefaultPollInterval is how often the dispatcher looks for due runs
	// (and expired leases) when nothing wakes it.
	DefaultPollInterval = time.Second
	// sqlitePollInterval is DefaultPollInterval on SQLite, where no other
	// node can make a run due or leave an expired lease.
	sqlitePollInterval = 30 * time.Second
	// minPollWait is the shortest the dispatcher sleeps between looks.
	minPollWait = 50 * time.Millisecond
	// maxFailureBackoff bounds how long a run whose advance failed waits
	// before it is tried again.
	maxFailureBackoff = 5 * time.Minute
)

// snoozed is an advance's request to be advanced again after d.
type snoozed struct{ d time.Duration }

func (s *snoozed) Error() string { return "engine: snoozed for " + s.d.String() }

// snooze asks for the run to be advanced again after d.
func snooze(d time.Duration) error { return &snoozed{d: max(d, 0)} }

// lease is one node's hold on one run for one advance.
type lease struct {
	run   string
	owner string
	// wakes is the run's wake count when the lease was taken.
	wakes int64
	// released is set once the lease was given up inside the transaction
	// of the run's last change.
	released bool
	// fresh is the run as the transaction that started it under this
	// lease inserted it (or, with unrecorded, as it starts in memory).
	fresh *store.Run
	// unrecorded, for a run of a flow with durability: none, is its
	// run.start record: the run is not written until its first commit.
	unrecorded *audit.Entry
	// inMemoryOK says the start may run a flow with durability: none in
	// memory (startRunTx then answers inMemoryStart).
	inMemoryOK bool
}

// held is a lease this node holds and how to stop its advance.
type held struct {
	run    string
	cancel context.CancelFunc
}

// dispatcher advances this node's share of the due runs.
type dispatcher struct {
	e     *Engine
	slots chan struct{}
	wake  chan struct{}

	mu       sync.Mutex
	owned    map[string]*held // owner -> the leases this node holds
	local    map[string]int   // run id -> advances of it under way here
	failures map[string]int   // run id -> advances in a row that failed
	// running is set from start to stop: only then does this node take
	// runs (an engine that was never started only writes them).
	running  bool
	stopping bool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // advances
	loops  sync.WaitGroup // poll, heartbeat, listen
}

func newDispatcher(e *Engine) *dispatcher {
	workers := e.cfg.Workers
	if workers <= 0 {
		workers = 16
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &dispatcher{e: e, slots: make(chan struct{}, workers), wake: make(chan struct{}, 1),
		owned: map[string]*held{}, local: map[string]int{}, failures: map[string]int{}, ctx: ctx, cancel: cancel}
}

func (d *dispatcher) start() {
	d.mu.Lock()
	d.running = true
	d.mu.Unlock()
	d.loops.Add(2)
	go func() { defer d.loops.Done(); d.pollLoop() }()
	go func() { defer d.loops.Done(); d.heartbeatLoop() }()
	if d.e.st.Dialect() == store.Postgres {
		d.loops.Add(1)
		go func() {
			defer d.loops.Done()
			_ = d.e.st.Listen(d.ctx, runsChannel, d.poke)
		}()
	}
}

// stop stops claiming runs and cancels the advances under way (their runs
// resume from their last checkpoint), waiting for them until ctx ends.
func (d *dispatcher) stop(ctx context.Context) error {
	d.mu.Lock()
	d.stopping = true
	d.mu.Unlock()
	d.cancel()
	done := make(chan struct{})
	go func() { d.wg.Wait(); d.loops.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// advancing reports whether the run is being advanced on this node.
func (d *dispatcher) advancing(run string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.local[run] > 0
}

// poke makes the dispatcher look for due runs now.
func (d *dispatcher) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// trySlot takes a worker if one is free.
func (d *dispatcher) trySlot() bool {
	d.mu.Lock()
	running := d.running && !d.stopping
	d.mu.Unlock()
	if !running {
		return false
	}
	select {
	case d.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

func (d *dispatcher) giveSlot() { <-d.slots }

func (d *dispatcher) leaseTTL() time.Duration { return d.e.cfg.LeaseTTL }

// newLease names a lease of this node: the owner is this node and this
// advance, so that two workers of one node never advance one run at once.
func (d *dispatcher) newLease(run string) (*lease, error) {
	owner, err := newID(d.e.cfg.Node + "/")
	if err != nil {
		return nil, err
	}
	return &lease{run: run, owner: owner}, nil
}

// begin advances a run whose lease l holds, on a worker slot the caller
// took. It reports false (and gives the slot back) when the node is
// stopping; the lease then expires, or is taken over at the next start.
func (d *dispatcher) begin(l *lease) bool {
	d.mu.Lock()
	if d.stopping {
		d.mu.Unlock()
		d.giveSlot()
		return false
	}
	ctx, cancel := context.WithTimeout(d.ctx, d.e.cfg.JobTimeout)
	d.owned[l.owner] = &held{run: l.run, cancel: cancel}
	d.local[l.run]++
	d.wg.Add(1)
	d.mu.Unlock()
	go func() {
		defer d.wg.Done()
		defer d.giveSlot()
		d.advance(ctx, cancel, l)
	}()
	return true
}

func (d *dispatcher) advance(ctx context.Context, cancel context.CancelFunc, l *lease) {
	err := d.e.advance(ctx, l)
	cancel()
	now := d.e.clock.Now()
	var due *time.Time
	var sn *snoozed
	switch {
	case err == nil:
		d.forget(l.run)
	case errors.As(err, &sn):
		d.forget(l.run)
		at := now.Add(sn.d)
		due = &at
	case d.ctx.Err() != nil:
		// The node is stopping: the run resumes from its last checkpoint.
		due = &now
	case errors.Is(err, errLeaseLost):
		d.e.log.Warn("advance stopped: the run's lease expired (another worker may hold it)", "run", l.run)
		d.forget(l.run)
	default:
		at := now.Add(d.failed(l.run))
		due = &at
		d.e.log.Warn("advance run failed; it is tried again", "run", l.run, "retry_at", at, "err", err)
	}
	d.mu.Lock()
	delete(d.owned, l.owner)
	if d.local[l.run]--; d.local[l.run] <= 0 {
		delete(d.local, l.run)
	}
	d.mu.Unlock()
	if l.released {
		return
	}
	if l.unrecorded != nil {
		// Started in memory and never recorded: record it now, or it is
		// lost.
		at := now
		if due != nil {
			at = *due
		}
		if err := d.e.recordLate(context.WithoutCancel(ctx), l, at); err != nil {
			d.e.log.Error("record a run that started in memory", "run", l.run, "err", err)
		}
		return
	}
	var next *time.Time
	yerr := store.RetryOnDeadlock(func() (err error) {
		next, err = d.e.st.YieldRun(context.WithoutCancel(ctx), l.run, l.owner, l.wakes, due, now)
		return err
	})
	if yerr != nil {
		// The lease expires and the run is taken over then.
		d.e.log.Warn("release run lease", "run", l.run, "err", yerr)
		return
	}
	d.dueAt(next)
}

// dueAt pokes the dispatcher when a run it just gave up is due again: it
// claims the run if it is due already, and otherwise sleeps until the
// earliest due run, which this one may be.
func (d *dispatcher) dueAt(next *time.Time) {
	if next != nil {
		d.poke()
	}
}

// failed counts a failed advance of run and returns how long to wait
// before the next: 1s, doubling, at most maxFailureBackoff.
func (d *dispatcher) failed(run string) time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := d.failures[run]
	d.failures[run] = n + 1
	wait := time.Second << min(n, 16)
	return min(wait, maxFailureBackoff)
}

func (d *dispatcher) forget(run string) {
	d.mu.Lock()
	delete(d.failures, run)
	d.mu.Unlock()
}

// pollLoop claims due runs while workers are free; it waits for a poke,
// the next due run, or the poll interval.
func (d *dispatcher) pollLoop() {
	for d.ctx.Err() == nil {
		wait := d.e.cfg.PollInterval
		claimed, full := d.claim()
		if full || claimed > 0 {
			// More may be due: look again as soon as a worker is free.
			if full {
				select {
				case d.slots <- struct{}{}:
					d.giveSlot()
				case <-d.ctx.Done():
					return
				}
			}
			continue
		}
		if at, ok, err := d.e.st.NextDue(d.ctx); err == nil && ok {
			if until := at.Sub(d.e.clock.Now()); until < wait {
				// Sleep until the next due run, but not less than
				// minPollWait: a run due already that claim left is one
				// whose lease expired under an advance of this node still
				// under way.
				wait = max(until, minPollWait)
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-d.ctx.Done():
			t.Stop()
			return
		case <-d.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// claim leases due runs for the free workers. full says every worker was
// busy (there may be more due runs).
func (d *dispatcher) claim() (claimed int, full bool) {
	free := cap(d.slots) - len(d.slots)
	if free <= 0 {
		return 0, true
	}
	now := d.e.clock.Now()
	ids, err := d.e.st.DueRuns(d.ctx, now, free)
	if err != nil {
		if d.ctx.Err() == nil {
			d.e.log.Warn("look for due runs", "err", err)
		}
		return 0, false
	}
	for _, id := range ids {
		if d.advancing(id) {
			// Its lease expired under an advance of this node that has not
			// ended yet: leave it to that advance's end.
			continue
		}
		if !d.trySlot() {
			return claimed, true
		}
		l, err := d.newLease(id)
		if err != nil {
			d.giveSlot()
			d.e.log.Warn("lease run", "run", id, "err", err)
			continue
		}
		ok, wakes, err := d.e.st.ClaimRun(d.ctx, id, l.owner, now, now.Add(d.leaseTTL()))
		if err != nil || !ok {
			// Another node took it first (or the database is away).
			d.giveSlot()
			if err != nil && d.ctx.Err() == nil {
				d.e.log.Warn("lease run", "run", id, "err", err)
			}
			continue
		}
		l.wakes = wakes
		if !d.begin(l) {
			return claimed, false
		}
		claimed++
	}
	return claimed, false
}

// heartbeatLoop renews the leases this node holds every LeaseTTL/3, one
// row at a time (a statement over several rows could lock them in an order
// that deadlocks another transaction). An advance whose lease is found
// gone is cancelled: another worker may hold the run.
func (d *dispatcher) heartbeatLoop() {
	t := time.NewTicker(d.leaseTTL() / 3)
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		}
		d.mu.Lock()
		leases := make(map[string]*held, len(d.owned))
		for o, h := range d.owned {
			leases[o] = h
		}
		d.mu.Unlock()
		until := d.e.clock.Now().Add(d.leaseTTL())
		for owner, h := range leases {
			ok, err := d.e.st.ExtendRunLease(d.ctx, h.run, owner, until)
			switch {
			case err != nil && d.ctx.Err() == nil:
				d.e.log.Warn("renew run lease", "run", h.run, "err", err)
			case err == nil && !ok:
				d.mu.Lock()
				_, still := d.owned[owner]
				d.mu.Unlock()
				if still {
					// Not a lease given up a moment ago: it was lost.
					d.e.log.Warn("run lease lost; its advance stops", "run", h.run)
					h.cancel()
				}
			}
		}
	}
}
