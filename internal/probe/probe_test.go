package probe_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trustflow/trustflow/internal/errs"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/pki"
	"github.com/trustflow/trustflow/internal/probe"
	"github.com/trustflow/trustflow/internal/seal"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
	"github.com/trustflow/trustflow/internal/truststore"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

var admin = audit.Actor{ID: "tok_admin", Name: "admin", Role: "admin"}

// env is a prober over a real trust store holding CA "demo" (which issues
// the test servers' certificates) and identity "svc" (a client certificate
// from the same CA), with a fake clock at the test PKI's now.
type env struct {
	st     *store.Store
	audit  *audit.Log
	trust  *truststore.Service
	prober *probe.Prober
	now    time.Time
	ca     *truststoretest.CA
	client *truststoretest.Leaf
	// serial is identity svc's serial, as the trust store shows it.
	serial string
}

func newEnv(t *testing.T, st *store.Store) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{st: st, now: time.Now().Truncate(time.Second)}
	kek, err := seal.NewKEK()
	require.NoError(t, err)
	e.audit = audit.New(st, nil)
	e.trust, err = truststore.New(truststore.Config{Store: st, Audit: e.audit, Keyring: seal.NewKeyring(kek)})
	require.NoError(t, err)
	e.prober, err = probe.New(probe.Config{Trust: e.trust, Audit: e.audit, Clock: clock.NewFake(e.now)})
	require.NoError(t, err)
	e.ca = truststoretest.NewCA(t, truststoretest.Now(e.now))
	_, err = e.trust.AddCA(ctx, admin, truststore.CARequest{Name: "demo", Data: e.ca.CertPEM()})
	require.NoError(t, err)
	e.client = e.ca.IssueClient(t, "trustflow-client")
	_, err = e.trust.Import(ctx, admin, truststore.ImportRequest{Name: "svc", Material: truststore.Material{Cert: e.client.CertPEM(), Key: e.client.KeyPEM()}})
	require.NoError(t, err)
	e.serial = e.client.Cert.SerialNumber.Text(16)
	return e
}

func openEnv(t *testing.T) *env {
	t.Helper()
	return newEnv(t, storetest.Open(t, store.SQLite))
}

// seen is what a test server observed: its connections and the requests
// that reached its handler.
type seen struct {
	mu       sync.Mutex
	conns    int
	resumed  int
	requests []string
}

func (s *seen) count() (conns, resumed int, requests []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns, s.resumed, append([]string(nil), s.requests...)
}

// serve starts an HTTPS server on loopback with leaf's certificate, the
// client-auth policy set by configure, answering 200 "ok".
func serve(t *testing.T, leaf *truststoretest.Leaf, configure func(*tls.Config)) (*httptest.Server, *seen) {
	t.Helper()
	s := &seen{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.requests = append(s.requests, fmt.Sprintf("%s %s %s host=%s connection=%s authorization=%q body=%q",
			r.Method, r.RequestURI, r.Proto, r.Host, r.Header.Get("Connection"), r.Header.Get("Authorization"), body))
		s.mu.Unlock()
		w.Write([]byte("ok"))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLSCertificate()},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if cs.DidResume {
				s.mu.Lock()
				s.resumed++
				s.mu.Unlock()
			}
			return nil
		}}
	configure(srv.TLS)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			s.mu.Lock()
			s.conns++
			s.mu.Unlock()
		}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, s
}

// requireClientCerts makes a server require client certificates from ca.
func requireClientCerts(ca *truststoretest.CA) func(*tls.Config) {
	return func(c *tls.Config) {
		c.ClientAuth = tls.RequireAndVerifyClientCert
		c.ClientCAs = ca.Pool()
	}
}

// outcomes lists every check as "name status[/layer]", the way the tests
// state the expected result of all checks at once.
func outcomes(rep probe.Report) []string {
	out := make([]string, len(rep.Checks))
	for i, c := range rep.Checks {
		out[i] = c.Name + " " + c.Status
		if c.Layer != "" {
			out[i] += "/" + c.Layer
		}
	}
	return out
}

func check(t *testing.T, rep probe.Report, name string) probe.Check {
	t.Helper()
	c, ok := rep.Check(name)
	require.True(t, ok, "report has no check %s", name)
	return c
}

func (e *env) probe(t *testing.T, req probe.Request) probe.Report {
	t.Helper()
	rep, err := e.prober.Probe(context.Background(), admin, req)
	require.NoError(t, err)
	return rep
}

