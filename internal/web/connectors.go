package web

import (
	"net/http"
	"slices"
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
		{pattern: "POST /ui/connectors/{name}/update", perm: auth.PermConnectorsWrite, handle: c.connectorUpdate},
		{pattern: "POST /ui/connectors/{name}/remove", perm: auth.PermConnectorsWrite, handle: c.connectorRemove},
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
	form := keep(r, "name", "description", "url", "identity", "server_name", "min_tls", "timeout", "auth_extra", "username", "api_key_header")
	cas := r.PostForm["cas"]
	chosen := map[string]bool{}
	for _, ca := range cas {
		chosen[ca] = true
	}
	name := strings.TrimSpace(form["name"])
	sp := connector.Spec{Name: name, Description: form["description"], URL: strings.TrimSpace(form["url"]), Auth: connector.AuthMTLS,
		Identity: form["identity"], CAs: cas, SystemRoots: r.PostFormValue("system_roots") == "on", ServerName: strings.TrimSpace(form["server_name"]),
		MinTLS: form["min_tls"], Timeout: strings.TrimSpace(form["timeout"])}
	// A header-based auth type combines with the identity (or replaces it,
	// for a server that takes no client certificate). Secrets typed here are
	// sealed by the service and never shown again.
	switch extra := form["auth_extra"]; extra {
	case "", "none":
		if sp.Identity == "" {
			sp.Auth = connector.AuthNone
		}
	case connector.AuthBasic, connector.AuthBearer, connector.AuthAPIKey:
		sp.Auth = extra
		sp.AuthSettings = connector.AuthSettings{Username: strings.TrimSpace(form["username"]), HeaderName: strings.TrimSpace(form["api_key_header"])}
		sp.Secrets = connector.Secrets{Password: r.PostFormValue("password"), Token: r.PostFormValue("token"), APIKey: r.PostFormValue("api_key")}
	default:
		sp.Auth = extra // refused by the service, naming the field
	}
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
	// Edit fills the edit and remove forms; nil for a role without
	// connectors:write.
	Edit *connectorEdit
}

// connectorEdit is the edit form: the connector's settings as stored, or
// as typed when a change was refused, and the choices it offers.
type connectorEdit struct {
	Spec connector.Spec
	// Identities and CAs are the trust store's names, and any the
	// connector names that the role may not list.
	Identities []string
	CAs        []string
	Chosen     map[string]bool
	Err        *formError
	// RemoveErr is a refused removal.
	RemoveErr *formError
}

func (c *Console) connectorDetail(w http.ResponseWriter, r *http.Request, rq *request) {
	c.showConnector(w, r, rq, http.StatusOK, nil, nil)
}

// showConnector shows the connector with a test result, or with a refused
// edit or removal (edit nil starts the edit form from the stored settings).
func (c *Console) showConnector(w http.ResponseWriter, r *http.Request, rq *request, status int, res *connector.TestResult, edit *connectorEdit) {
	ctx := r.Context()
	name := r.PathValue("name")
	cn, err := c.cfg.Connectors.Get(ctx, name)
	if err != nil {
		c.renderError(w, r, rq, err)
		return
	}
	page := connectorPage{Connector: cn, Test: res}
	if rq.p.Role.Can(auth.PermConnectorsWrite) {
		if edit == nil {
			sp, err := c.cfg.Connectors.Spec(ctx, name)
			if err != nil {
				c.renderError(w, r, rq, err)
				return
			}
			edit = &connectorEdit{Spec: sp}
		}
		if err := c.editChoices(r, rq, edit); err != nil {
			c.renderError(w, r, rq, err)
			return
		}
		page.Edit = edit
	}
	c.renderPage(w, r, rq, status, "connector", "Connector "+cn.Name, page)
}

