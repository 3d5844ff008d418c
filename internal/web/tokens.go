package web

import (
	"net/http"
	"strings"

	"github.com/trustflow/trustflow/internal/auth"
)

func (c *Console) tokenRoutes() []route {
	return []route{
		{pattern: "GET /ui/tokens", perm: auth.PermTokensWrite, handle: c.tokenList},
		{pattern: "POST /ui/tokens", perm: auth.PermTokensWrite, handle: c.tokenCreate},
		{pattern: "POST /ui/tokens/{id}/revoke", perm: auth.PermTokensWrite, handle: c.tokenRevoke},
	}
}

type tokensPage struct {
	Tokens []auth.Token
	Roles  []auth.Role
	// Created and Secret show a new token once; the secret is never kept.
	Created *auth.Token
	Secret  string
	Err     *formError
	Form    formValues
}

func (c *Console) tokenList(w http.ResponseWriter, r *http.Request, rq *request) {
	c.showTokens(w, r, rq, http.StatusOK, tokensPage{Form: formValues{}})
}

func (c *Console) showTokens(w http.ResponseWriter, r *http.Request, rq *request, status int, page tokensPage) {
	toks, err := c.cfg.Auth.List(r.Context())
	if err != nil {
		c.renderError(w, r, rq, err)
		return
	}
	page.Tokens, page.Roles = toks, auth.Roles
	c.renderPage(w, r, rq, status, "tokens", "Tokens", page)
}

func (c *Console) tokenCreate(w http.ResponseWriter, r *http.Request, rq *request) {
	form := keep(r, "name", "role", "expires_in")
	tok, secret, err := c.cfg.Auth.Create(r.Context(), rq.p, auth.CreateRequest{Name: form["name"], Role: form["role"], ExpiresIn: strings.TrimSpace(form["expires_in"])})
	if err != nil {
		fe := c.formError(r, err)
		c.showTokens(w, r, rq, fe.Status, tokensPage{Err: fe, Form: form})
		return
	}
	c.showTokens(w, r, rq, http.StatusCreated, tokensPage{Created: &tok, Secret: secret, Form: formValues{}})
}

func (c *Console) tokenRevoke(w http.ResponseWriter, r *http.Request, rq *request) {
	id := r.PathValue("id")
	if _, err := c.cfg.Auth.Revoke(r.Context(), rq.p, id); err != nil {
		c.renderError(w, r, rq, err)
		return
	}
	seeOther(w, r, rq, "/ui/tokens", "Token "+id+" revoked.")
}
