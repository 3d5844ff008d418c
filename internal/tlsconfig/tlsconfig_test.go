package tlsconfig_test

import (
	"crypto/tls"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/policy"
	"github.com/trustflow/trustflow/internal/tlsconfig"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

// handshake runs one TLS handshake over a pipe and returns both sides'
// errors and the client's view.
func handshake(t *testing.T, client, server *tls.Config) (cliErr, srvErr error, cs tls.ConnectionState) {
	t.Helper()
	a, b := net.Pipe()
	done := make(chan error, 1)
	go func() {
		s := tls.Server(b, server)
		err := s.Handshake()
		_ = s.Close()
		done <- err
	}()
	c := tls.Client(a, client)
	cliErr = c.Handshake()
	cs = c.ConnectionState()
	_ = c.Close()
	return cliErr, <-done, cs
}

func TestClientAndServerKeepTheFloor(t *testing.T) {
	t.Parallel()
	ca := truststoretest.NewCA(t)
	leaf := ca.IssueServer(t, "svc.test")
	srv := tlsconfig.Server(tlsconfig.ServerOptions{Certificates: []tls.Certificate{leaf.TLSCertificate()}})
	require.Equal(t, uint16(tls.VersionTLS12), srv.MinVersion)
	for _, id := range srv.CipherSuites {
		s := suite(id)
		require.NotNil(t, s, "suite %x", id)
		require.NotContains(t, s.Name, "CBC")
		require.Contains(t, []string{"GCM", "POLY1305"}, aead(s.Name), s.Name)
		require.Contains(t, s.Name, "ECDHE")
	}

	// A client offering only a CBC-SHA1 suite (TLS 1.2) gets no handshake.
	cbc := &tls.Config{ServerName: "svc.test", RootCAs: ca.Pool(), MaxVersion: tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}}
	cliErr, srvErr, _ := handshake(t, cbc, srv)
	require.Error(t, cliErr)
	require.ErrorContains(t, srvErr, "no cipher suite supported by both client and server")

	// Our client completes with our server, on TLS 1.3 by default.
	cli := tlsconfig.Client(tlsconfig.ClientOptions{ServerName: "svc.test", Roots: ca.Pool()})
	cliErr, srvErr, cs := handshake(t, cli, srv)
	require.NoError(t, cliErr)
	require.NoError(t, srvErr)
	require.Equal(t, uint16(tls.VersionTLS13), cs.Version)

	// The policy's floor: a 1.2-only server is refused under min_version 1.3.
	only12 := srv.Clone()
	only12.MaxVersion = tls.VersionTLS12
	p, err := policy.Parse("p.yaml", []byte("apiVersion: trustflow/v1\nkind: Policy\ntls: {min_version: '1.3', cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384], curves: [P-384]}\n"))
	require.NoError(t, err)
	strict := tlsconfig.Client(tlsconfig.ClientOptions{ServerName: "svc.test", Roots: ca.Pool(), Policy: p})
	require.Equal(t, uint16(tls.VersionTLS13), strict.MinVersion)
	require.Equal(t, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}, strict.CipherSuites)
	require.Equal(t, []tls.CurveID{tls.CurveP384}, strict.CurvePreferences)
	cliErr, _, _ = handshake(t, strict, only12)
	require.ErrorContains(t, cliErr, "protocol version")

	// FIPS: AES-GCM suites and NIST curves only, even if the policy names
	// ChaCha20 or X25519.
	p, err = policy.Parse("p.yaml", []byte("apiVersion: trustflow/v1\nkind: Policy\ntls: {cipher_suites: [TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256], curves: [X25519, P-256]}\n"))
	require.NoError(t, err)
	fips := tlsconfig.Client(tlsconfig.ClientOptions{ServerName: "svc.test", Roots: ca.Pool(), FIPS: true, Policy: p})
	require.Equal(t, []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}, fips.CipherSuites)
	require.Equal(t, []tls.CurveID{tls.CurveP256}, fips.CurvePreferences)
	require.Equal(t, uint16(tls.VersionTLS13), tlsconfig.Client(tlsconfig.ClientOptions{MinTLS: "1.3"}).MinVersion)
}

// aead names the AEAD of a suite name, "" for none.
func aead(name string) string {
	for _, a := range []string{"GCM", "POLY1305"} {
		if strings.Contains(name, a) {
			return a
		}
	}
	return ""
}

func TestObserveOffersOldVersionsAndTrustsNothing(t *testing.T) {
	t.Parallel()
	cfg := tlsconfig.Observe("svc.test", tls.VersionTLS10, tls.VersionTLS10)
	require.True(t, cfg.InsecureSkipVerify)
	require.Nil(t, cfg.Certificates)
	require.Nil(t, cfg.GetClientCertificate)
	require.NotEmpty(t, cfg.CipherSuites)
	for _, id := range cfg.CipherSuites {
		require.True(t, slices.Contains(suite(id).SupportedVersions, tls.VersionTLS10))
	}
}

func suite(id uint16) *tls.CipherSuite {
	for _, s := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		if s.ID == id {
			return s
		}
	}
	return nil
}