// expiry is how the report says when a certificate expires, seen from the
// env's now.
func (e *env) expiry(c *x509.Certificate) string {
	return fmt.Sprintf("at %s, in %d days", c.NotAfter.UTC().Format(time.RFC3339), int(c.NotAfter.Sub(e.now)/(24*time.Hour)))
}

func TestEnforcedServer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		maxVersion uint16
		version    string
		// anonymous and untrusted are the details of the two refusals: TLS
		// 1.3 servers refuse on the first read, TLS 1.2 servers in the
		// handshake.
		anonymous, untrusted string
	}{
		{"tls13", tls.VersionTLS13, "TLS 1.3",
			"the server refused a client without a client certificate: alert certificate_required on the first read after the handshake",
			"the server refused a client with a self-signed certificate no trusted CA issued (CN=trustflow-probe-untrusted): alert unknown_ca on the first read after the handshake"},
		{"tls12", tls.VersionTLS12, "TLS 1.2",
			"the server refused a client without a client certificate: alert handshake_failure on the handshake",
			"the server refused a client with a self-signed certificate no trusted CA issued (CN=trustflow-probe-untrusted): alert unknown_ca on the handshake"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := openEnv(t)
			leaf := e.ca.IssueServer(t, "127.0.0.1")
			srv, seen := serve(t, leaf, func(c *tls.Config) {
				requireClientCerts(e.ca)(c)
				c.MaxVersion = tc.maxVersion
			})
			head, err := e.st.AuditHead(context.Background())
			require.NoError(t, err)

			rep := e.probe(t, probe.Request{URL: srv.URL, CAs: []string{"demo"}, Identity: "svc"})
			require.Equal(t, probe.VerdictEnforced, rep.Verdict)
			require.Equal(t, srv.URL, rep.URL)
			require.Equal(t, e.now.UTC(), rep.CheckedAt)
			require.Equal(t, []probe.Check{
				{Name: probe.CheckAnonymousRefused, Status: probe.StatusPass, Layer: probe.LayerTLS, Detail: tc.anonymous},
				{Name: probe.CheckUntrustedCertRefused, Status: probe.StatusPass, Layer: probe.LayerTLS, Detail: tc.untrusted},
				{Name: probe.CheckIdentityAccepted, Status: probe.StatusPass,
					Detail: "the server accepted identity svc (version 1, serial " + e.serial + ") over " + tc.version + ": GET / answered 200 OK"},
				{Name: probe.CheckTLS10Refused, Status: probe.StatusPass, Layer: probe.LayerTLS, Detail: "the server refused a TLS 1.0 handshake (alert protocol_version)"},
				{Name: probe.CheckTLS11Refused, Status: probe.StatusPass, Layer: probe.LayerTLS, Detail: "the server refused a TLS 1.1 handshake (alert protocol_version)"},
				{Name: probe.CheckServerChainValid, Status: probe.StatusPass,
					Detail: "the chain verifies to trusted CA 'CN=trustflow test root CA,O=trustflow tests'; certificate 'CN=127.0.0.1' expires " + e.expiry(leaf.Cert)},
				{Name: probe.CheckHostnameValid, Status: probe.StatusPass, Detail: `certificate 'CN=127.0.0.1' is valid for "127.0.0.1"`},
			}, rep.Checks)

			// Five connections (the chain checks reuse what the handshakes
			// saw), none resumed; only the identity's request was served.
			conns, resumed, requests := seen.count()
			require.Equal(t, 5, conns)
			require.Zero(t, resumed)
			host := strings.TrimPrefix(srv.URL, "https://")
			require.Equal(t, []string{`GET / HTTP/1.1 host=` + host + ` connection=close authorization="" body=""`}, requests)

			// The probe is audited: verdict and statuses, no detail.
			recs, err := e.audit.List(context.Background(), audit.Filter{AfterSeq: head.Seq, Ascending: true, Limit: 10})
			require.NoError(t, err)
			require.Len(t, recs, 1)
			r := recs[0]
			require.Equal(t, "probe.run", r.Action)
			require.Equal(t, host, r.Target)
			require.Equal(t, admin, r.Actor)
			require.Equal(t, audit.OutcomeSuccess, r.Outcome)
			require.JSONEq(t, `{"url":"`+srv.URL+`","verdict":"enforced","cas":["demo"],"identity":"svc","identity_version":1,"checks":{
				"anonymous_refused":"pass","untrusted_cert_refused":"pass","identity_accepted":"pass","tls10_refused":"pass",
				"tls11_refused":"pass","server_chain_valid":"pass","hostname_valid":"pass"}}`, string(r.Details))

			e.requireNoKeyMaterial(t, rep)
		})
	}
}

