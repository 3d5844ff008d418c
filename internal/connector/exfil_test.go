package connector_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/connector"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/policy"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

var editor = audit.Actor{ID: "tok_editor", Name: "mallory", Role: "editor"}

// attacker is a plain-HTTP listener that records every request it gets.
type attacker struct {
	URL  string
	hits atomic.Int64
	seen atomic.Value // string: the last request's headers and body
}

func newAttacker(t *testing.T) *attacker {
	t.Helper()
	a := &attacker{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		var b strings.Builder
		_ = r.Header.Write(&b)
		a.seen.Store(b.String() + string(body))
		w.Header().Set("Location", "http://"+r.Host+"/stolen")
		w.WriteHeader(http.StatusOK)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	a.URL = "http://" + ln.Addr().String()
	return a
}

func requireConflictCode(t *testing.T, err error, kind errs.Kind, code string) *errs.Error {
	t.Helper()
	e, ok := errs.As(err)
	require.True(t, ok, "%v", err)
	require.Equal(t, kind, e.Kind, "%v", err)
	require.Equal(t, code, e.Code, "%v", err)
	require.NotEmpty(t, e.Hint)
	return e
}

// TestAnEditorCannotMoveASecret tries, for every secret kind, to point a
// connector an admin configured at the attacker's listener without sending
// the secret again: each update is refused and changes nothing, the secret
// never reaches the attacker, and only an admin's explicit --keep-secrets
// (audited with where the secret went before and after) moves it.
func TestAnEditorCannotMoveASecret(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newEnv(t, st)
		e.addCA(t, "demo", e.ca)
		e.addCA(t, "other", e.ca)
		e.addIdentity(t, "svc", e.ca)
		var got requestLog
		srv := startServer(t, got.handler(okHandler), serverConfig(e.ca.IssueServer(t, "127.0.0.1"), e.ca.Pool()), true)
		evil := newAttacker(t)
		var te tokenEndpoint
		idp := startServer(t, &te, serverConfig(e.ca.IssueServer(t, "127.0.0.1"), nil), false)

		for _, tc := range []struct {
			name, auth, secret string
			settings           connector.AuthSettings
			secrets            connector.Secrets
		}{
			{"basic", connector.AuthBasic, "pa55word-basic", connector.AuthSettings{Username: "hr"}, connector.Secrets{Password: "pa55word-basic"}},
			{"bearer", connector.AuthBearer, "tok-bearer-123", connector.AuthSettings{}, connector.Secrets{Token: "tok-bearer-123"}},
			{"apikey", connector.AuthAPIKey, "key-api-456", connector.AuthSettings{HeaderName: "X-API-Key"}, connector.Secrets{APIKey: "key-api-456"}},
			{"oauth", connector.AuthOAuth2, "client-secret-789", connector.AuthSettings{TokenURL: idp.URL + "/token", ClientID: "tf"}, connector.Secrets{ClientSecret: "client-secret-789"}},
		} {
			sp := mtlsSpec(tc.name, srv)
			sp.Auth, sp.AuthSettings, sp.Secrets = tc.auth, tc.settings, tc.secrets
			e.create(t, sp)
			before, err := e.conns.Get(ctx, tc.name)
			require.NoError(t, err)

			moves := []func(*connector.Spec){
				func(s *connector.Spec) { s.URL, s.AllowPlaintext, s.Identity, s.Auth = evil.URL, true, "", tc.auth },
				func(s *connector.Spec) { s.URL = strings.Replace(s.URL, "127.0.0.1", "localhost", 1) }, // another host
				func(s *connector.Spec) { s.URL += "/elsewhere" },
				func(s *connector.Spec) { s.CAs = []string{"other"} },
				func(s *connector.Spec) { s.ServerName = "attacker.example" },
				func(s *connector.Spec) { s.SystemRoots = true },
			}
			if tc.auth == connector.AuthOAuth2 {
				moves = append(moves, func(s *connector.Spec) {
					s.AuthSettings.TokenURL = strings.Replace(idp.URL, "127.0.0.1", "localhost", 1) + "/token"
				})
			}
			for i, move := range moves {
				up := sp
				up.Secrets = connector.Secrets{}
				up.CAs = append([]string(nil), sp.CAs...)
				move(&up)
				_, err := e.conns.Update(ctx, editor, up)
				ce := requireConflictCode(t, err, errs.Conflict, "secret_destination_changed")
				require.Contains(t, ce.Message, "without sending the secret again", "%s move %d", tc.name, i)
				up.KeepSecrets = true
				_, err = e.conns.Update(ctx, editor, up)
				requireConflictCode(t, err, errs.Forbidden, "keep_secrets_admin_only")
				after, err := e.conns.Get(ctx, tc.name)
				require.NoError(t, err)
				require.Equal(t, before, after, "%s move %d: a refused update changes nothing", tc.name, i)
			}
			// Calls still go where the admin said, with the secret.
			_, err = e.conns.Do(ctx, tc.name, connector.Request{Path: "/"})
			require.NoError(t, err)

			// Sending the secret again moves it: the editor knows it then.
			up := sp
			up.Description = "changed, same destination"
			up.Secrets = connector.Secrets{}
			_, err = e.conns.Update(ctx, editor, up)
			require.NoError(t, err, "an update that keeps the destination keeps the secret")
		}
		require.Zero(t, evil.hits.Load(), "the attacker's listener received nothing")

		// An admin's --keep-secrets moves it, audited with both destinations.
		sp := mtlsSpec("bearer", srv)
		sp.Auth, sp.CAs, sp.KeepSecrets = connector.AuthBearer, []string{"other"}, true
		_, err := e.conns.Update(ctx, admin, sp)
		require.NoError(t, err)
		rec := e.lastAudit(t, "connector.update", "connector/bearer")
		var det map[string]any
		require.NoError(t, json.Unmarshal(rec.Details, &det))
		require.Equal(t, true, det["keep_secrets"])
		require.Equal(t, []any{"cas"}, det["destination_changed"])
		require.Equal(t, []any{"demo"}, det["destination_before"].(map[string]any)["cas"])
		require.Equal(t, []any{"other"}, det["destination_after"].(map[string]any)["cas"])
		require.NotContains(t, string(rec.Details), "tok-bearer-123")
	})
}

