package web_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/connector"
	"github.com/trustflow/trustflow/internal/engine"
	"github.com/trustflow/trustflow/internal/seal"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/truststore"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
	"github.com/trustflow/trustflow/internal/web"
)

// env is the console over a real store and the real services, served by
// an httptest server, with a fake clock and a bootstrapped admin token.
type env struct {
	st         *store.Store
	clock      *clock.Fake
	audit      *audit.Log
	auth       *auth.Service
	trust      *truststore.Service
	connectors *connector.Service
	engine     *engine.Engine
	console    *web.Console
	srv        *httptest.Server
	admin      string
	adminP     auth.Principal
}

func newEnv(t *testing.T, st *store.Store) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{st: st, clock: clock.NewFake(time.Now().UTC())}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	e.audit = audit.New(st, e.clock)
	e.auth = auth.NewService(st, e.audit, e.clock)
	secret, _, err := e.auth.Bootstrap(ctx)
	require.NoError(t, err)
	e.admin = secret
	e.adminP, err = e.auth.Authenticate(ctx, secret)
	require.NoError(t, err)
	kek, err := seal.NewKEK()
	require.NoError(t, err)
	e.trust, err = truststore.New(truststore.Config{Store: st, Audit: e.audit, Keyring: seal.NewKeyring(kek), Clock: e.clock})
	require.NoError(t, err)
	e.connectors, err = connector.New(connector.Config{Store: st, Audit: e.audit, Trust: e.trust, Clock: e.clock, Logger: logger})
	require.NoError(t, err)
	e.trust.SetInUse(e.connectors.InUse)
	e.engine, err = engine.New(ctx, engine.Config{Store: st, Audit: e.audit, Connectors: e.connectors, Trust: e.trust, Clock: e.clock, Logger: logger})
	require.NoError(t, err)
	e.console, err = web.New(web.Config{Auth: e.auth, Audit: e.audit, Trust: e.trust, Connectors: e.connectors, Engine: e.engine, Clock: e.clock, Logger: logger,
		API: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "api", http.StatusTeapot) })})
	require.NoError(t, err)
	e.srv = httptest.NewServer(e.console.Handler())
	t.Cleanup(e.srv.Close)
	return e
}

// token issues a token of role directly through the service.
func (e *env) token(t *testing.T, role auth.Role) string {
	t.Helper()
	_, secret, err := e.auth.Create(context.Background(), e.adminP, auth.CreateRequest{Name: "web-" + string(role), Role: string(role)})
	require.NoError(t, err)
	return secret
}

// browser is an HTTP client with a cookie jar that does not follow
// redirects, and the CSRF token of its session.
type browser struct {
	t    *testing.T
	e    *env
	c    *http.Client
	csrf string
}

