package api_test

import (
	"context"
	"crypto/fips140"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/api"
	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

type health struct {
	Status string `json:"status"`
}

func TestHealthAndReadiness(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		e := newEnv(t, st, api.Config{})
		head := e.head(t)
		rec := e.do("GET", "/healthz", "", "")
		require.Equal(t, health{Status: "ok"}, requireJSON[health](t, rec, http.StatusOK))
		require.Equal(t, "nosniff", rec.Header().Get("X-Content-Type-Options"))
		require.Equal(t, "no-store", rec.Header().Get("Cache-Control"))
		require.Equal(t, health{Status: "ok"}, requireJSON[health](t, e.do("GET", "/readyz", "", ""), http.StatusOK))
		require.Equal(t, head, e.head(t), "health checks are not audited")

		require.NoError(t, st.Close())
		requireError(t, e.do("GET", "/readyz", "", ""), http.StatusServiceUnavailable, errorDetail{
			Code: "not_ready", Message: "the database does not answer", Hint: "check the database server and --db"})
		require.Equal(t, health{Status: "ok"}, requireJSON[health](t, e.do("GET", "/healthz", "", ""), http.StatusOK),
			"liveness does not depend on the database")
	})
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	st := storetest.Open(t, store.SQLite)
	e := newEnv(t, st, api.Config{Build: api.BuildInfo{Version: "1.2.3", Commit: "abc"}})
	require.Equal(t, http.StatusOK, e.do("GET", "/healthz", "", "").Code)
	require.Equal(t, http.StatusNotFound, e.do("GET", "/nowhere", "", "").Code)
	require.Equal(t, http.StatusUnauthorized, e.do("GET", "/api/v1/tokens", "", "").Code)

	rec := e.do("GET", "/metrics", "", "")
	require.Equal(t, http.StatusOK, rec.Code)
	require.True(t, strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain"), rec.Header().Get("Content-Type"))
	body, err := io.ReadAll(rec.Body)
	require.NoError(t, err)
	lines := strings.Split(string(body), "\n")
	require.Contains(t, lines, `trustflow_http_requests_total{code="200",method="GET",route="GET /healthz"} 1`)
	require.Contains(t, lines, `trustflow_http_requests_total{code="404",method="GET",route="unmatched"} 1`)
	require.Contains(t, lines, `trustflow_http_requests_total{code="401",method="GET",route="GET /api/v1/tokens"} 1`)
	require.Contains(t, lines, `trustflow_http_request_duration_seconds_count{method="GET",route="GET /healthz"} 1`)
	require.Contains(t, lines, fmt.Sprintf(`trustflow_build_info{commit="abc",fips140="%t",go_version="%s",version="1.2.3"} 1`,
		fips140.Enabled(), runtime.Version()))
}

func TestSystemAndWhoami(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		e := newEnv(t, st, api.Config{Build: api.BuildInfo{Version: "1.2.3", Commit: "abc"}, FIPSRequired: true})
		schema, err := st.SchemaVersion(context.Background())
		require.NoError(t, err)
		_, opSecret := e.createToken(t, "ops", auth.RoleOperator, "")
		got := requireJSON[api.System](t, e.do("GET", "/api/v1/system", opSecret, ""), http.StatusOK)
		require.Equal(t, api.System{Version: "1.2.3", Commit: "abc", GoVersion: runtime.Version(), FIPS140: fips140.Enabled(),
			FIPSRequired: true, Database: string(st.Dialect()), SchemaVersion: schema}, got)
		require.Equal(t, e.adminP, requireJSON[auth.Principal](t, e.do("GET", "/api/v1/whoami", e.admin, ""), http.StatusOK))
		require.Equal(t, e.adminP, requireJSON[auth.Principal](t, e.do("GET", "/api/v1/whoami", "  "+e.admin+"  ", ""), http.StatusOK),
			"surrounding spaces are not part of the token")
		req := newRequest("GET", "/api/v1/whoami", "", "")
		req.Header.Set("Authorization", "bearer "+e.admin)
		require.Equal(t, http.StatusOK, e.serve(req).Code, "the scheme is case-insensitive")
	})
}
