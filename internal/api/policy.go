package api

import (
	"net/http"

	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/policy"
)

// PolicyCheck lists what a policy breaks (connectors, identities).
type PolicyCheck struct {
	Revision   int64              `json:"revision"`
	Violations []policy.Violation `json:"violations"`
}

func (s *Server) policyRoutes() []Route {
	if s.cfg.Policy == nil {
		return nil
	}
	view := schemaRef("Policy")
	rule := schemaRef("PolicyRule")
	return []Route{
		{Method: "GET", Path: "/api/v1/policy", Perm: auth.PermPolicyRead, handler: s.getPolicy,
			Doc: Operation{Summary: "The egress and TLS policy in force (the default when none was set)", Tag: "policy", Response: view}},
		{Method: "PUT", Path: "/api/v1/policy", Perm: auth.PermPolicyWrite, handler: s.setPolicy,
			Doc: Operation{Summary: "Replace the policy (admin, audited); the answer lists what it breaks", Tag: "policy", Request: schemaRef("PolicyDocument"), Response: view, Errors: []int{409}}},
		{Method: "POST", Path: "/api/v1/policy/allow", Perm: auth.PermPolicyWrite, handler: s.allowPolicy,
			Doc: Operation{Summary: "Add one egress allow rule (admin, audited)", Tag: "policy", Request: rule, Response: view, Errors: []int{409}}},
		{Method: "POST", Path: "/api/v1/policy/disallow", Perm: auth.PermPolicyWrite, handler: s.disallowPolicy,
			Doc: Operation{Summary: "Remove one egress allow rule (admin, audited)", Tag: "policy", Request: rule, Response: view, Errors: []int{409}}},
		{Method: "GET", Path: "/api/v1/policy/check", Perm: auth.PermPolicyRead, handler: s.checkPolicy,
			Doc: Operation{Summary: "List the connectors and identities that break the policy in force", Tag: "policy", Response: schemaRef("PolicyCheck")}},
	}
}

func (s *Server) getPolicy(w http.ResponseWriter, r *http.Request) error {
	v, err := s.cfg.Policy.Get(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *Server) setPolicy(w http.ResponseWriter, r *http.Request) error {
	var doc policy.Document
	if err := decodeJSON(r, &doc); err != nil {
		return err
	}
	v, err := s.cfg.Policy.Set(r.Context(), actor(r), doc)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *Server) allowPolicy(w http.ResponseWriter, r *http.Request) error {
	var rule policy.Rule
	if err := decodeJSON(r, &rule); err != nil {
		return err
	}
	v, err := s.cfg.Policy.Allow(r.Context(), actor(r), rule)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *Server) disallowPolicy(w http.ResponseWriter, r *http.Request) error {
	var rule policy.Rule
	if err := decodeJSON(r, &rule); err != nil {
		return err
	}
	v, err := s.cfg.Policy.Disallow(r.Context(), actor(r), rule)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *Server) checkPolicy(w http.ResponseWriter, r *http.Request) error {
	v, err := s.cfg.Policy.Get(r.Context())
	if err != nil {
		return err
	}
	out := PolicyCheck{Revision: v.Revision, Violations: []policy.Violation{}}
	if s.cfg.PolicyCheck != nil {
		vs, err := s.cfg.PolicyCheck(r.Context(), s.cfg.Policy.Current())
		if err != nil {
			return err
		}
		if vs != nil {
			out.Violations = vs
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// policySchemas are the policy's OpenAPI schemas.
func policySchemas() map[string]any {
	str := map[string]any{"type": "string"}
	boolean := map[string]any{"type": "boolean"}
	integer := map[string]any{"type": "integer"}
	strs := map[string]any{"type": "array", "items": str}
	rule := obj([]string{"host"}, map[string]any{
		"host":  map[string]any{"type": "string", "description": "exact host name, *.suffix, IP address or CIDR"},
		"ports": map[string]any{"type": "string", "description": `"443", "443,8443", "8000-8999" or "*" (the default)`},
	})
	doc := obj([]string{"apiVersion", "kind"}, map[string]any{
		"apiVersion": map[string]any{"type": "string", "enum": []string{policy.APIVersion}},
		"kind":       map[string]any{"type": "string", "enum": []string{policy.Kind}},
		"egress": obj(nil, map[string]any{
			"default": map[string]any{"type": "string", "enum": []string{policy.DefaultAllow, policy.DefaultDeny}},
			"allow":   map[string]any{"type": "array", "items": schemaRef("PolicyRule")},
		}),
		"tls": obj(nil, map[string]any{
			"min_version": map[string]any{"type": "string", "enum": []string{"1.2", "1.3"}}, "cipher_suites": strs, "curves": strs,
			"require_mtls": boolean, "allow_system_roots": boolean, "allow_plaintext": boolean, "allow_no_client_auth_request": boolean,
		}),
		"identities": obj(nil, map[string]any{"min_rsa_bits": integer, "min_ec_bits": integer, "max_lifetime": str, "require_client_auth_eku": boolean}),
	})
	violation := obj([]string{"kind", "name", "rule", "message"}, map[string]any{"kind": str, "name": str, "rule": str, "message": str})
	return map[string]any{
		"PolicyRule":      rule,
		"PolicyDocument":  doc,
		"PolicyViolation": violation,
		"Policy": obj([]string{"document", "revision"}, map[string]any{
			"document": schemaRef("PolicyDocument"), "revision": integer,
			"updated_at": map[string]any{"type": "string", "format": "date-time"}, "updated_by": str,
			"violations": map[string]any{"type": "array", "items": schemaRef("PolicyViolation")},
		}),
		"PolicyCheck": obj([]string{"revision", "violations"}, map[string]any{
			"revision": integer, "violations": map[string]any{"type": "array", "items": schemaRef("PolicyViolation")},
		}),
	}
}
