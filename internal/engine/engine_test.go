package engine_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/connector"
	"github.com/trustflow/trustflow/internal/engine"
	"github.com/trustflow/trustflow/internal/seal"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
	"github.com/trustflow/trustflow/internal/truststore"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

var admin = audit.Actor{ID: "tok_admin", Name: "admin", Role: "admin"}

// directory is a loopback mTLS API that records, per Idempotency-Key, how
// many requests it got and when they arrived.
//
// Besides the offboarding routes it serves:
//   - any method on /ok/{name...}: 200 with {"key", "n", "body"} (n counts
//     the requests that carried the key so far);
//   - any method on /status/{code}: that status, with Retry-After taken from
//     the retry_after query parameter;
//   - any method on /script/{name}: the statuses queued in script[name] first
//     (with Retry-After from retry_after), then 200.
type directory struct {
	srv    *httptest.Server
	mu     sync.Mutex
	keys   map[string]int
	hits   map[string][]hit // Idempotency-Key -> requests, in arrival order
	fail   map[string]int   // path -> remaining 503 answers
	script map[string][]int // name -> statuses to answer before 200
	// delay, when set, says how long to wait before answering.
	delay func() time.Duration
}

// hit is one request the directory received.
type hit struct {
	At   time.Time
	Path string
	Body string
}

