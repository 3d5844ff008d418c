package api_test

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/api"
	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/probe"
	"github.com/trustflow/trustflow/internal/seal"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
	"github.com/trustflow/trustflow/internal/truststore"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

// probeEnv is the API with a prober over its store, a trust store holding
// CA "demo" and identity "svc", and an HTTPS server requiring client
// certificates from demo.
type probeEnv struct {
	*env
	url    string
	keyPEM string
}

func newProbeEnv(t *testing.T, st *store.Store) *probeEnv {
	t.Helper()
	ctx := context.Background()
	auditLog := audit.New(st, nil)
	kek, err := seal.NewKEK()
	require.NoError(t, err)
	trust, err := truststore.New(truststore.Config{Store: st, Audit: auditLog, Keyring: seal.NewKeyring(kek)})
	require.NoError(t, err)
	prober, err := probe.New(probe.Config{Trust: trust, Audit: auditLog})
	require.NoError(t, err)

	ca := truststoretest.NewCA(t)
	_, err = trust.AddCA(ctx, audit.System, truststore.CARequest{Name: "demo", Data: ca.CertPEM()})
	require.NoError(t, err)
	client := ca.IssueClient(t, "trustflow-client")
	_, err = trust.Import(ctx, audit.System, truststore.ImportRequest{Name: "svc", Material: truststore.Material{Cert: client.CertPEM(), Key: client.KeyPEM()}})
	require.NoError(t, err)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.IssueServer(t, "127.0.0.1").TLSCertificate()}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool()}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)

	return &probeEnv{env: newEnv(t, st, api.Config{Probe: prober}), url: srv.URL, keyPEM: string(client.KeyPEM())}
}

func TestProbeRoute(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		e := newProbeEnv(t, st)
		before := e.head(t)

		rep := requireJSON[probe.Report](t, e.do("POST", "/api/v1/probe", e.admin,
			`{"url":"`+e.url+`","cas":["demo"],"identity":"svc","timeout":"5s"}`), http.StatusOK)
		require.Equal(t, probe.VerdictEnforced, rep.Verdict)
		require.Equal(t, e.url, rep.URL)
		var got []string
		for _, c := range rep.Checks {
			got = append(got, c.Name+" "+c.Status+" "+c.Layer)
		}
		require.Equal(t, []string{"anonymous_refused pass tls", "untrusted_cert_refused pass tls", "identity_accepted pass ", "tls10_refused pass tls",
			"tls11_refused pass tls", "server_chain_valid pass ", "hostname_valid pass "}, got)

		recs := e.recordsAfter(t, before.Seq)
		require.Len(t, recs, 1)
		require.Equal(t, "probe.run", recs[0].Action)
		require.Equal(t, strings.TrimPrefix(e.url, "https://"), recs[0].Target)
		require.Equal(t, auth.ActorOf(e.adminP), recs[0].Actor)
		require.Equal(t, audit.OutcomeSuccess, recs[0].Outcome)

		// Without CAs or identity, the chain and identity checks are
		// skipped and say how to run them.
		rep = requireJSON[probe.Report](t, e.do("POST", "/api/v1/probe", e.admin, `{"url":"`+e.url+`"}`), http.StatusOK)
		require.Equal(t, probe.VerdictEnforced, rep.Verdict)
		chain, _ := rep.Check(probe.CheckServerChainValid)
		require.Equal(t, probe.StatusSkip, chain.Status)
		require.True(t, strings.HasPrefix(chain.Detail, "not checked: pass --ca NAME"), chain.Detail)

		// Nothing the probe answered, logged or recorded holds the key.
		var exported strings.Builder
		_, err := e.audit.Export(context.Background(), &exported, audit.Filter{})
		require.NoError(t, err)
		for _, text := range []string{exported.String(), e.logs.String()} {
			require.NotContains(t, text, "PRIVATE KEY")
			for _, line := range strings.Split(e.keyPEM, "\n") {
				if len(line) >= 16 && !strings.HasPrefix(line, "-----") {
					require.NotContains(t, text, line)
				}
			}
		}
	})
}

