package api

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/errs"
)

// AuditPage is GET /api/v1/audit: newest first; pass next_cursor back as
// cursor for the next (older) page.
type AuditPage struct {
	Records    []audit.Record `json:"records"`
	NextCursor string         `json:"next_cursor,omitempty"`
}

func (s *Server) auditRoutes() []Route {
	filters := []Param{
		{Name: "action", Desc: "exact action (token.create) or prefix (token.*)"},
		{Name: "actor", Desc: "actor token id or name"},
		{Name: "target", Desc: "exact target, e.g. token/tok_0123"},
		{Name: "since", Desc: "RFC 3339 time, inclusive; at or before until", Kind: ParamTime},
		{Name: "until", Desc: "RFC 3339 time, exclusive", Kind: ParamTime},
	}
	page := append(filters[:len(filters):len(filters)],
		Param{Name: "limit", Desc: "page size, 1-1000 (default 100)", Kind: ParamInteger, Min: 1, Max: 1000},
		Param{Name: "cursor", Desc: "next_cursor of the previous page", Kind: ParamInteger, Min: 1,
			Message: "is not a cursor this API returned", Hint: "pass next_cursor from the previous page unchanged"})
	return []Route{
		{Method: "GET", Path: "/api/v1/audit", Perm: auth.PermAuditRead, handler: s.listAudit,
			Doc: Operation{Summary: "List audit records, newest first", Tag: "audit", Response: schemaRef("AuditPage"), Query: page}},
		{Method: "GET", Path: "/api/v1/audit/verify", Perm: auth.PermAuditRead, handler: s.verifyAudit,
			Doc: Operation{Summary: "Walk the hash chain and report the first broken record", Tag: "audit", Response: schemaRef("AuditVerification")}},
		{Method: "POST", Path: "/api/v1/audit/verify", Perm: auth.PermAuditRead, handler: s.verifyAuditCheckpoint,
			Doc: Operation{Summary: "Walk the chain and check it against a given signed checkpoint (refused when it is not this deployment's)", Tag: "audit",
				Request: schemaRef("AuditVerifyRequest"), Response: schemaRef("AuditVerification"), Errors: []int{413}}},
		{Method: "GET", Path: "/api/v1/audit/export", Perm: auth.PermAuditRead, handler: s.exportAudit,
			Doc: Operation{Summary: "Export audit records, oldest first, as JSON lines (for a SIEM), with each checkpoint as a {\"checkpoint\": ...} line", Tag: "audit", ResponseType: "application/x-ndjson", Query: filters}},
		{Method: "POST", Path: "/api/v1/audit/checkpoints", Perm: auth.PermAuditRead, handler: s.createAuditCheckpoint,
			Doc: Operation{Summary: "Verify the records since the latest checkpoint, then sign the head (audited as audit.checkpoint)", Tag: "audit",
				Response: schemaRef("AuditCheckpoint"), Status: http.StatusCreated, Errors: []int{409, 503}}},
		{Method: "GET", Path: "/api/v1/audit/status", Perm: auth.PermAuditRead, handler: s.auditStatus,
			Doc: Operation{Summary: "The audit key's id and checkpoint public key, where the chain is keyed from, and the latest checkpoints", Tag: "audit",
				Response: schemaRef("AuditStatus"), Errors: []int{503}}},
	}
}

// AuditVerifyRequest is POST /api/v1/audit/verify: a checkpoint as `audit
// checkpoint -o json` printed it.
type AuditVerifyRequest struct {
	Checkpoint json.RawMessage `json:"checkpoint"`
}

