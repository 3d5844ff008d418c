package api

import (
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/connector"
)

// TestConnectorRequest is the body of POST /api/v1/connectors/{name}/test.
type TestConnectorRequest struct {
	Path string `json:"path,omitempty"`
}

// CallRequest is the body of POST /api/v1/connectors/{name}/call. Body is
// sent as JSON; BodyText as text.
type CallRequest struct {
	Method   string            `json:"method"`
	Path     string            `json:"path"`
	Query    map[string]string `json:"query,omitempty"`
	Headers  map[string]string `json:"headers,omitempty"`
	Body     json.RawMessage   `json:"body,omitempty"`
	BodyText string            `json:"body_text,omitempty"`
}

// CallResponse answers a connector call: headers with lower-case names,
// the body parsed when it is JSON, else text.
type CallResponse struct {
	Status    int                  `json:"status"`
	Headers   map[string]string    `json:"headers"`
	Body      any                  `json:"body"`
	Truncated bool                 `json:"truncated,omitempty"`
	Evidence  *connector.Evidence  `json:"evidence"`
	Error     *connector.Diagnosis `json:"error,omitempty"`
}

func (s *Server) connectorRoutes() []Route {
	if s.cfg.Connectors == nil {
		return nil
	}
	return []Route{
		{Method: "POST", Path: "/api/v1/connectors", Perm: auth.PermConnectorsWrite, handler: s.createConnector,
			Doc: Operation{Summary: "Create a connector", Tag: "connectors", Request: schemaRef("ConnectorSpec"), Response: schemaRef("Connector"), Status: 201, Errors: []int{409}}},
		{Method: "GET", Path: "/api/v1/connectors", Perm: auth.PermConnectorsRead, handler: s.listConnectors,
			Doc: Operation{Summary: "List connectors", Tag: "connectors", Response: listOf("connectors", "Connector")}},
		{Method: "GET", Path: "/api/v1/connectors/{name}", Perm: auth.PermConnectorsRead, handler: s.getConnector,
			Doc: Operation{Summary: "Show a connector (never its secrets)", Tag: "connectors", Response: schemaRef("Connector")}},
		{Method: "PUT", Path: "/api/v1/connectors/{name}", Perm: auth.PermConnectorsWrite, handler: s.updateConnector,
			Doc: Operation{Summary: "Replace a connector's settings (secrets left out are kept)", Tag: "connectors", Request: schemaRef("ConnectorSpec"), Response: schemaRef("Connector")}},
		{Method: "DELETE", Path: "/api/v1/connectors/{name}", Perm: auth.PermConnectorsWrite, handler: s.removeConnector,
			Doc: Operation{Summary: "Remove a connector", Tag: "connectors", Status: 204}},
		{Method: "POST", Path: "/api/v1/connectors/{name}/test", Perm: auth.PermConnectorsUse, handler: s.testConnector,
			Doc: Operation{Summary: "Handshake (and optionally GET a path) through a connector; evidence or diagnosis", Tag: "connectors", Request: schemaRef("TestConnectorRequest"), Response: schemaRef("TestResult")}},
		{Method: "POST", Path: "/api/v1/connectors/{name}/call", Perm: auth.PermConnectorsUse, handler: s.callConnector,
			Doc: Operation{Summary: "One ad-hoc request through a connector (audited)", Tag: "connectors", Request: schemaRef("CallRequest"), Response: schemaRef("CallResponse"), Errors: []int{502}}},
	}
}

func (s *Server) createConnector(w http.ResponseWriter, r *http.Request) error {
	var sp connector.Spec
	if err := decodeJSON(r, &sp); err != nil {
		return err
	}
	c, err := s.cfg.Connectors.Create(r.Context(), actor(r), sp)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, c)
	return nil
}

func (s *Server) listConnectors(w http.ResponseWriter, r *http.Request) error {
	cs, err := s.cfg.Connectors.List(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"connectors": cs})
	return nil
}

