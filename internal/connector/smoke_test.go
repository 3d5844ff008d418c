package connector_test

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/connector"
	"github.com/trustflow/trustflow/internal/seal"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
	"github.com/trustflow/trustflow/internal/truststore"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

var admin = audit.Actor{ID: "tok_admin", Name: "admin", Role: "admin"}

type env struct {
	st    *store.Store
	trust *truststore.Service
	conns *connector.Service
	ca    *truststoretest.CA
}

func newEnv(t *testing.T, st *store.Store) *env {
	t.Helper()
	kek, err := seal.NewKEK()
	require.NoError(t, err)
	log := audit.New(st, nil)
	trust, err := truststore.New(truststore.Config{Store: st, Audit: log, Keyring: seal.NewKeyring(kek)})
	require.NoError(t, err)
	conns, err := connector.New(connector.Config{Store: st, Audit: log, Trust: trust})
	require.NoError(t, err)
	trust.SetInUse(conns.InUse)
	return &env{st: st, trust: trust, conns: conns, ca: truststoretest.NewCA(t)}
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