// requireNoKeyMaterial checks that neither the report nor the audit log
// holds the identity's private key, or any private key.
func (e *env) requireNoKeyMaterial(t *testing.T, rep probe.Report) {
	t.Helper()
	raw, err := json.Marshal(rep)
	require.NoError(t, err)
	var exported strings.Builder
	_, err = e.audit.Export(context.Background(), &exported, audit.Filter{})
	require.NoError(t, err)
	for _, text := range []string{string(raw), exported.String()} {
		require.NotContains(t, text, "PRIVATE KEY")
		for _, line := range strings.Split(string(e.client.KeyPEM()), "\n") {
			if len(line) >= 16 && !strings.HasPrefix(line, "-----") {
				require.NotContains(t, text, line)
			}
		}
	}
}

func TestServersThatDoNotEnforce(t *testing.T) {
	t.Parallel()
	const (
		notAsked      = "the server did not ask for a client certificate: a client without a client certificate completes the handshake (GET / answered 200 OK)"
		notAskedBad   = "the server did not ask for a client certificate: a client with a self-signed certificate no trusted CA issued (CN=trustflow-probe-untrusted) completes the handshake (GET / answered 200 OK)"
		acceptedAnon  = "the server asked for a client certificate but accepted a client without a client certificate: GET / answered 200 OK"
		acceptedBad   = "the server asked for a client certificate but accepted a client with a self-signed certificate no trusted CA issued (CN=trustflow-probe-untrusted): GET / answered 200 OK"
		refusedBad    = "the server refused a client with a self-signed certificate no trusted CA issued (CN=trustflow-probe-untrusted): alert unknown_ca on the first read after the handshake"
		refusedAnon   = "the server refused a client without a client certificate: alert certificate_required on the first read after the handshake"
		anonHint      = "make the client certificate required, not optional (nginx: ssl_verify_client on; Go: tls.RequireAndVerifyClientCert)"
		untrustedHint = "have the server verify client certificates against the CAs it trusts and refuse the rest (nginx: ssl_client_certificate CA-FILE and ssl_verify_client on; Go: tls.RequireAndVerifyClientCert with ClientCAs)"
	)
	for _, tc := range []struct {
		auth      tls.ClientAuthType
		anonymous probe.Check
		untrusted probe.Check
		identity  string
		requests  int
	}{
		{tls.NoClientCert,
			probe.Check{Status: probe.StatusFail, Detail: notAsked, Hint: anonHint},
			probe.Check{Status: probe.StatusFail, Detail: notAskedBad, Hint: untrustedHint},
			"fail", 3},
		{tls.RequestClientCert,
			probe.Check{Status: probe.StatusFail, Detail: acceptedAnon, Hint: anonHint},
			probe.Check{Status: probe.StatusFail, Detail: acceptedBad, Hint: untrustedHint},
			"pass", 3},
		{tls.VerifyClientCertIfGiven,
			probe.Check{Status: probe.StatusFail, Detail: acceptedAnon, Hint: anonHint},
			probe.Check{Status: probe.StatusPass, Layer: probe.LayerTLS, Detail: refusedBad},
			"pass", 2},
		{tls.RequireAnyClientCert,
			probe.Check{Status: probe.StatusPass, Layer: probe.LayerTLS, Detail: refusedAnon},
			probe.Check{Status: probe.StatusFail, Detail: acceptedBad, Hint: untrustedHint},
			"pass", 2},
	} {
		t.Run(tc.auth.String(), func(t *testing.T) {
			t.Parallel()
			e := openEnv(t)
			srv, seen := serve(t, e.ca.IssueServer(t, "127.0.0.1"), func(c *tls.Config) {
				c.ClientAuth = tc.auth
				c.ClientCAs = e.ca.Pool()
			})
			rep := e.probe(t, probe.Request{URL: srv.URL, CAs: []string{"demo"}, Identity: "svc"})
			require.Equal(t, probe.VerdictNotEnforced, rep.Verdict)
			tc.anonymous.Name, tc.untrusted.Name = probe.CheckAnonymousRefused, probe.CheckUntrustedCertRefused
			require.Equal(t, tc.anonymous, check(t, rep, probe.CheckAnonymousRefused))
			require.Equal(t, tc.untrusted, check(t, rep, probe.CheckUntrustedCertRefused))
			require.Equal(t, []string{"anonymous_refused " + tc.anonymous.Status + layerSuffix(tc.anonymous), "untrusted_cert_refused " + tc.untrusted.Status + layerSuffix(tc.untrusted),
				"identity_accepted " + tc.identity, "tls10_refused pass/tls", "tls11_refused pass/tls", "server_chain_valid pass", "hostname_valid pass"}, outcomes(rep))
			if tc.auth == tls.NoClientCert {
				require.Equal(t, probe.Check{Name: probe.CheckIdentityAccepted, Status: probe.StatusFail,
					Detail: "the server did not ask for a client certificate, so identity svc (version 1, serial " + e.serial + ") was not presented (GET / answered 200 OK)",
					Hint:   "configure the server to require client certificates (nginx: ssl_verify_client on)"}, check(t, rep, probe.CheckIdentityAccepted))
			}
			_, _, requests := seen.count()
			require.Len(t, requests, tc.requests)

			// The audit record says the probe found mTLS not enforced.
			recs, err := e.audit.List(context.Background(), audit.Filter{Action: "probe.run", Limit: 10})
			require.NoError(t, err)
			require.Len(t, recs, 1)
			require.Equal(t, audit.OutcomeFailure, recs[0].Outcome)
		})
	}
}

