package api

import (
	"net/http"
	"sort"
	"strconv"
	"strings"
)

// Operation documents one route in the OpenAPI document.
type Operation struct {
	Summary string
	Tag     string
	// Request is the JSON request body's schema, if any.
	Request map[string]any
	// Response is the success body's JSON schema.
	Response map[string]any
	// ResponseType overrides application/json for the success body.
	ResponseType string
	// Status is the success status. Defaults to 200.
	Status int
	// Query documents query parameters.
	Query []Param
	// Errors lists extra error statuses beyond the defaults.
	Errors []int
	// NoAuth marks routes that need no token.
	NoAuth bool
}

func schemaRef(name string) map[string]any {
	return map[string]any{"$ref": "#/components/schemas/" + name}
}

func listOf(field, item string) map[string]any {
	return map[string]any{"type": "object", "required": []string{field}, "properties": map[string]any{
		field: map[string]any{"type": "array", "items": schemaRef(item)},
	}}
}

func obj(required []string, props map[string]any) map[string]any {
	o := map[string]any{"type": "object", "properties": props}
	if len(required) > 0 {
		o["required"] = required
	}
	return o
}

var (
	str      = map[string]any{"type": "string"}
	boolean  = map[string]any{"type": "boolean"}
	integer  = map[string]any{"type": "integer"}
	dateTime = map[string]any{"type": "string", "format": "date-time"}
)

func enum(values ...string) map[string]any {
	return map[string]any{"type": "string", "enum": values}
}

