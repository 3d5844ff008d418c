package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

// The conformance suite: every test here runs against SQLite and PostgreSQL.

func TestMigrationsAreIdempotent(t *testing.T) {
	for _, d := range storetest.Dialects(t) {
		t.Run(string(d), func(t *testing.T) {
			ctx := context.Background()
			dsn := storetest.DSN(t, d)
			st1, err := store.Open(ctx, store.Config{Dialect: d, DSN: dsn})
			require.NoError(t, err)
			v1, err := st1.SchemaVersion(ctx)
			require.NoError(t, err)
			require.GreaterOrEqual(t, v1, 1)
			require.NoError(t, st1.Close())

			st2, err := store.Open(ctx, store.Config{Dialect: d, DSN: dsn})
			require.NoError(t, err)
			defer st2.Close()
			v2, err := st2.SchemaVersion(ctx)
			require.NoError(t, err)
			require.Equal(t, v1, v2)
		})
	}
}

func TestConcurrentNodesMigrateOnce(t *testing.T) {
	for _, d := range storetest.Dialects(t) {
		if d != store.Postgres {
			continue
		}
		t.Run(string(d), func(t *testing.T) {
			ctx := context.Background()
			dsn := storetest.DSN(t, d)
			var wg sync.WaitGroup
			errs := make([]error, 4)
			for i := range errs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					st, err := store.Open(ctx, store.Config{Dialect: d, DSN: dsn})
					if err == nil {
						st.Close()
					}
					errs[i] = err
				}()
			}
			wg.Wait()
			for i, err := range errs {
				require.NoError(t, err, "node %d", i)
			}
		})
	}
}

func TestTokens(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		now := time.Date(2026, 5, 1, 12, 0, 0, 123456000, time.UTC)
		exp := now.Add(time.Hour)
		tok := store.Token{ID: "tok_1", Name: "ci", Role: "operator", SecretHash: "h1", CreatedAt: now, CreatedBy: "system", ExpiresAt: &exp}
		require.NoError(t, st.InTx(ctx, func(tx *store.Tx) error { return tx.InsertToken(ctx, tok) }))

		got, err := st.TokenBySecretHash(ctx, "h1")
		require.NoError(t, err)
		require.Equal(t, tok, got)

		_, err = st.TokenBySecretHash(ctx, "nope")
		require.ErrorIs(t, err, store.ErrNotFound)

		dup := tok
		dup.ID = "tok_2"
		err = st.InTx(ctx, func(tx *store.Tx) error { return tx.InsertToken(ctx, dup) })
		require.ErrorIs(t, err, store.ErrConflict, "same secret hash must conflict")

		revokedAt := now.Add(time.Minute)
		require.NoError(t, st.InTx(ctx, func(tx *store.Tx) error {
			_, err := tx.RevokeToken(ctx, "tok_1", revokedAt)
			return err
		}))
		got, err = st.Token(ctx, "tok_1")
		require.NoError(t, err)
		require.Equal(t, revokedAt, *got.RevokedAt)

		err = st.InTx(ctx, func(tx *store.Tx) error {
			_, err := tx.RevokeToken(ctx, "tok_1", revokedAt)
			return err
		})
		require.ErrorIs(t, err, store.ErrConflict)
		err = st.InTx(ctx, func(tx *store.Tx) error {
			_, err := tx.RevokeToken(ctx, "missing", revokedAt)
			return err
		})
		require.ErrorIs(t, err, store.ErrNotFound)

		list, err := st.ListTokens(ctx)
		require.NoError(t, err)
		require.Len(t, list, 1)
		require.Equal(t, "tok_1", list[0].ID)
	})
}

