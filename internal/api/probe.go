package api

import (
	"fmt"
	"net/http"
	"time"

	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/probe"
)

// ProbeRequest is the body of POST /api/v1/probe. Timeout is a Go
// duration ("10s") bounding each check's connection.
type ProbeRequest struct {
	URL      string   `json:"url"`
	CAs      []string `json:"cas,omitempty"`
	Identity string   `json:"identity,omitempty"`
	Timeout  string   `json:"timeout,omitempty"`
}

func (s *Server) probeRoutes() []Route {
	if s.cfg.Probe == nil {
		return nil
	}
	return []Route{
		{Method: "POST", Path: "/api/v1/probe", Perm: auth.PermConnectorsUse, handler: s.probe,
			Doc: Operation{Summary: "Check whether an endpoint enforces mutual TLS, refuses TLS 1.0/1.1 and presents a valid chain (audited)", Tag: "probe",
				Request: schemaRef("ProbeRequest"), Response: schemaRef("ProbeReport")}},
	}
}

func (s *Server) probe(w http.ResponseWriter, r *http.Request) error {
	var req ProbeRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	var timeout time.Duration
	if req.Timeout != "" {
		d, err := time.ParseDuration(req.Timeout)
		if err != nil {
			return invalidField("timeout", fmt.Sprintf("%q is not a duration", req.Timeout), "use a Go duration such as 10s")
		}
		timeout = d
	}
	rep, err := s.cfg.Probe.Probe(r.Context(), actor(r), probe.Request{URL: req.URL, CAs: req.CAs, Identity: req.Identity, Timeout: timeout})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}

// probeSchemas are the component schemas of the probe route; the OpenAPI
// document merges them into its own.
func probeSchemas() map[string]any {
	return map[string]any{
		"ProbeRequest": obj([]string{"url"}, map[string]any{
			"url":      map[string]any{"type": "string", "description": "the https:// endpoint; its path (default /) is what the checks GET"},
			"cas":      map[string]any{"type": "array", "items": str, "description": "trust store CAs the server's chain must verify against; without them the chain checks are skipped and the identity is not presented"},
			"identity": map[string]any{"type": "string", "description": "trust store identity identity_accepted presents; without it that check is skipped"},
			"timeout":  map[string]any{"type": "string", "description": "Go duration bounding each check's connection; default 10s, at most 30s"},
		}),
		"ProbeReport": obj([]string{"url", "verdict", "checks", "checked_at"}, map[string]any{
			"url":        str,
			"verdict":    enum(probe.VerdictEnforced, probe.VerdictNotEnforced),
			"checked_at": dateTime,
			"checks": arrayOf(obj([]string{"name", "status", "detail"}, map[string]any{
				"name": enum(probe.CheckAnonymousRefused, probe.CheckUntrustedCertRefused, probe.CheckIdentityAccepted,
					probe.CheckTLS10Refused, probe.CheckTLS11Refused, probe.CheckServerChainValid, probe.CheckHostnameValid),
				"status": enum(probe.StatusPass, probe.StatusFail, probe.StatusWarn, probe.StatusSkip),
				"detail": str,
				"layer":  map[string]any{"type": "string", "enum": []string{probe.LayerTLS, probe.LayerHTTP}, "description": "where the server refused the client"},
				"hint":   map[string]any{"type": "string", "description": "how to fix a failure or warning"},
			})),
		}),
	}
}
