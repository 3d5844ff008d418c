package connector_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/connector"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

func b64(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

func TestSpecValidation(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newEnv(t, st)
		e.addCA(t, "demo", e.ca)
		e.addIdentity(t, "svc", e.ca)
		base := func() connector.Spec {
			return connector.Spec{Name: "hr", URL: "https://hr.example:8443/api", Auth: connector.AuthMTLS, Identity: "svc", CAs: []string{"demo"}}
		}
		oauth := func(sp *connector.Spec) {
			sp.Auth = connector.AuthOAuth2
			sp.AuthSettings = connector.AuthSettings{TokenURL: "https://idp.example/oauth2/token", ClientID: "trustflow"}
			sp.Secrets = connector.Secrets{ClientSecret: "s3cret"}
		}
		tests := []struct {
			name  string
			edit  func(*connector.Spec)
			field string
			code  string
			words []string
		}{
			{"upper-case name", func(sp *connector.Spec) { sp.Name = "HR" }, "name", "invalid_input", []string{`"HR"`, "not a valid name"}},
			{"name with a space", func(sp *connector.Spec) { sp.Name = "hr directory" }, "name", "invalid_input", []string{"not a valid name"}},
			{"empty name", func(sp *connector.Spec) { sp.Name = "" }, "name", "invalid_input", []string{"not a valid name"}},
			{"url without scheme", func(sp *connector.Spec) { sp.URL = "hr.example:8443/api" }, "url", "invalid_input", []string{"not an absolute http(s) URL"}},
			{"relative url", func(sp *connector.Spec) { sp.URL = "/api" }, "url", "invalid_input", []string{"not an absolute http(s) URL"}},
			{"ftp url", func(sp *connector.Spec) { sp.URL = "ftp://hr.example/" }, "url", "invalid_input", []string{"not an absolute http(s) URL"}},
			{"url with credentials", func(sp *connector.Spec) { sp.URL = "https://u:p@hr.example/" }, "url", "invalid_input", []string{"credentials"}},
			{"url with query", func(sp *connector.Spec) { sp.URL = "https://hr.example/?a=1" }, "url", "invalid_input", []string{"query"}},
			{"plain http", func(sp *connector.Spec) { sp.URL = "http://hr.example:8080"; sp.Auth, sp.Identity = "", "" }, "url", "invalid_input", []string{"http://", "unencrypted"}},
			{"identity over plain http", func(sp *connector.Spec) { sp.URL = "http://hr.example:8080"; sp.AllowPlaintext = true }, "identity", "invalid_input", []string{"https://"}},
			{"mtls without identity", func(sp *connector.Spec) { sp.Identity = "" }, "identity", "invalid_input", []string{"mtls", "needs an identity"}},
			{"unknown auth type", func(sp *connector.Spec) { sp.Auth = "kerberos" }, "auth", "invalid_input", []string{`"kerberos"`}},
			{"https without CAs", func(sp *connector.Spec) { sp.CAs = nil }, "cas", "invalid_input", []string{"at least one CA"}},
			{"CA listed twice", func(sp *connector.Spec) { sp.CAs = []string{"demo", "demo"} }, "cas", "invalid_input", []string{"listed twice"}},
			{"TLS 1.0", func(sp *connector.Spec) { sp.MinTLS = "1.0" }, "min_tls", "invalid_input", []string{`"1.0" is not allowed`}},
			{"TLS 1.1", func(sp *connector.Spec) { sp.MinTLS = "1.1" }, "min_tls", "invalid_input", []string{`"1.1" is not allowed`}},
			{"zero timeout", func(sp *connector.Spec) { sp.Timeout = "0s" }, "timeout", "invalid_input", []string{`"0s"`}},
			{"pin without sha256/", func(sp *connector.Spec) { sp.Pins = []string{b64(32)} }, "pins", "invalid_input", []string{"is not a pin"}},
			{"pin not base64", func(sp *connector.Spec) { sp.Pins = []string{"sha256/not base64!"} }, "pins", "invalid_input", []string{"is not a pin"}},
			{"pin of 20 bytes", func(sp *connector.Spec) { sp.Pins = []string{"sha256/" + b64(20)} }, "pins", "invalid_input", []string{"is not a pin"}},
			{"reserved header Host", func(sp *connector.Spec) { sp.Headers = map[string]string{"Host": "x"} }, "headers", "invalid_input", []string{`"Host"`, "set by trustflow"}},
			{"reserved header Idempotency-Key", func(sp *connector.Spec) { sp.Headers = map[string]string{"idempotency-key": "x"} }, "headers", "invalid_input", []string{"set by trustflow"}},
			{"Authorization header", func(sp *connector.Spec) { sp.Headers = map[string]string{"Authorization": "Bearer x"} }, "headers", "invalid_input", []string{"Authorization", "unsealed"}},
			{"bad header name", func(sp *connector.Spec) { sp.Headers = map[string]string{"X Tenant": "x"} }, "headers", "invalid_input", []string{"not a valid header name"}},
			{"header value with newline", func(sp *connector.Spec) { sp.Headers = map[string]string{"X-Tenant": "a\r\nX-Evil: 1"} }, "headers", "invalid_input", []string{"line break"}},
			{"basic without username", func(sp *connector.Spec) {
				sp.Auth, sp.Secrets = connector.AuthBasic, connector.Secrets{Password: "pw"}
			}, "auth_settings.username", "invalid_input", []string{"required for auth type basic"}},
			{"basic without password", func(sp *connector.Spec) {
				sp.Auth, sp.AuthSettings = connector.AuthBasic, connector.AuthSettings{Username: "u"}
			}, "secrets.password", "invalid_input", []string{"required for auth type basic"}},
			{"bearer without token", func(sp *connector.Spec) { sp.Auth = connector.AuthBearer }, "secrets.token", "invalid_input", []string{"required for auth type bearer"}},
			{"api-key without header name", func(sp *connector.Spec) {
				sp.Auth, sp.Secrets = connector.AuthAPIKey, connector.Secrets{APIKey: "k"}
			}, "auth_settings.header_name", "invalid_input", []string{"api-key"}},
			{"api-key without key", func(sp *connector.Spec) {
				sp.Auth, sp.AuthSettings = connector.AuthAPIKey, connector.AuthSettings{HeaderName: "X-API-Key"}
			}, "secrets.api_key", "invalid_input", []string{"required for auth type api-key"}},
			{"oauth2 without token_url", func(sp *connector.Spec) { oauth(sp); sp.AuthSettings.TokenURL = "" }, "auth_settings.token_url", "invalid_input", []string{"https://"}},
			{"oauth2 with http token_url", func(sp *connector.Spec) { oauth(sp); sp.AuthSettings.TokenURL = "http://idp.example/token" }, "auth_settings.token_url", "invalid_input", []string{"https://"}},
			{"oauth2 without client_id", func(sp *connector.Spec) { oauth(sp); sp.AuthSettings.ClientID = "" }, "auth_settings.client_id", "invalid_input", []string{"required for auth type oauth2-client-credentials"}},
			{"oauth2 without secret", func(sp *connector.Spec) { oauth(sp); sp.Secrets = connector.Secrets{} }, "secrets.client_secret", "invalid_input", []string{"RFC 8705"}},
			{"oauth2 token_auth_tls without identity", func(sp *connector.Spec) {
				oauth(sp)
				sp.Identity, sp.AuthSettings.TokenAuthTLS = "", true
			}, "auth_settings.token_auth_tls", "invalid_input", []string{"needs an identity"}},
			{"unknown CA", func(sp *connector.Spec) { sp.CAs = []string{"demo", "nope"} }, "cas", "unknown_ca", []string{`"nope"`}},
			{"unknown identity", func(sp *connector.Spec) { sp.Identity = "ghost" }, "identity", "unknown_identity", []string{`"ghost"`}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				sp := base()
				tc.edit(&sp)
				_, err := e.conns.Create(ctx, admin, sp)
				var in *errs.Error
				require.ErrorAs(t, err, &in)
				require.Equal(t, tc.field, in.Field, in.Message)
				require.Equal(t, tc.code, in.Code)
				for _, w := range tc.words {
					require.Contains(t, in.Message, w)
				}
				require.NotEmpty(t, in.Hint)
			})
		}
		list, err := e.conns.List(ctx)
		require.NoError(t, err)
		require.Empty(t, list, "a refused spec must not be stored")

		// The valid base spec is accepted, with its defaults filled in.
		c := e.create(t, base())
		require.Equal(t, connector.AuthMTLS, c.Auth)
		require.Equal(t, "1.2", c.MinTLS)
		require.Equal(t, "30s", c.Timeout)
		require.False(t, c.HasSecret)
	})
}

