package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/api"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

const runStatuses = "queued, running, sleeping, succeeded, failed, cancelled"

// TestListFiltersAreValidated sends every list route (and the routes that
// take a query) a bad parameter: each answers 400 naming the parameter and
// what it takes, and changes nothing.
func TestListFiltersAreValidated(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		e := newEnv(t, st, api.Config{})
		bad := func(field, msg, hint string) errorDetail {
			return errorDetail{Code: "invalid_input", Field: field, Message: field + ": " + msg, Hint: hint}
		}
		none := "this endpoint takes no query parameters; remove it"
		cases := []struct {
			method, path string
			want         errorDetail
		}{
			{"GET", "/api/v1/runs?status=bogus", bad("status", `"bogus" is not one of `+runStatuses, "use one of "+runStatuses)},
			{"GET", "/api/v1/runs?status=", bad("status", "is empty", "give a value (queued) or leave the parameter out")},
			{"GET", "/api/v1/runs?status=failed&status=running", bad("status", "is given more than once", "give status once")},
			{"GET", "/api/v1/runs?since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z",
				bad("since", "2026-02-01T00:00:00Z is after until=2026-01-01T00:00:00Z", "give since at or before until, or leave one of them out")},
			{"GET", "/api/v1/runs?limit=1001", bad("limit", "must be an integer from 1 to 1000", "use e.g. limit=100")},
			{"GET", "/api/v1/runs?limit=%zz", bad("limit", `"%zz" is not valid URL encoding`, "percent-encode reserved characters as %XX with two hex digits, e.g. %2B for +")},
			{"GET", "/api/v1/runs?state=failed", bad("state", "unknown query parameter", "this endpoint takes flow, status, since, until, limit; see /api/v1/openapi.json")},
			{"GET", "/api/v1/runs?%zz=1", bad("query", `parameter name "%zz" is not valid URL encoding`, "percent-encode reserved characters as %XX with two hex digits")},
			{"GET", "/api/v1/audit?limit=%zz", bad("limit", `"%zz" is not valid URL encoding`, "percent-encode reserved characters as %XX with two hex digits, e.g. %2B for +")},
			{"GET", "/api/v1/audit?since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z",
				bad("since", "2026-02-01T00:00:00Z is after until=2026-01-01T00:00:00Z", "give since at or before until, or leave one of them out")},
			{"GET", "/api/v1/audit?actor=" + strings.Repeat("a", 1025), bad("actor", "is 1025 bytes long (limit query_value: 1024)", "give a shorter value")},
			{"GET", "/api/v1/audit?page=2", bad("page", "unknown query parameter", "this endpoint takes action, actor, target, since, until, limit, cursor; see /api/v1/openapi.json")},
			{"GET", "/api/v1/audit/export?limit=10", bad("limit", "unknown query parameter", "this endpoint takes action, actor, target, since, until; see /api/v1/openapi.json")},
			{"GET", "/api/v1/audit/export?until=2026-01-01T00:00:00Z&since=2026-01-02T00:00:00Z",
				bad("since", "2026-01-02T00:00:00Z is after until=2026-01-01T00:00:00Z", "give since at or before until, or leave one of them out")},
			{"GET", "/api/v1/identities?expiring=soon", bad("expiring", "is not a positive duration", "use a Go duration such as 720h")},
			{"GET", "/api/v1/identities?expiring=-1h", bad("expiring", "is not a positive duration", "use a Go duration such as 720h")},
			{"GET", "/api/v1/flows?name=x", bad("name", "unknown query parameter", none)},
			{"GET", "/api/v1/connectors?limit=5", bad("limit", "unknown query parameter", none)},
			{"GET", "/api/v1/tokens?status=active", bad("status", "unknown query parameter", none)},
			{"GET", "/api/v1/cas?x=1", bad("x", "unknown query parameter", none)},
			{"POST", "/api/v1/flows/missing/runs?wait=10m", bad("wait", `"10m" is not a duration from 0s to 5m0s`, "use e.g. wait=30s")},
			{"POST", "/api/v1/flows/missing/runs?wait=soon", bad("wait", `"soon" is not a duration from 0s to 5m0s`, "use e.g. wait=30s")},
			{"POST", "/api/v1/kek/rotate?progress=yes", bad("progress", `"yes" is not true or false`, "use e.g. progress=true")},
		}
		for _, tc := range cases {
			t.Run(tc.method+" "+tc.path, func(t *testing.T) {
				head := e.head(t)
				rec := e.do(tc.method, tc.path, e.admin, "")
				requireError(t, rec, http.StatusBadRequest, tc.want)
				require.Equal(t, head, e.head(t), "a refused query changes nothing")
			})
		}

		// Good queries still filter.
		rec := e.do("GET", "/api/v1/runs?status=failed&since=2026-01-01T00:00:00Z&until=2026-01-01T00:00:00Z&limit=5", e.admin, "")
		require.Equal(t, http.StatusOK, rec.Code, "since equal to until is allowed: %s", rec.Body)
		require.Equal(t, http.StatusOK, e.do("GET", "/api/v1/audit?action=token.*&limit=1000&cursor=5", e.admin, "").Code)
		require.Equal(t, http.StatusOK, e.do("GET", "/api/v1/identities?expiring=720h", e.admin, "").Code)
	})
}

// TestOpenAPIDocumentsQueryParameters checks that each query parameter is
// documented with the schema it is validated against.
func TestOpenAPIDocumentsQueryParameters(t *testing.T) {
	t.Parallel()
	e := newEnv(t, storetest.Open(t, store.SQLite), api.Config{})
	doc := e.server.OpenAPI()
	params := func(path, method string) map[string]map[string]any {
		op := doc["paths"].(map[string]any)[path].(map[string]any)[method].(map[string]any)
		out := map[string]map[string]any{}
		ps, _ := op["parameters"].([]any)
		for _, p := range ps {
			m := p.(map[string]any)
			if m["in"] == "query" {
				out[m["name"].(string)] = m["schema"].(map[string]any)
			}
		}
		return out
	}
	runs := params("/api/v1/runs", "get")
	require.Equal(t, []string{"queued", "running", "sleeping", "succeeded", "failed", "cancelled"}, runs["status"]["enum"])
	require.Equal(t, map[string]any{"type": "string", "format": "date-time"}, runs["since"])
	require.Equal(t, map[string]any{"type": "integer", "minimum": int64(1), "maximum": int64(1000)}, runs["limit"])
	audit := params("/api/v1/audit", "get")
	require.Equal(t, map[string]any{"type": "integer", "minimum": int64(1)}, audit["cursor"])
	require.Equal(t, "date-time", audit["until"]["format"])
	wait := params("/api/v1/flows/{name}/runs", "post")["wait"]
	require.Equal(t, "5m0s", wait["x-maximum"])
	require.Equal(t, map[string]any{"type": "boolean"}, params("/api/v1/kek/rotate", "post")["progress"])
	require.Empty(t, params("/api/v1/flows", "get"))
}