func TestProbeRouteRefusesBadInput(t *testing.T) {
	t.Parallel()
	e := newProbeEnv(t, storetest.Open(t, store.SQLite))
	before := e.head(t)
	for _, tc := range []struct {
		body string
		want errorDetail
	}{
		{`{"url":"http://127.0.0.1:8080/"}`, errorDetail{Code: "not_https", Message: `url: "http://127.0.0.1:8080/" is not an https:// URL`,
			Hint: "the probe checks the endpoint's TLS: give its https:// URL"}},
		{`{"url":"not a url"}`, errorDetail{Code: "not_https", Message: `url: "not%20a%20url" is not an https:// URL`,
			Hint: "the probe checks the endpoint's TLS: give its https:// URL"}},
		{`{}`, errorDetail{Code: "required", Message: "url: no URL was given", Hint: "give the endpoint to probe, e.g. https://api.example.org"}},
		{`{"url":"` + e.url + `","cas":["nope"]}`, errorDetail{Code: "not_found", Message: `cas: CA "nope" does not exist`,
			Hint: "list the CAs with `trustflow ca list`, or add the one that issues the server's certificate with `trustflow ca add`"}},
		{`{"url":"` + e.url + `","identity":"nope"}`, errorDetail{Code: "not_found", Message: `identity: identity "nope" does not exist`,
			Hint: "list the identities with `trustflow identity list`"}},
		{`{"url":"` + e.url + `","timeout":"soon"}`, errorDetail{Code: "invalid_input", Message: `timeout: "soon" is not a duration`, Hint: "use a Go duration such as 10s"}},
		{`{"url":"` + e.url + `","timeout":"2m"}`, errorDetail{Code: "invalid_timeout", Message: "timeout: 2m0s is not between 0 and 30s",
			Hint: "give a per-check timeout such as 10s (the default)"}},
		{`{"url":"` + e.url + `","path":"/"}`, errorDetail{Code: "invalid_input", Message: "path: unknown field", Hint: hintUnknownField}},
	} {
		requireError(t, e.do("POST", "/api/v1/probe", e.admin, tc.body), http.StatusBadRequest, tc.want)
	}
	require.Empty(t, e.recordsAfter(t, before.Seq), "a refused probe records nothing")
}

func TestProbeRouteNeedsConnectorsUse(t *testing.T) {
	t.Parallel()
	e := newProbeEnv(t, storetest.Open(t, store.SQLite))
	_, operator := e.createToken(t, "ops", auth.RoleOperator, "")
	requireError(t, e.do("POST", "/api/v1/probe", operator, `{"url":"`+e.url+`"}`), http.StatusForbidden, errorDetail{
		Code: "forbidden", Message: "role operator may not connectors:use", Hint: "ask an admin for a token with a role that has connectors:use (admin, editor)"})
	_, editor := e.createToken(t, "dev", auth.RoleEditor, "")
	rep := requireJSON[probe.Report](t, e.do("POST", "/api/v1/probe", editor, `{"url":"`+e.url+`"}`), http.StatusOK)
	require.Equal(t, probe.VerdictEnforced, rep.Verdict)
}

func TestProbeRouteIsDocumented(t *testing.T) {
	t.Parallel()
	e := newProbeEnv(t, storetest.Open(t, store.SQLite))
	doc := requireJSON[map[string]any](t, e.do("GET", "/api/v1/openapi.json", e.admin, ""), http.StatusOK)
	op := doc["paths"].(map[string]any)["/api/v1/probe"].(map[string]any)["post"].(map[string]any)
	require.Equal(t, "postProbe", op["operationId"])
	require.Equal(t, "connectors:use", op["x-trustflow-permission"])
	schemas := doc["components"].(map[string]any)["schemas"].(map[string]any)
	require.Contains(t, schemas, "ProbeRequest")
	report := schemas["ProbeReport"].(map[string]any)
	require.Equal(t, []any{"url", "verdict", "checks", "checked_at"}, report["required"])
	for _, ref := range collectRefs(doc) {
		require.Contains(t, schemas, strings.TrimPrefix(ref, "#/components/schemas/"))
	}
}
