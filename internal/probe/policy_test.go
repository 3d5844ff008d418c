package probe_test

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/policy"
	"github.com/trustflow/trustflow/internal/probe"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

// TestProbeObeysTheEgressPolicy: the probe is no port scanner. Under the
// default policy a probe of loopback or the metadata address is refused
// before any connection (the server sees none); an IP rule opens loopback.
func TestProbeObeysTheEgressPolicy(t *testing.T) {
	t.Parallel()
	st := storetest.Open(t, store.SQLite)
	e := newEnv(t, st)
	var cur atomic.Pointer[policy.Policy]
	set := func(doc string) {
		p, err := policy.Parse("p.yaml", []byte("apiVersion: trustflow/v1\nkind: Policy\n"+doc))
		require.NoError(t, err)
		cur.Store(p)
	}
	set("")
	prober, err := probe.New(probe.Config{Trust: e.trust, Audit: e.audit, Clock: clock.NewFake(e.now), Policy: cur.Load})
	require.NoError(t, err)
	srv, seen := serve(t, e.ca.IssueServer(t, "127.0.0.1"), requireClientCerts(e.ca))
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "https://"))
	ctx := context.Background()
	for _, u := range []string{srv.URL, "https://169.254.169.254/", "https://[::ffff:127.0.0.1]:" + port + "/", "https://localhost:" + port + "/"} {
		_, err := prober.Probe(ctx, admin, probe.Request{URL: u, CAs: []string{"demo"}, Identity: "svc"})
		ee, ok := errs.As(err)
		require.True(t, ok, "%s: %v", u, err)
		require.Equal(t, errs.Invalid, ee.Kind, u)
		require.Equal(t, policy.CodeEgressDenied, ee.Code, u)
		require.Equal(t, "url", ee.Field, u)
	}
	seen.mu.Lock()
	require.Zero(t, seen.conns, "no probe connected")
	seen.mu.Unlock()

	set("egress: {allow: [{host: 127.0.0.1, ports: '" + port + "'}]}\n")
	rep, err := prober.Probe(ctx, admin, probe.Request{URL: srv.URL, CAs: []string{"demo"}, Identity: "svc"})
	require.NoError(t, err)
	require.Equal(t, probe.VerdictEnforced, rep.Verdict)
}