func layerSuffix(c probe.Check) string {
	if c.Layer == "" {
		return ""
	}
	return "/" + c.Layer
}

// TestHTTPLayerRefusal: a server that completes the handshake without a
// certificate and refuses the request counts as refusing, at the HTTP
// layer, only when it asked for a client certificate.
func TestHTTPLayerRefusal(t *testing.T) {
	t.Parallel()
	e := openEnv(t)
	refuse := func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 || len(r.TLS.VerifiedChains) == 0 {
			http.Error(w, "No required SSL certificate was sent", http.StatusBadRequest)
			return
		}
		w.Write([]byte("ok"))
	}
	for _, tc := range []struct {
		name   string
		auth   tls.ClientAuthType
		want   []string
		detail string
	}{
		{"optional", tls.VerifyClientCertIfGiven,
			[]string{"anonymous_refused pass/http", "untrusted_cert_refused pass/tls", "identity_accepted pass"},
			"the handshake of a client without a client certificate completed, then the server refused the request at the HTTP layer: GET / answered 400 Bad Request"},
		{"never asks", tls.NoClientCert,
			[]string{"anonymous_refused fail", "untrusted_cert_refused fail", "identity_accepted fail"},
			"the server did not ask for a client certificate: a client without a client certificate completes the handshake (GET / answered 400 Bad Request)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewUnstartedServer(http.HandlerFunc(refuse))
			srv.TLS = &tls.Config{Certificates: []tls.Certificate{e.ca.IssueServer(t, "127.0.0.1").TLSCertificate()}, ClientAuth: tc.auth, ClientCAs: e.ca.Pool()}
			srv.Config.ErrorLog = log.New(io.Discard, "", 0)
			srv.StartTLS()
			t.Cleanup(srv.Close)
			rep := e.probe(t, probe.Request{URL: srv.URL, CAs: []string{"demo"}, Identity: "svc"})
			require.Equal(t, tc.want, outcomes(rep)[:3])
			require.Equal(t, tc.detail, check(t, rep, probe.CheckAnonymousRefused).Detail)
		})
	}
}

