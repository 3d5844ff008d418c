package connector_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/connector"
	"github.com/trustflow/trustflow/internal/policy"
)

// benchPolicy is a policy of the kind an organisation writes: egress
// denied by default, a few names, suffixes and CIDRs allowed, the loopback
// server's port among them, and a TLS floor.
func benchPolicy(b *testing.B, port int) *policy.Policy {
	b.Helper()
	p, err := policy.Compile(policy.Document{
		Egress: policy.Egress{Default: policy.DefaultDeny, Allow: []policy.Rule{
			{Host: "api.partner.example", Ports: "443"},
			{Host: "*.agency.example", Ports: "443,8443"},
			{Host: "hr.internal.example", Ports: "8000-8999"},
			{Host: "10.20.0.0/16", Ports: "443"},
			{Host: "fd00::/8", Ports: "*"},
			{Host: "127.0.0.1", Ports: strconv.Itoa(port)},
		}},
		TLS: policy.TLS{MinVersion: "1.2", RequireMTLS: true},
	})
	require.NoError(b, err)
	return p
}

// BenchmarkCallsSecretPolicy measures calls over a kept-alive HTTP/2
// connection through a connector that carries a secret (a bearer token,
// redacted from every answer) under a policy with several egress rules,
// against the bare client sending the same header: what the policy check
// and the redaction cost on the call path, as a fraction of the bare rate.
func BenchmarkCallsSecretPolicy(b *testing.B) {
	const token = "tok-0123456789abcdef-bearer"
	for _, n := range []int{1, 16} {
		b.Run(fmt.Sprintf("conc=%d/unaudited", n), func(b *testing.B) {
			var pol *policy.Policy
			e := sqliteEnv(b, withoutCallAudit(), withPolicy(func() *policy.Policy { return pol }))
			e.addCA(b, "demo", e.ca)
			cert := e.addIdentity(b, "svc", e.ca)
			srv := startServer(b, okHandler, serverConfig(e.ca.IssueServer(b, "127.0.0.1"), e.ca.Pool()), true)
			pol = benchPolicy(b, srv.Listener.Addr().(*net.TCPAddr).Port)
			e.create(b, connector.Spec{Name: "bench", URL: srv.URL, Auth: connector.AuthBearer, Identity: "svc", CAs: []string{"demo"},
				Secrets: connector.Secrets{Token: token}})
			bare := bareClient(e.ca, cert, true)
			b.Cleanup(bare.CloseIdleConnections)
			bareCall := func() error { return bareGetHeader(bare, srv.URL, "Authorization", "Bearer "+token) }
			for range 2 {
				require.NoError(b, connectorGet(e.conns, "bench"))
				require.NoError(b, bareCall())
			}
			paired(b, n, "req/s", bareCall, func() error { return connectorGet(e.conns, "bench") })
		})
	}
}

// bareGetHeader is bareGet with one more request header.
func bareGetHeader(c *http.Client, url, key, value string) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "trustflow")
	req.Header.Set(key, value)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}
