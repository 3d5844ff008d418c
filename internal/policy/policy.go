// Package policy is trustflow's organisation-wide egress and TLS policy:
// which destinations outbound connections may reach (checked at dial time on
// the resolved address, so DNS rebinding does not pass), the TLS floor every
// connector keeps, and the rules identities must meet. It parses and checks
// the `kind: Policy` document; package store keeps it and the API and CLI
// change it.
package policy

import (
	"crypto/tls"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/trustflow/trustflow/internal/errs"
)

// APIVersion and Kind head a policy document.
const (
	APIVersion = "trustflow/v1"
	Kind       = "Policy"
)

// Egress defaults: what happens to a destination no rule matches.
const (
	// DefaultAllow reaches every destination but the special ranges
	// (loopback, link-local, unspecified, multicast), which only an IP or
	// CIDR rule opens.
	DefaultAllow = "allow"
	// DefaultDeny reaches only what a rule allows.
	DefaultDeny = "deny"
)

// Document is the policy as written and as `policy show -o json` prints it.
type Document struct {
	APIVersion string     `json:"apiVersion" yaml:"apiVersion"`
	Kind       string     `json:"kind" yaml:"kind"`
	Egress     Egress     `json:"egress" yaml:"egress"`
	TLS        TLS        `json:"tls" yaml:"tls"`
	Identities Identities `json:"identities" yaml:"identities"`
}

// Egress says where outbound connections may go.
type Egress struct {
	// Default is allow or deny: the fate of a destination no rule matches.
	Default string `json:"default" yaml:"default"`
	// Allow lists the destinations allowed: under allow, the special
	// addresses they open; under deny, every destination reachable.
	Allow []Rule `json:"allow" yaml:"allow"`
}

// Rule allows a host (exact name, *.suffix, IP or CIDR) on some ports ("443",
// "8000-8999", "443,8443" or "*").
type Rule struct {
	Host  string `json:"host" yaml:"host"`
	Ports string `json:"ports" yaml:"ports"`
}

// String formats the rule as host:ports, as errors name it.
func (r Rule) String() string { return r.Host + " ports " + r.Ports }

// TLS is the TLS floor of every connector.
type TLS struct {
	// MinVersion is "1.2" or "1.3".
	MinVersion string `json:"min_version" yaml:"min_version"`
	// CipherSuites, when set, limits the TLS 1.2 suites (Go names, e.g.
	// TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256); TLS 1.3 suites are fixed.
	CipherSuites []string `json:"cipher_suites,omitempty" yaml:"cipher_suites"`
	// Curves, when set, limits the key-exchange groups (X25519, P-256,
	// P-384, P-521, X25519MLKEM768).
	Curves []string `json:"curves,omitempty" yaml:"curves"`
	// RequireMTLS refuses connectors without an identity.
	RequireMTLS bool `json:"require_mtls" yaml:"require_mtls"`
	// AllowSystemRoots, AllowPlaintext and AllowNoClientAuthRequest say
	// whether a connector may use those settings at all.
	AllowSystemRoots         bool `json:"allow_system_roots" yaml:"allow_system_roots"`
	AllowPlaintext           bool `json:"allow_plaintext" yaml:"allow_plaintext"`
	AllowNoClientAuthRequest bool `json:"allow_no_client_auth_request" yaml:"allow_no_client_auth_request"`
}

// Identities are the rules an identity's key and certificate must meet.
type Identities struct {
	MinRSABits int `json:"min_rsa_bits" yaml:"min_rsa_bits"`
	MinECBits  int `json:"min_ec_bits" yaml:"min_ec_bits"`
	// MaxLifetime bounds a certificate's validity ("398d", "8760h"); empty
	// for no bound.
	MaxLifetime string `json:"max_lifetime,omitempty" yaml:"max_lifetime"`
	// RequireClientAuthEKU refuses certificates without an extended key
	// usage that lists clientAuth. A certificate whose EKU excludes
	// clientAuth is always refused.
	RequireClientAuthEKU bool `json:"require_client_auth_eku" yaml:"require_client_auth_eku"`
}

