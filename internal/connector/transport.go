package connector

import (
	"container/list"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"golang.org/x/oauth2"

	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/pki"
	"github.com/trustflow/trustflow/internal/policy"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/tlsconfig"
)

// client is one connector's pooled HTTP client, built from one state of the
// connector (see store.ConnectorState). It is replaced, never mutated, when
// the connector, its CAs or its identity change.
type client struct {
	conn       store.Connector
	state      string
	base       *url.URL
	timeout    time.Duration
	serverName string
	pins       []string
	settings   AuthSettings
	headers    map[string]string
	secrets    Secrets
	trust      TrustStore
	clock      clock.Clock
	systemPool []*x509.Certificate
	fips       bool
	// policy is the egress and TLS policy in force; nil for none.
	policy func() *policy.Policy
	// dial opens the TCP connection under the policy.
	dial dialFunc

	// secretForms are the connector's secrets in every form an echoing
	// upstream could send them back in (see redactResponse).
	secretForms []string

	tlsBase   *tls.Config
	sessions  *sessionCache
	transport *http.Transport
	http      *http.Client
	evidence  sync.Map  // weak.Pointer[tls.Conn] -> *connEvidence
	lastFull  *sync.Map // server name -> *Evidence of the last full handshake
	checkedAt time.Time
	trustGen  int64
	oauth     *oauthSource
	// tokenAddr is the OAuth2 token endpoint's host:port ("" without OAuth2).
	tokenAddr string
	// recent is the client's place among the service's recently used
	// clients (nil when out of it); guarded by Service.mu.
	recent *list.Element
	// verdict caches the policy check of the policy in force (see
	// checkPolicy).
	verdict atomic.Pointer[policyVerdict]
	// tokenForms caches the redaction forms of the last OAuth2 access
	// token sent, followed by secretForms.
	tokenForms atomic.Pointer[tokenForms]
	// retired is set once the service no longer hands the client out: a
	// request still in flight on it closes its connection when done.
	retired atomic.Bool
}

// parked is what a client released for the bound on idle connectors
// leaves behind, so that the client next built for the same state of the
// connector resumes its TLS sessions instead of handshaking in full.
type parked struct {
	state    string
	trustGen int64
	sessions *sessionCache
	lastFull *sync.Map
	token    *oauth2.Token
}

// sessionCache is a TLS session cache that can be emptied, so that a
// session established under a policy failure or an old identity is never
// resumed.
type sessionCache struct {
	mu    sync.Mutex
	cache tls.ClientSessionCache
}

func newSessionCache() *sessionCache {
	return &sessionCache{cache: tls.NewLRUClientSessionCache(64)}
}

func (s *sessionCache) Get(key string) (*tls.ClientSessionState, bool) {
	s.mu.Lock()
	c := s.cache
	s.mu.Unlock()
	return c.Get(key)
}

func (s *sessionCache) Put(key string, cs *tls.ClientSessionState) {
	s.mu.Lock()
	c := s.cache
	s.mu.Unlock()
	c.Put(key, cs)
}

// Clear forgets every session.
func (s *sessionCache) Clear() {
	s.mu.Lock()
	s.cache = tls.NewLRUClientSessionCache(64)
	s.mu.Unlock()
}

