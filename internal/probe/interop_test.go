package probe_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/probe"
)

// startupTimeout bounds how long a peer server may take to start listening.
const startupTimeout = 20 * time.Second

// requireTool finds an interop peer: the first of the candidates that is
// on PATH or executable. Outside CI a missing peer skips the test; in CI
// (CI=true) it fails it.
func requireTool(t *testing.T, name string, candidates ...string) string {
	t.Helper()
	for _, c := range candidates {
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	msg := fmt.Sprintf("%s is not installed (looked for %s); install it to run this interop test (Debian: apt-get install -y %s)", name, strings.Join(candidates, ", "), name)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// peerFiles writes the server's certificate chain and key and the client
// CA to dir, as a peer server reads them.
func (e *env) peerFiles(t *testing.T, dir string) (cert, key, ca string) {
	t.Helper()
	leaf := e.ca.IssueServer(t, "127.0.0.1")
	cert, key, ca = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key"), filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(cert, leaf.ChainPEM(), 0o600))
	require.NoError(t, os.WriteFile(key, leaf.KeyPEM(), 0o600))
	require.NoError(t, os.WriteFile(ca, e.ca.CertPEM(), 0o600))
	return cert, key, ca
}

// startPeer starts cmd, stopped at cleanup, and returns the first line of
// its output (stdout or stderr, as out says) for which ready returns a
// non-empty value: the signal that it listens.
func startPeer(t *testing.T, cmd *exec.Cmd, out io.ReadCloser, ready func(line string) string) string {
	t.Helper()
	var log strings.Builder
	found := make(chan string, 1)
	done := make(chan struct{})
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM) // it may have exited already
		<-done
		_ = cmd.Wait() // a signalled peer exits non-zero
	})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if log.Len() < 1<<16 {
				log.WriteString(line + "\n")
			}
			if v := ready(line); v != "" {
				select {
				case found <- v:
				default:
				}
			}
		}
	}()
	select {
	case v := <-found:
		return v
	case <-done:
		t.Fatalf("%s exited before it listened:\n%s", cmd.Path, log.String())
	case <-time.After(startupTimeout):
		t.Fatalf("%s did not listen within %s", cmd.Path, startupTimeout)
	}
	return ""
}

// TestOpenSSLServer probes `openssl s_server -Verify 1`, which requires a
// client certificate. Alone, -Verify reports verification errors but
// carries on (s_server's verify callback ignores them), so the server
// accepts any certificate: the probe must say so. With -verify_return_error
// it refuses certificates from other CAs, and mTLS is enforced.
func TestOpenSSLServer(t *testing.T) {
	t.Parallel()
	openssl := requireTool(t, "openssl", "openssl")
	for _, tc := range []struct {
		name      string
		flags     []string
		verdict   string
		untrusted probe.Check
	}{
		{"verify_return_error", []string{"-Verify", "1", "-verify_return_error"}, probe.VerdictEnforced, probe.Check{Status: probe.StatusPass, Layer: probe.LayerTLS,
			Detail: "the server refused a client with a self-signed certificate no trusted CA issued (CN=trustflow-probe-untrusted): alert unknown_ca on the first read after the handshake"}},
		{"Verify alone", []string{"-Verify", "1"}, probe.VerdictNotEnforced, probe.Check{Status: probe.StatusFail,
			Detail: "the server asked for a client certificate but accepted a client with a self-signed certificate no trusted CA issued (CN=trustflow-probe-untrusted): GET / answered 200 ok",
			Hint:   "have the server verify client certificates against the CAs it trusts and refuse the rest (nginx: ssl_client_certificate CA-FILE and ssl_verify_client on; Go: tls.RequireAndVerifyClientCert with ClientCAs)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := openEnv(t)
			dir := t.TempDir()
			cert, key, ca := e.peerFiles(t, dir)
			args := append([]string{"s_server", "-accept", "127.0.0.1:0", "-cert", cert, "-key", key, "-CAfile", ca, "-www"}, tc.flags...)
			cmd := exec.Command(openssl, args...)
			cmd.Dir = dir
			stdout, err := cmd.StdoutPipe()
			require.NoError(t, err)
			cmd.Stderr = io.Discard
			addr := startPeer(t, cmd, stdout, func(line string) string {
				if a, ok := strings.CutPrefix(line, "ACCEPT "); ok {
					return a
				}
				return ""
			})

			rep := e.probe(t, probe.Request{URL: "https://" + addr + "/", CAs: []string{"demo"}, Identity: "svc"})
			require.Equal(t, tc.verdict, rep.Verdict, "%+v", rep.Checks)
			tc.untrusted.Name = probe.CheckUntrustedCertRefused
			require.Equal(t, []string{"anonymous_refused pass/tls", "untrusted_cert_refused " + tc.untrusted.Status + layerSuffix(tc.untrusted), "identity_accepted pass",
				"tls10_refused pass/tls", "tls11_refused pass/tls", "server_chain_valid pass", "hostname_valid pass"}, outcomes(rep))
			require.Equal(t, "the server refused a client without a client certificate: alert certificate_required on the first read after the handshake",
				check(t, rep, probe.CheckAnonymousRefused).Detail)
			require.Equal(t, tc.untrusted, check(t, rep, probe.CheckUntrustedCertRefused))
			require.Equal(t, "the server accepted identity svc (version 1, serial "+e.serial+") over TLS 1.3: GET / answered 200 ok",
				check(t, rep, probe.CheckIdentityAccepted).Detail)
			e.requireNoKeyMaterial(t, rep)
		})
	}
}

