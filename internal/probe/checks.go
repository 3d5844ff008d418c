package probe

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/trustflow/trustflow/internal/pki"
	"github.com/trustflow/trustflow/internal/policy"
	"github.com/trustflow/trustflow/internal/tlsconfig"
)

// settleRead is how long a check waits, right after a TLS 1.3 handshake,
// for the alert with which a server rejects the client's certificate: in
// TLS 1.3 the server judges it after the client's side of the handshake is
// done, so the rejection arrives on the first read.
const settleRead = 250 * time.Millisecond

// refusedStatuses are the HTTP answers that count as a refusal at the HTTP
// layer: what nginx answers (400, from its internal 495 and 496) when a
// client certificate is missing or fails verification with
// ssl_verify_client on or optional, and the generic refusals.
var refusedStatuses = []int{400, 401, 403, 495, 496}

// attempt is what one check's connection observed.
type attempt struct {
	dialErr      error // the TCP connection failed
	handshakeErr error // the TLS handshake failed
	readErr      error // after the handshake, no HTTP answer came
	// requested says the server asked for a client certificate.
	requested     bool
	acceptableCAs []string
	// peer is the chain the server presented, verified or not.
	peer []*x509.Certificate
	// state is the connection's state once the server's certificate came
	// (the version and cipher suite are negotiated by then), and after the
	// handshake.
	state tls.ConnectionState
	// status is the HTTP answer's status line ("400 Bad Request").
	status     string
	statusCode int
}

// run opens every check's connection, concurrently, and judges what each
// observed.
func (p *Prober) run(ctx context.Context, t *target) (Report, error) {
	now := p.clock.Now()
	untrusted, err := untrustedCertificate(now)
	if err != nil {
		return Report{}, err
	}
	var anon, bad, ident, v10, v11 *attempt
	var wg sync.WaitGroup
	wg.Go(func() { anon = p.connect(ctx, t, observeConfig(t, tls.VersionTLS12, 0), nil, true) })
	wg.Go(func() { bad = p.connect(ctx, t, observeConfig(t, tls.VersionTLS12, 0), untrusted, true) })
	wg.Go(func() { v10 = p.connect(ctx, t, observeConfig(t, tls.VersionTLS10, tls.VersionTLS10), nil, false) })
	wg.Go(func() { v11 = p.connect(ctx, t, observeConfig(t, tls.VersionTLS11, tls.VersionTLS11), nil, false) })
	if t.identity != "" && len(t.anchors) > 0 {
		wg.Go(func() { ident = p.connect(ctx, t, p.identityConfig(t), t.active.Certificate, true) })
	}
	wg.Wait()

	var peer []*x509.Certificate
	for _, a := range []*attempt{anon, bad, ident, v10, v11} {
		if a != nil && len(a.peer) > 0 {
			peer = a.peer
			break
		}
	}
	rep := Report{URL: t.url.String(), CheckedAt: now.UTC(), Checks: []Check{
		refusal(CheckAnonymousRefused, t, anon, "without a client certificate",
			"make the client certificate required, not optional (nginx: ssl_verify_client on; Go: tls.RequireAndVerifyClientCert)"),
		refusal(CheckUntrustedCertRefused, t, bad, "with a self-signed certificate no trusted CA issued (CN="+UntrustedCommonName+")",
			"have the server verify client certificates against the CAs it trusts and refuse the rest (nginx: ssl_client_certificate CA-FILE and ssl_verify_client on; Go: tls.RequireAndVerifyClientCert with ClientCAs)"),
		identityCheck(t, ident),
		legacyCheck(CheckTLS10Refused, "TLS 1.0", t, v10),
		legacyCheck(CheckTLS11Refused, "TLS 1.1", t, v11),
		chainCheck(t, peer, now),
		hostnameCheck(t, peer, now),
	}}
	rep.Verdict = VerdictNotEnforced
	if rep.Checks[0].Status == StatusPass && rep.Checks[1].Status == StatusPass {
		rep.Verdict = VerdictEnforced
	}
	return rep, nil
}