// dialFunc dials a TCP connection.
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// newClient builds the client for one state of a connector; from, when
// not nil, is what a client released for the same state and trust
// generation left behind.
func newClient(ctx context.Context, conn store.Connector, state string, secrets Secrets, trust TrustStore, clk clock.Clock, fips bool,
	sysRoots func() ([]*x509.Certificate, error), pol func() *policy.Policy, from *parked) (*client, error) {
	base, err := url.Parse(conn.URL)
	if err != nil {
		return nil, fmt.Errorf("connector: %s: stored url: %w", conn.Name, err)
	}
	timeout, err := time.ParseDuration(fmt.Sprintf("%dms", conn.TimeoutMS))
	if err != nil {
		return nil, fmt.Errorf("connector: %s: stored timeout: %w", conn.Name, err)
	}
	c := &client{conn: conn, state: state, base: base, timeout: timeout, trust: trust, clock: clk, secrets: secrets, fips: fips, policy: pol,
		sessions: newSessionCache(), lastFull: &sync.Map{}, checkedAt: clk.Now(), trustGen: trust.Generation()}
	if from != nil {
		c.sessions, c.lastFull = from.sessions, from.lastFull
	}
	if err := decodeStored(conn, &c.pins, &c.settings); err != nil {
		return nil, err
	}
	c.secretForms = secretForms(secrets.values(), c.settings.Username)
	if err := json.Unmarshal([]byte(conn.Headers), &c.headers); err != nil {
		return nil, fmt.Errorf("connector: %s: stored headers: %w", conn.Name, err)
	}
	c.serverName = conn.ServerName
	if c.serverName == "" {
		c.serverName = base.Hostname()
	}
	if conn.SystemRoots {
		c.systemPool, err = sysRoots()
		if err != nil {
			return nil, fmt.Errorf("connector: %s: --system-roots: %w", conn.Name, err)
		}
	}
	roots, err := c.roots(ctx)
	if err != nil && base.Scheme == "https" {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	c.tlsBase = tlsconfig.Client(tlsconfig.ClientOptions{ServerName: c.serverName, MinTLS: conn.MinTLS, Roots: pool,
		NextProtos: []string{"h2", "http/1.1"}, Sessions: c.sessions, FIPS: fips})
	var dialer dialFunc = (&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext
	if pol != nil {
		// Every address is checked against the policy just before connect.
		dialer = policy.Dialer{Dialer: &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}, Policy: pol}.DialContext
	}
	c.dial = dialer
	c.transport = &http.Transport{
		DialContext: dialer,
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return c.dialTLS(ctx, dialer, network, addr)
		},
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          128,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: timeout,
		ExpectContinueTimeout: time.Second,
	}
	c.http = &http.Client{Transport: c.transport, Timeout: timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error { return http.ErrUseLastResponse }}
	if conn.AuthType == AuthOAuth2 {
		var last *oauth2.Token
		if from != nil {
			last = from.token
		}
		c.oauth = newOAuthSource(c, last)
		if tu, err := url.Parse(c.settings.TokenURL); err == nil {
			c.tokenAddr = hostPort(tu)
		}
	}
	return c, nil
}

// roots are the anchors a server certificate must chain to: the
// connector's CA bundles, live from the trust store, plus the system roots
// when asked for.
func (c *client) roots(ctx context.Context) ([]*x509.Certificate, error) {
	roots, err := c.trust.Anchors(ctx, c.conn.CAs...)
	if err != nil {
		return nil, err
	}
	return append(roots, c.systemPool...), nil
}

// dialTLS dials, runs the handshake with per-connection callbacks that
// collect evidence, and enforces the client-certificate policy.
func (c *client) dialTLS(ctx context.Context, dial dialFunc, network, addr string) (net.Conn, error) {
	raw, err := dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	ev := &connEvidence{}
	cfg := c.tlsBase.Clone()
	tlsconfig.ApplyPolicy(cfg, c.currentPolicy(), c.fips)
	serverName := c.serverName
	if host, _, err := net.SplitHostPort(addr); err == nil && host != c.base.Hostname() {
		// Another host reached through this connector: its OAuth2 token endpoint.
		serverName = host
		cfg.ServerName = host
	}
	cfg.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
		ev.sawRequest(cri)
		if c.conn.Identity == "" {
			return &tls.Certificate{}, nil
		}
		ac, err := c.trust.Active(ctx, c.conn.Identity)
		if err != nil {
			ev.failed(err)
			return nil, &policyError{Diagnosis: Diagnosis{Code: "identity_unavailable",
				Message: fmt.Sprintf("connector %s cannot present identity %s: %v", c.conn.Name, c.conn.Identity, err),
				Hint:    "check the identity with `trustflow identity show " + c.conn.Identity + "`"}, Err: err}
		}
		ev.presented(ac.Info)
		return ac.Certificate, nil
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error { return c.verifyConnection(ctx, cs, serverName) }
	tc := tls.Client(raw, cfg)
	hctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, err
	}
	cs := tc.ConnectionState()
	final := ev.finish(cs, c.clock.Now())
	// The name the server's certificate was verified for (Go sends no SNI
	// for an IP address, so the connection state has none then).
	final.ServerName = serverName
	if cs.DidResume {
		// A resumed session re-uses the authentication of the full
		// handshake that issued it: report that handshake's client side.
		if v, ok := c.lastFull.Load(serverName); ok {
			full := v.(*Evidence)
			final.ServerRequestedClientCert = full.ServerRequestedClientCert
			final.AcceptableCAs = full.AcceptableCAs
			final.ClientCertificate = full.ClientCertificate
		}
	} else {
		c.lastFull.Store(serverName, final)
	}
	// The connector's server must ask for a client certificate; its OAuth2
	// token endpoint only when the token request authenticates with it.
	mustAsk := addr != c.tokenAddr || addr == hostPort(c.base) || c.settings.TokenAuthTLS
	if c.conn.Identity != "" && mustAsk && !cs.DidResume && !final.ServerRequestedClientCert && !c.conn.AllowNoClientAuthRequest {
		tc.Close()
		c.sessions.Clear()
		return nil, &CallError{Evidence: final, Diagnosis: Diagnosis{Code: "client_cert_not_requested",
			Message: fmt.Sprintf("the server %s did not ask for a client certificate: it does not enforce mutual TLS, so connector %s refuses it", addr, c.conn.Name),
			Hint:    "configure the server to require client certificates (nginx: ssl_verify_client on); if this endpoint is known not to, pass --allow-no-client-auth-request (audited)"}}
	}
	// The transport needs the *tls.Conn itself (for HTTP/2 and resp.TLS),
	// so the evidence is kept beside it, keyed weakly, and dropped when the
	// connection is garbage.
	key := weak.Make(tc)
	c.evidence.Store(key, ev)
	runtime.AddCleanup(tc, func(k weak.Pointer[tls.Conn]) { c.evidence.Delete(k) }, key)
	return tc, nil
}

