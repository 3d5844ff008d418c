package api_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/api"
	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

var (
	secretForm  = regexp.MustCompile(`^tf_[A-Za-z0-9_-]{43}$`)
	tokenIDForm = regexp.MustCompile(`^tok_[0-9a-f]{16}$`)
)

type tokenList struct {
	Tokens []auth.Token `json:"tokens"`
}

func TestTokenLifecycle(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		ctx := context.Background()
		e := newEnv(t, st, api.Config{})
		adminTok, err := e.auth.Get(ctx, e.adminP.TokenID)
		require.NoError(t, err)
		e.clock.Advance(time.Minute) // list order is creation order
		createdAt := start.Add(time.Minute)

		// Create: 201, the secret shown this once.
		created := requireJSON[api.CreatedToken](t,
			e.do("POST", "/api/v1/tokens", e.admin, `{"name":" ci ","role":"operator","expires_in":"720h"}`), http.StatusCreated)
		require.Regexp(t, secretForm, created.Secret)
		require.Regexp(t, tokenIDForm, created.ID)
		expires := createdAt.Add(720 * time.Hour)
		want := auth.Token{ID: created.ID, Name: "ci", Role: auth.RoleOperator, CreatedAt: createdAt,
			CreatedBy: e.adminP.TokenID, ExpiresAt: &expires, Status: "active"}
		require.Equal(t, want, created.Token)
		secret := created.Secret

		// GET and list never carry the secret (strict decoding refuses a
		// "token" field, and the raw bodies are searched too).
		rec := e.do("GET", "/api/v1/tokens/"+created.ID, e.admin, "")
		require.NotContains(t, rec.Body.String(), secret)
		require.Equal(t, want, requireJSON[auth.Token](t, rec, http.StatusOK))
		rec = e.do("GET", "/api/v1/tokens", e.admin, "")
		require.NotContains(t, rec.Body.String(), secret)
		require.Equal(t, tokenList{Tokens: []auth.Token{adminTok, want}}, requireJSON[tokenList](t, rec, http.StatusOK))

		// The database holds only the secret's SHA-256.
		sum := sha256.Sum256([]byte(secret))
		var hash string
		require.NoError(t, st.DB().QueryRow("SELECT secret_hash FROM tokens WHERE id = $1", created.ID).Scan(&hash))
		require.Equal(t, hex.EncodeToString(sum[:]), hash)
		requireTableLacks(t, st, "tokens", secret)
		requireTableLacks(t, st, "audit_records", secret)

		// The new token works and acts as itself.
		me := requireJSON[auth.Principal](t, e.do("GET", "/api/v1/whoami", secret, ""), http.StatusOK)
		require.Equal(t, auth.Principal{TokenID: created.ID, Name: "ci", Role: auth.RoleOperator}, me)

		// Revoke, then the token no longer authenticates.
		e.clock.Advance(time.Minute)
		revokedAt := createdAt.Add(time.Minute)
		revoked := requireJSON[auth.Token](t, e.do("DELETE", "/api/v1/tokens/"+created.ID, e.admin, ""), http.StatusOK)
		wantRevoked := want
		wantRevoked.RevokedAt, wantRevoked.Status = &revokedAt, "revoked"
		require.Equal(t, wantRevoked, revoked)
		require.Equal(t, wantRevoked, requireJSON[auth.Token](t, e.do("GET", "/api/v1/tokens/"+created.ID, e.admin, ""), http.StatusOK))
		requireError(t, e.do("GET", "/api/v1/whoami", secret, ""), http.StatusUnauthorized, errorDetail{
			Code: "unauthenticated", Message: "a valid API token is required", Hint: hintUnauthenticated})

		// Revoking again conflicts; unknown ids are 404.
		requireError(t, e.do("DELETE", "/api/v1/tokens/"+created.ID, e.admin, ""), http.StatusConflict, errorDetail{
			Code: "already_revoked", Message: "token " + created.ID + " is already revoked", Hint: "nothing to do"})
		for _, method := range []string{"GET", "DELETE"} {
			requireError(t, e.do(method, "/api/v1/tokens/tok_missing", e.admin, ""), http.StatusNotFound, errorDetail{
				Code: "not_found", Message: "token tok_missing does not exist", Hint: hintNotFound})
		}

		// The create and the revoke are audited, with the admin as actor.
		recs, err := e.audit.List(ctx, audit.Filter{Action: "token.*", Target: "token/" + created.ID, Ascending: true})
		require.NoError(t, err)
		require.Len(t, recs, 2)
		adminActor := auth.ActorOf(e.adminP)
		require.Equal(t, []string{"token.create", "token.revoke"}, []string{recs[0].Action, recs[1].Action})
		require.Equal(t, adminActor, recs[0].Actor)
		require.Equal(t, adminActor, recs[1].Actor)
		require.JSONEq(t, `{"name":"ci","role":"operator","expires_at":"2026-03-31T09:01:00Z"}`, string(recs[0].Details))
		require.JSONEq(t, `{"name":"ci","role":"operator"}`, string(recs[1].Details))
	})
}

