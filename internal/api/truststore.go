package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/custody"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/seal"
	"github.com/trustflow/trustflow/internal/truststore"
)

// KEKRotator re-wraps every sealed key under a fresh key-encryption key and
// replaces the KEK file; the composition root provides it.
type KEKRotator func(ctx context.Context, actor audit.Actor, progress custody.Progress) (custody.Result, error)

// CARequest is the body of POST /api/v1/cas and PUT /api/v1/cas/{name}.
// Data is the bundle (PEM, DER or PKCS#7), base64-encoded in JSON.
type CARequest struct {
	Name            string `json:"name,omitempty"`
	Description     string `json:"description,omitempty"`
	Data            []byte `json:"data"`
	AllowLeafAnchor bool   `json:"allow_leaf_anchor,omitempty"`
	AllowExpired    bool   `json:"allow_expired,omitempty"`
}

// VerifyRequest is the body of POST /api/v1/cas/{name}/verify.
type VerifyRequest struct {
	Leaf          []byte `json:"leaf"`
	Intermediates []byte `json:"intermediates,omitempty"`
	Name          string `json:"name,omitempty"`
	Time          string `json:"time,omitempty"`
	Purpose       string `json:"purpose,omitempty"`
}

// MaterialRequest carries an identity's certificate and key (or PKCS#12),
// base64-encoded in JSON. Passwords are never stored or logged.
type MaterialRequest struct {
	Cert           []byte `json:"cert,omitempty"`
	Key            []byte `json:"key,omitempty"`
	KeyPassword    string `json:"key_password,omitempty"`
	Chain          []byte `json:"chain,omitempty"`
	PKCS12         []byte `json:"pkcs12,omitempty"`
	PKCS12Password string `json:"pkcs12_password,omitempty"`
	AllowExpired   bool   `json:"allow_expired,omitempty"`
	// KeyRef names the certificate's key in a PKCS#11 token, instead of Key.
	KeyRef string `json:"key_ref,omitempty"`
}

func (m MaterialRequest) material() truststore.Material {
	return truststore.Material{Cert: m.Cert, Key: m.Key, KeyRef: m.KeyRef, KeyPassword: []byte(m.KeyPassword), Chain: m.Chain,
		PKCS12: m.PKCS12, PKCS12Password: m.PKCS12Password, AllowExpired: m.AllowExpired}
}

// ImportIdentityRequest is the body of POST /api/v1/identities/import.
type ImportIdentityRequest struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	MaterialRequest
}

// GenerateRequest describes a key to generate and its CSR.
type GenerateRequest struct {
	Subject  string   `json:"subject"`
	DNSNames []string `json:"dns_names,omitempty"`
	KeyType  string   `json:"key_type,omitempty"`
	// KeyStore is "sealed" (the default) or a pkcs11: URI: the key is then
	// generated, and stays, in that token.
	KeyStore string `json:"key_store,omitempty"`
}

// CreateIdentityRequest is the body of POST /api/v1/identities.
type CreateIdentityRequest struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	GenerateRequest
}

// CreatedIdentity answers POST /api/v1/identities: the pending identity
// and the CSR (PEM) to have signed.
type CreatedIdentity struct {
	Identity truststore.Identity `json:"identity"`
	CSR      string              `json:"csr"`
}

// InstallCertRequest is the body of POST /api/v1/identities/{name}/certificate.
type InstallCertRequest struct {
	Cert         []byte `json:"cert"`
	Chain        []byte `json:"chain,omitempty"`
	AllowExpired bool   `json:"allow_expired,omitempty"`
}

// RotateRequest is the body of POST /api/v1/identities/{name}/rotate:
// material to import, or generate to make a key and CSR.
type RotateRequest struct {
	MaterialRequest
	Generate *GenerateRequest `json:"generate,omitempty"`
	Stage    bool             `json:"stage,omitempty"`
}

