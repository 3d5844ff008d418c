package policy_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/policy"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

var admin = audit.Actor{ID: "tok_admin", Name: "root", Role: "admin"}

func lastAudit(t *testing.T, st *store.Store, action string) audit.Record {
	t.Helper()
	recs, err := audit.New(st, nil).List(context.Background(), audit.Filter{Action: action, Limit: 1})
	require.NoError(t, err)
	require.Len(t, recs, 1, action)
	return recs[0]
}

func TestServiceChangesAreStoredAuditedAndSeenByOtherNodes(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		clk := clock.NewFake(time.Date(2026, 12, 4, 9, 0, 0, 0, time.UTC))
		newSvc := func() *policy.Service {
			s, err := policy.NewService(ctx, policy.ServiceConfig{Store: st, Audit: audit.New(st, clk), Clock: clk})
			require.NoError(t, err)
			return s
		}
		a, b := newSvc(), newSvc()
		v, err := a.Get(ctx)
		require.NoError(t, err)
		require.Equal(t, policy.View{Document: policy.Default()}, v, "nothing stored: the default")
		require.Error(t, a.Current().CheckAddr("127.0.0.1", mustAddr("127.0.0.1"), 8443))

		v, err = a.Allow(ctx, admin, policy.Rule{Host: "127.0.0.1", Ports: "8443"})
		require.NoError(t, err)
		require.Equal(t, int64(1), v.Revision)
		require.Equal(t, []policy.Rule{{Host: "127.0.0.1", Ports: "8443"}}, v.Document.Egress.Allow)
		require.NoError(t, a.Current().CheckAddr("127.0.0.1", mustAddr("127.0.0.1"), 8443), "the changing node applies it at once")
		rec := lastAudit(t, st, "policy.allow")
		require.Equal(t, "root", rec.Actor.Name)
		var det struct {
			Revision int64           `json:"revision"`
			Rule     policy.Rule     `json:"rule"`
			Before   policy.Document `json:"before"`
			After    policy.Document `json:"after"`
		}
		require.NoError(t, json.Unmarshal(rec.Details, &det))
		require.Equal(t, int64(1), det.Revision)
		require.Equal(t, policy.Rule{Host: "127.0.0.1", Ports: "8443"}, det.Rule)
		require.Empty(t, det.Before.Egress.Allow)
		require.Len(t, det.After.Egress.Allow, 1)

		// The other node sees it once its cache is stale.
		require.Error(t, b.Current().CheckAddr("127.0.0.1", mustAddr("127.0.0.1"), 8443), "b still trusts its cache")
		clk.Advance(2 * time.Second)
		require.NoError(t, b.Current().CheckAddr("127.0.0.1", mustAddr("127.0.0.1"), 8443), "b reloaded the new revision")

		// Allowing the same rule again changes nothing but the revision.
		v, err = b.Allow(ctx, admin, policy.Rule{Host: "127.0.0.1", Ports: "8443"})
		require.NoError(t, err)
		require.Len(t, v.Document.Egress.Allow, 1)

		// Set replaces the document; a bad one changes nothing.
		doc := policy.Default()
		doc.TLS.MinVersion = "1.0"
		_, err = a.Set(ctx, admin, doc)
		e, ok := errs.As(err)
		require.True(t, ok)
		require.Equal(t, errs.Invalid, e.Kind)
		require.Equal(t, "tls.min_version", e.Field)
		got, err := a.Get(ctx)
		require.NoError(t, err)
		require.Equal(t, int64(2), got.Revision, "the refused set stored nothing")

		doc.TLS.MinVersion = "1.3"
		doc.Egress.Default = policy.DefaultDeny
		v, err = a.Set(ctx, admin, doc)
		require.NoError(t, err)
		require.Equal(t, int64(3), v.Revision)
		require.Equal(t, "1.3", lastAuditDoc(t, st, "policy.set").TLS.MinVersion)

		_, err = a.Disallow(ctx, admin, policy.Rule{Host: "10.0.0.1", Ports: "443"})
		e, ok = errs.As(err)
		require.True(t, ok)
		require.Equal(t, errs.NotFound, e.Kind)
		require.Equal(t, "no_such_rule", e.Code)
	})
}

func lastAuditDoc(t *testing.T, st *store.Store, action string) policy.Document {
	var det struct {
		After policy.Document `json:"after"`
	}
	require.NoError(t, json.Unmarshal(lastAudit(t, st, action).Details, &det))
	return det.After
}

func TestConcurrentChangesNeverLoseOne(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		a, err := policy.NewService(ctx, policy.ServiceConfig{Store: st, Audit: audit.New(st, nil)})
		require.NoError(t, err)
		const n = 8
		errc := make(chan error, n)
		for i := range n {
			go func() {
				var err error
				for range 20 {
					_, err = a.Allow(ctx, admin, policy.Rule{Host: "10.0.0." + string(rune('1'+i)), Ports: "443"})
					if e, ok := errs.As(err); !ok || e.Code != "policy_changed" {
						break
					}
				}
				errc <- err
			}()
		}
		for range n {
			require.NoError(t, <-errc)
		}
		v, err := a.Get(ctx)
		require.NoError(t, err)
		require.Len(t, v.Document.Egress.Allow, n, "every rule added concurrently is kept")
	})
}

// TestEveryCallerSeesTheReloadedPolicy: once another node's change is due,
// no caller gets the stale policy while one of them re-reads it (callers
// wait for the re-read rather than proceed under the old policy).
func TestEveryCallerSeesTheReloadedPolicy(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		clk := clock.NewFake(time.Date(2026, 12, 4, 9, 0, 0, 0, time.UTC))
		a, err := policy.NewService(ctx, policy.ServiceConfig{Store: st, Audit: audit.New(st, clk), Clock: clk})
		require.NoError(t, err)
		b, err := policy.NewService(ctx, policy.ServiceConfig{Store: st, Audit: audit.New(st, clk), Clock: clk})
		require.NoError(t, err)
		_, err = a.Allow(ctx, admin, policy.Rule{Host: "127.0.0.1", Ports: "8443"})
		require.NoError(t, err)
		clk.Advance(2 * time.Second)
		const n = 64
		start := make(chan struct{})
		denied := make(chan error, n)
		for range n {
			go func() {
				<-start
				denied <- b.Current().CheckAddr("127.0.0.1", mustAddr("127.0.0.1"), 8443)
			}()
		}
		close(start)
		for range n {
			require.NoError(t, <-denied, "a caller got the stale policy")
		}
	})
}
