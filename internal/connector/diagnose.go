package connector

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/policy"

	"github.com/trustflow/trustflow/internal/pki"
)

// Diagnosis says what went wrong with an outbound call and what to do.
type Diagnosis struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"`
}

// CallError is a failed call: its diagnosis, whether retrying may help,
// and the handshake evidence gathered before it failed.
type CallError struct {
	Diagnosis
	Retryable bool
	Evidence  *Evidence
	Err       error
}

func (e *CallError) Error() string { return "connector: " + e.Message }

// Unwrap returns the cause.
func (e *CallError) Unwrap() error { return e.Err }

// policyError is a refusal by trustflow's own checks during the handshake;
// Err is its cause, when it has one (an identity key that cannot be
// opened).
type policyError struct {
	Diagnosis
	Err error
}

func (e *policyError) Error() string { return e.Message }

// Unwrap returns the cause.
func (e *policyError) Unwrap() error { return e.Err }

// alertNames maps the text Go gives each TLS alert (crypto/tls alertText)
// to its RFC 8446 name.
var alertNames = map[string]string{
	"tls: close notify":                    "close_notify",
	"tls: unexpected message":              "unexpected_message",
	"tls: bad record MAC":                  "bad_record_mac",
	"tls: decryption failed":               "decryption_failed",
	"tls: record overflow":                 "record_overflow",
	"tls: decompression failure":           "decompression_failure",
	"tls: handshake failure":               "handshake_failure",
	"tls: bad certificate":                 "bad_certificate",
	"tls: unsupported certificate":         "unsupported_certificate",
	"tls: revoked certificate":             "certificate_revoked",
	"tls: expired certificate":             "certificate_expired",
	"tls: unknown certificate":             "certificate_unknown",
	"tls: illegal parameter":               "illegal_parameter",
	"tls: unknown certificate authority":   "unknown_ca",
	"tls: access denied":                   "access_denied",
	"tls: error decoding message":          "decode_error",
	"tls: error decrypting message":        "decrypt_error",
	"tls: export restriction":              "export_restriction",
	"tls: protocol version not supported":  "protocol_version",
	"tls: insufficient security level":     "insufficient_security",
	"tls: internal error":                  "internal_error",
	"tls: inappropriate fallback":          "inappropriate_fallback",
	"tls: user canceled":                   "user_canceled",
	"tls: no renegotiation":                "no_renegotiation",
	"tls: missing extension":               "missing_extension",
	"tls: unsupported extension":           "unsupported_extension",
	"tls: certificate unobtainable":        "certificate_unobtainable",
	"tls: unrecognized name":               "unrecognized_name",
	"tls: bad certificate status response": "bad_certificate_status_response",
	"tls: bad certificate hash value":      "bad_certificate_hash_value",
	"tls: unknown PSK identity":            "unknown_psk_identity",
	"tls: certificate required":            "certificate_required",
	"tls: no application protocol":         "no_application_protocol",
	"tls: encrypted client hello required": "ech_required",
}

// remoteAlert returns the RFC name of a TLS alert the server sent, if err
// is one.
func remoteAlert(err error) (string, bool) {
	var op *net.OpError
	for e := err; e != nil; e = errors.Unwrap(e) {
		if errors.As(e, &op) && op.Op == "remote error" && op.Err != nil {
			if name, ok := alertNames[op.Err.Error()]; ok {
				return name, true
			}
			return strings.TrimPrefix(op.Err.Error(), "tls: "), true
		}
	}
	return "", false
}