// ActivateRequest is the body of POST /api/v1/identities/{name}/activate.
type ActivateRequest struct {
	Version int `json:"version"`
}

// PruneResult answers POST /api/v1/identities/{name}/prune.
type PruneResult struct {
	Identity truststore.Identity `json:"identity"`
	Pruned   []int               `json:"pruned"`
}

func (s *Server) truststoreRoutes() []Route {
	if s.cfg.Trust == nil {
		return nil
	}
	return []Route{
		{Method: "POST", Path: "/api/v1/cas", Perm: auth.PermCAsWrite, handler: s.addCA,
			Doc: Operation{Summary: "Add a CA bundle (PEM, DER or PKCS#7, base64 in `data`)", Tag: "cas", Request: schemaRef("CARequest"), Response: schemaRef("CA"), Status: 201, Errors: []int{409}}},
		{Method: "GET", Path: "/api/v1/cas", Perm: auth.PermCAsRead, handler: s.listCAs,
			Doc: Operation{Summary: "List CA bundles", Tag: "cas", Response: listOf("cas", "CA")}},
		{Method: "GET", Path: "/api/v1/cas/{name}", Perm: auth.PermCAsRead, handler: s.getCA,
			Doc: Operation{Summary: "Show a CA bundle and its certificates", Tag: "cas", Response: schemaRef("CA")}},
		{Method: "PUT", Path: "/api/v1/cas/{name}", Perm: auth.PermCAsWrite, handler: s.updateCA,
			Doc: Operation{Summary: "Replace a CA bundle's certificates in place", Tag: "cas", Request: schemaRef("CARequest"), Response: schemaRef("CA")}},
		{Method: "DELETE", Path: "/api/v1/cas/{name}", Perm: auth.PermCAsWrite, handler: s.removeCA,
			Doc: Operation{Summary: "Remove a CA bundle (409 while a connector uses it)", Tag: "cas", Status: 204, Errors: []int{409}}},
		{Method: "POST", Path: "/api/v1/cas/{name}/verify", Perm: auth.PermCAsRead, handler: s.verifyCA,
			Doc: Operation{Summary: "Build and verify a certificate's chain against this CA, as connectors do", Tag: "cas", Request: schemaRef("VerifyRequest"), Response: schemaRef("Verification")}},

		{Method: "POST", Path: "/api/v1/identities/import", Perm: auth.PermIdentitiesWrite, handler: s.importIdentity,
			Doc: Operation{Summary: "Import an identity from a certificate and key, or a PKCS#12 file", Tag: "identities", Request: schemaRef("ImportIdentityRequest"), Response: schemaRef("Identity"), Status: 201, Errors: []int{409}}},
		{Method: "POST", Path: "/api/v1/identities", Perm: auth.PermIdentitiesWrite, handler: s.createIdentity,
			Doc: Operation{Summary: "Create an identity whose key is generated inside trustflow; returns the CSR", Tag: "identities", Request: schemaRef("CreateIdentityRequest"), Response: schemaRef("CreatedIdentity"), Status: 201, Errors: []int{409}}},
		{Method: "GET", Path: "/api/v1/identities", Perm: auth.PermIdentitiesRead, handler: s.listIdentities,
			Doc: Operation{Summary: "List identities", Tag: "identities", Response: listOf("identities", "Identity"),
				Query: []Param{{Name: "expiring", Desc: "only identities whose active certificate expires within this Go duration, e.g. 720h", Kind: ParamDuration, Min: 1,
					Message: "is not a positive duration", Hint: "use a Go duration such as 720h"}}}},
		{Method: "GET", Path: "/api/v1/identities/{name}", Perm: auth.PermIdentitiesRead, handler: s.getIdentity,
			Doc: Operation{Summary: "Show an identity and its versions (never key material)", Tag: "identities", Response: schemaRef("Identity")}},
		{Method: "DELETE", Path: "/api/v1/identities/{name}", Perm: auth.PermIdentitiesWrite, handler: s.removeIdentity,
			Doc: Operation{Summary: "Remove an identity and all its versions (409 while a connector uses it)", Tag: "identities", Status: 204, Errors: []int{409}}},
		{Method: "POST", Path: "/api/v1/identities/{name}/certificate", Perm: auth.PermIdentitiesWrite, handler: s.installCert,
			Doc: Operation{Summary: "Install the signed certificate for the pending (generated) version", Tag: "identities", Request: schemaRef("InstallCertRequest"), Response: schemaRef("Identity"), Errors: []int{409}}},
		{Method: "POST", Path: "/api/v1/identities/{name}/rotate", Perm: auth.PermIdentitiesWrite, handler: s.rotateIdentity,
			Doc: Operation{Summary: "Add a version (imported, or generated with a CSR); active at once unless staged", Tag: "identities", Request: schemaRef("RotateRequest"), Response: schemaRef("RotateResult"), Errors: []int{409}}},
		{Method: "POST", Path: "/api/v1/identities/{name}/activate", Perm: auth.PermIdentitiesWrite, handler: s.activateIdentity,
			Doc: Operation{Summary: "Activate a staged version, or roll back to a retired one", Tag: "identities", Request: schemaRef("ActivateRequest"), Response: schemaRef("Identity"), Errors: []int{409}}},
		{Method: "POST", Path: "/api/v1/identities/{name}/prune", Perm: auth.PermIdentitiesWrite, handler: s.pruneIdentity,
			Doc: Operation{Summary: "Delete retired versions and their keys", Tag: "identities", Response: schemaRef("PruneResult")}},

		{Method: "POST", Path: "/api/v1/kek/rotate", Perm: auth.PermKEKWrite, handler: s.rotateKEK,
			Doc: Operation{Summary: "Re-wrap every sealed value under a new key-encryption key (?progress=true streams JSON lines: {\"rewrapped\":N,\"total\":M}, then {\"result\":...} or {\"error\":...})", Tag: "system", Response: schemaRef("RewrapResult"),
				Query: []Param{{Name: "progress", Desc: "true streams the progress as JSON lines", Kind: ParamBoolean}}}},
		{Method: "GET", Path: "/api/v1/kek", Perm: auth.PermKEKWrite, handler: s.kekStatus,
			Doc: Operation{Summary: "Key custody: the recorded key-encryption keys (ids, never keys), this node's source and readiness, sealed values by column and key", Tag: "system", Response: schemaRef("KEKStatus")}},
	}
}

