package engine_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/connector"
	"github.com/trustflow/trustflow/internal/engine"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

// The memory test starts 50 hostile runs at once (strings doubled in a
// foreach, strings multiplied by replace, sub-flows that run each other,
// call answers over the output limit, foreach lists over the item limit)
// and measures the peak of the Go heap while they run, against the peak
// of 50 benign runs measured in the same process just before. Each hostile
// run must fail with its limit's code; the heap must stay within a
// generous multiple of the baseline.

// benignFlow is a run of ordinary size: a lookup, 32 calls eight at a
// time, a sub-flow.
const benignFlow = `apiVersion: trustflow/v1
kind: Flow
name: benign
trigger: {manual: {}}
steps:
  - id: lookup
    call: {connector: hr, method: GET, path: /users/42}
  - id: each
    foreach: ${[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32]}
    concurrency: 8
    steps:
      - id: grant
        call: {connector: directory, method: POST, path: "/ok/grant/${item}", body: {login: "${steps.lookup.body.login}", n: "${item}"}}
  - id: child
    flow: {name: benign-child, input: {n: "${size(steps.each.results)}"}}
output: {n: "${steps.child.n}"}
`

const benignChild = `apiVersion: trustflow/v1
kind: Flow
name: benign-child
trigger: {manual: {}}
input:
  n: {type: integer, required: true}
steps:
  - id: twice
    set: {n: "${input.n * 2}"}
output: ${steps.twice}
`

// hostileDouble doubles a 1 KiB string eleven times in each of 64
// concurrent iterations: the tenth doubling (1 MiB, and its JSON) is over
// the step output limit.
func hostileDouble() string {
	var b strings.Builder
	b.WriteString(`apiVersion: trustflow/v1
kind: Flow
name: hostile-double
trigger: {manual: {}}
input:
  seed: {type: string, required: true}
steps:
  - id: each
    foreach: ${input.seed.substring(0, 64).split('')}
    concurrency: 64
    steps:
      - id: d0
        set: {s: "${input.seed}"}
`)
	for i := 1; i <= 11; i++ {
		fmt.Fprintf(&b, "      - id: d%d\n        set: {s: \"${steps.d%d.s + steps.d%d.s}\"}\n", i, i-1, i-1)
	}
	return b.String()
}

const hostileReplace = `apiVersion: trustflow/v1
kind: Flow
name: hostile-replace
trigger: {manual: {}}
input:
  seed: {type: string, required: true}
steps:
  - id: each
    foreach: ${[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]}
    concurrency: 16
    steps:
      - id: boom
        set: {s: "${input.seed.replace('a', input.seed)}"}
`

// hostileBig calls, 64 at a time, an endpoint that answers 8 MiB: the
// body is read up to the step output limit, which the result is then
// over.
const hostileBig = `apiVersion: trustflow/v1
kind: Flow
name: hostile-big
trigger: {manual: {}}
steps:
  - id: each
    foreach: ${[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64]}
    concurrency: 64
    steps:
      - id: fetch
        call: {connector: big, method: GET, path: /big}
        continue_on_error: true
  - id: use
    set: {sizes: "${steps.each.results.map(r, r.fetch.error.code)}"}
  - id: stop
    fail: {message: "${steps.use.sizes[0]}", code: "${steps.use.sizes[0]}"}
`

// bigServer is an mTLS endpoint whose /big answers 8 MiB of JSON, written
// from one buffer (its own memory does not grow with the requests).
func bigServer(t *testing.T, e *env) {
	t.Helper()
	body := []byte(`{"blob":"` + strings.Repeat("b", 8<<20) + `"}`)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body) //nolint:errcheck // the client stops reading at its limit
	}))
	leaf := e.ca.IssueServer(t, "127.0.0.1")
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLSCertificate()}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: e.ca.Pool()}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	_, err := e.conns.Create(context.Background(), admin, connector.Spec{Name: "big", URL: srv.URL, Identity: "svc", CAs: []string{"demo"}})
	require.NoError(t, err)
}

const hostileItems = `apiVersion: trustflow/v1
kind: Flow
name: hostile-items
trigger: {manual: {}}
input:
  items: {type: array, required: true}
steps:
  - id: each
    foreach: ${input.items}
    concurrency: 64
    steps:
      - id: note
        set: {n: "${item}"}
`

// peaks are the highest samples of the process's memory while runs ran.
type peaks struct {
	// heap is the Go heap's objects, live and not yet swept.
	heap uint64
	// live is the live heap as the last garbage collection found it.
	live uint64
	// rss is the process's resident set.
	rss uint64
}

// rss reads the process's resident set size from /proc (0 elsewhere).
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * uint64(os.Getpagesize())
}

// memoryPeak samples the process's memory until stop is closed and
// returns the highest samples.
func memoryPeak(stop <-chan struct{}) <-chan peaks {
	out := make(chan peaks, 1)
	go func() {
		sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/heap/live:bytes"}}
		var p peaks
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(sample)
			p.heap = max(p.heap, sample[0].Value.Uint64())
			p.live = max(p.live, sample[1].Value.Uint64())
			p.rss = max(p.rss, rss())
			select {
			case <-stop:
				out <- p
				return
			case <-t.C:
			}
		}
	}()
	return out
}

