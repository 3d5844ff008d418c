package app

import (
	"crypto/fips140"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/trustflow/trustflow/internal/config"
	"github.com/trustflow/trustflow/internal/tlsconfig"
)

// Timeouts of the HTTP server. The API sets per-route deadlines within
// them: every answer gets config.WriteTimeout from its first byte, ?wait=
// lifts the read deadline by the wait, and streamed answers (audit export,
// KEK rotation progress) get a write deadline per write.
const (
	// readHeaderTimeout bounds reading a request's headers.
	readHeaderTimeout = 10 * time.Second
	// readTimeout bounds reading a whole request, body included (1 MiB
	// by default). Its expiry also cancels a handler still working.
	readTimeout = 60 * time.Second
	// idleTimeout closes a kept-alive connection without requests.
	idleTimeout = 120 * time.Second
	// maxHeaderBytes bounds a request's headers (Go's default is 1 MiB).
	maxHeaderBytes = 64 << 10
	// hstsValue asks browsers to use HTTPS only, for two years.
	hstsValue = "max-age=63072000"
)

// httpServer is the HTTP server for handler under cfg: its timeouts,
// header cap and, with --tls-cert, its TLS configuration and HSTS.
func httpServer(cfg config.Config, handler http.Handler, log *slog.Logger) (*http.Server, error) {
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		// A backstop for answers outside the API (the console's pages);
		// the API's own deadlines are tighter.
		WriteTimeout:   readTimeout + cfg.WriteTimeout,
		IdleTimeout:    idleTimeout,
		MaxHeaderBytes: maxHeaderBytes,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if cfg.TLSCert == "" {
		return srv, nil
	}
	tc, err := serverTLSConfig(cfg)
	if err != nil {
		return nil, err
	}
	srv.TLSConfig = tc
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Strict-Transport-Security", hstsValue)
		handler.ServeHTTP(w, r)
	})
	return srv, nil
}

// serverTLSConfig is the API listener's TLS: 1.2 or 1.3, and in 1.2 only
// ECDHE suites with AEAD ciphers (no CBC, no SHA-1 MAC, no RSA key
// exchange); AES-GCM and P-256/P-384 only under --fips.
func serverTLSConfig(cfg config.Config) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("app: --tls-cert/--tls-key: %w", err)
	}
	tc := tlsconfig.Server(tlsconfig.ServerOptions{Certificates: []tls.Certificate{cert}, FIPS: cfg.FIPS || fips140.Enabled()})
	tc.NextProtos = []string{"h2", "http/1.1"}
	return tc, nil
}

// limitListener accepts at most cap(slots) connections at once; Accept
// waits for one to close, and further clients wait in the kernel's accept
// queue.
type limitListener struct {
	net.Listener
	slots     chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
}

func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, n), closed: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.closed:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.slots }}, nil
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// showAdminToken puts the first admin token on the terminal, never in the
// log stream: on w when it is a terminal, or a writer that is not a file
// (an in-process caller's); when w is a file that is not a terminal (a pipe
// to a log shipper, a journal), only the token file has it, and the log
// says where.
func showAdminToken(w io.Writer, log *slog.Logger, path, secret string) {
	if f, ok := w.(*os.File); ok && !term.IsTerminal(int(f.Fd())) {
		log.Info("created the first admin token; stderr is not a terminal, so it is shown nowhere but in its file (0600)", "file", path)
		return
	}
	fmt.Fprintf(w, "\ntrustflow: created the first admin token (shown once; also written to %s):\n\n    %s\n\n", path, secret)
}