func (s *Server) addCA(w http.ResponseWriter, r *http.Request) error {
	var req CARequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	ca, err := s.cfg.Trust.AddCA(r.Context(), actor(r), truststore.CARequest{Name: req.Name, Description: req.Description, Data: req.Data,
		AllowLeafAnchor: req.AllowLeafAnchor, AllowExpired: req.AllowExpired})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, ca)
	return nil
}

func (s *Server) listCAs(w http.ResponseWriter, r *http.Request) error {
	cas, err := s.cfg.Trust.ListCAs(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"cas": cas})
	return nil
}

func (s *Server) getCA(w http.ResponseWriter, r *http.Request) error {
	ca, err := s.cfg.Trust.GetCA(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ca)
	return nil
}

func (s *Server) updateCA(w http.ResponseWriter, r *http.Request) error {
	var req CARequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Name != "" && req.Name != r.PathValue("name") {
		return invalidField("name", "differs from the name in the path", "omit name, or make it match the path")
	}
	ca, err := s.cfg.Trust.UpdateCA(r.Context(), actor(r), truststore.CARequest{Name: r.PathValue("name"), Description: req.Description, Data: req.Data,
		AllowLeafAnchor: req.AllowLeafAnchor, AllowExpired: req.AllowExpired})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ca)
	return nil
}

