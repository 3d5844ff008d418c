package api

import (
	"context"
	"net/http"
	"time"

	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/engine"
)

// ApplyRequest is the body of POST /api/v1/flows: one or more documents,
// all validated before any is stored.
type ApplyRequest struct {
	Documents []engine.Source `json:"documents"`
}

// RunRequest is the body of POST /api/v1/flows/{name}/runs.
type RunRequest struct {
	Input map[string]any `json:"input,omitempty"`
}

func (s *Server) flowRoutes() []Route {
	if s.cfg.Engine == nil {
		return nil
	}
	runFilters := []Param{{Name: "flow", Desc: "flow name"},
		{Name: "status", Desc: "run status", Enum: []string{engine.StatusQueued, engine.StatusRunning, engine.StatusSleeping, engine.StatusSucceeded, engine.StatusFailed, engine.StatusCancelled}},
		{Name: "since", Desc: "RFC 3339, created at or after; at or before until", Kind: ParamTime}, {Name: "until", Desc: "RFC 3339, created before", Kind: ParamTime},
		{Name: "limit", Desc: "1-1000 (default 100)", Kind: ParamInteger, Min: 1, Max: 1000}}
	wait := []Param{{Name: "wait", Desc: "Go duration to wait for the run to end (at most --max-wait, " + s.cfg.MaxWait.String() + ")", Kind: ParamDuration, Max: int64(s.cfg.MaxWait)}}
	return append([]Route{
		{Method: "POST", Path: "/api/v1/flows", Perm: auth.PermFlowsWrite, handler: s.applyFlows,
			Doc: Operation{Summary: "Apply flow documents (YAML or JSON): all validated, then stored as new versions when changed", Tag: "flows", Request: schemaRef("ApplyRequest"), Response: listOf("flows", "AppliedFlow")}},
		{Method: "GET", Path: "/api/v1/flows", Perm: auth.PermFlowsRead, handler: s.listFlows,
			Doc: Operation{Summary: "List flows", Tag: "flows", Response: listOf("flows", "Flow")}},
		{Method: "GET", Path: "/api/v1/flows/{name}", Perm: auth.PermFlowsRead, handler: s.getFlow,
			Doc: Operation{Summary: "Show a flow: current document, trigger, inputs and versions", Tag: "flows", Response: schemaRef("Flow")}},
		{Method: "DELETE", Path: "/api/v1/flows/{name}", Perm: auth.PermFlowsWrite, handler: s.removeFlow,
			Doc: Operation{Summary: "Remove a flow (its runs are kept)", Tag: "flows", Status: 204}},
		{Method: "GET", Path: "/api/v1/flows/{name}/webhook-secret", Perm: auth.PermFlowsWrite, handler: s.webhookSecret,
			Doc: Operation{Summary: "The HMAC secret of a flow's webhook (reading it is audited)", Tag: "flows", Response: obj([]string{"secret"}, map[string]any{"secret": str})}},
		{Method: "POST", Path: "/api/v1/flows/{name}/runs", Perm: auth.PermRunsWrite, handler: s.startRun,
			Doc: Operation{Summary: "Start a run; ?wait=30s waits for it to end", Tag: "runs", Request: schemaRef("RunRequest"), Response: schemaRef("Run"), Status: 202,
				Query: wait}},
		{Method: "GET", Path: "/api/v1/runs", Perm: auth.PermRunsRead, handler: s.listRuns,
			Doc: Operation{Summary: "List runs, newest first", Tag: "runs", Response: listOf("runs", "Run"), Query: runFilters}},
		{Method: "GET", Path: "/api/v1/runs/{id}", Perm: auth.PermRunsRead, handler: s.getRun,
			Doc: Operation{Summary: "Show a run with every step: status, attempts, output, evidence, error, timings", Tag: "runs", Response: schemaRef("Run")}},
		{Method: "POST", Path: "/api/v1/runs/{id}/cancel", Perm: auth.PermRunsWrite, handler: s.cancelRun,
			Doc: Operation{Summary: "Cancel a run", Tag: "runs", Response: schemaRef("Run"), Errors: []int{409}}},
		{Method: "POST", Path: "/api/v1/runs/{id}/retry", Perm: auth.PermRunsWrite, handler: s.retryRun,
			Doc: Operation{Summary: "Restart a failed run from its failed step", Tag: "runs", Response: schemaRef("Run"), Errors: []int{409}}},
	}, s.hookRoutes()...)
}

