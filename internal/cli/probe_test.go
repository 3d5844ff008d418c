package cli_test

import (
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/apiclient"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

// probeSetup starts a trustflow server holding CA "demo" and identity
// "svc" (imported through the CLI), and returns an HTTPS endpoint on
// loopback with the given client-auth policy.
func probeSetup(t *testing.T, auth tls.ClientAuthType) (*server, string) {
	t.Helper()
	s := startServer(t)
	ca := truststoretest.NewCA(t)
	client := ca.IssueClient(t, "trustflow-client")
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, data, 0o600))
		return p
	}
	for _, line := range strings.Split(string(client.KeyPEM()), "\n") {
		if len(line) >= 16 && !strings.HasPrefix(line, "-----") {
			s.secrets = append(s.secrets, line)
		}
	}
	s.ok(t, "ca", "add", "demo", "--file", write("ca.pem", ca.CertPEM()))
	s.ok(t, "identity", "import", "svc", "--cert", write("client.pem", client.CertPEM()), "--key", write("client.key", client.KeyPEM()))

	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.IssueServer(t, "127.0.0.1").TLSCertificate()}, ClientAuth: auth, ClientCAs: ca.Pool()}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	// The server listens on loopback, which the egress policy opens only by
	// an explicit rule.
	_, port, err := net.SplitHostPort(strings.TrimPrefix(srv.URL, "https://"))
	require.NoError(t, err)
	s.ok(t, "policy", "allow", "--host", "127.0.0.1", "--ports", port)
	return s, srv.URL
}

func TestProbeEnforced(t *testing.T) {
	t.Parallel()
	s, url := probeSetup(t, tls.RequireAndVerifyClientCert)

	out := s.ok(t, "probe", url, "--ca", "demo", "--identity", "svc")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	require.Len(t, lines, 10, out)
	require.Regexp(t, `^CHECK +STATUS +LAYER +DETAIL$`, lines[0])
	for i, want := range []string{
		`anonymous_refused +pass +tls +the server refused a client without a client certificate: alert certificate_required on the first read after the handshake`,
		`untrusted_cert_refused +pass +tls +the server refused a client with a self-signed certificate`,
		`identity_accepted +pass +- +the server accepted identity svc \(version 1, serial [0-9a-f]+\) over TLS 1.3: GET / answered 200 OK`,
		`tls10_refused +pass +tls +the server refused a TLS 1.0 handshake \(alert protocol_version\)`,
		`tls11_refused +pass +tls +the server refused a TLS 1.1 handshake \(alert protocol_version\)`,
		`server_chain_valid +pass +- +the chain verifies to trusted CA 'CN=trustflow test root CA,O=trustflow tests'`,
		`hostname_valid +pass +- +certificate 'CN=127.0.0.1' is valid for "127.0.0.1"`,
	} {
		require.Regexp(t, "^"+want, lines[1+i])
	}
	require.Equal(t, "", lines[8])
	require.Equal(t, "verdict: enforced: "+url+" refuses clients without a trusted client certificate", lines[9])

	var rep apiclient.ProbeReport
	s.json(t, &rep, "probe", url, "--ca", "demo", "--identity", "svc", "--timeout", "5s")
	require.Equal(t, apiclient.ProbeEnforced, rep.Verdict)
	require.Len(t, rep.Checks, 7)
	for _, c := range rep.Checks {
		require.Equal(t, "pass", c.Status, "%+v", c)
	}

	// Without --ca and --identity those checks are skipped, saying how to
	// run them.
	out = s.ok(t, "probe", url)
	require.Contains(t, out, "identity_accepted       skip    -      not checked: pass --identity NAME to check that the server accepts a trust store identity\n")
	require.Contains(t, out, "hostname_valid          skip    -      not checked: pass --ca NAME to check the server's certificate for this host on a verified chain\n")
}

func TestProbeNotEnforced(t *testing.T) {
	t.Parallel()
	s, url := probeSetup(t, tls.VerifyClientCertIfGiven)
	host := strings.TrimPrefix(url, "https://")

	r := s.run(t, "probe", url, "--ca", "demo", "--identity", "svc")
	require.Equal(t, 3, r.code)
	require.Equal(t, "Error: "+host+" does not enforce mutual TLS (see anonymous_refused)\n", r.stderr)
	require.Regexp(t, `\nanonymous_refused +fail +- +the server asked for a client certificate but accepted a client without a client certificate: GET / answered 200 OK\n`, r.stdout)
	require.Contains(t, r.stdout, "\nHints:\n  anonymous_refused: make the client certificate required, not optional (nginx: ssl_verify_client on; Go: tls.RequireAndVerifyClientCert)\n")
	require.True(t, strings.HasSuffix(r.stdout, "\nverdict: not_enforced: "+url+" accepts clients it should refuse, or could not be shown to refuse them\n"), r.stdout)

	// -o json prints the report and still exits 3.
	r = s.run(t, "probe", url, "-o", "json")
	require.Equal(t, 3, r.code)
	var rep apiclient.ProbeReport
	decodeStrict(t, r.stdout, &rep)
	require.Equal(t, apiclient.ProbeNotEnforced, rep.Verdict)
	require.Equal(t, apiclient.ProbeCheck{Name: "anonymous_refused", Status: "fail",
		Detail: "the server asked for a client certificate but accepted a client without a client certificate: GET / answered 200 OK",
		Hint:   "make the client certificate required, not optional (nginx: ssl_verify_client on; Go: tls.RequireAndVerifyClientCert)"}, rep.Checks[0])
	require.Equal(t, "untrusted_cert_refused", rep.Checks[1].Name)
	require.Equal(t, "pass", rep.Checks[1].Status)
	require.Equal(t, "tls", rep.Checks[1].Layer)
}

func TestProbeRefusesBadInput(t *testing.T) {
	t.Parallel()
	s, url := probeSetup(t, tls.RequireAndVerifyClientCert)
	for _, tc := range []struct {
		args   []string
		stderr string
	}{
		{[]string{"probe", "http://127.0.0.1:8080"},
			"Error: url: \"http://127.0.0.1:8080\" is not an https:// URL\nHint: the probe checks the endpoint's TLS: give its https:// URL\n"},
		{[]string{"probe", url, "--ca", "nope"},
			"Error: cas: CA \"nope\" does not exist\nHint: list the CAs with `trustflow ca list`, or add the one that issues the server's certificate with `trustflow ca add`\n"},
		{[]string{"probe", url, "--identity", "nope"},
			"Error: identity: identity \"nope\" does not exist\nHint: list the identities with `trustflow identity list`\n"},
		{[]string{"probe", url, "--timeout", "1m"},
			"Error: timeout: 1m0s is not between 0 and 30s\nHint: give a per-check timeout such as 10s (the default)\n"},
		{[]string{"probe"}, "Error: accepts 1 arg(s), received 0\n"},
	} {
		r := s.run(t, tc.args...)
		require.Equal(t, result{code: 1, stderr: tc.stderr}, r, strings.Join(tc.args, " "))
	}
}
