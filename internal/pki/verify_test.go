package pki_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/trustflow/trustflow/internal/errs"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/pki"
	tt "github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

var verifyNow = time.Date(2031, 3, 14, 15, 9, 26, 0, time.UTC)

type pkiFixture struct {
	root, inter *tt.CA
	leaf        *tt.Leaf
}

func newPKI(t *testing.T) pkiFixture {
	t.Helper()
	root := tt.NewCA(t, tt.Now(verifyNow), tt.CommonName("Root CA"))
	inter := root.Intermediate(t, tt.CommonName("Issuing CA"))
	return pkiFixture{root: root, inter: inter, leaf: inter.IssueServer(t, "api.example", "10.1.2.3")}
}

func (p pkiFixture) opts() pki.VerifyOptions {
	return pki.VerifyOptions{
		Roots:         []*x509.Certificate{p.root.Cert},
		Intermediates: p.leaf.Chain,
		DNSName:       "api.example",
		Time:          verifyNow,
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	p := newPKI(t)

	res, err := pki.Verify(p.leaf.Cert, p.opts())
	require.NoError(t, err)
	require.Equal(t, []string{"api.example", "Issuing CA", "Root CA"}, subjects(res.Chain))

	o := p.opts()
	o.DNSName = "10.1.2.3"
	_, err = pki.Verify(p.leaf.Cert, o)
	require.NoError(t, err)

	o.DNSName = ""
	_, err = pki.Verify(p.leaf.Cert, o)
	require.NoError(t, err, "no name check")

	// Trusting the intermediate directly is enough.
	o = p.opts()
	o.Roots, o.Intermediates = []*x509.Certificate{p.inter.Cert}, nil
	res, err = pki.Verify(p.leaf.Cert, o)
	require.NoError(t, err)
	require.Len(t, res.Chain, 2)

	// Client certificates.
	client := p.inter.IssueClient(t, "payments")
	o = p.opts()
	o.Purpose, o.DNSName = pki.PurposeClient, ""
	_, err = pki.Verify(client.Cert, o)
	require.NoError(t, err)
	o.Purpose = pki.PurposeAny
	_, err = pki.Verify(client.Cert, o)
	require.NoError(t, err)
}

func TestVerifyErrors(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	other := tt.NewCA(t, tt.Now(verifyNow), tt.CommonName("Other Root CA"))
	rekeyed := tt.NewCA(t, tt.Now(verifyNow), tt.CommonName("Root CA"))
	selfSigned := tt.NewCA(t, tt.Now(verifyNow), tt.CommonName("self.example"), tt.NotACA(), tt.Names("self.example"))
	expiredInter := p.root.Intermediate(t, tt.CommonName("Expired CA"), tt.Expired())
	oldRoot := tt.NewCA(t, tt.Now(verifyNow), tt.CommonName("Old Root"), tt.Expired())
	oldInter := oldRoot.Intermediate(t, tt.CommonName("Old Issuing CA"))
	notCA := p.root.Intermediate(t, tt.CommonName("Leaf As CA"), tt.NotACA())
	pathLenRoot := tt.NewCA(t, tt.Now(verifyNow), tt.CommonName("PathLen0 Root"), tt.PathLen(0))
	pathLenLeaf := pathLenRoot.Intermediate(t, tt.CommonName("Too Deep CA")).IssueServer(t, "api.example")

	leafName := "'CN=api.example'"
	tests := []struct {
		name    string
		leaf    *x509.Certificate
		edit    func(*pki.VerifyOptions)
		code    string
		message string
		hint    string // substring
	}{
		{
			name: "missing intermediate",
			leaf: p.leaf.Cert, edit: func(o *pki.VerifyOptions) { o.Intermediates = nil },
			code:    pki.CodeUnknownAuthority,
			message: "certificate " + leafName + " was issued by 'CN=Issuing CA', which is not a trusted CA and which none of the trusted CAs signed",
			hint:    "import the CA certificate of 'CN=Issuing CA'",
		},
		{
			name: "untrusted root",
			leaf: p.leaf.Cert, edit: func(o *pki.VerifyOptions) { o.Roots = []*x509.Certificate{other.Cert} },
			code:    pki.CodeUnknownAuthority,
			message: "certificate 'CN=Issuing CA' was issued by 'CN=Root CA', which is not a trusted CA and which none of the trusted CAs signed (chain followed: 'CN=api.example' <- 'CN=Issuing CA')",
		},
		{
			name: "re-keyed root",
			leaf: p.leaf.Cert, edit: func(o *pki.VerifyOptions) { o.Roots = []*x509.Certificate{rekeyed.Cert} },
			code:    pki.CodeUnknownAuthority,
			message: "certificate 'CN=Issuing CA' names 'CN=Root CA' as its issuer, but no CA of that name has the key that signed it (chain followed: 'CN=api.example' <- 'CN=Issuing CA')",
			hint:    "re-keyed",
		},
		{
			name: "self-signed leaf",
			leaf: selfSigned.Cert, edit: func(o *pki.VerifyOptions) { o.DNSName = "self.example" },
			code:    pki.CodeUnknownAuthority,
			message: "certificate 'CN=self.example' is self-signed and is not among the trusted CAs",
			hint:    "--allow-leaf-anchor",
		},
		{
			name: "hostname mismatch",
			leaf: p.leaf.Cert, edit: func(o *pki.VerifyOptions) { o.DNSName = "www.example" },
			code:    pki.CodeHostnameMismatch,
			message: `certificate 'CN=api.example' is valid for api.example, 10.1.2.3, not "www.example"`,
			hint:    "subjectAltName=DNS:www.example",
		},
		{
			name: "IP mismatch",
			leaf: p.leaf.Cert, edit: func(o *pki.VerifyOptions) { o.DNSName = "10.9.9.9" },
			code:    pki.CodeHostnameMismatch,
			message: `certificate 'CN=api.example' is valid for api.example, 10.1.2.3, not "10.9.9.9"`,
			hint:    "subjectAltName=IP:10.9.9.9",
		},
		{
			name:    "no SAN",
			leaf:    p.inter.Issue(t, tt.CommonName("legacy.example")).Cert,
			edit:    func(o *pki.VerifyOptions) { o.DNSName = "legacy.example" },
			code:    pki.CodeHostnameMismatch,
			message: `certificate 'CN=legacy.example' has no subjectAltName, so it is valid for no host name, not even "legacy.example" (the Common Name "legacy.example" is ignored, as by all current TLS clients)`,
		},
		{
			name:    "expired leaf",
			leaf:    p.inter.Issue(t, tt.Names("api.example"), tt.Expired()).Cert,
			code:    pki.CodeExpired,
			message: "certificate 'CN=api.example' expired at 2031-03-13T15:09:26Z (checked at 2031-03-14T15:09:26Z)",
			hint:    "renew",
		},
		{
			name:    "not yet valid leaf",
			leaf:    p.inter.Issue(t, tt.Names("api.example"), tt.NotYetValid()).Cert,
			code:    pki.CodeNotYetValid,
			message: "certificate 'CN=api.example' is not valid until 2031-03-15T15:09:26Z (checked at 2031-03-14T15:09:26Z)",
			hint:    "clock",
		},
		{
			name: "expired intermediate",
			leaf: expiredInter.IssueServer(t, "api.example").Cert,
			edit: func(o *pki.VerifyOptions) {
				o.Intermediates = []*x509.Certificate{expiredInter.Cert}
			},
			code:    pki.CodeExpired,
			message: "intermediate CA 'CN=Expired CA', which issued 'CN=api.example', expired at 2031-03-13T15:09:26Z (checked at 2031-03-14T15:09:26Z)",
			hint:    "renewed CA certificate",
		},
		{
			name: "expired root",
			leaf: oldInter.IssueServer(t, "api.example").Cert,
			edit: func(o *pki.VerifyOptions) {
				o.Roots, o.Intermediates = []*x509.Certificate{oldRoot.Cert}, []*x509.Certificate{oldInter.Cert}
			},
			code:    pki.CodeExpired,
			message: "trusted CA 'CN=Old Root', which issued 'CN=Old Issuing CA', expired at 2031-03-13T15:09:26Z (checked at 2031-03-14T15:09:26Z)",
			hint:    "renewed CA certificate",
		},
		{
			name: "leaf used as CA",
			leaf: notCA.IssueServer(t, "api.example").Cert,
			edit: func(o *pki.VerifyOptions) {
				o.Intermediates = []*x509.Certificate{notCA.Cert}
			},
			code:    pki.CodeNotACA,
			message: "certificate 'CN=api.example' was signed by intermediate CA 'CN=Leaf As CA', which is not a CA",
		},
		{
			name: "path length",
			leaf: pathLenLeaf.Cert,
			edit: func(o *pki.VerifyOptions) {
				o.Roots, o.Intermediates = []*x509.Certificate{pathLenRoot.Cert}, pathLenLeaf.Chain
			},
			code:    pki.CodePathLength,
			message: "trusted CA 'CN=PathLen0 Root' allows at most 0 intermediate CAs below it (pathLenConstraint), but the chain of 'CN=api.example' has 1",
		},
		{
			name:    "client certificate used as server",
			leaf:    p.inter.IssueClient(t, "payments").Cert,
			edit:    func(o *pki.VerifyOptions) { o.DNSName = "" },
			code:    pki.CodeIncompatibleUsage,
			message: "certificate 'CN=payments' may not be used for TLS server authentication (serverAuth): its extended key usage is clientAuth",
			hint:    "extendedKeyUsage=serverAuth",
		},
		{
			name:    "server certificate used as client",
			leaf:    p.leaf.Cert,
			edit:    func(o *pki.VerifyOptions) { o.DNSName, o.Purpose = "", pki.PurposeClient },
			code:    pki.CodeIncompatibleUsage,
			message: "certificate 'CN=api.example' may not be used for TLS client authentication (clientAuth): its extended key usage is serverAuth",
		},
		{
			name:    "RSA 1024 leaf",
			leaf:    p.inter.Issue(t, tt.Names("api.example"), tt.RSA1024()).Cert,
			code:    pki.CodeWeakKey,
			message: "certificate 'CN=api.example' has a 1024-bit RSA key; trustflow requires at least 2048 bits",
		},
		{
			name:    "max chain depth",
			leaf:    p.leaf.Cert,
			edit:    func(o *pki.VerifyOptions) { o.MaxChainDepth = pki.NoIntermediates },
			code:    pki.CodePathLength,
			message: "the chain of certificate 'CN=api.example' has 1 intermediate CAs, over the limit of 0: 'CN=api.example' <- 'CN=Issuing CA' <- 'CN=Root CA'",
		},
		{
			name:    "no roots",
			leaf:    p.leaf.Cert,
			edit:    func(o *pki.VerifyOptions) { o.Roots = nil },
			code:    pki.CodeNoTrustedCAs,
			message: "no trusted CAs to verify certificate 'CN=api.example' against",
		},
		{
			name:    "bad purpose",
			leaf:    p.leaf.Cert,
			edit:    func(o *pki.VerifyOptions) { o.Purpose = "email" },
			code:    pki.CodeInvalidOption,
			message: `unknown verification purpose "email"`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := p.opts()
			if tc.edit != nil {
				tc.edit(&o)
			}
			_, err := pki.Verify(tc.leaf, o)
			if tc.code == "" {
				require.NoError(t, err)
				return
			}
			e := requireCode(t, err, tc.code)
			require.Equal(t, tc.message, e.Message)
			require.NotEmpty(t, e.Hint)
			require.Contains(t, e.Hint, tc.hint)
		})
	}

	_, err := pki.Verify(nil, p.opts())
	requireCode(t, err, pki.CodeInvalidOption)

	o := p.opts()
	o.MaxChainDepth = 1
	_, err = pki.Verify(p.leaf.Cert, o)
	require.NoError(t, err)
}