// observeConfig is the configuration of the checks that watch how the
// server treats a client it should refuse: anonymous, untrusted, TLS 1.0
// and 1.1. A maxVersion of 0 means the newest.
func observeConfig(t *target, minVersion, maxVersion uint16) *tls.Config {
	return tlsconfig.Observe(t.serverName, minVersion, maxVersion)
}

// chainError is a server chain that pki.Verify refused during the
// identity check's handshake.
type chainError struct{ err error }

func (e *chainError) Error() string { return e.err.Error() }
func (e *chainError) Unwrap() error { return e.err }

// identityConfig verifies the server like a connector does (the CAs as
// roots, then pki.Verify for the URL's host) before the identity is
// presented.
func (p *Prober) identityConfig(t *target) *tls.Config {
	pool := x509.NewCertPool()
	for _, c := range t.anchors {
		pool.AddCert(c)
	}
	var pol *policy.Policy
	if p.policy != nil {
		pol = p.policy()
	}
	cfg := tlsconfig.Client(tlsconfig.ClientOptions{ServerName: t.serverName, Roots: pool, Policy: pol})
	cfg.Time = p.clock.Now
	cfg.Renegotiation = tls.RenegotiateOnceAsClient
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return &chainError{errors.New("the server sent no certificate")}
		}
		_, err := pki.Verify(cs.PeerCertificates[0], pki.VerifyOptions{Roots: t.anchors, Intermediates: cs.PeerCertificates[1:],
			DNSName: t.serverName, Time: p.clock.Now(), Purpose: pki.PurposeServer})
		if err != nil {
			return &chainError{err}
		}
		return nil
	}
	return cfg
}

// connect makes one check's connection with cfg, presenting cert when the
// server asks for a client certificate (an empty certificate when cert is
// nil). With request set, once the handshake is done it reads once (TLS
// 1.3), sends a bare GET of the URL's path and reads the status line.
func (p *Prober) connect(ctx context.Context, t *target, cfg *tls.Config, cert *tls.Certificate, request bool) *attempt {
	a := &attempt{}
	// The callbacks run on this goroutine, inside Handshake or Read.
	cfg.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
		a.requested = true
		a.acceptableCAs = caNames(cri.AcceptableCAs)
		if cert == nil {
			return &tls.Certificate{}, nil
		}
		return cert, nil
	}
	verify := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		a.peer, a.state = cs.PeerCertificates, cs
		if verify != nil {
			return verify(cs)
		}
		return nil
	}
	// No ClientSessionCache: a check never resumes a session.
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	dial := (&net.Dialer{}).DialContext
	if p.policy != nil {
		dial = policy.Dialer{Policy: p.policy}.DialContext
	}
	raw, err := dial(ctx, "tcp", t.addr)
	if err != nil {
		a.dialErr = err
		return a
	}
	defer raw.Close()
	deadline, _ := ctx.Deadline()
	if err := raw.SetDeadline(deadline); err != nil {
		a.dialErr = err
		return a
	}
	conn := tls.Client(raw, cfg)
	defer conn.Close() // sends close_notify after a completed handshake
	if err := conn.HandshakeContext(ctx); err != nil {
		a.handshakeErr = err
		return a
	}
	a.state = conn.ConnectionState()
	if !request {
		return a
	}
	var early []byte
	if a.state.Version == tls.VersionTLS13 {
		settle := time.Now().Add(settleRead)
		if settle.After(deadline) {
			settle = deadline
		}
		if err := conn.SetReadDeadline(settle); err != nil {
			a.readErr = err
			return a
		}
		buf := make([]byte, 1)
		n, err := conn.Read(buf)
		if err != nil && !isTimeout(err) {
			a.readErr = err
			return a
		}
		early = buf[:n]
		if err := conn.SetReadDeadline(deadline); err != nil {
			a.readErr = err
			return a
		}
	}
	req := "GET " + t.path + " HTTP/1.1\r\nHost: " + t.url.Host + "\r\nUser-Agent: trustflow-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"
	_, werr := io.WriteString(conn, req)
	// Read even when the write failed: a server that refused the client
	// may have sent its alert before closing.
	resp, rerr := http.ReadResponse(bufio.NewReader(io.MultiReader(bytes.NewReader(early), conn)), nil)
	if rerr != nil {
		a.readErr = rerr
		if _, isAlert := remoteAlert(rerr); !isAlert && werr != nil {
			a.readErr = werr
		}
		return a
	}
	resp.Body.Close()
	a.statusCode, a.status = resp.StatusCode, resp.Status
	return a
}

