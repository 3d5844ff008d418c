//go:build unix

package connector_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/connector"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

// peerBinary finds a non-Go TLS peer. It is skipped only outside CI; in CI
// a missing peer fails the test.
func peerBinary(t *testing.T, path string) string {
	t.Helper()
	p, err := exec.LookPath(path)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required in CI: %v", path, err)
		}
		t.Skipf("%s not installed: %v", path, err)
	}
	return p
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// pemFiles writes the server's certificate, key and the CA to dir.
func pemFiles(t *testing.T, dir string, leaf *truststoretest.Leaf, ca *truststoretest.CA) (cert, key, caFile string) {
	t.Helper()
	cert, key, caFile = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key"), filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(cert, leaf.ChainPEM(), 0o600))
	require.NoError(t, os.WriteFile(key, leaf.KeyPEM(), 0o600))
	require.NoError(t, os.WriteFile(caFile, ca.CertPEM(), 0o600))
	return cert, key, caFile
}

// peerProcess runs a server in its own process group until the test ends
// (nginx forks workers: the whole group is killed), and returns once a
// line containing ready appears on its output (stdout and stderr together).
func peerProcess(t *testing.T, ready string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	cmd.Stdout, cmd.Stderr = pw, pw
	err = cmd.Start()
	pw.Close() // the children hold their own copies
	if err != nil {
		pr.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	var outMu sync.Mutex
	var out strings.Builder
	output := func() string {
		outMu.Lock()
		defer outMu.Unlock()
		return out.String()
	}
	up := make(chan struct{})
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(pr)
		seen := false
		for sc.Scan() {
			outMu.Lock()
			out.WriteString(sc.Text() + "\n")
			outMu.Unlock()
			if !seen && strings.Contains(sc.Text(), ready) {
				seen = true
				close(up)
			}
		}
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		<-readDone // every process of the group has closed the pipe
		pr.Close()
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(name), output())
		}
	})
	select {
	case <-up:
	case err := <-exited:
		exited <- err
		t.Fatalf("%s exited before it was ready: %v", name, err)
	case <-time.After(10 * time.Second):
		t.Fatalf("%s not ready after 10s", name)
	}
}

func TestInteropOpenSSL(t *testing.T) {
	openssl := peerBinary(t, "openssl")
	ctx := context.Background()
	e := sqliteEnv(t)
	e.addCA(t, "demo", e.ca)
	e.addIdentity(t, "svc", e.ca)
	cert, key, caFile := pemFiles(t, t.TempDir(), e.ca.IssueServer(t, "127.0.0.1"), e.ca)
	port := freePort(t)
	peerProcess(t, "ACCEPT", openssl, "s_server", "-accept", fmt.Sprintf("127.0.0.1:%d", port), "-Verify", "1", "-www",
		"-cert", cert, "-key", key, "-CAfile", caFile)
	url := fmt.Sprintf("https://127.0.0.1:%d", port)

	e.create(t, connector.Spec{Name: "openssl", URL: url, Identity: "svc", CAs: []string{"demo"}})
	resp, err := e.conns.Do(ctx, "openssl", connector.Request{Path: "/"})
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.Status)
	require.Contains(t, string(resp.Body), "s_server")
	ev := resp.Evidence
	require.True(t, ev.ServerRequestedClientCert)
	require.Contains(t, ev.AcceptableCAs, e.ca.Cert.Subject.String(), "s_server -CAfile names its CA in the request")
	require.Equal(t, e.activeVersion(t, "svc").Serial, ev.ClientCertificate.Serial)
	require.Equal(t, "TLS 1.3", ev.TLSVersion)
	res, err := e.conns.Test(ctx, admin, "openssl", "")
	require.NoError(t, err)
	require.True(t, res.OK, "%+v", res.Error)

	// -Verify 1 fails the handshake of a client without a certificate.
	e.create(t, connector.Spec{Name: "openssl-anon", URL: url, CAs: []string{"demo"}})
	_, err = e.conns.Do(ctx, "openssl-anon", connector.Request{Path: "/"})
	ce := callError(t, err)
	require.Equal(t, "server_rejected_certificate_required", ce.Code, ce.Message)
	res, err = e.conns.Test(ctx, admin, "openssl-anon", "")
	require.NoError(t, err)
	require.False(t, res.OK)
	require.Equal(t, "server_rejected_certificate_required", res.Error.Code)
}

const nginxConf = `user root;
daemon off;
master_process on;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log stderr notice;
events { worker_connections 64; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	server {
		listen 127.0.0.1:%[2]d ssl http2;
		ssl_certificate %[3]s;
		ssl_certificate_key %[4]s;
		ssl_client_certificate %[5]s;
		ssl_verify_client on;
		location / {
			default_type application/json;
			return 200 '{"serial":"$ssl_client_serial"}';
		}
	}
}
`

func TestInteropNginx(t *testing.T) {
	nginx := peerBinary(t, "/usr/sbin/nginx")
	ctx := context.Background()
	e := sqliteEnv(t)
	e.addCA(t, "demo", e.ca)
	e.addIdentity(t, "svc", e.ca)
	dir := t.TempDir()
	cert, key, caFile := pemFiles(t, dir, e.ca.IssueServer(t, "127.0.0.1"), e.ca)
	port := freePort(t)
	conf := filepath.Join(dir, "nginx.conf")
	require.NoError(t, os.WriteFile(conf, fmt.Appendf(nil, nginxConf, dir, port, cert, key, caFile), 0o600))
	peerProcess(t, "start worker process", nginx, "-p", dir, "-e", "stderr", "-c", conf)
	url := fmt.Sprintf("https://127.0.0.1:%d", port)

	e.create(t, connector.Spec{Name: "nginx", URL: url, Identity: "svc", CAs: []string{"demo"}})
	resp, err := e.conns.Do(ctx, "nginx", connector.Request{Path: "/"})
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.Status)
	active := e.activeVersion(t, "svc")
	var seen struct{ Serial string }
	require.NoError(t, json.Unmarshal(resp.Body, &seen))
	require.Equal(t, active.Serial, strings.ToLower(strings.TrimLeft(seen.Serial, "0")), "nginx verified our certificate")
	require.True(t, resp.Evidence.ServerRequestedClientCert)
	require.Equal(t, "h2", resp.Evidence.ALPN)
	require.Equal(t, active.Serial, resp.Evidence.ClientCertificate.Serial)
	res, err := e.conns.Test(ctx, admin, "nginx", "/")
	require.NoError(t, err)
	require.True(t, res.OK, "%+v", res.Error)
	require.Equal(t, http.StatusOK, res.Status)

	// nginx completes the handshake without a client certificate and
	// answers 400 at the HTTP layer: a response, not a call failure.
	e.create(t, connector.Spec{Name: "nginx-anon", URL: url, CAs: []string{"demo"}})
	resp, err = e.conns.Do(ctx, "nginx-anon", connector.Request{Path: "/"})
	require.NoError(t, err)
	require.Equal(t, http.StatusBadRequest, resp.Status)
	require.Contains(t, string(resp.Body), "No required SSL certificate was sent")
	require.True(t, resp.Evidence.ServerRequestedClientCert)
	require.Nil(t, resp.Evidence.ClientCertificate)
}
