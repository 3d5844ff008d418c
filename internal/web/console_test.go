package web_test

import (
	"context"
	"encoding/base64"
	"encoding/pem"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/engine"
	"github.com/trustflow/trustflow/internal/pki"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

const csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"

func requireSecurityHeaders(t *testing.T, resp *http.Response) {
	t.Helper()
	require.Equal(t, csp, resp.Header.Get("Content-Security-Policy"), resp.Request.URL.Path)
	require.Equal(t, "no-referrer", resp.Header.Get("Referrer-Policy"))
	require.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"))
}

// TestSignIn runs against SQLite and PostgreSQL: the sign-in form, a
// refused token, the session cookie's attributes, a page, sign-out and
// expiry.
func TestSignIn(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		e.seed(t)

		anon := e.browser(t)
		resp, _ := anon.get("/ui/cas")
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
		require.Equal(t, "/ui/signin?next=%2Fui%2Fcas", resp.Header.Get("Location"))
		resp, _ = anon.get("/")
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
		require.Equal(t, "/ui/", resp.Header.Get("Location"))

		// A wrong token is refused and starts no session.
		resp, body := anon.get("/ui/signin")
		requireSecurityHeaders(t, resp)
		require.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
		csrf := csrfField.FindStringSubmatch(body)[1]
		resp, body = anon.postForm("/ui/signin", url.Values{"csrf": {csrf}, "token": {"tf_wrong"}})
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
		require.Contains(t, body, "not valid")
		require.NotContains(t, body, "tf_wrong")
		// Without the form's CSRF token, even the right token is refused.
		resp, _ = anon.postForm("/ui/signin", url.Values{"csrf": {"forged"}, "token": {e.admin}})
		require.Equal(t, http.StatusForbidden, resp.StatusCode)

		b := e.browser(t)
		_, body = b.get("/ui/signin")
		csrf = csrfField.FindStringSubmatch(body)[1]
		resp, _ = b.postForm("/ui/signin", url.Values{"csrf": {csrf}, "token": {e.admin}, "next": {"/ui/cas"}})
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
		require.Equal(t, "/ui/cas", resp.Header.Get("Location"))
		// Both the refused and the accepted sign-in are in the audit log,
		// and neither record holds a token.
		recs, err := e.audit.List(context.Background(), audit.Filter{Target: "console/signin"})
		require.NoError(t, err)
		require.Len(t, recs, 1)
		require.Equal(t, "auth.denied", recs[0].Action)
		require.Equal(t, audit.OutcomeDenied, recs[0].Outcome)
		recs, err = e.audit.List(context.Background(), audit.Filter{Action: "console.signin"})
		require.NoError(t, err)
		require.Len(t, recs, 1)
		require.Equal(t, "admin", recs[0].Actor.Role)
		exported, err := e.audit.List(context.Background(), audit.Filter{Limit: 1000})
		require.NoError(t, err)
		for _, r := range exported {
			require.NotContains(t, string(r.Details), "tf_")
		}
		var session *http.Cookie
		for _, c := range resp.Cookies() {
			if c.Name == "trustflow_session" {
				session = c
			}
		}
		require.NotNil(t, session)
		require.True(t, session.HttpOnly)
		require.Equal(t, http.SameSiteStrictMode, session.SameSite)
		require.False(t, session.Secure, "plain http")
		require.Equal(t, 8*3600, session.MaxAge)
		raw, err := base64.RawURLEncoding.DecodeString(session.Value)
		require.NoError(t, err)
		require.Len(t, raw, 32, "256-bit session id")
		require.NotContains(t, session.Value, e.admin)

		resp, body = b.get("/ui/cas")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		requireSecurityHeaders(t, resp)
		require.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
		require.Contains(t, body, `href="/ui/cas/root"`)
		b.csrf = csrfField.FindStringSubmatch(body)[1]

		// An open redirect is not followed.
		_, body = b.get("/ui/signin")
		csrf = csrfField.FindStringSubmatch(body)[1]
		resp, _ = b.postForm("/ui/signin", url.Values{"csrf": {csrf}, "token": {e.admin}, "next": {"//evil.example/"}})
		require.Equal(t, "/ui/", resp.Header.Get("Location"))
		_, body = b.get("/ui/")
		b.csrf = csrfField.FindStringSubmatch(body)[1]

		// Sign-out needs the CSRF token and ends the session.
		resp, _ = b.postForm("/ui/signout", url.Values{"csrf": {"forged"}})
		require.Equal(t, http.StatusForbidden, resp.StatusCode)
		resp, _ = b.post("/ui/signout", nil)
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
		resp, _ = b.get("/ui/cas")
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)

		// Sessions expire after 8h.
		b2 := e.signIn(t, e.admin)
		e.clock.Advance(8*time.Hour - time.Second)
		resp, _ = b2.get("/ui/")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		e.clock.Advance(time.Second)
		resp, _ = b2.get("/ui/")
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
		resp, _ = b2.post("/ui/cas", url.Values{"name": {"late"}})
		require.Equal(t, http.StatusForbidden, resp.StatusCode)
	})
}

