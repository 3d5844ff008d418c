package web

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/auth"
)

func (c *Console) auditRoutes() []route {
	return []route{
		{pattern: "GET /ui/audit", perm: auth.PermAuditRead, handle: c.auditList},
		{pattern: "GET /ui/audit/verify", perm: auth.PermAuditRead, handle: c.auditVerify},
	}
}

// auditPageSize is how many records one audit page shows.
const auditPageSize = 100

type auditPage struct {
	Records []audit.Record
	Action  string
	// Older pages back from the oldest record shown; 0 when there are none.
	Older  int64
	Verify *audit.Verification
}

func (c *Console) auditList(w http.ResponseWriter, r *http.Request, rq *request) {
	c.showAudit(w, r, rq, nil)
}

func (c *Console) showAudit(w http.ResponseWriter, r *http.Request, rq *request, v *audit.Verification) {
	q := r.URL.Query()
	page := auditPage{Action: strings.TrimSpace(q.Get("action")), Verify: v}
	before, _ := strconv.ParseInt(q.Get("before"), 10, 64) // a malformed cursor starts at the newest record
	recs, err := c.cfg.Audit.List(r.Context(), audit.Filter{Action: page.Action, BeforeSeq: before, Limit: auditPageSize})
	if err != nil {
		c.renderError(w, r, rq, err)
		return
	}
	page.Records = recs
	if len(recs) == auditPageSize {
		page.Older = recs[len(recs)-1].Seq
	}
	c.renderPage(w, r, rq, http.StatusOK, "audit", "Audit log", page)
}

// auditVerify walks the whole chain and shows the result above the log.
func (c *Console) auditVerify(w http.ResponseWriter, r *http.Request, rq *request) {
	v, err := c.cfg.Audit.Verify(r.Context())
	if err != nil {
		c.renderError(w, r, rq, err)
		return
	}
	c.showAudit(w, r, rq, &v)
}
