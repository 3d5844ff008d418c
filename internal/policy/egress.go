package policy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"

	"github.com/trustflow/trustflow/internal/errs"
)

// CodeEgressDenied is the code of a connection the egress policy refuses.
const CodeEgressDenied = "egress_denied"

// special ranges: denied unless an IP or CIDR rule opens them.
var special = []struct {
	name   string
	prefix netip.Prefix
}{
	{"loopback", netip.MustParsePrefix("127.0.0.0/8")},
	{"loopback", netip.MustParsePrefix("::1/128")},
	{"unspecified", netip.MustParsePrefix("0.0.0.0/8")},
	{"unspecified", netip.MustParsePrefix("::/128")},
	{"link-local", netip.MustParsePrefix("169.254.0.0/16")},
	{"link-local", netip.MustParsePrefix("fe80::/10")},
	{"multicast", netip.MustParsePrefix("224.0.0.0/4")},
	{"multicast", netip.MustParsePrefix("ff00::/8")},
	{"broadcast", netip.MustParsePrefix("255.255.255.255/32")},
}

// Special names the default-denied range an address is in (loopback,
// link-local, unspecified, multicast, broadcast), or "" if none. IPv4-mapped
// IPv6 forms count as their IPv4 address.
func Special(a netip.Addr) string {
	a = a.Unmap()
	for _, s := range special {
		if s.prefix.Contains(a) {
			return s.name
		}
	}
	return ""
}

// ports reports whether the rule allows port.
func (r rule) allowsPort(port int) bool {
	for _, pr := range r.ports {
		if port >= pr.lo && port <= pr.hi {
			return true
		}
	}
	return false
}

// matchesName reports whether a name rule matches host.
func (r rule) matchesName(host string) bool {
	switch {
	case r.name != "":
		return host == r.name
	case r.suffix != "":
		return strings.HasSuffix(host, r.suffix) && len(host) > len(r.suffix)
	}
	return false
}

func normHost(host string) string {
	return strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
}

// CheckAddr decides a connection to ip:port, reached by the name host (the
// name as written, or the IP): nil if the policy allows it, else an
// errs.Forbidden error with code egress_denied naming the destination and
// the rule. It runs at dial time on every resolved address.
func (p *Policy) CheckAddr(host string, ip netip.Addr, port int) error {
	host = normHost(host)
	ip = ip.Unmap()
	if port < 1 || port > 65535 {
		return p.deny(host, ip, port, fmt.Sprintf("port %d is not between 1 and 65535", port), "give the service's TCP port")
	}
	// An IP or CIDR rule opens its addresses, special ones included.
	for _, r := range p.rules {
		if r.prefix.IsValid() && r.prefix.Contains(ip) && r.allowsPort(port) {
			return nil
		}
	}
	if s := Special(ip); s != "" {
		return p.deny(host, ip, port, fmt.Sprintf("%s is a %s address, which the egress policy denies unless an IP or CIDR rule allows it", ip, s),
			fmt.Sprintf("if this destination is intended, allow it: `trustflow policy allow --host %s --ports %d` (admin)", ip, port))
	}
	if p.doc.Egress.Default == DefaultAllow {
		return nil
	}
	for _, r := range p.rules {
		if r.matchesName(host) && r.allowsPort(port) {
			return nil
		}
	}
	return p.deny(host, ip, port, "no egress rule allows it (egress.default is deny)",
		fmt.Sprintf("allow it: `trustflow policy allow --host %s --ports %d` (admin), or use a destination the policy allows", host, port))
}

func (p *Policy) deny(host string, ip netip.Addr, port int, why, hint string) error {
	dest := net.JoinHostPort(host, strconv.Itoa(port))
	if ip.IsValid() && host != ip.String() {
		dest += " (" + ip.String() + ")"
	}
	return &errs.Error{Kind: errs.Forbidden, Code: CodeEgressDenied, Message: "the egress policy refuses a connection to " + dest + ": " + why, Hint: hint, Op: "policy"}
}

// CheckDestination decides, before any name is resolved, whether a
// connector (or probe) may aim at host:port: an IP literal is judged as at
// dial time; a name is refused when it can never be allowed (localhost, or
// under egress.default deny no rule for it). Dial time decides the rest.
func (p *Policy) CheckDestination(host string, port int) error {
	h := normHost(host)
	if a, err := netip.ParseAddr(h); err == nil {
		return p.CheckAddr(h, a, port)
	}
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return p.CheckAddr(h, netip.MustParseAddr("127.0.0.1"), port)
	}
	if err := CheckHostName(h); err != nil {
		// Decimal and hex IPv4 forms (2130706433, 0x7f000001) would reach
		// an address no rule was written for, through a lenient resolver.
		return p.deny(h, netip.Addr{}, port, err.Error(), "write the destination as a DNS name or a standard IP address")
	}
	if port < 1 || port > 65535 {
		return p.deny(h, netip.Addr{}, port, fmt.Sprintf("port %d is not between 1 and 65535", port), "give the service's TCP port")
	}
	if p.doc.Egress.Default == DefaultAllow {
		return nil
	}
	for _, r := range p.rules {
		if r.allowsPort(port) && (r.matchesName(h) || r.prefix.IsValid()) {
			return nil // a name rule, or an IP rule the name may resolve into
		}
	}
	return p.deny(h, netip.Addr{}, port, "no egress rule allows it (egress.default is deny)",
		fmt.Sprintf("allow it: `trustflow policy allow --host %s --ports %d` (admin)", h, port))
}

// Dialer dials only where the current policy allows: every address a name
// resolves to is checked just before connect (so a denied connection sends
// nothing, and DNS rebinding does not pass).
type Dialer struct {
	// Dialer is the base dialer (timeouts, keep-alive); nil for defaults.
	Dialer *net.Dialer
	// Policy returns the policy in force; nil means Default.
	Policy func() *Policy
}

// DialContext dials network addr ("host:port") under the policy.
func (d Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("policy: dial %s: %w", addr, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return nil, fmt.Errorf("policy: dial %s: bad port: %w", addr, err)
	}
	pol := d.current()
	if err := pol.CheckDestination(host, port); err != nil {
		return nil, err
	}
	var nd net.Dialer
	if d.Dialer != nil {
		nd = *d.Dialer
	}
	base := nd.Control
	nd.ControlContext = nil
	nd.Control = func(network, address string, c syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("policy: dial %s: resolved address %q: %w", addr, address, err)
		}
		if err := pol.CheckAddr(host, ap.Addr(), int(ap.Port())); err != nil {
			return err
		}
		if base != nil {
			return base(network, address, c)
		}
		return nil
	}
	return nd.DialContext(ctx, network, addr)
}

func (d Dialer) current() *Policy {
	if d.Policy != nil {
		if p := d.Policy(); p != nil {
			return p
		}
	}
	p, err := Compile(Default())
	if err != nil {
		panic(fmt.Sprintf("policy: the default policy does not compile: %v", err)) // a programming error
	}
	return p
}
