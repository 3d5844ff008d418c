package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

// TestAppendAuditMovesHeadOnlyFromItsPredecessor: an append whose seq does
// not follow the head is refused as a conflict, as is a seq already
// stored, and neither changes the chain.
func TestAppendAuditMovesHeadOnlyFromItsPredecessor(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		now := time.Now()
		rec := func(seq int64, prev string) store.AuditRecord {
			return store.AuditRecord{Seq: seq, Time: now, ActorID: "a", Action: "x.y", Outcome: "success", Details: "{}", PrevHash: prev, Hash: "h" + string(rune('0'+seq))}
		}
		require.NoError(t, st.InTx(ctx, func(tx *store.Tx) error {
			if _, err := tx.LockAuditHead(ctx); err != nil {
				return err
			}
			return tx.AppendAudit(ctx, rec(1, ""))
		}))
		for _, bad := range []store.AuditRecord{rec(3, "h1"), rec(1, "")} {
			err := st.InTx(ctx, func(tx *store.Tx) error {
				if _, err := tx.LockAuditHead(ctx); err != nil {
					return err
				}
				return tx.AppendAudit(ctx, bad)
			})
			require.ErrorIs(t, err, store.ErrConflict, "seq %d", bad.Seq)
		}
		head, err := st.AuditHead(ctx)
		require.NoError(t, err)
		require.Equal(t, store.AuditHead{Seq: 1, Hash: "h1"}, head)
		recs, err := st.ListAudit(ctx, store.AuditFilter{})
		require.NoError(t, err)
		require.Len(t, recs, 1)
	})
}