func TestServerChainProblems(t *testing.T) {
	t.Parallel()
	e := openEnv(t)
	other := truststoretest.NewCA(t, truststoretest.Now(e.now), truststoretest.CommonName("other root CA"))
	for _, tc := range []struct {
		name string
		leaf func() *truststoretest.Leaf
		// identity is the expected status of identity_accepted: the
		// identity is never presented to a server whose chain fails.
		identity string
	}{
		{name: "expired", leaf: func() *truststoretest.Leaf {
			return e.ca.Issue(t, truststoretest.Names("127.0.0.1"), truststoretest.Expired())
		}, identity: "skip"},
		{name: "wrong hostname", leaf: func() *truststoretest.Leaf { return e.ca.IssueServer(t, "api.example.org") }, identity: "skip"},
		{name: "unknown CA", leaf: func() *truststoretest.Leaf { return other.IssueServer(t, "127.0.0.1") }, identity: "skip"},
		{name: "expires soon", leaf: func() *truststoretest.Leaf {
			return e.ca.Issue(t, truststoretest.Names("127.0.0.1"), truststoretest.Validity(e.now.Add(-time.Hour), e.now.Add(10*24*time.Hour)))
		}, identity: "pass"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			leaf := tc.leaf()
			srv, _ := serve(t, leaf, requireClientCerts(e.ca))
			rep := e.probe(t, probe.Request{URL: srv.URL, CAs: []string{"demo"}, Identity: "svc"})
			require.Equal(t, probe.VerdictEnforced, rep.Verdict, "the chain does not change the verdict")
			require.Equal(t, "identity_accepted "+tc.identity, outcomes(rep)[2])

			_, chainErr := pki.Verify(leaf.Cert, pki.VerifyOptions{Roots: []*x509.Certificate{e.ca.Cert}, Time: e.now})
			_, nameErr := pki.Verify(leaf.Cert, pki.VerifyOptions{Roots: []*x509.Certificate{e.ca.Cert}, Time: e.now, DNSName: "127.0.0.1"})
			gotChain, gotName := check(t, rep, probe.CheckServerChainValid), check(t, rep, probe.CheckHostnameValid)
			switch tc.name {
			case "expired":
				pe := pkiError(t, chainErr, pki.CodeExpired)
				require.Equal(t, probe.Check{Name: probe.CheckServerChainValid, Status: probe.StatusFail, Detail: pe.Message, Hint: pe.Hint}, gotChain)
				require.Equal(t, "certificate 'CN=127.0.0.1' expired at "+leaf.Cert.NotAfter.UTC().Format(time.RFC3339)+" (checked at "+e.now.UTC().Format(time.RFC3339)+")", pe.Message)
				require.Equal(t, probe.Check{Name: probe.CheckHostnameValid, Status: probe.StatusPass,
					Detail: `certificate 'CN=127.0.0.1' is valid for "127.0.0.1" (its chain does not verify: see server_chain_valid)`}, gotName)
				require.Equal(t, "not checked: the server's chain did not verify against demo, and an identity is never presented to an unverified server (see server_chain_valid and hostname_valid)",
					check(t, rep, probe.CheckIdentityAccepted).Detail)
			case "wrong hostname":
				require.NoError(t, chainErr)
				pe := pkiError(t, nameErr, pki.CodeHostnameMismatch)
				require.Equal(t, `certificate 'CN=api.example.org' is valid for api.example.org, not "127.0.0.1"`, pe.Message)
				require.Equal(t, probe.StatusPass, gotChain.Status)
				require.Equal(t, probe.Check{Name: probe.CheckHostnameValid, Status: probe.StatusFail, Detail: pe.Message, Hint: pe.Hint}, gotName)
			case "unknown CA":
				pe := pkiError(t, chainErr, pki.CodeUnknownAuthority)
				require.Equal(t, probe.Check{Name: probe.CheckServerChainValid, Status: probe.StatusFail, Detail: pe.Message, Hint: pe.Hint}, gotChain)
				require.Contains(t, pe.Message, "'CN=other root CA'")
				require.Equal(t, probe.StatusPass, gotName.Status)
			case "expires soon":
				require.Equal(t, probe.Check{Name: probe.CheckServerChainValid, Status: probe.StatusWarn,
					Detail: "the chain verifies to trusted CA 'CN=trustflow test root CA,O=trustflow tests', but certificate 'CN=127.0.0.1' expires at " +
						leaf.Cert.NotAfter.UTC().Format(time.RFC3339) + ", in 10 days",
					Hint: "renew it now: a connector refuses the server once it expires"}, gotChain)
				require.Equal(t, probe.StatusPass, gotName.Status)
			}
		})
	}
}

func pkiError(t *testing.T, err error, code string) *errs.Error {
	t.Helper()
	var pe *errs.Error
	require.ErrorAs(t, err, &pe)
	require.Equal(t, code, pe.Code, pe.Message)
	return pe
}

