package connector

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// errTokenRedirect refuses a token endpoint's redirect.
var errTokenRedirect = errors.New("the token endpoint answered with a redirect, which trustflow never follows (it would resend the client secret)")

// oauthSource fetches and caches OAuth2 client-credentials tokens. With
// TokenAuthTLS the token request authenticates with the connector's
// identity over mutual TLS (RFC 8705 tls_client_auth) and sends no secret;
// the resulting token is bound to that certificate.
type oauthSource struct {
	c    *client
	mu   sync.Mutex
	src  oauth2.TokenSource
	conf *clientcredentials.Config
	// last is the last token fetched (or handed on by the client this one
	// replaces), used until it expires.
	last *oauth2.Token
}

// newOAuthSource returns c's token source; last, when not nil, is a token
// the client c replaces fetched for the same state of the connector.
func newOAuthSource(c *client, last *oauth2.Token) *oauthSource {
	conf := &clientcredentials.Config{
		ClientID:     c.settings.ClientID,
		ClientSecret: c.secrets.ClientSecret,
		TokenURL:     c.settings.TokenURL,
		Scopes:       c.settings.Scopes,
	}
	// The secret goes once per token request, the way the connector says:
	// never AuthStyleAutoDetect, which sends it again in the other place
	// when the first attempt fails.
	switch {
	case c.settings.TokenAuthTLS:
		conf.ClientSecret = ""
		conf.AuthStyle = oauth2.AuthStyleInParams
	case c.settings.TokenAuthMethod == TokenAuthPost:
		conf.AuthStyle = oauth2.AuthStyleInParams
	default:
		conf.AuthStyle = oauth2.AuthStyleInHeader
	}
	return &oauthSource{c: c, conf: conf, last: last}
}

// lastToken is the last token fetched, or nil.
func (o *oauthSource) lastToken() *oauth2.Token {
	if o == nil {
		return nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.last
}

// token returns a valid access token, fetching one when needed. The token
// request goes through the connector's own transport, so it is verified
// against the connector's CAs and presents its identity.
func (o *oauthSource) token(ctx context.Context) (*oauth2.Token, error) {
	o.mu.Lock()
	if o.src == nil {
		// A redirect is never followed: a 307 would resend the secret to
		// wherever the token endpoint points.
		hc := &http.Client{Transport: o.c.transport, Timeout: o.c.timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return errTokenRedirect }}
		tctx := context.WithValue(context.Background(), oauth2.HTTPClient, hc)
		o.src = oauth2.ReuseTokenSource(o.last, o.conf.TokenSource(tctx))
	}
	src := o.src
	o.mu.Unlock()
	type result struct {
		tok *oauth2.Token
		err error
	}
	ch := make(chan result, 1)
	go func() {
		tok, err := src.Token()
		ch <- result{tok, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			// The token endpoint's answer body is not quoted: it may echo
			// credentials. Its OAuth2 error code and description are.
			why := "the request failed"
			var re *oauth2.RetrieveError
			if errors.As(r.err, &re) {
				why = fmt.Sprintf("it answered %d", re.Response.StatusCode)
				if re.ErrorCode != "" {
					why += " " + re.ErrorCode
				}
				if re.ErrorDescription != "" {
					why += ": " + re.ErrorDescription
				}
			} else {
				var ce *CallError
				switch {
				case errors.As(r.err, &ce):
					why = ce.Message
				case errors.Is(r.err, errTokenRedirect):
					why = errTokenRedirect.Error()
				}
			}
			return nil, &CallError{Err: r.err, Retryable: true, Diagnosis: Diagnosis{Code: "oauth2_token",
				Message: fmt.Sprintf("connector %s could not get an access token from %s: %s", o.c.conn.Name, o.conf.TokenURL, why),
				Hint:    "check the token URL, client id and secret (or the identity, for mTLS client authentication)"}}
		}
		o.mu.Lock()
		o.last = r.tok
		o.mu.Unlock()
		return r.tok, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
