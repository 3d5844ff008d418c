package web_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/connector"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

// requireClean checks that a page holds no key material and no unescaped
// hostile text.
func requireClean(t *testing.T, body string, keys []string) {
	t.Helper()
	require.NotContains(t, body, "PRIVATE KEY")
	for _, k := range keys {
		require.NotContains(t, body, k)
	}
	require.NotContains(t, body, hostile)
	require.NotContains(t, body, "<script")
}

// lastAudit returns the newest audit record of action.
func (e *env) lastAudit(t *testing.T, action string) audit.Record {
	t.Helper()
	recs, err := e.audit.List(context.Background(), audit.Filter{Action: action, Limit: 1})
	require.NoError(t, err)
	require.Len(t, recs, 1, action)
	return recs[0]
}

// TestConnectorEditPage edits a connector through the form prefilled from
// its stored spec, keeps the secret of a bearer connector, and removes one
// after confirmation.
func TestConnectorEditPage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, storetest.Open(t, store.SQLite))
	f := e.seed(t)
	ctx := context.Background()
	keys := keyBodies(t, f.client.KeyPEM())
	b := e.signIn(t, e.admin)

	resp, body := b.get("/ui/connectors/hr")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, body, `action="/ui/connectors/hr/update"`)
	require.Contains(t, body, `id="ce-url" name="url" type="url" required value="`+f.server.URL+`"`)
	require.Contains(t, body, `<option value="payments" selected>`)
	require.Contains(t, body, `name="cas" value="root" checked`)
	require.Contains(t, body, `id="ce-timeout" name="timeout" value="30s"`)
	require.Contains(t, body, `id="ce-description" name="description" value="&lt;script&gt;alert(1)&lt;/script&gt;"`)
	requireClean(t, body, keys)

	// A refused change names its field at the form and changes nothing.
	before, err := e.connectors.Get(ctx, "hr")
	require.NoError(t, err)
	for _, tc := range []struct {
		form  url.Values
		field string
	}{
		{url.Values{"url": {"ftp://x"}, "identity": {"payments"}, "cas": {"root"}}, "url"},
		{url.Values{"url": {f.server.URL}, "identity": {"payments"}, "cas": {"nope"}}, "cas"},
		{url.Values{"url": {f.server.URL}, "identity": {""}, "cas": {"root"}}, "identity"},
		{url.Values{"url": {f.server.URL}, "identity": {"payments"}, "cas": {"root"}, "timeout": {"soon"}}, "timeout"},
		{url.Values{"url": {f.server.URL}, "identity": {"payments"}, "cas": {"root"}, "min_tls": {"1.0"}}, "min_tls"},
	} {
		tc.form.Set("description", hostile)
		resp, body = b.post("/ui/connectors/hr/update", tc.form)
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, tc.field)
		require.Contains(t, body, `<div class="error" role="alert">`, tc.field)
		require.Contains(t, body, "<strong>"+tc.field+": ", tc.field)
		requireClean(t, body, keys)
	}
	require.Contains(t, body, `name="min_tls" aria-invalid="true"`)
	_, body = b.post("/ui/connectors/hr/update", url.Values{"url": {"ftp://typed"}, "identity": {"payments"}, "cas": {"root"}})
	require.Contains(t, body, `value="ftp://typed" aria-invalid="true"`, "the form comes back as typed")
	after, err := e.connectors.Get(ctx, "hr")
	require.NoError(t, err)
	require.Equal(t, before, after)

	resp, body = b.post("/ui/connectors/hr/update", url.Values{"description": {"HR directory"}, "url": {f.server.URL + "/v2"}, "identity": {"payments"},
		"cas": {"root"}, "system_roots": {"on"}, "server_name": {"localhost"}, "min_tls": {"1.3"}, "timeout": {"12s"}, "allow_no_client_auth_request": {"on"}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode, body)
	require.Equal(t, "/ui/connectors/hr", resp.Header.Get("Location"))
	cn, err := e.connectors.Get(ctx, "hr")
	require.NoError(t, err)
	require.Equal(t, "HR directory", cn.Description)
	require.Equal(t, f.server.URL+"/v2", cn.URL)
	require.Equal(t, connector.AuthMTLS, cn.Auth)
	require.Equal(t, []string{"root"}, cn.CAs)
	require.True(t, cn.SystemRoots)
	require.Equal(t, "localhost", cn.ServerName)
	require.Equal(t, "1.3", cn.MinTLS)
	require.Equal(t, "12s", cn.Timeout)
	require.True(t, cn.AllowNoClientAuthRequest)
	rec := e.lastAudit(t, "connector.update")
	require.Equal(t, e.adminP.TokenID, rec.Actor.ID)
	_, body = b.get("/ui/connectors/hr")
	require.Contains(t, body, "Connector hr updated.")
	require.Contains(t, body, `<option value="1.3" selected>`)
	require.Contains(t, body, `name="system_roots" checked`)
	require.Contains(t, body, `name="allow_no_client_auth_request" checked`)

	// The secret of a bearer connector is kept: the form carries none.
	const token = "bearer-secret-0123456789"
	_, err = e.connectors.Create(ctx, auth.ActorOf(e.adminP), connector.Spec{Name: "api", URL: f.server.URL, Auth: connector.AuthBearer, CAs: []string{"root"},
		Secrets: connector.Secrets{Token: token}})
	require.NoError(t, err)
	resp, body = b.get("/ui/connectors/api")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, body, `<option value="">None</option>`)
	require.Contains(t, body, "stored secret are kept")
	require.NotContains(t, body, token)
	resp, body = b.post("/ui/connectors/api/update", url.Values{"url": {f.server.URL}, "cas": {"root"}, "timeout": {"20s"}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode, body)
	cn, err = e.connectors.Get(ctx, "api")
	require.NoError(t, err)
	require.Equal(t, connector.AuthBearer, cn.Auth)
	require.True(t, cn.HasSecret)
	require.Equal(t, "20s", cn.Timeout)
	var details map[string]any
	require.NoError(t, json.Unmarshal(e.lastAudit(t, "connector.update").Details, &details))
	require.Equal(t, false, details["secret_changed"])

	// Moving the stored secret elsewhere through the form is refused (409)
	// and changes nothing: the form must carry the secret again.
	before, err = e.connectors.Get(ctx, "api")
	require.NoError(t, err)
	for _, form := range []url.Values{
		{"url": {"https://127.0.0.1:29004"}, "cas": {"root"}, "timeout": {"20s"}},
		{"url": {f.server.URL + "/elsewhere"}, "cas": {"root"}, "timeout": {"20s"}},
		{"url": {f.server.URL}, "cas": {"root"}, "server_name": {"attacker.example"}, "timeout": {"20s"}},
	} {
		resp, body = b.post("/ui/connectors/api/update", form)
		require.Equal(t, http.StatusConflict, resp.StatusCode, body)
		require.Contains(t, body, "without sending the secret again")
		require.NotContains(t, body, token)
	}
	after, err = e.connectors.Get(ctx, "api")
	require.NoError(t, err)
	require.Equal(t, before, after)

	// Removal needs the confirmation box.
	resp, body = b.post("/ui/connectors/api/remove", nil)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, body, "<strong>confirm: ")
	require.Contains(t, body, `id="ce-url" name="url" type="url" required value="`+f.server.URL+`"`, "the edit form stays filled in")
	_, err = e.connectors.Get(ctx, "api")
	require.NoError(t, err)
	resp, _ = b.post("/ui/connectors/api/remove", url.Values{"confirm": {"on"}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, "/ui/connectors", resp.Header.Get("Location"))
	_, err = e.connectors.Get(ctx, "api")
	var nf *errs.Error
	require.ErrorAs(t, err, &nf)
	require.Equal(t, errs.NotFound, nf.Kind)
	rec = e.lastAudit(t, "connector.remove")
	require.Equal(t, "connector/api", rec.Target)
	require.Equal(t, e.adminP.TokenID, rec.Actor.ID)
	_, body = b.get("/ui/connectors")
	require.Contains(t, body, "Connector api removed.")
	resp, _ = b.post("/ui/connectors/api/remove", url.Values{"confirm": {"on"}})
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	resp, _ = b.post("/ui/connectors/api/update", url.Values{"url": {f.server.URL}, "cas": {"root"}})
	require.Equal(t, http.StatusNotFound, resp.StatusCode)

	// An editor may change connectors too.
	ed := e.signIn(t, e.token(t, auth.RoleEditor))
	resp, body = ed.post("/ui/connectors/hr/update", url.Values{"url": {f.server.URL}, "identity": {"payments"}, "cas": {"root"}, "timeout": {"15s"}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode, body)
}

// newOpenServer starts a loopback TLS server, with a certificate ca
// issued, that never asks for a client certificate.
func newOpenServer(t *testing.T, ca *truststoretest.CA) *httptest.Server {
	t.Helper()
	srvLeaf := ca.IssueServer(t, "127.0.0.1", "localhost")
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "open")
	}))
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{srvLeaf.TLSCertificate()}, ClientAuth: tls.NoClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// TestProbePage probes a loopback server that requires a client
// certificate and one that never asks for it, and refuses bad input at the
// form without probing.
func TestProbePage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, storetest.Open(t, store.SQLite))
	f := e.seed(t)
	ctx := context.Background()
	keys := keyBodies(t, f.client.KeyPEM())
	b := e.signIn(t, e.admin)

	_, body := b.get("/ui/connectors")
	require.Contains(t, body, `href="/ui/probe"`)
	resp, body := b.get("/ui/probe")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, body, `action="/ui/probe"`)
	require.Contains(t, body, `name="cas" value="root"`)
	require.Contains(t, body, `<option value="payments">payments</option>`)
	requireClean(t, body, keys)

	// Bad input is shown at the form, nothing is probed or audited.
	head, err := e.st.AuditHead(ctx)
	require.NoError(t, err)
	for _, tc := range []struct {
		form  url.Values
		field string
	}{
		{url.Values{"url": {"http://127.0.0.1:1/"}, "cas": {"root"}}, "url"},
		{url.Values{"url": {"javascript:" + hostile}}, "url"},
		{url.Values{"url": {f.server.URL}, "cas": {"nope"}}, "cas"},
		{url.Values{"url": {f.server.URL}, "cas": {"root"}, "identity": {"nobody"}}, "identity"},
		{url.Values{"url": {f.server.URL}, "cas": {"root"}, "timeout": {"soon"}}, "timeout"},
		{url.Values{"url": {f.server.URL}, "cas": {"root"}, "timeout": {"1h"}}, "timeout"},
	} {
		resp, body = b.post("/ui/probe", tc.form)
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, tc.field)
		require.Contains(t, body, `<div class="error" role="alert">`, tc.field)
		require.Contains(t, body, "<strong>"+tc.field+": ", tc.field)
		require.NotContains(t, body, `class="card result"`, tc.field)
		requireClean(t, body, keys)
	}
	_, body = b.post("/ui/probe", url.Values{"url": {"http://typed.example/"}, "cas": {"root"}, "identity": {"payments"}, "timeout": {"4s"}})
	require.Contains(t, body, `value="http://typed.example/" aria-invalid="true"`, "the form comes back as typed")
	require.Contains(t, body, `name="cas" value="root" checked`)
	require.Contains(t, body, `<option value="payments" selected>`)
	require.Contains(t, body, `value="4s"`)
	recs, err := e.audit.List(ctx, audit.Filter{AfterSeq: head.Seq, Ascending: true})
	require.NoError(t, err)
	require.Empty(t, recs, "refused probes are not audited")

	// A server that requires and verifies a client certificate; the hostile
	// path comes back escaped.
	resp, body = b.post("/ui/probe", url.Values{"url": {f.server.URL + "/" + hostile}, "cas": {"root"}, "identity": {"payments"}, "timeout": {"5s"}})
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	require.Contains(t, body, `<span class="badge enforced">enforced</span>`)
	require.Equal(t, 7, strings.Count(body, `<tr><td><code>`), "one row per check")
	for _, name := range []string{"anonymous_refused", "untrusted_cert_refused", "identity_accepted", "tls10_refused", "tls11_refused", "server_chain_valid", "hostname_valid"} {
		require.Contains(t, body, "<tr><td><code>"+name+"</code></td><td><span class=\"badge pass\">pass</span>", name)
	}
	require.Contains(t, body, "<td>tls</td>", "the layer the server refused at")
	require.Contains(t, body, "&lt;script&gt;")
	requireClean(t, body, keys)
	rec := e.lastAudit(t, "probe.run")
	require.Equal(t, e.adminP.TokenID, rec.Actor.ID, "probed as the signed-in principal")
	require.Equal(t, audit.OutcomeSuccess, rec.Outcome)

	// A server that never asks for a client certificate.
	open := newOpenServer(t, f.ca)
	resp, body = b.post("/ui/probe", url.Values{"url": {open.URL}, "cas": {"root"}, "identity": {"payments"}})
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	require.Contains(t, body, `<span class="badge not_enforced">not enforced</span>`)
	require.Contains(t, body, "<tr><td><code>anonymous_refused</code></td><td><span class=\"badge fail\">fail</span>")
	require.Contains(t, body, "<tr><td><code>server_chain_valid</code></td><td><span class=\"badge pass\">pass</span>")
	require.Contains(t, body, `<span class="hint">`)
	requireClean(t, body, keys)
	rec = e.lastAudit(t, "probe.run")
	require.Equal(t, audit.OutcomeFailure, rec.Outcome)

	// Without CAs the chain checks are skipped.
	_, body = b.post("/ui/probe", url.Values{"url": {open.URL}})
	require.Contains(t, body, "<tr><td><code>server_chain_valid</code></td><td><span class=\"badge skip\">skip</span>")
}