// TestOAuth2TokenRequestSendsTheSecretOnceAndNeverFollowsARedirect: a token
// endpoint that redirects (307, to plain HTTP) gets the secret once and the
// redirect's target never; each auth method puts it in exactly one place.
func TestOAuth2TokenRequestSendsTheSecretOnceAndNeverFollowsARedirect(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := sqliteEnv(t)
	e.addCA(t, "demo", e.ca)
	e.addIdentity(t, "svc", e.ca)
	api := startServer(t, okHandler, serverConfig(e.ca.IssueServer(t, "127.0.0.1"), e.ca.Pool()), true)
	evil := newAttacker(t)
	var redirects atomic.Int64
	var carried atomic.Value
	idp := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		redirects.Add(1)
		_ = r.ParseForm()
		carried.Store(r.Header.Get("Authorization") + "|" + r.PostForm.Get("client_secret"))
		http.Redirect(w, r, evil.URL+"/token", http.StatusTemporaryRedirect)
	}), serverConfig(e.ca.IssueServer(t, "127.0.0.1"), nil), false)
	sp := mtlsSpec("idp-redirects", api)
	sp.Auth = connector.AuthOAuth2
	sp.AuthSettings = connector.AuthSettings{TokenURL: idp.URL + "/token", ClientID: "tf"}
	sp.Secrets = connector.Secrets{ClientSecret: "s3cret-once"}
	e.create(t, sp)
	_, err := e.conns.Do(ctx, "idp-redirects", connector.Request{Path: "/"})
	ce := callError(t, err)
	require.Equal(t, "oauth2_token", ce.Code)
	require.Contains(t, ce.Message, "redirect")
	require.Equal(t, int64(1), redirects.Load(), "one token request, no retry with the secret elsewhere")
	require.Zero(t, evil.hits.Load(), "the redirect was not followed")
	require.NotContains(t, ce.Message, "s3cret-once")

	for _, method := range []string{connector.TokenAuthBasic, connector.TokenAuthPost} {
		var te tokenEndpoint
		good := startServer(t, &te, serverConfig(e.ca.IssueServer(t, "127.0.0.1"), nil), false)
		sp := mtlsSpec("oauth-"+strings.ReplaceAll(method, "_", "-"), api)
		sp.Auth = connector.AuthOAuth2
		sp.AuthSettings = connector.AuthSettings{TokenURL: good.URL + "/token", ClientID: "tf", TokenAuthMethod: method}
		sp.Secrets = connector.Secrets{ClientSecret: "s3cret-" + method}
		e.create(t, sp)
		_, err := e.conns.Do(ctx, sp.Name, connector.Request{Path: "/"})
		require.NoError(t, err)
		te.mu.Lock()
		inHeader, inBody := te.auth != "", te.form["client_secret"] != nil
		te.mu.Unlock()
		require.Equal(t, method == connector.TokenAuthBasic, inHeader, method)
		require.Equal(t, method == connector.TokenAuthPost, inBody, method)
		require.Equal(t, int64(1), te.hits.Load())
	}
	sp.Name, sp.AuthSettings.TokenAuthMethod = "oauth-bad-method", "private_key_jwt"
	_, err = e.conns.Create(ctx, admin, sp)
	e2 := requireConflictCode(t, err, errs.Invalid, "invalid_input")
	require.Equal(t, "auth_settings.token_auth_method", e2.Field)
}