func (s *Server) removeCA(w http.ResponseWriter, r *http.Request) error {
	if err := s.cfg.Trust.RemoveCA(r.Context(), actor(r), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) verifyCA(w http.ResponseWriter, r *http.Request) error {
	var req VerifyRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	var at time.Time
	if req.Time != "" {
		t, err := time.Parse(time.RFC3339, req.Time)
		if err != nil {
			return invalidField("time", "not an RFC 3339 time", "use e.g. 2026-01-31T00:00:00Z")
		}
		at = t
	}
	v, err := s.cfg.Trust.Verify(r.Context(), truststore.VerifyRequest{CA: []string{r.PathValue("name")}, Leaf: req.Leaf, Intermediates: req.Intermediates,
		Name: req.Name, Time: at, Purpose: req.Purpose})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *Server) importIdentity(w http.ResponseWriter, r *http.Request) error {
	var req ImportIdentityRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	id, err := s.cfg.Trust.Import(r.Context(), actor(r), truststore.ImportRequest{Name: req.Name, Description: req.Description, Material: req.material()})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, id)
	return nil
}

func (s *Server) createIdentity(w http.ResponseWriter, r *http.Request) error {
	var req CreateIdentityRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	id, csr, err := s.cfg.Trust.Create(r.Context(), actor(r), truststore.CreateRequest{Name: req.Name, Description: req.Description,
		GenerateSpec: truststore.GenerateSpec{Subject: req.Subject, DNSNames: req.DNSNames, KeyType: req.KeyType, KeyStore: req.KeyStore}})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, CreatedIdentity{Identity: id, CSR: csr})
	return nil
}

func (s *Server) listIdentities(w http.ResponseWriter, r *http.Request) error {
	ids, err := s.cfg.Trust.List(r.Context(), queryOf(r).Duration("expiring"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"identities": ids})
	return nil
}

func (s *Server) getIdentity(w http.ResponseWriter, r *http.Request) error {
	id, err := s.cfg.Trust.Get(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, id)
	return nil
}

func (s *Server) removeIdentity(w http.ResponseWriter, r *http.Request) error {
	if err := s.cfg.Trust.Remove(r.Context(), actor(r), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) installCert(w http.ResponseWriter, r *http.Request) error {
	var req InstallCertRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	id, err := s.cfg.Trust.InstallCertificate(r.Context(), actor(r), truststore.InstallRequest{Name: r.PathValue("name"), Cert: req.Cert, Chain: req.Chain, AllowExpired: req.AllowExpired})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, id)
	return nil
}

func (s *Server) rotateIdentity(w http.ResponseWriter, r *http.Request) error {
	var req RotateRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	tr := truststore.RotateRequest{Name: r.PathValue("name"), Material: req.material(), Stage: req.Stage}
	if req.Generate != nil {
		if len(req.Cert) > 0 || len(req.Key) > 0 || len(req.PKCS12) > 0 {
			return invalidField("generate", "cannot be combined with cert, key or pkcs12", "either generate a key (and install its certificate later) or import material")
		}
		tr.Generate = &truststore.GenerateSpec{Subject: req.Generate.Subject, DNSNames: req.Generate.DNSNames, KeyType: req.Generate.KeyType, KeyStore: req.Generate.KeyStore}
	}
	res, err := s.cfg.Trust.Rotate(r.Context(), actor(r), tr)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (s *Server) activateIdentity(w http.ResponseWriter, r *http.Request) error {
	var req ActivateRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Version < 1 {
		return invalidField("version", "must be a version number (1 or more)", "see the versions with `trustflow identity show "+r.PathValue("name")+"`")
	}
	id, err := s.cfg.Trust.Activate(r.Context(), actor(r), r.PathValue("name"), req.Version)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, id)
	return nil
}

func (s *Server) pruneIdentity(w http.ResponseWriter, r *http.Request) error {
	id, pruned, err := s.cfg.Trust.Prune(r.Context(), actor(r), r.PathValue("name"))
	if err != nil {
		return err
	}
	if pruned == nil {
		pruned = []int{}
	}
	writeJSON(w, http.StatusOK, PruneResult{Identity: id, Pruned: pruned})
	return nil
}

