package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

var hookTime = time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)

func insertHookFlow(t *testing.T, st *store.Store, name string) {
	t.Helper()
	require.NoError(t, st.InTx(context.Background(), func(tx *store.Tx) error {
		return tx.InsertFlow(context.Background(), store.Flow{Name: name, CurrentVersion: 1, TriggerKind: "webhook:hmac",
			WebhookSecret: []byte("sealed-current"), KEKID: "kek_a", CreatedAt: hookTime, UpdatedAt: hookTime})
	}))
}

var errReplay = errors.New("replay")

// mark records macs as the engine does: a replay rolls the transaction
// back.
func mark(t *testing.T, st *store.Store, flow string, expires time.Time, macs ...string) bool {
	t.Helper()
	var fresh bool
	err := st.InTx(context.Background(), func(tx *store.Tx) error {
		var err error
		fresh, err = tx.MarkWebhookSignatures(context.Background(), flow, macs, expires)
		if err == nil && !fresh {
			return errReplay
		}
		return err
	})
	if !fresh {
		require.ErrorIs(t, err, errReplay)
	} else {
		require.NoError(t, err)
	}
	return fresh
}

func TestWebhookSignaturesAreAcceptedOnce(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		exp := hookTime.Add(5 * time.Minute)
		require.True(t, mark(t, st, "hook", exp, "aa", "bb"), "a first request")
		require.False(t, mark(t, st, "hook", exp, "aa"), "its replay")
		require.False(t, mark(t, st, "hook", exp, "cc", "bb"), "a replay signed with the other secret only")
		require.True(t, mark(t, st, "hook", exp, "cc"), "the refused replay left nothing behind")
		require.True(t, mark(t, st, "other", exp, "aa"), "signatures are per flow")
		require.False(t, mark(t, st, "hook", exp), "no signature is never fresh")

		p, err := st.PurgeWebhookState(context.Background(), exp)
		require.NoError(t, err)
		require.Equal(t, store.WebhookPurge{}, p, "nothing is purged before it expires")
		p, err = st.PurgeWebhookState(context.Background(), exp.Add(time.Microsecond))
		require.NoError(t, err)
		require.Equal(t, store.WebhookPurge{Replays: 4}, p)
		require.True(t, mark(t, st, "hook", exp, "aa"), "an expired signature is forgotten")
	})
}

func claim(t *testing.T, st *store.Store, flow, id string, now time.Time, run string) (bool, string) {
	t.Helper()
	var claimed bool
	var got string
	require.NoError(t, st.InTx(context.Background(), func(tx *store.Tx) error {
		var err error
		claimed, got, err = tx.ClaimWebhookDelivery(context.Background(), flow, id, now, now.Add(24*time.Hour))
		if err != nil || !claimed {
			return err
		}
		return tx.SetWebhookDeliveryRun(context.Background(), flow, id, run)
	}))
	return claimed, got
}

func TestWebhookDeliveryMapsToItsFirstRun(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		claimed, _ := claim(t, st, "hook", "evt-1", hookTime, "run_1")
		require.True(t, claimed)
		claimed, run := claim(t, st, "hook", "evt-1", hookTime.Add(time.Hour), "run_2")
		require.False(t, claimed)
		require.Equal(t, "run_1", run)
		claimed, _ = claim(t, st, "other", "evt-1", hookTime, "run_3")
		require.True(t, claimed, "delivery ids are per flow")

		// After 24h the id is free again, even before a purge.
		claimed, _ = claim(t, st, "hook", "evt-1", hookTime.Add(24*time.Hour), "run_4")
		require.True(t, claimed)
		claimed, run = claim(t, st, "hook", "evt-1", hookTime.Add(25*time.Hour), "run_5")
		require.False(t, claimed)
		require.Equal(t, "run_4", run)

		p, err := st.PurgeWebhookState(context.Background(), hookTime.Add(47*time.Hour))
		require.NoError(t, err)
		require.Equal(t, store.WebhookPurge{Deliveries: 1}, p, "other/evt-1 expired; hook/evt-1 was claimed again")
	})
}

