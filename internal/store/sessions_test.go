package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

func TestConsoleSessions(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
		for _, id := range []string{"tok_a", "tok_b"} {
			require.NoError(t, st.InTx(ctx, func(tx *store.Tx) error {
				return tx.InsertToken(ctx, store.Token{ID: id, Name: id, Role: "admin", SecretHash: "h" + id, CreatedAt: now, CreatedBy: "system"})
			}))
		}
		insert := func(idHash, tokenID string, at time.Time, ttl time.Duration) {
			t.Helper()
			require.NoError(t, st.InTx(ctx, func(tx *store.Tx) error {
				return tx.InsertConsoleSession(ctx, store.ConsoleSession{IDHash: idHash, TokenID: tokenID, CreatedAt: at, ExpiresAt: at.Add(ttl), LastSeen: at})
			}))
		}
		insert("s1", "tok_a", now, time.Hour)
		insert("s2", "tok_a", now, time.Hour)
		insert("s3", "tok_b", now, time.Hour)

		got, err := st.ConsoleSession(ctx, "s1", now)
		require.NoError(t, err)
		require.Equal(t, store.ConsoleSession{IDHash: "s1", TokenID: "tok_a", CreatedAt: now, ExpiresAt: now.Add(time.Hour), LastSeen: now}, got)
		_, err = st.ConsoleSession(ctx, "nope", now)
		require.ErrorIs(t, err, store.ErrNotFound)

		// The same hash twice conflicts; a session needs a token that exists.
		err = st.InTx(ctx, func(tx *store.Tx) error {
			return tx.InsertConsoleSession(ctx, store.ConsoleSession{IDHash: "s1", TokenID: "tok_a", CreatedAt: now, ExpiresAt: now.Add(time.Hour), LastSeen: now})
		})
		require.ErrorIs(t, err, store.ErrConflict)
		err = st.InTx(ctx, func(tx *store.Tx) error {
			return tx.InsertConsoleSession(ctx, store.ConsoleSession{IDHash: "s9", TokenID: "tok_missing", CreatedAt: now, ExpiresAt: now.Add(time.Hour), LastSeen: now})
		})
		require.ErrorIs(t, err, store.ErrConflict)

		// last_seen moves forward only.
		require.NoError(t, st.TouchConsoleSession(ctx, "s1", now.Add(time.Minute)))
		require.NoError(t, st.TouchConsoleSession(ctx, "s1", now))
		got, err = st.ConsoleSession(ctx, "s1", now)
		require.NoError(t, err)
		require.Equal(t, now.Add(time.Minute), got.LastSeen)

		// A flash is taken once; a newer one survives an older take.
		require.NoError(t, st.SetConsoleSessionFlash(ctx, "s1", "CA added"))
		got, err = st.ConsoleSession(ctx, "s1", now)
		require.NoError(t, err)
		require.Equal(t, "CA added", got.Flash)
		require.NoError(t, st.SetConsoleSessionFlash(ctx, "s1", "CA removed"))
		took, err := st.TakeConsoleSessionFlash(ctx, "s1", "CA added")
		require.NoError(t, err)
		require.False(t, took)
		took, err = st.TakeConsoleSessionFlash(ctx, "s1", "CA removed")
		require.NoError(t, err)
		require.True(t, took)
		took, err = st.TakeConsoleSessionFlash(ctx, "s1", "CA removed")
		require.NoError(t, err)
		require.False(t, took)
		require.ErrorIs(t, st.SetConsoleSessionFlash(ctx, "nope", "x"), store.ErrNotFound)

		// Revoking a token's sessions leaves the others.
		require.NoError(t, st.InTx(ctx, func(tx *store.Tx) error {
			n, err := tx.DeleteConsoleSessionsOfToken(ctx, "tok_a")
			require.Equal(t, int64(2), n)
			return err
		}))
		_, err = st.ConsoleSession(ctx, "s2", now)
		require.ErrorIs(t, err, store.ErrNotFound)
		_, err = st.ConsoleSession(ctx, "s3", now)
		require.NoError(t, err)

		// Sign-out deletes one row; a second delete finds nothing.
		require.NoError(t, st.InTx(ctx, func(tx *store.Tx) error { return tx.DeleteConsoleSession(ctx, "s3") }))
		err = st.InTx(ctx, func(tx *store.Tx) error { return tx.DeleteConsoleSession(ctx, "s3") })
		require.ErrorIs(t, err, store.ErrNotFound)
	})
}

func TestExpiredConsoleSessionsArePurged(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
		require.NoError(t, st.InTx(ctx, func(tx *store.Tx) error {
			return tx.InsertToken(ctx, store.Token{ID: "tok_a", Name: "a", Role: "admin", SecretHash: "ha", CreatedAt: now, CreatedBy: "system"})
		}))
		insert := func(idHash string, at time.Time) {
			t.Helper()
			require.NoError(t, st.InTx(ctx, func(tx *store.Tx) error {
				return tx.InsertConsoleSession(ctx, store.ConsoleSession{IDHash: idHash, TokenID: "tok_a", CreatedAt: at, ExpiresAt: at.Add(time.Hour), LastSeen: at})
			}))
		}
		count := func() int {
			t.Helper()
			var n int
			require.NoError(t, st.DB().QueryRowContext(ctx, "SELECT COUNT(*) FROM console_sessions").Scan(&n))
			return n
		}
		insert("old1", now)
		insert("old2", now)
		insert("live", now.Add(30*time.Minute))
		require.Equal(t, 3, count())

		// Reading an expired session deletes it: the end is exact.
		_, err := st.ConsoleSession(ctx, "old1", now.Add(time.Hour-time.Microsecond))
		require.NoError(t, err)
		_, err = st.ConsoleSession(ctx, "old1", now.Add(time.Hour))
		require.ErrorIs(t, err, store.ErrNotFound)
		require.Equal(t, 2, count())

		// A sign-in sweeps every expired session.
		insert("new", now.Add(time.Hour))
		require.Equal(t, 2, count())
		_, err = st.ConsoleSession(ctx, "old2", now)
		require.ErrorIs(t, err, store.ErrNotFound)
		_, err = st.ConsoleSession(ctx, "live", now.Add(time.Hour))
		require.NoError(t, err)

		require.NoError(t, st.InTx(ctx, func(tx *store.Tx) error {
			n, err := tx.PurgeExpiredConsoleSessions(ctx, now.Add(3*time.Hour))
			require.Equal(t, int64(2), n)
			return err
		}))
		require.Equal(t, 0, count())
	})
}
