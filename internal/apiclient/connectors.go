package apiclient

import (
	"context"
	"encoding/json"
	"net/url"
	"time"
)

// ConnectorAuthSettings are an auth type's non-secret settings.
type ConnectorAuthSettings struct {
	Username     string   `json:"username,omitempty"`
	HeaderName   string   `json:"header_name,omitempty"`
	TokenURL     string   `json:"token_url,omitempty"`
	ClientID     string   `json:"client_id,omitempty"`
	Scopes       []string `json:"scopes,omitempty"`
	TokenAuthTLS bool     `json:"token_auth_tls,omitempty"`
	// TokenAuthMethod is how the client secret is sent: client_secret_basic
	// (the default) or client_secret_post.
	TokenAuthMethod string `json:"token_auth_method,omitempty"`
}

// ConnectorSecrets are sent on create/update and never returned.
type ConnectorSecrets struct {
	Password     string `json:"password,omitempty"`
	Token        string `json:"token,omitempty"`
	APIKey       string `json:"api_key,omitempty"`
	ClientSecret string `json:"client_secret,omitempty"`
}

// ConnectorSpec creates or replaces a connector.
type ConnectorSpec struct {
	Name                     string                `json:"name"`
	Description              string                `json:"description,omitempty"`
	URL                      string                `json:"url"`
	Auth                     string                `json:"auth"`
	Identity                 string                `json:"identity,omitempty"`
	CAs                      []string              `json:"cas,omitempty"`
	SystemRoots              bool                  `json:"system_roots,omitempty"`
	ServerName               string                `json:"server_name,omitempty"`
	Pins                     []string              `json:"pins,omitempty"`
	MinTLS                   string                `json:"min_tls,omitempty"`
	Timeout                  string                `json:"timeout,omitempty"`
	Headers                  map[string]string     `json:"headers,omitempty"`
	AllowPlaintext           bool                  `json:"allow_plaintext,omitempty"`
	AllowNoClientAuthRequest bool                  `json:"allow_no_client_auth_request,omitempty"`
	AuthSettings             ConnectorAuthSettings `json:"auth_settings"`
	Secrets                  ConnectorSecrets      `json:"secrets"`
	// KeepSecrets keeps the stored secrets through a change of where they
	// are sent (admin only, audited).
	KeepSecrets bool `json:"keep_secrets,omitempty"`
}

// Connector is a connector's public view.
type Connector struct {
	Name                     string                `json:"name"`
	Description              string                `json:"description"`
	URL                      string                `json:"url"`
	Auth                     string                `json:"auth"`
	Identity                 string                `json:"identity,omitempty"`
	CAs                      []string              `json:"cas"`
	SystemRoots              bool                  `json:"system_roots"`
	ServerName               string                `json:"server_name,omitempty"`
	Pins                     []string              `json:"pins,omitempty"`
	MinTLS                   string                `json:"min_tls"`
	Timeout                  string                `json:"timeout"`
	Headers                  map[string]string     `json:"headers,omitempty"`
	AllowPlaintext           bool                  `json:"allow_plaintext"`
	AllowNoClientAuthRequest bool                  `json:"allow_no_client_auth_request"`
	AuthSettings             ConnectorAuthSettings `json:"auth_settings"`
	HasSecret                bool                  `json:"has_secret"`
	CreatedAt                time.Time             `json:"created_at"`
	UpdatedAt                time.Time             `json:"updated_at"`
	LastTestAt               *time.Time            `json:"last_test_at,omitempty"`
	LastTestOK               *bool                 `json:"last_test_ok,omitempty"`
	LastError                string                `json:"last_error,omitempty"`
}

// Spec returns the connector's settings as a spec for a partial update.
func (c Connector) Spec() ConnectorSpec {
	return ConnectorSpec{Name: c.Name, Description: c.Description, URL: c.URL, Auth: c.Auth, Identity: c.Identity, CAs: c.CAs,
		SystemRoots: c.SystemRoots, ServerName: c.ServerName, Pins: c.Pins, MinTLS: c.MinTLS, Timeout: c.Timeout, Headers: c.Headers,
		AllowPlaintext: c.AllowPlaintext, AllowNoClientAuthRequest: c.AllowNoClientAuthRequest, AuthSettings: c.AuthSettings}
}

