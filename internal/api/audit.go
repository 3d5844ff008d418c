package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/auth"
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
		{Name: "since", Desc: "RFC 3339 time, inclusive"},
		{Name: "until", Desc: "RFC 3339 time, exclusive"},
	}
	return []Route{
		{Method: "GET", Path: "/api/v1/audit", Perm: auth.PermAuditRead, handler: s.listAudit,
			Doc: Operation{Summary: "List audit records, newest first", Tag: "audit", Response: schemaRef("AuditPage"),
				Query: append(filters, Param{Name: "limit", Desc: "page size, 1-1000 (default 100)"}, Param{Name: "cursor", Desc: "next_cursor of the previous page"})}},
		{Method: "GET", Path: "/api/v1/audit/verify", Perm: auth.PermAuditRead, handler: s.verifyAudit,
			Doc: Operation{Summary: "Walk the hash chain and report the first broken record", Tag: "audit", Response: schemaRef("AuditVerification")}},
		{Method: "GET", Path: "/api/v1/audit/export", Perm: auth.PermAuditRead, handler: s.exportAudit,
			Doc: Operation{Summary: "Export audit records, oldest first, as JSON lines (for a SIEM)", Tag: "audit", ResponseType: "application/x-ndjson", Query: filters}},
	}
}

func parseAuditFilter(r *http.Request) (audit.Filter, error) {
	q := r.URL.Query()
	f := audit.Filter{Action: q.Get("action"), Actor: q.Get("actor"), Target: q.Get("target")}
	for _, tf := range []struct {
		name string
		dst  *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if v := q.Get(tf.name); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return f, invalidField(tf.name, "not an RFC 3339 time", "use e.g. 2026-01-31T00:00:00Z")
			}
			*tf.dst = t
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return f, invalidField("limit", "must be an integer from 1 to 1000", "use e.g. limit=100")
		}
		f.Limit = n
	}
	if v := q.Get("cursor"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return f, invalidField("cursor", "is not a cursor this API returned", "pass next_cursor from the previous page unchanged")
		}
		f.BeforeSeq = n
	}
	return f, nil
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

func (s *Server) exportAudit(w http.ResponseWriter, r *http.Request) error {
	f, err := parseAuditFilter(r)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if _, err := s.cfg.Audit.Export(r.Context(), w, f); err != nil {
		// The status is already sent: log and cut the stream short.
		s.log.Error("audit export failed", "request_id", RequestID(r.Context()), "err", err)
	}
	return nil
}