// componentSchemas are the named schemas routes refer to.
func componentSchemas() map[string]any {
	token := map[string]any{
		"id": str, "name": str, "role": enum("admin", "editor", "operator", "auditor"),
		"created_at": dateTime, "created_by": str, "expires_at": dateTime, "revoked_at": dateTime,
		"status": enum("active", "expired", "revoked"),
	}
	created := map[string]any{"token": map[string]any{"type": "string", "description": "the secret; shown only in this response"}}
	for k, v := range token {
		created[k] = v
	}
	actor := obj([]string{"id", "name", "role"}, map[string]any{"id": str, "name": str, "role": str})
	record := obj([]string{"seq", "time", "actor", "action", "target", "outcome", "details", "prev_hash", "hash"}, map[string]any{
		"seq": integer, "time": dateTime, "actor": actor, "action": str, "target": str,
		"outcome": enum("success", "failure", "denied"), "details": map[string]any{"type": "object"},
		"prev_hash": str, "hash": str, "key_id": map[string]any{"type": "string", "description": "the audit key whose HMAC-SHA256 hash is; absent for a record from before the audit key (hash is then SHA-256)"},
	})
	certInfo := obj([]string{"serial", "subject", "issuer", "fingerprint_sha256", "not_before", "not_after", "key_type"}, map[string]any{
		"serial": str, "subject": str, "issuer": str, "fingerprint_sha256": str, "not_before": dateTime, "not_after": dateTime,
		"key_type": str, "is_ca": boolean, "dns_names": arrayOf(str), "ip_addresses": arrayOf(str),
	})
	b64 := map[string]any{"type": "string", "format": "byte", "description": "file contents, base64"}
	material := map[string]any{
		"cert": b64, "key": b64, "key_password": str, "chain": b64, "pkcs12": b64, "pkcs12_password": str, "allow_expired": boolean,
		"key_ref": map[string]any{"type": "string", "description": "instead of key: the pkcs11: URI of the certificate's key in a PKCS#11 token (pin-source, never pin-value)"},
	}
	generate := obj([]string{"subject"}, map[string]any{"subject": map[string]any{"type": "string", "description": "e.g. CN=svc,O=Agency"},
		"dns_names": arrayOf(str), "key_type": enum("ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072", "rsa-4096", "ed25519"),
		"key_store": map[string]any{"type": "string", "description": "where the key is generated: sealed (default) or a pkcs11: URI naming a token (ecdsa-p256, ecdsa-p384 or rsa-3072 there)"}})
	version := obj([]string{"version", "status", "key_type"}, map[string]any{
		"version": integer, "status": enum("pending", "staged", "active", "retired"), "source": enum("imported", "generated"),
		"key_type": str, "serial": str, "subject": str, "issuer": str, "fingerprint_sha256": str, "not_before": dateTime, "not_after": dateTime,
		"dns_names": arrayOf(str), "chain": arrayOf(schemaRef("CertInfo")), "csr": str, "created_at": dateTime, "activated_at": dateTime,
		"key_store": enum("sealed", "pkcs11"),
		"key_ref":   obj([]string{"uri", "token", "label"}, map[string]any{"uri": str, "token": str, "label": str, "id": str}),
	})
	authSettings := obj(nil, map[string]any{"username": str, "header_name": str, "token_url": str, "client_id": str, "scopes": arrayOf(str), "token_auth_tls": boolean})
	diagnosis := obj([]string{"code", "message"}, map[string]any{"code": str, "message": str, "hint": str})
	evidence := obj([]string{"tls_version", "cipher_suite", "server_requested_client_cert", "server_chain", "resumed"}, map[string]any{
		"tls_version": str, "cipher_suite": str, "server_name": str, "server_requested_client_cert": boolean, "acceptable_cas": arrayOf(str),
		"client_certificate": obj(nil, map[string]any{"identity": str, "version": integer, "serial": str, "fingerprint_sha256": str}),
		"server_chain":       arrayOf(obj(nil, map[string]any{"subject": str, "issuer": str, "fingerprint_sha256": str, "not_after": dateTime})),
		"resumed":            boolean, "alpn": str, "handshake_at": dateTime,
	})
	schemas := map[string]any{
		"CertInfo": certInfo,
		"CA": obj([]string{"name", "certificates"}, map[string]any{"name": str, "description": str, "allow_leaf_anchor": boolean,
			"certificates": arrayOf(schemaRef("CertInfo")), "created_at": dateTime, "updated_at": dateTime, "revision": integer}),
		"CARequest":     obj([]string{"data"}, map[string]any{"name": str, "description": str, "data": b64, "allow_leaf_anchor": boolean, "allow_expired": boolean}),
		"VerifyRequest": obj([]string{"leaf"}, map[string]any{"leaf": b64, "intermediates": b64, "name": str, "time": dateTime, "purpose": enum("server", "client")}),
		"Verification": obj([]string{"valid", "leaf"}, map[string]any{"valid": boolean, "leaf": schemaRef("CertInfo"), "chain": arrayOf(schemaRef("CertInfo")),
			"error": obj([]string{"code", "message"}, map[string]any{"code": str, "message": str, "hint": str})}),
		"Identity": obj([]string{"name", "status", "active_version", "versions"}, map[string]any{"name": str, "description": str,
			"status": enum("active", "pending", "inactive"), "active_version": integer, "created_at": dateTime, "updated_at": dateTime,
			"versions": arrayOf(schemaRef("IdentityVersion"))}),
		"IdentityVersion":       version,
		"ImportIdentityRequest": obj([]string{"name"}, merge(map[string]any{"name": str, "description": str}, material)),
		"CreateIdentityRequest": obj([]string{"name", "subject"}, merge(map[string]any{"name": str, "description": str}, generate["properties"].(map[string]any))),
		"CreatedIdentity":       obj([]string{"identity", "csr"}, map[string]any{"identity": schemaRef("Identity"), "csr": str}),
		"InstallCertRequest":    obj([]string{"cert"}, map[string]any{"cert": b64, "chain": b64, "allow_expired": boolean}),
		"RotateRequest":         obj(nil, merge(map[string]any{"generate": generate, "stage": boolean}, material)),
		"RotateResult":          obj([]string{"identity", "version"}, map[string]any{"identity": schemaRef("Identity"), "version": integer, "csr": str}),
		"ActivateRequest":       obj([]string{"version"}, map[string]any{"version": integer}),
		"PruneResult":           obj([]string{"identity", "pruned"}, map[string]any{"identity": schemaRef("Identity"), "pruned": arrayOf(integer)}),
		"ConnectorSpec": obj([]string{"name", "url"}, map[string]any{"name": str, "description": str, "url": str,
			"auth": enum("none", "basic", "bearer", "api-key", "oauth2-client-credentials", "mtls"), "identity": str, "cas": arrayOf(str),
			"system_roots": boolean, "server_name": str, "pins": arrayOf(str), "min_tls": enum("1.2", "1.3"), "timeout": str,
			"headers": map[string]any{"type": "object", "additionalProperties": str}, "allow_plaintext": boolean, "allow_no_client_auth_request": boolean,
			"auth_settings": authSettings, "secrets": obj(nil, map[string]any{"password": str, "token": str, "api_key": str, "client_secret": str})}),
		"Connector": obj([]string{"name", "url", "auth", "cas"}, map[string]any{"name": str, "description": str, "url": str, "auth": str, "identity": str,
			"cas": arrayOf(str), "system_roots": boolean, "server_name": str, "pins": arrayOf(str), "min_tls": str, "timeout": str,
			"headers": map[string]any{"type": "object", "additionalProperties": str}, "allow_plaintext": boolean, "allow_no_client_auth_request": boolean,
			"auth_settings": authSettings, "has_secret": boolean, "created_at": dateTime, "updated_at": dateTime,
			"last_test_at": dateTime, "last_test_ok": boolean, "last_error": str}),
		"Evidence":             evidence,
		"Diagnosis":            diagnosis,
		"TestConnectorRequest": obj(nil, map[string]any{"path": str}),
		"TestResult":           obj([]string{"ok"}, map[string]any{"ok": boolean, "error": diagnosis, "evidence": evidence, "status": integer}),
		"CallRequest": obj([]string{"method", "path"}, map[string]any{"method": str, "path": str,
			"query": map[string]any{"type": "object", "additionalProperties": str}, "headers": map[string]any{"type": "object", "additionalProperties": str},
			"body": map[string]any{"description": "any JSON value, sent as application/json"}, "body_text": str}),
		"CallResponse": obj([]string{"status", "headers", "body"}, map[string]any{"status": integer,
			"headers": map[string]any{"type": "object", "additionalProperties": str}, "body": map[string]any{}, "truncated": boolean,
			"evidence": evidence, "error": diagnosis}),
		"ApplyRequest": obj([]string{"documents"}, map[string]any{"documents": arrayOf(obj([]string{"filename", "source"}, map[string]any{
			"filename": str, "source": map[string]any{"type": "string", "description": "the flow document, YAML or JSON"}}))}),
		"AppliedFlow": obj([]string{"name", "version", "changed"}, map[string]any{"name": str, "version": integer, "changed": boolean, "filename": str}),
		"Flow": obj([]string{"name", "version", "trigger", "inputs"}, map[string]any{"name": str, "description": str, "version": integer,
			"trigger": obj([]string{"kind"}, map[string]any{"kind": enum("manual", "schedule", "webhook", "event"), "cron": str, "timezone": str, "webhook_auth": enum("token", "hmac"), "event_type": str}),
			"inputs":  arrayOf(obj([]string{"name", "type"}, map[string]any{"name": str, "type": str, "required": boolean, "default": map[string]any{}, "description": str, "secret": boolean})),
			"source":  str, "filename": str, "digest": str, "created_at": dateTime, "updated_at": dateTime,
			"versions": arrayOf(obj(nil, map[string]any{"version": integer, "digest": str, "filename": str, "created_at": dateTime, "created_by": str}))}),
		"RunRequest": obj(nil, map[string]any{"input": map[string]any{"type": "object"}}),
		"RunError":   obj([]string{"code", "message"}, map[string]any{"step": str, "code": str, "message": str, "hint": str, "status": integer}),
		"Run": obj([]string{"id", "flow", "status"}, map[string]any{"id": str, "flow": str, "flow_version": integer,
			"status": enum("queued", "running", "sleeping", "succeeded", "failed", "cancelled"), "trigger": str,
			"input": map[string]any{"type": "object"}, "output": map[string]any{}, "error": schemaRef("RunError"), "parent_run": str, "parent_step": str,
			"created_at": dateTime, "started_at": dateTime, "finished_at": dateTime,
			"steps": arrayOf(obj([]string{"path", "id", "kind", "status"}, map[string]any{"path": str, "id": str, "kind": str,
				"status": enum("pending", "running", "succeeded", "failed", "skipped", "cancelled"), "attempts": integer,
				"output": map[string]any{}, "evidence": map[string]any{}, "error": schemaRef("RunError"),
				"started_at": dateTime, "finished_at": dateTime, "duration_ms": integer, "next_attempt_at": dateTime}))}),
		"KEKStatus": obj([]string{"active_kek_id", "source", "ready", "keks", "sealed"}, map[string]any{"active_kek_id": str, "source": str, "ready": map[string]any{"type": "boolean"},
			"problem": str, "keks": arrayOf(obj([]string{"id", "state", "source", "held", "created_at"}, map[string]any{"id": str, "state": str, "source": str,
				"held": map[string]any{"type": "boolean"}, "created_at": str, "activated_at": str, "retired_at": str})),
			"sealed": map[string]any{"type": "object", "additionalProperties": map[string]any{"type": "object", "additionalProperties": integer}}}),
		"RewrapResult": obj([]string{"to_kek_id", "keys"}, map[string]any{"from_kek_ids": arrayOf(str), "to_kek_id": str, "keys": integer,
			"total": integer, "verified": integer, "columns": map[string]any{"type": "object", "additionalProperties": integer}}),
	}
	for k, v := range map[string]any{
		// The one public error (package errs): code, message and hint; the
		// field at fault; each problem of a document or input; what still
		// uses a resource a removal was refused for.
		"Error": obj([]string{"error"}, map[string]any{"error": obj([]string{"code", "message"}, map[string]any{
			"code": str, "message": str, "hint": str, "request_id": str,
			"field":    map[string]any{"type": "string", "description": "the request field at fault; the message starts with it"},
			"problems": arrayOf(obj([]string{"message"}, map[string]any{"file": str, "line": integer, "column": integer, "path": str, "message": str, "hint": str})),
			"used_by":  arrayOf(str),
		})}),
		"Health":             obj([]string{"status"}, map[string]any{"status": str}),
		"Principal":          obj([]string{"token_id", "name", "role"}, map[string]any{"token_id": str, "name": str, "role": str}),
		"System":             obj(nil, map[string]any{"version": str, "commit": str, "go_version": str, "fips140_enabled": boolean, "fips_mode": boolean, "database": enum("sqlite", "postgres"), "schema_version": integer}),
		"Token":              obj([]string{"id", "name", "role", "created_at", "status"}, token),
		"CreatedToken":       obj([]string{"id", "name", "role", "token"}, created),
		"CreateTokenRequest": obj([]string{"name", "role"}, map[string]any{"name": str, "role": enum("admin", "editor", "operator", "auditor"), "expires_in": map[string]any{"type": "string", "description": "Go duration, e.g. 720h"}}),
		"AuditRecord":        record,
		"AuditPage":          obj([]string{"records"}, map[string]any{"records": map[string]any{"type": "array", "items": schemaRef("AuditRecord")}, "next_cursor": str}),
	} {
		schemas[k] = v
	}
	// The probe route's schemas live beside it, in probe.go.
	for k, v := range probeSchemas() {
		schemas[k] = v
	}
	// The audit routes' schemas live beside them, in audit.go.
	for k, v := range auditSchemas() {
		schemas[k] = v
	}
	// The policy routes' schemas live beside them, in policy.go.
	for k, v := range policySchemas() {
		schemas[k] = v
	}
	return schemas
}