// measure starts every run at once, waits for all to end, and returns the
// heap's peak meanwhile and the runs.
func measure(t *testing.T, e *env, starts []func() (engine.RunView, error)) (peaks, []engine.RunView) {
	t.Helper()
	runtime.GC()
	stop := make(chan struct{})
	peak := memoryPeak(stop)
	ids := make([]string, len(starts))
	var wg sync.WaitGroup
	var refused atomic.Int64
	for i, start := range starts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			run, err := start()
			if err != nil {
				refused.Add(1)
				t.Errorf("start %d: %v", i, err)
				return
			}
			ids[i] = run.ID
		}()
	}
	wg.Wait()
	require.Zero(t, refused.Load())
	runs := make([]engine.RunView, len(ids))
	for i, id := range ids {
		runs[i] = e.waitLong(t, id, 5*time.Minute)
	}
	close(stop)
	return <-peak, runs
}

func TestHostileRunsStayWithinMemoryBound(t *testing.T) {
	// Not parallel: the heap is the process's.
	st := storetest.Open(t, store.SQLite)
	e := newEnv(t, st)
	bigServer(t, e)
	e.apply(t, benignChild, benignFlow, hostileDouble(), hostileReplace, hostileBig, hostileItems)
	e.apply(t, strings.Replace(loopB, "  - id: call_a\n    flow: {name: loop-a}\n", "  - id: end\n    set: {}\n", 1))
	e.apply(t, loopA)
	raceCycle(t, st)
	ctx := context.Background()
	start := func(flow string, in map[string]any) func() (engine.RunView, error) {
		return func() (engine.RunView, error) {
			return e.eng.StartRun(ctx, engine.StartRequest{Flow: flow, Input: in, Actor: admin})
		}
	}

	var benign []func() (engine.RunView, error)
	for range 50 {
		benign = append(benign, start("benign", nil))
	}
	base, runs := measure(t, e, benign)
	for _, r := range runs {
		require.Equal(t, engine.StatusSucceeded, r.Status, "%+v", r.Error)
		require.Equal(t, map[string]any{"n": float64(64)}, r.Output)
	}

	seed := strings.Repeat("a", 1024)
	many := make([]any, engine.DefaultForeachItems+1)
	for i := range many {
		many[i] = i
	}
	var hostile []func() (engine.RunView, error)
	want := map[string][]string{}
	for i := range 50 {
		switch i % 5 {
		case 0:
			hostile = append(hostile, start("hostile-double", map[string]any{"seed": seed}))
			// 64 iterations of half a MiB are over the run state limit
			// first, or one doubling over the step output limit.
			want["hostile-double"] = []string{"limit_run_state", "limit_step_output"}
		case 1:
			hostile = append(hostile, start("hostile-replace", map[string]any{"seed": strings.Repeat("a", 3000)}))
			want["hostile-replace"] = []string{"limit_expression_result"}
		case 2:
			hostile = append(hostile, start("loop-a", nil))
			want["loop-a"] = []string{"subflow_failed"}
		case 3:
			hostile = append(hostile, start("hostile-big", nil))
			want["hostile-big"] = []string{"limit_step_output"}
		case 4:
			hostile = append(hostile, start("hostile-items", map[string]any{"items": many}))
			want["hostile-items"] = []string{"limit_foreach_items"}
		}
	}
	peak, runs := measure(t, e, hostile)
	for _, r := range runs {
		require.Equal(t, engine.StatusFailed, r.Status, "%s run %s", r.Flow, r.ID)
		if !assert.Contains(t, want[r.Flow], r.Error.Code, "%s run %s: %+v", r.Flow, r.ID, r.Error) {
			for _, st := range r.Steps {
				if st.Error != nil && st.Error.Code != "limit_step_output" {
					t.Logf("%s: %+v", st.Path, st.Error)
				}
			}
			t.FailNow()
		}
	}
	deepest := e.deepest(t, runs[2].ID)
	require.Equal(t, "limit_subflow_depth", steps(deepest)[map[string]string{"loop-a": "call_b", "loop-b": "call_a"}[deepest.Flow]].Error.Code)

	ratio := float64(peak.heap) / float64(base.heap)
	t.Logf("peak Go heap (objects, live and unswept): 50 benign runs %.1f MiB, 50 hostile runs %.1f MiB (%.1fx)", mib(base.heap), mib(peak.heap), ratio)
	t.Logf("peak live heap (as the last GC found it): 50 benign runs %.1f MiB, 50 hostile runs %.1f MiB (%.1fx)", mib(base.live), mib(peak.live), float64(peak.live)/float64(base.live))
	require.Less(t, ratio, 25.0, "hostile runs took the heap to %.1f MiB, %.1fx the benign runs' %.1f MiB", mib(peak.heap), ratio, mib(base.heap))
	// The documented bound (docs/security.md): what a node holds beyond
	// its baseline is about twice the run state it may hold, twice its
	// budget for call answers, and what its work slots build.
	bound := base.live + 3*2*engine.DefaultRunStateBytes + 3*32<<20 + 8*5*engine.DefaultStepOutputBytes
	require.Less(t, peak.live, uint64(bound), "the live heap reached %.1f MiB; the documented bound here is %.1f MiB", mib(peak.live), mib(uint64(bound)))
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// raceCycle makes loop-b run loop-a, as two applies at once could have
// (each checks the graph without the other's change).
func raceCycle(t *testing.T, st *store.Store) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, st.InTx(ctx, func(tx *store.Tx) error {
		head, err := tx.FlowByName(ctx, "loop-b")
		if err != nil {
			return err
		}
		head.CurrentVersion++
		if err := tx.UpdateFlow(ctx, head); err != nil {
			return err
		}
		return tx.InsertFlowVersion(ctx, store.FlowVersion{FlowName: "loop-b", Version: head.CurrentVersion, Digest: "race", Filename: "b.yaml", Source: loopB, CreatedAt: time.Now(), CreatedBy: admin.ID})
	}))
}