// auditSchemas are the OpenAPI schemas of the audit routes.
func auditSchemas() map[string]any {
	checkpoint := obj([]string{"seq", "head_hash", "keyed_from", "time", "key_id", "public_key", "signature"}, map[string]any{
		"seq": integer, "head_hash": str, "keyed_from": integer, "time": dateTime, "key_id": str,
		"public_key": map[string]any{"type": "string", "description": "raw Ed25519 public key, standard base64"},
		"signature":  map[string]any{"type": "string", "description": "Ed25519 signature of the checkpoint's signed message (docs/security.md), standard base64"}})
	return map[string]any{
		"AuditCheckpoint":    checkpoint,
		"AuditVerifyRequest": obj([]string{"checkpoint"}, map[string]any{"checkpoint": schemaRef("AuditCheckpoint")}),
		"AuditVerification": obj([]string{"ok", "records", "head_seq", "head_hash"}, map[string]any{
			"ok": boolean, "records": integer, "head_seq": integer, "head_hash": str, "first_bad_seq": integer, "problem": str,
			"key_id": str, "keyed_from": integer, "checkpoints": integer, "checkpoint_seq": integer, "checkpoint_time": dateTime,
			"checkpoint_source": enum("given", "data dir", "database"),
		}),
		"AuditStatus": obj([]string{"key_id", "public_key", "public_key_pem", "keyed_from", "head_seq", "head_hash", "checkpoint_every", "checkpoint_records"}, map[string]any{
			"key_id": str, "public_key": str, "public_key_pem": str, "keyed_from": integer, "head_seq": integer, "head_hash": str,
			"latest_checkpoint": schemaRef("AuditCheckpoint"), "data_dir_checkpoint": schemaRef("AuditCheckpoint"),
			"checkpoint_every": str, "checkpoint_records": integer}),
	}
}

// checkpointError names the request field of a checkpoint's error:
// "checkpoint.seq", or "checkpoint" for one about the whole document.
func checkpointError(err error) error {
	e, ok := errs.As(err)
	if !ok {
		return err
	}
	field := "checkpoint"
	if e.Field != "" {
		field += "." + e.Field
	}
	return e.WithField(field)
}

func parseAuditFilter(r *http.Request) (audit.Filter, error) {
	q := queryOf(r)
	if err := q.ordered("since", "until"); err != nil {
		return audit.Filter{}, err
	}
	return audit.Filter{Action: q.String("action"), Actor: q.String("actor"), Target: q.String("target"),
		Since: q.Time("since"), Until: q.Time("until"), Limit: int(q.Int("limit")), BeforeSeq: q.Int("cursor")}, nil
}

func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) error {
	f, err := parseAuditFilter(r)
	if err != nil {
		return err
	}
	if f.Limit == 0 {
		f.Limit = 100
	}
	recs, err := s.cfg.Audit.List(r.Context(), f)
	if err != nil {
		return err
	}
	page := AuditPage{Records: recs}
	if page.Records == nil {
		page.Records = []audit.Record{}
	}
	if len(recs) == f.Limit && recs[len(recs)-1].Seq > 1 {
		page.NextCursor = strconv.FormatInt(recs[len(recs)-1].Seq, 10)
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

func (s *Server) verifyAudit(w http.ResponseWriter, r *http.Request) error {
	v, err := s.cfg.Audit.Verify(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *Server) verifyAuditCheckpoint(w http.ResponseWriter, r *http.Request) error {
	var req AuditVerifyRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if len(req.Checkpoint) == 0 || strings.TrimSpace(string(req.Checkpoint)) == "null" {
		return invalidField("checkpoint", "is required", "send {\"checkpoint\": ...} with a checkpoint as `trustflow audit checkpoint -o json` printed it")
	}
	cp, err := audit.ParseCheckpoint(req.Checkpoint)
	if err != nil {
		return checkpointError(err)
	}
	v, err := s.cfg.Audit.VerifyCheckpoint(r.Context(), cp)
	if err != nil {
		return checkpointError(err)
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *Server) createAuditCheckpoint(w http.ResponseWriter, r *http.Request) error {
	by := actor(r)
	// A broken chain is logged by the audit log, at error level.
	cp, err := s.cfg.Audit.Checkpoint(r.Context(), &by)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, cp)
	return nil
}

func (s *Server) auditStatus(w http.ResponseWriter, r *http.Request) error {
	st, err := s.cfg.Audit.Status(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

func (s *Server) exportAudit(w http.ResponseWriter, r *http.Request) error {
	f, err := parseAuditFilter(r)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	// An export streams for as long as the log is long, but each write
	// must go through within WriteTimeout: a client that stops reading is
	// dropped rather than holding the export open.
	dw := &deadlineWriter{w: w, rc: http.NewResponseController(w), timeout: s.cfg.WriteTimeout}
	_ = dw.rc.SetReadDeadline(time.Time{}) // ErrNotSupported only off a real connection
	if _, err := s.cfg.Audit.Export(r.Context(), dw, f); err != nil {
		// The status is already sent: log and cut the stream short.
		s.log.Error("audit export failed", "request_id", RequestID(r.Context()), "err", err)
	}
	return nil
}