func (e *env) browser(t *testing.T) *browser {
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	return &browser{t: t, e: e, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// signIn signs in with token and remembers the session's CSRF token.
func (e *env) signIn(t *testing.T, token string) *browser {
	t.Helper()
	b := e.browser(t)
	resp, body := b.get("/ui/signin")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	m := csrfField.FindStringSubmatch(body)
	require.NotNil(t, m, body)
	resp, _ = b.postForm("/ui/signin", url.Values{"csrf": {m[1]}, "token": {token}, "next": {"/ui/"}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, "/ui/", resp.Header.Get("Location"))
	resp, body = b.get("/ui/")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	m = csrfField.FindStringSubmatch(body)
	require.NotNil(t, m, body)
	b.csrf = m[1]
	return b
}

func (b *browser) do(req *http.Request) (*http.Response, string) {
	b.t.Helper()
	resp, err := b.c.Do(req)
	require.NoError(b.t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(b.t, err)
	return resp, string(body)
}

func (b *browser) get(path string) (*http.Response, string) {
	b.t.Helper()
	req, err := http.NewRequest("GET", b.e.srv.URL+path, nil)
	require.NoError(b.t, err)
	return b.do(req)
}

// postForm posts v as it is (no CSRF token added).
func (b *browser) postForm(path string, v url.Values) (*http.Response, string) {
	b.t.Helper()
	req, err := http.NewRequest("POST", b.e.srv.URL+path, strings.NewReader(v.Encode()))
	require.NoError(b.t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

// post posts v with the session's CSRF token.
func (b *browser) post(path string, v url.Values) (*http.Response, string) {
	b.t.Helper()
	if v == nil {
		v = url.Values{}
	}
	v.Set("csrf", b.csrf)
	return b.postForm(path, v)
}

// upload posts a multipart form with fields and files (field name to
// content) and the session's CSRF token unless fields sets one.
func (b *browser) upload(path string, fields map[string]string, files map[string][]byte) (*http.Response, string) {
	b.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if _, ok := fields["csrf"]; !ok {
		require.NoError(b.t, mw.WriteField("csrf", b.csrf))
	}
	for k, v := range fields {
		require.NoError(b.t, mw.WriteField(k, v))
	}
	for k, v := range files {
		fw, err := mw.CreateFormFile(k, k+".pem")
		require.NoError(b.t, err)
		_, err = fw.Write(v)
		require.NoError(b.t, err)
	}
	require.NoError(b.t, mw.Close())
	req, err := http.NewRequest("POST", b.e.srv.URL+path, &buf)
	require.NoError(b.t, err)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	return b.do(req)
}

// fixture is a trust store and mTLS endpoint to exercise every page with.
type fixture struct {
	ca     *truststoretest.CA
	client *truststoretest.Leaf
	server *httptest.Server
	runID  string
}

// newMTLSServer starts a loopback server that requires a client
// certificate issued by ca.
func newMTLSServer(t *testing.T, ca *truststoretest.CA) *httptest.Server {
	t.Helper()
	srvLeaf := ca.IssueServer(t, "127.0.0.1", "localhost")
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok": true, "path": "`+r.URL.Path+`"}`)
	}))
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{srvLeaf.TLSCertificate()},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool()}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// seed fills the store through the services: a CA and an identity with a
// hostile description, a connector, a flow and a run.
func (e *env) seed(t *testing.T) fixture {
	t.Helper()
	ctx := context.Background()
	actor := auth.ActorOf(e.adminP)
	f := fixture{ca: truststoretest.NewCA(t, truststoretest.Now(e.clock.Now()))}
	f.client = f.ca.IssueClient(t, "payments")
	f.server = newMTLSServer(t, f.ca)
	_, err := e.trust.AddCA(ctx, actor, truststore.CARequest{Name: "root", Description: hostile, Data: f.ca.CertPEM()})
	require.NoError(t, err)
	_, err = e.trust.Import(ctx, actor, truststore.ImportRequest{Name: "payments", Description: hostile, Material: truststore.Material{Cert: f.client.CertPEM(), Key: f.client.KeyPEM()}})
	require.NoError(t, err)
	_, err = e.connectors.Create(ctx, actor, connector.Spec{Name: "hr", Description: hostile, URL: f.server.URL, Auth: connector.AuthMTLS, Identity: "payments", CAs: []string{"root"}})
	require.NoError(t, err)
	_, err = e.engine.Apply(ctx, actor, []engine.Source{{Filename: "greet.yaml", Source: greetFlow}})
	require.NoError(t, err)
	run, err := e.engine.StartRun(ctx, engine.StartRequest{Flow: "greet", Input: map[string]any{"user_id": "42"}, Actor: actor})
	require.NoError(t, err)
	f.runID = run.ID
	return f
}

const hostile = `<script>alert(1)</script>`

const greetFlow = `apiVersion: trustflow/v1
kind: Flow
name: greet
description: "<script>alert(1)</script>"
trigger: {manual: {}}
input:
  user_id: {type: string, required: true}
  count: {type: integer}
steps:
  - id: hello
    set: {message: "hello ${input.user_id}"}
`

var regexpToken = regexp.MustCompile(`tf_[A-Za-z0-9_-]{43}`)

func caRequest(name string, data []byte) truststore.CARequest {
	return truststore.CARequest{Name: name, Data: data}
}

// nav returns the dashboard's main navigation.
func (b *browser) nav() string {
	b.t.Helper()
	_, body := b.get("/ui/")
	start, end := strings.Index(body, `<nav aria-label="Main">`), strings.Index(body, "</nav>")
	require.True(b.t, start >= 0 && end > start, body)
	return body[start:end]
}