// TestRevokedTokenEndsSession runs against SQLite and PostgreSQL: a
// session ends on the first request after its token is revoked or expires.
func TestRevokedTokenEndsSession(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		ctx := context.Background()
		tok, secret, err := e.auth.Create(ctx, e.adminP, auth.CreateRequest{Name: "ops", Role: string(auth.RoleEditor)})
		require.NoError(t, err)
		b := e.signIn(t, secret)
		resp, _ := b.get("/ui/connectors")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		_, err = e.auth.Revoke(ctx, e.adminP, tok.ID)
		require.NoError(t, err)
		resp, _ = b.get("/ui/connectors")
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
		require.Equal(t, "/ui/signin?next=%2Fui%2Fconnectors", resp.Header.Get("Location"))
		var cleared bool
		for _, c := range resp.Cookies() {
			cleared = cleared || (c.Name == "trustflow_session" && c.MaxAge < 0)
		}
		require.True(t, cleared, "the session cookie is deleted")
		resp, _ = b.get("/ui/")
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
		resp, _ = b.post("/ui/tokens", url.Values{"name": {"x"}, "role": {"admin"}})
		require.Equal(t, http.StatusForbidden, resp.StatusCode)
		toks, err := e.auth.List(ctx)
		require.NoError(t, err)
		require.Len(t, toks, 2, "nothing was created")
		// The token cannot sign in again.
		resp, _ = b.get("/ui/signin")
		require.Equal(t, http.StatusOK, resp.StatusCode)

		// A session whose token expires ends with it, before the session's
		// own 8h.
		_, secret, err = e.auth.Create(ctx, e.adminP, auth.CreateRequest{Name: "short", Role: string(auth.RoleAuditor), ExpiresIn: "1h"})
		require.NoError(t, err)
		b = e.signIn(t, secret)
		e.clock.Advance(time.Hour - time.Second)
		resp, _ = b.get("/ui/")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		e.clock.Advance(time.Second)
		resp, _ = b.get("/ui/")
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
		require.True(t, strings.HasPrefix(resp.Header.Get("Location"), "/ui/signin"))

		// Other sessions are unaffected.
		a := e.signIn(t, e.admin)
		resp, _ = a.get("/ui/tokens")
		require.Equal(t, http.StatusOK, resp.StatusCode)
	})
}

// navPages are the pages the main navigation links to.
var navPages = map[string]bool{"/ui/": true, "/ui/cas": true, "/ui/identities": true, "/ui/connectors": true, "/ui/flows": true, "/ui/runs": true, "/ui/audit": true, "/ui/tokens": true}

