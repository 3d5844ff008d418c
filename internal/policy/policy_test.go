package policy_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/policy"
)

func mustParse(t *testing.T, doc string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse("policy.yaml", []byte(doc))
	require.NoError(t, err)
	return p
}

func requireDenied(t *testing.T, err error, contains string) {
	t.Helper()
	e, ok := errs.As(err)
	require.True(t, ok, "error %v is not an *errs.Error", err)
	require.Equal(t, errs.Forbidden, e.Kind)
	require.Equal(t, policy.CodeEgressDenied, e.Code)
	require.Contains(t, e.Message, contains)
	require.NotEmpty(t, e.Hint)
}

func TestDestinations(t *testing.T) {
	t.Parallel()
	def := mustParse(t, "apiVersion: trustflow/v1\nkind: Policy\n")
	loopOpen := mustParse(t, "apiVersion: trustflow/v1\nkind: Policy\negress:\n  allow:\n    - {host: 127.0.0.1, ports: \"8443\"}\n")
	allowlist := mustParse(t, `apiVersion: trustflow/v1
kind: Policy
egress:
  default: deny
  allow:
    - {host: "10.20.0.0/16", ports: "443"}
    - {host: "*.agency.example", ports: "443,8443"}
    - {host: "hr.example", ports: "8000-8999"}
`)
	type dest struct {
		host string
		ip   string
		port int
	}
	cases := []struct {
		name string
		d    dest
		// allowed under the default, the loopback exception and the allowlist
		def, loop, list bool
		why             string
	}{
		{"loopback v4", dest{"127.0.0.1", "127.0.0.1", 8443}, false, true, false, "loopback"},
		{"loopback other port", dest{"127.0.0.1", "127.0.0.1", 9000}, false, false, false, "loopback"},
		{"loopback 127.8.8.8", dest{"127.8.8.8", "127.8.8.8", 8443}, false, false, false, "loopback"},
		{"loopback v6", dest{"::1", "::1", 8443}, false, false, false, "loopback"},
		{"mapped loopback", dest{"::ffff:127.0.0.1", "::ffff:127.0.0.1", 8443}, false, true, false, "loopback"},
		{"metadata", dest{"169.254.169.254", "169.254.169.254", 80}, false, false, false, "link-local"},
		{"mapped metadata", dest{"::ffff:169.254.169.254", "::ffff:169.254.169.254", 80}, false, false, false, "link-local"},
		{"v6 link-local", dest{"fe80::1", "fe80::1", 443}, false, false, false, "link-local"},
		{"unspecified", dest{"0.0.0.0", "0.0.0.0", 443}, false, false, false, "unspecified"},
		{"unspecified v6", dest{"::", "::", 443}, false, false, false, "unspecified"},
		{"multicast", dest{"239.1.1.1", "239.1.1.1", 443}, false, false, false, "multicast"},
		{"name rebinding to loopback", dest{"api.agency.example", "127.0.0.1", 443}, false, false, false, "loopback"},
		{"private in allowlist", dest{"10.20.3.4", "10.20.3.4", 443}, true, true, true, ""},
		{"private wrong port", dest{"10.20.3.4", "10.20.3.4", 22}, true, true, false, "no egress rule"},
		{"private outside", dest{"10.21.0.1", "10.21.0.1", 443}, true, true, false, "no egress rule"},
		{"suffix", dest{"api.agency.example", "192.0.2.10", 8443}, true, true, true, ""},
		{"suffix apex is not a subdomain", dest{"agency.example", "192.0.2.10", 443}, true, true, false, "no egress rule"},
		{"exact name port range", dest{"HR.example.", "198.51.100.7", 8500}, true, true, true, ""},
		{"public", dest{"example.org", "93.184.216.34", 443}, true, true, false, "no egress rule"},
		{"port 0", dest{"example.org", "93.184.216.34", 0}, false, false, false, "port 0"},
		{"port 65536", dest{"example.org", "93.184.216.34", 65536}, false, false, false, "port 65536"},
	}
	for _, tc := range cases {
		ip := netip.MustParseAddr(tc.d.ip)
		for _, pc := range []struct {
			name  string
			p     *policy.Policy
			allow bool
		}{{"default", def, tc.def}, {"loopback rule", loopOpen, tc.loop}, {"allowlist", allowlist, tc.list}} {
			err := pc.p.CheckAddr(tc.d.host, ip, tc.d.port)
			if pc.allow {
				require.NoError(t, err, "%s under %s", tc.name, pc.name)
				continue
			}
			require.Error(t, err, "%s under %s", tc.name, pc.name)
			requireDenied(t, err, tc.why)
		}
	}
}

