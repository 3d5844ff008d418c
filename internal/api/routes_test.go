package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
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

// scenario is the hand-written expectation for one route: the permission it
// requires, which roles hold it, and what a permitted request looks like.
type scenario struct {
	perm   auth.Permission
	public bool
	// roles may call the route (ignored for public routes).
	roles []auth.Role
	// path is the concrete path to request; empty means the route's path.
	path func(fx scenarioFixture) string
	body string
	// status answers a permitted request.
	status int
	// audited lists the actions a permitted request appends.
	audited []string
}

type scenarioFixture struct {
	adminTokenID  string
	victimTokenID string
}

func (s scenario) allows(r auth.Role) bool { return s.public || slices.Contains(s.roles, r) }

var (
	everyone     = []auth.Role{auth.RoleAdmin, auth.RoleEditor, auth.RoleOperator, auth.RoleAuditor}
	readers      = []auth.Role{auth.RoleAdmin, auth.RoleAuditor}
	adminOnly    = []auth.Role{auth.RoleAdmin}
	trustReaders = []auth.Role{auth.RoleAdmin, auth.RoleEditor, auth.RoleAuditor}
	editors      = []auth.Role{auth.RoleAdmin, auth.RoleEditor}
	runners      = []auth.Role{auth.RoleAdmin, auth.RoleEditor, auth.RoleOperator}
)

// at requests a fixed path instead of the route's pattern.
func at(path string) func(scenarioFixture) string {
	return func(scenarioFixture) string { return path }
}