func TestPlaintextNeedsAuditedException(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newEnv(t, st)
		srv := httptest.NewServer(okHandler)
		t.Cleanup(srv.Close)

		_, err := e.conns.Create(ctx, admin, connector.Spec{Name: "legacy", URL: srv.URL})
		var in *errs.Error
		require.ErrorAs(t, err, &in)
		require.Equal(t, "url", in.Field)

		c := e.create(t, connector.Spec{Name: "legacy", URL: srv.URL, AllowPlaintext: true})
		require.True(t, c.AllowPlaintext)
		require.Equal(t, connector.AuthNone, c.Auth)
		d := decodeDetails(t, e.lastAudit(t, "connector.create", "connector/legacy"))
		require.Equal(t, []string{"allow_plaintext"}, d.PolicyExceptions)

		resp, err := e.conns.Do(ctx, "legacy", connector.Request{Path: "/status"})
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.Status)
		require.Nil(t, resp.Evidence, "a plaintext call has no handshake evidence")
	})
}

func TestSecretsAreSealedAndNeverShown(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newEnv(t, st)
		e.addCA(t, "demo", e.ca)
		var got requestLog
		srv := startServer(t, got.handler(okHandler), serverConfig(e.ca.IssueServer(t, "127.0.0.1"), nil), false)

		const (
			password     = "pw-basic-7f3a91"
			token        = "tok-bearer-91c2e0"
			apiKey       = "key-api-55d0b7"
			clientSecret = "cs-oauth-e41b08"
			newToken     = "tok-bearer-rotated-3d17"
		)
		secrets := []string{password, token, apiKey, clientSecret, newToken}
		specs := []connector.Spec{
			{Name: "basic", URL: srv.URL, Auth: connector.AuthBasic, CAs: []string{"demo"},
				AuthSettings: connector.AuthSettings{Username: "trustflow"}, Secrets: connector.Secrets{Password: password}},
			{Name: "bearer", URL: srv.URL, Auth: connector.AuthBearer, CAs: []string{"demo"}, Secrets: connector.Secrets{Token: token}},
			{Name: "apikey", URL: srv.URL, Auth: connector.AuthAPIKey, CAs: []string{"demo"},
				AuthSettings: connector.AuthSettings{HeaderName: "X-API-Key"}, Secrets: connector.Secrets{APIKey: apiKey}},
			{Name: "oauth", URL: srv.URL, Auth: connector.AuthOAuth2, CAs: []string{"demo"},
				AuthSettings: connector.AuthSettings{TokenURL: "https://idp.example/oauth2/token", ClientID: "trustflow"},
				Secrets:      connector.Secrets{ClientSecret: clientSecret}},
		}
		for _, sp := range specs {
			c := e.create(t, sp)
			require.True(t, c.HasSecret, sp.Name)
			require.True(t, decodeDetails(t, e.lastAudit(t, "connector.create", "connector/"+sp.Name)).SecretChanged)
		}

		noSecretIn := func(what string, data []byte) {
			t.Helper()
			for _, s := range secrets {
				require.False(t, bytes.Contains(data, []byte(s)), "%s holds the secret %q", what, s)
			}
		}
		sealedOf := func(name string) []byte {
			t.Helper()
			var sealed []byte
			require.NoError(t, st.DB().QueryRowContext(ctx, "SELECT sealed_secret FROM connectors WHERE name = $1", name).Scan(&sealed))
			require.NotEmpty(t, sealed, name)
			return sealed
		}
		scan := func() {
			t.Helper()
			for _, sp := range specs {
				v, err := e.conns.Get(ctx, sp.Name)
				require.NoError(t, err)
				b, err := json.Marshal(v)
				require.NoError(t, err)
				noSecretIn("Get("+sp.Name+") JSON", b)
				spec, err := e.conns.Spec(ctx, sp.Name)
				require.NoError(t, err)
				require.Equal(t, connector.Secrets{}, spec.Secrets)
			}
			list, err := e.conns.List(ctx)
			require.NoError(t, err)
			require.Len(t, list, len(specs))
			b, err := json.Marshal(list)
			require.NoError(t, err)
			noSecretIn("List JSON", b)

			rows, err := st.DB().QueryContext(ctx, "SELECT name, description, url, auth, headers, pins, sealed_secret, last_error FROM connectors")
			require.NoError(t, err)
			defer rows.Close()
			for rows.Next() {
				var name, desc, url, auth, headers, pins, lastErr string
				var sealed []byte
				require.NoError(t, rows.Scan(&name, &desc, &url, &auth, &headers, &pins, &sealed, &lastErr))
				noSecretIn("connectors row "+name, []byte(name+desc+url+auth+headers+pins+lastErr))
				noSecretIn("connectors.sealed_secret of "+name, sealed)
			}
			require.NoError(t, rows.Err())

			var exported bytes.Buffer
			_, err = e.log.Export(ctx, &exported, audit.Filter{})
			require.NoError(t, err)
			noSecretIn("the audit log", exported.Bytes())
		}
		scan()

		// An update that sends no secret keeps the sealed one, byte for byte.
		before := sealedOf("bearer")
		sp, err := e.conns.Spec(ctx, "bearer")
		require.NoError(t, err)
		sp.Description = "HR directory"
		c, err := e.conns.Update(ctx, admin, sp)
		require.NoError(t, err)
		require.True(t, c.HasSecret)
		require.Equal(t, "HR directory", c.Description)
		require.Equal(t, before, sealedOf("bearer"))
		require.False(t, decodeDetails(t, e.lastAudit(t, "connector.update", "connector/bearer")).SecretChanged)
		_, err = e.conns.Do(ctx, "bearer", connector.Request{Path: "/"})
		require.NoError(t, err)
		require.Equal(t, "Bearer "+token, got.last(t).Header.Get("Authorization"))

		// A new secret replaces it, and the next call sends it.
		sp.Secrets = connector.Secrets{Token: newToken}
		_, err = e.conns.Update(ctx, admin, sp)
		require.NoError(t, err)
		require.NotEqual(t, before, sealedOf("bearer"))
		require.True(t, decodeDetails(t, e.lastAudit(t, "connector.update", "connector/bearer")).SecretChanged)
		_, err = e.conns.Do(ctx, "bearer", connector.Request{Path: "/"})
		require.NoError(t, err)
		require.Equal(t, "Bearer "+newToken, got.last(t).Header.Get("Authorization"))

		// Changing the auth type without the new type's secret is refused:
		// the old type's secret does not carry over.
		sp.Auth, sp.AuthSettings, sp.Secrets = connector.AuthBasic, connector.AuthSettings{Username: "u"}, connector.Secrets{}
		_, err = e.conns.Update(ctx, admin, sp)
		var in *errs.Error
		require.ErrorAs(t, err, &in)
		require.Equal(t, "secrets.password", in.Field)

		scan()
	})
}