// Default is the policy of a fresh installation: today's behaviour, but no
// connection to loopback, link-local, unspecified or multicast addresses.
func Default() Document {
	return Document{
		APIVersion: APIVersion, Kind: Kind,
		Egress:     Egress{Default: DefaultAllow, Allow: []Rule{}},
		TLS:        TLS{MinVersion: "1.2", AllowSystemRoots: true, AllowPlaintext: true, AllowNoClientAuthRequest: true},
		Identities: Identities{MinRSABits: 2048, MinECBits: 256},
	}
}

// Policy is a checked document, ready to judge connections.
type Policy struct {
	doc         Document
	rules       []rule
	minVersion  uint16
	suites      []uint16
	curves      []tls.CurveID
	maxLifetime time.Duration
}

// Document returns the policy's document.
func (p *Policy) Document() Document {
	d := p.doc
	d.Egress.Allow = slices.Clone(d.Egress.Allow)
	d.TLS.CipherSuites = slices.Clone(d.TLS.CipherSuites)
	d.TLS.Curves = slices.Clone(d.TLS.Curves)
	return d
}

// MinVersion is the lowest TLS version a connector may use.
func (p *Policy) MinVersion() uint16 { return p.minVersion }

// CipherSuites are the TLS 1.2 suites allowed, nil for Go's defaults.
func (p *Policy) CipherSuites() []uint16 { return slices.Clone(p.suites) }

// Curves are the key-exchange groups allowed, nil for Go's defaults.
func (p *Policy) Curves() []tls.CurveID { return slices.Clone(p.curves) }

// MaxLifetime bounds an identity certificate's validity; 0 for no bound.
func (p *Policy) MaxLifetime() time.Duration { return p.maxLifetime }

// rule is a compiled Rule.
type rule struct {
	src    Rule
	name   string       // exact host name, lower case
	suffix string       // ".agency.example" for *.agency.example
	prefix netip.Prefix // an IP (as /32 or /128) or a CIDR
	ports  []portRange
}

type portRange struct{ lo, hi int }

