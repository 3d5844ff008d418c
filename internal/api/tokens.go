package api

import (
	"net/http"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/errs"
)

// CreatedToken is the answer to POST /api/v1/tokens: the token's public view
// plus its secret, shown this once.
type CreatedToken struct {
	auth.Token
	Secret string `json:"token"`
}

func (s *Server) tokenRoutes() []Route {
	return []Route{
		{Method: "POST", Path: "/api/v1/tokens", Perm: auth.PermTokensWrite, handler: s.createToken,
			Doc: Operation{Summary: "Create an API token (its secret is returned once)", Tag: "tokens",
				Request: schemaRef("CreateTokenRequest"), Response: schemaRef("CreatedToken"), Status: 201}},
		{Method: "GET", Path: "/api/v1/tokens", Perm: auth.PermTokensRead, handler: s.listTokens,
			Doc: Operation{Summary: "List API tokens (never their secrets)", Tag: "tokens", Response: listOf("tokens", "Token")}},
		{Method: "GET", Path: "/api/v1/tokens/{id}", Perm: auth.PermTokensRead, handler: s.getToken,
			Doc: Operation{Summary: "Show one API token", Tag: "tokens", Response: schemaRef("Token")}},
		{Method: "DELETE", Path: "/api/v1/tokens/{id}", Perm: auth.PermTokensWrite, handler: s.revokeToken,
			Doc: Operation{Summary: "Revoke an API token", Tag: "tokens", Response: schemaRef("Token")}},
	}
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) error {
	var req auth.CreateRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	tok, secret, err := s.cfg.Auth.Create(r.Context(), principal(r), req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, CreatedToken{Token: tok, Secret: secret})
	return nil
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) error {
	toks, err := s.cfg.Auth.List(r.Context())
	if err != nil {
		return err
	}
	if toks == nil {
		toks = []auth.Token{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"tokens": toks})
	return nil
}

func (s *Server) getToken(w http.ResponseWriter, r *http.Request) error {
	tok, err := s.cfg.Auth.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return orNotFound(err, "token "+r.PathValue("id"))
	}
	writeJSON(w, http.StatusOK, tok)
	return nil
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	tok, err := s.cfg.Auth.Revoke(r.Context(), principal(r), id)
	if err != nil {
		e := toAPIError(err)
		switch e.Status {
		case http.StatusNotFound:
			return notFound("token " + id)
		case http.StatusConflict:
			return &errs.Error{Kind: errs.Conflict, Code: "already_revoked", Message: "token " + id + " is already revoked", Hint: "nothing to do", Err: err}
		}
		return err
	}
	writeJSON(w, http.StatusOK, tok)
	return nil
}

// orNotFound names the missing resource in a 404.
func orNotFound(err error, what string) error {
	if toAPIError(err).Status == http.StatusNotFound {
		return notFound(what)
	}
	return err
}

// actor is the audit actor for the request's principal.
func actor(r *http.Request) audit.Actor { return auth.ActorOf(principal(r)) }
