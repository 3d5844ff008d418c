package connector_test

import (
	"context"
	"crypto/tls"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/connector"
)

// TestDiagnosesNameTheLimitThatApplied: a timeout names the step's deadline
// when it was shorter than the connector's, and a TLS 1.2-only server
// behind --min-tls 1.3 is told apart from an old server.
func TestDiagnosesNameTheLimitThatApplied(t *testing.T) {
	t.Parallel()
	e := sqliteEnv(t)
	e.addCA(t, "demo", e.ca)
	e.addIdentity(t, "svc", e.ca)
	slow := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}), serverConfig(e.ca.IssueServer(t, "127.0.0.1"), e.ca.Pool()), false)
	sp := mtlsSpec("slow", slow)
	sp.Timeout = "10s"
	e.create(t, sp)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := e.conns.Do(ctx, "slow", connector.Request{Path: "/"})
	ce := callError(t, err)
	require.Equal(t, "timeout", ce.Code)
	require.Contains(t, ce.Message, "within 300ms")
	require.Contains(t, ce.Hint, "the caller's timeout (300ms")
	require.NotContains(t, ce.Message, "10s")

	cfg := serverConfig(e.ca.IssueServer(t, "127.0.0.1"), e.ca.Pool())
	cfg.MaxVersion = tls.VersionTLS12
	old := startServer(t, okHandler, cfg, false)
	sp = mtlsSpec("old", old)
	sp.MinTLS = "1.3"
	e.create(t, sp)
	_, err = e.conns.Do(context.Background(), "old", connector.Request{Path: "/"})
	ce = callError(t, err)
	require.Equal(t, "tls_version_too_old", ce.Code)
	require.Contains(t, ce.Message, "below TLS 1.3")
	require.Contains(t, ce.Hint, "--min-tls 1.2")
}
