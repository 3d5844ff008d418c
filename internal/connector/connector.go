// Package connector owns trustflow's outbound API connectors: their
// settings and sealed secrets, one pooled HTTP client per connector whose
// TLS configuration comes live from the trust store (the active identity on
// every handshake, the connector's CAs, hostname, SPKI pins and the
// "server must ask for a client certificate" policy checked in
// VerifyConnection and after the handshake), handshake evidence for every
// request, diagnoses of every failure, and audited calls.
package connector

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/policy"
)

// Auth types.
const (
	AuthNone         = "none"
	AuthBasic        = "basic"
	AuthBearer       = "bearer"
	AuthAPIKey       = "api-key"
	AuthOAuth2       = "oauth2-client-credentials"
	AuthMTLS         = "mtls"
	DefaultTimeout   = 30 * time.Second
	DefaultMinTLS    = "1.2"
	maxHeaders       = 64
	maxPins          = 16
	maxCAsPerConnect = 16
)

// AuthTypes lists the accepted auth types.
var AuthTypes = []string{AuthNone, AuthBasic, AuthBearer, AuthAPIKey, AuthOAuth2, AuthMTLS}

// Connector is a connector's public view: never a secret.
type Connector struct {
	Name                     string            `json:"name"`
	Description              string            `json:"description"`
	URL                      string            `json:"url"`
	Auth                     string            `json:"auth"`
	Identity                 string            `json:"identity,omitempty"`
	CAs                      []string          `json:"cas"`
	SystemRoots              bool              `json:"system_roots"`
	ServerName               string            `json:"server_name,omitempty"`
	Pins                     []string          `json:"pins,omitempty"`
	MinTLS                   string            `json:"min_tls"`
	Timeout                  string            `json:"timeout"`
	Headers                  map[string]string `json:"headers,omitempty"`
	AllowPlaintext           bool              `json:"allow_plaintext"`
	AllowNoClientAuthRequest bool              `json:"allow_no_client_auth_request"`
	// AuthSettings holds the auth type's non-secret settings.
	AuthSettings AuthSettings `json:"auth_settings"`
	// HasSecret says a secret is stored (it is never shown).
	HasSecret  bool       `json:"has_secret"`
	CreatedAt  time.Time  `json:"created_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
	LastTestAt *time.Time `json:"last_test_at,omitempty"`
	LastTestOK *bool      `json:"last_test_ok,omitempty"`
	LastError  string     `json:"last_error,omitempty"`
}

// AuthSettings are the non-secret parts of an auth type's configuration.
type AuthSettings struct {
	Username     string   `json:"username,omitempty"`       // basic
	HeaderName   string   `json:"header_name,omitempty"`    // api-key
	TokenURL     string   `json:"token_url,omitempty"`      // oauth2
	ClientID     string   `json:"client_id,omitempty"`      // oauth2
	Scopes       []string `json:"scopes,omitempty"`         // oauth2
	TokenAuthTLS bool     `json:"token_auth_tls,omitempty"` // oauth2: the token request authenticates with the identity (RFC 8705)
	// TokenAuthMethod is how the oauth2 client secret is sent, once per
	// token request: client_secret_basic (the default) or client_secret_post.
	TokenAuthMethod string `json:"token_auth_method,omitempty"`
}

// OAuth2 token request authentication methods (RFC 8414 names).
const (
	TokenAuthBasic = "client_secret_basic"
	TokenAuthPost  = "client_secret_post"
)

// Secrets are an auth type's secrets; they are sealed at rest and never
// returned.
type Secrets struct {
	Password     string `json:"password,omitempty"`      // basic
	Token        string `json:"token,omitempty"`         // bearer
	APIKey       string `json:"api_key,omitempty"`       // api-key
	ClientSecret string `json:"client_secret,omitempty"` // oauth2
}

func (s Secrets) empty() bool { return s == Secrets{} }

// values lists every secret value, for redaction.
func (s Secrets) values() []string {
	var out []string
	for _, v := range []string{s.Password, s.Token, s.APIKey, s.ClientSecret} {
		if v != "" {
			out = append(out, v)
		}
	}
	return out
}

// Spec is what a user asks for when creating or updating a connector.
type Spec struct {
	Name                     string            `json:"name"`
	Description              string            `json:"description,omitempty"`
	URL                      string            `json:"url"`
	Auth                     string            `json:"auth"`
	Identity                 string            `json:"identity,omitempty"`
	CAs                      []string          `json:"cas,omitempty"`
	SystemRoots              bool              `json:"system_roots,omitempty"`
	ServerName               string            `json:"server_name,omitempty"`
	Pins                     []string          `json:"pins,omitempty"`
	MinTLS                   string            `json:"min_tls,omitempty"`
	Timeout                  string            `json:"timeout,omitempty"`
	Headers                  map[string]string `json:"headers,omitempty"`
	AllowPlaintext           bool              `json:"allow_plaintext,omitempty"`
	AllowNoClientAuthRequest bool              `json:"allow_no_client_auth_request,omitempty"`
	AuthSettings             AuthSettings      `json:"auth_settings,omitempty"`
	Secrets                  Secrets           `json:"secrets,omitempty"`
	// KeepSecrets lets an update that changes where the stored secrets go
	// (see destination) keep them without sending them again: admin only,
	// audited with the destination before and after.
	KeepSecrets bool `json:"keep_secrets,omitempty"`

	// secretStored lets an update without secrets keep the stored ones.
	secretStored bool
}

// invalid is a bad value in field of a spec or a call, with the fix.
func invalid(field, msg, hint string) error {
	return &errs.Error{Kind: errs.Invalid, Code: "invalid_input", Field: field, Message: msg, Hint: hint, Op: "connector"}
}

var (
	nameRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	headerRE = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
)

// MaxURLLength bounds a connector's URL and token URL.
const MaxURLLength = 2048

// checkURL checks an absolute http(s) URL a connector sends to: a host that
// is a valid DNS name or an IP literal, a port from 1 to 65535, no spaces,
// at most MaxURLLength characters. Each problem names field and the fix.
func checkURL(field, raw string) (*url.URL, error) {
	const form = "use https://host:port[/base-path]"
	if len(raw) > MaxURLLength {
		return nil, invalid(field, fmt.Sprintf("is %d characters; the limit max_url_length is %d", len(raw), MaxURLLength), "give the service's base URL; per-call paths go on each call")
	}
	if strings.ContainsAny(raw, " \t\r\n") {
		return nil, invalid(field, fmt.Sprintf("%q holds whitespace", raw), "remove the spaces; encode a space in a path as %20")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Opaque != "" {
		return nil, invalid(field, fmt.Sprintf("%q is not an absolute http(s) URL", raw), form)
	}
	host := u.Hostname()
	if host == "" {
		return nil, invalid(field, fmt.Sprintf("%q has no host", raw), form+"; a URL without a host would reach this machine")
	}
	if p := u.Port(); p != "" || strings.HasSuffix(u.Host, ":") {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return nil, invalid(field, fmt.Sprintf("port %q is not between 1 and 65535", p), "give the service's TCP port, or none for the scheme's default")
		}
	}
	if _, err := netip.ParseAddr(host); err != nil {
		if err := policy.CheckHostName(host); err != nil {
			return nil, invalid(field, fmt.Sprintf("host %q: %v", host, err), "give a DNS name (labels of letters, digits and '-', at most 63 each) or an IP address such as 10.20.0.5 or [fd00::5]")
		}
	}
	return u, nil
}

// reservedHeaders are set by trustflow itself.
var reservedHeaders = []string{"Host", "Content-Length", "Transfer-Encoding", "Connection", "Idempotency-Key"}

// normalize validates a spec, fills defaults, and returns the parsed base
// URL and timeout.
func (sp *Spec) normalize() (*url.URL, time.Duration, error) {
	if !nameRE.MatchString(sp.Name) {
		return nil, 0, invalid("name", fmt.Sprintf("%q is not a valid name", sp.Name), "use 1-63 lowercase letters, digits, '.', '-' or '_', e.g. hr-directory")
	}
	u, err := checkURL("url", sp.URL)
	if err != nil {
		return nil, 0, err
	}
	if u.User != nil {
		return nil, 0, invalid("url", "must not carry credentials", "remove user:password@ from the URL and use --auth basic with a password file")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, 0, invalid("url", "must not have a query or fragment", "put query parameters on each call instead")
	}
	if u.Scheme == "http" && !sp.AllowPlaintext {
		return nil, 0, invalid("url", "plain http:// sends data and credentials unencrypted", "use https://, or pass --allow-plaintext if this endpoint really has no TLS (the exception is audited)")
	}
	if sp.Auth == "" {
		sp.Auth = AuthNone
		if sp.Identity != "" {
			sp.Auth = AuthMTLS
		}
	}
	if !slices.Contains(AuthTypes, sp.Auth) {
		return nil, 0, invalid("auth", fmt.Sprintf("unknown auth type %q", sp.Auth), "use one of "+strings.Join(AuthTypes, ", "))
	}
	if sp.Auth == AuthMTLS && sp.Identity == "" {
		return nil, 0, invalid("identity", "auth type mtls needs an identity to present", "pass --identity NAME (see `trustflow identity list`)")
	}
	if sp.Identity != "" && u.Scheme == "http" {
		return nil, 0, invalid("identity", "a client certificate needs https://", "use an https:// URL")
	}
	if sp.Identity != "" && !nameRE.MatchString(sp.Identity) {
		return nil, 0, invalid("identity", fmt.Sprintf("%q is not a valid identity name", sp.Identity), "see `trustflow identity list`")
	}
	if u.Scheme == "https" && len(sp.CAs) == 0 && !sp.SystemRoots {
		return nil, 0, invalid("cas", "an https connector must trust at least one CA", "pass --ca NAME (see `trustflow ca list`), or --system-roots for a public endpoint")
	}
	if len(sp.CAs) > maxCAsPerConnect {
		return nil, 0, invalid("cas", fmt.Sprintf("at most %d CAs", maxCAsPerConnect), "combine them into one bundle with `trustflow ca add`")
	}
	seen := map[string]bool{}
	for _, ca := range sp.CAs {
		if !nameRE.MatchString(ca) || seen[ca] {
			return nil, 0, invalid("cas", fmt.Sprintf("%q is not a valid CA name or is listed twice", ca), "see `trustflow ca list`")
		}
		seen[ca] = true
	}
	switch sp.MinTLS {
	case "":
		sp.MinTLS = DefaultMinTLS
	case "1.2", "1.3":
	default:
		return nil, 0, invalid("min_tls", fmt.Sprintf("%q is not allowed", sp.MinTLS), "use 1.2 or 1.3 (TLS 1.0 and 1.1 are never allowed)")
	}
	timeout := DefaultTimeout
	if sp.Timeout != "" {
		timeout, err = time.ParseDuration(sp.Timeout)
		if err != nil || timeout <= 0 || timeout > 10*time.Minute {
			return nil, 0, invalid("timeout", fmt.Sprintf("%q is not a duration between 1ms and 10m", sp.Timeout), "use e.g. 30s")
		}
	}
	sp.Timeout = timeout.String()
	if len(sp.Pins) > maxPins {
		return nil, 0, invalid("pins", fmt.Sprintf("at most %d pins", maxPins), "pin the issuing CA instead of many leaves")
	}
	for _, p := range sp.Pins {
		raw, ok := strings.CutPrefix(p, "sha256/")
		b, err := base64.StdEncoding.DecodeString(raw)
		if !ok || err != nil || len(b) != 32 {
			return nil, 0, invalid("pins", fmt.Sprintf("%q is not a pin", p), "use sha256/BASE64 of the SubjectPublicKeyInfo, e.g. from `openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64`")
		}
	}
	if len(sp.Headers) > maxHeaders {
		return nil, 0, invalid("headers", fmt.Sprintf("at most %d headers", maxHeaders), "")
	}
	for k, v := range sp.Headers {
		if !headerRE.MatchString(k) {
			return nil, 0, invalid("headers", fmt.Sprintf("%q is not a valid header name", k), "use letters, digits and '-'")
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			return nil, 0, invalid("headers", fmt.Sprintf("header %q has a line break in its value", k), "remove the line break")
		}
		for _, r := range reservedHeaders {
			if strings.EqualFold(k, r) {
				return nil, 0, invalid("headers", fmt.Sprintf("header %q is set by trustflow", k), "remove it")
			}
		}
		for _, cred := range []string{"Authorization", "Proxy-Authorization", "Cookie"} {
			if strings.EqualFold(k, cred) {
				return nil, 0, invalid("headers", k+" in plain headers would be stored unsealed", "use --auth bearer with --token-file, --auth basic, or --auth api-key with --api-key-file, whose secrets are sealed")
			}
		}
	}
	if err := sp.checkAuth(); err != nil {
		return nil, 0, err
	}
	return u, timeout, nil
}

func (sp *Spec) checkAuth() error {
	a, s := sp.AuthSettings, sp.Secrets
	need := func(field, val, hint string) error {
		if val == "" && !sp.secretStored {
			return invalid(field, "is required for auth type "+sp.Auth, hint)
		}
		return nil
	}
	switch sp.Auth {
	case AuthBasic:
		if err := need("auth_settings.username", a.Username, "pass --username"); err != nil {
			return err
		}
		if err := need("secrets.password", s.Password, "pass --password-file FILE"); err != nil {
			return err
		}
	case AuthBearer:
		if err := need("secrets.token", s.Token, "pass --token-file FILE"); err != nil {
			return err
		}
	case AuthAPIKey:
		if !headerRE.MatchString(a.HeaderName) {
			return invalid("auth_settings.header_name", "is required for auth type api-key and must be a header name", "pass --api-key-header X-API-Key")
		}
		if err := need("secrets.api_key", s.APIKey, "pass --api-key-file FILE"); err != nil {
			return err
		}
	case AuthOAuth2:
		if a.TokenURL == "" {
			return invalid("auth_settings.token_url", "is required for auth type oauth2-client-credentials and must be an https:// URL", "pass --token-url https://idp.example/oauth2/token")
		}
		tu, err := checkURL("auth_settings.token_url", a.TokenURL)
		if err != nil {
			return err
		}
		if tu.Scheme != "https" {
			return invalid("auth_settings.token_url", "must be an https:// URL: the token request carries the client secret", "pass --token-url https://idp.example/oauth2/token")
		}
		if err := need("auth_settings.client_id", a.ClientID, "pass --client-id"); err != nil {
			return err
		}
		switch a.TokenAuthMethod {
		case "":
			if !a.TokenAuthTLS {
				sp.AuthSettings.TokenAuthMethod = TokenAuthBasic
			}
		case TokenAuthBasic, TokenAuthPost:
			if a.TokenAuthTLS {
				return invalid("auth_settings.token_auth_method", "is for a client secret; with token_auth_tls the token request sends none", "leave token_auth_method out")
			}
		default:
			return invalid("auth_settings.token_auth_method", fmt.Sprintf("%q is not a token endpoint authentication method", a.TokenAuthMethod), "use client_secret_basic or client_secret_post")
		}
		if a.TokenAuthTLS && sp.Identity == "" {
			return invalid("auth_settings.token_auth_tls", "mTLS client authentication needs an identity", "pass --identity NAME")
		}
		if !a.TokenAuthTLS && s.ClientSecret == "" && !sp.secretStored {
			return invalid("secrets.client_secret", "is required unless the token request authenticates with the identity (RFC 8705)", "pass --client-secret-file FILE, or --identity NAME with --token-auth-tls")
		}
	}
	return nil
}

// encodeJSON marshals a value that cannot fail to marshal.
func encodeJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("connector: encode %T: %v", v, err)) // only plain structs, maps and slices reach here
	}
	return string(b)
}

// applyAuth sets the auth headers of a request (not mTLS, which is in the
// handshake, nor OAuth2, which the transport adds).
func applyAuth(req *http.Request, authType string, a AuthSettings, s Secrets) {
	switch authType {
	case AuthBasic:
		req.SetBasicAuth(a.Username, s.Password)
	case AuthBearer:
		req.Header.Set("Authorization", "Bearer "+s.Token)
	case AuthAPIKey:
		req.Header.Set(a.HeaderName, s.APIKey)
	}
}
