package connector_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/connector"
	"github.com/trustflow/trustflow/internal/pki"
	"github.com/trustflow/trustflow/internal/truststore"
)

func TestHTTP2AndKeepAlive(t *testing.T) {
	ctx := context.Background()
	e := sqliteEnv(t)
	e.addCA(t, "demo", e.ca)
	e.addIdentity(t, "svc", e.ca)
	leaf := e.ca.IssueServer(t, "127.0.0.1")

	t.Run("h2", func(t *testing.T) {
		srv := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ProtoMajor != 2 {
				http.Error(w, "want HTTP/2", http.StatusHTTPVersionNotSupported)
				return
			}
			okHandler(w, r)
		}), serverConfig(leaf, e.ca.Pool()), true)
		e.create(t, mtlsSpec("h2", srv))
		for range 10 {
			resp, err := e.conns.Do(ctx, "h2", connector.Request{Path: "/"})
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, resp.Status)
			require.Equal(t, "h2", resp.Evidence.ALPN)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for range 16 {
			wg.Go(func() {
				_, err := e.conns.Do(ctx, "h2", connector.Request{Path: "/"})
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		require.Equal(t, int64(1), srv.newConns.Load(), "every request shares one HTTP/2 connection")
	})

	t.Run("http/1.1 keep-alive", func(t *testing.T) {
		srv := startServer(t, okHandler, serverConfig(leaf, e.ca.Pool()), false)
		e.create(t, mtlsSpec("h1", srv))
		for range 10 {
			resp, err := e.conns.Do(ctx, "h1", connector.Request{Path: "/"})
			require.NoError(t, err)
			require.Equal(t, "http/1.1", resp.Evidence.ALPN)
			require.False(t, resp.Evidence.Resumed)
		}
		require.Equal(t, int64(1), srv.newConns.Load(), "sequential requests reuse one kept-alive connection")
	})
}

// evidenceJSON is Evidence as its JSON field names promise it.
type evidenceJSON struct {
	TLSVersion                string   `json:"tls_version"`
	CipherSuite               string   `json:"cipher_suite"`
	ServerName                string   `json:"server_name"`
	ServerRequestedClientCert bool     `json:"server_requested_client_cert"`
	AcceptableCAs             []string `json:"acceptable_cas"`
	ClientCertificate         *struct {
		Identity          string `json:"identity"`
		Version           int    `json:"version"`
		Serial            string `json:"serial"`
		FingerprintSHA256 string `json:"fingerprint_sha256"`
	} `json:"client_certificate"`
	ServerChain []struct {
		Subject           string    `json:"subject"`
		Issuer            string    `json:"issuer"`
		FingerprintSHA256 string    `json:"fingerprint_sha256"`
		NotAfter          time.Time `json:"not_after"`
	} `json:"server_chain"`
	Resumed     bool      `json:"resumed"`
	ALPN        string    `json:"alpn"`
	HandshakeAt time.Time `json:"handshake_at"`
}