// scenarios pins the permission matrix of every route: admin may do
// everything; auditor reads everything (tokens, the audit log, the trust
// store, connectors) and changes nothing; editor and operator see neither
// tokens nor the audit log; editor reads the trust store and manages and
// uses connectors; operator only reads connectors. Requests to the trust
// store and connector routes name things that do not exist or send
// incomplete bodies: they check who gets past authorisation, not what the
// handlers do (their own tests cover that).
var scenarios = map[string]scenario{
	"GET /healthz":             {public: true, status: http.StatusOK},
	"GET /readyz":              {public: true, status: http.StatusOK},
	"GET /metrics":             {public: true, status: http.StatusOK},
	"GET /api/v1/openapi.json": {roles: everyone, status: http.StatusOK},
	"GET /api/v1/system":       {perm: auth.PermSystemRead, roles: everyone, status: http.StatusOK},
	"GET /api/v1/whoami":       {roles: everyone, status: http.StatusOK},
	"POST /api/v1/tokens": {perm: auth.PermTokensWrite, roles: adminOnly, status: http.StatusCreated,
		body: `{"name":"scenario","role":"operator"}`, audited: []string{"token.create"}},
	"GET /api/v1/tokens": {perm: auth.PermTokensRead, roles: readers, status: http.StatusOK},
	"GET /api/v1/tokens/{id}": {perm: auth.PermTokensRead, roles: readers, status: http.StatusOK,
		path: func(fx scenarioFixture) string { return "/api/v1/tokens/" + fx.adminTokenID }},
	"DELETE /api/v1/tokens/{id}": {perm: auth.PermTokensWrite, roles: adminOnly, status: http.StatusOK,
		path: func(fx scenarioFixture) string { return "/api/v1/tokens/" + fx.victimTokenID }, audited: []string{"token.revoke"}},
	"GET /api/v1/audit":        {perm: auth.PermAuditRead, roles: readers, status: http.StatusOK},
	"GET /api/v1/audit/verify": {perm: auth.PermAuditRead, roles: readers, status: http.StatusOK},
	"GET /api/v1/audit/export": {perm: auth.PermAuditRead, roles: readers, status: http.StatusOK},
	// The scenarios' log is unkeyed: it has nothing to sign or verify a
	// checkpoint with (TestAuditCheckpointRoutes covers a keyed one).
	"POST /api/v1/audit/verify":      {perm: auth.PermAuditRead, roles: readers, body: `{}`, status: http.StatusBadRequest},
	"POST /api/v1/audit/checkpoints": {perm: auth.PermAuditRead, roles: readers, status: http.StatusServiceUnavailable},
	"GET /api/v1/audit/status":       {perm: auth.PermAuditRead, roles: readers, status: http.StatusServiceUnavailable},

	"POST /api/v1/cas":                 {perm: auth.PermCAsWrite, roles: adminOnly, body: `{}`, status: http.StatusBadRequest},
	"GET /api/v1/cas":                  {perm: auth.PermCAsRead, roles: trustReaders, status: http.StatusOK},
	"GET /api/v1/cas/{name}":           {perm: auth.PermCAsRead, roles: trustReaders, path: at("/api/v1/cas/missing"), status: http.StatusNotFound},
	"PUT /api/v1/cas/{name}":           {perm: auth.PermCAsWrite, roles: adminOnly, path: at("/api/v1/cas/missing"), body: `{}`, status: http.StatusBadRequest},
	"DELETE /api/v1/cas/{name}":        {perm: auth.PermCAsWrite, roles: adminOnly, path: at("/api/v1/cas/missing"), status: http.StatusNotFound},
	"POST /api/v1/cas/{name}/verify":   {perm: auth.PermCAsRead, roles: trustReaders, path: at("/api/v1/cas/missing/verify"), body: `{}`, status: http.StatusBadRequest},
	"POST /api/v1/identities/import":   {perm: auth.PermIdentitiesWrite, roles: adminOnly, body: `{"name":"x"}`, status: http.StatusBadRequest},
	"POST /api/v1/identities":          {perm: auth.PermIdentitiesWrite, roles: adminOnly, body: `{}`, status: http.StatusBadRequest},
	"GET /api/v1/identities":           {perm: auth.PermIdentitiesRead, roles: trustReaders, status: http.StatusOK},
	"GET /api/v1/identities/{name}":    {perm: auth.PermIdentitiesRead, roles: trustReaders, path: at("/api/v1/identities/missing"), status: http.StatusNotFound},
	"DELETE /api/v1/identities/{name}": {perm: auth.PermIdentitiesWrite, roles: adminOnly, path: at("/api/v1/identities/missing"), status: http.StatusNotFound},
	"POST /api/v1/identities/{name}/certificate": {perm: auth.PermIdentitiesWrite, roles: adminOnly,
		path: at("/api/v1/identities/missing/certificate"), body: `{}`, status: http.StatusBadRequest},
	"POST /api/v1/identities/{name}/rotate": {perm: auth.PermIdentitiesWrite, roles: adminOnly,
		path: at("/api/v1/identities/missing/rotate"), body: `{}`, status: http.StatusBadRequest},
	"POST /api/v1/identities/{name}/activate": {perm: auth.PermIdentitiesWrite, roles: adminOnly,
		path: at("/api/v1/identities/missing/activate"), body: `{"version":1}`, status: http.StatusNotFound},
	"POST /api/v1/identities/{name}/prune": {perm: auth.PermIdentitiesWrite, roles: adminOnly,
		path: at("/api/v1/identities/missing/prune"), status: http.StatusNotFound},
	"POST /api/v1/kek/rotate": {perm: auth.PermKEKWrite, roles: adminOnly, status: http.StatusNotImplemented},
	"GET /api/v1/kek":         {perm: auth.PermKEKWrite, roles: adminOnly, status: http.StatusNotImplemented},

	"GET /api/v1/policy":       {perm: auth.PermPolicyRead, roles: trustReaders, status: http.StatusOK},
	"GET /api/v1/policy/check": {perm: auth.PermPolicyRead, roles: trustReaders, status: http.StatusOK},
	"PUT /api/v1/policy": {perm: auth.PermPolicyWrite, roles: adminOnly, status: http.StatusOK,
		body: `{"apiVersion":"trustflow/v1","kind":"Policy"}`, audited: []string{"policy.set"}},
	"POST /api/v1/policy/allow": {perm: auth.PermPolicyWrite, roles: adminOnly, status: http.StatusOK,
		body: `{"host":"127.0.0.1","ports":"8443"}`, audited: []string{"policy.allow"}},
	"POST /api/v1/policy/disallow": {perm: auth.PermPolicyWrite, roles: adminOnly, status: http.StatusNotFound,
		body: `{"host":"10.9.9.9","ports":"443"}`},

	"POST /api/v1/connectors":          {perm: auth.PermConnectorsWrite, roles: editors, body: `{}`, status: http.StatusBadRequest},
	"GET /api/v1/connectors":           {perm: auth.PermConnectorsRead, roles: everyone, status: http.StatusOK},
	"GET /api/v1/connectors/{name}":    {perm: auth.PermConnectorsRead, roles: everyone, path: at("/api/v1/connectors/missing"), status: http.StatusNotFound},
	"PUT /api/v1/connectors/{name}":    {perm: auth.PermConnectorsWrite, roles: editors, path: at("/api/v1/connectors/missing"), body: `{"name":"missing","url":"https://127.0.0.1:1"}`, status: http.StatusNotFound},
	"DELETE /api/v1/connectors/{name}": {perm: auth.PermConnectorsWrite, roles: editors, path: at("/api/v1/connectors/missing"), status: http.StatusNotFound},
	"POST /api/v1/connectors/{name}/test": {perm: auth.PermConnectorsUse, roles: editors,
		path: at("/api/v1/connectors/missing/test"), body: `{}`, status: http.StatusNotFound},
	"POST /api/v1/connectors/{name}/call": {perm: auth.PermConnectorsUse, roles: editors,
		path: at("/api/v1/connectors/missing/call"), body: `{"method":"GET","path":"/"}`, status: http.StatusNotFound},
	"POST /api/v1/probe": {perm: auth.PermConnectorsUse, roles: editors, body: `{}`, status: http.StatusBadRequest},

	"POST /api/v1/flows":          {perm: auth.PermFlowsWrite, roles: editors, body: `{"documents":[]}`, status: http.StatusBadRequest},
	"GET /api/v1/flows":           {perm: auth.PermFlowsRead, roles: everyone, status: http.StatusOK},
	"GET /api/v1/flows/{name}":    {perm: auth.PermFlowsRead, roles: everyone, path: at("/api/v1/flows/missing"), status: http.StatusNotFound},
	"DELETE /api/v1/flows/{name}": {perm: auth.PermFlowsWrite, roles: editors, path: at("/api/v1/flows/missing"), status: http.StatusNotFound},
	"GET /api/v1/flows/{name}/webhook-secret": {perm: auth.PermFlowsWrite, roles: editors,
		path: at("/api/v1/flows/missing/webhook-secret"), status: http.StatusNotFound},
	"POST /api/v1/flows/{name}/runs": {perm: auth.PermRunsWrite, roles: runners, path: at("/api/v1/flows/missing/runs"), body: `{}`, status: http.StatusNotFound},
	"GET /api/v1/runs":               {perm: auth.PermRunsRead, roles: everyone, status: http.StatusOK},
	"GET /api/v1/runs/{id}":          {perm: auth.PermRunsRead, roles: everyone, path: at("/api/v1/runs/missing"), status: http.StatusNotFound},
	"POST /api/v1/runs/{id}/cancel":  {perm: auth.PermRunsWrite, roles: runners, path: at("/api/v1/runs/missing/cancel"), status: http.StatusNotFound},
	"POST /api/v1/runs/{id}/retry":   {perm: auth.PermRunsWrite, roles: runners, path: at("/api/v1/runs/missing/retry"), status: http.StatusNotFound},
	"POST /api/v1/flows/{name}/webhook-secret/rotate": {perm: auth.PermFlowsWrite, roles: editors,
		path: at("/api/v1/flows/missing/webhook-secret/rotate"), status: http.StatusNotFound},
	// The webhook authenticates in its handler (a token or a signature):
	// TestWebhookAuthMatrix covers who gets what.
	"POST /hooks/{flow}": {public: true, path: at("/hooks/missing"), status: http.StatusNotFound},
}

