package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/api"
	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/connector"
	"github.com/trustflow/trustflow/internal/engine"
	"github.com/trustflow/trustflow/internal/policy"
	"github.com/trustflow/trustflow/internal/probe"
	"github.com/trustflow/trustflow/internal/seal"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/truststore"
)

// start is the fake clock's starting time in every API test.
var start = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)

// remoteAddr is what httptest.NewRequest puts in Request.RemoteAddr.
const remoteAddr = "192.0.2.1:1234"

// Public hints the tests pin.
const (
	hintUnauthenticated = "send Authorization: Bearer <token>; create one with `trustflow token create`, or use the admin token printed at first start"
	hintNotFound        = "check the name or id; list what exists with the matching list command"
	hintUnknownField    = "remove it; the API reference at /api/v1/openapi.json lists the fields"
)

// env is an API server over a real store, with a fake clock and a
// bootstrapped admin token.
type env struct {
	store  *store.Store
	clock  *clock.Fake
	audit  *audit.Log
	auth   *auth.Service
	server *api.Server
	// trust and connectors are wired as the composition root wires them,
	// so that every route the server can serve is registered.
	trust      *truststore.Service
	connectors *connector.Service
	// eng is the engine behind the flow routes; its workers run only in
	// tests that start it.
	eng *engine.Engine
	// admin is the bootstrap admin token's secret and adminP its principal.
	admin  string
	adminP auth.Principal
	logs   *syncBuffer
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
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

// newEnv builds the API over st. cfg may set MaxBodyBytes and Build; the
// services are filled in here.
func newEnv(t testing.TB, st *store.Store, cfg api.Config) *env {
	t.Helper()
	e := &env{store: st, clock: clock.NewFake(start), logs: &syncBuffer{}}
	e.audit = audit.New(st, e.clock)
	e.auth = auth.NewService(st, e.audit, e.clock)
	secret, created, err := e.auth.Bootstrap(context.Background())
	require.NoError(t, err)
	require.True(t, created)
	e.admin = secret
	e.adminP, err = e.auth.Authenticate(context.Background(), secret)
	require.NoError(t, err)
	logger := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	kek, err := seal.NewKEK()
	require.NoError(t, err)
	e.trust, err = truststore.New(truststore.Config{Store: st, Audit: e.audit, Keyring: seal.NewKeyring(kek), Clock: e.clock})
	require.NoError(t, err)
	e.connectors, err = connector.New(connector.Config{Store: st, Audit: e.audit, Trust: e.trust, Clock: e.clock, Logger: logger})
	require.NoError(t, err)
	e.trust.SetInUse(e.connectors.InUse)
	prober, err := probe.New(probe.Config{Trust: e.trust, Audit: e.audit, Clock: e.clock})
	require.NoError(t, err)
	eng, err := engine.New(context.Background(), engine.Config{Store: st, Audit: e.audit, Connectors: e.connectors, Trust: e.trust, Clock: e.clock, Logger: logger})
	require.NoError(t, err)
	cfg.Store, cfg.Auth, cfg.Audit, cfg.Trust, cfg.Connectors = st, e.auth, e.audit, e.trust, e.connectors
	if cfg.Probe == nil {
		cfg.Probe = prober
	}
	cfg.Engine = eng
	e.eng = eng
	if cfg.Policy == nil {
		cfg.Policy, err = policy.NewService(context.Background(), policy.ServiceConfig{Store: st, Audit: e.audit, Clock: e.clock})
		require.NoError(t, err)
	}
	cfg.Logger = logger
	if cfg.Clock == nil {
		cfg.Clock = e.clock
	}
	e.server = api.New(cfg)
	return e
}

// createToken issues a token directly through the service.
func (e *env) createToken(t testing.TB, name string, role auth.Role, expiresIn string) (auth.Token, string) {
	t.Helper()
	tok, secret, err := e.auth.Create(context.Background(), e.adminP, auth.CreateRequest{Name: name, Role: string(role), ExpiresIn: expiresIn})
	require.NoError(t, err)
	return tok, secret
}

// newRequest builds a request; an empty token sends no Authorization
// header, and a JSON body gets Content-Type application/json.
func newRequest(method, path, token, body string) *http.Request {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r := httptest.NewRequest(method, path, rd)
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	return r
}

// serve runs r through the server's root handler.
func (e *env) serve(r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	e.server.Handler().ServeHTTP(rec, r)
	return rec
}

// do builds and serves a request.
func (e *env) do(method, path, token, body string) *httptest.ResponseRecorder {
	return e.serve(newRequest(method, path, token, body))
}

// head is the audit chain's head.
func (e *env) head(t testing.TB) store.AuditHead {
	t.Helper()
	h, err := e.store.AuditHead(context.Background())
	require.NoError(t, err)
	return h
}

// records returns every audit record after seq, oldest first.
func (e *env) recordsAfter(t testing.TB, seq int64) []audit.Record {
	t.Helper()
	recs, err := e.audit.List(context.Background(), audit.Filter{AfterSeq: seq, Ascending: true, Limit: 1000})
	require.NoError(t, err)
	return recs
}

// tokenCount counts the rows of the tokens table.
func (e *env) tokenCount(t testing.TB) int {
	t.Helper()
	var n int
	require.NoError(t, e.store.DB().QueryRow("SELECT COUNT(*) FROM tokens").Scan(&n))
	return n
}

// errorBody is the API's error wire form.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code      string           `json:"code"`
	Message   string           `json:"message"`
	Hint      string           `json:"hint"`
	Field     string           `json:"field"`
	RequestID string           `json:"request_id"`
	Problems  []map[string]any `json:"problems"`
	UsedBy    []string         `json:"used_by"`
}

// decodeStrict decodes exactly one JSON value of type T, refusing unknown
// fields and trailing data.
func decodeStrict[T any](t testing.TB, b []byte) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&v), "body: %s", b)
	_, err := dec.Token()
	require.ErrorIs(t, err, io.EOF, "trailing data after the JSON value: %s", b)
	return v
}

// requireJSON checks a JSON answer's status and decodes it strictly.
func requireJSON[T any](t testing.TB, rec *httptest.ResponseRecorder, status int) T {
	t.Helper()
	require.Equal(t, status, rec.Code, "body: %s", rec.Body)
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	return decodeStrict[T](t, rec.Body.Bytes())
}

// requireError checks that rec is the error want with the given status,
// in the {"error":{"code","message","hint"}} form, carrying the request id.
func requireError(t testing.TB, rec *httptest.ResponseRecorder, status int, want errorDetail) {
	t.Helper()
	got := requireJSON[errorBody](t, rec, status)
	id := rec.Header().Get("X-Request-Id")
	require.Len(t, id, 16)
	require.Equal(t, id, got.Error.RequestID)
	want.RequestID = id
	if want.Field == "" && got.Error.Field != "" {
		// A field-level error names its field, and its message starts with it.
		require.True(t, strings.HasPrefix(got.Error.Message, got.Error.Field+": "), "message %q names field %q", got.Error.Message, got.Error.Field)
		want.Field = got.Error.Field
	}
	require.Equal(t, want, got.Error)
	require.NotEmpty(t, got.Error.Hint, "every error says how to fix it")
}
