package connector_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/connector"
	"github.com/trustflow/trustflow/internal/truststore"
)

// serialLog records the serial of every client certificate a server saw.
type serialLog struct {
	mu   sync.Mutex
	seen map[string]int
}

func (l *serialLog) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serial := r.TLS.PeerCertificates[0].SerialNumber.Text(16)
		l.mu.Lock()
		l.seen[serial]++
		l.mu.Unlock()
		okHandler(w, r)
	})
}

func (l *serialLog) saw(serial string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seen[serial] > 0
}

// TestRotationUnderLoad rotates the identity every 100ms while 16
// goroutines call through the connector: no request may fail, and the
// server must see every version that was active.
func TestRotationUnderLoad(t *testing.T) {
	const (
		workers  = 16
		every    = 100 * time.Millisecond
		duration = 3 * time.Second
		settle   = 300 * time.Millisecond
	)
	ctx := context.Background()
	e := sqliteEnv(t, withoutCallAudit())
	e.addCA(t, "demo", e.ca)
	e.addIdentity(t, "svc", e.ca)
	serials := &serialLog{seen: map[string]int{}}
	srv := startServer(t, serials.handler(), serverConfig(e.ca.IssueServer(t, "127.0.0.1"), e.ca.Pool()), true)
	e.create(t, mtlsSpec("hr", srv))
	rotated := []string{e.activeVersion(t, "svc").Serial}
	_, err := e.conns.Do(ctx, "hr", connector.Request{Path: "/"})
	require.NoError(t, err)

	stop := make(chan struct{})
	var calls, failures atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := e.conns.Do(ctx, "hr", connector.Request{Path: "/"})
				calls.Add(1)
				if err == nil && resp.Status != http.StatusOK {
					err = fmt.Errorf("status %d", resp.Status)
				}
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		})
	}

	// The rotating goroutine calls once right after each rotation, so that
	// every version is used even when a stall of the whole process outlasts
	// a 100ms window; the 16 workers supply the load.
	start := time.Now()
	tick := time.NewTicker(every)
	for time.Since(start) < duration {
		<-tick.C
		next := e.ca.IssueClient(t, fmt.Sprintf("trustflow svc v%d", len(rotated)+1))
		_, err := e.trust.Rotate(ctx, admin, truststore.RotateRequest{Name: "svc", Material: truststore.Material{Cert: next.CertPEM(), Key: next.KeyPEM()}})
		require.NoError(t, err)
		rotated = append(rotated, next.Cert.SerialNumber.Text(16))
		resp, err := e.conns.Do(ctx, "hr", connector.Request{Path: "/"})
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.Status)
	}
	tick.Stop()
	// Keep calling a moment after the last rotation, so that it is seen.
	settled := time.NewTimer(settle)
	<-settled.C
	close(stop)
	wg.Wait()
	elapsed := time.Since(start)

	t.Logf("%d calls in %s across %d rotations, %d new connections", calls.Load(), elapsed.Round(time.Millisecond), len(rotated)-1, srv.newConns.Load())
	require.Zero(t, failures.Load(), "failed calls during rotation; first: %v", firstErr.Load())
	require.GreaterOrEqual(t, len(rotated), 10, "too few rotations to mean anything")
	for i, serial := range rotated {
		require.True(t, serials.saw(serial), "the server never saw version %d (serial %s)", i+1, serial)
	}
	resp, err := e.conns.Do(ctx, "hr", connector.Request{Path: "/"})
	require.NoError(t, err)
	require.Equal(t, rotated[len(rotated)-1], resp.Evidence.ClientCertificate.Serial, "the last rotation is what is presented now")
}

// TestConcurrentRevalidation makes many callers revalidate one cached
// client at the same moment (the clock jumps past RevalidateAfter) while
// others read it; run with -race.
func TestConcurrentRevalidation(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(time.Now())
	e := sqliteEnv(t, withClock(clk))
	e.addCA(t, "demo", e.ca)
	e.addIdentity(t, "svc", e.ca)
	srv := startServer(t, okHandler, serverConfig(e.ca.IssueServer(t, "127.0.0.1"), e.ca.Pool()), true)
	e.create(t, mtlsSpec("hr", srv))
	_, err := e.conns.Do(ctx, "hr", connector.Request{Path: "/"})
	require.NoError(t, err)

	for range 20 {
		clk.Advance(2 * time.Second)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 8 {
			wg.Go(func() {
				_, err := e.conns.Do(ctx, "hr", connector.Request{Path: "/"})
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
	}
	require.Equal(t, int64(1), srv.newConns.Load(), "revalidating an unchanged connector keeps its client and connection")
}