// ClientCertificate names the identity version a handshake presented.
type ClientCertificate struct {
	Identity          string `json:"identity"`
	Version           int    `json:"version"`
	Serial            string `json:"serial"`
	FingerprintSHA256 string `json:"fingerprint_sha256"`
}

// ChainCert is one certificate of a server's chain.
type ChainCert struct {
	Subject           string    `json:"subject"`
	Issuer            string    `json:"issuer"`
	FingerprintSHA256 string    `json:"fingerprint_sha256"`
	NotAfter          time.Time `json:"not_after"`
}

// Evidence is what a handshake proved.
type Evidence struct {
	TLSVersion                string             `json:"tls_version"`
	CipherSuite               string             `json:"cipher_suite"`
	ServerName                string             `json:"server_name"`
	ServerRequestedClientCert bool               `json:"server_requested_client_cert"`
	AcceptableCAs             []string           `json:"acceptable_cas"`
	ClientCertificate         *ClientCertificate `json:"client_certificate"`
	ServerChain               []ChainCert        `json:"server_chain"`
	Resumed                   bool               `json:"resumed"`
	ALPN                      string             `json:"alpn"`
	HandshakeAt               time.Time          `json:"handshake_at"`
}

// Diagnosis says what went wrong and what to do.
type Diagnosis struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"`
}

// ConnectorTest is the outcome of a connector test.
type ConnectorTest struct {
	OK       bool       `json:"ok"`
	Error    *Diagnosis `json:"error,omitempty"`
	Evidence *Evidence  `json:"evidence,omitempty"`
	Status   int        `json:"status,omitempty"`
}

// CallRequest is one ad-hoc request through a connector.
type CallRequest struct {
	Method   string            `json:"method"`
	Path     string            `json:"path"`
	Query    map[string]string `json:"query,omitempty"`
	Headers  map[string]string `json:"headers,omitempty"`
	Body     json.RawMessage   `json:"body,omitempty"`
	BodyText string            `json:"body_text,omitempty"`
}

// CallResponse is a call's answer.
type CallResponse struct {
	Status    int               `json:"status"`
	Headers   map[string]string `json:"headers"`
	Body      any               `json:"body"`
	Truncated bool              `json:"truncated,omitempty"`
	Evidence  *Evidence         `json:"evidence"`
}

func connectorPath(name string) string { return "/api/v1/connectors/" + url.PathEscape(name) }

// CreateConnector creates a connector.
func (c *Client) CreateConnector(ctx context.Context, spec ConnectorSpec) (Connector, error) {
	var out Connector
	err := c.Do(ctx, "POST", "/api/v1/connectors", nil, spec, &out)
	return out, err
}

// UpdateConnector replaces a connector's settings (secrets left empty are kept).
func (c *Client) UpdateConnector(ctx context.Context, spec ConnectorSpec) (Connector, error) {
	var out Connector
	err := c.Do(ctx, "PUT", connectorPath(spec.Name), nil, spec, &out)
	return out, err
}

// ListConnectors lists connectors.
func (c *Client) ListConnectors(ctx context.Context) ([]Connector, error) {
	var out struct {
		Connectors []Connector `json:"connectors"`
	}
	err := c.Do(ctx, "GET", "/api/v1/connectors", nil, nil, &out)
	return out.Connectors, err
}

// GetConnector shows one connector.
func (c *Client) GetConnector(ctx context.Context, name string) (Connector, error) {
	var out Connector
	err := c.Do(ctx, "GET", connectorPath(name), nil, nil, &out)
	return out, err
}

// RemoveConnector removes a connector.
func (c *Client) RemoveConnector(ctx context.Context, name string) error {
	return c.Do(ctx, "DELETE", connectorPath(name), nil, nil, nil)
}

// TestConnector runs a handshake (and a GET of path when set).
func (c *Client) TestConnector(ctx context.Context, name, path string) (ConnectorTest, error) {
	var out ConnectorTest
	err := c.Do(ctx, "POST", connectorPath(name)+"/test", nil, map[string]string{"path": path}, &out)
	return out, err
}

// CallConnector makes one request through a connector.
func (c *Client) CallConnector(ctx context.Context, name string, req CallRequest) (CallResponse, error) {
	var out CallResponse
	err := c.Do(ctx, "POST", connectorPath(name)+"/call", nil, req, &out)
	return out, err
}