// TestPagesByRole checks every page's status for every role, and that the
// server refuses an action the role may not take.
func TestPagesByRole(t *testing.T) {
	t.Parallel()
	e := newEnv(t, storetest.Open(t, store.SQLite))
	f := e.seed(t)
	pages := map[string]auth.Permission{
		"/ui/":                    auth.PermSystemRead,
		"/ui/cas":                 auth.PermCAsRead,
		"/ui/cas/root":            auth.PermCAsRead,
		"/ui/identities":          auth.PermIdentitiesRead,
		"/ui/identities/payments": auth.PermIdentitiesRead,
		"/ui/connectors":          auth.PermConnectorsRead,
		"/ui/connectors/hr":       auth.PermConnectorsRead,
		"/ui/flows":               auth.PermFlowsRead,
		"/ui/flows/greet":         auth.PermFlowsRead,
		"/ui/editor":              auth.PermFlowsWrite,
		"/ui/runs":                auth.PermRunsRead,
		"/ui/runs/" + f.runID:     auth.PermRunsRead,
		"/ui/audit":               auth.PermAuditRead,
		"/ui/audit/verify":        auth.PermAuditRead,
		"/ui/tokens":              auth.PermTokensWrite,
		"/ui/probe":               auth.PermConnectorsUse,
	}
	// offers maps a form's action to the permission that offers it.
	offers := map[string]struct {
		page string
		perm auth.Permission
	}{
		`action="/ui/cas"`:                         {"/ui/cas", auth.PermCAsWrite},
		`action="/ui/identities/import"`:           {"/ui/identities", auth.PermIdentitiesWrite},
		`action="/ui/identities/payments/rotate"`:  {"/ui/identities/payments", auth.PermIdentitiesWrite},
		`action="/ui/connectors"`:                  {"/ui/connectors", auth.PermConnectorsWrite},
		`action="/ui/connectors/hr/test"`:          {"/ui/connectors/hr", auth.PermConnectorsUse},
		`action="/ui/flows/greet/runs"`:            {"/ui/flows/greet", auth.PermRunsWrite},
		`action="/ui/runs/` + f.runID + `/cancel"`: {"/ui/runs/" + f.runID, auth.PermRunsWrite},
		`action="/ui/tokens"`:                      {"/ui/tokens", auth.PermTokensWrite},
		`href="/ui/probe"`:                         {"/ui/connectors", auth.PermConnectorsUse},
		`action="/ui/probe"`:                       {"/ui/probe", auth.PermConnectorsUse},
		`action="/ui/connectors/hr/update"`:        {"/ui/connectors/hr", auth.PermConnectorsWrite},
		`action="/ui/connectors/hr/remove"`:        {"/ui/connectors/hr", auth.PermConnectorsWrite},
	}
	for _, role := range auth.Roles {
		t.Run(string(role), func(t *testing.T) {
			b := e.signIn(t, e.token(t, role))
			for page, perm := range pages {
				resp, body := b.get(page)
				want := http.StatusForbidden
				if role.Can(perm) {
					want = http.StatusOK
				}
				require.Equal(t, want, resp.StatusCode, "%s %s: %s", role, page, body)
				requireSecurityHeaders(t, resp)
				require.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
				if navPages[page] {
					require.Equal(t, role.Can(perm), strings.Contains(b.nav(), `<li><a href="`+page+`"`), "%s nav %s", role, page)
				}
			}
			for action, o := range offers {
				if !role.Can(auth.PermSystemRead) {
					continue
				}
				resp, body := b.get(o.page)
				if resp.StatusCode != http.StatusOK {
					continue
				}
				require.Equal(t, role.Can(o.perm), strings.Contains(body, action), "%s offered %s on %s", role, action, o.page)
			}
			// The server refuses what the role may not do, and changes nothing.
			before, err := e.trust.ListCAs(context.Background())
			require.NoError(t, err)
			resp, _ := b.upload("/ui/cas", map[string]string{"name": "extra-" + string(role)}, map[string][]byte{"file": f.ca.CertPEM()})
			after, err := e.trust.ListCAs(context.Background())
			require.NoError(t, err)
			if role.Can(auth.PermCAsWrite) {
				require.Equal(t, http.StatusSeeOther, resp.StatusCode)
				require.Len(t, after, len(before)+1)
			} else {
				require.Equal(t, http.StatusForbidden, resp.StatusCode)
				require.Len(t, after, len(before))
			}
			resp, _ = b.post("/ui/tokens", url.Values{"name": {"x"}, "role": {"admin"}})
			require.Equal(t, role.Can(auth.PermTokensWrite), resp.StatusCode == http.StatusCreated, "%d", resp.StatusCode)

			// Connector changes and probes need their permissions.
			cnBefore, err := e.connectors.Get(context.Background(), "hr")
			require.NoError(t, err)
			resp, _ = b.post("/ui/connectors/hr/update", url.Values{"description": {hostile}, "url": {f.server.URL}, "identity": {"payments"}, "cas": {"root"},
				"min_tls": {"1.2"}, "timeout": {"45s"}})
			cnAfter, err := e.connectors.Get(context.Background(), "hr")
			require.NoError(t, err)
			if role.Can(auth.PermConnectorsWrite) {
				require.Equal(t, http.StatusSeeOther, resp.StatusCode)
				require.Equal(t, "45s", cnAfter.Timeout)
			} else {
				require.Equal(t, http.StatusForbidden, resp.StatusCode)
				require.Equal(t, cnBefore, cnAfter)
				resp, _ = b.post("/ui/connectors/hr/remove", url.Values{"confirm": {"on"}})
				require.Equal(t, http.StatusForbidden, resp.StatusCode)
				_, err = e.connectors.Get(context.Background(), "hr")
				require.NoError(t, err, "not removed")
			}
			if !role.Can(auth.PermConnectorsUse) {
				resp, _ = b.post("/ui/probe", url.Values{"url": {f.server.URL}, "cas": {"root"}})
				require.Equal(t, http.StatusForbidden, resp.StatusCode)
			}
		})
	}
	recs, err := e.audit.List(context.Background(), audit.Filter{Action: "auth.denied", Limit: 1000})
	require.NoError(t, err)
	require.NotEmpty(t, recs, "refusals are audited")
	recs, err = e.audit.List(context.Background(), audit.Filter{Action: "probe.run"})
	require.NoError(t, err)
	require.Empty(t, recs, "a refused probe connects nowhere")
}