func (s *Server) applyFlows(w http.ResponseWriter, r *http.Request) error {
	var req ApplyRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	applied, err := s.cfg.Engine.Apply(r.Context(), actor(r), req.Documents)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"flows": applied})
	return nil
}

func (s *Server) listFlows(w http.ResponseWriter, r *http.Request) error {
	fs, err := s.cfg.Engine.ListFlows(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"flows": fs})
	return nil
}

func (s *Server) getFlow(w http.ResponseWriter, r *http.Request) error {
	f, err := s.cfg.Engine.GetFlow(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, f)
	return nil
}

func (s *Server) removeFlow(w http.ResponseWriter, r *http.Request) error {
	if err := s.cfg.Engine.RemoveFlow(r.Context(), actor(r), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) webhookSecret(w http.ResponseWriter, r *http.Request) error {
	secret, err := s.cfg.Engine.WebhookSecret(r.Context(), actor(r), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"secret": secret})
	return nil
}

// parseWait is ?wait=, validated by wrap against MaxWait.
func parseWait(r *http.Request) (time.Duration, error) {
	return queryOf(r).Duration("wait"), nil
}

func (s *Server) startAndAnswer(w http.ResponseWriter, r *http.Request, req engine.StartRequest, wait time.Duration) error {
	run, err := s.cfg.Engine.StartRun(r.Context(), req)
	if err != nil {
		return err
	}
	return s.answerRun(w, r, run, http.StatusAccepted, wait)
}

// answerRun writes run with status, or, with a wait, the run as it is when
// it ends or the wait is over (200 when it ended).
func (s *Server) answerRun(w http.ResponseWriter, r *http.Request, run engine.RunView, status int, wait time.Duration) error {
	if wait > 0 {
		// The one answer allowed to outlast the server's read timeout
		// (whose expiry would cancel the request): by the wait, capped
		// by MaxWait. The answer's write deadline starts when it does.
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(wait + s.cfg.WriteTimeout)) // ErrNotSupported only off a real connection
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		defer cancel()
		done, err := s.cfg.Engine.Wait(ctx, run.ID)
		if err != nil {
			return err
		}
		run = done
		if done.Status == engine.StatusSucceeded || done.Status == engine.StatusFailed || done.Status == engine.StatusCancelled {
			status = http.StatusOK
		}
	}
	writeJSON(w, status, run)
	return nil
}

func (s *Server) startRun(w http.ResponseWriter, r *http.Request) error {
	wait, err := parseWait(r)
	if err != nil {
		return err
	}
	var req RunRequest
	if r.ContentLength != 0 {
		if err := decodeJSON(r, &req); err != nil {
			return err
		}
	}
	return s.startAndAnswer(w, r, engine.StartRequest{Flow: r.PathValue("name"), Input: req.Input, Trigger: "manual", Actor: actor(r)}, wait)
}

func (s *Server) listRuns(w http.ResponseWriter, r *http.Request) error {
	q := queryOf(r)
	if err := q.ordered("since", "until"); err != nil {
		return err
	}
	f := engine.RunFilter{Flow: q.String("flow"), Status: q.String("status"), Since: q.Time("since"), Until: q.Time("until"), Limit: int(q.Int("limit"))}
	runs, err := s.cfg.Engine.ListRuns(r.Context(), f)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"runs": runs})
	return nil
}

func (s *Server) getRun(w http.ResponseWriter, r *http.Request) error {
	run, err := s.cfg.Engine.GetRun(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, run)
	return nil
}

func (s *Server) cancelRun(w http.ResponseWriter, r *http.Request) error {
	run, err := s.cfg.Engine.Cancel(r.Context(), actor(r), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, run)
	return nil
}

func (s *Server) retryRun(w http.ResponseWriter, r *http.Request) error {
	run, err := s.cfg.Engine.Retry(r.Context(), actor(r), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, run)
	return nil
}
