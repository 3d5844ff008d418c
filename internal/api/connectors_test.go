package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/api"
	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/connector"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

// TestEditorCannotRedirectAConnectorSecret is the red-team finding over the
// API: an editor's PUT that points an admin's bearer connector at another
// host without the secret is refused (409) and changes nothing; with
// keep_secrets it is refused too (403); an admin's keep_secrets is allowed.
func TestEditorCannotRedirectAConnectorSecret(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st, api.Config{})
		ctx := context.Background()
		_, err := e.connectors.Create(ctx, auth.ActorOf(e.adminP), connector.Spec{Name: "hr", URL: "https://hr.agency.example", Auth: connector.AuthBearer,
			SystemRoots: true, Secrets: connector.Secrets{Token: "s3cret-bearer-token"}})
		require.NoError(t, err)
		before, err := e.connectors.Get(ctx, "hr")
		require.NoError(t, err)
		_, editor := e.createToken(t, "ed", auth.RoleEditor, "")

		rec := e.do("PUT", "/api/v1/connectors/hr", editor, `{"name":"hr","url":"http://attacker.example:29004","auth":"bearer","allow_plaintext":true}`)
		body := requireJSON[errorBody](t, rec, http.StatusConflict)
		require.Equal(t, "secret_destination_changed", body.Error.Code)
		rec = e.do("PUT", "/api/v1/connectors/hr", editor, `{"name":"hr","url":"https://attacker.example","auth":"bearer","system_roots":true,"keep_secrets":true}`)
		body = requireJSON[errorBody](t, rec, http.StatusForbidden)
		require.Equal(t, "keep_secrets_admin_only", body.Error.Code)
		after, err := e.connectors.Get(ctx, "hr")
		require.NoError(t, err)
		require.Equal(t, before, after, "nothing changed")

		rec = e.do("PUT", "/api/v1/connectors/hr", e.admin, `{"name":"hr","url":"https://hr2.agency.example","auth":"bearer","system_roots":true,"keep_secrets":true}`)
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		var cn connector.Connector
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &cn))
		require.Equal(t, "https://hr2.agency.example", cn.URL)
		require.True(t, cn.HasSecret)
	})
}