// TestCSRF refuses a change without the session's CSRF token, and changes
// nothing.
func TestCSRF(t *testing.T) {
	t.Parallel()
	e := newEnv(t, storetest.Open(t, store.SQLite))
	f := e.seed(t)
	b := e.signIn(t, e.admin)
	other := e.signIn(t, e.admin)
	head, err := e.st.AuditHead(context.Background())
	require.NoError(t, err)
	cases := []struct {
		name string
		send func() *http.Response
	}{
		{"no token", func() *http.Response {
			r, _ := b.postForm("/ui/tokens", url.Values{"name": {"x"}, "role": {"admin"}})
			return r
		}},
		{"another session's token", func() *http.Response {
			r, _ := b.postForm("/ui/tokens", url.Values{"name": {"x"}, "role": {"admin"}, "csrf": {other.csrf}})
			return r
		}},
		{"multipart without token", func() *http.Response {
			r, _ := b.upload("/ui/cas", map[string]string{"csrf": "", "name": "forged"}, map[string][]byte{"file": f.ca.CertPEM()})
			return r
		}},
		{"revoke", func() *http.Response {
			r, _ := b.postForm("/ui/tokens/"+e.adminP.TokenID+"/revoke", nil)
			return r
		}},
		{"connector update", func() *http.Response {
			r, _ := b.postForm("/ui/connectors/hr/update", url.Values{"url": {f.server.URL}, "identity": {"payments"}, "cas": {"root"}, "timeout": {"5s"}})
			return r
		}},
		{"connector remove", func() *http.Response {
			r, _ := b.postForm("/ui/connectors/hr/remove", url.Values{"confirm": {"on"}, "csrf": {other.csrf}})
			return r
		}},
		{"probe", func() *http.Response {
			r, _ := b.postForm("/ui/probe", url.Values{"url": {f.server.URL}, "cas": {"root"}})
			return r
		}},
		{"cancel run", func() *http.Response {
			r, _ := b.postForm("/ui/runs/"+f.runID+"/cancel", url.Values{"csrf": {"x"}})
			return r
		}},
	}
	for _, tc := range cases {
		resp := tc.send()
		require.Equal(t, http.StatusForbidden, resp.StatusCode, tc.name)
		requireSecurityHeaders(t, resp)
	}
	toks, err := e.auth.List(context.Background())
	require.NoError(t, err)
	require.Len(t, toks, 1)
	require.Equal(t, "active", toks[0].Status)
	cas, err := e.trust.ListCAs(context.Background())
	require.NoError(t, err)
	require.Len(t, cas, 1)
	cn, err := e.connectors.Get(context.Background(), "hr")
	require.NoError(t, err, "the connector is not removed")
	require.Equal(t, "30s", cn.Timeout, "nor changed")
	run, err := e.engine.GetRun(context.Background(), f.runID)
	require.NoError(t, err)
	require.Equal(t, engine.StatusQueued, run.Status)
	recs, err := e.audit.List(context.Background(), audit.Filter{AfterSeq: head.Seq, Ascending: true})
	require.NoError(t, err)
	for _, r := range recs {
		require.Equal(t, "auth.denied", r.Action, "only refusals were recorded")
	}
}

