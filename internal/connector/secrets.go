package connector

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// redacted replaces a connector secret in what an upstream sends back.
const redacted = "[redacted]"

// secretForms lists the forms in which a secret can come back from an
// upstream that echoes the request: as sent, URL-encoded (query and path),
// JSON-escaped, and base64 (standard and URL, with and without padding) of
// itself and of the basic-auth pair. Forms shorter than 6 characters are
// left out: replacing them would mangle unrelated text, and no connector
// secret that short is accepted by a real server.
func secretForms(secrets []string, basicUser string) []string {
	var out []string
	add := func(s string) {
		if len(s) >= 6 {
			out = append(out, s)
		}
	}
	b64 := func(s string) {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
			add(enc.EncodeToString([]byte(s)))
		}
	}
	for _, s := range secrets {
		add(s)
		add(url.QueryEscape(s))
		add(url.PathEscape(s))
		if j, err := json.Marshal(s); err == nil {
			add(string(j[1 : len(j)-1]))
		}
		b64(s)
		if basicUser != "" {
			b64(basicUser + ":" + s)
		}
	}
	// Longest first, so that a form containing another is replaced whole.
	slices.SortStableFunc(out, func(a, b string) int { return len(b) - len(a) })
	return slices.Compact(out)
}

// redactResponse removes the connector's secrets (and the OAuth2 access
// token it sent) from an upstream's answer, headers and body, so that no
// step output, evidence or audit record can hold them.
func redactResponse(forms []string, h http.Header, body []byte) []byte {
	if len(forms) == 0 {
		return body
	}
	for k, vs := range h {
		for i, v := range vs {
			for _, f := range forms {
				v = strings.ReplaceAll(v, f, redacted)
			}
			h[k][i] = v
		}
	}
	for _, f := range forms {
		if bytes.Contains(body, []byte(f)) {
			body = bytes.ReplaceAll(body, []byte(f), []byte(redacted))
		}
	}
	return body
}

// tokenForms are the forms to redact while an OAuth2 access token is in
// use: the token's, then the connector's secrets'.
type tokenForms struct {
	token string
	forms []string
}

// formsWithToken returns the forms to redact from an answer to a request
// that carried the access token, computed once per token.
func (c *client) formsWithToken(token string) []string {
	if tf := c.tokenForms.Load(); tf != nil && tf.token == token {
		return tf.forms
	}
	forms := append(secretForms([]string{token}, ""), c.secretForms...)
	c.tokenForms.Store(&tokenForms{token: token, forms: forms})
	return forms
}