func TestEvidence(t *testing.T) {
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	e := sqliteEnv(t, withClock(clock.NewFake(now)))
	e.addCA(t, "demo", e.ca)
	e.addIdentity(t, "svc", e.ca)
	// Rotate once so the active version is 2, not the default 1.
	next := e.ca.IssueClient(t, "trustflow svc v2")
	_, err := e.trust.Rotate(ctx, admin, truststore.RotateRequest{Name: "svc", Material: truststore.Material{Cert: next.CertPEM(), Key: next.KeyPEM()}})
	require.NoError(t, err)
	active := e.activeVersion(t, "svc")
	require.Equal(t, 2, active.Version)
	// The URL names the server by IP, the certificate by DNS name: the
	// connector's server_name bridges them (and is sent as SNI).
	leaf := e.ca.IssueServer(t, "api.hr.example")

	for _, tc := range []struct {
		name    string
		version uint16
		alpn    string
		h2      bool
	}{
		{"TLS 1.3 h2", tls.VersionTLS13, "h2", true},
		{"TLS 1.2 http/1.1", tls.VersionTLS12, "http/1.1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := serverConfig(leaf, e.ca.Pool())
			cfg.MinVersion, cfg.MaxVersion = tc.version, tc.version
			srv := startServer(t, okHandler, cfg, tc.h2)
			name := "ev" + tc.alpn[:2]
			sp := mtlsSpec(name, srv)
			sp.ServerName = "api.hr.example"
			e.create(t, sp)
			resp, err := e.conns.Do(ctx, name, connector.Request{Path: "/"})
			require.NoError(t, err)
			require.NotNil(t, resp.Evidence)
			raw, err := json.Marshal(resp.Evidence)
			require.NoError(t, err)
			var ev evidenceJSON
			require.NoError(t, json.Unmarshal(raw, &ev))

			require.Equal(t, tls.VersionName(tc.version), ev.TLSVersion)
			require.NotEmpty(t, ev.CipherSuite)
			require.NotContains(t, ev.CipherSuite, "0x", "a named suite, not a number")
			require.Equal(t, "api.hr.example", ev.ServerName)
			require.True(t, ev.ServerRequestedClientCert)
			require.Contains(t, ev.AcceptableCAs, e.ca.Cert.Subject.String())
			require.NotNil(t, ev.ClientCertificate)
			require.Equal(t, "svc", ev.ClientCertificate.Identity)
			require.Equal(t, active.Version, ev.ClientCertificate.Version)
			require.Equal(t, active.Serial, ev.ClientCertificate.Serial)
			require.Equal(t, active.FingerprintSHA256, ev.ClientCertificate.FingerprintSHA256)
			require.Equal(t, next.Cert.SerialNumber.Text(16), ev.ClientCertificate.Serial)
			require.Len(t, ev.ServerChain, 1)
			require.Equal(t, leaf.Cert.Subject.String(), ev.ServerChain[0].Subject)
			require.Equal(t, e.ca.Cert.Subject.String(), ev.ServerChain[0].Issuer)
			require.Equal(t, pki.FingerprintSHA256(leaf.Cert), ev.ServerChain[0].FingerprintSHA256)
			require.True(t, leaf.Cert.NotAfter.Equal(ev.ServerChain[0].NotAfter))
			require.False(t, ev.Resumed)
			require.Equal(t, tc.alpn, ev.ALPN)
			require.True(t, now.Equal(ev.HandshakeAt))
		})
	}
}

func TestResumedSessionEvidence(t *testing.T) {
	ctx := context.Background()
	e := sqliteEnv(t)
	e.addCA(t, "demo", e.ca)
	e.addIdentity(t, "svc", e.ca)
	// The server closes every connection after its answer, so each call
	// needs a new handshake, which resumes the previous session.
	srv := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		okHandler(w, r)
	}), serverConfig(e.ca.IssueServer(t, "127.0.0.1"), e.ca.Pool()), false)
	e.create(t, mtlsSpec("hr", srv))

	first, err := e.conns.Do(ctx, "hr", connector.Request{Path: "/"})
	require.NoError(t, err)
	require.False(t, first.Evidence.Resumed)
	second, err := e.conns.Do(ctx, "hr", connector.Request{Path: "/"})
	require.NoError(t, err)
	require.Equal(t, int64(2), srv.newConns.Load())
	ev := second.Evidence
	require.True(t, ev.Resumed, "the second connection resumes the first one's session")
	require.Equal(t, "TLS 1.3", ev.TLSVersion)
	require.NotEmpty(t, ev.ServerChain)
	// A resumed session was authenticated by the full handshake that
	// established it: the evidence carries that handshake's client side.
	require.True(t, ev.ServerRequestedClientCert)
	require.Equal(t, first.Evidence.AcceptableCAs, ev.AcceptableCAs)
	require.Equal(t, first.Evidence.ClientCertificate, ev.ClientCertificate)

	// connector.Test proves a full handshake, never a resumed one.
	res, err := e.conns.Test(ctx, admin, "hr", "")
	require.NoError(t, err)
	require.True(t, res.OK, "%+v", res.Error)
	require.False(t, res.Evidence.Resumed)
	require.Equal(t, "svc", res.Evidence.ClientCertificate.Identity)
}
