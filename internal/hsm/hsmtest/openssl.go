package hsmtest

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// OpenSSLServer is `openssl s_server -www -Verify 1 -verify_return_error`
// on a loopback port: a TLS server that refuses a client without a
// certificate signed by its client CA, and answers an HTTP GET.
type OpenSSLServer struct {
	// Addr is host:port.
	Addr string
	cmd  *exec.Cmd
	dir  string
}

// StartOpenSSL starts the server with certPEM and keyPEM as its identity,
// trusting clientCAPEM for client certificates. Close stops it. It returns
// an error when openssl is missing or does not start.
func StartOpenSSL(certPEM, keyPEM, clientCAPEM []byte) (*OpenSSLServer, error) {
	if _, err := exec.LookPath("openssl"); err != nil {
		return nil, errors.New("hsmtest: openssl is not installed")
	}
	d, err := os.MkdirTemp("", "trustflow-openssl-")
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{"cert.pem": certPEM, "key.pem": keyPEM, "ca.pem": clientCAPEM}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(d, name), data, 0o600); err != nil {
			os.RemoveAll(d)
			return nil, err
		}
	}
	cmd := exec.Command("openssl", "s_server", "-accept", "127.0.0.1:0", "-www",
		"-cert", filepath.Join(d, "cert.pem"), "-key", filepath.Join(d, "key.pem"),
		"-CAfile", filepath.Join(d, "ca.pem"), "-Verify", "1", "-verify_return_error")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(d)
		return nil, err
	}
	cmd.Stderr = nil
	if err := cmd.Start(); err != nil {
		os.RemoveAll(d)
		return nil, err
	}
	s := &OpenSSLServer{cmd: cmd, dir: d}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "ACCEPT "); ok {
				addr <- a
				break
			}
		}
		for sc.Scan() { // drain, so the server never blocks on a full pipe
		}
	}()
	select {
	case s.Addr = <-addr:
		return s, nil
	case <-time.After(10 * time.Second):
		s.Close()
		return nil, errors.New("hsmtest: openssl s_server printed no ACCEPT line within 10s")
	}
}

// Close stops the server.
func (s *OpenSSLServer) Close() {
	if s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	}
	os.RemoveAll(s.dir)
}
