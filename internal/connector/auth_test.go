package connector_test

import (
	"context"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/connector"
	"github.com/trustflow/trustflow/internal/errs"
)

func TestAuthTypes(t *testing.T) {
	ctx := context.Background()
	e := sqliteEnv(t)
	e.addCA(t, "demo", e.ca)
	e.addIdentity(t, "svc", e.ca)
	var got requestLog
	srv := startServer(t, got.handler(okHandler), serverConfig(e.ca.IssueServer(t, "127.0.0.1"), e.ca.Pool()), true)

	with := func(name, auth string, settings connector.AuthSettings, secrets connector.Secrets) string {
		sp := mtlsSpec(name, srv)
		sp.Auth, sp.AuthSettings, sp.Secrets = auth, settings, secrets
		e.create(t, sp)
		return name
	}

	t.Run("basic", func(t *testing.T) {
		name := with("basic", connector.AuthBasic, connector.AuthSettings{Username: "hr-sync"}, connector.Secrets{Password: "pa:ss word"})
		_, err := e.conns.Do(ctx, name, connector.Request{Path: "/"})
		require.NoError(t, err)
		user, pass, ok := got.last(t).BasicAuth()
		require.True(t, ok)
		require.Equal(t, "hr-sync", user)
		require.Equal(t, "pa:ss word", pass)
	})
	t.Run("bearer", func(t *testing.T) {
		name := with("bearer", connector.AuthBearer, connector.AuthSettings{}, connector.Secrets{Token: "tok-123"})
		_, err := e.conns.Do(ctx, name, connector.Request{Path: "/"})
		require.NoError(t, err)
		require.Equal(t, "Bearer tok-123", got.last(t).Header.Get("Authorization"))
	})
	t.Run("api-key", func(t *testing.T) {
		name := with("apikey", connector.AuthAPIKey, connector.AuthSettings{HeaderName: "X-API-Key"}, connector.Secrets{APIKey: "key-456"})
		_, err := e.conns.Do(ctx, name, connector.Request{Path: "/"})
		require.NoError(t, err)
		r := got.last(t)
		require.Equal(t, "key-456", r.Header.Get("X-API-Key"))
		require.Empty(t, r.Header.Get("Authorization"))
	})
	t.Run("mtls", func(t *testing.T) {
		name := with("mtls", connector.AuthMTLS, connector.AuthSettings{}, connector.Secrets{})
		_, err := e.conns.Do(ctx, name, connector.Request{Path: "/"})
		require.NoError(t, err)
		r := got.last(t)
		require.Empty(t, r.Header.Get("Authorization"))
		require.Equal(t, e.activeVersion(t, "svc").Serial, r.TLS.PeerCertificates[0].SerialNumber.Text(16))
	})
}

func TestHeadersAndIdempotencyKey(t *testing.T) {
	ctx := context.Background()
	e := sqliteEnv(t)
	e.addCA(t, "demo", e.ca)
	e.addIdentity(t, "svc", e.ca)
	var got requestLog
	srv := startServer(t, got.handler(okHandler), serverConfig(e.ca.IssueServer(t, "127.0.0.1"), e.ca.Pool()), true)
	sp := mtlsSpec("hr", srv)
	sp.URL += "/api/v2/"
	sp.Headers = map[string]string{"X-Tenant": "agency-7", "Accept": "application/json"}
	e.create(t, sp)

	_, err := e.conns.Do(ctx, "hr", connector.Request{Method: "post", Path: "/users", Body: []byte(`{}`),
		Header:         http.Header{"X-Request-Id": {"req-1"}, "X-Tenant": {"overridden"}},
		IdempotencyKey: "run-42/step-3"})
	require.NoError(t, err)
	r := got.last(t)
	require.Equal(t, http.MethodPost, r.Method)
	require.Equal(t, "/api/v2/users", r.URL.Path)
	require.Equal(t, "agency-7", r.Header.Get("X-Tenant"), "the connector's headers win over a request's")
	require.Equal(t, "application/json", r.Header.Get("Accept"))
	require.Equal(t, "req-1", r.Header.Get("X-Request-Id"))
	require.Equal(t, "run-42/step-3", r.Header.Get("Idempotency-Key"))
	require.Equal(t, "trustflow", r.Header.Get("User-Agent"))

	_, err = e.conns.Do(ctx, "hr", connector.Request{Path: "/users"})
	require.NoError(t, err)
	require.Empty(t, got.last(t).Header.Values("Idempotency-Key"), "no Idempotency-Key unless the request sets one")

	_, err = e.conns.Do(ctx, "hr", connector.Request{Path: "/../admin"})
	var in *errs.Error
	require.ErrorAs(t, err, &in)
	require.Equal(t, "path", in.Field)
	_, err = e.conns.Do(ctx, "hr", connector.Request{Path: "https://elsewhere.example/"})
	require.ErrorAs(t, err, &in)
	require.Equal(t, "path", in.Field)
}