// verifyConnection checks the server against the live trust store on
// every handshake, fresh or resumed: the chain (pki.Verify, the same path
// as `ca verify`), then the SPKI pins.
func (c *client) verifyConnection(ctx context.Context, cs tls.ConnectionState, serverName string) error {
	if len(cs.PeerCertificates) == 0 {
		return &policyError{Diagnosis: Diagnosis{Code: "no_server_certificate", Message: fmt.Sprintf("connector %s: the server sent no certificate", c.conn.Name)}}
	}
	roots, err := c.roots(ctx)
	if err != nil {
		return &policyError{Diagnosis: Diagnosis{Code: "trust_store", Message: fmt.Sprintf("connector %s: cannot load its CAs: %v", c.conn.Name, err),
			Hint: "a CA the connector trusts was removed: add it back, or update the connector's --ca"}}
	}
	leaf := cs.PeerCertificates[0]
	res, err := pki.Verify(leaf, pki.VerifyOptions{Roots: roots, Intermediates: cs.PeerCertificates[1:], DNSName: serverName, Time: c.clock.Now(), Purpose: pki.PurposeServer})
	if err != nil {
		return &policyError{Diagnosis: c.certDiagnosis(err, leaf, err)}
	}
	if len(c.pins) > 0 {
		for _, cert := range res.Chain {
			sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
			if slices.Contains(c.pins, "sha256/"+base64.StdEncoding.EncodeToString(sum[:])) {
				return nil
			}
		}
		return &policyError{Diagnosis: Diagnosis{Code: "pin_mismatch",
			Message: fmt.Sprintf("connector %s: no certificate in the server's chain matches its pins (leaf pin is %s)", c.conn.Name, pki.SPKIPinSHA256(leaf)),
			Hint:    "the server's key changed, or this is not the expected server; if the change is legitimate, update the connector's --pin"}}
	}
	return nil
}

// hostPort is u's host:port as the transport dials it, with the scheme's
// default port.
func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	port := "443"
	if u.Scheme == "http" {
		port = "80"
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// evidenceFor returns the evidence of the connection a request used.
func (c *client) evidenceFor(conn net.Conn) *Evidence {
	tc, ok := conn.(*tls.Conn)
	if !ok {
		return nil
	}
	if v, ok := c.evidence.Load(weak.Make(tc)); ok {
		ev := v.(*connEvidence)
		ev.mu.Lock()
		defer ev.mu.Unlock()
		return ev.final
	}
	return nil
}

// retire closes the idle connections of a client the service no longer
// hands out (nil for none); a request in flight on it closes its own when
// done (see Service.do).
func (c *client) retire() {
	if c != nil {
		c.retired.Store(true)
		c.transport.CloseIdleConnections()
	}
}

// park is what c leaves behind for its successor.
func (c *client) park() *parked {
	return &parked{state: c.state, trustGen: c.trustGen, sessions: c.sessions, lastFull: c.lastFull, token: c.oauth.lastToken()}
}

var systemRootFiles = []string{
	"/etc/ssl/certs/ca-certificates.crt",
	"/etc/pki/tls/certs/ca-bundle.crt",
	"/etc/ssl/ca-bundle.pem",
	"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
	"/etc/ssl/cert.pem",
}

func systemRoots() ([]*x509.Certificate, error) {
	for _, f := range systemRootFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		certs, err := pki.ParseCertificates(b)
		if err == nil && len(certs) > 0 {
			return certs, nil
		}
	}
	return nil, fmt.Errorf("no system CA bundle found (looked in %v)", systemRootFiles)
}