// Compile checks a document and returns the policy; the error is an
// errs.Invalid naming the field (egress.allow[1].ports) and the fix.
func Compile(d Document) (*Policy, error) {
	if d.APIVersion == "" {
		d.APIVersion = APIVersion
	}
	if d.Kind == "" {
		d.Kind = Kind
	}
	if d.APIVersion != APIVersion {
		return nil, invalid("apiVersion", fmt.Sprintf("%q is not a policy API version", d.APIVersion), "write apiVersion: "+APIVersion)
	}
	if d.Kind != Kind {
		return nil, invalid("kind", fmt.Sprintf("%q is not %s", d.Kind, Kind), "write kind: "+Kind)
	}
	p := &Policy{doc: d}
	switch d.Egress.Default {
	case "":
		p.doc.Egress.Default = DefaultAllow
	case DefaultAllow, DefaultDeny:
	default:
		return nil, invalid("egress.default", fmt.Sprintf("%q is neither allow nor deny", d.Egress.Default), "write allow (reach all but the special ranges) or deny (reach only what a rule allows)")
	}
	if len(d.Egress.Allow) > MaxRules {
		return nil, invalid("egress.allow", fmt.Sprintf("%d rules; the limit max_rules is %d", len(d.Egress.Allow), MaxRules), "allow CIDRs or *.suffix names rather than single hosts")
	}
	if p.doc.Egress.Allow == nil {
		p.doc.Egress.Allow = []Rule{}
	}
	for i, r := range d.Egress.Allow {
		cr, err := compileRule(fmt.Sprintf("egress.allow[%d]", i), r)
		if err != nil {
			return nil, err
		}
		p.doc.Egress.Allow[i] = cr.src
		p.rules = append(p.rules, cr)
	}
	switch d.TLS.MinVersion {
	case "", "1.2":
		p.minVersion, p.doc.TLS.MinVersion = tls.VersionTLS12, "1.2"
	case "1.3":
		p.minVersion = tls.VersionTLS13
	default:
		return nil, invalid("tls.min_version", fmt.Sprintf("%q is not a TLS version trustflow allows", d.TLS.MinVersion), `write "1.2" or "1.3"; older versions are never used`)
	}
	for i, name := range d.TLS.CipherSuites {
		id, ok := suiteByName(name)
		if !ok {
			return nil, invalid(fmt.Sprintf("tls.cipher_suites[%d]", i), fmt.Sprintf("%q is not an allowed TLS 1.2 cipher suite", name),
				"use AEAD suites with forward secrecy: "+strings.Join(AllowedSuiteNames(), ", "))
		}
		p.suites = append(p.suites, id)
	}
	for i, name := range d.TLS.Curves {
		id, ok := curveByName[name]
		if !ok {
			return nil, invalid(fmt.Sprintf("tls.curves[%d]", i), fmt.Sprintf("%q is not a key-exchange group trustflow knows", name), "use X25519, P-256, P-384, P-521 or X25519MLKEM768")
		}
		p.curves = append(p.curves, id)
	}
	if d.Identities.MinRSABits == 0 {
		p.doc.Identities.MinRSABits = 2048
	}
	if b := p.doc.Identities.MinRSABits; b < 2048 || b > 16384 {
		return nil, invalid("identities.min_rsa_bits", fmt.Sprintf("%d is outside 2048-16384", b), "RSA keys under 2048 bits are never accepted; write 2048, 3072 or 4096")
	}
	if d.Identities.MinECBits == 0 {
		p.doc.Identities.MinECBits = 256
	}
	if b := p.doc.Identities.MinECBits; b != 256 && b != 384 && b != 521 {
		return nil, invalid("identities.min_ec_bits", fmt.Sprintf("%d is not an EC curve size", b), "write 256 (P-256), 384 (P-384) or 521 (P-521)")
	}
	if s := d.Identities.MaxLifetime; s != "" {
		dur, err := ParseLifetime(s)
		if err != nil || dur < 24*time.Hour {
			return nil, invalid("identities.max_lifetime", fmt.Sprintf("%q is not a lifetime of at least one day", s), `write days or a Go duration, e.g. "398d" or "2160h"`)
		}
		p.maxLifetime = dur
	}
	return p, nil
}

// MaxRules bounds the egress rules of a policy.
const MaxRules = 1000

func invalid(field, msg, hint string) *errs.Error {
	return &errs.Error{Kind: errs.Invalid, Code: "invalid_policy", Field: field, Message: msg, Hint: hint, Op: "policy"}
}

func compileRule(field string, r Rule) (rule, error) {
	host := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(r.Host), "."))
	out := rule{src: Rule{Host: host, Ports: strings.TrimSpace(r.Ports)}}
	switch {
	case host == "":
		return rule{}, invalid(field+".host", "is empty", "write a host name, *.suffix, an IP address or a CIDR such as 10.20.0.0/16")
	case strings.Contains(host, "/"):
		pf, err := netip.ParsePrefix(host)
		if err != nil {
			return rule{}, invalid(field+".host", fmt.Sprintf("%q is not a CIDR", r.Host), "write it as 10.20.0.0/16 or fd00::/8")
		}
		if pf.Addr().Is4In6() {
			pf = netip.PrefixFrom(pf.Addr().Unmap(), pf.Bits()-96)
		}
		if pf != pf.Masked() {
			return rule{}, invalid(field+".host", fmt.Sprintf("%q has bits set past its prefix length", r.Host), "write the network address, e.g. "+pf.Masked().String())
		}
		out.prefix = pf
	case strings.HasPrefix(host, "*."):
		if err := CheckHostName(host[2:]); err != nil {
			return rule{}, invalid(field+".host", fmt.Sprintf("%q: %v", r.Host, err), "write *. and a DNS name, e.g. *.agency.example")
		}
		out.suffix = host[1:]
	default:
		if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
			a = a.Unmap()
			out.prefix = netip.PrefixFrom(a, a.BitLen())
			out.src.Host = a.String()
			break
		}
		if err := CheckHostName(host); err != nil {
			return rule{}, invalid(field+".host", fmt.Sprintf("%q: %v", r.Host, err), "write a DNS name, *.suffix, an IP address or a CIDR")
		}
		out.name = host
	}
	if out.src.Ports == "" {
		out.src.Ports = "*"
	}
	ports, err := parsePorts(out.src.Ports)
	if err != nil {
		return rule{}, invalid(field+".ports", err.Error(), `write "443", "443,8443", "8000-8999" or "*"`)
	}
	out.ports = ports
	return out, nil
}