func routeKey(rt api.Route) string { return rt.Method + " " + rt.Path }

// TestEveryRouteHasAScenario fails when a route is added without deciding
// who may call it, or when a scenario names a route that is gone.
func TestEveryRouteHasAScenario(t *testing.T) {
	t.Parallel()
	st := storetest.Open(t, store.SQLite)
	e := newEnv(t, st, api.Config{})
	served := map[string]bool{}
	for _, rt := range e.server.Routes() {
		key := routeKey(rt)
		served[key] = true
		sc, ok := scenarios[key]
		if !ok {
			t.Errorf("route %s has no entry in scenarios: add one that says which roles may call it", key)
			continue
		}
		require.Equal(t, sc.public, rt.Public, "%s: Public", key)
		require.Equal(t, sc.perm, rt.Perm, "%s: Perm", key)
		for _, role := range everyone {
			oracle := rt.Public || rt.Perm == "" || role.Can(rt.Perm)
			require.Equal(t, sc.allows(role), oracle, "%s: may %s call it? the table and auth.Role.Can disagree", key, role)
		}
	}
	for key := range scenarios {
		require.True(t, served[key], "scenario %s names a route the server does not register", key)
	}
}

// unauthenticated is a request that carries no valid token, and the cause
// the audit record must give for it.
type unauthenticated struct {
	name          string
	authorization func(s scenarioSecrets) string
	cause         string
}