func (s *Server) getConnector(w http.ResponseWriter, r *http.Request) error {
	c, err := s.cfg.Connectors.Get(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, c)
	return nil
}

func (s *Server) updateConnector(w http.ResponseWriter, r *http.Request) error {
	var sp connector.Spec
	if err := decodeJSON(r, &sp); err != nil {
		return err
	}
	if sp.Name != "" && sp.Name != r.PathValue("name") {
		return invalidField("name", "differs from the name in the path", "omit name, or make it match the path")
	}
	sp.Name = r.PathValue("name")
	c, err := s.cfg.Connectors.Update(r.Context(), actor(r), sp)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, c)
	return nil
}

func (s *Server) removeConnector(w http.ResponseWriter, r *http.Request) error {
	if err := s.cfg.Connectors.Remove(r.Context(), actor(r), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) testConnector(w http.ResponseWriter, r *http.Request) error {
	var req TestConnectorRequest
	if r.ContentLength != 0 {
		if err := decodeJSON(r, &req); err != nil {
			return err
		}
	}
	res, err := s.cfg.Connectors.Test(r.Context(), actor(r), r.PathValue("name"), req.Path)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// redactedHeaders never leave the server in a call's answer.
var redactedHeaders = map[string]bool{"set-cookie": true, "authorization": true, "proxy-authorization": true, "cookie": true}

func (s *Server) callConnector(w http.ResponseWriter, r *http.Request) error {
	var req CallRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if len(req.Body) > 0 && req.BodyText != "" {
		return invalidField("body", "give body (JSON) or body_text, not both", "drop one of them")
	}
	creq := connector.Request{Method: req.Method, Path: req.Path, Header: http.Header{}, Actor: actor(r)}
	if len(req.Query) > 0 {
		creq.Query = url.Values{}
		for k, v := range req.Query {
			creq.Query.Set(k, v)
		}
	}
	for k, v := range req.Headers {
		creq.Header.Set(k, v)
	}
	switch {
	case len(req.Body) > 0:
		creq.Body = req.Body
		if creq.Header.Get("Content-Type") == "" {
			creq.Header.Set("Content-Type", "application/json")
		}
	case req.BodyText != "":
		creq.Body = []byte(req.BodyText)
		if creq.Header.Get("Content-Type") == "" {
			creq.Header.Set("Content-Type", "text/plain; charset=utf-8")
		}
	}
	resp, err := s.cfg.Connectors.Do(r.Context(), r.PathValue("name"), creq)
	var ce *connector.CallError
	if errors.As(err, &ce) {
		status := http.StatusBadGateway // the remote side or the way to it failed
		if ce.Code == "secret_unavailable" {
			status = http.StatusInternalServerError // this server cannot open its own secret
		}
		writeJSON(w, status, CallResponse{Evidence: ce.Evidence, Error: &ce.Diagnosis, Headers: map[string]string{}})
		return nil
	}
	if err != nil {
		return err
	}
	out := CallResponse{Status: resp.Status, Headers: map[string]string{}, Truncated: resp.Truncated, Evidence: resp.Evidence}
	for k, vs := range resp.Header {
		lk := strings.ToLower(k)
		if redactedHeaders[lk] {
			out.Headers[lk] = "[redacted]"
			continue
		}
		out.Headers[lk] = strings.Join(vs, ", ")
	}
	out.Body = decodeBody(resp.Header.Get("Content-Type"), resp.Body)
	writeJSON(w, http.StatusOK, out)
	return nil
}

// decodeBody parses a JSON body, else returns it as text.
func decodeBody(contentType string, body []byte) any {
	mt, _, _ := mime.ParseMediaType(contentType)
	if mt == "application/json" || strings.HasSuffix(mt, "+json") {
		var v any
		if err := json.Unmarshal(body, &v); err == nil {
			return v
		}
	}
	return string(body)
}