// TestVerifyLeafAnchor checks a certificate trusted as its own anchor, as
// `ca import --allow-leaf-anchor` sets up.
func TestVerifyLeafAnchor(t *testing.T) {
	t.Parallel()
	pinned := fixtureCert(t, "self-signed-leaf.pem")
	require.NoError(t, pki.CheckCA(pinned, true))
	o := pki.VerifyOptions{Roots: []*x509.Certificate{pinned}, DNSName: "api.trustflow.test", MaxChainDepth: pki.NoIntermediates, RequireCRLs: true}
	res, err := pki.Verify(pinned, o)
	require.NoError(t, err)
	require.Len(t, res.Chain, 1)

	o.DNSName = "other.example"
	_, err = pki.Verify(pinned, o)
	requireCode(t, err, pki.CodeHostnameMismatch)
}

func TestVerifyKeepsX509Error(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	o := p.opts()
	o.Intermediates = nil
	_, err := pki.Verify(p.leaf.Cert, o)
	var ua x509.UnknownAuthorityError
	require.ErrorAs(t, err, &ua)

	o = p.opts()
	o.DNSName = "other.example"
	_, err = pki.Verify(p.leaf.Cert, o)
	var he x509.HostnameError
	require.ErrorAs(t, err, &he)
}

func TestVerifyRevocation(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	revoked := p.inter.IssueServer(t, "api.example")
	crl := p.inter.CRL(t, revoked.Cert)
	rootCRL := p.root.CRL(t)

	o := p.opts()
	o.CRLs = []*x509.RevocationList{crl}
	_, err := pki.Verify(p.leaf.Cert, o)
	require.NoError(t, err, "not on the CRL")

	_, err = pki.Verify(revoked.Cert, o)
	e := requireCode(t, err, pki.CodeRevoked)
	require.Equal(t, fmt.Sprintf("certificate 'CN=api.example' (serial %s) was revoked by 'CN=Issuing CA' on 2031-03-14T14:39:26Z, reason keyCompromise (CRL issued 2031-03-14T14:09:26Z)",
		revoked.Cert.SerialNumber.Text(16)), e.Message)

	// A stale CRL fails closed.
	o.Time = verifyNow.Add(48 * time.Hour)
	_, err = pki.Verify(p.leaf.Cert, o)
	e = requireCode(t, err, pki.CodeCRLExpired)
	require.Equal(t, "the CRL of 'CN=Issuing CA' expired at 2031-03-15T15:09:26Z (its nextUpdate; checked at 2031-03-16T15:09:26Z)", e.Message)
	o.Time = verifyNow

	// A CRL under the issuer's name but signed by another key.
	impostor := tt.NewCA(t, tt.Now(verifyNow), tt.CommonName("Issuing CA"))
	o.CRLs = []*x509.RevocationList{impostor.CRL(t)}
	_, err = pki.Verify(p.leaf.Cert, o)
	e = requireCode(t, err, pki.CodeCRLInvalid)
	require.Contains(t, e.Message, "the CRL of 'CN=Issuing CA' (issued 2031-03-14T14:09:26Z) is not signed by the key of that CA")

	// Revocation checking required: the intermediate needs the root's CRL.
	o.CRLs = []*x509.RevocationList{crl}
	o.RequireCRLs = true
	_, err = pki.Verify(p.leaf.Cert, o)
	e = requireCode(t, err, pki.CodeCRLMissing)
	require.Equal(t, "no CRL of 'CN=Root CA' covers certificate 'CN=Issuing CA', and revocation checking is required", e.Message)
	o.CRLs = append(o.CRLs, rootCRL)
	_, err = pki.Verify(p.leaf.Cert, o)
	require.NoError(t, err)

	// The revoked intermediate takes its leaves with it.
	o.CRLs = []*x509.RevocationList{crl, p.root.CRL(t, p.inter.Cert)}
	_, err = pki.Verify(p.leaf.Cert, o)
	e = requireCode(t, err, pki.CodeRevoked)
	require.Contains(t, e.Message, "certificate 'CN=Issuing CA'")
}