func TestRemovingTrustInUseIsRefused(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newEnv(t, st)
		e.addCA(t, "demo", e.ca)
		e.addIdentity(t, "svc", e.ca)
		e.create(t, connector.Spec{Name: "hr", URL: "https://hr.example", Identity: "svc", CAs: []string{"demo"}})

		var conflict *errs.Error
		err := e.trust.RemoveCA(ctx, admin, "demo")
		require.ErrorAs(t, err, &conflict)
		require.Equal(t, "in_use", conflict.Code)
		require.Equal(t, []string{"hr"}, conflict.UsedBy)
		require.Contains(t, conflict.Message, "hr")

		conflict = nil
		err = e.trust.Remove(ctx, admin, "svc")
		require.ErrorAs(t, err, &conflict)
		require.Equal(t, "in_use", conflict.Code)
		require.Equal(t, []string{"hr"}, conflict.UsedBy)

		_, err = e.trust.GetCA(ctx, "demo")
		require.NoError(t, err, "a refused removal must keep the CA")
		_, err = e.trust.Get(ctx, "svc")
		require.NoError(t, err, "a refused removal must keep the identity")

		require.NoError(t, e.conns.Remove(ctx, admin, "hr"))
		require.NoError(t, e.trust.RemoveCA(ctx, admin, "demo"))
		require.NoError(t, e.trust.Remove(ctx, admin, "svc"))
		var nf *errs.Error
		_, err = e.conns.Get(ctx, "hr")
		require.ErrorAs(t, err, &nf)
		require.Equal(t, errs.NotFound, nf.Kind)
		require.ErrorIs(t, err, store.ErrNotFound)
	})
}
