package web_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
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
	"github.com/trustflow/trustflow/internal/store/storetest"
	"github.com/trustflow/trustflow/internal/truststore"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
	"github.com/trustflow/trustflow/internal/web"
)

// newNode is another server over the same database as first: its own store
// handle, services and console, the same key-encryption key and clock. It
// bootstraps nothing; first's admin token works on it.
func newNode(t *testing.T, first *env, d store.Dialect, dsn string, keyring *seal.Keyring) *env {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{Dialect: d, DSN: dsn})
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	e := &env{st: st, clock: first.clock, admin: first.admin, adminP: first.adminP}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	e.audit = audit.New(st, e.clock)
	e.auth = auth.NewService(st, e.audit, e.clock)
	e.trust, err = truststore.New(truststore.Config{Store: st, Audit: e.audit, Keyring: keyring, Clock: e.clock})
	require.NoError(t, err)
	e.connectors, err = connector.New(connector.Config{Store: st, Audit: e.audit, Trust: e.trust, Clock: e.clock, Logger: logger})
	require.NoError(t, err)
	e.trust.SetInUse(e.connectors.InUse)
	e.engine, err = engine.New(ctx, engine.Config{Store: st, Audit: e.audit, Connectors: e.connectors, Trust: e.trust, Clock: e.clock, Logger: logger})
	require.NoError(t, err)
	e.console, err = web.New(web.Config{Auth: e.auth, Audit: e.audit, Trust: e.trust, Connectors: e.connectors, Engine: e.engine, Store: st, Clock: e.clock, Logger: logger})
	require.NoError(t, err)
	e.srv = httptest.NewServer(e.console.Handler())
	t.Cleanup(e.srv.Close)
	return e
}

// newTwoNodes starts two consoles sharing one database of dialect d (for
// SQLite, one file opened twice).
func newTwoNodes(t *testing.T, d store.Dialect) (*env, *env) {
	t.Helper()
	dsn := storetest.DSN(t, d)
	st, err := store.Open(context.Background(), store.Config{Dialect: d, DSN: dsn})
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	kek, err := seal.NewKEK()
	require.NoError(t, err)
	keyring := seal.NewKeyring(kek)
	clk := clock.NewFake(time.Now().UTC())
	first := &env{clock: clk}
	first.audit = audit.New(st, clk)
	first.auth = auth.NewService(st, first.audit, clk)
	first.admin, _, err = first.auth.Bootstrap(context.Background())
	require.NoError(t, err)
	first.adminP, err = first.auth.Authenticate(context.Background(), first.admin)
	require.NoError(t, err)
	return newNode(t, first, d, dsn, keyring), newNode(t, first, d, dsn, keyring)
}

// on returns a browser sharing b's cookies (and so its session) that talks
// to node e. Cookies are per host, not per port, as behind a load balancer.
func (b *browser) on(e *env) *browser {
	return &browser{t: b.t, e: e, c: b.c, csrf: b.csrf}
}

func sessionCount(t *testing.T, st *store.Store, tokenID string) int {
	t.Helper()
	var n int
	require.NoError(t, st.DB().QueryRowContext(context.Background(), "SELECT COUNT(*) FROM console_sessions WHERE token_id = $1", tokenID).Scan(&n))
	return n
}

func requireSignedOut(t *testing.T, b *browser, path string) {
	t.Helper()
	resp, _ := b.post("/ui/tokens", url.Values{"name": {"x"}, "role": {"admin"}})
	require.Equal(t, http.StatusForbidden, resp.StatusCode, "POST /ui/tokens on %s", b.e.srv.URL)
	resp, _ = b.get(path)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode, "%s on %s", path, b.e.srv.URL)
	require.Equal(t, "/ui/signin?next="+url.QueryEscape(path), resp.Header.Get("Location"))
}