// TestConnectorCreateWithHeaderAuth creates, through the console, a
// connector that presents an identity and a bearer token: the token is
// sealed, never echoed, and the audit record says a secret was set.
func TestConnectorCreateWithHeaderAuth(t *testing.T) {
	t.Parallel()
	e := newEnv(t, storetest.Open(t, store.SQLite))
	f := e.seed(t)
	ctx := context.Background()
	b := e.signIn(t, e.admin)
	const token = "console-bearer-secret-0123456789"

	resp, body := b.post("/ui/connectors", url.Values{"name": {"ticketing"}, "url": {f.server.URL}, "identity": {"payments"}, "cas": {"root"},
		"auth_extra": {"bearer"}, "token": {token}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode, body)
	got, err := e.connectors.Get(ctx, "ticketing")
	require.NoError(t, err)
	require.Equal(t, "bearer", got.Auth)
	require.Equal(t, "payments", got.Identity)
	require.True(t, got.HasSecret)
	_, body = b.get("/ui/connectors/ticketing")
	require.NotContains(t, body, token)

	// A refused create echoes the form but never the secret.
	resp, body = b.post("/ui/connectors", url.Values{"name": {"apikey"}, "url": {f.server.URL}, "cas": {"root"},
		"auth_extra": {"api-key"}, "api_key": {token}})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, body, "auth_settings.header_name")
	require.NotContains(t, body, token)

	recs, err := e.audit.List(ctx, audit.Filter{Action: "connector.create", Target: "connector/ticketing"})
	require.NoError(t, err)
	require.Len(t, recs, 1)
	require.Contains(t, string(recs[0].Details), `"secret_changed":true`)
	for _, r := range recs {
		require.NotContains(t, string(r.Details), token)
	}
}