func arrayOf(item map[string]any) map[string]any {
	return map[string]any{"type": "array", "items": item}
}

func merge(a, b map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// OpenAPI builds the OpenAPI 3.1 document from the registered routes.
func (s *Server) OpenAPI() map[string]any {
	paths := map[string]any{}
	for _, rt := range s.routes {
		item, _ := paths[rt.Path].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[rt.Path] = item
		}
		item[strings.ToLower(rt.Method)] = operation(rt)
	}
	return map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{
			"title":       "trustflow API",
			"version":     s.cfg.Build.Version,
			"description": "Workflow automation whose outbound calls authenticate with mutual TLS. Every /api/v1/ endpoint needs Authorization: Bearer <token>.",
		},
		"paths": paths,
		"components": map[string]any{
			"schemas": componentSchemas(),
			"securitySchemes": map[string]any{
				"bearer": map[string]any{"type": "http", "scheme": "bearer"},
			},
		},
		"security": []any{map[string]any{"bearer": []string{}}},
	}
}

func operation(rt Route) map[string]any {
	d := rt.Doc
	status := d.Status
	if status == 0 {
		status = http.StatusOK
	}
	op := map[string]any{
		"summary":     d.Summary,
		"operationId": operationID(rt),
		"tags":        []string{d.Tag},
	}
	if rt.Public || d.NoAuth {
		op["security"] = []any{}
	}
	if rt.Perm != "" {
		op["x-trustflow-permission"] = string(rt.Perm)
	}
	var params []any
	for _, seg := range strings.Split(rt.Path, "/") {
		if strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") {
			params = append(params, map[string]any{"name": strings.Trim(seg, "{}"), "in": "path", "required": true, "schema": str})
		}
	}
	for _, q := range d.Query {
		params = append(params, map[string]any{"name": q.Name, "in": "query", "description": q.Desc, "schema": q.schema()})
	}
	if len(params) > 0 {
		op["parameters"] = params
	}
	if d.Request != nil {
		op["requestBody"] = map[string]any{"required": true, "content": map[string]any{"application/json": map[string]any{"schema": d.Request}}}
	}
	ok := map[string]any{"description": http.StatusText(status)}
	ct := d.ResponseType
	if ct == "" {
		ct = "application/json"
	}
	if d.Response != nil {
		ok["content"] = map[string]any{ct: map[string]any{"schema": d.Response}}
	} else {
		ok["content"] = map[string]any{ct: map[string]any{"schema": str}}
	}
	responses := map[string]any{strconv.Itoa(status): ok}
	errStatuses := []int{}
	if !rt.Public {
		errStatuses = append(errStatuses, 401)
		if rt.Perm != "" {
			errStatuses = append(errStatuses, 403)
		}
	}
	if d.Request != nil {
		errStatuses = append(errStatuses, 400, 413)
	} else if len(d.Query) > 0 {
		errStatuses = append(errStatuses, 400)
	}
	errStatuses = append(errStatuses, 429)
	if strings.Contains(rt.Path, "{") {
		errStatuses = append(errStatuses, 404)
	}
	errStatuses = append(errStatuses, d.Errors...)
	errStatuses = append(errStatuses, 500)
	sort.Ints(errStatuses)
	for _, st := range errStatuses {
		responses[strconv.Itoa(st)] = map[string]any{
			"description": http.StatusText(st),
			"content":     map[string]any{"application/json": map[string]any{"schema": schemaRef("Error")}},
		}
	}
	op["responses"] = responses
	return op
}

func operationID(rt Route) string {
	var b strings.Builder
	b.WriteString(strings.ToLower(rt.Method))
	for _, seg := range strings.Split(strings.TrimPrefix(rt.Path, "/api/v1"), "/") {
		seg = strings.Trim(seg, "{}")
		seg = strings.NewReplacer(".", "", "-", "", "_", "").Replace(seg)
		if seg == "" {
			continue
		}
		b.WriteString(strings.ToUpper(seg[:1]) + seg[1:])
	}
	return b.String()
}

func (s *Server) openAPI(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, s.OpenAPI())
	return nil
}
