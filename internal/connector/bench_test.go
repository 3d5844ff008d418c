package connector_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/connector"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

// Benchmarks compare the connector with a bare http.Client configured the
// same way (same CA, client certificate, TLS minimum, ALPN and pool sizes)
// against one loopback mTLS server, measured in the same run: they report
// rates and ratios, never absolute times to assert on.

// bareClient is what a connector's client amounts to without trustflow:
// an http.Client with an equivalent tls.Config.
func bareClient(ca *truststoretest.CA, cert *truststoretest.Leaf, keepAlive bool) *http.Client {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		RootCAs:            ca.Pool(),
		NextProtos:         []string{"h2", "http/1.1"},
		ClientSessionCache: tls.NewLRUClientSessionCache(64),
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c := cert.TLSCertificate()
			return &c, nil
		},
	}
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext:           dialer.DialContext,
		TLSClientConfig:       cfg,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          128,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableKeepAlives:     !keepAlive,
	}}
}

func bareGet(c *http.Client, url string) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "trustflow")
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

func connectorGet(s *connector.Service, name string) error {
	resp, err := s.Do(context.Background(), name, connector.Request{Path: "/"})
	if err != nil {
		return err
	}
	if resp.Status != http.StatusOK {
		return fmt.Errorf("status %d", resp.Status)
	}
	return nil
}