func TestStaticAndNotFound(t *testing.T) {
	t.Parallel()
	e := newEnv(t, storetest.Open(t, store.SQLite))
	b := e.browser(t)
	resp, body := b.get("/ui/static/console.css")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, resp.Header.Get("Content-Type"), "text/css")
	requireSecurityHeaders(t, resp)
	require.Contains(t, body, ".badge")
	resp, _ = b.get("/ui/static/")
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	resp, _ = b.get("/ui/nothing-here")
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	a := e.signIn(t, e.admin)
	resp, _ = a.get("/ui/nothing-here")
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	requireSecurityHeaders(t, resp)
	resp, _ = b.get("/api/v1/whoami")
	require.Equal(t, http.StatusTeapot, resp.StatusCode, "the API serves everything outside the console")
}

// keyBodies returns a base64 line from the middle of each PEM private key.
func keyBodies(t *testing.T, pems ...[]byte) []string {
	var out []string
	for _, p := range pems {
		block, _ := pem.Decode(p)
		require.NotNil(t, block)
		enc := base64.StdEncoding.EncodeToString(block.Bytes)
		out = append(out, enc[len(enc)/2:len(enc)/2+40])
	}
	return out
}

// TestTrustStorePages imports, creates, rotates and activates identities
// through the forms, then reads every page: no key material appears, and a
// hostile description is escaped.
func TestTrustStorePages(t *testing.T) {
	t.Parallel()
	e := newEnv(t, storetest.Open(t, store.SQLite))
	f := e.seed(t)
	b := e.signIn(t, e.admin)

	// A CA by upload; a broken one is refused with its reason.
	resp, body := b.upload("/ui/cas", map[string]string{"name": "bad", "description": "x"}, map[string][]byte{"file": []byte("not a certificate")})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, body, `class="error"`)
	resp, _ = b.upload("/ui/cas", map[string]string{"name": "second", "description": hostile}, map[string][]byte{"file": truststoretest.NewCA(t).CertPEM()})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, "/ui/cas/second", resp.Header.Get("Location"))
	resp, body = b.get("/ui/cas/second")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, body, "CA second added.")
	require.Contains(t, body, "SHA-256 fingerprint")

	// Replace the bundle in place: the revision moves on and the new
	// certificate's fingerprint shows; a broken file changes nothing.
	replacement := truststoretest.NewCA(t)
	resp, body = b.upload("/ui/cas/second/update", map[string]string{}, map[string][]byte{"file": []byte("not a certificate")})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, body, `class="error"`)
	before, err := e.trust.GetCA(context.Background(), "second")
	require.NoError(t, err)
	require.Equal(t, int64(1), before.Revision)
	resp, _ = b.upload("/ui/cas/second/update", map[string]string{}, map[string][]byte{"file": replacement.CertPEM()})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	_, body = b.get("/ui/cas/second")
	require.Contains(t, body, "CA second updated.")
	require.Contains(t, body, pki.FingerprintSHA256(replacement.Cert))
	after, err := e.trust.GetCA(context.Background(), "second")
	require.NoError(t, err)
	require.Equal(t, int64(2), after.Revision)

	// Import by PEM, then rotate with a new certificate and key, staged.
	leaf2 := f.ca.IssueClient(t, "ledger")
	resp, body = b.upload("/ui/identities/import", map[string]string{"name": "ledger", "description": hostile},
		map[string][]byte{"cert": leaf2.CertPEM(), "key": leaf2.KeyPEM()})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode, body)
	leaf3 := f.ca.IssueClient(t, "ledger")
	resp, body = b.upload("/ui/identities/ledger/rotate", map[string]string{"mode": "import", "stage": "on"},
		map[string][]byte{"cert": leaf3.CertPEM(), "key": leaf3.KeyPEM()})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode, body)
	_, body = b.get("/ui/identities/ledger")
	require.Contains(t, body, "Version 2 added and staged")
	require.Contains(t, body, "Activate version 2")
	resp, _ = b.post("/ui/identities/ledger/activate", url.Values{"version": {"2"}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	id, err := e.trust.Get(context.Background(), "ledger")
	require.NoError(t, err)
	require.Equal(t, 2, id.ActiveVersion)
	_, body = b.get("/ui/identities/ledger")
	require.Contains(t, body, "Roll back to version 1")
	// A key that does not match its certificate is refused, naming the field.
	resp, body = b.upload("/ui/identities/import", map[string]string{"name": "mismatch"}, map[string][]byte{"cert": leaf2.CertPEM(), "key": leaf3.KeyPEM()})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, body, "key")

	// Import a PKCS#12 file; a wrong password is refused.
	leaf4 := f.ca.IssueClient(t, "pfx")
	p12, err := pkcs12.Modern.Encode(leaf4.Key, leaf4.Cert, nil, "s3cret")
	require.NoError(t, err)
	resp, body = b.upload("/ui/identities/import", map[string]string{"name": "pfx", "pkcs12_password": "wrong"}, map[string][]byte{"pkcs12": p12})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, body, "pkcs12")
	resp, body = b.upload("/ui/identities/import", map[string]string{"name": "pfx", "pkcs12_password": "s3cret"}, map[string][]byte{"pkcs12": p12})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode, body)

	// Create with a generated key: the CSR is shown and downloadable.
	resp, _ = b.post("/ui/identities/create", url.Values{"name": {"gen"}, "subject": {"CN=gen,O=Example"}, "key_type": {"ecdsa-p256"}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	_, body = b.get("/ui/identities/gen")
	require.Contains(t, body, "BEGIN CERTIFICATE REQUEST")
	resp, body = b.get("/ui/identities/gen/csr")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, resp.Header.Get("Content-Disposition"), "gen-v1.csr")
	block, _ := pem.Decode([]byte(body))
	require.Equal(t, "CERTIFICATE REQUEST", block.Type)

	keys := keyBodies(t, f.client.KeyPEM(), leaf2.KeyPEM(), leaf3.KeyPEM(), leaf4.KeyPEM())
	for _, page := range []string{"/ui/", "/ui/cas", "/ui/cas/root", "/ui/identities", "/ui/identities/payments", "/ui/identities/ledger",
		"/ui/identities/gen", "/ui/identities/gen/csr", "/ui/identities/pfx", "/ui/connectors", "/ui/connectors/hr", "/ui/flows", "/ui/flows/greet", "/ui/runs",
		"/ui/runs/" + f.runID, "/ui/audit", "/ui/audit/verify", "/ui/tokens"} {
		resp, body := b.get(page)
		require.Equal(t, http.StatusOK, resp.StatusCode, page)
		require.NotContains(t, body, "PRIVATE KEY", page)
		for _, k := range keys {
			require.NotContains(t, body, k, page)
		}
		require.NotContains(t, body, hostile, page)
		require.NotContains(t, body, "<script", page)
	}
	for _, page := range []string{"/ui/cas/root", "/ui/identities/payments", "/ui/connectors/hr", "/ui/flows/greet", "/ui/flows"} {
		_, body := b.get(page)
		require.Contains(t, body, "&lt;script&gt;alert(1)&lt;/script&gt;", page)
	}
}