// caNames renders the distinguished names of a CertificateRequest's
// acceptable CAs.
func caNames(raw [][]byte) []string {
	var out []string
	for _, der := range raw {
		var rdn pkix.RDNSequence
		if _, err := asn1.Unmarshal(der, &rdn); err != nil {
			continue
		}
		var n pkix.Name
		n.FillFromRDNSequence(&rdn)
		out = append(out, n.String())
	}
	return out
}

// untrustedCertificate makes the self-signed certificate that
// untrusted_cert_refused presents: a fresh ECDSA P-256 key held only in
// memory for this probe, valid for an hour either side of now.
func untrustedCertificate(now time.Time) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("probe: generate untrusted key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("probe: generate untrusted serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(1)),
		Subject:               pkix.Name{CommonName: UntrustedCommonName},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("probe: make untrusted certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("probe: parse untrusted certificate: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// refusal judges anonymous_refused and untrusted_cert_refused: the server
// must refuse the client what describes, either with an alert (or by
// closing the connection) once it has asked for a client certificate, or
// with a refusal status to the GET after the handshake. A server that never
// asks for a client certificate does not enforce mutual TLS, whatever it
// answers.
func refusal(name string, t *target, a *attempt, what, hint string) Check {
	c := Check{Name: name, Status: StatusFail}
	if err := a.connErr(); err != nil {
		alert, isAlert := remoteAlert(err)
		stage := "the handshake"
		if a.handshakeErr == nil {
			stage = "the first read after the handshake"
		}
		switch {
		case a.dialErr != nil:
			c.Detail = "could not connect: " + describe(err, t.addr, t.timeout)
			c.Hint = "check the URL, and that the server is running and reachable from the trustflow server"
		case isAlert && (a.requested || alert == "certificate_required"):
			c.Status, c.Layer = StatusPass, LayerTLS
			c.Detail = fmt.Sprintf("the server refused a client %s: alert %s on %s", what, alert, stage)
		case isClosed(err) && a.requested:
			c.Status, c.Layer = StatusPass, LayerTLS
			c.Detail = fmt.Sprintf("the server asked for a client certificate and closed the connection of a client %s, without an alert, on %s", what, stage)
		case isTimeout(err):
			c.Detail = fmt.Sprintf("inconclusive: %s, on %s", describe(err, t.addr, t.timeout), stage)
			c.Hint = "check the server's log; raise --timeout if the server is known to be slow"
		case !a.requested:
			c.Detail = fmt.Sprintf("inconclusive: %s failed before the server asked for a client certificate: %s", stage, describe(err, t.addr, t.timeout))
			c.Hint = "the server refused something other than the client certificate (TLS version, cipher suites, SNI name or application protocol): check its TLS settings and log"
		default:
			c.Detail = fmt.Sprintf("inconclusive: %s failed: %s", stage, describe(err, t.addr, t.timeout))
			c.Hint = "check the server's log for why it closed the connection"
		}
		return c
	}
	answered := fmt.Sprintf("GET %s answered %s", t.path, a.status)
	switch {
	case !a.requested:
		c.Detail = fmt.Sprintf("the server did not ask for a client certificate: a client %s completes the handshake (%s)", what, answered)
		c.Hint = hint
	case slices.Contains(refusedStatuses, a.statusCode):
		c.Status, c.Layer = StatusPass, LayerHTTP
		c.Detail = fmt.Sprintf("the handshake of a client %s completed, then the server refused the request at the HTTP layer: %s", what, answered)
	default:
		c.Detail = fmt.Sprintf("the server asked for a client certificate but accepted a client %s: %s", what, answered)
		c.Hint = hint
	}
	return c
}

// connErr is the error that ended the attempt's connection, if any.
func (a *attempt) connErr() error {
	switch {
	case a.dialErr != nil:
		return a.dialErr
	case a.handshakeErr != nil:
		return a.handshakeErr
	}
	return a.readErr
}

// identityCheck judges identity_accepted: a verified server must accept the
// identity and answer the GET with anything but a refusal.
func identityCheck(t *target, a *attempt) Check {
	c := Check{Name: CheckIdentityAccepted, Status: StatusFail}
	switch {
	case t.identity == "":
		c.Status = StatusSkip
		c.Detail = "not checked: pass --identity NAME to check that the server accepts a trust store identity"
		return c
	case len(t.anchors) == 0:
		c.Status = StatusSkip
		c.Detail = fmt.Sprintf("not checked: identity %s is presented only to a server whose chain verifies; pass --ca NAME with the CA that issues the server's certificate", t.identity)
		return c
	}
	who := fmt.Sprintf("identity %s (version %d, serial %s)", t.identity, t.active.Info.Version, t.active.Info.Serial)
	err := a.connErr()
	var chainErr *chainError
	var certErr *tls.CertificateVerificationError
	switch {
	case err == nil:
	case a.dialErr != nil:
		c.Detail = "could not connect: " + describe(err, t.addr, t.timeout)
		c.Hint = "check the URL, and that the server is running and reachable from the trustflow server"
		return c
	case errors.As(err, &chainErr), errors.As(err, &certErr):
		c.Status = StatusSkip
		c.Detail = fmt.Sprintf("not checked: the server's chain did not verify against %s, and an identity is never presented to an unverified server (see %s and %s)",
			strings.Join(t.cas, ", "), CheckServerChainValid, CheckHostnameValid)
		return c
	default:
		if alert, ok := remoteAlert(err); ok {
			c.Layer = LayerTLS
			c.Detail, c.Hint = alertDiagnosis(alert, who, a.acceptableCAs)
			return c
		}
		if isClosed(err) && a.requested {
			c.Layer = LayerTLS
			c.Detail = fmt.Sprintf("the server closed the connection, without an alert, after it received the certificate of %s", who)
			c.Hint = "check the server's log for why it refused the certificate"
			return c
		}
		c.Detail = "inconclusive: " + describe(err, t.addr, t.timeout)
		c.Hint = "check the server's log"
		return c
	}
	answered := fmt.Sprintf("GET %s answered %s", t.path, a.status)
	switch {
	case !a.requested:
		c.Detail = fmt.Sprintf("the server did not ask for a client certificate, so %s was not presented (%s)", who, answered)
		c.Hint = "configure the server to require client certificates (nginx: ssl_verify_client on)"
	case slices.Contains(refusedStatuses, a.statusCode):
		c.Layer = LayerHTTP
		c.Detail = fmt.Sprintf("the handshake with %s completed, then the server refused the request at the HTTP layer: %s", who, answered)
		c.Hint = "the server does not accept this certificate, or this path needs more than a certificate: check that it trusts the identity's issuing CA (" + acceptableText(a.acceptableCAs) + ") and the server's log"
	default:
		c.Status = StatusPass
		c.Detail = fmt.Sprintf("the server accepted %s over %s: %s", who, tls.VersionName(a.state.Version), answered)
	}
	return c
}

// alertDiagnosis explains the alert with which a server refused the
// identity, and what to do.
func alertDiagnosis(alert, who string, acceptable []string) (detail, hint string) {
	switch alert {
	case "certificate_required":
		return fmt.Sprintf("the server says no client certificate was sent, though %s was offered (certificate_required)", who),
			"check that the identity's certificate matches what the server asks for (acceptable CAs: " + acceptableText(acceptable) + ")"
	case "bad_certificate", "certificate_unknown", "unsupported_certificate":
		return fmt.Sprintf("the server rejected the certificate of %s (%s)", who, alert),
			"the server does not accept this certificate: check its key usage (clientAuth), its key type and that the server trusts its issuer (acceptable CAs: " + acceptableText(acceptable) + "); the server's log says which"
	case "unknown_ca":
		return fmt.Sprintf("the server does not trust the CA that issued the certificate of %s (unknown_ca)", who),
			"add the identity's issuing CA to the server's trusted client CAs, or use an identity issued by a CA it trusts (acceptable CAs: " + acceptableText(acceptable) + ")"
	case "certificate_expired":
		return fmt.Sprintf("the server says the certificate of %s has expired (certificate_expired)", who), "rotate the identity: `trustflow identity rotate`"
	case "certificate_revoked":
		return fmt.Sprintf("the server says the certificate of %s is revoked (certificate_revoked)", who), "rotate the identity to a new certificate: `trustflow identity rotate`"
	case "access_denied":
		return fmt.Sprintf("the server accepted the certificate of %s but denied access (access_denied)", who), "ask the server's owner to authorise this certificate's subject"
	}
	return fmt.Sprintf("the server refused %s with the alert %s", who, alert), "check the server's log for why it refused the certificate"
}

func acceptableText(cas []string) string {
	if len(cas) == 0 {
		return "the server named none"
	}
	return strings.Join(cas, "; ")
}

// legacyCheck judges tls10_refused and tls11_refused: the server must not
// complete a handshake at that version.
func legacyCheck(name, version string, t *target, a *attempt) Check {
	c := Check{Name: name, Status: StatusFail}
	hint := "disable TLS 1.0 and 1.1 on the server (nginx: ssl_protocols TLSv1.2 TLSv1.3; Go: tls.Config MinVersion tls.VersionTLS12)"
	switch err := a.connErr(); {
	case err == nil:
		c.Detail = fmt.Sprintf("the server accepted a %s handshake (cipher suite %s)", version, tls.CipherSuiteName(a.state.CipherSuite))
		c.Hint = hint
	case a.dialErr == nil && a.state.Version != 0:
		// The server sent its certificate: it negotiated the old version,
		// and ended the handshake for another reason (usually the missing
		// client certificate).
		c.Detail = fmt.Sprintf("the server negotiated %s (cipher suite %s); it then ended the handshake (%s), refusing the client, not the version",
			version, tls.CipherSuiteName(a.state.CipherSuite), describe(err, t.addr, t.timeout))
		c.Hint = hint
	case a.dialErr != nil:
		c.Detail = "could not connect: " + describe(err, t.addr, t.timeout)
		c.Hint = "check the URL, and that the server is running and reachable from the trustflow server"
	case strings.Contains(err.Error(), "no supported versions satisfy MinVersion and MaxVersion"):
		c.Status = StatusSkip
		c.Detail = fmt.Sprintf("not checked: this trustflow server cannot offer %s (its FIPS 140-3 mode forbids it)", version)
	case isTimeout(err):
		c.Detail = fmt.Sprintf("inconclusive: no answer to a %s handshake within %s", version, t.timeout)
		c.Hint = "check the server's log; raise --timeout if the server is known to be slow"
	default:
		c.Status, c.Layer = StatusPass, LayerTLS
		switch alert, ok := remoteAlert(err); {
		case ok:
			c.Detail = fmt.Sprintf("the server refused a %s handshake (alert %s)", version, alert)
		case strings.Contains(err.Error(), "server selected unsupported protocol version"):
			c.Detail = fmt.Sprintf("the server refused %s: it answered with a newer version", version)
		case isClosed(err):
			c.Detail = fmt.Sprintf("the server refused %s: it closed the connection", version)
		default:
			c.Detail = fmt.Sprintf("the server refused a %s handshake: %s", version, describe(err, t.addr, t.timeout))
		}
	}
	return c
}
