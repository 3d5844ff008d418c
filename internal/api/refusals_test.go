package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/trustflow/trustflow/internal/api"
	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

// from is a request from remote with an optional X-Forwarded-For.
func from(method, path, token, remote, xff string) *http.Request {
	r := newRequest(method, path, token, "")
	r.RemoteAddr = remote
	if xff != "" {
		r.Header.Set("X-Forwarded-For", xff)
	}
	return r
}

// TestRefusedSourceIsRateLimited: past its burst a source gets 429 with
// Retry-After and the JSON error naming the limit, before any token is
// looked at (a valid one included); other sources are not affected, and the
// bucket refills at the rate.
func TestRefusedSourceIsRateLimited(t *testing.T) {
	t.Parallel()
	e := newEnv(t, storetest.Open(t, store.SQLite), api.Config{Refusals: api.RefusalConfig{Rate: 10, Burst: 20}})
	const attacker = "203.0.113.9:5555"
	for i := range 20 {
		rec := e.serve(from("GET", "/api/v1/runs", "", attacker, ""))
		require.Equal(t, http.StatusUnauthorized, rec.Code, "refusal %d is within the burst", i+1)
	}
	before := e.head(t)
	for _, token := range []string{"", "tf_" + strings.Repeat("A", 43), e.admin} {
		rec := e.serve(from("GET", "/api/v1/runs", token, attacker, ""))
		requireError(t, rec, http.StatusTooManyRequests, errorDetail{Code: "rate_limited",
			Message: "too many refused requests from 203.0.113.9 (limit auth_fail_rate: 10 a second, auth_fail_burst: 20)",
			Hint:    "wait for Retry-After seconds and send a valid token; requests with a valid token are refused too while this source is over the limit"})
		require.Equal(t, "1", rec.Header().Get("Retry-After"))
	}
	require.Equal(t, before, e.head(t), "a rate-limited request writes no audit record of its own")

	// Another source is served, and refused, as usual.
	require.Equal(t, http.StatusOK, e.serve(from("GET", "/api/v1/runs", e.admin, "198.51.100.4:1", "")).Code)
	require.Equal(t, http.StatusUnauthorized, e.serve(from("GET", "/api/v1/runs", "", "198.51.100.4:1", "")).Code)

	// A tenth of a second gives one refusal back.
	e.clock.Advance(100 * time.Millisecond)
	require.Equal(t, http.StatusUnauthorized, e.serve(from("GET", "/api/v1/runs", "", attacker, "")).Code)
	require.Equal(t, http.StatusTooManyRequests, e.serve(from("GET", "/api/v1/runs", "", attacker, "")).Code)
	// The public routes are limited too once the source is over.
	require.Equal(t, http.StatusTooManyRequests, e.serve(from("GET", "/healthz", "", attacker, "")).Code)
	e.clock.Advance(2 * time.Second)
	require.Equal(t, http.StatusOK, e.serve(from("GET", "/api/v1/runs", e.admin, attacker, "")).Code)
}

// TestForwardedForOnlyFromTrustedProxies: X-Forwarded-For names the source
// only when the peer is a configured proxy.
func TestForwardedForOnlyFromTrustedProxies(t *testing.T) {
	t.Parallel()
	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	cases := []struct {
		remote, xff string
		trusted     []netip.Prefix
		want        string
	}{
		{"192.0.2.1:1234", "", nil, "192.0.2.1"},
		{"192.0.2.1:1234", "198.51.100.7", nil, "192.0.2.1"},
		{"192.0.2.1:1234", "198.51.100.7", proxies, "192.0.2.1"},
		{"10.1.2.3:80", "198.51.100.7", proxies, "198.51.100.7"},
		{"10.1.2.3:80", "203.0.113.1, 198.51.100.7", proxies, "198.51.100.7"},
		{"10.1.2.3:80", "198.51.100.7, 10.9.9.9", proxies, "198.51.100.7"},
		{"10.1.2.3:80", "garbage, 10.9.9.9", proxies, "10.9.9.9"},
		{"10.1.2.3:80", "", proxies, "10.1.2.3"},
		{"10.1.2.3:80", "[2001:db8:1:2:3::9]:443", proxies, "2001:db8:1:2::/64"},
		{"[2001:db8:aa:bb::1]:9", "", nil, "2001:db8:aa:bb::/64"},
		{"[::ffff:192.0.2.8]:9", "", nil, "192.0.2.8"},
		{"not an address", "", proxies, "unknown"},
	}
	for _, tc := range cases {
		r := from("GET", "/", "", tc.remote, tc.xff)
		require.Equal(t, tc.want, api.SourceOf(r, tc.trusted), "%s via %q", tc.remote, tc.xff)
	}

	// Behind a trusted proxy, two clients have buckets of their own.
	e := newEnv(t, storetest.Open(t, store.SQLite), api.Config{Refusals: api.RefusalConfig{Rate: 1, Burst: 2, TrustedProxies: proxies}})
	for range 2 {
		require.Equal(t, http.StatusUnauthorized, e.serve(from("GET", "/api/v1/runs", "", "10.0.0.5:1", "198.51.100.1")).Code)
	}
	require.Equal(t, http.StatusTooManyRequests, e.serve(from("GET", "/api/v1/runs", "", "10.0.0.5:1", "198.51.100.1")).Code)
	require.Equal(t, http.StatusUnauthorized, e.serve(from("GET", "/api/v1/runs", "", "10.0.0.5:1", "198.51.100.2")).Code)
}