// diagnose turns any error of a call through connector c into a Diagnosis.
func (c *client) diagnose(ctx context.Context, err error, ev *Evidence) *CallError {
	ce := &CallError{Err: err, Evidence: ev}
	var already *CallError
	var pol *policyError
	var certErr *tls.CertificateVerificationError
	var dnsErr *net.DNSError
	var netErr net.Error
	var urlErr *url.Error
	name := c.conn.Name
	switch {
	case errors.As(err, &already):
		return already
	case errors.As(err, &pol):
		ce.Diagnosis = pol.Diagnosis
	case errs.CodeOf(err) == policy.CodeEgressDenied:
		// Refused before connect: nothing was sent.
		e, _ := errs.As(err)
		ce.Diagnosis = Diagnosis{Code: policy.CodeEgressDenied, Message: fmt.Sprintf("connector %s: %s", name, e.Message), Hint: e.Hint}
	case errors.As(err, &certErr):
		ce.Diagnosis = c.diagnoseCertificate(ctx, certErr)
	// Before the alerts: a server whose versions are all below ours answers
	// with the protocol_version alert.
	case strings.Contains(err.Error(), "tls: server selected unsupported protocol version"),
		strings.Contains(err.Error(), "tls: protocol version not supported"):
		ce.Diagnosis = Diagnosis{Code: "tls_version_too_old", Message: fmt.Sprintf("the server of connector %s offers only a TLS version below %s", name, c.minTLSName()),
			Hint: c.versionHint()}
	case isAlert(err):
		alert, _ := remoteAlert(err)
		ce.Diagnosis = c.diagnoseAlert(alert)
	case errors.As(err, &dnsErr):
		ce.Diagnosis = Diagnosis{Code: "dns", Message: fmt.Sprintf("cannot resolve %q for connector %s: %s", dnsErr.Name, name, dnsErr.Err),
			Hint: "check the connector's URL and this host's DNS"}
		ce.Retryable = dnsErr.IsTemporary || dnsErr.IsTimeout
	case errors.Is(err, syscall.ECONNREFUSED):
		ce.Diagnosis = Diagnosis{Code: "connection_refused", Message: fmt.Sprintf("%s refused the connection (connector %s)", c.base.Host, name),
			Hint: "check that the server is running and listening on that port, and that no firewall rejects it"}
		ce.Retryable = true
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		ce.Diagnosis = Diagnosis{Code: "timeout", Message: fmt.Sprintf("connector %s: no answer from %s within %s", name, c.base.Host, c.timeout),
			Hint: "the server or the network is slow or dropping packets; raise --timeout if the server is known to be slow"}
		ce.Retryable = true
	case errors.Is(err, context.Canceled):
		ce.Diagnosis = Diagnosis{Code: "cancelled", Message: "the call was cancelled"}
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), strings.Contains(err.Error(), "EOF"):
		ce.Diagnosis = Diagnosis{Code: "connection_reset", Message: fmt.Sprintf("%s closed the connection (connector %s)", c.base.Host, name),
			Hint: "if this happens during the handshake, the server may be refusing our certificate without an alert; check the server's log"}
		ce.Retryable = true
	default:
		msg := err.Error()
		if errors.As(err, &urlErr) {
			msg = urlErr.Err.Error()
		}
		ce.Diagnosis = Diagnosis{Code: "call_failed", Message: fmt.Sprintf("connector %s: %s", name, msg)}
		ce.Retryable = errors.As(err, &netErr)
	}
	return ce
}

func isAlert(err error) bool {
	_, ok := remoteAlert(err)
	return ok
}

// minTLSName is the lowest version this connector offers: its own
// --min-tls, raised by the policy's floor.
func (c *client) minTLSName() string {
	if c.minVersion() == tls.VersionTLS13 {
		return "TLS 1.3"
	}
	return "TLS 1.2"
}

func (c *client) minVersion() uint16 {
	v := c.tlsBase.MinVersion
	if p := c.currentPolicy(); p != nil && p.MinVersion() > v {
		v = p.MinVersion()
	}
	return v
}