// TestNginxServer probes nginx with `ssl_verify_client on`, which
// completes a handshake without a client certificate (or with one it
// cannot verify) and then answers 400: a refusal at the HTTP layer.
func TestNginxServer(t *testing.T) {
	t.Parallel()
	nginx := requireTool(t, "nginx-light", "nginx", "/usr/sbin/nginx")
	e := openEnv(t)
	dir := t.TempDir()
	cert, key, ca := e.peerFiles(t, dir)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close()) // nginx binds it again below

	conf := filepath.Join(dir, "nginx.conf")
	require.NoError(t, os.WriteFile(conf, []byte(nginxConfig(t, nginx, dir, addr, cert, key, ca)), 0o600))
	cmd := exec.Command(nginx, "-p", dir, "-c", conf, "-e", "stderr")
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	startPeer(t, cmd, stderr, func(line string) string {
		if strings.Contains(line, "start worker process") {
			return line
		}
		return ""
	})

	rep := e.probe(t, probe.Request{URL: "https://" + addr + "/", CAs: []string{"demo"}, Identity: "svc"})
	require.Equal(t, probe.VerdictEnforced, rep.Verdict, "%+v", rep.Checks)
	require.Equal(t, []string{"anonymous_refused pass/http", "untrusted_cert_refused pass/http", "identity_accepted pass", "tls10_refused pass/tls",
		"tls11_refused pass/tls", "server_chain_valid pass", "hostname_valid pass"}, outcomes(rep))
	anon := check(t, rep, probe.CheckAnonymousRefused)
	require.Equal(t, probe.LayerHTTP, anon.Layer)
	require.Equal(t, "the handshake of a client without a client certificate completed, then the server refused the request at the HTTP layer: GET / answered 400 Bad Request", anon.Detail)
	require.Equal(t, "the server accepted identity svc (version 1, serial "+e.serial+") over TLS 1.3: GET / answered 200 OK",
		check(t, rep, probe.CheckIdentityAccepted).Detail)
	e.requireNoKeyMaterial(t, rep)
}

// nginxConfig is a minimal nginx configuration that keeps every file
// nginx writes under dir and requires client certificates from ca.
func nginxConfig(t *testing.T, nginx, dir, addr, cert, key, ca string) string {
	t.Helper()
	// Point every temp path this nginx was built with into dir; modules
	// built without an explicit path default to one under the prefix (dir).
	built, err := exec.Command(nginx, "-V").CombinedOutput()
	require.NoError(t, err, "%s", built)
	temps := fmt.Sprintf("    client_body_temp_path %s;\n", filepath.Join(dir, "client_body"))
	for _, module := range []string{"proxy", "fastcgi", "uwsgi", "scgi"} {
		if strings.Contains(string(built), "--http-"+module+"-temp-path") && !strings.Contains(string(built), "--without-http_"+module+"_module") {
			temps += fmt.Sprintf("    %s_temp_path %s;\n", module, filepath.Join(dir, module))
		}
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;\n" // workers read nothing but what the master opened; root keeps the temp dir private
	}
	return fmt.Sprintf(`%sdaemon off;
pid %s;
error_log stderr notice;
events {}
http {
    access_log off;
%s    server {
        listen %s ssl;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate %s;
        ssl_certificate_key %s;
        ssl_client_certificate %s;
        ssl_verify_client on;
        location / { return 200 "ok"; }
    }
}
`, user, filepath.Join(dir, "nginx.pid"), temps, addr, cert, key, ca)
}