// TestExpiredTokenIsListedAsExpired drives expiry with the fake clock.
func TestExpiredTokenIsListedAsExpired(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		e := newEnv(t, st, api.Config{})
		created := requireJSON[api.CreatedToken](t,
			e.do("POST", "/api/v1/tokens", e.admin, `{"name":"short","role":"auditor","expires_in":"90m"}`), http.StatusCreated)
		e.clock.Advance(90*time.Minute - time.Microsecond)
		require.Equal(t, http.StatusOK, e.do("GET", "/api/v1/whoami", created.Secret, "").Code)
		e.clock.Advance(time.Microsecond)
		require.Equal(t, http.StatusUnauthorized, e.do("GET", "/api/v1/whoami", created.Secret, "").Code)
		got := requireJSON[auth.Token](t, e.do("GET", "/api/v1/tokens/"+created.ID, e.admin, ""), http.StatusOK)
		require.Equal(t, "expired", got.Status)
	})
}

// TestCreatedTokenMatchesStoredToken checks that the answer to a create
// describes the token as it is stored, whatever the lifetime asked for.
func TestCreatedTokenMatchesStoredToken(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		e := newEnv(t, st, api.Config{})
		for _, ttl := range []string{"720h", "90m", "1500ns", "1us", "1ns"} {
			body := fmt.Sprintf(`{"name":"ttl %s","role":"editor","expires_in":%q}`, ttl, ttl)
			created := requireJSON[api.CreatedToken](t, e.do("POST", "/api/v1/tokens", e.admin, body), http.StatusCreated)
			stored := requireJSON[auth.Token](t, e.do("GET", "/api/v1/tokens/"+created.ID, e.admin, ""), http.StatusOK)
			require.Equal(t, stored, created.Token, "expires_in %s", ttl)
		}
	})
}

// requireTableLacks scans every column of every row of table for s.
func requireTableLacks(t *testing.T, st *store.Store, table, s string) {
	t.Helper()
	rows, err := st.DB().Query("SELECT * FROM " + table)
	require.NoError(t, err)
	defer rows.Close()
	cols, err := rows.Columns()
	require.NoError(t, err)
	n := 0
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		require.NoError(t, rows.Scan(ptrs...))
		for i, v := range vals {
			if b, ok := v.([]byte); ok {
				v = string(b)
			}
			require.NotContains(t, fmt.Sprint(v), s, "%s.%s holds the secret", table, cols[i])
		}
		n++
	}
	require.NoError(t, rows.Err())
	require.NotZero(t, n, "%s is empty: nothing was checked", table)
}

type badCreate struct {
	name        string
	contentType string // empty means application/json when there is a body
	body        string
	status      int
	want        errorDetail
}

func invalidInput(msg, hint string) errorDetail {
	return errorDetail{Code: "invalid_input", Message: msg, Hint: hint}
}

func invalidJSON(msg, hint string) errorDetail {
	return errorDetail{Code: "invalid_json", Message: msg, Hint: hint}
}

const (
	hintName     = "name the token after who or what uses it, e.g. --name ci-deploy"
	hintNameForm = "use letters, digits, spaces, '-' or '_'"
	hintRole     = "use admin, editor, operator or auditor"
	hintExpires  = "use a Go duration such as 720h or 90m"
	hintType     = "fix the field's type"
)