// TestConcurrentDeliveryClaimsStartOneRun claims one delivery id from many
// transactions at once: exactly one claims it, and every other one, after
// waiting for it, reads the run it recorded.
func TestConcurrentDeliveryClaimsStartOneRun(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		const n = 12
		var wg sync.WaitGroup
		start := make(chan struct{})
		type result struct {
			claimed bool
			run     string
			err     error
		}
		results := make([]result, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				mine := fmt.Sprintf("run_%d", i)
				results[i].err = st.InTx(context.Background(), func(tx *store.Tx) error {
					claimed, run, err := tx.ClaimWebhookDelivery(context.Background(), "hook", "evt-race", hookTime, hookTime.Add(time.Hour))
					if err != nil {
						return err
					}
					results[i].claimed, results[i].run = claimed, run
					if !claimed {
						return nil
					}
					results[i].run = mine
					return tx.SetWebhookDeliveryRun(context.Background(), "hook", "evt-race", mine)
				})
			}()
		}
		close(start)
		wg.Wait()
		winners := 0
		var winner string
		for _, r := range results {
			require.NoError(t, r.err)
			if r.claimed {
				winners++
				winner = r.run
			}
		}
		require.Equal(t, 1, winners)
		for _, r := range results {
			require.Equal(t, winner, r.run, "every delivery answers with the winner's run")
		}
	})
}

func TestPreviousWebhookSecretIsForgottenAfterItsOverlap(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		ctx := context.Background()
		insertHookFlow(t, st, "hook")
		insertHookFlow(t, st, "plain")
		k, err := st.WebhookKeys(ctx, "hook")
		require.NoError(t, err)
		require.Equal(t, store.WebhookKeys{Flow: "hook", TriggerKind: "webhook:hmac", Secret: []byte("sealed-current")}, k)

		until := hookTime.Add(24 * time.Hour)
		require.NoError(t, st.InTx(ctx, func(tx *store.Tx) error {
			k, err := tx.WebhookKeys(ctx, "hook")
			if err != nil {
				return err
			}
			k.Previous, k.PreviousKEKID, k.PreviousUntil = k.Secret, "kek_a", until
			k.Secret = []byte("sealed-new")
			return tx.SetWebhookSecrets(ctx, k, "kek_b", hookTime)
		}))
		k, err = st.WebhookKeys(ctx, "hook")
		require.NoError(t, err)
		require.Equal(t, store.WebhookKeys{Flow: "hook", TriggerKind: "webhook:hmac", Secret: []byte("sealed-new"),
			Previous: []byte("sealed-current"), PreviousKEKID: "kek_a", PreviousUntil: until}, k)
		f, err := st.FlowByName(ctx, "hook")
		require.NoError(t, err)
		require.Equal(t, "kek_b", f.KEKID)
		counts, err := st.SealedKEKCounts(ctx)
		require.NoError(t, err)
		require.Equal(t, map[string]int{"kek_a": 1}, counts["flows.webhook_secret_previous"], "the previous secret is a registered sealed column")

		names, err := st.FlowsWithExpiredPreviousSecret(ctx, until.Add(-time.Microsecond))
		require.NoError(t, err)
		require.Empty(t, names)
		names, err = st.FlowsWithExpiredPreviousSecret(ctx, until)
		require.NoError(t, err)
		require.Equal(t, []string{"hook"}, names)
		for _, want := range []bool{true, false} {
			require.NoError(t, st.InTx(ctx, func(tx *store.Tx) error {
				forgot, err := tx.ForgetPreviousWebhookSecret(ctx, "hook", until)
				require.Equal(t, want, forgot, "forgotten once, by whichever node comes first")
				return err
			}))
		}
		k, err = st.WebhookKeys(ctx, "hook")
		require.NoError(t, err)
		require.Equal(t, store.WebhookKeys{Flow: "hook", TriggerKind: "webhook:hmac", Secret: []byte("sealed-new")}, k)

		_, err = st.WebhookKeys(ctx, "missing")
		require.ErrorIs(t, err, store.ErrNotFound)
	})
}
