package apiclient

import (
	"context"
	"net/url"
	"time"
)

// CertInfo summarises one certificate.
type CertInfo struct {
	Serial            string    `json:"serial"`
	Subject           string    `json:"subject"`
	Issuer            string    `json:"issuer"`
	FingerprintSHA256 string    `json:"fingerprint_sha256"`
	NotBefore         time.Time `json:"not_before"`
	NotAfter          time.Time `json:"not_after"`
	KeyType           string    `json:"key_type"`
	IsCA              bool      `json:"is_ca"`
	DNSNames          []string  `json:"dns_names,omitempty"`
	IPAddresses       []string  `json:"ip_addresses,omitempty"`
}

// CA is a trust anchor bundle.
type CA struct {
	Name            string     `json:"name"`
	Description     string     `json:"description"`
	AllowLeafAnchor bool       `json:"allow_leaf_anchor"`
	Certificates    []CertInfo `json:"certificates"`
	CreatedAt       time.Time  `json:"created_at"`
	UpdatedAt       time.Time  `json:"updated_at"`
	Revision        int64      `json:"revision"`
}

// CARequest adds a CA bundle, or replaces one's certificates. Data is the
// bundle file as read: PEM, DER or PKCS#7.
type CARequest struct {
	Name            string `json:"name,omitempty"`
	Description     string `json:"description,omitempty"`
	Data            []byte `json:"data"`
	AllowLeafAnchor bool   `json:"allow_leaf_anchor,omitempty"`
	AllowExpired    bool   `json:"allow_expired,omitempty"`
}

// VerifyRequest asks whether a certificate chains to a CA bundle. Time is
// RFC 3339 (empty: now); Purpose is server (the default) or client.
type VerifyRequest struct {
	Leaf          []byte `json:"leaf"`
	Intermediates []byte `json:"intermediates,omitempty"`
	Name          string `json:"name,omitempty"`
	Time          string `json:"time,omitempty"`
	Purpose       string `json:"purpose,omitempty"`
}

// Verification is the answer to VerifyCA: the chain when Valid, the
// diagnosis in Error when not.
type Verification struct {
	Valid bool         `json:"valid"`
	Chain []CertInfo   `json:"chain,omitempty"`
	Leaf  CertInfo     `json:"leaf"`
	Error *VerifyError `json:"error,omitempty"`
}

// VerifyError says why a certificate did not verify and how to fix it.
type VerifyError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"`
}

// Identity is a client identity and its versions. It never holds key
// material.
type Identity struct {
	Name          string            `json:"name"`
	Description   string            `json:"description"`
	Status        string            `json:"status"`
	ActiveVersion int               `json:"active_version"`
	CreatedAt     time.Time         `json:"created_at"`
	UpdatedAt     time.Time         `json:"updated_at"`
	Versions      []IdentityVersion `json:"versions"`
}

// Active returns the active version, if any.
func (i Identity) Active() (IdentityVersion, bool) {
	for _, v := range i.Versions {
		if v.Status == "active" {
			return v, true
		}
	}
	return IdentityVersion{}, false
}

// IdentityVersion is one version of an identity: pending (waiting for its
// certificate), staged, active or retired.
type IdentityVersion struct {
	Version           int        `json:"version"`
	Status            string     `json:"status"`
	Source            string     `json:"source"`
	KeyType           string     `json:"key_type"`
	KeyStore          string     `json:"key_store"`         // sealed or pkcs11
	KeyRef            *KeyRef    `json:"key_ref,omitempty"` // where a pkcs11 key is
	Serial            string     `json:"serial"`
	Subject           string     `json:"subject"`
	Issuer            string     `json:"issuer"`
	FingerprintSHA256 string     `json:"fingerprint_sha256"`
	NotBefore         *time.Time `json:"not_before"`
	NotAfter          *time.Time `json:"not_after"`
	DNSNames          []string   `json:"dns_names,omitempty"`
	Chain             []CertInfo `json:"chain,omitempty"`
	CSR               string     `json:"csr,omitempty"`
	CreatedAt         time.Time  `json:"created_at"`
	ActivatedAt       *time.Time `json:"activated_at,omitempty"`
}