// batch runs k calls from n goroutines and returns how long they took.
func batch(n, k int, call func() error) (time.Duration, error) {
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range n {
		wg.Go(func() {
			for next.Add(1) <= int64(k) {
				if err := call(); err != nil {
					failed.CompareAndSwap(nil, err)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err, ok := failed.Load().(error); ok {
		return elapsed, err
	}
	return elapsed, nil
}

// paired makes b.N calls through the connector from n goroutines,
// interleaved in batches with as many calls through the bare client, so
// that both see the same load on the machine; the timer covers only the
// connector's batches. It reports both rates (unit per second) and the
// connector's as a fraction of the bare one.
func paired(b *testing.B, n int, unit string, bare, conn func() error) {
	b.Helper()
	const size = 200
	var bareTime, connTime time.Duration
	b.ResetTimer()
	for done := 0; done < b.N; done += size {
		k := min(size, b.N-done)
		b.StopTimer()
		d, err := batch(n, k, bare)
		if err != nil {
			b.Fatal(err)
		}
		bareTime += d
		b.StartTimer()
		d, err = batch(n, k, conn)
		if err != nil {
			b.Fatal(err)
		}
		connTime += d
	}
	b.StopTimer()
	connRate, bareRate := float64(b.N)/connTime.Seconds(), float64(b.N)/bareTime.Seconds()
	b.ReportMetric(connRate, unit)
	b.ReportMetric(bareRate, "bare-"+unit)
	b.ReportMetric(connRate/bareRate, "x_bare")
}

// benchEnv is a server, a connector to it and the bare equivalent.
type benchEnv struct {
	e    *env
	srv  *testServer
	bare *http.Client
}

func newBenchEnv(b *testing.B, h http.Handler, serverTLS func(*tls.Config), h2, auditCalls, keepAlive bool) *benchEnv {
	b.Helper()
	var opts []envOption
	if !auditCalls {
		opts = append(opts, withoutCallAudit())
	}
	e := sqliteEnv(b, opts...)
	e.addCA(b, "demo", e.ca)
	cert := e.addIdentity(b, "svc", e.ca)
	cfg := serverConfig(e.ca.IssueServer(b, "127.0.0.1"), e.ca.Pool())
	if serverTLS != nil {
		serverTLS(cfg)
	}
	srv := startServer(b, h, cfg, h2)
	e.create(b, connector.Spec{Name: "bench", URL: srv.URL, Identity: "svc", CAs: []string{"demo"}})
	be := &benchEnv{e: e, srv: srv, bare: bareClient(e.ca, cert, keepAlive)}
	b.Cleanup(be.bare.CloseIdleConnections)
	// Warm both up: clients built, connections open, sessions cached.
	for range 2 {
		require.NoError(b, connectorGet(e.conns, "bench"))
		require.NoError(b, bareGet(be.bare, srv.URL))
	}
	return be
}

// BenchmarkCalls measures requests per second over kept-alive connections
// (HTTP/2, as the connector negotiates with a Go server), through the
// connector with and without the audit record of each call.
func BenchmarkCalls(b *testing.B) {
	for _, n := range []int{1, 16} {
		for _, auditCalls := range []bool{false, true} {
			name := fmt.Sprintf("conc=%d/unaudited", n)
			if auditCalls {
				name = fmt.Sprintf("conc=%d/audited", n)
			}
			b.Run(name, func(b *testing.B) {
				be := newBenchEnv(b, okHandler, nil, true, auditCalls, true)
				paired(b, n, "req/s", func() error { return bareGet(be.bare, be.srv.URL) },
					func() error { return connectorGet(be.e.conns, "bench") })
				require.Equal(b, int64(2), be.srv.newConns.Load(), "one kept-alive HTTP/2 connection each")
			})
		}
	}
}

// BenchmarkHandshakes measures new connections per second: the server
// closes each connection after its answer, so every call handshakes, in
// full (the server issues no session tickets) or resumed.
func BenchmarkHandshakes(b *testing.B) {
	closing := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		okHandler(w, r)
	})
	for _, resumed := range []bool{false, true} {
		mode := "full"
		serverTLS := func(c *tls.Config) { c.SessionTicketsDisabled = true }
		if resumed {
			mode, serverTLS = "resumed", nil
		}
		b.Run(mode, func(b *testing.B) {
			be := newBenchEnv(b, closing, serverTLS, false, false, false)
			resp, err := be.e.conns.Do(context.Background(), "bench", connector.Request{Path: "/"})
			require.NoError(b, err)
			require.Equal(b, resumed, resp.Evidence.Resumed)
			bresp, err := be.bare.Get(be.srv.URL)
			require.NoError(b, err)
			bresp.Body.Close()
			require.Equal(b, resumed, bresp.TLS.DidResume)
			conns := be.srv.newConns.Load()
			paired(b, 1, "handshakes/s", func() error { return bareGet(be.bare, be.srv.URL) },
				func() error { return connectorGet(be.e.conns, "bench") })
			require.Equal(b, int64(2*b.N), be.srv.newConns.Load()-conns, "one connection per call")
		})
	}
}

// BenchmarkConnectorMemory creates 1,000 connectors, builds each one's
// client with one call against the same server, and reports the heap in
// use per connector. With "closed" the server closes each connection, so
// the figure is the client alone; with "idle" each connector may keep its
// idle connection (only the most recently used, up to
// DefaultIdleConnectors, do), and the figure includes both ends of the
// connections kept (the server runs in this process).
func BenchmarkConnectorMemory(b *testing.B) {
	const connectors = 1000
	for _, mode := range []string{"closed", "idle"} {
		b.Run(mode, func(b *testing.B) {
			h := okHandler
			if mode == "closed" {
				h = func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Connection", "close")
					okHandler(w, r)
				}
			}
			var perConnector float64
			for range b.N {
				b.StopTimer()
				e := sqliteEnv(b, withoutCallAudit())
				e.addCA(b, "demo", e.ca)
				e.addIdentity(b, "svc", e.ca)
				srv := startServer(b, h, serverConfig(e.ca.IssueServer(b, "127.0.0.1"), e.ca.Pool()), true)
				for i := range connectors {
					e.create(b, connector.Spec{Name: fmt.Sprintf("c%04d", i), URL: srv.URL, Identity: "svc", CAs: []string{"demo"}})
				}
				require.NoError(b, connectorGet(e.conns, "c0000"))
				before := heapInUse()
				b.StartTimer()
				for i := range connectors {
					if err := connectorGet(e.conns, fmt.Sprintf("c%04d", i)); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				after := heapInUse()
				runtime.KeepAlive(e.conns)
				perConnector = float64(int64(after)-int64(before)) / (connectors - 1)
				srv.CloseClientConnections()
			}
			b.ReportMetric(perConnector, "heap-B/connector")
		})
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
