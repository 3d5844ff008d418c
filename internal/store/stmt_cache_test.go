package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func openTestSQLite(t *testing.T) *Store {
	t.Helper()
	st, err := Open(context.Background(), Config{Dialect: SQLite, DSN: filepath.Join(t.TempDir(), "trustflow.db")})
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	return st
}

func TestStatementCacheReusesAndBounds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := openTestSQLite(t)

	// A transaction runs a new text unprepared and prepares it once it ends.
	q := "SELECT COUNT(*) FROM flows WHERE name = $1"
	var n int
	require.NoError(t, st.InTx(ctx, func(tx *Tx) error { return tx.tx.QueryRowContext(ctx, q, "x").Scan(&n) }))
	require.NotNil(t, st.write.stmts.lookup(q))
	require.NoError(t, st.InTx(ctx, func(tx *Tx) error { return tx.tx.QueryRowContext(ctx, q, "x").Scan(&n) }))

	// Past the bound, new texts still run, as text.
	for i := range maxCachedStatements + 10 {
		require.NoError(t, st.read.QueryRowContext(ctx, fmt.Sprintf("SELECT %d", i)).Scan(&n))
		require.Equal(t, i, n)
	}
	require.Len(t, st.read.stmts.stmts, maxCachedStatements)

	// A text that does not prepare reports its error as it did before.
	_, err := st.read.ExecContext(ctx, "SELECT * FROM no_such_table")
	require.ErrorContains(t, err, "no such table")
}

func TestNestedQueryInTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := openTestSQLite(t)
	q := "SELECT version FROM schema_migrations ORDER BY version"
	require.NoError(t, st.InTx(ctx, func(tx *Tx) error { _, err := tx.tx.QueryContext(ctx, q); return err }))
	want, err := st.SchemaVersion(ctx)
	require.NoError(t, err)

	// The same text, open twice on the transaction's one connection, keeps
	// two cursors.
	var pairs int
	require.NoError(t, st.InTx(ctx, func(tx *Tx) error {
		outer, err := tx.tx.QueryContext(ctx, q)
		if err != nil {
			return err
		}
		defer outer.Close()
		for outer.Next() {
			inner, err := tx.tx.QueryContext(ctx, q)
			if err != nil {
				return err
			}
			for inner.Next() {
				pairs++
			}
			if err := inner.Close(); err != nil {
				return err
			}
		}
		return outer.Err()
	}))
	require.Equal(t, want*want, pairs)
}

func TestClosedStoreFailsAsBefore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := openTestSQLite(t)
	_, err := st.Run(ctx, "run_x")
	require.ErrorIs(t, err, ErrNotFound)
	require.NoError(t, st.Close())
	_, err = st.Run(ctx, "run_x")
	require.ErrorContains(t, err, "sql: database is closed")
}
