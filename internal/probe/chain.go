package probe

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/trustflow/trustflow/internal/errs"

	"github.com/trustflow/trustflow/internal/pki"
)

// chainCheck judges server_chain_valid: the chain the server presented
// must verify against the request's CAs (pki.Verify, as connectors verify
// it) at the prober's time, and warns when a certificate of it expires
// within ExpiryWarning.
func chainCheck(t *target, peer []*x509.Certificate, now time.Time) Check {
	c := Check{Name: CheckServerChainValid, Status: StatusFail}
	if len(t.anchors) == 0 {
		c.Status = StatusSkip
		c.Detail = "not checked: pass --ca NAME to verify the server's chain against a CA in the trust store"
		if len(peer) > 0 {
			c.Detail += fmt.Sprintf(" (certificate %s expires %s)", certName(peer[0]), expiryText(peer[0].NotAfter, now))
		}
		return c
	}
	if len(peer) == 0 {
		c.Detail = "not checked: no handshake got as far as the server's certificate"
		c.Hint = "see the other checks for why the server could not be reached"
		return c
	}
	res, err := pki.Verify(peer[0], pki.VerifyOptions{Roots: t.anchors, Intermediates: peer[1:], Time: now, Purpose: pki.PurposeServer})
	if err != nil {
		c.Detail, c.Hint = pkiDiagnosis(err)
		return c
	}
	soonest := res.Chain[0]
	for _, cert := range res.Chain[1:] {
		if cert.NotAfter.Before(soonest.NotAfter) {
			soonest = cert
		}
	}
	anchor := res.Chain[len(res.Chain)-1]
	if soonest.NotAfter.Sub(now) < ExpiryWarning {
		c.Status = StatusWarn
		c.Detail = fmt.Sprintf("the chain verifies to trusted CA %s, but certificate %s expires %s", certName(anchor), certName(soonest), expiryText(soonest.NotAfter, now))
		c.Hint = "renew it now: a connector refuses the server once it expires"
		return c
	}
	c.Status = StatusPass
	c.Detail = fmt.Sprintf("the chain verifies to trusted CA %s; certificate %s expires %s", certName(anchor), certName(peer[0]), expiryText(peer[0].NotAfter, now))
	if soonest != res.Chain[0] {
		c.Detail += fmt.Sprintf(", and certificate %s, the first of the chain to expire, %s", certName(soonest), expiryText(soonest.NotAfter, now))
	}
	return c
}

// hostnameCheck judges hostname_valid: the server's certificate must be
// valid for the URL's host, checked by pki.Verify on the chain. When the
// chain fails for another reason (server_chain_valid says which), the name
// is matched on the certificate alone, as crypto/x509 matches it for
// pki.Verify.
func hostnameCheck(t *target, peer []*x509.Certificate, now time.Time) Check {
	c := Check{Name: CheckHostnameValid, Status: StatusFail}
	if len(t.anchors) == 0 {
		c.Status = StatusSkip
		c.Detail = "not checked: pass --ca NAME to check the server's certificate for this host on a verified chain"
		return c
	}
	if len(peer) == 0 {
		c.Detail = "not checked: no handshake got as far as the server's certificate"
		c.Hint = "see the other checks for why the server could not be reached"
		return c
	}
	leaf := peer[0]
	_, err := pki.Verify(leaf, pki.VerifyOptions{Roots: t.anchors, Intermediates: peer[1:], DNSName: t.serverName, Time: now, Purpose: pki.PurposeServer})
	var pe *errs.Error
	switch {
	case err == nil:
		c.Status = StatusPass
		c.Detail = fmt.Sprintf("certificate %s is valid for %q", certName(leaf), t.serverName)
	case errors.As(err, &pe) && pe.Code == pki.CodeHostnameMismatch:
		c.Detail, c.Hint = pkiDiagnosis(err)
	default:
		if herr := leaf.VerifyHostname(t.serverName); herr != nil {
			c.Detail = fmt.Sprintf("certificate %s %s", certName(leaf), strings.TrimPrefix(herr.Error(), "x509: certificate "))
			c.Hint = "connect using a name the certificate lists, or reissue it with subjectAltName " + sanFor(t.serverName)
			return c
		}
		c.Status = StatusPass
		c.Detail = fmt.Sprintf("certificate %s is valid for %q (its chain does not verify: see %s)", certName(leaf), t.serverName, CheckServerChainValid)
	}
	return c
}

// pkiDiagnosis is a pki failure's message and hint.
func pkiDiagnosis(err error) (string, string) {
	var pe *errs.Error
	if errors.As(err, &pe) {
		return pe.Message, pe.Hint
	}
	return err.Error(), "check the chain with `trustflow ca verify`"
}

// certName names a certificate for details: its subject, or its first
// name when the subject is empty.
func certName(c *x509.Certificate) string {
	if s := c.Subject.String(); s != "" {
		return "'" + s + "'"
	}
	if len(c.DNSNames) > 0 {
		return "'" + c.DNSNames[0] + "'"
	}
	if len(c.IPAddresses) > 0 {
		return "'" + c.IPAddresses[0].String() + "'"
	}
	return "with serial " + c.SerialNumber.Text(16)
}

// expiryText says when notAfter is, relative to now.
func expiryText(notAfter, now time.Time) string {
	at := notAfter.UTC().Format(time.RFC3339)
	left := notAfter.Sub(now)
	switch days := int(left / (24 * time.Hour)); {
	case left <= 0:
		return fmt.Sprintf("at %s: it has expired", at)
	case days == 0:
		return fmt.Sprintf("at %s, in less than a day", at)
	case days == 1:
		return fmt.Sprintf("at %s, in 1 day", at)
	default:
		return fmt.Sprintf("at %s, in %d days", at, days)
	}
}

func sanFor(host string) string {
	if net.ParseIP(host) != nil {
		return "IP:" + host
	}
	return "DNS:" + host
}
