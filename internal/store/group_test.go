package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

// groupTable makes a table of its own for the grouped-transaction tests.
func groupTable(t testing.TB, st *store.Store) {
	t.Helper()
	_, err := st.DB().ExecContext(context.Background(), "CREATE TABLE grouped_test (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
	require.NoError(t, err)
}

func groupInsert(ctx context.Context, tx *store.Tx, k int) error {
	_, err := tx.SQL().ExecContext(ctx, "INSERT INTO grouped_test (k, v) VALUES ($1, $2)", k, fmt.Sprint("v", k))
	return err
}

func groupKeys(t testing.TB, st *store.Store) map[int]bool {
	t.Helper()
	rows, err := st.DB().QueryContext(context.Background(), "SELECT k FROM grouped_test")
	require.NoError(t, err)
	defer rows.Close()
	got := map[int]bool{}
	for rows.Next() {
		var k int
		require.NoError(t, rows.Scan(&k))
		got[k] = true
	}
	require.NoError(t, rows.Err())
	return got
}

var errGroupTest = errors.New("the change failed")

// holdWriter keeps SQLite's group writer busy until release is called, so
// that the grouped calls made meanwhile queue up and share the next batch
// (up to its bound). release waits for the held call to commit.
func holdWriter(t testing.TB, st *store.Store) (release func()) {
	t.Helper()
	started, unblock := make(chan struct{}), make(chan struct{})
	held := make(chan error, 1)
	go func() {
		held <- st.InTxGrouped(context.Background(), func(tx *store.Tx) error {
			close(started)
			<-unblock
			return nil
		})
	}()
	<-started
	return func() {
		time.Sleep(100 * time.Millisecond) // the callers are waiting to be taken
		close(unblock)
		require.NoError(t, <-held)
	}
}

// TestInTxGroupedCommitsExactlyTheSuccessful runs many concurrent grouped
// transactions, every fifth of which writes and then fails: each caller
// gets its own outcome, and exactly the successful ones' rows are stored.
func TestInTxGroupedCommitsExactlyTheSuccessful(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		groupTable(t, st)
		const writers, each = 16, 40
		var wg sync.WaitGroup
		results := make([]error, writers*each)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					k := w*each + i
					results[k] = st.InTxGrouped(ctx, func(tx *store.Tx) error {
						if err := groupInsert(ctx, tx, k); err != nil {
							return err
						}
						if k%5 == 0 {
							return fmt.Errorf("key %d: %w", k, errGroupTest)
						}
						return nil
					})
				}
			}()
		}
		wg.Wait()
		got := groupKeys(t, st)
		for k, err := range results {
			if k%5 == 0 {
				require.ErrorIs(t, err, errGroupTest, "key %d gets its own error", k)
				require.False(t, got[k], "failed key %d changed nothing", k)
			} else {
				require.NoError(t, err, "key %d", k)
				require.True(t, got[k], "acknowledged key %d is stored", k)
			}
		}
		require.Len(t, got, writers*each*4/5)
	})
}

// TestInTxGroupedFailureChangesNothing: a failing function's writes are
// rolled back while another's in the same transaction commit, and a
// constraint violation inside the savepoint is mapped like InTx's.
func TestInTxGroupedFailureChangesNothing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		groupTable(t, st)
		require.NoError(t, st.InTxGrouped(ctx, func(tx *store.Tx) error { return groupInsert(ctx, tx, 1) }))
		err := st.InTxGrouped(ctx, func(tx *store.Tx) error {
			if err := groupInsert(ctx, tx, 2); err != nil {
				return err
			}
			return groupInsert(ctx, tx, 1) // duplicate key
		})
		require.Error(t, err)
		require.Equal(t, map[int]bool{1: true}, groupKeys(t, st))
		require.NoError(t, st.InTxGrouped(ctx, func(tx *store.Tx) error { return groupInsert(ctx, tx, 2) }))
		require.Equal(t, map[int]bool{1: true, 2: true}, groupKeys(t, st))
	})
}