// Material is an identity's certificate and private key, as separate files
// (Cert, Key, optional KeyPassword and Chain) or as one PKCS#12 file
// (PKCS12, PKCS12Password). The files are sent as read.
type Material struct {
	Cert           []byte `json:"cert,omitempty"`
	Key            []byte `json:"key,omitempty"`
	KeyPassword    string `json:"key_password,omitempty"`
	Chain          []byte `json:"chain,omitempty"`
	PKCS12         []byte `json:"pkcs12,omitempty"`
	PKCS12Password string `json:"pkcs12_password,omitempty"`
	AllowExpired   bool   `json:"allow_expired,omitempty"`
	// KeyRef is the pkcs11: URI of the certificate's key in a token,
	// instead of Key.
	KeyRef string `json:"key_ref,omitempty"`
}

// KeyRef says where a key kept in a PKCS#11 token is. It never holds a PIN.
type KeyRef struct {
	URI   string `json:"uri"`
	Token string `json:"token"`
	Label string `json:"label"`
	ID    string `json:"id,omitempty"`
}

// ImportIdentityRequest imports an identity from existing material.
type ImportIdentityRequest struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Material
}

// GenerateRequest describes a key for the server to generate and the CSR
// to request its certificate with. KeyType defaults to ecdsa-p256.
type GenerateRequest struct {
	Subject  string   `json:"subject"`
	DNSNames []string `json:"dns_names,omitempty"`
	KeyType  string   `json:"key_type,omitempty"`
	// KeyStore is "sealed" (the default) or a pkcs11: URI naming the token
	// to generate the key in.
	KeyStore string `json:"key_store,omitempty"`
}

// CreateIdentityRequest creates an identity whose key is generated by the
// server.
type CreateIdentityRequest struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	GenerateRequest
}

// CreatedIdentity is the pending identity and the CSR (PEM) to have signed.
type CreatedIdentity struct {
	Identity Identity `json:"identity"`
	CSR      string   `json:"csr"`
}

// InstallCertRequest installs the signed certificate of a pending version.
type InstallCertRequest struct {
	Cert         []byte `json:"cert"`
	Chain        []byte `json:"chain,omitempty"`
	AllowExpired bool   `json:"allow_expired,omitempty"`
}

// RotateRequest adds a version: imported Material, or Generate for a key
// generated by the server. Stage keeps the new version inactive.
type RotateRequest struct {
	Material
	Generate *GenerateRequest `json:"generate,omitempty"`
	Stage    bool             `json:"stage,omitempty"`
}

// RotateResult is a rotation's outcome; CSR is set for a generated version.
type RotateResult struct {
	Identity Identity `json:"identity"`
	Version  int      `json:"version"`
	CSR      string   `json:"csr,omitempty"`
}

// PruneResult lists the retired versions a prune deleted.
type PruneResult struct {
	Identity Identity `json:"identity"`
	Pruned   []int    `json:"pruned"`
}

func caPath(name string) string { return "/api/v1/cas/" + url.PathEscape(name) }

func identityPath(name string) string { return "/api/v1/identities/" + url.PathEscape(name) }

// AddCA adds a CA bundle.
func (c *Client) AddCA(ctx context.Context, req CARequest) (CA, error) {
	var ca CA
	err := c.Do(ctx, "POST", "/api/v1/cas", nil, req, &ca)
	return ca, err
}

// ListCAs lists the CA bundles.
func (c *Client) ListCAs(ctx context.Context) ([]CA, error) {
	var out struct {
		CAs []CA `json:"cas"`
	}
	err := c.Do(ctx, "GET", "/api/v1/cas", nil, nil, &out)
	return out.CAs, err
}

// GetCA returns one CA bundle and its certificates.
func (c *Client) GetCA(ctx context.Context, name string) (CA, error) {
	var ca CA
	err := c.Do(ctx, "GET", caPath(name), nil, nil, &ca)
	return ca, err
}

