// Package probe owns trustflow's endpoint probe: the customer's side of the
// shared responsibility for mutual TLS, checked from outside. For one
// https:// URL it sees whether the server refuses a client without a
// certificate and one with a certificate no trusted CA issued (at the TLS
// layer or, after the handshake, at the HTTP layer), accepts a trust store
// identity, refuses TLS 1.0 and 1.1, and presents a chain that verifies
// against trust store CAs (pki.Verify), for the URL's host, and is not near
// expiry. Each check is its own short-lived connection, never pooled and
// never resumed. Every probe is audited; no report or record holds key
// material.
package probe

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/policy"
	"github.com/trustflow/trustflow/internal/truststore"
)

// Check names, in report order.
const (
	CheckAnonymousRefused     = "anonymous_refused"
	CheckUntrustedCertRefused = "untrusted_cert_refused"
	CheckIdentityAccepted     = "identity_accepted"
	CheckTLS10Refused         = "tls10_refused"
	CheckTLS11Refused         = "tls11_refused"
	CheckServerChainValid     = "server_chain_valid"
	CheckHostnameValid        = "hostname_valid"
)

// Check statuses.
const (
	StatusPass = "pass"
	StatusFail = "fail"
	StatusWarn = "warn"
	StatusSkip = "skip"
)

// Layers at which a server refused a client.
const (
	LayerTLS  = "tls"  // an alert, or the connection closed, during or right after the handshake
	LayerHTTP = "http" // the handshake completed and the server answered 400, 401, 403, 495 or 496
)

// Verdicts.
const (
	// VerdictEnforced: the server refused both a client without a
	// certificate and one with an untrusted certificate.
	VerdictEnforced = "enforced"
	// VerdictNotEnforced: it accepted one of them, or the probe could not
	// show that it refuses them.
	VerdictNotEnforced = "not_enforced"
)

// Limits and defaults of a probe.
const (
	// DefaultTimeout bounds each check's connection when a Request gives
	// no timeout.
	DefaultTimeout = 10 * time.Second
	// MaxTimeout is the longest per-check timeout a Request may ask for.
	MaxTimeout = 30 * time.Second
	// ExpiryWarning is how close to expiry a verified chain makes
	// server_chain_valid warn.
	ExpiryWarning = 30 * 24 * time.Hour
	// UntrustedCommonName is the subject CN of the self-signed certificate
	// untrusted_cert_refused presents.
	UntrustedCommonName = "trustflow-probe-untrusted"

	maxCAs = 16
)

// Config configures the prober. Trust and Audit are required.
type Config struct {
	// Trust resolves the CAs and the identity a probe names.
	Trust *truststore.Service
	// Audit records every probe.
	Audit *audit.Log
	// Clock is the time chains are verified at and expiry is measured
	// from. Defaults to the wall clock.
	Clock clock.Clock
	// Policy returns the egress policy in force: a probe of a destination
	// it denies is refused before any connection, and every dial is checked
	// on the resolved address. Nil means no policy (tests of the checks
	// alone); the composition root always sets it.
	Policy func() *policy.Policy
}

// Prober runs probes. It is safe for concurrent use.
type Prober struct {
	trust  *truststore.Service
	audit  *audit.Log
	clock  clock.Clock
	policy func() *policy.Policy
}

