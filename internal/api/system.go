package api

import (
	"context"
	"crypto/fips140"
	"net/http"
	"time"

	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/errs"
)

// System is GET /api/v1/system.
type System struct {
	Version       string `json:"version"`
	Commit        string `json:"commit"`
	GoVersion     string `json:"go_version"`
	FIPS140       bool   `json:"fips140_enabled"`
	FIPSRequired  bool   `json:"fips_mode"`
	Database      string `json:"database"`
	SchemaVersion int    `json:"schema_version"`
}

func (s *Server) systemRoutes() []Route {
	return []Route{
		{Method: "GET", Path: "/healthz", Public: true, handler: s.healthz,
			Doc: Operation{Summary: "Liveness: the process is up", Tag: "system", Response: schemaRef("Health"), NoAuth: true}},
		{Method: "GET", Path: "/readyz", Public: true, handler: s.readyz,
			Doc: Operation{Summary: "Readiness: the database answers and this node holds the active key-encryption key", Tag: "system", Response: schemaRef("Health"), NoAuth: true, Errors: []int{503}}},
		s.metricsRoute(),
		{Method: "GET", Path: "/api/v1/openapi.json", handler: s.openAPI,
			Doc: Operation{Summary: "This OpenAPI document", Tag: "system", Response: map[string]any{"type": "object"}}},
		{Method: "GET", Path: "/api/v1/system", Perm: "system:read", handler: s.system,
			Doc: Operation{Summary: "Version, FIPS 140-3 module state and database", Tag: "system", Response: schemaRef("System")}},
		{Method: "GET", Path: "/api/v1/whoami", handler: s.whoami,
			Doc: Operation{Summary: "The principal the presented token acts as", Tag: "system", Response: schemaRef("Principal")}},
	}
}

// metricsRoute is /metrics: public, or with Config.MetricsAuth for any
// valid token (system:read, which every role has).
func (s *Server) metricsRoute() Route {
	rt := Route{Method: "GET", Path: "/metrics", Public: true, handler: s.metricsHandler,
		Doc: Operation{Summary: "Prometheus metrics (text exposition format)", Tag: "system", ResponseType: "text/plain", NoAuth: true}}
	if s.cfg.MetricsAuth {
		rt.Public, rt.Perm, rt.Doc.NoAuth = false, auth.PermSystemRead, false
		rt.Doc.Summary += "; needs a token (serve --metrics-auth)"
	}
	return rt
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	if err := s.cfg.Store.Ping(ctx); err != nil {
		return &errs.Error{Kind: errs.Unavailable, Code: "not_ready", Message: "the database does not answer", Hint: "check the database server and --db", Err: err}
	}
	if s.cfg.KeysReady != nil {
		if err := s.cfg.KeysReady(); err != nil {
			return &errs.Error{Kind: errs.Unavailable, Code: "kek_unavailable", Message: err.Error(), Hint: "copy the active key-encryption key to this node's --kek source; it resumes by itself within seconds", Err: err}
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

func (s *Server) metricsHandler(w http.ResponseWriter, r *http.Request) error {
	s.metrics.handler.ServeHTTP(w, r)
	return nil
}

func (s *Server) system(w http.ResponseWriter, r *http.Request) error {
	v, err := s.cfg.Store.SchemaVersion(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, System{
		Version: s.cfg.Build.Version, Commit: s.cfg.Build.Commit, GoVersion: goVersion(),
		FIPS140: fips140.Enabled(), FIPSRequired: s.cfg.FIPSRequired,
		Database: string(s.cfg.Store.Dialect()), SchemaVersion: v,
	})
	return nil
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, principal(r))
	return nil
}
