package connector_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/connector"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
	"github.com/trustflow/trustflow/internal/truststore"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

// sqliteEnv is an env on SQLite alone, for tests of TLS behaviour that do
// not depend on the storage dialect.
func sqliteEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	return newEnv(t, storetest.Open(t, store.SQLite), opts...)
}

// addCA stores ca's certificate as the CA bundle called name.
func (e *env) addCA(t testing.TB, name string, ca *truststoretest.CA) {
	t.Helper()
	_, err := e.trust.AddCA(context.Background(), admin, truststore.CARequest{Name: name, Data: ca.CertPEM()})
	require.NoError(t, err)
}

// addIdentity issues a client certificate from ca and imports it as the
// identity called name.
func (e *env) addIdentity(t testing.TB, name string, ca *truststoretest.CA) *truststoretest.Leaf {
	t.Helper()
	leaf := ca.IssueClient(t, "trustflow "+name)
	_, err := e.trust.Import(context.Background(), admin, truststore.ImportRequest{Name: name, Material: truststore.Material{Cert: leaf.CertPEM(), Key: leaf.KeyPEM()}})
	require.NoError(t, err)
	return leaf
}

// activeVersion returns the identity's active version.
func (e *env) activeVersion(t testing.TB, name string) truststore.Version {
	t.Helper()
	ident, err := e.trust.Get(context.Background(), name)
	require.NoError(t, err)
	v, ok := ident.Active()
	require.True(t, ok, "identity %s has no active version", name)
	return v
}

// create stores a connector and fails the test if it is refused.
func (e *env) create(t testing.TB, sp connector.Spec) connector.Connector {
	t.Helper()
	c, err := e.conns.Create(context.Background(), admin, sp)
	require.NoError(t, err)
	return c
}

// lastAudit returns the newest audit record of action on target.
func (e *env) lastAudit(t testing.TB, action, target string) audit.Record {
	t.Helper()
	recs, err := e.log.List(context.Background(), audit.Filter{Action: action, Target: target, Limit: 1})
	require.NoError(t, err)
	require.NotEmpty(t, recs, "no %s record for %s", action, target)
	return recs[0]
}

// auditDetails are the fields of a connector change's audit details that
// the tests look at.
type auditDetails struct {
	PolicyExceptions []string `json:"policy_exceptions"`
	SecretChanged    bool     `json:"secret_changed"`
}

func decodeDetails(t testing.TB, r audit.Record) auditDetails {
	t.Helper()
	var d auditDetails
	require.NoError(t, json.Unmarshal(r.Details, &d))
	return d
}

// serverConfig is a TLS server configuration that presents leaf and, when
// clientCAs is set, requires a client certificate issued by one of them.
func serverConfig(leaf *truststoretest.Leaf, clientCAs *x509.CertPool) *tls.Config {
	cfg := &tls.Config{Certificates: []tls.Certificate{leaf.TLSCertificate()}}
	if clientCAs != nil {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = clientCAs
	}
	return cfg
}

// testServer is a loopback TLS server that counts its new connections.
type testServer struct {
	*httptest.Server
	newConns atomic.Int64
}

// startServer serves h over TLS with cfg (HTTP/2 offered when h2 is set)
// until the test ends. Handshake errors the tests provoke on purpose are
// not logged.
func startServer(t testing.TB, h http.Handler, cfg *tls.Config, h2 bool) *testServer {
	t.Helper()
	ts := &testServer{Server: httptest.NewUnstartedServer(h)}
	ts.EnableHTTP2 = h2
	ts.TLS = cfg
	ts.Config.ErrorLog = log.New(io.Discard, "", 0)
	ts.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			ts.newConns.Add(1)
		}
	}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return ts
}

// okHandler answers every request with a small JSON body.
var okHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"ok":true}`)
})

// requestLog keeps the requests a server received.
type requestLog struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (l *requestLog) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		l.reqs = append(l.reqs, r.Clone(context.Background()))
		l.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

func (l *requestLog) last(t testing.TB) *http.Request {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	require.NotEmpty(t, l.reqs, "the server received no request")
	return l.reqs[len(l.reqs)-1]
}

// callError asserts that err is a diagnosed call failure and returns it.
func callError(t testing.TB, err error) *connector.CallError {
	t.Helper()
	require.Error(t, err)
	var ce *connector.CallError
	require.ErrorAs(t, err, &ce, "want a *connector.CallError, got %T: %v", err, err)
	return ce
}

// mtlsSpec is a connector to srv presenting identity svc and trusting CA demo.
func mtlsSpec(name string, srv *testServer) connector.Spec {
	return connector.Spec{Name: name, URL: srv.URL, Auth: connector.AuthMTLS, Identity: "svc", CAs: []string{"demo"}}
}