func TestWithoutCAsOrIdentity(t *testing.T) {
	t.Parallel()
	e := openEnv(t)
	leaf := e.ca.IssueServer(t, "127.0.0.1")
	srv, seen := serve(t, leaf, requireClientCerts(e.ca))

	rep := e.probe(t, probe.Request{URL: srv.URL})
	require.Equal(t, probe.VerdictEnforced, rep.Verdict)
	require.Equal(t, probe.Check{Name: probe.CheckIdentityAccepted, Status: probe.StatusSkip,
		Detail: "not checked: pass --identity NAME to check that the server accepts a trust store identity"}, rep.Checks[2])
	require.Equal(t, probe.Check{Name: probe.CheckServerChainValid, Status: probe.StatusSkip,
		Detail: "not checked: pass --ca NAME to verify the server's chain against a CA in the trust store (certificate 'CN=127.0.0.1' expires " + e.expiry(leaf.Cert) + ")"}, rep.Checks[5])
	require.Equal(t, probe.Check{Name: probe.CheckHostnameValid, Status: probe.StatusSkip,
		Detail: "not checked: pass --ca NAME to check the server's certificate for this host on a verified chain"}, rep.Checks[6])

	// An identity is never presented to a server whose chain is not
	// verified: without --ca there is no identity connection.
	rep = e.probe(t, probe.Request{URL: srv.URL, Identity: "svc"})
	require.Equal(t, probe.Check{Name: probe.CheckIdentityAccepted, Status: probe.StatusSkip,
		Detail: "not checked: identity svc is presented only to a server whose chain verifies; pass --ca NAME with the CA that issues the server's certificate"}, rep.Checks[2])
	conns, resumed, requests := seen.count()
	require.Equal(t, 8, conns)
	require.Zero(t, resumed)
	require.Empty(t, requests)
}

