package connector_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/connector"
	"github.com/trustflow/trustflow/internal/pki"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// silentServer accepts connections and never says a word.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// TestDiagnoses provokes every failure a connector diagnoses and checks
// that a call and `connector test` report the same diagnosis, and that the
// test's outcome is stored on the connector.
func TestDiagnoses(t *testing.T) {
	ctx := context.Background()
	e := sqliteEnv(t)
	e.addCA(t, "demo", e.ca)
	e.addIdentity(t, "svc", e.ca)
	other := truststoretest.NewCA(t, truststoretest.CommonName("Other Agency Root CA"))
	good := e.ca.IssueServer(t, "127.0.0.1")
	wrongIssuer := other.IssueServer(t, "127.0.0.1")
	wrongName := e.ca.IssueServer(t, "api.hr.example", "hr.example")
	expired := e.ca.Issue(t, truststoretest.Names("127.0.0.1"), truststoretest.Expired())

	serve := func(leaf *truststoretest.Leaf, edit func(*tls.Config)) string {
		cfg := serverConfig(leaf, e.ca.Pool())
		if edit != nil {
			edit(cfg)
		}
		return startServer(t, okHandler, cfg, true).URL
	}
	tls12 := func(cfg *tls.Config) { cfg.MaxVersion = tls.VersionTLS12 }

	tests := []struct {
		name      string
		spec      func(name string) connector.Spec
		code      string
		words     []string
		hint      string // a part of the hint, when it matters
		retryable bool
	}{
		{
			name: "server certificate from another CA",
			spec: func(n string) connector.Spec {
				return connector.Spec{Name: n, URL: serve(wrongIssuer, nil), Identity: "svc", CAs: []string{"demo"}}
			},
			code:  "unknown_authority",
			words: []string{"CN=Other Agency Root CA", "CN=127.0.0.1", "(demo)"},
		},
		{
			name: "hostname mismatch",
			spec: func(n string) connector.Spec {
				return connector.Spec{Name: n, URL: serve(wrongName, nil), Identity: "svc", CAs: []string{"demo"}}
			},
			code:  "hostname_mismatch",
			words: []string{"api.hr.example, hr.example", `"127.0.0.1"`},
		},
		{
			name: "expired server certificate",
			spec: func(n string) connector.Spec {
				return connector.Spec{Name: n, URL: serve(expired, nil), Identity: "svc", CAs: []string{"demo"}}
			},
			code:  "expired",
			words: []string{"expired at " + expired.Cert.NotAfter.UTC().Format(time.RFC3339), "checked at"},
			hint:  "the server's operator must renew its certificate",
		},
		{
			// Go's server sends unknown_ca when our certificate does not
			// chain to its ClientCAs; in TLS 1.2 the alert ends our handshake.
			name: "TLS 1.2 server rejects our certificate",
			spec: func(n string) connector.Spec {
				return connector.Spec{Name: n, URL: serve(good, func(c *tls.Config) { tls12(c); c.ClientCAs = other.Pool() }), Identity: "svc", CAs: []string{"demo"}}
			},
			code:  "server_rejected_unknown_ca",
			words: []string{"does not trust the CA", "identity svc"},
		},
		{
			// In TLS 1.3 the client's handshake is over before the server
			// judges its certificate: the alert arrives on the first read.
			name: "TLS 1.3 server rejects our certificate",
			spec: func(n string) connector.Spec {
				return connector.Spec{Name: n, URL: serve(good, func(c *tls.Config) { c.ClientCAs = other.Pool() }), Identity: "svc", CAs: []string{"demo"}}
			},
			code:  "server_rejected_unknown_ca",
			words: []string{"does not trust the CA", "identity svc"},
		},
		{
			name: "TLS 1.3 server requires a certificate we do not have",
			spec: func(n string) connector.Spec {
				return connector.Spec{Name: n, URL: serve(good, func(c *tls.Config) { c.ClientAuth, c.ClientCAs = tls.RequireAnyClientCert, nil }),
					Auth: connector.AuthNone, CAs: []string{"demo"}}
			},
			code:  "server_rejected_certificate_required",
			words: []string{"requires a client certificate", "no client certificate"},
		},
		{
			name: "server does not ask for a client certificate",
			spec: func(n string) connector.Spec {
				return connector.Spec{Name: n, URL: serve(good, func(c *tls.Config) { c.ClientAuth, c.ClientCAs = tls.NoClientCert, nil }), Identity: "svc", CAs: []string{"demo"}}
			},
			code:  "client_cert_not_requested",
			words: []string{"did not ask for a client certificate", "does not enforce mutual TLS"},
		},
		{
			name: "pin mismatch",
			spec: func(n string) connector.Spec {
				return connector.Spec{Name: n, URL: serve(good, nil), Identity: "svc", CAs: []string{"demo"}, Pins: []string{"sha256/" + b64(32)}}
			},
			code:  "pin_mismatch",
			words: []string{"matches its pins", pki.SPKIPinSHA256(good.Cert)},
		},
		{
			name: "server offers only TLS 1.1",
			spec: func(n string) connector.Spec {
				return connector.Spec{Name: n, URL: serve(good, func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS11, tls.VersionTLS11 }),
					Identity: "svc", CAs: []string{"demo"}}
			},
			code:  "tls_version_too_old",
			words: []string{"below TLS 1.2"},
		},
		{
			name: "TLS 1.3 minimum against a TLS 1.2 server",
			spec: func(n string) connector.Spec {
				return connector.Spec{Name: n, URL: serve(good, tls12), Identity: "svc", CAs: []string{"demo"}, MinTLS: "1.3"}
			},
			code:  "tls_version_too_old",
			words: []string{"below TLS 1.3"},
		},
		{
			name: "connection refused",
			spec: func(n string) connector.Spec {
				return connector.Spec{Name: n, URL: "https://" + closedPort(t), Identity: "svc", CAs: []string{"demo"}}
			},
			code:      "connection_refused",
			words:     []string{"refused the connection"},
			retryable: true,
		},
		{
			name: "server never answers",
			spec: func(n string) connector.Spec {
				return connector.Spec{Name: n, URL: "https://" + silentServer(t), Identity: "svc", CAs: []string{"demo"}, Timeout: "300ms"}
			},
			code:      "timeout",
			words:     []string{"no answer", "within 300ms"},
			retryable: true,
		},
		{
			name: "unresolvable host",
			spec: func(n string) connector.Spec {
				return connector.Spec{Name: n, URL: "https://trustflow-test.invalid:8443", Identity: "svc", CAs: []string{"demo"}, Timeout: "5s"}
			},
			code:  "dns",
			words: []string{`"trustflow-test.invalid"`},
		},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name := "diag-" + strconv.Itoa(i)
			e.create(t, tc.spec(name))

			start := time.Now()
			_, err := e.conns.Do(ctx, name, connector.Request{Path: "/"})
			ce := callError(t, err)
			require.Equal(t, tc.code, ce.Code, "%s", ce.Message)
			for _, w := range tc.words {
				require.Contains(t, ce.Message, w)
			}
			require.NotEmpty(t, ce.Hint)
			require.Contains(t, ce.Hint, tc.hint)
			require.Equal(t, tc.retryable, ce.Retryable)
			require.Less(t, time.Since(start), 5*time.Second)

			rec := e.lastAudit(t, "connector.call", "connector/"+name)
			require.Equal(t, "failure", rec.Outcome)
			require.Contains(t, string(rec.Details), `"code":"`+tc.code+`"`)

			res, err := e.conns.Test(ctx, admin, name, "")
			require.NoError(t, err)
			require.False(t, res.OK)
			require.NotNil(t, res.Error)
			require.Equal(t, tc.code, res.Error.Code, "%s", res.Error.Message)
			c, err := e.conns.Get(ctx, name)
			require.NoError(t, err)
			require.NotNil(t, c.LastTestOK)
			require.False(t, *c.LastTestOK)
			require.NotNil(t, c.LastTestAt)
			require.True(t, strings.HasPrefix(c.LastError, tc.code+": "), c.LastError)
		})
	}
}