func TestVerifyFixtures(t *testing.T) {
	t.Parallel()
	roots := fixtureCerts(t, "root-ca.pem")
	inter := fixtureCerts(t, "intermediate-ca.pem")
	crls, err := pki.ParseCRLs(fixture(t, "intermediate-ca.crl.pem"))
	require.NoError(t, err)
	o := pki.VerifyOptions{Roots: roots, Intermediates: inter, Purpose: pki.PurposeClient, CRLs: crls}

	_, err = pki.Verify(fixtureCert(t, "client.pem"), o)
	require.NoError(t, err)
	_, err = pki.Verify(fixtureCert(t, "rsa-client.pem"), o)
	require.NoError(t, err)
	_, err = pki.Verify(fixtureCert(t, "ed25519-client.pem"), o)
	require.NoError(t, err)

	// Revoked with `openssl ca -revoke`.
	_, err = pki.Verify(fixtureCert(t, "revoked-client.pem"), o)
	e := requireCode(t, err, pki.CodeRevoked)
	require.Contains(t, e.Message, "reason keyCompromise")

	_, err = pki.Verify(fixtureCert(t, "expired-client.pem"), o)
	requireCode(t, err, pki.CodeExpired)
	_, err = pki.Verify(fixtureCert(t, "not-yet-valid-client.pem"), o)
	requireCode(t, err, pki.CodeNotYetValid)
	_, err = pki.Verify(fixtureCert(t, "rsa1024-client.pem"), o)
	requireCode(t, err, pki.CodeWeakKey)
	_, err = pki.Verify(fixtureCert(t, "server-only-eku.pem"), o)
	requireCode(t, err, pki.CodeIncompatibleUsage)

	_, err = pki.Verify(fixtureCert(t, "sha1-signed-client.pem"), o)
	e = requireCode(t, err, pki.CodeInsecureAlgorithm)
	require.Equal(t, "certificate 'CN=sha1.trustflow.test' is signed by intermediate CA 'CN=Trustflow Test Issuing CA,O=Trustflow Tests' with ECDSA-SHA1, which is not accepted", e.Message)

	chain := fixtureCerts(t, "issued-by-leaf-chain.pem")
	o.Intermediates = append(inter, chain[1])
	_, err = pki.Verify(chain[0], o)
	requireCode(t, err, pki.CodeNotACA)
}

