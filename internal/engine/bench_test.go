package engine_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/connector"
	"github.com/trustflow/trustflow/internal/engine"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

// The benchmarks report ratios against a baseline measured in the same
// run (the same mTLS endpoint called through connector.Service.Do
// directly), never absolute thresholds: the machine varies, the ratio
// says what the engine costs.

const benchFlow = `apiVersion: trustflow/v1
kind: Flow
name: bench
trigger: {manual: {}}
steps:
  - id: fetch
    call: {connector: hr, method: GET, path: /ok/fetch}
  - id: note
    set: {status: "${steps.fetch.status}"}
`

const benchSteps = 5

const benchChain = `apiVersion: trustflow/v1
kind: Flow
name: chain
trigger: {manual: {}}
steps:
  - id: s1
    call: {connector: hr, method: GET, path: /ok/s1}
  - id: s2
    call: {connector: hr, method: GET, path: /ok/s2}
  - id: s3
    call: {connector: hr, method: GET, path: /ok/s3}
  - id: s4
    call: {connector: hr, method: GET, path: /ok/s4}
  - id: s5
    call: {connector: hr, method: GET, path: /ok/s5}
`

// benchEnv is newEnv with the engine's production defaults (poll
// interval, workers).
func benchEnv(b *testing.B, d string) *env {
	b.Helper()
	for _, dialect := range storetest.Dialects(b) {
		if string(dialect) == d {
			return newEnvWith(b, storetest.Open(b, dialect), func(c *engine.Config) { c.PollInterval = 0 })
		}
	}
	b.Fatalf("no dialect %s", d)
	return nil
}

func benchDialects(b *testing.B, fn func(b *testing.B, dialect string)) {
	for _, d := range storetest.Dialects(b) {
		b.Run(string(d), func(b *testing.B) { fn(b, string(d)) })
	}
}

// direct calls the directory through the connector, as a step would.
func (e *env) direct(b *testing.B, key string) {
	resp, err := e.conns.Do(context.Background(), "hr", connector.Request{Method: http.MethodGet, Path: "/ok/direct", IdempotencyKey: key, Header: http.Header{}})
	require.NoError(b, err)
	require.Equal(b, http.StatusOK, resp.Status)
}

// BenchmarkRunThroughput starts b.N runs of a one-call flow at once and
// waits for all; the baseline is b.N direct calls, as many at once as the
// engine has workers.
func BenchmarkRunThroughput(b *testing.B) {
	benchDialects(b, func(b *testing.B, d string) {
		e := benchEnv(b, d)
		e.apply(b, benchFlow)
		const workers = 16 // the engine's default
		began := time.Now()
		var wg sync.WaitGroup
		next := make(chan int)
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					e.direct(b, fmt.Sprintf("direct/%d", i))
				}
			}()
		}
		for i := range b.N {
			next <- i
		}
		close(next)
		wg.Wait()
		direct := time.Since(began)

		b.ResetTimer()
		began = time.Now()
		ids := make([]string, b.N)
		for i := range b.N {
			ids[i] = e.start(b, "bench", nil).ID
		}
		for _, id := range ids {
			run := e.wait(b, id)
			require.Equal(b, engine.StatusSucceeded, run.Status, "%+v", run.Error)
		}
		elapsed := time.Since(began)
		b.StopTimer()
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "runs/s")
		b.ReportMetric(float64(b.N)/direct.Seconds(), "direct-calls/s")
		b.ReportMetric(direct.Seconds()/elapsed.Seconds(), "runs-per-direct-call")
	})
}

// BenchmarkFirstStepLatency measures, one run at a time and 16 at a time,
// the time from calling StartRun to the first step's request at the
// endpoint; the baseline is the time from calling Do to the request's
// arrival.
func BenchmarkFirstStepLatency(b *testing.B) {
	benchDialects(b, func(b *testing.B, d string) {
		e := benchEnv(b, d)
		e.apply(b, benchFlow)
		var base []time.Duration
		for i := range b.N {
			key := fmt.Sprintf("direct/%d", i)
			t0 := time.Now()
			e.direct(b, key)
			base = append(base, e.dir.requests(key)[0].At.Sub(t0))
		}
		b50, b99 := percentile(base, 50), percentile(base, 99)

		b.ResetTimer()
		b.ReportMetric(ms(b50), "direct-p50-ms")
		b.ReportMetric(ms(b99), "direct-p99-ms")
		for _, c := range []int{1, 16} {
			// From the call that starts the run (its transaction included)
			// to its first request at the endpoint, c runs at a time.
			var mu sync.Mutex
			var lat []time.Duration
			var wg sync.WaitGroup
			next := make(chan struct{})
			for range c {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range next {
						asked := time.Now()
						run := e.start(b, "bench", nil)
						done := e.wait(b, run.ID)
						require.Equal(b, engine.StatusSucceeded, done.Status, "%+v", done.Error)
						mu.Lock()
						lat = append(lat, e.dir.requests(run.ID + "/fetch")[0].At.Sub(asked))
						mu.Unlock()
					}
				}()
			}
			for range b.N {
				next <- struct{}{}
			}
			close(next)
			wg.Wait()
			p50, p99 := percentile(lat, 50), percentile(lat, 99)
			b.ReportMetric(ms(p50), fmt.Sprintf("c=%d-p50-ms", c))
			b.ReportMetric(ms(p99), fmt.Sprintf("c=%d-p99-ms", c))
			if c == 1 {
				b.ReportMetric(float64(p50)/float64(max(b50, time.Microsecond)), "c=1-p50-vs-direct")
			}
		}
	})
}

// BenchmarkStepOverhead runs a flow of five sequential calls, one run at a
// time, and compares its duration with five direct calls made in the same
// iteration: (run - direct) / steps is what the engine adds to a step
// (queue pickup, expression evaluation, checkpoint commit).
func BenchmarkStepOverhead(b *testing.B) {
	benchDialects(b, func(b *testing.B, d string) {
		e := benchEnv(b, d)
		e.apply(b, benchChain)
		var runTotal, directTotal time.Duration
		b.ResetTimer()
		for i := range b.N {
			t0 := time.Now()
			for k := range benchSteps {
				e.direct(b, fmt.Sprintf("direct/%d/%d", i, k))
			}
			directTotal += time.Since(t0)

			t0 = time.Now()
			run := e.start(b, "chain", nil)
			done := e.wait(b, run.ID)
			runTotal += time.Since(t0)
			require.Equal(b, engine.StatusSucceeded, done.Status, "%+v", done.Error)
		}
		b.StopTimer()
		steps := float64(b.N * benchSteps)
		b.ReportMetric(ms(runTotal)/steps, "run-ms/step")
		b.ReportMetric(ms(directTotal)/steps, "direct-ms/call")
		b.ReportMetric(ms(runTotal-directTotal)/steps, "overhead-ms/step")
		b.ReportMetric(float64(runTotal)/float64(directTotal), "run-vs-direct")
	})
}

func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