// TestPolicyExceptionsAndPins checks that what a diagnosis recommends
// works: the audited exception for servers that do not ask for a client
// certificate, and the right pins.
func TestPolicyExceptionsAndPins(t *testing.T) {
	ctx := context.Background()
	e := sqliteEnv(t)
	e.addCA(t, "demo", e.ca)
	e.addIdentity(t, "svc", e.ca)
	leaf := e.ca.IssueServer(t, "127.0.0.1")

	t.Run("allow_no_client_auth_request", func(t *testing.T) {
		cfg := serverConfig(leaf, nil)
		srv := startServer(t, okHandler, cfg, true)
		sp := mtlsSpec("no-mtls", srv)
		e.create(t, sp)
		_, err := e.conns.Do(ctx, "no-mtls", connector.Request{Path: "/"})
		require.Equal(t, "client_cert_not_requested", callError(t, err).Code)

		sp.AllowNoClientAuthRequest = true
		_, err = e.conns.Update(ctx, admin, sp)
		require.NoError(t, err)
		d := decodeDetails(t, e.lastAudit(t, "connector.update", "connector/no-mtls"))
		require.Equal(t, []string{"allow_no_client_auth_request"}, d.PolicyExceptions)
		resp, err := e.conns.Do(ctx, "no-mtls", connector.Request{Path: "/"})
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.Status)
		require.False(t, resp.Evidence.ServerRequestedClientCert)
		require.Nil(t, resp.Evidence.ClientCertificate)
		res, err := e.conns.Test(ctx, admin, "no-mtls", "")
		require.NoError(t, err)
		require.True(t, res.OK, "%+v", res.Error)
		c, err := e.conns.Get(ctx, "no-mtls")
		require.NoError(t, err)
		require.True(t, *c.LastTestOK)
		require.Empty(t, c.LastError)
	})

	t.Run("pins", func(t *testing.T) {
		srv := startServer(t, okHandler, serverConfig(leaf, e.ca.Pool()), true)
		for name, pin := range map[string]string{"pin-leaf": pki.SPKIPinSHA256(leaf.Cert), "pin-ca": pki.SPKIPinSHA256(e.ca.Cert)} {
			sp := mtlsSpec(name, srv)
			sp.Pins = []string{"sha256/" + b64(32), pin}
			e.create(t, sp)
			resp, err := e.conns.Do(ctx, name, connector.Request{Path: "/"})
			require.NoError(t, err, name)
			require.Equal(t, http.StatusOK, resp.Status)
			res, err := e.conns.Test(ctx, admin, name, "/")
			require.NoError(t, err)
			require.True(t, res.OK, "%+v", res.Error)
			require.Equal(t, http.StatusOK, res.Status)
		}
	})
}