// TestInTxGroupedPanic: a panicking function is rolled back, the panic is
// raised in its caller, and the writer goes on serving the others.
func TestInTxGroupedPanic(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		groupTable(t, st)
		var wg sync.WaitGroup
		var panics atomic.Int32
		release := holdWriter(t, st) // on SQLite the 40 share a batch
		for k := range 40 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					if p := recover(); p != nil {
						require.Equal(t, fmt.Sprint("boom ", k), p)
						panics.Add(1)
					}
				}()
				err := st.InTxGrouped(ctx, func(tx *store.Tx) error {
					if err := groupInsert(ctx, tx, k); err != nil {
						return err
					}
					if k%4 == 0 {
						panic(fmt.Sprint("boom ", k))
					}
					return nil
				})
				require.NoError(t, err)
			}()
		}
		release()
		wg.Wait()
		require.Equal(t, int32(10), panics.Load())
		got := groupKeys(t, st)
		for k := range 40 {
			require.Equal(t, k%4 != 0, got[k], "key %d", k)
		}
		// Not wedged: a later call still commits.
		require.NoError(t, st.InTxGrouped(ctx, func(tx *store.Tx) error { return groupInsert(ctx, tx, 100) }))
		require.True(t, groupKeys(t, st)[100])
	})
}

// TestInTxGroupedCancelledBeforeStart: a caller whose context ends while
// it waits for the writer gets the context's error and its function never
// runs; one whose function started gets that function's outcome.
func TestInTxGroupedCancelledBeforeStart(t *testing.T) {
	func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		groupTable(t, st)
		started, release := make(chan struct{}), make(chan struct{})
		blocker := make(chan error, 1)
		go func() {
			blocker <- st.InTxGrouped(ctx, func(tx *store.Tx) error {
				close(started)
				<-release
				return groupInsert(ctx, tx, 1)
			})
		}()
		<-started
		cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		var ran atomic.Bool
		err := st.InTxGrouped(cctx, func(tx *store.Tx) error {
			ran.Store(true)
			return groupInsert(ctx, tx, 2)
		})
		require.ErrorIs(t, err, context.DeadlineExceeded)
		close(release)
		require.NoError(t, <-blocker)
		require.False(t, ran.Load(), "a cancelled caller's function does not run")
		require.Equal(t, map[int]bool{1: true}, groupKeys(t, st))
	}(t, storetest.Open(t, store.SQLite)) // on PostgreSQL the second caller does not wait
}

// TestInTxGroupedCancellationStress cancels callers at random moments:
// a call ends with its context's error exactly when its function never
// ran, and every call that returned nil is stored.
func TestInTxGroupedCancellationStress(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		groupTable(t, st)
		const n = 400
		var wg sync.WaitGroup
		ran := make([]atomic.Bool, n)
		results := make([]error, n)
		for k := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cctx, cancel := context.WithTimeout(ctx, time.Duration(k%7)*200*time.Microsecond)
				defer cancel()
				results[k] = st.InTxGrouped(cctx, func(tx *store.Tx) error {
					ran[k].Store(true)
					// tx.SQL's statements see cctx end: such a function
					// fails alone, the others in its batch commit.
					return groupInsert(cctx, tx, k)
				})
			}()
		}
		wg.Wait()
		got := groupKeys(t, st)
		for k, err := range results {
			if err != nil && strings.Contains(err.Error(), "store: commit:") && st.Dialect() == store.Postgres {
				// The deadline struck while PostgreSQL was answering the
				// COMMIT (InTx): whether it committed is not known.
				continue
			}
			require.Equal(t, err == nil, got[k], "key %d: ran=%v err=%v", k, ran[k].Load(), err)
			if !ran[k].Load() {
				require.Error(t, err, "key %d never ran", k)
				if st.Dialect() == store.SQLite { // pgx may report a dial timeout instead
					require.ErrorIs(t, err, context.DeadlineExceeded, "key %d never ran", k)
				}
			}
		}
	})
}

// TestInTxGroupedLostTransaction: a function that ends the shared
// transaction under the writer gets an error, no caller is told its change
// committed when it did not, and the writer recovers.
func TestInTxGroupedLostTransaction(t *testing.T) {
	st := storetest.Open(t, store.SQLite)
	ctx := context.Background()
	groupTable(t, st)
	const n = 64
	var wg sync.WaitGroup
	results := make([]error, n)
	release := holdWriter(t, st)
	for k := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[k] = st.InTxGrouped(ctx, func(tx *store.Tx) error {
				if err := groupInsert(ctx, tx, k); err != nil {
					return err
				}
				if k%16 == 3 {
					_, err := tx.SQL().ExecContext(ctx, "ROLLBACK")
					return err
				}
				return nil
			})
		}()
	}
	release()
	wg.Wait()
	got := groupKeys(t, st)
	for k, err := range results {
		if k%16 == 3 {
			require.Error(t, err, "key %d ended the transaction", k)
		}
		require.Equal(t, err == nil, got[k], "key %d: err=%v", k, err)
	}
	require.NoError(t, st.InTxGrouped(ctx, func(tx *store.Tx) error { return groupInsert(ctx, tx, 1000) }))
	require.True(t, groupKeys(t, st)[1000])
}