// tokenEndpoint is an OAuth2 token endpoint that issues the access token
// "t" and records what each token request carried.
type tokenEndpoint struct {
	hits atomic.Int64
	mu   sync.Mutex
	form map[string][]string
	auth string
	cert string // serial of the client certificate, if any
}

func (te *tokenEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	te.hits.Add(1)
	if err := r.ParseForm(); err != nil || r.Method != http.MethodPost || r.PostForm.Get("grant_type") != "client_credentials" {
		http.Error(w, `{"error":"invalid_request"}`, http.StatusBadRequest)
		return
	}
	te.mu.Lock()
	te.form, te.auth = r.PostForm, r.Header.Get("Authorization")
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		te.cert = r.TLS.PeerCertificates[0].SerialNumber.Text(16)
	}
	te.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"access_token":"t","token_type":"Bearer","expires_in":3600}`)
}

func TestOAuth2ClientCredentials(t *testing.T) {
	ctx := context.Background()
	e := sqliteEnv(t)
	e.addCA(t, "demo", e.ca)
	e.addIdentity(t, "svc", e.ca)
	var got requestLog
	api := startServer(t, got.handler(okHandler), serverConfig(e.ca.IssueServer(t, "127.0.0.1"), e.ca.Pool()), true)

	t.Run("client secret", func(t *testing.T) {
		// A typical identity provider: TLS, but no client certificate asked for.
		var te tokenEndpoint
		idp := startServer(t, &te, serverConfig(e.ca.IssueServer(t, "127.0.0.1"), nil), false)
		sp := mtlsSpec("oauth-secret", api)
		sp.Auth = connector.AuthOAuth2
		sp.AuthSettings = connector.AuthSettings{TokenURL: idp.URL + "/oauth2/token", ClientID: "trustflow", Scopes: []string{"users.read"}}
		sp.Secrets = connector.Secrets{ClientSecret: "s3cret"}
		e.create(t, sp)

		for range 5 {
			resp, err := e.conns.Do(ctx, "oauth-secret", connector.Request{Path: "/users"})
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, resp.Status)
			require.Equal(t, "Bearer t", got.last(t).Header.Get("Authorization"))
		}
		require.Equal(t, int64(1), te.hits.Load(), "the token is fetched once and reused")
		te.mu.Lock()
		defer te.mu.Unlock()
		require.Equal(t, "users.read", te.form["scope"][0])
		clientAuthenticated := te.auth != "" || te.form["client_secret"] != nil
		require.True(t, clientAuthenticated, "the token request carries the client secret")
		require.Empty(t, te.cert, "the token endpoint did not ask for a certificate, so none was sent")
	})

	t.Run("token_auth_tls", func(t *testing.T) {
		var te tokenEndpoint
		idp := startServer(t, &te, serverConfig(e.ca.IssueServer(t, "127.0.0.1"), e.ca.Pool()), false)
		sp := mtlsSpec("oauth-mtls", api)
		sp.Auth = connector.AuthOAuth2
		sp.AuthSettings = connector.AuthSettings{TokenURL: idp.URL + "/oauth2/token", ClientID: "trustflow", TokenAuthTLS: true}
		c := e.create(t, sp)
		require.False(t, c.HasSecret)

		for range 3 {
			_, err := e.conns.Do(ctx, "oauth-mtls", connector.Request{Path: "/users"})
			require.NoError(t, err)
			require.Equal(t, "Bearer t", got.last(t).Header.Get("Authorization"))
		}
		require.Equal(t, int64(1), te.hits.Load())
		te.mu.Lock()
		defer te.mu.Unlock()
		require.Equal(t, e.activeVersion(t, "svc").Serial, te.cert, "the token endpoint sees the identity's certificate")
		require.Equal(t, []string{"trustflow"}, te.form["client_id"])
		require.NotContains(t, te.form, "client_secret")
		require.Empty(t, te.auth, "no client secret in an Authorization header either")
	})

	t.Run("token endpoint refuses", func(t *testing.T) {
		idp := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"error":"invalid_client"}`)
		}), serverConfig(e.ca.IssueServer(t, "127.0.0.1"), nil), false)
		sp := mtlsSpec("oauth-refused", api)
		sp.Auth = connector.AuthOAuth2
		sp.AuthSettings = connector.AuthSettings{TokenURL: idp.URL + "/token", ClientID: "trustflow"}
		sp.Secrets = connector.Secrets{ClientSecret: "wrong"}
		e.create(t, sp)
		_, err := e.conns.Do(ctx, "oauth-refused", connector.Request{Path: "/users"})
		ce := callError(t, err)
		require.Equal(t, "oauth2_token", ce.Code)
		require.Contains(t, ce.Message, "invalid_client")
		require.NotContains(t, ce.Message, "wrong")
	})
}