type scenarioSecrets struct {
	revoked, expired string
}

var unauthenticatedCases = []unauthenticated{
	{"no token", func(scenarioSecrets) string { return "" }, "no Authorization header"},
	{"basic scheme", func(scenarioSecrets) string { return "Basic YWRtaW46aHVudGVyMg==" }, "authorization scheme is not Bearer"},
	{"malformed prefix", func(scenarioSecrets) string { return "Bearer not-a-trustflow-token" }, "does not start with"},
	{"malformed length", func(scenarioSecrets) string { return "Bearer tf_tooshort" }, "wrong length"},
	{"malformed alphabet", func(scenarioSecrets) string { return "Bearer tf_" + strings.Repeat("*", 43) }, "not base64url"},
	{"unknown token", func(scenarioSecrets) string { return "Bearer tf_" + strings.Repeat("A", 43) }, "unknown token"},
	{"revoked token", func(s scenarioSecrets) string { return "Bearer " + s.revoked }, "is revoked"},
	{"expired token", func(s scenarioSecrets) string { return "Bearer " + s.expired }, "expired"},
}

func TestRouteScenarios(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		ctx := context.Background()
		// Every refusal below is its own source's first; none is over the
		// cap of sources recorded one by one in an interval.
		e := newEnv(t, st, api.Config{Refusals: api.RefusalConfig{MaxRecorded: 1 << 20}})

		roleSecret := map[auth.Role]string{}
		roleToken := map[auth.Role]auth.Token{}
		for _, role := range everyone {
			tok, secret := e.createToken(t, "scenario-"+string(role), role, "")
			roleSecret[role], roleToken[role] = secret, tok
		}
		victim, _ := e.createToken(t, "victim", auth.RoleOperator, "")
		revokedTok, revoked := e.createToken(t, "revoked", auth.RoleAdmin, "")
		_, err := e.auth.Revoke(ctx, e.adminP, revokedTok.ID)
		require.NoError(t, err)
		_, expired := e.createToken(t, "expired", auth.RoleAdmin, "1h")
		e.clock.Advance(61 * time.Minute)
		secrets := scenarioSecrets{revoked: revoked, expired: expired}
		fx := scenarioFixture{adminTokenID: e.adminP.TokenID, victimTokenID: victim.ID}

		// Each request comes from a source of its own, so that each
		// refusal is its source's first and is recorded at once, in a
		// record of its own (TestRefusedFloodWritesBoundedRecords covers
		// what a source's later refusals write).
		sources := 0
		fresh := func(r *http.Request) *http.Request {
			sources++
			r.RemoteAddr = fmt.Sprintf("198.18.%d.%d:1234", sources/256, sources%256)
			return r
		}

		// presented collects every credential sent, none of which may
		// reach the audit log or the server log.
		presented := []string{e.admin, revoked, expired}
		for _, s := range roleSecret {
			presented = append(presented, s)
		}

		for _, rt := range e.server.Routes() {
			key := routeKey(rt)
			sc, ok := scenarios[key]
			if !ok || key == "POST /hooks/{flow}" {
				continue // TestEveryRouteHasAScenario reports a missing one; TestWebhookAuthMatrix covers the webhook
			}
			path := rt.Path
			if sc.path != nil {
				path = sc.path(fx)
			}

			for _, uc := range unauthenticatedCases {
				t.Run(key+"/"+uc.name, func(t *testing.T) {
					authz := uc.authorization(secrets)
					if authz != "" {
						presented = append(presented, strings.TrimPrefix(strings.TrimPrefix(authz, "Bearer "), "Basic "))
					}
					req := fresh(newRequest(rt.Method, path, "", sc.body))
					if authz != "" {
						req.Header.Set("Authorization", authz)
					}
					before := e.head(t)
					rec := e.serve(req)
					if sc.public {
						require.Equal(t, sc.status, rec.Code, "body: %s", rec.Body)
						require.Empty(t, e.recordsAfter(t, before.Seq), "a public route audits nothing")
						return
					}
					requireError(t, rec, http.StatusUnauthorized, errorDetail{
						Code: "unauthenticated", Message: "a valid API token is required", Hint: hintUnauthenticated})
					require.Equal(t, `Bearer realm="trustflow"`, rec.Header().Get("WWW-Authenticate"))
					details := map[string]any{"reason": "unauthenticated", "method": rt.Method, "route": rt.Path,
						"remote": req.RemoteAddr, "source": strings.TrimSuffix(req.RemoteAddr, ":1234"), "cause": uc.cause}
					if rt.Perm != "" {
						details["permission"] = string(rt.Perm)
					}
					requireDenied(t, e, before, key, audit.Actor{ID: "anonymous", Name: "anonymous"}, details, authz)
				})
			}

			for _, role := range everyone {
				t.Run(key+"/"+string(role), func(t *testing.T) {
					before := e.head(t)
					req := fresh(newRequest(rt.Method, path, roleSecret[role], sc.body))
					rec := e.serve(req)
					if !sc.allows(role) {
						requireError(t, rec, http.StatusForbidden, errorDetail{
							Code:    "forbidden",
							Message: "role " + string(role) + " may not " + string(rt.Perm),
							Hint:    "ask an admin for a token with a role that has " + string(rt.Perm) + " (" + joinRoles(sc.roles) + ")",
						})
						require.Empty(t, rec.Header().Get("WWW-Authenticate"))
						details := map[string]any{"reason": "forbidden", "method": rt.Method, "route": rt.Path,
							"remote": req.RemoteAddr, "source": strings.TrimSuffix(req.RemoteAddr, ":1234"), "permission": string(rt.Perm)}
						requireDenied(t, e, before, key, auth.ActorOf(auth.Principal{TokenID: roleToken[role].ID, Name: roleToken[role].Name, Role: role}), details, roleSecret[role])
						return
					}
					require.Equal(t, sc.status, rec.Code, "body: %s", rec.Body)
					var actions []string
					for _, r := range e.recordsAfter(t, before.Seq) {
						actions = append(actions, r.Action)
					}
					require.Equal(t, sc.audited, actions)
				})
			}
		}

		logs := e.logs.String()
		for _, s := range presented {
			require.NotContains(t, logs, s, "the server log must never hold a presented credential")
		}
		v, err := e.audit.Verify(ctx)
		require.NoError(t, err)
		require.True(t, v.OK, "%+v", v)
	})
}

// requireDenied checks that exactly one auth.denied record was appended
// after before, with outcome denied, and that it holds no credential.
func requireDenied(t *testing.T, e *env, before store.AuditHead, target string, actor audit.Actor, details map[string]any, credential string) {
	t.Helper()
	recs := e.recordsAfter(t, before.Seq)
	require.Len(t, recs, 1, "a refused request appends exactly one audit record")
	r := recs[0]
	require.Equal(t, "auth.denied", r.Action)
	require.Equal(t, audit.OutcomeDenied, r.Outcome)
	require.Equal(t, target, r.Target)
	require.Equal(t, actor, r.Actor)
	want, err := json.Marshal(details)
	require.NoError(t, err)
	require.JSONEq(t, string(want), string(r.Details))
	if credential != "" {
		raw, err := json.Marshal(r)
		require.NoError(t, err)
		for _, part := range strings.Fields(credential) {
			if part == "Bearer" || part == "Basic" {
				continue
			}
			require.NotContains(t, string(raw), part, "the audit record must never hold the presented token")
		}
	}
}

func joinRoles(rs []auth.Role) string {
	names := make([]string, len(rs))
	for i, r := range rs {
		names[i] = string(r)
	}
	return strings.Join(names, ", ")
}