func TestCheckDestinationBeforeResolving(t *testing.T) {
	t.Parallel()
	def := mustParse(t, "apiVersion: trustflow/v1\nkind: Policy\n")
	require.NoError(t, def.CheckDestination("hr.agency.example", 443))
	requireDenied(t, def.CheckDestination("localhost", 443), "loopback")
	requireDenied(t, def.CheckDestination("a.localhost", 443), "loopback")
	requireDenied(t, def.CheckDestination("[::ffff:127.0.0.1]", 443), "loopback")
	requireDenied(t, def.CheckDestination("hr.agency.example", 99999), "port 99999")
	requireDenied(t, def.CheckDestination("0x7f000001", 443), "numeric address form")
	requireDenied(t, def.CheckDestination("2130706433", 443), "numeric address form")
	list := mustParse(t, "apiVersion: trustflow/v1\nkind: Policy\negress: {default: deny, allow: [{host: '*.agency.example', ports: '443'}]}\n")
	require.NoError(t, list.CheckDestination("hr.agency.example", 443))
	requireDenied(t, list.CheckDestination("example.org", 443), "no egress rule")
}

func TestHostNames(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"hr.agency.example", "a-b.c", "x", "_srv.example.org", "my_host.corp", "hr.agency.example."} {
		require.NoError(t, policy.CheckHostName(ok), ok)
	}
	long := ""
	for range 64 {
		long += "a"
	}
	for bad, why := range map[string]string{
		"":                        "empty",
		"a..b":                    "empty label",
		long + ".example":         "limit is 63",
		"-a.example":              "may not",
		"a b.example":             "may not",
		"2130706433":              "numeric address form",
		"0x7f000001":              "numeric address form",
		"127.1":                   "numeric address form",
		"h\u00e9.example":         "may not",
		"a." + long[:62] + ".com": "",
	} {
		err := policy.CheckHostName(bad)
		if why == "" {
			require.NoError(t, err, bad)
			continue
		}
		require.ErrorContains(t, err, why, bad)
	}
}

// countingListener accepts and counts connections and the bytes they send.
func countingListener(t *testing.T) (port int, accepted, bytesIn *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	accepted, bytesIn = new(atomic.Int64), new(atomic.Int64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				n, _ := io.Copy(io.Discard, c)
				bytesIn.Add(n)
				_ = c.Close()
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, accepted, bytesIn
}

// loopbackResolver answers every A query with 127.0.0.1, as a rebinding DNS
// server would.
func loopbackResolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		client, server := net.Pipe()
		go serveDNS(server)
		return client, nil
	}}
}