// deniedRecords are the auth.denied records after seq.
func deniedRecords(t *testing.T, e *env, seq int64) []audit.Record {
	t.Helper()
	var out []audit.Record
	for {
		page := e.recordsAfter(t, seq)
		if len(page) == 0 {
			return out
		}
		for _, r := range page {
			if r.Action == "auth.denied" {
				out = append(out, r)
			}
		}
		seq = page[len(page)-1].Seq
	}
}

// countOf is how many refusals a record stands for.
func countOf(t *testing.T, r audit.Record) int64 {
	var d struct {
		Aggregated bool  `json:"aggregated"`
		Count      int64 `json:"count"`
	}
	require.NoError(t, json.Unmarshal(r.Details, &d))
	if !d.Aggregated {
		return 1
	}
	return d.Count
}

// recordBytes is a record's size as exported (one JSON line).
func recordBytes(t *testing.T, r audit.Record) int {
	b, err := json.Marshal(r)
	require.NoError(t, err)
	return len(b) + 1
}

// TestRefusedFloodWritesBoundedRecords floods the API from one anonymous
// source at 1000 requests a second (100 times the limit) for three minutes
// of the fake clock: the audit log gets the first refusal at once and then
// one record a minute, whose counts add up to every request; then many
// sources at once get at most MaxRecorded records each way plus one summary,
// and the table stays within MaxSources.
func TestRefusedFloodWritesBoundedRecords(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		ctx := context.Background()
		e := newEnv(t, st, api.Config{Refusals: api.RefusalConfig{MaxSources: 300, MaxRecorded: 50}})
		before := e.head(t)
		const perSecond, minutes = 1000, 3
		n := 0
		for m := range minutes {
			for range 60 * perSecond {
				rec := e.serve(from("GET", "/api/v1/audit", "", "203.0.113.50:4000", ""))
				require.Contains(t, []int{http.StatusUnauthorized, http.StatusTooManyRequests}, rec.Code)
				n++
				e.clock.Advance(time.Second / perSecond)
			}
			e.server.FlushRefusals(ctx)
			require.Len(t, deniedRecords(t, e, before.Seq), m+2, "after minute %d: the first refusal, then one record a minute", m+1)
		}
		recs := deniedRecords(t, e, before.Seq)
		var total int64
		bytes := 0
		for _, r := range recs {
			total += countOf(t, r)
			bytes += recordBytes(t, r)
		}
		require.EqualValues(t, n, total, "every refused request is counted")
		var agg struct {
			Source  string           `json:"source"`
			Reasons map[string]int64 `json:"reasons"`
			Routes  map[string]int64 `json:"routes"`
		}
		require.NoError(t, json.Unmarshal(recs[1].Details, &agg))
		require.Equal(t, "203.0.113.50", agg.Source)
		require.Equal(t, "source/203.0.113.50", recs[1].Target)
		require.Equal(t, map[string]int64{"GET /api/v1/audit": 60*perSecond - 1}, agg.Routes)
		require.Greater(t, agg.Reasons["rate_limited"], int64(50*perSecond), "most of the flood was answered 429 without work")
		perHour := recordBytes(t, recs[1]) * 60
		t.Logf("%s: %d refused requests in %d minutes -> %d records, %d bytes; a one-source flood writes %d bytes an hour (60 records of %d bytes), %.0f bytes an hour before aggregation",
			st.Dialect(), n, minutes, len(recs), bytes, perHour, recordBytes(t, recs[1]), float64(recordBytes(t, recs[0]))*perSecond*3600)

		// Many sources: 400 sources refused 3 times each in one interval.
		before = e.head(t)
		for i := range 400 {
			for range 3 {
				e.serve(from("GET", "/api/v1/tokens", "", fmt.Sprintf("198.18.%d.%d:1", i/256, i%256), ""))
			}
		}
		require.LessOrEqual(t, e.server.TrackedSources(), 300, "the table holds at most MaxSources")
		e.server.FlushRefusals(ctx)
		recs = deniedRecords(t, e, before.Seq)
		require.LessOrEqual(t, len(recs), 50+50+1, "at most MaxRecorded records at once, MaxRecorded aggregated, and one summary")
		total = 0
		for _, r := range recs {
			total += countOf(t, r)
		}
		require.EqualValues(t, 1200, total, "every refused request is counted, in a record of its source or the summary")
		require.Equal(t, "source/*", recs[len(recs)-1].Target)

		// A quiet interval closes the windows: the next refusal is recorded at once.
		e.server.FlushRefusals(ctx)
		before = e.head(t)
		e.clock.Advance(time.Hour)
		e.serve(from("GET", "/api/v1/audit", "", "203.0.113.50:4000", ""))
		recs = deniedRecords(t, e, before.Seq)
		require.Len(t, recs, 1)
		require.Equal(t, "GET /api/v1/audit", recs[0].Target)
		v, err := e.audit.Verify(ctx)
		require.NoError(t, err)
		require.True(t, v.OK, "%+v", v)
	})
}