func newDirectory(t testing.TB, ca *truststoretest.CA) *directory {
	d := &directory{keys: map[string]int{}, hits: map[string][]hit{}, fail: map[string]int{}, script: map[string][]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /users/{id}", func(w http.ResponseWriter, r *http.Request) {
		if _, fail := d.record(r); fail {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":%q,"login":"jdoe","active":true,"groups":["vpn","payroll","hr"]}`, r.PathValue("id"))
	})
	mux.HandleFunc("POST /disable", func(w http.ResponseWriter, r *http.Request) {
		h, _ := d.record(r)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"disabled":%s}`, h.Body)
	})
	mux.HandleFunc("DELETE /groups/{g}/members/{id}", func(w http.ResponseWriter, r *http.Request) {
		d.record(r)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("/ok/{name...}", func(w http.ResponseWriter, r *http.Request) {
		h, _ := d.record(r)
		key := r.Header.Get("Idempotency-Key")
		d.mu.Lock()
		n := d.keys[key]
		d.mu.Unlock()
		var body any
		if err := json.Unmarshal([]byte(h.Body), &body); err != nil {
			body = h.Body
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"key": key, "n": n, "body": body}) //nolint:errcheck // the client may have gone
	})
	mux.HandleFunc("/status/{code}", func(w http.ResponseWriter, r *http.Request) {
		d.record(r)
		code, err := strconv.Atoi(r.PathValue("code"))
		if err != nil {
			code = http.StatusBadRequest
		}
		if ra := r.URL.Query().Get("retry_after"); ra != "" {
			w.Header().Set("Retry-After", ra)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"code":%d}`, code)
	})
	mux.HandleFunc("/script/{name}", func(w http.ResponseWriter, r *http.Request) {
		d.record(r)
		d.mu.Lock()
		code := http.StatusOK
		if q := d.script[r.PathValue("name")]; len(q) > 0 {
			code, d.script[r.PathValue("name")] = q[0], q[1:]
		}
		d.mu.Unlock()
		if ra := r.URL.Query().Get("retry_after"); ra != "" && code != http.StatusOK {
			w.Header().Set("Retry-After", ra)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"code":%d}`, code)
	})
	srvLeaf := ca.IssueServer(t, "127.0.0.1")
	d.srv = httptest.NewUnstartedServer(mux)
	d.srv.TLS = &tls.Config{Certificates: []tls.Certificate{srvLeaf.TLSCertificate()}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool()}
	d.srv.StartTLS()
	t.Cleanup(d.srv.Close)
	return d
}

// record notes a request; fail says whether a queued 503 is due for its path.
func (d *directory) record(r *http.Request) (h hit, fail bool) {
	body, _ := io.ReadAll(r.Body) // a broken body is recorded as far as it came
	h = hit{At: time.Now(), Path: r.URL.Path, Body: string(body)}
	d.mu.Lock()
	key := r.Header.Get("Idempotency-Key")
	d.keys[key]++
	d.hits[key] = append(d.hits[key], h)
	if d.fail[r.URL.Path] > 0 {
		d.fail[r.URL.Path]--
		fail = true
	}
	delay := d.delay
	d.mu.Unlock()
	if delay != nil {
		time.Sleep(delay()) // the remote end's own latency, after the request is on record
	}
	return h, fail
}

// count is how many requests carried key.
func (d *directory) count(key string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.keys[key]
}

// requests returns the requests that carried key.
func (d *directory) requests(key string) []hit {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.hits[key])
}

// snapshot copies every key's requests.
func (d *directory) snapshot() map[string][]hit {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string][]hit, len(d.hits))
	for k, v := range d.hits {
		out[k] = slices.Clone(v)
	}
	return out
}

type env struct {
	eng   *engine.Engine
	dir   *directory
	st    *store.Store
	audit *audit.Log
	trust *truststore.Service
	conns *connector.Service
	ca    *truststoretest.CA
	log   *syncBuffer
}

func (e *env) trustRotate(ctx context.Context, leaf *truststoretest.Leaf) (truststore.RotateResult, error) {
	return e.trust.Rotate(ctx, admin, truststore.RotateRequest{Name: "svc", Material: truststore.Material{Cert: leaf.CertPEM(), Key: leaf.KeyPEM()}})
}

// syncBuffer collects the engine's log for a failing test to show.
type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newEnv builds an engine over st, with connectors "hr" and "directory"
// pointing at a fresh directory, and starts its workers.
func newEnv(t testing.TB, st *store.Store) *env {
	return newEnvWith(t, st, nil)
}

// newEnvWith is newEnv with the engine's config adjusted by tune.
func newEnvWith(t testing.TB, st *store.Store, tune func(*engine.Config)) *env {
	t.Helper()
	ctx := context.Background()
	kek, err := seal.NewKEK()
	require.NoError(t, err)
	log := audit.New(st, nil)
	trust, err := truststore.New(truststore.Config{Store: st, Audit: log, Keyring: seal.NewKeyring(kek)})
	require.NoError(t, err)
	conns, err := connector.New(connector.Config{Store: st, Audit: log, Trust: trust})
	require.NoError(t, err)
	ca := truststoretest.NewCA(t)
	dir := newDirectory(t, ca)
	_, err = trust.AddCA(ctx, admin, truststore.CARequest{Name: "demo", Data: ca.CertPEM()})
	require.NoError(t, err)
	cl := ca.IssueClient(t, "trustflow")
	_, err = trust.Import(ctx, admin, truststore.ImportRequest{Name: "svc", Material: truststore.Material{Cert: cl.CertPEM(), Key: cl.KeyPEM()}})
	require.NoError(t, err)
	for _, name := range []string{"hr", "directory"} {
		_, err = conns.Create(ctx, admin, connector.Spec{Name: name, URL: dir.srv.URL, Identity: "svc", CAs: []string{"demo"}})
		require.NoError(t, err)
	}
	logs := &syncBuffer{}
	cfg := engine.Config{Store: st, Audit: log, Connectors: conns, Trust: trust, PollInterval: 10 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if tune != nil {
		tune(&cfg)
	}
	eng, err := engine.New(ctx, cfg)
	require.NoError(t, err)
	require.NoError(t, eng.Start(ctx))
	t.Cleanup(func() {
		eng.Stop(context.Background()) //nolint:errcheck // the test is over
		if t.Failed() {
			t.Logf("engine log:\n%s", logs.String())
		}
	})
	return &env{eng: eng, dir: dir, st: st, audit: log, trust: trust, conns: conns, ca: ca, log: logs}
}

// apply applies flow documents, failing the test on any problem.
func (e *env) apply(t testing.TB, docs ...string) []engine.Applied {
	t.Helper()
	var srcs []engine.Source
	for i, d := range docs {
		srcs = append(srcs, engine.Source{Filename: fmt.Sprintf("flow-%d.yaml", i), Source: d})
	}
	applied, err := e.eng.Apply(context.Background(), admin, srcs)
	require.NoError(t, err)
	return applied
}

// start starts a run of flow, failing the test if it is refused.
func (e *env) start(t testing.TB, flow string, input map[string]any) engine.RunView {
	t.Helper()
	run, err := e.eng.StartRun(context.Background(), engine.StartRequest{Flow: flow, Input: input, Actor: admin})
	require.NoError(t, err)
	return run
}

// wait waits (at most 30s) for a run to end and returns it with its steps.
func (e *env) wait(t testing.TB, id string) engine.RunView {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run, err := e.eng.Wait(ctx, id)
	require.NoError(t, err)
	require.Contains(t, []string{engine.StatusSucceeded, engine.StatusFailed, engine.StatusCancelled}, run.Status, "run %s did not end in 30s", id)
	return run
}

// run starts a run and waits for it to end.
func (e *env) run(t testing.TB, flow string, input map[string]any) engine.RunView {
	t.Helper()
	return e.wait(t, e.start(t, flow, input).ID)
}

// until polls the run (every 10ms, at most 20s) until cond holds.
func (e *env) until(t testing.TB, id string, what string, cond func(engine.RunView) bool) engine.RunView {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		run, err := e.eng.GetRun(context.Background(), id)
		require.NoError(t, err)
		if cond(run) {
			return run
		}
		require.True(t, time.Now().Before(deadline), "run %s: %s did not happen in 20s; it is %s", id, what, run.Status)
		time.Sleep(10 * time.Millisecond)
	}
}

// steps indexes a run's steps by path.
func steps(run engine.RunView) map[string]engine.StepView {
	out := map[string]engine.StepView{}
	for _, s := range run.Steps {
		out[s.Path] = s
	}
	return out
}

const offboard = `apiVersion: trustflow/v1
kind: Flow
name: offboard-user
trigger: {manual: {}}
input:
  user_id: {type: string, required: true}
  api_key: {type: string, secret: true}
steps:
  - id: lookup
    call: {connector: hr, method: GET, path: "/users/${input.user_id}", headers: {Accept: application/json}}
    retry: {max_attempts: 3, initial_backoff: 10ms, max_backoff: 50ms}
  - id: decide
    if: ${steps.lookup.status == 200 && steps.lookup.body.active}
    then:
      - id: disable
        call: {connector: directory, method: POST, path: /disable, body: {login: "${steps.lookup.body.login}"}}
    else:
      - id: note
        set: {skipped: true}
  - id: groups
    foreach: ${steps.lookup.body.groups}
    as: group
    concurrency: 2
    steps:
      - id: remove
        call: {connector: directory, method: DELETE, path: "/groups/${group}/members/${input.user_id}"}
  - id: pause
    sleep: 50ms
  - id: summary
    set: {removed: "${steps.groups.results[2].remove.status}", key: "${input.api_key}"}
output: {status: "${steps.lookup.status}", login: "${steps.disable.body.disabled.login}"}
`

func TestRunOffboardFlow(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newEnv(t, st)
		e.dir.fail["/users/42"] = 1 // the first lookup answers 503: retried
		applied, err := e.eng.Apply(ctx, admin, []engine.Source{{Filename: "offboard.yaml", Source: offboard}})
		require.NoError(t, err)
		require.Equal(t, []engine.Applied{{Name: "offboard-user", Version: 1, Changed: true, Filename: "offboard.yaml"}}, applied)
		again, err := e.eng.Apply(ctx, admin, []engine.Source{{Filename: "offboard.yaml", Source: "# same flow\n" + offboard}})
		require.NoError(t, err)
		require.False(t, again[0].Changed, "an unchanged document creates no version")

		run, err := e.eng.StartRun(ctx, engine.StartRequest{Flow: "offboard-user", Input: map[string]any{"user_id": "42", "api_key": "sk-very-secret"}, Actor: admin})
		require.NoError(t, err)
		// A node with a worker free starts the run at once.
		require.Equal(t, engine.StatusRunning, run.Status)
		require.Equal(t, "[redacted]", run.Input["api_key"])
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		done, err := e.eng.Wait(wctx, run.ID)
		require.NoError(t, err)
		require.Equal(t, engine.StatusSucceeded, done.Status, "%+v", done.Error)
		require.Equal(t, map[string]any{"status": float64(200), "login": "jdoe"}, done.Output)

		got, err := e.eng.GetRun(ctx, run.ID)
		require.NoError(t, err)
		byPath := map[string]engine.StepView{}
		for _, s := range got.Steps {
			byPath[s.Path] = s
		}
		require.Equal(t, 2, byPath["lookup"].Attempts, "the 503 was retried once")
		require.Equal(t, engine.StepSucceeded, byPath["decide"].Status)
		require.Equal(t, map[string]any{"branch": "then"}, byPath["decide"].Output)
		require.Equal(t, engine.StepSucceeded, byPath["decide.disable"].Status)
		for i := range 3 {
			require.Equal(t, engine.StepSucceeded, byPath[fmt.Sprintf("groups[%d].remove", i)].Status)
		}
		require.Equal(t, map[string]any{"removed": float64(204), "key": "[redacted]"}, byPath["summary"].Output)
		ev := byPath["lookup"].Evidence.(map[string]any)
		require.Equal(t, true, ev["server_requested_client_cert"])

		e.dir.mu.Lock()
		defer e.dir.mu.Unlock()
		require.Equal(t, 2, e.dir.keys[run.ID+"/lookup"], "both attempts carried the same Idempotency-Key")
		require.Equal(t, 1, e.dir.keys[run.ID+"/decide.disable"])
		require.Equal(t, 1, e.dir.keys[run.ID+"/groups[2].remove"])
		raw, err := json.Marshal(got)
		require.NoError(t, err)
		require.NotContains(t, string(raw), "sk-very-secret")
	})
}