// TestVerifyInHandshake checks pki.Verify as a connector uses it: from
// tls.Config.VerifyConnection, with revocation.
func TestVerifyInHandshake(t *testing.T) {
	t.Parallel()
	root := tt.NewCA(t)
	inter := root.Intermediate(t)
	good := inter.IssueServer(t, "127.0.0.1")
	revoked := inter.IssueServer(t, "127.0.0.1")
	crl := inter.CRL(t, revoked.Cert)

	get := func(serverCert *tt.Leaf) error {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{serverCert.TLSCertificate()}}
		srv.StartTLS()
		defer srv.Close()
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: root.Pool(),
			VerifyConnection: func(cs tls.ConnectionState) error {
				_, err := pki.Verify(cs.PeerCertificates[0], pki.VerifyOptions{
					Roots:         []*x509.Certificate{root.Cert},
					Intermediates: cs.PeerCertificates[1:],
					DNSName:       cs.ServerName,
					CRLs:          []*x509.RevocationList{crl},
				})
				return err
			},
		}}}
		defer client.CloseIdleConnections()
		resp, err := client.Get(srv.URL)
		if err != nil {
			return err
		}
		return resp.Body.Close()
	}
	require.NoError(t, get(good))
	err := get(revoked)
	var e *errs.Error
	require.True(t, errors.As(err, &e), "got %v", err)
	require.Equal(t, pki.CodeRevoked, e.Code)
}