func serveDNS(c net.Conn) {
	defer c.Close()
	for {
		var n uint16
		if err := binary.Read(c, binary.BigEndian, &n); err != nil {
			return
		}
		q := make([]byte, n)
		if _, err := io.ReadFull(c, q); err != nil || len(q) < 12 {
			return
		}
		end := 12
		for end < len(q) && q[end] != 0 {
			end += int(q[end]) + 1
		}
		question := q[12 : end+5]
		qtype := binary.BigEndian.Uint16(q[end+1:])
		resp := append([]byte{}, q[0:2]...)
		resp = append(resp, 0x81, 0x80, 0, 1)
		if qtype == 1 {
			resp = append(resp, 0, 1)
		} else {
			resp = append(resp, 0, 0)
		}
		resp = append(resp, 0, 0, 0, 0)
		resp = append(resp, question...)
		if qtype == 1 {
			resp = append(resp, 0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1)
		}
		_ = binary.Write(c, binary.BigEndian, uint16(len(resp)))
		if _, err := c.Write(resp); err != nil {
			return
		}
	}
}

func TestDialerSendsNothingWhereDenied(t *testing.T) {
	t.Parallel()
	port, accepted, bytesIn := countingListener(t)
	def := mustParse(t, "apiVersion: trustflow/v1\nkind: Policy\n")
	d := policy.Dialer{Dialer: &net.Dialer{Timeout: 2 * time.Second, Resolver: loopbackResolver()}, Policy: func() *policy.Policy { return def }}
	ctx := context.Background()
	for _, addr := range []string{
		"127.0.0.1:" + strconv.Itoa(port),
		"[::ffff:127.0.0.1]:" + strconv.Itoa(port),
		"localhost:" + strconv.Itoa(port),
		"rebind.agency.example:" + strconv.Itoa(port), // resolves to 127.0.0.1
	} {
		c, err := d.DialContext(ctx, "tcp", addr)
		if c != nil {
			_ = c.Close()
		}
		require.Error(t, err, addr)
		requireDenied(t, err, "loopback")
		var e *errs.Error
		require.True(t, errors.As(err, &e), addr)
	}
	// The same dials succeed once a rule opens the port, and then reach the
	// listener: the count above would have seen a denied dial.
	open := mustParse(t, "apiVersion: trustflow/v1\nkind: Policy\negress: {allow: [{host: 127.0.0.1, ports: '"+strconv.Itoa(port)+"'}]}\n")
	d.Policy = func() *policy.Policy { return open }
	c, err := d.DialContext(ctx, "tcp", "rebind.agency.example:"+strconv.Itoa(port))
	require.NoError(t, err)
	_, err = c.Write([]byte("hello"))
	require.NoError(t, err)
	require.NoError(t, c.Close())
	require.Eventually(t, func() bool { return accepted.Load() == 1 && bytesIn.Load() == 5 }, 5*time.Second, 10*time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	require.Equal(t, int64(1), accepted.Load(), "only the allowed dial connected")
}

func TestParseRefusesAtLineAndColumn(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		doc              string
		line, col        int
		path, msg, field string
	}{
		{"apiVersion: trustflow/v1\nkind: Policy\negres: {}\n", 3, 1, "egres", `unknown key "egres"`, ""},
		{"apiVersion: trustflow/v1\nkind: Policy\ntls:\n  min_version: \"1.2\"\n  requre_mtls: true\n", 5, 3, "tls.requre_mtls", `unknown key "requre_mtls"`, ""},
		{"apiVersion: trustflow/v1\nkind: Policy\negress:\n  allow:\n    - {host: a.example, port: 443}\n", 5, 25, "egress.allow[0].port", `unknown key "port"`, ""},
		{"apiVersion: trustflow/v1\nkind: Policy\negress:\n  allow:\n    - {host: a.example}\n    - {host: b.example, ports: \"99999\"}\n", 6, 32, "egress.allow[1].ports", `"99999" is not a port`, ""},
		{"apiVersion: trustflow/v1\nkind: Policy\ntls: {min_version: \"1.0\"}\n", 3, 20, "tls.min_version", "not a TLS version", ""},
		{"apiVersion: trustflow/v1\nkind: Policy\nidentities: {min_rsa_bits: 1024}\n", 3, 28, "identities.min_rsa_bits", "outside 2048-16384", ""},
		{"apiVersion: trustflow/v1\nkind: Policy\negress: {default: maybe}\n", 3, 19, "egress.default", "neither allow nor deny", ""},
		{"apiVersion: trustflow/v1\nkind: Policy\ntls: {require_mtls: sometimes}\n", 3, 0, "", "cannot unmarshal", ""},
		{"kind: Policy\n", 1, 1, "", "apiVersion and kind are required", ""},
		{"apiVersion: trustflow/v2\nkind: Policy\n", 1, 13, "apiVersion", "not a policy API version", ""},
		{"[1, 2]\n", 1, 1, "", "not a mapping", ""},
	} {
		_, err := policy.Parse("p.yaml", []byte(tc.doc))
		e, ok := errs.As(err)
		require.True(t, ok, "%q: %v", tc.doc, err)
		require.Equal(t, errs.Invalid, e.Kind)
		require.Len(t, e.Problems, 1, "%q", tc.doc)
		p := e.Problems[0]
		require.Equal(t, "p.yaml", p.File)
		require.Equal(t, tc.line, p.Line, "%q: %+v", tc.doc, p)
		if tc.col > 0 {
			require.Equal(t, tc.col, p.Column, "%q: %+v", tc.doc, p)
		}
		require.Equal(t, tc.path, p.Path, "%q", tc.doc)
		require.Contains(t, p.Message, tc.msg)
		require.NotEmpty(t, p.Hint)
	}
}