// TestConnectorsObeyThePolicy: a connector aimed at loopback is refused
// under the default policy, and a denied dial reaches nothing; an IP rule
// opens it; when the policy tightens, the existing connector fails closed
// with the rule named and `policy check` lists it.
func TestConnectorsObeyThePolicy(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		var cur atomic.Pointer[policy.Policy]
		set := func(doc string) {
			p, err := policy.Parse("p.yaml", []byte("apiVersion: trustflow/v1\nkind: Policy\n"+doc))
			require.NoError(t, err)
			cur.Store(p)
		}
		set("")
		e := newEnv(t, st, withPolicy(cur.Load))
		e.addCA(t, "demo", e.ca)
		e.addIdentity(t, "svc", e.ca)
		var accepted atomic.Int64
		srv := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			accepted.Add(1)
			okHandler.ServeHTTP(w, r)
		}), serverConfig(e.ca.IssueServer(t, "127.0.0.1"), e.ca.Pool()), true)
		_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "https://"))

		sp := mtlsSpec("hr", srv)
		_, err := e.conns.Create(ctx, admin, sp)
		ee := requireConflictCode(t, err, errs.Invalid, connector.CodePolicyViolation)
		require.Equal(t, "url", ee.Field)
		require.Contains(t, ee.Message, "loopback")
		require.Contains(t, ee.Hint, "trustflow policy allow --host 127.0.0.1 --ports "+port)

		set("egress: {allow: [{host: 127.0.0.1, ports: '" + port + "'}]}\n")
		e.create(t, sp)
		_, err = e.conns.Do(ctx, "hr", connector.Request{Path: "/"})
		require.NoError(t, err)
		require.Equal(t, int64(1), accepted.Load())

		// The rule goes away: the dial is refused before connect.
		set("")
		_, err = e.conns.Do(ctx, "hr", connector.Request{Path: "/again"})
		ce := callError(t, err)
		require.Equal(t, connector.CodePolicyViolation, ce.Code)
		res, err := e.conns.Test(ctx, admin, "hr", "")
		require.NoError(t, err)
		require.False(t, res.OK)
		require.Equal(t, connector.CodePolicyViolation, res.Error.Code)
		require.Equal(t, int64(1), accepted.Load(), "nothing reached the server after the rule went")

		// Tightened TLS rules fail the connector closed and are listed.
		set("egress: {allow: [{host: 127.0.0.1, ports: '" + port + "'}]}\ntls: {require_mtls: true, min_version: '1.3'}\n")
		nomtls := mtlsSpec("plain-auth", srv)
		nomtls.Auth, nomtls.Identity = connector.AuthNone, ""
		_, err = e.conns.Create(ctx, admin, nomtls)
		ee = requireConflictCode(t, err, errs.Invalid, connector.CodePolicyViolation)
		require.Equal(t, "identity", ee.Field)
		vs, err := e.conns.CheckPolicy(ctx, cur.Load())
		require.NoError(t, err)
		require.Equal(t, []policy.Violation{{Kind: "connector", Name: "hr", Rule: "tls.min_version", Message: "the policy's TLS floor is 1.3"}}, vs)
		_, err = e.conns.Do(ctx, "hr", connector.Request{Path: "/"})
		require.Equal(t, connector.CodePolicyViolation, callError(t, err).Code)
	})
}