// TestConnectorTestPage creates a connector through the form and tests it
// against a loopback server that requires a client certificate.
func TestConnectorTestPage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, storetest.Open(t, store.SQLite))
	f := e.seed(t)
	b := e.signIn(t, e.admin)
	resp, body := b.post("/ui/connectors", url.Values{"name": {"bad"}, "url": {"ftp://x"}, "identity": {"payments"}, "cas": {"root"}})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, body, "url")
	require.Contains(t, body, `value="bad"`, "the form comes back filled in")
	resp, body = b.post("/ui/connectors", url.Values{"name": {"ledger"}, "url": {f.server.URL}, "identity": {"payments"}, "cas": {"root"}, "min_tls": {"1.2"}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode, body)
	resp, body = b.post("/ui/connectors/ledger/test", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, body, "handshake succeeded")
	require.Contains(t, body, "TLS 1.3")
	require.Contains(t, body, "payments version 1")
	require.Contains(t, body, "Server asked for a client certificate</dt><dd>yes")
	_, body = b.get("/ui/connectors")
	require.Contains(t, body, "passed")

	// A connector without a client certificate fails with a diagnosis.
	_, err := e.trust.AddCA(context.Background(), auth.ActorOf(e.adminP), caRequest("other", truststoretest.NewCA(t).CertPEM()))
	require.NoError(t, err)
	resp, _ = b.post("/ui/connectors", url.Values{"name": {"wrong-ca"}, "url": {f.server.URL}, "identity": {"payments"}, "cas": {"other"}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	_, body = b.post("/ui/connectors/wrong-ca/test", nil)
	require.Contains(t, body, `class="badge critical">failed`)
	require.Contains(t, body, `class="hint"`)
	_, body = b.get("/ui/")
	require.Contains(t, body, `href="/ui/connectors/wrong-ca"`, "the dashboard lists the failed connector")
}

// TestFlowPages validates in the editor, applies, runs from the generated
// form, and cancels.
func TestFlowPages(t *testing.T) {
	t.Parallel()
	e := newEnv(t, storetest.Open(t, store.SQLite))
	e.seed(t)
	b := e.signIn(t, e.admin)
	bad := "apiVersion: trustflow/v1\nkind: Flow\nname: broken\ntrigger: {manual: {}}\nsteps:\n  - id: a\n    teleport: {}\n"
	resp, body := b.post("/ui/editor", url.Values{"source": {bad}, "filename": {"broken.yaml"}})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, body, "nothing was stored")
	require.Regexp(t, `line \d+, column \d+`, body)
	require.Contains(t, body, "teleport")
	_, err := e.engine.GetFlow(context.Background(), "broken")
	require.Error(t, err, "nothing stored")

	_, body = b.get("/ui/editor?flow=greet")
	require.Contains(t, body, "hello ${input.user_id}")
	resp, _ = b.post("/ui/editor", url.Values{"source": {strings.Replace(greetFlow, "hello", "hi", 1)}, "filename": {"greet.yaml"}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	_, body = b.get("/ui/flows/greet")
	require.Contains(t, body, "applied as version 2")
	require.Contains(t, body, `name="in.user_id"`)
	require.Contains(t, body, `name="in.count"`)

	resp, body = b.post("/ui/flows/greet/runs", url.Values{"in.count": {"many"}})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, body, "user_id")
	resp, _ = b.post("/ui/flows/greet/runs", url.Values{"in.user_id": {"7"}, "in.count": {"3"}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	loc := resp.Header.Get("Location")
	resp, body = b.get(loc)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, body, `http-equiv="refresh"`, "an active run reloads")
	require.Contains(t, body, `&#34;count&#34;: 3`)
	// The workers are not running here: the cancellation is requested and
	// audited; the browser test sees runs finish.
	resp, _ = b.post(loc+"/cancel", nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	_, body = b.get(loc)
	require.Contains(t, body, "Cancellation requested.")
	recs, err := e.audit.List(context.Background(), audit.Filter{Action: "run.cancel"})
	require.NoError(t, err)
	require.Len(t, recs, 1)
	require.Equal(t, "run/"+strings.TrimPrefix(loc, "/ui/runs/"), recs[0].Target)

	_, body = b.get("/ui/runs?status=queued&flow=greet")
	require.Contains(t, body, strings.TrimPrefix(loc, "/ui/runs/"))
	_, body = b.get("/ui/runs?flow=nothing")
	require.Contains(t, body, "No runs match")

	// Time filters: today includes the run, a day long past does not, and
	// a malformed date says which field is wrong.
	runID := strings.TrimPrefix(loc, "/ui/runs/")
	today := e.clock.Now().UTC().Format(time.DateOnly)
	_, body = b.get("/ui/runs?since=" + today + "&until=" + today)
	require.Contains(t, body, runID)
	_, body = b.get("/ui/runs?until=2001-01-01")
	require.NotContains(t, body, runID)
	_, body = b.get("/ui/runs?since=yesterday")
	require.Contains(t, body, "From: yesterday is not a date (YYYY-MM-DD)")
}

func TestAuditAndTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t, storetest.Open(t, store.SQLite))
	e.seed(t)
	b := e.signIn(t, e.admin)
	_, body := b.get("/ui/audit?action=identity.")
	require.Contains(t, body, "identity.import")
	require.NotContains(t, body, "ca.add")
	_, body = b.get("/ui/audit/verify")
	require.Contains(t, body, "chain intact")

	resp, body := b.post("/ui/tokens", url.Values{"name": {"ci"}, "role": {"operator"}})
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	secret := regexpToken.FindString(body)
	require.NotEmpty(t, secret)
	p, err := e.auth.Authenticate(context.Background(), secret)
	require.NoError(t, err)
	require.Equal(t, auth.RoleOperator, p.Role)
	_, body = b.get("/ui/tokens")
	require.NotContains(t, body, secret, "shown once")
	resp, _ = b.post("/ui/tokens/"+p.TokenID+"/revoke", nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	_, err = e.auth.Authenticate(context.Background(), secret)
	require.ErrorIs(t, err, auth.ErrUnauthenticated)
	recs, err := e.audit.List(context.Background(), audit.Filter{Action: "token.revoke"})
	require.NoError(t, err)
	require.Len(t, recs, 1)
	require.Equal(t, e.adminP.TokenID, recs[0].Actor.ID, "audited with the signed-in principal")
}
