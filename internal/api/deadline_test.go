package api_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/api"
	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

// smallBuffers is a listener whose connections have a small send buffer,
// so that a client that stops reading blocks the server's writes soon.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		_ = c.(*net.TCPConn).SetWriteBuffer(4096)
	}
	return c, err
}

// TestExportDropsAClientThatStopsReading: an audit export to a client that
// reads the headers and then nothing is dropped by the per-write deadline,
// not held open; a client that reads gets the whole export.
func TestExportDropsAClientThatStopsReading(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const writeTimeout = 300 * time.Millisecond
	e := newEnv(t, storetest.Open(t, store.SQLite), api.Config{WriteTimeout: writeTimeout, Clock: realClock{}})
	for i := range 3000 {
		require.NoError(t, e.audit.Record(ctx, audit.Entry{Actor: audit.System, Action: "test.fill", Target: fmt.Sprintf("fill/%d", i),
			Details: map[string]any{"padding": strings.Repeat("x", 200)}}))
	}
	srv := httptest.NewUnstartedServer(e.server.Handler())
	closed := make(chan time.Time, 16)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed <- time.Now()
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv.Listener = smallBuffers{ln}
	srv.Start()
	t.Cleanup(srv.Close)

	// A client that reads everything gets every record.
	req, err := http.NewRequest("GET", srv.URL+"/api/v1/audit/export", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+e.admin)
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	require.NoError(t, err)
	lines := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines++
	}
	resp.Body.Close()
	require.GreaterOrEqual(t, lines, 3000)

	// A client with a small receive window that stops reading.
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	conn, err := d.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "GET /api/v1/audit/export HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", e.admin)
	require.NoError(t, err)
	head := make([]byte, 512)
	_, err = conn.Read(head)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(head), "HTTP/1.1 200 OK"), "%s", head)
	stopped := time.Now()
	select {
	case at := <-drainTo(closed, 2):
		t.Logf("the server dropped the stalled export %s after the client stopped reading (write timeout %s)", at.Sub(stopped).Round(time.Millisecond), writeTimeout)
	case <-time.After(200 * writeTimeout):
		t.Fatalf("the server still holds the export %s after the client stopped reading", 200*writeTimeout)
	}
	require.Contains(t, e.logs.String(), "audit export failed")
}

// drainTo returns a channel that gets the n-th value sent on c (the first
// connection, which read everything, closes too).
func drainTo(c <-chan time.Time, n int) <-chan time.Time {
	out := make(chan time.Time, 1)
	go func() {
		var t time.Time
		for range n {
			t = <-c
		}
		out <- t
	}()
	return out
}