// TestConnectorURLRules: each malformed URL is refused at its field with the
// fix, and nothing is stored.
func TestConnectorURLRules(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := sqliteEnv(t)
	e.addCA(t, "demo", e.ca)
	long := "https://h.example/" + strings.Repeat("a", connector.MaxURLLength)
	for raw, want := range map[string]string{
		"https://:8443/":                                   "has no host",
		"https:///path":                                    "has no host",
		"https://h.example:0/":                             `port "0" is not between 1 and 65535`,
		"https://h.example:65536/":                         `port "65536" is not between 1 and 65535`,
		"https://h.example:99999/":                         `port "99999" is not between 1 and 65535`,
		"https://h.example:/":                              `port "" is not between 1 and 65535`,
		"https://0x7f000001/":                              "numeric address form",
		"https://2130706433:443/":                          "numeric address form",
		"https://bad_host-.example/":                       "may not",
		"https://h.exa mple/":                              "holds whitespace",
		"https://" + strings.Repeat("a", 64) + ".example/": "the limit is 63",
		long:               "the limit max_url_length is 2048",
		"ftp://h.example/": "not an absolute http(s) URL",
		"https:h.example":  "not an absolute http(s) URL",
	} {
		_, err := e.conns.Create(ctx, admin, connector.Spec{Name: "u", URL: raw, CAs: []string{"demo"}})
		ee := requireConflictCode(t, err, errs.Invalid, "invalid_input")
		require.Equal(t, "url", ee.Field, raw)
		require.Contains(t, ee.Message, want, raw)
	}
	list, err := e.conns.List(ctx)
	require.NoError(t, err)
	require.Empty(t, list, "nothing was stored")
	for _, ok := range []string{"https://10.20.0.5:8443/api", "https://[fd00::5]/", "https://hr.agency.example"} {
		_, err := e.conns.Create(ctx, admin, connector.Spec{Name: "ok", URL: ok, CAs: []string{"demo"}})
		require.NoError(t, err, ok)
		require.NoError(t, e.conns.Remove(ctx, admin, "ok"))
	}
}

// echo answers with everything the request carried, in the forms an
// upstream might reflect it: raw headers in the body, the Authorization
// header back as a response header, base64 and URL-encoded copies.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	var b strings.Builder
	_ = r.Header.Write(&b)
	all := b.String()
	w.Header().Set("X-Echo-Authorization", r.Header.Get("Authorization"))
	w.Header().Set("X-Echo-Key", r.Header.Get("X-API-Key"))
	w.Header().Set("Content-Type", "application/json")
	out, _ := json.Marshal(map[string]any{"headers": all, "b64": base64.StdEncoding.EncodeToString([]byte(all)),
		"query": url.QueryEscape(all), "upper": strings.ToUpper(all)})
	_, _ = w.Write(out)
})

// TestEchoedSecretsAreNotReturned: whatever an upstream echoes, the
// connector's answer (what a step stores) holds none of its secrets in any
// usual form.
func TestEchoedSecretsAreNotReturned(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := sqliteEnv(t)
	e.addCA(t, "demo", e.ca)
	e.addIdentity(t, "svc", e.ca)
	srv := startServer(t, echo, serverConfig(e.ca.IssueServer(t, "127.0.0.1"), e.ca.Pool()), true)
	const accessToken = "at-0123456789abcdef/+="
	idp := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"access_token":"`+accessToken+`","token_type":"Bearer","expires_in":3600}`)
	}), serverConfig(e.ca.IssueServer(t, "127.0.0.1"), nil), false)
	for _, tc := range []struct {
		name, auth string
		settings   connector.AuthSettings
		secrets    connector.Secrets
		secret     string
		forms      []string
	}{
		{"basic", connector.AuthBasic, connector.AuthSettings{Username: "hr-sync"}, connector.Secrets{Password: "pa55-w0rd/+"}, "pa55-w0rd/+",
			[]string{base64.StdEncoding.EncodeToString([]byte("hr-sync:pa55-w0rd/+"))}},
		{"bearer", connector.AuthBearer, connector.AuthSettings{}, connector.Secrets{Token: "tok.bearer+123=="}, "tok.bearer+123==",
			[]string{url.QueryEscape("tok.bearer+123=="), base64.StdEncoding.EncodeToString([]byte("tok.bearer+123=="))}},
		{"apikey", connector.AuthAPIKey, connector.AuthSettings{HeaderName: "X-API-Key"}, connector.Secrets{APIKey: "key-\"quoted\"-456"}, "key-\"quoted\"-456",
			[]string{`key-\"quoted\"-456`}},
		{"oauth", connector.AuthOAuth2, connector.AuthSettings{TokenURL: idp.URL + "/token", ClientID: "tf"}, connector.Secrets{ClientSecret: "client-secret-789"}, accessToken,
			[]string{url.QueryEscape(accessToken), base64.StdEncoding.EncodeToString([]byte(accessToken))}},
	} {
		sp := mtlsSpec("echo-"+tc.name, srv)
		sp.Auth, sp.AuthSettings, sp.Secrets = tc.auth, tc.settings, tc.secrets
		e.create(t, sp)
		resp, err := e.conns.Do(ctx, sp.Name, connector.Request{Path: "/"})
		require.NoError(t, err)
		var whole strings.Builder
		whole.Write(resp.Body)
		_ = resp.Header.Write(&whole)
		got := whole.String()
		require.Contains(t, got, "[redacted]", tc.name)
		for _, f := range append([]string{tc.secret}, tc.forms...) {
			require.NotContains(t, got, f, "%s: form %q", tc.name, f)
		}
	}
}