// TestVerifyManyCandidateIssuers checks that diagnosing a failure stays cheap
// when the peer sends many intermediates under the issuer's name.
func TestVerifyManyCandidateIssuers(t *testing.T) {
	t.Parallel()
	root := tt.NewCA(t, tt.Now(verifyNow), tt.CommonName("Root CA"))
	real := tt.NewCA(t, tt.Now(verifyNow), tt.CommonName("Busy CA"))
	leaf := real.IssueServer(t, "api.example")
	var decoys []*x509.Certificate
	for range 300 {
		decoys = append(decoys, root.Intermediate(t, tt.CommonName("Busy CA")).Cert)
	}
	o := pki.VerifyOptions{Roots: []*x509.Certificate{root.Cert}, DNSName: "api.example", Time: verifyNow}

	// crypto/x509 gives up after 100 signature checks.
	start := time.Now()
	o.Intermediates = decoys
	_, err := pki.Verify(leaf.Cert, o)
	e := requireCode(t, err, pki.CodeVerifyFailed)
	require.Equal(t, "building a chain for certificate 'CN=api.example' gave up: too many candidate issuers", e.Message)

	// Below that limit, the diagnosis keeps to its own budget.
	o.Intermediates = decoys[:90]
	_, err = pki.Verify(leaf.Cert, o)
	requireCode(t, err, pki.CodeUnknownAuthority)
	require.Less(t, time.Since(start), 5*time.Second)
}