// editChoices fills the edit form's identities and CAs, and ticks the CAs
// its spec names.
func (c *Console) editChoices(r *http.Request, rq *request, edit *connectorEdit) error {
	ctx := r.Context()
	if rq.p.Role.Can(auth.PermIdentitiesRead) {
		ids, err := c.cfg.Trust.List(ctx, 0)
		if err != nil {
			return err
		}
		for _, id := range ids {
			edit.Identities = append(edit.Identities, id.Name)
		}
	}
	if edit.Spec.Identity != "" && !slices.Contains(edit.Identities, edit.Spec.Identity) {
		edit.Identities = append(edit.Identities, edit.Spec.Identity)
	}
	if rq.p.Role.Can(auth.PermCAsRead) {
		cas, err := c.cfg.Trust.ListCAs(ctx)
		if err != nil {
			return err
		}
		for _, ca := range cas {
			edit.CAs = append(edit.CAs, ca.Name)
		}
	}
	edit.Chosen = map[string]bool{}
	for _, ca := range edit.Spec.CAs {
		edit.Chosen[ca] = true
		if !slices.Contains(edit.CAs, ca) {
			edit.CAs = append(edit.CAs, ca)
		}
	}
	return nil
}

// connectorTest makes a fresh mutual handshake (and, with a path, a GET)
// and shows its evidence or diagnosis.
func (c *Console) connectorTest(w http.ResponseWriter, r *http.Request, rq *request) {
	res, err := c.cfg.Connectors.Test(r.Context(), rq.actor(), r.PathValue("name"), strings.TrimSpace(r.PostFormValue("path")))
	if err != nil {
		c.renderError(w, r, rq, err)
		return
	}
	c.showConnector(w, r, rq, http.StatusOK, &res, nil)
}

// connectorUpdate changes the connector's URL and TLS settings, starting
// from its stored spec so that its auth type, auth settings, headers and
// pins stay as they are; its secrets are kept (the form carries none).
func (c *Console) connectorUpdate(w http.ResponseWriter, r *http.Request, rq *request) {
	name := r.PathValue("name")
	sp, err := c.cfg.Connectors.Spec(r.Context(), name)
	if err != nil {
		c.renderError(w, r, rq, err)
		return
	}
	sp.Description = r.PostFormValue("description")
	sp.URL = strings.TrimSpace(r.PostFormValue("url"))
	sp.Identity = r.PostFormValue("identity")
	sp.CAs = r.PostForm["cas"]
	sp.SystemRoots = r.PostFormValue("system_roots") == "on"
	sp.ServerName = strings.TrimSpace(r.PostFormValue("server_name"))
	sp.MinTLS = r.PostFormValue("min_tls")
	sp.Timeout = strings.TrimSpace(r.PostFormValue("timeout"))
	sp.AllowNoClientAuthRequest = r.PostFormValue("allow_no_client_auth_request") == "on"
	if _, err := c.cfg.Connectors.Update(r.Context(), rq.actor(), sp); err != nil {
		fe := c.formError(r, err)
		c.showConnector(w, r, rq, fe.Status, nil, &connectorEdit{Spec: sp, Err: fe})
		return
	}
	seeOther(w, r, rq, "/ui/connectors/"+name, "Connector "+name+" updated. Press Test to check its handshake.")
}

// connectorRemove deletes the connector once the form's confirmation box
// is ticked.
func (c *Console) connectorRemove(w http.ResponseWriter, r *http.Request, rq *request) {
	name := r.PathValue("name")
	if r.PostFormValue("confirm") != "on" {
		sp, err := c.cfg.Connectors.Spec(r.Context(), name)
		if err != nil {
			c.renderError(w, r, rq, err)
			return
		}
		fe := &formError{Status: http.StatusBadRequest, Field: "confirm", Message: "confirm: tick the box to confirm the removal", Hint: "nothing was removed"}
		c.showConnector(w, r, rq, fe.Status, nil, &connectorEdit{Spec: sp, RemoveErr: fe})
		return
	}
	if err := c.cfg.Connectors.Remove(r.Context(), rq.actor(), name); err != nil {
		c.renderError(w, r, rq, err)
		return
	}
	seeOther(w, r, rq, "/ui/connectors", "Connector "+name+" removed.")
}