// UpdateCA replaces the certificates of the CA bundle called name; an
// empty Description keeps the current one. req.Name is ignored.
func (c *Client) UpdateCA(ctx context.Context, name string, req CARequest) (CA, error) {
	req.Name = ""
	var ca CA
	err := c.Do(ctx, "PUT", caPath(name), nil, req, &ca)
	return ca, err
}

// RemoveCA removes a CA bundle.
func (c *Client) RemoveCA(ctx context.Context, name string) error {
	return c.Do(ctx, "DELETE", caPath(name), nil, nil, nil)
}

// VerifyCA builds and checks a certificate's chain against the CA bundle
// called name, the way connectors do. An invalid chain is not an error:
// it is a Verification with Valid false.
func (c *Client) VerifyCA(ctx context.Context, name string, req VerifyRequest) (Verification, error) {
	var v Verification
	err := c.Do(ctx, "POST", caPath(name)+"/verify", nil, req, &v)
	return v, err
}

// ImportIdentity creates an identity from a certificate and key or a
// PKCS#12 file; its first version is active at once.
func (c *Client) ImportIdentity(ctx context.Context, req ImportIdentityRequest) (Identity, error) {
	var id Identity
	err := c.Do(ctx, "POST", "/api/v1/identities/import", nil, req, &id)
	return id, err
}

// CreateIdentity creates an identity whose key the server generates; it
// stays pending until its certificate is installed.
func (c *Client) CreateIdentity(ctx context.Context, req CreateIdentityRequest) (CreatedIdentity, error) {
	var out CreatedIdentity
	err := c.Do(ctx, "POST", "/api/v1/identities", nil, req, &out)
	return out, err
}

// ListIdentities lists identities; a non-empty expiring (a Go duration such
// as 720h) keeps only those whose active certificate expires within it.
func (c *Client) ListIdentities(ctx context.Context, expiring string) ([]Identity, error) {
	var q url.Values
	if expiring != "" {
		q = url.Values{"expiring": {expiring}}
	}
	var out struct {
		Identities []Identity `json:"identities"`
	}
	err := c.Do(ctx, "GET", "/api/v1/identities", q, nil, &out)
	return out.Identities, err
}

// GetIdentity returns one identity and its versions.
func (c *Client) GetIdentity(ctx context.Context, name string) (Identity, error) {
	var id Identity
	err := c.Do(ctx, "GET", identityPath(name), nil, nil, &id)
	return id, err
}

// RemoveIdentity removes an identity and every version.
func (c *Client) RemoveIdentity(ctx context.Context, name string) error {
	return c.Do(ctx, "DELETE", identityPath(name), nil, nil, nil)
}

// InstallCert installs the signed certificate of the identity's pending
// version.
func (c *Client) InstallCert(ctx context.Context, name string, req InstallCertRequest) (Identity, error) {
	var id Identity
	err := c.Do(ctx, "POST", identityPath(name)+"/certificate", nil, req, &id)
	return id, err
}

// RotateIdentity adds a version to an identity.
func (c *Client) RotateIdentity(ctx context.Context, name string, req RotateRequest) (RotateResult, error) {
	var out RotateResult
	err := c.Do(ctx, "POST", identityPath(name)+"/rotate", nil, req, &out)
	return out, err
}

// ActivateIdentity makes version the active one: a staged version goes
// live, or a retired one comes back.
func (c *Client) ActivateIdentity(ctx context.Context, name string, version int) (Identity, error) {
	var id Identity
	err := c.Do(ctx, "POST", identityPath(name)+"/activate", nil, struct {
		Version int `json:"version"`
	}{version}, &id)
	return id, err
}

// PruneIdentity deletes an identity's retired versions and their keys.
func (c *Client) PruneIdentity(ctx context.Context, name string) (PruneResult, error) {
	var out PruneResult
	err := c.Do(ctx, "POST", identityPath(name)+"/prune", nil, nil, &out)
	return out, err
}