// TestInTxGroupedTxFeatures: the store's own Tx methods (prepared
// statements, the audit head) work inside a savepoint, across batches.
func TestInTxGroupedTxFeatures(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 20 {
					require.NoError(t, st.InTxGrouped(ctx, func(tx *store.Tx) error {
						head, err := tx.LockAuditHead(ctx)
						if err != nil {
							return err
						}
						return tx.AppendAudit(ctx, store.AuditRecord{Seq: head.Seq + 1, Time: time.Now(), ActorID: "a", Action: "x.y", Outcome: "success",
							Details: "{}", PrevHash: head.Hash, Hash: fmt.Sprint("h", head.Seq+1)})
					}))
				}
			}()
		}
		wg.Wait()
		head, err := st.AuditHead(ctx)
		require.NoError(t, err)
		require.Equal(t, int64(160), head.Seq)
	})
}

// TestInTxGroupedClose: Close stops the writer after its batch; calls
// after it fail instead of hanging.
func TestInTxGroupedClose(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{Dialect: store.SQLite, DSN: storetest.DSN(t, store.SQLite)})
	require.NoError(t, err)
	groupTable(t, st)
	var wg sync.WaitGroup
	for k := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = st.InTxGrouped(ctx, func(tx *store.Tx) error { return groupInsert(ctx, tx, k) })
		}()
	}
	time.Sleep(time.Millisecond)
	require.NoError(t, st.Close())
	wg.Wait()
	require.Error(t, st.InTxGrouped(ctx, func(tx *store.Tx) error { return nil }))
}

// TestInTxGroupedCommitFailure: a deferred constraint fails the shared
// COMMIT, so every caller in the batch whose function succeeded gets the
// error, nothing of the batch is stored, and the writer goes on.
func TestInTxGroupedCommitFailure(t *testing.T) {
	st := storetest.Open(t, store.SQLite)
	ctx := context.Background()
	groupTable(t, st)
	_, err := st.DB().ExecContext(ctx, "CREATE TABLE grouped_child (k INTEGER PRIMARY KEY, parent INTEGER REFERENCES grouped_test (k) DEFERRABLE INITIALLY DEFERRED)")
	require.NoError(t, err)
	release := holdWriter(t, st)
	const n = 8
	var wg sync.WaitGroup
	results := make([]error, n)
	for k := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[k] = st.InTxGrouped(ctx, func(tx *store.Tx) error {
				if err := groupInsert(ctx, tx, k); err != nil {
					return err
				}
				if k == 3 { // checked only at COMMIT
					_, err := tx.SQL().ExecContext(ctx, "INSERT INTO grouped_child (k, parent) VALUES (1, 999)")
					return err
				}
				return nil
			})
		}()
	}
	release()
	wg.Wait()
	for k, err := range results {
		require.Error(t, err, "key %d", k)
		require.Contains(t, err.Error(), "commit grouped transaction", "key %d", k)
	}
	require.Empty(t, groupKeys(t, st))
	require.NoError(t, st.InTxGrouped(ctx, func(tx *store.Tx) error { return groupInsert(ctx, tx, 100) }))
	require.NoError(t, st.InTx(ctx, func(tx *store.Tx) error { return groupInsert(ctx, tx, 101) }))
	require.Equal(t, map[int]bool{100: true, 101: true}, groupKeys(t, st))
}

// TestInTxGroupedAfterCommit: AfterCommit hooks run after the shared
// commit for just the functions that succeeded, in their callers.
func TestInTxGroupedAfterCommit(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		groupTable(t, st)
		const n = 40
		var wg sync.WaitGroup
		hooked := make([]atomic.Bool, n)
		results := make([]error, n)
		release := holdWriter(t, st)
		for k := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[k] = st.InTxGrouped(ctx, func(tx *store.Tx) error {
					tx.AfterCommit(func() { hooked[k].Store(true) })
					if err := groupInsert(ctx, tx, k); err != nil {
						return err
					}
					if k%3 == 0 {
						return errGroupTest
					}
					return nil
				})
				// The hook has run by the time the call returns.
				require.Equal(t, results[k] == nil, hooked[k].Load(), "key %d", k)
			}()
		}
		release()
		wg.Wait()
		got := groupKeys(t, st)
		for k := range n {
			require.Equal(t, k%3 != 0, got[k], "key %d", k)
			require.Equal(t, k%3 != 0, hooked[k].Load(), "key %d", k)
		}
	})
}
