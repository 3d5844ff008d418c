// Package tlsconfig builds every tls.Config trustflow uses, so that one
// place decides versions, cipher suites, curves, FIPS and the egress and TLS
// policy's floor: connectors and their OAuth2 token requests (Client),
// trustflow's own listener and the quickstart's demo endpoint (Server), and
// the probe's deliberately lax observation handshakes (Observe).
//
// The callers add only what is theirs: the anchors, the per-connection
// certificate and verification callbacks.
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"slices"

	"github.com/trustflow/trustflow/internal/policy"
)

// fipsSuites are the TLS 1.2 suites allowed in FIPS mode (TLS 1.3 suites
// are chosen by crypto/tls, which restricts them itself in FIPS mode).
var fipsSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
}

// fipsCurves are the key-exchange groups allowed in FIPS mode.
var fipsCurves = []tls.CurveID{tls.CurveP256, tls.CurveP384}

// Suites returns the TLS 1.2 suites trustflow offers or accepts: AEAD with
// forward secrecy only (no CBC, no SHA-1, no RSA key exchange), and in FIPS
// mode AES-GCM only.
func Suites(fips bool) []uint16 {
	if fips {
		return slices.Clone(fipsSuites)
	}
	return policy.AllowedSuites()
}

// ClientOptions describe one outbound mutual-TLS client.
type ClientOptions struct {
	// ServerName is verified against the server's certificate and sent as
	// SNI.
	ServerName string
	// MinTLS is the connector's own minimum ("1.2" or "1.3"); the policy's
	// floor raises it.
	MinTLS string
	// Roots are the anchors of the server's chain; the connector verifies
	// the chain itself (pki.Verify in VerifyConnection) as well.
	Roots *x509.CertPool
	// NextProtos is the ALPN list, e.g. h2 and http/1.1.
	NextProtos []string
	// Sessions caches TLS sessions for resumption; nil for none.
	Sessions tls.ClientSessionCache
	// FIPS limits suites and curves to FIPS-approved ones.
	FIPS bool
	// Policy is the egress and TLS policy in force; nil for none.
	Policy *policy.Policy
}

// Client returns the base configuration of an outbound client: at least
// TLS 1.2 (1.3 when asked for or required by the policy), AEAD suites, FIPS
// suites and curves when asked for, and the policy's suites and curves when
// it names them. Per-connection callbacks (GetClientCertificate,
// VerifyConnection) are the caller's.
func Client(o ClientOptions) *tls.Config {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         o.ServerName,
		RootCAs:            o.Roots,
		NextProtos:         slices.Clone(o.NextProtos),
		ClientSessionCache: o.Sessions,
		CipherSuites:       Suites(o.FIPS),
	}
	if o.MinTLS == "1.3" {
		cfg.MinVersion = tls.VersionTLS13
	}
	if o.FIPS {
		cfg.CurvePreferences = slices.Clone(fipsCurves)
	}
	ApplyPolicy(cfg, o.Policy, o.FIPS)
	return cfg
}

// ApplyPolicy raises cfg to the policy's TLS floor: its minimum version, and
// its suites and curves when it names them (never beyond what FIPS mode
// allows). A nil policy changes nothing.
func ApplyPolicy(cfg *tls.Config, p *policy.Policy, fips bool) {
	if p == nil {
		return
	}
	if v := p.MinVersion(); v > cfg.MinVersion {
		cfg.MinVersion = v
	}
	if s := p.CipherSuites(); len(s) > 0 {
		allowed := Suites(fips)
		cfg.CipherSuites = slices.DeleteFunc(s, func(id uint16) bool { return !slices.Contains(allowed, id) })
	}
	if c := p.Curves(); len(c) > 0 {
		if fips {
			c = slices.DeleteFunc(c, func(id tls.CurveID) bool { return !slices.Contains(fipsCurves, id) })
		}
		if len(c) > 0 {
			cfg.CurvePreferences = c
		}
	}
}

// ServerOptions describe a TLS listener.
type ServerOptions struct {
	Certificates []tls.Certificate
	// ClientCAs, with RequireClientCert, makes the listener require and
	// verify a client certificate (the quickstart's demo endpoint).
	ClientCAs         *x509.CertPool
	RequireClientCert bool
	FIPS              bool
}

// Server returns a listener's configuration: TLS 1.2 and later, AEAD suites
// with forward secrecy (FIPS: AES-GCM and P-256/P-384 only).
func Server(o ServerOptions) *tls.Config {
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: o.Certificates,
		CipherSuites: Suites(o.FIPS),
	}
	if o.FIPS {
		cfg.CurvePreferences = slices.Clone(fipsCurves)
	}
	if o.RequireClientCert {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = o.ClientCAs
	}
	return cfg
}

// Observe returns the configuration of a probe check that watches how a
// server treats a client it should refuse (anonymous, untrusted, or
// offering TLS 1.0 or 1.1). It verifies nothing and must never carry a
// secret: no identity, no credentials, at most a bare GET. The probe's
// server_chain_valid check verifies the chain with pki.Verify. A maxVersion
// of 0 means the newest; below TLS 1.2 every suite the version can use is
// offered, since the check asks whether the server accepts the version at
// all.
func Observe(serverName string, minVersion, maxVersion uint16) *tls.Config {
	cfg := &tls.Config{
		ServerName:         serverName,
		MinVersion:         minVersion,
		MaxVersion:         maxVersion,
		InsecureSkipVerify: true, //nolint:gosec // an observation handshake: nothing secret is sent, nothing is trusted
		// A server that asks for client certificates per location does so
		// by renegotiating (TLS 1.2): let it, so that the probe sees it.
		Renegotiation: tls.RenegotiateOnceAsClient,
	}
	if maxVersion != 0 && maxVersion < tls.VersionTLS12 {
		for _, s := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
			if slices.Contains(s.SupportedVersions, maxVersion) {
				cfg.CipherSuites = append(cfg.CipherSuites, s.ID)
			}
		}
	}
	return cfg
}