func TestLegacyTLSAccepted(t *testing.T) {
	t.Parallel()
	e := openEnv(t)
	hint := "disable TLS 1.0 and 1.1 on the server (nginx: ssl_protocols TLSv1.2 TLSv1.3; Go: tls.Config MinVersion tls.VersionTLS12)"
	const suite = "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"

	// A server without client authentication completes the old handshake.
	srv, _ := serve(t, e.ca.IssueServer(t, "127.0.0.1"), func(c *tls.Config) { c.MinVersion = tls.VersionTLS10 })
	rep := e.probe(t, probe.Request{URL: srv.URL, CAs: []string{"demo"}})
	require.Equal(t, probe.VerdictNotEnforced, rep.Verdict)
	require.Equal(t, probe.Check{Name: probe.CheckTLS10Refused, Status: probe.StatusFail,
		Detail: "the server accepted a TLS 1.0 handshake (cipher suite " + suite + ")", Hint: hint}, rep.Checks[3])
	require.Equal(t, probe.Check{Name: probe.CheckTLS11Refused, Status: probe.StatusFail,
		Detail: "the server accepted a TLS 1.1 handshake (cipher suite " + suite + ")", Hint: hint}, rep.Checks[4])

	// One that requires a client certificate negotiates the old version,
	// then refuses the client for the missing certificate: the version is
	// still accepted.
	srv, _ = serve(t, e.ca.IssueServer(t, "127.0.0.1"), func(c *tls.Config) {
		requireClientCerts(e.ca)(c)
		c.MinVersion = tls.VersionTLS10
	})
	rep = e.probe(t, probe.Request{URL: srv.URL, CAs: []string{"demo"}})
	require.Equal(t, probe.VerdictEnforced, rep.Verdict)
	for i, version := range []string{"TLS 1.0", "TLS 1.1"} {
		require.Equal(t, probe.Check{Name: rep.Checks[3+i].Name, Status: probe.StatusFail,
			Detail: "the server negotiated " + version + " (cipher suite " + suite + "); it then ended the handshake (the server sent the alert handshake_failure), refusing the client, not the version",
			Hint:   hint}, rep.Checks[3+i])
	}
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	e := openEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	rep := e.probe(t, probe.Request{URL: "https://" + addr + "/health", CAs: []string{"demo"}, Identity: "svc", Timeout: 2 * time.Second})
	require.Equal(t, probe.VerdictNotEnforced, rep.Verdict)
	require.Equal(t, "https://"+addr+"/health", rep.URL)
	connect := probe.Check{Status: probe.StatusFail, Detail: "could not connect: " + addr + " refused the connection: nothing listens there",
		Hint: "check the URL, and that the server is running and reachable from the trustflow server"}
	unseen := probe.Check{Status: probe.StatusFail, Detail: "not checked: no handshake got as far as the server's certificate",
		Hint: "see the other checks for why the server could not be reached"}
	var want []probe.Check
	for i, name := range []string{probe.CheckAnonymousRefused, probe.CheckUntrustedCertRefused, probe.CheckIdentityAccepted, probe.CheckTLS10Refused,
		probe.CheckTLS11Refused, probe.CheckServerChainValid, probe.CheckHostnameValid} {
		c := connect
		if i >= 5 {
			c = unseen
		}
		c.Name = name
		want = append(want, c)
	}
	require.Equal(t, want, rep.Checks)
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	e := openEnv(t)
	ctx := context.Background()
	_, _, err := e.trust.Create(ctx, admin, truststore.CreateRequest{Name: "pending", GenerateSpec: truststore.GenerateSpec{Subject: "CN=pending"}})
	require.NoError(t, err)
	head, err := e.st.AuditHead(ctx)
	require.NoError(t, err)

	for _, tc := range []struct {
		req                  probe.Request
		field, code, message string
	}{
		{probe.Request{URL: ""}, "url", "required", "no URL was given"},
		{probe.Request{URL: "http://127.0.0.1:8080/"}, "url", "not_https", `"http://127.0.0.1:8080/" is not an https:// URL`},
		{probe.Request{URL: "api.example.org"}, "url", "not_https", `"api.example.org" is not an https:// URL`},
		{probe.Request{URL: "https://admin:hunter2@api.example.org/"}, "url", "credentials_in_url", "the URL carries credentials (user:password@)"},
		{probe.Request{URL: "https://"}, "url", "invalid_url", `"https:" has no host`},
		{probe.Request{URL: "https://api.example.org:70000/"}, "url", "invalid_url", `port "70000" is not between 1 and 65535`},
		{probe.Request{URL: "https://exa mple.org/"}, "url", "invalid_url", `not a valid URL: invalid character " " in host name`},
		{probe.Request{URL: "https://127.0.0.1/", CAs: []string{"nope"}}, "cas", "not_found", `CA "nope" does not exist`},
		{probe.Request{URL: "https://127.0.0.1/", CAs: []string{""}}, "cas", "invalid_name", "a CA name is empty"},
		{probe.Request{URL: "https://127.0.0.1/", Identity: "nope"}, "identity", "not_found", `identity "nope" does not exist`},
		{probe.Request{URL: "https://127.0.0.1/", Identity: "pending"}, "identity", "no_active_version", `identity "pending" has no active version`},
		{probe.Request{URL: "https://127.0.0.1/", Timeout: -time.Second}, "timeout", "invalid_timeout", "-1s is not between 0 and 30s"},
		{probe.Request{URL: "https://127.0.0.1/", Timeout: time.Minute}, "timeout", "invalid_timeout", "1m0s is not between 0 and 30s"},
	} {
		_, err := e.prober.Probe(ctx, admin, tc.req)
		var in *errs.Error
		require.ErrorAs(t, err, &in, "%+v", tc.req)
		require.Equal(t, []string{tc.field, tc.code, tc.message}, []string{in.Field, in.Code, in.Message}, "%+v", tc.req)
		require.NotEmpty(t, in.Hint)
		require.NotContains(t, err.Error(), "hunter2")
	}
	after, err := e.st.AuditHead(ctx)
	require.NoError(t, err)
	require.Equal(t, head, after, "a refused probe records nothing")
}

// TestAuditedOnEveryDialect runs one probe on each store dialect: the
// probe's audit record goes through the shared audit chain.
func TestAuditedOnEveryDialect(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		e := newEnv(t, st)
		srv, _ := serve(t, e.ca.IssueServer(t, "127.0.0.1"), requireClientCerts(e.ca))
		rep := e.probe(t, probe.Request{URL: srv.URL, CAs: []string{"demo"}, Identity: "svc"})
		require.Equal(t, probe.VerdictEnforced, rep.Verdict)
		v, err := e.audit.Verify(context.Background())
		require.NoError(t, err)
		require.True(t, v.OK, "%+v", v)
		recs, err := e.audit.List(context.Background(), audit.Filter{Action: "probe.run", Limit: 10})
		require.NoError(t, err)
		require.Len(t, recs, 1)
		e.requireNoKeyMaterial(t, rep)
	})
}