func (s *Server) rotateKEK(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.RotateKEK == nil {
		return &errs.Error{Kind: errs.Unavailable, Code: codeNotAvailable, Message: "this server cannot rotate its key-encryption key", Hint: "run trustflow serve with a file-based KEK"}
	}
	// A rotation takes as long as the sealed values it re-wraps: no read
	// deadline (which would cancel it), and a write deadline per answer
	// or progress line.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})  // ErrNotSupported only off a real connection
	_ = rc.SetWriteDeadline(time.Time{}) // likewise
	if !queryOf(r).Bool("progress") {
		res, err := s.cfg.RotateKEK(r.Context(), actor(r), nil)
		_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		if err != nil {
			return kekError(err)
		}
		writeJSON(w, http.StatusOK, res)
		return nil
	}
	// ?progress=true streams JSON lines: {"rewrapped":N,"total":M} as the
	// re-wrap goes, then {"result":{...}} or {"error":{...}}.
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	line := func(v any) {
		_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		_ = enc.Encode(v) // a failed write means the client left; the rotation goes on
		_ = rc.Flush()
	}
	res, err := s.cfg.RotateKEK(r.Context(), actor(r), func(done, total int) {
		line(KEKProgress{Rewrapped: done, Total: total})
	})
	if err != nil {
		e := toAPIError(kekError(err))
		s.log.Error("key-encryption key rotation failed", "request_id", RequestID(r.Context()), "err", err)
		line(map[string]any{"error": errorDetail{Code: e.Code, Message: e.Public(), Hint: e.Hint, RequestID: RequestID(r.Context())}})
		return nil
	}
	line(map[string]any{"result": res})
	return nil
}

func (s *Server) kekStatus(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.KEKStatus == nil {
		return &errs.Error{Kind: errs.Unavailable, Code: codeNotAvailable, Message: "this server does not report its key custody", Hint: "run trustflow serve"}
	}
	st, err := s.cfg.KEKStatus(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

// KEKProgress is one progress line of a streamed rotation.
type KEKProgress struct {
	Rewrapped int `json:"rewrapped"`
	Total     int `json:"total"`
}

// kekError maps custody's errors; their messages name key ids, tables and
// record ids, never a key.
func kekError(err error) error {
	var wrong *custody.WrongKEKError
	var missing *custody.MissingKEKError
	switch {
	case errors.As(err, &wrong):
		return &errs.Error{Kind: errs.Unavailable, Code: "kek_unavailable", Message: wrong.Error(),
			Hint: "give this node the active key-encryption key, or rotate from a node that holds it", Err: err}
	case errors.As(err, &missing):
		return &errs.Error{Kind: errs.Conflict, Code: "kek_missing", Message: missing.Error(),
			Hint: "a rotation cannot re-wrap values whose key this node lacks", Err: err}
	case errors.Is(err, seal.ErrReadOnlySource):
		return &errs.Error{Kind: errs.Conflict, Code: "kek_source_read_only", Message: strings.TrimPrefix(err.Error(), "custody: rotate: "),
			Hint: "see docs/keys.md, rotating an env:// key", Err: err}
	}
	var ue *seal.UnknownKEKError
	if errors.As(err, &ue) || errors.Is(err, seal.ErrTampered) {
		return &errs.Error{Kind: errs.Internal, Code: "kek_rotation_failed", Message: err.Error(),
			Hint: "nothing was dropped: every value still opens under the keys it opened with; fix the value named and rotate again", Err: err}
	}
	return err
}

func notFoundHint(kind string) string {
	switch kind {
	case "CA":
		return "check the name; list them with `trustflow ca list`"
	case "identity version":
		return "check the version; list them with `trustflow identity show NAME`"
	}
	return "check the name; list them with `trustflow identity list`"
}