// versionHint says how to fix a server whose versions are all below ours:
// the connector's --min-tls 1.3, or the policy's floor, may be what is too
// high, not the server too old.
func (c *client) versionHint() string {
	if c.minVersion() != tls.VersionTLS13 {
		return "upgrade the server to TLS 1.2 or later; trustflow never uses TLS 1.0 or 1.1"
	}
	if c.conn.MinTLS == "1.3" {
		return "the server speaks only TLS 1.2: enable TLS 1.3 on it, or lower the connector's floor with `trustflow connector update " + c.conn.Name + " --min-tls 1.2`"
	}
	return "the server speaks only TLS 1.2 and the policy's floor is TLS 1.3 (tls.min_version): enable TLS 1.3 on the server, or have an admin lower the floor"
}

// withBudget makes a timeout's diagnosis name the limit that ran out: the
// caller's (a step's timeout) when it was shorter than the connector's.
func (c *client) withBudget(ctx context.Context, start time.Time, ce *CallError) *CallError {
	if ce == nil || ce.Code != "timeout" {
		return ce
	}
	b := c.budget(ctx, start)
	ce.Message = fmt.Sprintf("connector %s: no answer from %s within %s", c.conn.Name, c.base.Host, b)
	if b < c.timeout {
		ce.Hint = fmt.Sprintf("the caller's timeout (%s, e.g. the step's timeout) is shorter than the connector's (%s): raise the step's timeout if the server is known to be slow", b, c.timeout)
	}
	return ce
}

// budget is how long a call may take: the connector's timeout, or less when
// the caller's deadline (a step's timeout) comes first.
func (c *client) budget(ctx context.Context, start time.Time) time.Duration {
	b := c.timeout
	if dl, ok := ctx.Deadline(); ok && dl.Sub(start) < b {
		b = dl.Sub(start).Round(time.Millisecond)
	}
	return b
}

// diagnoseCertificate re-verifies the server's chain with pki to say
// precisely why Go refused it.
func (c *client) diagnoseCertificate(ctx context.Context, e *tls.CertificateVerificationError) Diagnosis {
	if len(e.UnverifiedCertificates) == 0 {
		return Diagnosis{Code: "server_certificate_invalid", Message: fmt.Sprintf("connector %s: the server's certificate was refused: %v", c.conn.Name, e.Err)}
	}
	roots, err := c.roots(ctx)
	if err != nil {
		return Diagnosis{Code: "trust_store", Message: fmt.Sprintf("connector %s: cannot load its CAs: %v", c.conn.Name, err), Hint: "check the connector's --ca names with `trustflow ca list`"}
	}
	_, verr := pki.Verify(e.UnverifiedCertificates[0], pki.VerifyOptions{Roots: roots, Intermediates: e.UnverifiedCertificates[1:], DNSName: c.serverName, Time: c.clock.Now(), Purpose: pki.PurposeServer})
	return c.certDiagnosis(verr, e.UnverifiedCertificates[0], e.Err)
}

// certDiagnosis phrases a pki verification failure for this connector.
func (c *client) certDiagnosis(verr error, leaf *x509.Certificate, fallback error) Diagnosis {
	var pe *errs.Error
	if verr == nil || !errors.As(verr, &pe) {
		return Diagnosis{Code: "server_certificate_invalid", Message: fmt.Sprintf("connector %s: the server's certificate was refused: %v", c.conn.Name, fallback)}
	}
	d := Diagnosis{Code: pe.Code, Message: "connector " + c.conn.Name + ": " + pe.Message, Hint: pe.Hint}
	switch pe.Code {
	case pki.CodeUnknownAuthority:
		d.Message = fmt.Sprintf("server certificate %q was issued by %q, which none of connector %s's CAs (%s) signed",
			leaf.Subject.String(), leaf.Issuer.String(), c.conn.Name, c.casLabel())
		d.Hint = "add the CA that issued it with `trustflow ca add` and `trustflow connector update " + c.conn.Name + " --ca NAME`, or check that the URL points at the right server"
	case pki.CodeHostnameMismatch:
		d.Hint = "use the name the certificate was issued for in the URL, or set --server-name; or have the server's certificate reissued with this name"
	case pki.CodeExpired:
		// pki's hint is for certificates one imports; this one is the server's.
		d.Hint = "the server's operator must renew its certificate; nothing in trustflow needs changing (it never accepts an expired server certificate)"
	case pki.CodeNotYetValid:
		d.Hint = "check this host's clock and the server's: the certificate's validity has not begun"
	}
	return d
}