func TestDocumentRoundTrip(t *testing.T) {
	t.Parallel()
	p := mustParse(t, `apiVersion: trustflow/v1
kind: Policy
egress:
  allow:
    - {host: "10.20.0.0/16", ports: "443"}
    - {host: "*.Agency.Example", ports: "443,8443"}
    - {host: "::ffff:10.1.2.3"}
tls: {min_version: "1.3", require_mtls: true, allow_system_roots: false, allow_plaintext: false, allow_no_client_auth_request: false,
      cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256], curves: [X25519, P-256]}
identities: {min_rsa_bits: 3072, min_ec_bits: 384, max_lifetime: 398d, require_client_auth_eku: true}
`)
	d := p.Document()
	require.Equal(t, policy.DefaultAllow, d.Egress.Default)
	require.Equal(t, []policy.Rule{{Host: "10.20.0.0/16", Ports: "443"}, {Host: "*.agency.example", Ports: "443,8443"}, {Host: "10.1.2.3", Ports: "*"}}, d.Egress.Allow)
	require.Equal(t, 398*24*time.Hour, p.MaxLifetime())
	require.Equal(t, uint16(0x0304), p.MinVersion())
	again, err := policy.Compile(d)
	require.NoError(t, err)
	require.Equal(t, d, again.Document())
	dflt, err := policy.Compile(policy.Default())
	require.NoError(t, err)
	require.Equal(t, policy.Default(), dflt.Document())
}

// FuzzParse: Parse never panics; what it accepts compiles again from its
// own document to the same document; what it refuses is an Invalid error
// with at least one problem and a hint.
func FuzzParse(f *testing.F) {
	f.Add([]byte("apiVersion: trustflow/v1\nkind: Policy\negress:\n  allow:\n    - {host: \"10.20.0.0/16\", ports: \"443\"}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := policy.Parse("f.yaml", data)
		if err != nil {
			e, ok := errs.As(err)
			if !ok || e.Kind != errs.Invalid || len(e.Problems) == 0 || e.Problems[0].Hint == "" {
				t.Fatalf("refusal %v is not a complete invalid_policy error", err)
			}
			return
		}
		again, err := policy.Compile(p.Document())
		if err != nil {
			t.Fatalf("accepted document does not compile again: %v", err)
		}
		if again.Document().Egress.Default != p.Document().Egress.Default || len(again.Document().Egress.Allow) != len(p.Document().Egress.Allow) {
			t.Fatalf("round trip changed the document")
		}
	})
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
