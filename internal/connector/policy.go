package connector

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/url"
	"strconv"

	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/policy"
)

// CodePolicyViolation is the code of a connector that breaks the egress and
// TLS policy: refused at create and update, and failing closed at call time
// when the policy tightened after it was made.
const CodePolicyViolation = "policy_violation"

// policyRule is one rule a connector breaks.
type policyRule struct {
	field, rule, msg, hint string
}

// policyFaults lists the rules of p that a connector with these settings
// breaks: where it goes (its URL and OAuth2 token URL, before any name is
// resolved; dial time checks each address), and the TLS floor.
func policyFaults(p *policy.Policy, rawURL, identity, minTLS, tokenURL string, systemRoots, allowPlaintext, allowNoClientAuthRequest bool) []policyRule {
	var out []policyRule
	d := p.Document()
	for _, dest := range []struct{ field, raw string }{{"url", rawURL}, {"auth_settings.token_url", tokenURL}} {
		if dest.raw == "" {
			continue
		}
		u, err := url.Parse(dest.raw)
		if err != nil {
			continue // normalize refused it already
		}
		port, _ := strconv.Atoi(u.Port())
		if u.Port() == "" {
			port = map[string]int{"https": 443, "http": 80}[u.Scheme]
		}
		if err := p.CheckDestination(u.Hostname(), port); err != nil {
			e, _ := errs.As(err)
			out = append(out, policyRule{dest.field, "egress", e.Message, e.Hint})
		}
	}
	if d.TLS.RequireMTLS && identity == "" {
		out = append(out, policyRule{"identity", "tls.require_mtls", "the policy requires mutual TLS on every connector, and this one presents no identity",
			"pass --identity NAME (see `trustflow identity list`)"})
	}
	if systemRoots && !d.TLS.AllowSystemRoots {
		out = append(out, policyRule{"system_roots", "tls.allow_system_roots", "the policy does not allow trusting the system's public CA roots",
			"trust the server's CA from the trust store with --ca NAME instead"})
	}
	if allowPlaintext && !d.TLS.AllowPlaintext {
		out = append(out, policyRule{"allow_plaintext", "tls.allow_plaintext", "the policy does not allow plain http:// connectors",
			"use the endpoint's https:// URL"})
	}
	if allowNoClientAuthRequest && !d.TLS.AllowNoClientAuthRequest {
		out = append(out, policyRule{"allow_no_client_auth_request", "tls.allow_no_client_auth_request",
			"the policy does not allow servers that do not ask for a client certificate", "configure the server to require client certificates"})
	}
	if minTLS == "1.2" && p.MinVersion() == tls.VersionTLS13 {
		out = append(out, policyRule{"min_tls", "tls.min_version", "the policy's TLS floor is 1.3", "pass --min-tls 1.3, or leave it out"})
	}
	return out
}

// checkPolicy refuses a spec that breaks the policy in force, naming the
// field and the rule.
func (s *Service) checkPolicy(sp Spec) error {
	if s.cfg.Policy == nil {
		return nil
	}
	p := s.cfg.Policy()
	if p == nil {
		return nil
	}
	faults := policyFaults(p, sp.URL, sp.Identity, sp.MinTLS, sp.AuthSettings.TokenURL, sp.SystemRoots, sp.AllowPlaintext, sp.AllowNoClientAuthRequest)
	if len(faults) == 0 {
		return nil
	}
	f := faults[0]
	return &errs.Error{Kind: errs.Invalid, Code: CodePolicyViolation, Field: f.field, Message: f.msg + " (policy rule " + f.rule + ")", Hint: f.hint, Op: "connector"}
}

// policyCallError is the diagnosis of a call through a connector that breaks
// the policy in force, or nil.
func (c *client) policyCallError(p *policy.Policy) *CallError {
	if p == nil {
		return nil
	}
	faults := policyFaults(p, c.conn.URL, c.conn.Identity, c.conn.MinTLS, c.settings.TokenURL, c.conn.SystemRoots, c.conn.AllowPlaintext, c.conn.AllowNoClientAuthRequest)
	if len(faults) == 0 {
		return nil
	}
	f := faults[0]
	return &CallError{Diagnosis: Diagnosis{Code: CodePolicyViolation,
		Message: fmt.Sprintf("connector %s breaks the policy in force (rule %s): %s", c.conn.Name, f.rule, f.msg),
		Hint:    "update the connector (" + f.hint + "), or have an admin change the policy; see `trustflow policy check`"}}
}

// policyVerdict is a client's policy check against one policy. A policy
// is compiled once per revision and never changed, and a client's settings
// never change either, so the verdict holds for as long as the policy in
// force is the same pointer.
type policyVerdict struct {
	p  *policy.Policy
	ce *CallError
}

// checkPolicy is policyCallError(p), computed once per policy revision.
// Each caller gets its own copy of a diagnosis.
func (c *client) checkPolicy(p *policy.Policy) *CallError {
	if p == nil {
		return nil
	}
	v := c.verdict.Load()
	if v == nil || v.p != p {
		v = &policyVerdict{p: p, ce: c.policyCallError(p)}
		c.verdict.Store(v)
	}
	if v.ce == nil {
		return nil
	}
	ce := *v.ce
	return &ce
}

// CheckPolicy lists the connectors that break p, for `policy check`.
func (s *Service) CheckPolicy(ctx context.Context, p *policy.Policy) ([]policy.Violation, error) {
	rows, err := s.store.ListConnectors(ctx)
	if err != nil {
		return nil, err
	}
	var out []policy.Violation
	for _, r := range rows {
		var pins []string
		var a AuthSettings
		if err := decodeStored(r, &pins, &a); err != nil {
			return nil, err
		}
		for _, f := range policyFaults(p, r.URL, r.Identity, r.MinTLS, a.TokenURL, r.SystemRoots, r.AllowPlaintext, r.AllowNoClientAuthRequest) {
			out = append(out, policy.Violation{Kind: "connector", Name: r.Name, Rule: f.rule, Message: f.msg})
		}
	}
	return out, nil
}

// currentPolicy is the policy in force, or nil without one.
func (c *client) currentPolicy() *policy.Policy {
	if c.policy == nil {
		return nil
	}
	return c.policy()
}
