package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/api"
	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

// keyedEnv is an API server whose audit log is keyed, as the server runs
// it: the audit key and the checkpoint copy in dir.
type keyedEnv struct {
	store  *store.Store
	audit  *audit.Log
	server *api.Server
	admin  string
	dir    string
}

func newKeyedEnv(t *testing.T, st *store.Store) *keyedEnv {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	fc := clock.NewFake(start)
	log, err := audit.Open(ctx, audit.Config{Store: st, Source: audit.FileKeySource{Path: filepath.Join(dir, "audit.key")}, Clock: fc, DataDir: dir,
		Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	authSvc := auth.NewService(st, log, fc)
	secret, _, err := authSvc.Bootstrap(ctx)
	require.NoError(t, err)
	srv := api.New(api.Config{Store: st, Auth: authSvc, Audit: log, Logger: slog.New(slog.DiscardHandler)})
	return &keyedEnv{store: st, audit: log, server: srv, admin: secret, dir: dir}
}

func (e *keyedEnv) do(t *testing.T, method, path, token, body string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	e.server.Handler().ServeHTTP(rec, newRequest(method, path, token, body))
	return rec
}

func (e *keyedEnv) token(t *testing.T, role auth.Role) string {
	t.Helper()
	authSvc := auth.NewService(e.store, e.audit, nil)
	admin, err := authSvc.Authenticate(context.Background(), e.admin)
	require.NoError(t, err)
	_, secret, err := authSvc.Create(context.Background(), admin, auth.CreateRequest{Name: string(role), Role: string(role)})
	require.NoError(t, err)
	return secret
}

func TestAuditCheckpointRoutes(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		e := newKeyedEnv(t, st)
		auditor := e.token(t, auth.RoleAuditor)
		operator := e.token(t, auth.RoleOperator)

		// An auditor takes a checkpoint; it covers the request's own record.
		cp := requireJSON[audit.Checkpoint](t, e.do(t, "POST", "/api/v1/audit/checkpoints", auditor, ""), http.StatusCreated)
		recs, err := e.audit.List(context.Background(), audit.Filter{Limit: 1})
		require.NoError(t, err)
		require.Equal(t, "audit.checkpoint", recs[0].Action)
		require.Equal(t, "auditor", recs[0].Actor.Role)
		require.Equal(t, recs[0].Seq, cp.Seq)
		require.Equal(t, recs[0].Hash, cp.HeadHash)
		require.Equal(t, e.audit.KeyID(), cp.KeyID)

		// An operator may not.
		rec := e.do(t, "POST", "/api/v1/audit/checkpoints", operator, "")
		require.Equal(t, http.StatusForbidden, rec.Code, rec.Body.String())

		// Status shows the public key an assessor verifies with.
		status := requireJSON[audit.Status](t, e.do(t, "GET", "/api/v1/audit/status", auditor, ""), http.StatusOK)
		require.Equal(t, cp.PublicKey, status.PublicKey)
		require.True(t, strings.HasPrefix(status.PublicKeyPEM, "-----BEGIN PUBLIC KEY-----\n"))
		require.Equal(t, int64(1), status.KeyedFrom)
		require.Equal(t, &cp, status.Latest)
		require.Equal(t, &cp, status.DataDir)

		// Verify against it.
		body := fmt.Sprintf(`{"checkpoint": %s}`, mustMarshal(t, cp))
		v := requireJSON[audit.Verification](t, e.do(t, "POST", "/api/v1/audit/verify", auditor, body), http.StatusOK)
		require.True(t, v.OK, v.Problem)
		require.Equal(t, "given", v.CheckpointSource)
		require.Equal(t, cp.Seq, v.CheckpointSeq)

		// A checkpoint of another deployment is refused, naming both keys.
		other := newKeyedEnv(t, storetest.Open(t, store.SQLite))
		otherCP := requireJSON[audit.Checkpoint](t, other.do(t, "POST", "/api/v1/audit/checkpoints", other.admin, ""), http.StatusCreated)
		requireError(t, e.do(t, "POST", "/api/v1/audit/verify", auditor, fmt.Sprintf(`{"checkpoint": %s}`, mustMarshal(t, otherCP))), http.StatusBadRequest,
			errorDetail{Code: audit.CodeCheckpointOtherKey, Field: "checkpoint.key_id",
				Message: fmt.Sprintf("checkpoint.key_id: the checkpoint of record %d is signed by audit key %s, but this deployment's audit key is %s: it comes from another deployment", otherCP.Seq, other.audit.KeyID(), e.audit.KeyID()),
				Hint:    "verify it against the deployment that made it, or take a checkpoint of this one with `trustflow audit checkpoint`"})

		// A malformed one names the field; a missing one too.
		requireError(t, e.do(t, "POST", "/api/v1/audit/verify", auditor, strings.Replace(body, `"seq":`+fmt.Sprint(cp.Seq)+`,`, `"seq":0,`, 1)), http.StatusBadRequest,
			errorDetail{Code: audit.CodeInvalidCheckpoint, Field: "checkpoint.seq", Message: "checkpoint.seq: must be a record number, 1 or more",
				Hint: "use the checkpoint exactly as `trustflow audit checkpoint -o json` printed it"})
		requireError(t, e.do(t, "POST", "/api/v1/audit/verify", auditor, `{}`), http.StatusBadRequest,
			errorDetail{Code: "invalid_input", Field: "checkpoint", Message: "checkpoint: is required",
				Hint: "send {\"checkpoint\": ...} with a checkpoint as `trustflow audit checkpoint -o json` printed it"})

		// Truncation behind the checkpoint: verify fails, and no checkpoint
		// is signed over the shortened chain.
		for i := 0; i < 5; i++ {
			require.NoError(t, e.audit.Record(context.Background(), audit.Entry{Actor: audit.System, Action: "test.fill"}))
		}
		requireJSON[audit.Checkpoint](t, e.do(t, "POST", "/api/v1/audit/checkpoints", auditor, ""), http.StatusCreated)
		head, err := st.AuditHead(context.Background())
		require.NoError(t, err)
		var hash, keyID string
		require.NoError(t, st.DB().QueryRow("SELECT hash, key_id FROM audit_records WHERE seq = $1", head.Seq-3).Scan(&hash, &keyID))
		_, err = st.DB().Exec("DELETE FROM audit_records WHERE seq > $1", head.Seq-3)
		require.NoError(t, err)
		_, err = st.DB().Exec("UPDATE audit_head SET seq = $1, hash = $2, key_id = $3", head.Seq-3, hash, keyID)
		require.NoError(t, err)
		v = requireJSON[audit.Verification](t, e.do(t, "GET", "/api/v1/audit/verify", auditor, ""), http.StatusOK)
		require.False(t, v.OK)
		require.Equal(t, head.Seq-2, v.FirstBadSeq)
		require.Contains(t, v.Problem, "were removed")
		got := requireJSON[errorBody](t, e.do(t, "POST", "/api/v1/audit/checkpoints", auditor, ""), http.StatusConflict)
		require.Equal(t, audit.CodeChainBroken, got.Error.Code)
		require.Regexp(t, fmt.Sprintf(`^audit chain broken at record %d: records %d to %d were removed`, head.Seq-2, head.Seq-2, head.Seq), got.Error.Message)
	})
}

func TestAuditCheckpointNeedsAKeyedLog(t *testing.T) {
	t.Parallel()
	e := newEnv(t, storetest.Open(t, store.SQLite), api.Config{})
	got := requireJSON[errorBody](t, e.do("POST", "/api/v1/audit/checkpoints", e.admin, ""), http.StatusServiceUnavailable)
	require.Equal(t, audit.CodeNotKeyed, got.Error.Code)
	got = requireJSON[errorBody](t, e.do("GET", "/api/v1/audit/status", e.admin, ""), http.StatusServiceUnavailable)
	require.Equal(t, audit.CodeNotKeyed, got.Error.Code)
}

func mustMarshal(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}
