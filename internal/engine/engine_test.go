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

// directory is a loopback mTLS API that records every Idempotency-Key.
type directory struct {
	srv  *httptest.Server
	mu   sync.Mutex
	keys map[string]int
	fail map[string]int // path -> remaining 503 answers
}

func newDirectory(t *testing.T, ca *truststoretest.CA) *directory {
	d := &directory{keys: map[string]int{}, fail: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /users/{id}", func(w http.ResponseWriter, r *http.Request) {
		if d.record(r) {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":%q,"login":"jdoe","active":true,"groups":["vpn","payroll","hr"]}`, r.PathValue("id"))
	})
	mux.HandleFunc("POST /disable", func(w http.ResponseWriter, r *http.Request) {
		d.record(r)
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"disabled":%s}`, body)
	})
	mux.HandleFunc("DELETE /groups/{g}/members/{id}", func(w http.ResponseWriter, r *http.Request) {
		d.record(r)
		w.WriteHeader(http.StatusNoContent)
	})
	srvLeaf := ca.IssueServer(t, "127.0.0.1")
	d.srv = httptest.NewUnstartedServer(mux)
	d.srv.TLS = &tls.Config{Certificates: []tls.Certificate{srvLeaf.TLSCertificate()}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool()}
	d.srv.StartTLS()
	t.Cleanup(d.srv.Close)
	return d
}

func (d *directory) record(r *http.Request) (fail bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.keys[r.Header.Get("Idempotency-Key")]++
	if d.fail[r.URL.Path] > 0 {
		d.fail[r.URL.Path]--
		return true
	}
	return false
}

type env struct {
	eng   *engine.Engine
	dir   *directory
	st    *store.Store
	trust *truststore.Service
	ca    *truststoretest.CA
}

func (e *env) trustRotate(ctx context.Context, leaf *truststoretest.Leaf) (truststore.RotateResult, error) {
	return e.trust.Rotate(ctx, admin, truststore.RotateRequest{Name: "svc", Material: truststore.Material{Cert: leaf.CertPEM(), Key: leaf.KeyPEM()}})
}

func newEnv(t *testing.T, st *store.Store) *env {
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
	eng, err := engine.New(ctx, engine.Config{Store: st, Audit: log, Connectors: conns, Trust: trust, PollInterval: 10 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	require.NoError(t, eng.Start(ctx))
	t.Cleanup(func() { eng.Stop(context.Background()) })
	return &env{eng: eng, dir: dir, st: st, trust: trust, ca: ca}
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
    set: {removed: "${size(steps.groups.results)}", key: "${input.api_key}"}
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
		require.Equal(t, engine.StatusQueued, run.Status)
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
		require.Equal(t, map[string]any{"removed": "3", "key": "[redacted]"}, byPath["summary"].Output)
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