var badCreates = []badCreate{
	{"name empty", "", `{"name":"","role":"admin"}`, 400, invalidInput("name: is required", hintName)},
	{"name blank", "", `{"name":" \t ","role":"admin"}`, 400, invalidInput("name: is required", hintName)},
	{"name missing", "", `{"role":"admin"}`, 400, invalidInput("name: is required", hintName)},
	{"name too long", "", `{"name":"` + strings.Repeat("n", auth.MaxNameLen+1) + `","role":"admin"}`, 400,
		invalidInput("name: must be printable text of at most 128 bytes", hintNameForm)},
	{"name control character", "", `{"name":"ci\u0007","role":"admin"}`, 400,
		invalidInput("name: must be printable text of at most 128 bytes", hintNameForm)},
	{"role unknown", "", `{"name":"ci","role":"root"}`, 400, invalidInput(`role: unknown role "root"`, hintRole)},
	{"role missing", "", `{"name":"ci"}`, 400, invalidInput(`role: unknown role ""`, hintRole)},
	{"role wrong case", "", `{"name":"ci","role":"Admin"}`, 400, invalidInput(`role: unknown role "Admin"`, hintRole)},
	{"expires_in not a duration", "", `{"name":"ci","role":"admin","expires_in":"abc"}`, 400,
		invalidInput(`expires_in: "abc" is not a positive duration`, hintExpires)},
	{"expires_in negative", "", `{"name":"ci","role":"admin","expires_in":"-1h"}`, 400,
		invalidInput(`expires_in: "-1h" is not a positive duration`, hintExpires)},
	{"expires_in zero", "", `{"name":"ci","role":"admin","expires_in":"0s"}`, 400,
		invalidInput(`expires_in: "0s" is not a positive duration`, hintExpires)},
	{"expires_in overflows", "", `{"name":"ci","role":"admin","expires_in":"9999999999h"}`, 400,
		invalidInput(`expires_in: "9999999999h" is not a positive duration`, hintExpires)},
	{"unknown field", "", `{"name":"ci","role":"admin","admin":true}`, 400, invalidInput("admin: unknown field", hintUnknownField)},
	{"name wrong type", "", `{"name":5,"role":"admin"}`, 400, invalidInput("name: must be a string, not number", hintType)},
	{"role wrong type", "", `{"name":"ci","role":["admin"]}`, 400, invalidInput("role: must be a string, not array", hintType)},
	{"expires_in wrong type", "", `{"name":"ci","role":"admin","expires_in":3600}`, 400, invalidInput("expires_in: must be a string, not number", hintType)},
	{"array instead of object", "", `[{"name":"ci","role":"admin"}]`, 400,
		invalidJSON("request body must be a JSON object, not array", `send a JSON object such as {"name": ...}`)},
	{"trailing data", "", `{"name":"ci","role":"admin"} {"name":"again","role":"admin"}`, 400,
		invalidJSON("request body has data after the JSON object", "send exactly one JSON object")},
	{"trailing garbage", "", `{"name":"ci","role":"admin"}}`, 400,
		invalidJSON("request body has data after the JSON object", "send exactly one JSON object")},
	{"empty body", "", "", 400, invalidJSON("request body is empty", "send a JSON object")},
	{"truncated", "", `{"name":"ci","role":`, 400,
		invalidJSON("request body ends in the middle of the JSON", "send a complete JSON object")},
	{"syntax error", "", `{"name" "ci"}`, 400,
		invalidJSON("request body is not valid JSON (at byte 9): invalid character '\"' after object key", "check quoting and commas")},
	{"wrong content type", "text/plain", `{"name":"ci","role":"admin"}`, 415, errorDetail{Code: "unsupported_media_type",
		Message: `Content-Type "text/plain" is not accepted here`, Hint: "send the body as application/json"}},
	{"form content type", "application/x-www-form-urlencoded", `name=ci&role=admin`, 415, errorDetail{Code: "unsupported_media_type",
		Message: `Content-Type "application/x-www-form-urlencoded" is not accepted here`, Hint: "send the body as application/json"}},
}

func TestCreateTokenRejectsBadInput(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		e := newEnv(t, st, api.Config{})
		for _, tc := range badCreates {
			t.Run(tc.name, func(t *testing.T) {
				req := newRequest("POST", "/api/v1/tokens", e.admin, tc.body)
				if tc.contentType != "" {
					req.Header.Set("Content-Type", tc.contentType)
				}
				tokens, head := e.tokenCount(t), e.head(t)
				requireError(t, e.serve(req), tc.status, tc.want)
				require.Equal(t, tokens, e.tokenCount(t), "a rejected request creates no token")
				require.Equal(t, head, e.head(t), "a rejected request appends no audit record")
			})
		}
	})
}

func TestCreateTokenAcceptsJSONWithCharset(t *testing.T) {
	t.Parallel()
	st := storetest.Open(t, store.SQLite)
	e := newEnv(t, st, api.Config{})
	req := newRequest("POST", "/api/v1/tokens", e.admin, `{"name":"ci","role":"admin"}`)
	req.Header.Set("Content-Type", "Application/JSON; charset=utf-8")
	requireJSON[api.CreatedToken](t, e.serve(req), http.StatusCreated)
}

func TestCreateTokenBodyTooLarge(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		e := newEnv(t, st, api.Config{MaxBodyBytes: 1024})
		want := errorDetail{Code: "body_too_large", Message: "request body is larger than 1024 bytes",
			Hint: "send a smaller body; split a large certificate bundle into several"}
		for name, body := range map[string]string{
			"large value":      `{"name":"` + strings.Repeat("n", 2000) + `","role":"admin"}`,
			"large trailer":    `{"name":"ci","role":"admin"}` + strings.Repeat(" ", 2000),
			"unterminated":     `{"name":"` + strings.Repeat("n", 2000),
			"large whitespace": strings.Repeat(" ", 2000) + `{"name":"ci","role":"admin"}`,
		} {
			t.Run(name, func(t *testing.T) {
				tokens, head := e.tokenCount(t), e.head(t)
				requireError(t, e.do("POST", "/api/v1/tokens", e.admin, body), http.StatusRequestEntityTooLarge, want)
				require.Equal(t, tokens, e.tokenCount(t))
				require.Equal(t, head, e.head(t))
			})
		}
		// Just under the limit is accepted.
		body := `{"name":"ci","role":"admin"}`
		body += strings.Repeat(" ", 1024-len(body))
		requireJSON[api.CreatedToken](t, e.do("POST", "/api/v1/tokens", e.admin, body), http.StatusCreated)
	})
}
