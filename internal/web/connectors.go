package web

import (
	"net/http"
	"strings"

	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/connector"
	"github.com/trustflow/trustflow/internal/truststore"
)

func (c *Console) connectorRoutes() []route {
	return []route{
		{pattern: "GET /ui/connectors", perm: auth.PermConnectorsRead, handle: c.connectorList},
		{pattern: "POST /ui/connectors", perm: auth.PermConnectorsWrite, handle: c.connectorCreate},
		{pattern: "GET /ui/connectors/{name}", perm: auth.PermConnectorsRead, handle: c.connectorDetail},
		{pattern: "POST /ui/connectors/{name}/test", perm: auth.PermConnectorsUse, handle: c.connectorTest},
	}
}

type connectorsPage struct {
	Connectors []connector.Connector
	// Identities and CAs fill the create form's choices.
	Identities []truststore.Identity
	CAs        []truststore.CA
	Err        *formError
	Form       formValues
	Chosen     map[string]bool
}

func (c *Console) connectorList(w http.ResponseWriter, r *http.Request, rq *request) {
	c.showConnectors(w, r, rq, http.StatusOK, nil, formValues{}, nil)
}

func (c *Console) showConnectors(w http.ResponseWriter, r *http.Request, rq *request, status int, fe *formError, form formValues, chosen map[string]bool) {
	ctx := r.Context()
	conns, err := c.cfg.Connectors.List(ctx)
	if err != nil {
		c.renderError(w, r, rq, err)
		return
	}
	page := connectorsPage{Connectors: conns, Err: fe, Form: form, Chosen: chosen}
	if rq.p.Role.Can(auth.PermConnectorsWrite) {
		if rq.p.Role.Can(auth.PermIdentitiesRead) {
			if page.Identities, err = c.cfg.Trust.List(ctx, 0); err != nil {
				c.renderError(w, r, rq, err)
				return
			}
		}
		if rq.p.Role.Can(auth.PermCAsRead) {
			if page.CAs, err = c.cfg.Trust.ListCAs(ctx); err != nil {
				c.renderError(w, r, rq, err)
				return
			}
		}
	}
	c.renderPage(w, r, rq, status, "connectors", "Connectors", page)
}

func (c *Console) connectorCreate(w http.ResponseWriter, r *http.Request, rq *request) {
	form := keep(r, "name", "description", "url", "identity", "server_name", "min_tls", "timeout")
	cas := r.PostForm["cas"]
	chosen := map[string]bool{}
	for _, ca := range cas {
		chosen[ca] = true
	}
	name := strings.TrimSpace(form["name"])
	sp := connector.Spec{Name: name, Description: form["description"], URL: strings.TrimSpace(form["url"]), Auth: connector.AuthMTLS,
		Identity: form["identity"], CAs: cas, SystemRoots: r.PostFormValue("system_roots") == "on", ServerName: strings.TrimSpace(form["server_name"]),
		MinTLS: form["min_tls"], Timeout: strings.TrimSpace(form["timeout"])}
	if _, err := c.cfg.Connectors.Create(r.Context(), rq.actor(), sp); err != nil {
		fe := c.formError(r, err)
		c.showConnectors(w, r, rq, fe.Status, fe, form, chosen)
		return
	}
	seeOther(w, r, rq, "/ui/connectors/"+name, "Connector "+name+" created. Press Test to check its handshake.")
}

type connectorPage struct {
	Connector connector.Connector
	Test      *connector.TestResult
}

func (c *Console) connectorDetail(w http.ResponseWriter, r *http.Request, rq *request) {
	c.showConnector(w, r, rq, nil)
}

func (c *Console) showConnector(w http.ResponseWriter, r *http.Request, rq *request, res *connector.TestResult) {
	cn, err := c.cfg.Connectors.Get(r.Context(), r.PathValue("name"))
	if err != nil {
		c.renderError(w, r, rq, err)
		return
	}
	c.renderPage(w, r, rq, http.StatusOK, "connector", "Connector "+cn.Name, connectorPage{Connector: cn, Test: res})
}

// connectorTest makes a fresh mutual handshake (and, with a path, a GET)
// and shows its evidence or diagnosis.
func (c *Console) connectorTest(w http.ResponseWriter, r *http.Request, rq *request) {
	res, err := c.cfg.Connectors.Test(r.Context(), rq.actor(), r.PathValue("name"), strings.TrimSpace(r.PostFormValue("path")))
	if err != nil {
		c.renderError(w, r, rq, err)
		return
	}
	c.showConnector(w, r, rq, &res)
}