// TestRemovals removes through the console what nothing uses, and refuses,
// naming the users, what connectors still use; a flow's runs outlive it.
func TestRemovals(t *testing.T) {
	t.Parallel()
	e := newEnv(t, storetest.Open(t, store.SQLite))
	f := e.seed(t)
	ctx := context.Background()
	b := e.signIn(t, e.admin)

	// Unconfirmed removals change nothing.
	resp, body := b.post("/ui/cas/root/remove", url.Values{})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, body, "tick the box to confirm")
	// In use: refused with the connector's name.
	resp, body = b.post("/ui/cas/root/remove", url.Values{"confirm": {"on"}})
	require.Equal(t, http.StatusConflict, resp.StatusCode)
	require.Contains(t, body, "hr")
	resp, body = b.post("/ui/identities/payments/remove", url.Values{"confirm": {"on"}})
	require.Equal(t, http.StatusConflict, resp.StatusCode)
	require.Contains(t, body, "hr")
	_, err := e.trust.GetCA(ctx, "root")
	require.NoError(t, err)

	// Prune with nothing retired says so.
	resp, _ = b.post("/ui/identities/payments/prune", url.Values{})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	_, body = b.get("/ui/identities/payments")
	require.Contains(t, body, "No retired versions to prune.")

	// Once the connector is gone, both go.
	require.NoError(t, e.connectors.Remove(ctx, audit.System, "hr"))
	resp, _ = b.post("/ui/identities/payments/remove", url.Values{"confirm": {"on"}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	resp, _ = b.post("/ui/cas/root/remove", url.Values{"confirm": {"on"}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	_, err = e.trust.GetCA(ctx, "root")
	require.Error(t, err)

	// A flow goes; its run stays readable.
	resp, _ = b.post("/ui/flows/greet/remove", url.Values{"confirm": {"on"}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	resp, _ = b.get("/ui/runs/" + f.runID)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	for _, target := range []string{"ca/root", "identity/payments", "flow/greet"} {
		recs, err := e.audit.List(ctx, audit.Filter{Target: target, Action: strings.Split(target, "/")[0] + ".remove"})
		require.NoError(t, err)
		require.Len(t, recs, 1, target)
		require.Equal(t, "admin", recs[0].Actor.Role)
	}
}
