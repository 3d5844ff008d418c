package api_test

import (
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/api"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

var pathParam = regexp.MustCompile(`\{[^}/]+\}`)

func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		e := newEnv(t, st, api.Config{Build: api.BuildInfo{Version: "1.2.3", Commit: "abc"}})
		doc := requireJSON[map[string]any](t, e.do("GET", "/api/v1/openapi.json", e.admin, ""), http.StatusOK)

		version, _ := doc["openapi"].(string)
		require.True(t, strings.HasPrefix(version, "3."), "openapi = %q", version)
		require.Equal(t, "1.2.3", doc["info"].(map[string]any)["version"])
		paths, ok := doc["paths"].(map[string]any)
		require.True(t, ok, "paths is an object")

		// Every route is documented.
		for _, rt := range e.server.Routes() {
			item, ok := paths[rt.Path].(map[string]any)
			require.True(t, ok, "route %s %s is missing from paths", rt.Method, rt.Path)
			op, ok := item[strings.ToLower(rt.Method)].(map[string]any)
			require.True(t, ok, "route %s %s is missing from paths", rt.Method, rt.Path)
			if rt.Perm != "" {
				require.Equal(t, string(rt.Perm), op["x-trustflow-permission"], "%s %s", rt.Method, rt.Path)
			}
			if rt.Public {
				require.Equal(t, []any{}, op["security"], "public route %s %s needs no token", rt.Method, rt.Path)
			} else {
				require.NotContains(t, op, "security", "%s %s inherits the bearer requirement", rt.Method, rt.Path)
			}
		}

		// Every documented operation is served, and operation ids are unique.
		ids := map[string]string{}
		documented := 0
		for path, v := range paths {
			for method, raw := range v.(map[string]any) {
				documented++
				op := raw.(map[string]any)
				id, _ := op["operationId"].(string)
				require.NotEmpty(t, id, "%s %s has no operationId", method, path)
				require.NotContains(t, ids, id, "operationId %s is used by %s and %s %s", id, ids[id], method, path)
				ids[id] = method + " " + path

				concrete := pathParam.ReplaceAllString(path, "tok_0000000000000000")
				rec := e.do(strings.ToUpper(method), concrete, e.admin, "")
				if rec.Code == http.StatusNotFound {
					got := decodeStrict[errorBody](t, rec.Body.Bytes())
					require.False(t, got.Error.Code == "not_found" && strings.HasPrefix(got.Error.Message, "no endpoint"),
						"documented operation %s %s is not served: %s", method, path, got.Error.Message)
				}
			}
		}
		require.Equal(t, len(e.server.Routes()), documented, "the document has operations no route serves")

		// Every $ref resolves to a component schema.
		schemas := doc["components"].(map[string]any)["schemas"].(map[string]any)
		refs := collectRefs(doc)
		require.NotEmpty(t, refs)
		for _, ref := range refs {
			name, ok := strings.CutPrefix(ref, "#/components/schemas/")
			require.True(t, ok, "$ref %q does not point into #/components/schemas/", ref)
			require.Contains(t, schemas, name, "$ref %q does not resolve", ref)
		}
	})
}

// collectRefs returns every "$ref" value in v, sorted.
func collectRefs(v any) []string {
	var out []string
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, c := range x {
				if s, ok := c.(string); ok && k == "$ref" {
					out = append(out, s)
					continue
				}
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		}
	}
	walk(v)
	slices.Sort(out)
	return out
}

// TestUnknownEndpoint pins the catch-all's answer, which the OpenAPI test
// tells apart from a served route.
func TestUnknownEndpoint(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		e := newEnv(t, st, api.Config{})
		requireError(t, e.do("GET", "/api/v2/nothing", "", ""), http.StatusNotFound, errorDetail{
			Code: "not_found", Message: "no endpoint GET /api/v2/nothing",
			Hint: "the API lives under /api/v1/; see /api/v1/openapi.json"})
		resp := e.do("PUT", "/api/v1/tokens", e.admin, "")
		require.Equal(t, "POST, GET", resp.Header().Get("Allow"))
		requireError(t, resp, http.StatusMethodNotAllowed, errorDetail{
			Code: "method_not_allowed", Message: "PUT is not allowed on /api/v1/tokens", Hint: "use POST or GET"})
	})
}