// TestSessionsAcrossNodes runs against SQLite (one file, two handles) and
// PostgreSQL: a session started on one node is served by the other, pages,
// forms and flash messages included; sign-out on either node ends it on
// both; revoking or expiring its token ends it on both.
func TestSessionsAcrossNodes(t *testing.T) {
	t.Parallel()
	for _, d := range storetest.Dialects(t) {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			n1, n2 := newTwoNodes(t, d)
			ca := truststoretest.NewCA(t, truststoretest.Now(n1.clock.Now()))

			// Signed in on node 1, the browser's cookie works on node 2.
			b1 := n1.signIn(t, n1.admin)
			b2 := b1.on(n2)
			resp, body := b2.get("/ui/cas")
			require.Equal(t, http.StatusOK, resp.StatusCode)
			require.Contains(t, body, b1.csrf, "node 2 derives the same form token")
			// A form posted to node 2 with node 1's form token is accepted;
			// its flash message shows once, on whichever node serves next.
			resp, _ = b2.upload("/ui/cas", map[string]string{"name": "shared"}, map[string][]byte{"file": ca.CertPEM()})
			require.Equal(t, http.StatusSeeOther, resp.StatusCode)
			cas, err := n1.trust.ListCAs(ctx)
			require.NoError(t, err)
			require.Len(t, cas, 1)
			_, body = b1.get("/ui/cas")
			require.Contains(t, body, `class="flash"`)
			require.Contains(t, body, `href="/ui/cas/shared"`)
			_, body = b2.get("/ui/cas")
			require.NotContains(t, body, `class="flash"`, "a flash shows once")
			// A forged form token is refused on node 2 too.
			resp, _ = b2.postForm("/ui/tokens", url.Values{"name": {"x"}, "role": {"admin"}, "csrf": {"forged"}})
			require.Equal(t, http.StatusForbidden, resp.StatusCode)

			// The database holds neither the session id nor the form token.
			cookie := sessionCookieOf(t, b1)
			var idHash, flash string
			require.NoError(t, n1.st.DB().QueryRowContext(ctx, "SELECT id_hash, flash FROM console_sessions WHERE token_id = $1", n1.adminP.TokenID).Scan(&idHash, &flash))
			require.Equal(t, sessionHash(cookie), idHash)
			require.NotContains(t, idHash+flash, b1.csrf)

			// Sign-out on node 2 ends the session on node 1.
			resp, _ = b2.post("/ui/signout", nil)
			require.Equal(t, http.StatusSeeOther, resp.StatusCode)
			require.Equal(t, 0, sessionCount(t, n1.st, n1.adminP.TokenID))
			stale := &browser{t: t, e: n1, c: cookieClient(t, n1, cookie), csrf: b1.csrf}
			requireSignedOut(t, stale, "/ui/cas")
			requireSignedOut(t, stale.on(n2), "/ui/")

			// Revoking a token on node 2 ends its sessions on both nodes,
			// in the revocation's transaction.
			tok, secret, err := n1.auth.Create(ctx, n1.adminP, auth.CreateRequest{Name: "ops", Role: string(auth.RoleEditor)})
			require.NoError(t, err)
			e1 := n1.signIn(t, secret)
			e2 := n2.signIn(t, secret)
			resp, _ = e1.on(n2).get("/ui/connectors")
			require.Equal(t, http.StatusOK, resp.StatusCode)
			resp, _ = e2.on(n1).get("/ui/connectors")
			require.Equal(t, http.StatusOK, resp.StatusCode)
			require.Equal(t, 2, sessionCount(t, n1.st, tok.ID))
			admin := n2.signIn(t, n1.admin)
			resp, _ = admin.post("/ui/tokens/"+tok.ID+"/revoke", nil)
			require.Equal(t, http.StatusSeeOther, resp.StatusCode)
			require.Equal(t, 0, sessionCount(t, n1.st, tok.ID))
			requireSignedOut(t, e1, "/ui/connectors")
			requireSignedOut(t, e2.on(n1), "/ui/connectors")
			recs, err := n1.audit.List(ctx, audit.Filter{Action: "token.revoke"})
			require.NoError(t, err)
			require.Len(t, recs, 1)
			require.JSONEq(t, `{"name": "ops", "role": "editor", "sessions_ended": 2}`, string(recs[0].Details))

			// A token that expires is checked on every request, so its
			// sessions end on both nodes at once though their rows remain
			// until they are next used.
			_, secret, err = n1.auth.Create(ctx, n1.adminP, auth.CreateRequest{Name: "short", Role: string(auth.RoleAuditor), ExpiresIn: "1h"})
			require.NoError(t, err)
			s1 := n1.signIn(t, secret)
			s2 := n2.signIn(t, secret)
			n1.clock.Advance(time.Hour)
			requireSignedOut(t, s1.on(n2), "/ui/audit")
			requireSignedOut(t, s2.on(n1), "/ui/audit")

			// The admin's other session is unaffected throughout, and its use
			// on either node is recorded.
			resp, _ = admin.on(n1).get("/ui/tokens")
			require.Equal(t, http.StatusOK, resp.StatusCode)
			var lastSeen int64
			require.NoError(t, n2.st.DB().QueryRowContext(ctx, "SELECT last_seen FROM console_sessions WHERE id_hash = $1", sessionHash(sessionCookieOf(t, admin))).Scan(&lastSeen))
			require.Equal(t, n1.clock.Now().UnixMicro(), lastSeen)
		})
	}
}

// sessionHash is how the database names a session: the SHA-256 of its id.
func sessionHash(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

// sessionCookieOf returns the browser's session cookie value.
func sessionCookieOf(t *testing.T, b *browser) string {
	t.Helper()
	u, err := url.Parse(b.e.srv.URL + "/ui/")
	require.NoError(t, err)
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == "trustflow_session" {
			return c.Value
		}
	}
	t.Fatal("no session cookie")
	return ""
}

// cookieClient is a client that presents value as the session cookie on
// every request, as a browser that kept a copy would.
func cookieClient(t *testing.T, e *env, value string) *http.Client {
	t.Helper()
	return &http.Client{
		Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			r = r.Clone(r.Context())
			r.Header.Del("Cookie")
			r.AddCookie(&http.Cookie{Name: "trustflow_session", Value: value})
			return http.DefaultTransport.RoundTrip(r)
		}),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