func (c *client) casLabel() string {
	l := strings.Join(c.conn.CAs, ", ")
	if c.conn.SystemRoots {
		if l != "" {
			l += ", "
		}
		l += "system roots"
	}
	if l == "" {
		return "none"
	}
	return l
}

// diagnoseAlert explains an alert the server sent during or right after
// the handshake: mostly, the server refusing our certificate.
func (c *client) diagnoseAlert(alert string) Diagnosis {
	who := "no client certificate"
	if c.conn.Identity != "" {
		who = "identity " + c.conn.Identity
	}
	d := Diagnosis{Code: "server_rejected_" + alert}
	switch alert {
	case "certificate_required":
		d.Message = fmt.Sprintf("the server requires a client certificate and connector %s presented %s", c.conn.Name, who)
		d.Hint = "set an identity on the connector (`trustflow connector update " + c.conn.Name + " --identity NAME`), and check that the identity has an active version"
	case "bad_certificate", "certificate_unknown", "unsupported_certificate":
		d.Message = fmt.Sprintf("the server rejected the client certificate of %s (%s)", who, alert)
		d.Hint = "the server does not accept this certificate: check its key usage (clientAuth), key type and that the server trusts its issuer; the server's log says which"
	case "unknown_ca":
		d.Message = fmt.Sprintf("the server does not trust the CA that issued the client certificate of %s (unknown_ca)", who)
		d.Hint = "add the identity's issuing CA to the server's trusted client CAs, or rotate to an identity issued by a CA it trusts (see acceptable_cas in the evidence)"
	case "certificate_expired":
		d.Message = fmt.Sprintf("the server says the client certificate of %s has expired (certificate_expired)", who)
		d.Hint = "rotate the identity: `trustflow identity rotate " + c.conn.Identity + "`"
	case "certificate_revoked":
		d.Message = fmt.Sprintf("the server says the client certificate of %s is revoked (certificate_revoked)", who)
		d.Hint = "rotate the identity to a new certificate: `trustflow identity rotate " + c.conn.Identity + "`"
	case "access_denied":
		d.Message = fmt.Sprintf("the server accepted the certificate of %s but denied access (access_denied)", who)
		d.Hint = "ask the server's owner to authorise this certificate's subject"
	case "handshake_failure":
		if c.conn.Identity == "" {
			d.Message = fmt.Sprintf("the server ended the handshake (handshake_failure) and connector %s presented no client certificate: the server most likely requires one", c.conn.Name)
			d.Hint = "set an identity on the connector (`trustflow connector update " + c.conn.Name + " --identity NAME`); if it already should not need one, check the server's TLS versions and cipher suites"
		} else {
			d.Message = fmt.Sprintf("the server refused the handshake (handshake_failure): no TLS version, cipher suite or key type in common with connector %s, or it refused the client certificate of %s", c.conn.Name, who)
			d.Hint = "check the server's TLS settings (trustflow offers TLS " + c.conn.MinTLS + "+ with modern suites) and its log for why it refused the certificate"
		}
	case "protocol_version", "insufficient_security":
		d.Message = fmt.Sprintf("the server refused the handshake (%s): no TLS version, cipher suite or key type in common with connector %s", alert, c.conn.Name)
		d.Hint = "check the server's TLS settings: trustflow offers TLS " + c.conn.MinTLS + "+ with modern cipher suites"
	default:
		d.Message = fmt.Sprintf("the server ended the handshake with the alert %s (connector %s)", alert, c.conn.Name)
		d.Hint = "check the server's log for why it refused the connection"
	}
	return d
}
