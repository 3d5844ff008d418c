package web

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/probe"
)

func (c *Console) probeRoutes() []route {
	return []route{
		{pattern: "GET /ui/probe", perm: auth.PermConnectorsUse, handle: c.probeForm},
		{pattern: "POST /ui/probe", perm: auth.PermConnectorsUse, handle: c.probeRun},
	}
}

type probePage struct {
	// Identities and CAs are the trust store's names the form offers.
	Identities []string
	CAs        []string
	Form       formValues
	Chosen     map[string]bool
	Err        *formError
	Report     *probe.Report
	// Defaults shown next to the timeout field.
	DefaultTimeout, MaxTimeout string
}

func (c *Console) probeForm(w http.ResponseWriter, r *http.Request, rq *request) {
	c.showProbe(w, r, rq, http.StatusOK, probePage{Form: formValues{}})
}

func (c *Console) showProbe(w http.ResponseWriter, r *http.Request, rq *request, status int, page probePage) {
	ctx := r.Context()
	if rq.p.Role.Can(auth.PermIdentitiesRead) {
		ids, err := c.cfg.Trust.List(ctx, 0)
		if err != nil {
			c.renderError(w, r, rq, err)
			return
		}
		for _, id := range ids {
			page.Identities = append(page.Identities, id.Name)
		}
	}
	if rq.p.Role.Can(auth.PermCAsRead) {
		cas, err := c.cfg.Trust.ListCAs(ctx)
		if err != nil {
			c.renderError(w, r, rq, err)
			return
		}
		for _, ca := range cas {
			page.CAs = append(page.CAs, ca.Name)
		}
	}
	page.DefaultTimeout, page.MaxTimeout = probe.DefaultTimeout.String(), probe.MaxTimeout.String()
	c.renderPage(w, r, rq, status, "probe", "Probe an endpoint", page)
}

// probeRun probes the endpoint as the signed-in principal (the prober
// audits it) and shows the verdict and every check. A refused request is
// shown at the form; the prober records nothing for it.
func (c *Console) probeRun(w http.ResponseWriter, r *http.Request, rq *request) {
	form := keep(r, "url", "identity", "timeout")
	cas := r.PostForm["cas"]
	chosen := map[string]bool{}
	for _, ca := range cas {
		chosen[ca] = true
	}
	page := probePage{Form: form, Chosen: chosen}
	req := probe.Request{URL: strings.TrimSpace(form["url"]), CAs: cas, Identity: form["identity"]}
	if s := strings.TrimSpace(form["timeout"]); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			page.Err = &formError{Status: http.StatusBadRequest, Field: "timeout", Message: fmt.Sprintf("timeout: %q is not a duration", s),
				Hint: "give a per-check timeout such as " + probe.DefaultTimeout.String() + ", or leave it empty"}
			c.showProbe(w, r, rq, page.Err.Status, page)
			return
		}
		req.Timeout = d
	}
	rep, err := c.cfg.Prober.Probe(r.Context(), rq.actor(), req)
	if err != nil {
		page.Err = c.formError(r, err)
		c.showProbe(w, r, rq, page.Err.Status, page)
		return
	}
	page.Report = &rep
	c.showProbe(w, r, rq, http.StatusOK, page)
}
