package connector_test

import (
	"context"
	"crypto/tls"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/connector"
	"github.com/trustflow/trustflow/internal/truststore"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

// ticketServer is a TLS 1.3 server that issues session tickets, closes
// every connection after its answer (so that each call handshakes again),
// and counts the tickets clients offer to resume with.
type ticketServer struct {
	*testServer
	offered  atomic.Int64
	accepted atomic.Int64
}

func startTicketServer(t *testing.T, cfg *tls.Config) *ticketServer {
	t.Helper()
	ts := &ticketServer{}
	var live atomic.Pointer[tls.Config]
	cfg.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		ts.offered.Add(1)
		ss, err := live.Load().DecryptTicket(identity, cs)
		if ss != nil {
			ts.accepted.Add(1)
		}
		return ss, err
	}
	ts.testServer = startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		okHandler(w, r)
	}), cfg, false)
	// httptest serves a clone of cfg: its ticket keys are the ones to use.
	live.Store(ts.TLS)
	return ts
}

// TestCAReplacedRefusesNextConnection replaces the bundle a connector
// trusts (RemoveCA is refused while a connector uses it; UpdateCA is the
// way to withdraw trust) and checks that the next connection is refused,
// whether it is a full handshake or the resumption of a session
// established under the old trust.
func TestCAReplacedRefusesNextConnection(t *testing.T) {
	ctx := context.Background()
	e := sqliteEnv(t)
	e.addCA(t, "demo", e.ca)
	e.addIdentity(t, "svc", e.ca)
	other := truststoretest.NewCA(t, truststoretest.CommonName("Replacement Root CA"))
	leaf := e.ca.IssueServer(t, "127.0.0.1")
	srv := startTicketServer(t, serverConfig(leaf, e.ca.Pool()))
	e.create(t, mtlsSpec("hr", srv.testServer))

	// A client as an in-flight request holds it; it and the service's
	// current client are the same until something changes.
	held, err := e.conns.HeldClient(ctx, "hr")
	require.NoError(t, err)
	resp, err := e.conns.Do(ctx, "hr", connector.Request{Path: "/"})
	require.NoError(t, err)
	require.False(t, resp.Evidence.Resumed)
	ev, err := held(ctx)
	require.NoError(t, err)
	require.True(t, ev.Resumed, "the session cache holds a ticket and resumption works")
	require.Equal(t, int64(1), srv.offered.Load())
	require.Equal(t, int64(1), srv.accepted.Load())

	_, err = e.trust.UpdateCA(ctx, admin, truststore.CARequest{Name: "demo", Data: other.CertPEM()})
	require.NoError(t, err)

	// The next call builds a client for the new bundle: a full handshake
	// (its session cache starts empty, so nothing is offered), refused.
	_, err = e.conns.Do(ctx, "hr", connector.Request{Path: "/"})
	ce := callError(t, err)
	require.Equal(t, "unknown_authority", ce.Code, ce.Message)
	require.Contains(t, ce.Message, e.ca.Cert.Subject.String(), "names the issuer of the server's certificate")
	require.Contains(t, ce.Message, "(demo)", "names the connector's CAs")
	require.Equal(t, int64(1), srv.offered.Load(), "a client built after the change has no session to resume")

	// The held client still has the old bundle in its tls.Config and a
	// ticket in its cache: crypto/tls resumes (the server accepts the
	// ticket), and VerifyConnection, which runs on resumed sessions too,
	// refuses it against the live trust store.
	_, err = held(ctx)
	ce = callError(t, err)
	require.Equal(t, "unknown_authority", ce.Code, ce.Message)
	require.Equal(t, int64(2), srv.offered.Load(), "the refused handshake offered the old session's ticket")
	require.Equal(t, int64(2), srv.accepted.Load(), "and the server accepted it: the refusal is the client's")

	res, err := e.conns.Test(ctx, admin, "hr", "")
	require.NoError(t, err)
	require.False(t, res.OK)
	require.Equal(t, "unknown_authority", res.Error.Code)
	c, err := e.conns.Get(ctx, "hr")
	require.NoError(t, err)
	require.False(t, *c.LastTestOK)
	require.True(t, strings.HasPrefix(c.LastError, "unknown_authority: "), c.LastError)

	// Trust restored: calls work again.
	_, err = e.trust.UpdateCA(ctx, admin, truststore.CARequest{Name: "demo", Data: e.ca.CertPEM()})
	require.NoError(t, err)
	resp, err = e.conns.Do(ctx, "hr", connector.Request{Path: "/"})
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.Status)
}