func parsePorts(s string) ([]portRange, error) {
	if s == "*" {
		return []portRange{{1, 65535}}, nil
	}
	var out []portRange
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := parsePort(lo)
		if err != nil {
			return nil, err
		}
		b := a
		if isRange {
			if b, err = parsePort(hi); err != nil {
				return nil, err
			}
			if b < a {
				return nil, fmt.Errorf("%q runs backwards", part)
			}
		}
		out = append(out, portRange{a, b})
	}
	return out, nil
}

func parsePort(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("%q is not a port between 1 and 65535", s)
	}
	return n, nil
}

// CheckHostName checks a DNS host name: labels of 1-63 letters, digits and
// hyphens (not at either end), at most 253 characters, and a last label that
// is not all digits or a 0x number (underscores, common in internal names,
// are allowed), so that decimal and hex IPv4 forms
// (2130706433, 0x7f000001) are never taken for names.
func CheckHostName(name string) error {
	name = strings.TrimSuffix(name, ".")
	if name == "" {
		return fmt.Errorf("the host name is empty")
	}
	if len(name) > 253 {
		return fmt.Errorf("the host name is %d characters; the limit is 253", len(name))
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" {
			return fmt.Errorf("the host name has an empty label")
		}
		if len(l) > 63 {
			return fmt.Errorf("the label %q is %d characters; the limit is 63", l, len(l))
		}
		for i, c := range l {
			ok := c == '-' && i > 0 && i < len(l)-1 || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
			if !ok {
				return fmt.Errorf("the label %q holds %q, which a DNS name may not", l, c)
			}
		}
	}
	last := strings.ToLower(labels[len(labels)-1])
	if strings.Trim(last, "0123456789") == "" || strings.HasPrefix(last, "0x") && strings.Trim(last[2:], "0123456789abcdef") == "" {
		return fmt.Errorf("%q is a numeric address form, not a name", name)
	}
	return nil
}

// ParseLifetime reads "398d", "398d12h" or a Go duration.
func ParseLifetime(s string) (time.Duration, error) {
	days, rest, ok := strings.Cut(s, "d")
	if !ok {
		return time.ParseDuration(s)
	}
	n, err := strconv.Atoi(days)
	if err != nil || n < 0 || n > 100*365 {
		return 0, fmt.Errorf("%q: bad day count", s)
	}
	d := time.Duration(n) * 24 * time.Hour
	if rest != "" {
		r, err := time.ParseDuration(rest)
		if err != nil {
			return 0, err
		}
		d += r
	}
	return d, nil
}

var curveByName = map[string]tls.CurveID{
	"X25519": tls.X25519, "P-256": tls.CurveP256, "P-384": tls.CurveP384, "P-521": tls.CurveP521,
	"X25519MLKEM768": tls.X25519MLKEM768,
}

// allowedSuites are the TLS 1.2 suites a policy may name: AEAD with forward
// secrecy only.
var allowedSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// AllowedSuites returns the TLS 1.2 suites trustflow ever uses: AEAD with
// forward secrecy.
func AllowedSuites() []uint16 { return slices.Clone(allowedSuites) }

// AllowedSuiteNames names AllowedSuites.
func AllowedSuiteNames() []string {
	out := make([]string, len(allowedSuites))
	for i, id := range allowedSuites {
		out[i] = tls.CipherSuiteName(id)
	}
	return out
}

func suiteByName(name string) (uint16, bool) {
	for _, id := range allowedSuites {
		if tls.CipherSuiteName(id) == name {
			return id, true
		}
	}
	return 0, false
}