// TestFloodDoesNotSlowAuthenticatedWrites measures the latency of
// authenticated writes (token creation: a row and its audit record) over
// loopback HTTP, alone and during an anonymous flood from another source at
// about 300 requests a second (30 times the limit; the test shares two cores
// with its flooders), and requires the flood to cost at most a ratio of
// that baseline; the flood itself leaves two records.
func TestFloodDoesNotSlowAuthenticatedWrites(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("measures latency under load")
	}
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		e := newEnv(t, st, api.Config{Clock: realClock{}, Refusals: api.RefusalConfig{TrustedProxies: loopback}})
		srv := httptest.NewServer(e.server.Handler())
		t.Cleanup(srv.Close)
		client := srv.Client()
		write := func(i int) time.Duration {
			req, err := http.NewRequest("POST", srv.URL+"/api/v1/tokens", strings.NewReader(fmt.Sprintf(`{"name":"w%d","role":"operator"}`, i)))
			require.NoError(t, err)
			req.Header.Set("Authorization", "Bearer "+e.admin)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-Forwarded-For", "198.51.100.1")
			t0 := time.Now()
			resp, err := client.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, http.StatusCreated, resp.StatusCode)
			return time.Since(t0)
		}
		// Writes are paced alike alone and under the flood, one every
		// 20ms, so each median covers the same span of time.
		median := func(from, n int) time.Duration {
			ds := make([]time.Duration, n)
			for i := range n {
				ds[i] = write(from + i)
				time.Sleep(20 * time.Millisecond) // pacing, not waiting for an event
			}
			sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
			return ds[n/2]
		}
		const writes = 50
		write(-1) // warm the connection pool
		baseline := median(0, writes)

		before := e.head(t)
		ctx, stop := context.WithCancel(context.Background())
		var flooded atomic.Int64
		started := make(chan struct{})
		var once sync.Once
		lim := rate.NewLimiter(300, 10) // the flood: 300 requests a second, 30 times the limit
		var wg sync.WaitGroup
		for w := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for lim.Wait(ctx) == nil {
					req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/api/v1/audit", nil)
					req.Header.Set("X-Forwarded-For", "203.0.113.7")
					req.Header.Set("Authorization", fmt.Sprintf("Bearer tf_%043d", w))
					resp, err := client.Do(req)
					if err != nil {
						continue
					}
					resp.Body.Close()
					if flooded.Add(1) == 300 {
						once.Do(func() { close(started) })
					}
				}
			}()
		}
		<-started
		t0 := time.Now()
		n0 := flooded.Load()
		during := median(writes, writes)
		elapsed := time.Since(t0)
		rate := float64(flooded.Load()-n0) / elapsed.Seconds()
		stop()
		wg.Wait()
		ratio := float64(during) / float64(baseline)
		t.Logf("%s: median write %s alone, %s during a flood of %.0f requests a second (ratio %.2f)", st.Dialect(), baseline, during, rate, ratio)
		require.Greater(t, rate, 100.0, "the flood ran far above the limit of 10 a second")
		require.Less(t, ratio, 4.0, "the flood slowed authenticated writes %.1f times", ratio)

		e.server.Stop()
		recs := deniedRecords(t, e, before.Seq)
		require.Len(t, recs, 2, "the flood's first refusal, and one record for the rest on shutdown")
		// Every answered flood request is counted; up to one a flooder was
		// cut off by the stop after the server counted it.
		counted := countOf(t, recs[0]) + countOf(t, recs[1])
		require.GreaterOrEqual(t, counted, flooded.Load())
		require.LessOrEqual(t, counted, flooded.Load()+4)
	})
}

// realClock is the wall clock, for tests over real connections.
type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// TestMetricsAuth: /metrics is public by default; with MetricsAuth it needs
// a valid token of any role.
func TestMetricsAuth(t *testing.T) {
	t.Parallel()
	st := storetest.Open(t, store.SQLite)
	open := newEnv(t, st, api.Config{})
	require.Equal(t, http.StatusOK, open.do("GET", "/metrics", "", "").Code)

	e := newEnv(t, storetest.Open(t, store.SQLite), api.Config{MetricsAuth: true})
	rec := e.do("GET", "/metrics", "", "")
	requireError(t, rec, http.StatusUnauthorized, errorDetail{Code: "unauthenticated", Message: "a valid API token is required", Hint: hintUnauthenticated})
	_, auditor := e.createToken(t, "scraper", "auditor", "")
	rec = e.do("GET", "/metrics", auditor, "")
	require.Equal(t, http.StatusOK, rec.Code)
	require.Contains(t, rec.Body.String(), "trustflow_http_requests_total")
	op := e.server.OpenAPI()["paths"].(map[string]any)["/metrics"].(map[string]any)["get"].(map[string]any)
	require.Equal(t, "system:read", op["x-trustflow-permission"])
}
