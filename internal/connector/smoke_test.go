package connector_test

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/connector"
	"github.com/trustflow/trustflow/internal/policy"
	"github.com/trustflow/trustflow/internal/seal"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
	"github.com/trustflow/trustflow/internal/truststore"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

var admin = audit.Actor{ID: "tok_admin", Name: "admin", Role: "admin"}

type env struct {
	st    *store.Store
	log   *audit.Log
	trust *truststore.Service
	conns *connector.Service
	ca    *truststoretest.CA
}

// envConfig holds what newEnv's options change.
type envConfig struct {
	clock      clock.Clock
	auditCalls *bool
	policy     func() *policy.Policy
}

// envOption changes the services newEnv builds.
type envOption func(*envConfig)

// withClock makes the trust store, the audit log and the connectors tell
// time by c.
func withClock(c clock.Clock) envOption { return func(ec *envConfig) { ec.clock = c } }

// withPolicy makes the connectors obey the policy p returns.
func withPolicy(p func() *policy.Policy) envOption { return func(ec *envConfig) { ec.policy = p } }

// withoutCallAudit turns off the audit record of every outbound call.
func withoutCallAudit() envOption {
	return func(ec *envConfig) { off := false; ec.auditCalls = &off }
}

func newEnv(t testing.TB, st *store.Store, opts ...envOption) *env {
	t.Helper()
	var ec envConfig
	for _, o := range opts {
		o(&ec)
	}
	kek, err := seal.NewKEK()
	require.NoError(t, err)
	log := audit.New(st, ec.clock)
	trust, err := truststore.New(truststore.Config{Store: st, Audit: log, Keyring: seal.NewKeyring(kek), Clock: ec.clock})
	require.NoError(t, err)
	conns, err := connector.New(connector.Config{Store: st, Audit: log, Trust: trust, Clock: ec.clock, AuditCalls: ec.auditCalls, Policy: ec.policy})
	require.NoError(t, err)
	trust.SetInUse(conns.InUse)
	return &env{st: st, log: log, trust: trust, conns: conns, ca: truststoretest.NewCA(t)}
}

func TestSmokeMTLSCall(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newEnv(t, st)
		srvLeaf := e.ca.IssueServer(t, "127.0.0.1", "localhost")
		var seenSerial string
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			seenSerial = r.TLS.PeerCertificates[0].SerialNumber.Text(16)
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"ok":true}`))
		}))
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{srvLeaf.TLSCertificate()}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: e.ca.Pool()}
		srv.StartTLS()
		defer srv.Close()

		_, err := e.trust.AddCA(ctx, admin, truststore.CARequest{Name: "demo", Data: e.ca.CertPEM()})
		require.NoError(t, err)
		cl := e.ca.IssueClient(t, "trustflow-client")
		_, err = e.trust.Import(ctx, admin, truststore.ImportRequest{Name: "svc", Material: truststore.Material{Cert: cl.CertPEM(), Key: cl.KeyPEM()}})
		require.NoError(t, err)
		_, err = e.conns.Create(ctx, admin, connector.Spec{Name: "hr", URL: srv.URL, Auth: "mtls", Identity: "svc", CAs: []string{"demo"}})
		require.NoError(t, err)

		resp, err := e.conns.Do(ctx, "hr", connector.Request{Method: "GET", Path: "/users/1", IdempotencyKey: "run/1"})
		require.NoError(t, err)
		require.Equal(t, 200, resp.Status)
		require.JSONEq(t, `{"ok":true}`, string(resp.Body))
		require.NotNil(t, resp.Evidence)
		require.True(t, resp.Evidence.ServerRequestedClientCert)
		require.Equal(t, "svc", resp.Evidence.ClientCertificate.Identity)
		require.Equal(t, seenSerial, resp.Evidence.ClientCertificate.Serial)

		res, err := e.conns.Test(ctx, admin, "hr", "")
		require.NoError(t, err)
		require.True(t, res.OK, "%+v", res.Error)
	})
}