func TestRollbackChangesNothing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		boom := errors.New("boom")
		err := st.InTx(ctx, func(tx *store.Tx) error {
			if err := tx.InsertToken(ctx, store.Token{ID: "tok_x", Name: "x", Role: "admin", SecretHash: "hx", CreatedAt: time.Now(), CreatedBy: "t"}); err != nil {
				return err
			}
			head, err := tx.LockAuditHead(ctx)
			if err != nil {
				return err
			}
			if err := tx.AppendAudit(ctx, store.AuditRecord{Seq: head.Seq + 1, Time: time.Now(), Action: "a", Details: "{}", Hash: "h"}); err != nil {
				return err
			}
			return boom
		})
		require.ErrorIs(t, err, boom)
		list, err := st.ListTokens(ctx)
		require.NoError(t, err)
		require.Empty(t, list)
		head, err := st.AuditHead(ctx)
		require.NoError(t, err)
		require.Equal(t, store.AuditHead{Seq: 0, Hash: ""}, head)
		recs, err := st.ListAudit(ctx, store.AuditFilter{})
		require.NoError(t, err)
		require.Empty(t, recs)
	})
}

func TestAuditAppendAndFilter(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		actions := []string{"token.create", "token.revoke", "ca.add", "token.create", "auth.denied"}
		for i, a := range actions {
			require.NoError(t, st.InTx(ctx, func(tx *store.Tx) error {
				head, err := tx.LockAuditHead(ctx)
				if err != nil {
					return err
				}
				return tx.AppendAudit(ctx, store.AuditRecord{
					Seq: head.Seq + 1, Time: base.Add(time.Duration(i) * time.Hour), ActorID: "tok_a", ActorName: "alice", ActorRole: "admin",
					Action: a, Target: "t/" + a, Outcome: "success", Details: `{"i":1}`, PrevHash: head.Hash, Hash: "h" + a,
				})
			}))
		}
		head, err := st.AuditHead(ctx)
		require.NoError(t, err)
		require.Equal(t, int64(5), head.Seq)

		// A stale head (someone else appended) conflicts rather than forks.
		err = st.InTx(ctx, func(tx *store.Tx) error {
			return tx.AppendAudit(ctx, store.AuditRecord{Seq: 3, Time: base, Action: "x", Details: "{}", Hash: "x"})
		})
		require.ErrorIs(t, err, store.ErrConflict)

		seqs := func(f store.AuditFilter) []int64 {
			recs, err := st.ListAudit(ctx, f)
			require.NoError(t, err)
			var out []int64
			for _, r := range recs {
				out = append(out, r.Seq)
			}
			return out
		}
		require.Equal(t, []int64{5, 4, 3, 2, 1}, seqs(store.AuditFilter{}))
		require.Equal(t, []int64{1, 2, 3, 4, 5}, seqs(store.AuditFilter{Ascending: true}))
		require.Equal(t, []int64{4, 1}, seqs(store.AuditFilter{Action: "token.create"}))
		require.Equal(t, []int64{4, 2, 1}, seqs(store.AuditFilter{Action: "token.*"}))
		require.Equal(t, []int64{4, 2, 1}, seqs(store.AuditFilter{Action: "token."}))
		require.Nil(t, seqs(store.AuditFilter{Action: "tok%"}), "LIKE wildcards are literal")
		require.Equal(t, []int64{3}, seqs(store.AuditFilter{Target: "t/ca.add"}))
		require.Equal(t, []int64{5, 4, 3, 2, 1}, seqs(store.AuditFilter{Actor: "alice"}))
		require.Equal(t, []int64{5, 4, 3, 2, 1}, seqs(store.AuditFilter{Actor: "tok_a"}))
		require.Equal(t, []int64{3, 2}, seqs(store.AuditFilter{Since: base.Add(time.Hour), Until: base.Add(3 * time.Hour)}))
		require.Equal(t, []int64{3, 2}, seqs(store.AuditFilter{BeforeSeq: 4, Limit: 2}))
		require.Equal(t, []int64{4, 5}, seqs(store.AuditFilter{AfterSeq: 3, Ascending: true}))

		recs, err := st.ListAudit(ctx, store.AuditFilter{Target: "t/ca.add"})
		require.NoError(t, err)
		require.Equal(t, store.AuditRecord{Seq: 3, Time: base.Add(2 * time.Hour), ActorID: "tok_a", ActorName: "alice", ActorRole: "admin",
			Action: "ca.add", Target: "t/ca.add", Outcome: "success", Details: `{"i":1}`, PrevHash: "htoken.revoke", Hash: "hca.add"}, recs[0])
	})
}

func TestPing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		require.NoError(t, st.Ping(context.Background()))
	})
}