// New returns a prober.
func New(cfg Config) (*Prober, error) {
	if cfg.Trust == nil || cfg.Audit == nil {
		return nil, errors.New("probe: Trust and Audit are required")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	return &Prober{trust: cfg.Trust, audit: cfg.Audit, clock: cfg.Clock, policy: cfg.Policy}, nil
}

// Request is one probe.
type Request struct {
	// URL is the https:// endpoint. The checks that send a request GET its
	// path (/ when it has none); its query and fragment are not sent.
	URL string
	// CAs name the trust store CA bundles the server's chain must verify
	// against. Without them the chain and hostname checks are skipped, and
	// the identity is not presented (it is never presented to a server
	// whose chain was not verified).
	CAs []string
	// Identity names the trust store identity identity_accepted presents.
	// Without it that check is skipped.
	Identity string
	// Timeout bounds each check's connection. Defaults to DefaultTimeout;
	// at most MaxTimeout.
	Timeout time.Duration
}

// Report is a probe's outcome.
type Report struct {
	// URL is the probed endpoint: scheme, host and path.
	URL string `json:"url"`
	// Verdict is VerdictEnforced or VerdictNotEnforced.
	Verdict string `json:"verdict"`
	// Checks are the seven checks, in the order of the Check* names.
	Checks    []Check   `json:"checks"`
	CheckedAt time.Time `json:"checked_at"`
}

// Check is one check's outcome.
type Check struct {
	Name string `json:"name"`
	// Status is pass, fail, warn or skip.
	Status string `json:"status"`
	// Detail says what the server did.
	Detail string `json:"detail"`
	// Layer says where the server refused the client: tls or http.
	Layer string `json:"layer,omitempty"`
	// Hint says how to fix a failure or a warning.
	Hint string `json:"hint,omitempty"`
}

// Check returns the named check of the report.
func (r Report) Check(name string) (Check, bool) {
	for _, c := range r.Checks {
		if c.Name == name {
			return c, true
		}
	}
	return Check{}, false
}

// target is a validated request with its trust material resolved.
type target struct {
	url        *url.URL // scheme, host and path only
	addr       string   // host:port to dial
	serverName string
	path       string
	timeout    time.Duration
	cas        []string
	anchors    []*x509.Certificate
	identity   string
	active     truststore.ActiveCertificate
}

// Probe runs every check against req.URL and records the outcome in the
// audit log (action probe.run, target the URL's host). A request that names
// a bad URL, an unknown CA or identity, or a bad timeout is refused with an
// errs.Invalid error naming the field before any connection is made.
func (p *Prober) Probe(ctx context.Context, actor audit.Actor, req Request) (Report, error) {
	t, err := p.resolve(ctx, req)
	if err != nil {
		return Report{}, err
	}
	rep, err := p.run(ctx, t)
	if err != nil {
		return Report{}, err
	}
	if err := ctx.Err(); err != nil {
		return Report{}, fmt.Errorf("probe: %s: %w", t.url.Host, err)
	}
	if err := p.record(ctx, actor, t, rep); err != nil {
		return Report{}, err
	}
	return rep, nil
}

// resolve validates req and loads the trust material it names.
func (p *Prober) resolve(ctx context.Context, req Request) (*target, error) {
	u, err := parseURL(req.URL)
	if err != nil {
		return nil, err
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	if p.policy != nil {
		n, _ := strconv.Atoi(port)
		if err := p.policy().CheckDestination(u.Hostname(), n); err != nil {
			e, _ := errs.As(err)
			return nil, &errs.Error{Kind: errs.Invalid, Code: policy.CodeEgressDenied, Field: "url", Message: e.Message, Hint: e.Hint, Op: "probe", Err: err}
		}
	}
	t := &target{url: u, addr: net.JoinHostPort(u.Hostname(), port), serverName: u.Hostname(), path: u.EscapedPath(), timeout: req.Timeout, identity: req.Identity}
	if t.path == "" {
		t.path = "/"
	}
	switch {
	case t.timeout == 0:
		t.timeout = DefaultTimeout
	case t.timeout < 0 || t.timeout > MaxTimeout:
		return nil, &errs.Error{Kind: errs.Invalid, Code: "invalid_timeout", Field: "timeout", Message: fmt.Sprintf("%s is not between 0 and %s", req.Timeout, MaxTimeout), Hint: "give a per-check timeout such as 10s (the default)", Op: "probe"}
	}
	if len(req.CAs) > maxCAs {
		return nil, &errs.Error{Kind: errs.Invalid, Code: "too_many", Field: "cas", Message: fmt.Sprintf("%d CAs named; at most %d", len(req.CAs), maxCAs), Hint: "name only the CAs that issue this server's certificate", Op: "probe"}
	}
	seen := map[string]bool{}
	for _, name := range req.CAs {
		if strings.TrimSpace(name) == "" {
			return nil, &errs.Error{Kind: errs.Invalid, Code: "invalid_name", Field: "cas", Message: "a CA name is empty", Hint: "name CAs as `trustflow ca list` shows them", Op: "probe"}
		}
		if !seen[name] {
			seen[name] = true
			t.cas = append(t.cas, name)
		}
	}
	if len(t.cas) > 0 {
		t.anchors, err = p.trust.Anchors(ctx, t.cas...)
		if err != nil {
			if e, ok := errs.As(err); ok && e.Kind == errs.NotFound {
				return nil, &errs.Error{Kind: errs.Invalid, Code: "not_found", Field: "cas", Message: e.Message, Hint: "list the CAs with `trustflow ca list`, or add the one that issues the server's certificate with `trustflow ca add`", Op: "probe", Err: err}
			}
			return nil, fmt.Errorf("probe: load CAs: %w", err)
		}
	}
	if req.Identity != "" {
		t.active, err = p.trust.Active(ctx, req.Identity)
		if err != nil {
			e, _ := errs.As(err)
			switch errs.KindOf(err) {
			case errs.NotFound:
				return nil, &errs.Error{Kind: errs.Invalid, Code: "not_found", Field: "identity", Message: fmt.Sprintf("identity %q does not exist", req.Identity), Hint: "list the identities with `trustflow identity list`", Op: "probe", Err: err}
			case errs.Conflict:
				return nil, &errs.Error{Kind: errs.Invalid, Code: e.Code, Field: "identity", Message: e.Message, Hint: e.Hint, Op: "probe", Err: err}
			}
			return nil, fmt.Errorf("probe: load identity %q: %w", req.Identity, err)
		}
	}
	return t, nil
}

// parseURL accepts an absolute https:// URL without credentials and
// returns it reduced to scheme, host and path.
func parseURL(raw string) (*url.URL, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return nil, &errs.Error{Kind: errs.Invalid, Code: "required", Field: "url", Message: "no URL was given", Hint: "give the endpoint to probe, e.g. https://api.example.org", Op: "probe"}
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error repeats the whole URL, which may hold a password.
		var ue *url.Error
		msg := err.Error()
		if errors.As(err, &ue) {
			msg = ue.Err.Error()
		}
		return nil, &errs.Error{Kind: errs.Invalid, Code: "invalid_url", Field: "url", Message: "not a valid URL: " + msg, Hint: "give an absolute URL such as https://api.example.org:8443", Op: "probe"}
	}
	if u.User != nil {
		return nil, &errs.Error{Kind: errs.Invalid, Code: "credentials_in_url", Field: "url", Message: "the URL carries credentials (user:password@)", Hint: "remove them: the probe sends no credentials besides the identity's certificate", Op: "probe"}
	}
	if u.Scheme != "https" {
		return nil, &errs.Error{Kind: errs.Invalid, Code: "not_https", Field: "url", Message: fmt.Sprintf("%q is not an https:// URL", u.Redacted()), Hint: "the probe checks the endpoint's TLS: give its https:// URL", Op: "probe"}
	}
	if u.Hostname() == "" {
		return nil, &errs.Error{Kind: errs.Invalid, Code: "invalid_url", Field: "url", Message: fmt.Sprintf("%q has no host", u.Redacted()), Hint: "give an absolute URL such as https://api.example.org:8443", Op: "probe"}
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, &errs.Error{Kind: errs.Invalid, Code: "invalid_url", Field: "url", Message: fmt.Sprintf("port %q is not between 1 and 65535", port), Hint: "give the endpoint's TCP port, or none for 443", Op: "probe"}
		}
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}, nil
}

// record appends the probe's audit record: the verdict and every check's
// status, never a detail the server chose.
func (p *Prober) record(ctx context.Context, actor audit.Actor, t *target, rep Report) error {
	statuses := map[string]any{}
	for _, c := range rep.Checks {
		statuses[c.Name] = c.Status
	}
	details := map[string]any{"url": rep.URL, "verdict": rep.Verdict, "checks": statuses}
	if len(t.cas) > 0 {
		details["cas"] = t.cas
	}
	if t.identity != "" {
		details["identity"] = t.identity
		details["identity_version"] = t.active.Info.Version
	}
	outcome := audit.OutcomeSuccess
	if rep.Verdict != VerdictEnforced {
		outcome = audit.OutcomeFailure
	}
	if err := p.audit.Record(ctx, audit.Entry{Actor: actor, Action: "probe.run", Target: t.url.Host, Outcome: outcome, Details: details}); err != nil {
		return fmt.Errorf("probe: record probe of %s: %w", t.url.Host, err)
	}
	return nil
}
