package app_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/app"
	"github.com/trustflow/trustflow/internal/config"
	"github.com/trustflow/trustflow/internal/store"
)

// selfSigned writes an ECDSA certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "trustflow test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600))
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func startApp(t *testing.T, cfg config.Config) *app.App {
	t.Helper()
	var stderr syncBuffer
	a, err := app.New(context.Background(), cfg, app.Options{Stderr: &stderr})
	require.NoError(t, err)
	require.NoError(t, a.Start(context.Background()))
	t.Cleanup(func() { a.Stop() })
	return a
}

// TestTLSListenerRefusesCBCAndSendsHSTS: with --tls-cert the listener takes
// TLS 1.2 only with AEAD suites, refuses a client that offers only a CBC
// suite with a SHA-1 MAC, and every answer carries Strict-Transport-Security.
func TestTLSListenerRefusesCBCAndSendsHSTS(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := selfSigned(t)
	cfg := testConfig(t, store.SQLite)
	cfg.TLSCert, cfg.TLSKey = certFile, keyFile
	a := startApp(t, cfg)
	addr := strings.TrimPrefix(a.URL(), "https://")

	for _, suite := range []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256} {
		_, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{suite}})
		require.Error(t, err, "a client offering only %s is refused", tls.CipherSuiteName(suite))
		require.Contains(t, err.Error(), "handshake failure")
	}
	_, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS11})
	require.Error(t, err, "TLS 1.1 is refused")

	for _, c := range []*tls.Config{
		{RootCAs: pool, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}},
		{RootCAs: pool, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}},
		{RootCAs: pool},
	} {
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: c}}
		resp, err := client.Get(a.URL() + "/healthz")
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, "max-age=63072000", resp.Header.Get("Strict-Transport-Security"))
		client.CloseIdleConnections()
	}
}

// TestConnectionCap: with --max-connections 2, a third connection is not
// served while two are open, and is served as soon as one closes.
func TestConnectionCap(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, store.SQLite)
	cfg.MaxConnections = 2
	a := startApp(t, cfg)
	addr := strings.TrimPrefix(a.URL(), "http://")

	// get sends one request on conn and reads the answer's status line.
	get := func(conn net.Conn) (string, error) {
		if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return "", err
		}
		line, err := bufio.NewReader(conn).ReadString('\n')
		return strings.TrimSpace(line), err
	}
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	// The baseline: how long an answer takes on a free slot.
	t0 := time.Now()
	first := dial()
	status, err := get(first)
	require.NoError(t, err)
	require.Equal(t, "HTTP/1.1 200 OK", status)
	baseline := time.Since(t0)
	second := dial()
	status, err = get(second)
	require.NoError(t, err)
	require.Equal(t, "HTTP/1.1 200 OK", status)

	// Both slots are held by kept-alive connections.
	third := dial()
	answered := make(chan string, 1)
	go func() {
		s, _ := get(third)
		answered <- s
	}()
	wait := max(50*baseline, 300*time.Millisecond)
	select {
	case s := <-answered:
		t.Fatalf("the third connection was answered (%q) while two were open", s)
	case <-time.After(wait):
	}
	first.Close()
	select {
	case s := <-answered:
		require.Equal(t, "HTTP/1.1 200 OK", s)
	case <-time.After(30 * time.Second):
		t.Fatal("the third connection was not served after a slot freed")
	}
}

// runServe starts the real binary with stderr on w and returns once it
// serves; stop sends SIGTERM and waits.
func runServe(t *testing.T, bin, dataDir string, stderr *os.File, args ...string) (stop func()) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0"}, args...)...)
	cmd.Env = hermeticEnv()
	cmd.Stderr = stderr
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	return func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
}

// TestAdminTokenStaysOutOfTheLogStream runs the real binary with --log-format
// json and stderr a pipe: the first admin token is only in admin.token
// (0600), every stderr line is a JSON log record, none holds the token, and
// one says where the file is. With stderr a terminal the token is shown on
// it.
func TestAdminTokenStaysOutOfTheLogStream(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildTrustflow(t)

	t.Run("pipe", func(t *testing.T) {
		dataDir := filepath.Join(t.TempDir(), "data")
		r, w, err := os.Pipe()
		require.NoError(t, err)
		stop := runServe(t, bin, dataDir, w, "--log-format", "json")
		w.Close()
		var lines []string
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if strings.Contains(sc.Text(), `"msg":"trustflow serving"`) {
				break
			}
		}
		stop()
		rest, _ := io.ReadAll(r)
		all := strings.Join(lines, "\n") + "\n" + string(rest)
		tokenFile := filepath.Join(dataDir, config.AdminTokenFile)
		requireMode(t, tokenFile, 0o600)
		b, err := os.ReadFile(tokenFile)
		require.NoError(t, err)
		secret := strings.TrimSpace(string(b))
		require.Regexp(t, secretForm, secret)
		require.NotContains(t, all, secret, "the admin token is not in the log stream")
		require.Empty(t, secretForm.FindAllString(all, -1))
		var sawFile bool
		for _, l := range strings.Split(strings.TrimSpace(all), "\n") {
			var rec map[string]any
			require.NoError(t, json.Unmarshal([]byte(l), &rec), "every stderr line is a JSON log record: %q", l)
			if rec["file"] == tokenFile {
				sawFile = true
			}
		}
		require.True(t, sawFile, "the log says where the token file is:\n%s", all)
	})

	t.Run("terminal", func(t *testing.T) {
		master, slave := openPTY(t)
		dataDir := filepath.Join(t.TempDir(), "data")
		stop := runServe(t, bin, dataDir, slave, "--log-format", "json")
		slave.Close()
		var out strings.Builder
		rd := bufio.NewReader(master)
		for !strings.Contains(out.String(), "trustflow serving") {
			line, err := rd.ReadString('\n')
			require.NoError(t, err, "terminal so far:\n%s", out.String())
			out.WriteString(line)
		}
		stop()
		b, err := os.ReadFile(filepath.Join(dataDir, config.AdminTokenFile))
		require.NoError(t, err)
		require.Equal(t, []string{strings.TrimSpace(string(b))}, secretForm.FindAllString(out.String(), -1), "the token is shown once on the terminal")
	})
}

// openPTY opens a pseudo-terminal pair (Linux).
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Skipf("unlockpt: %v", e)
	}
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Skipf("ptsname: %v", e)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.FormatUint(uint64(n), 10), os.O_RDWR|syscall.O_NOCTTY, 0)
	require.NoError(t, err)
	return m, s
}
