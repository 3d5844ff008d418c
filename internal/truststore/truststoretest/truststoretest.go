// Package truststoretest is an in-memory test PKI for trustflow's tests:
// root and intermediate CAs, server and client certificates, CRLs, and
// options that build the bad certificates the trust store must refuse
// (expired, not yet valid, without clientAuth, a leaf used as a CA, RSA 1024
// keys). Everything lives in memory; it is imported only by tests.
//
//	ca := truststoretest.NewCA(t)
//	srv := ca.IssueServer(t, "127.0.0.1", "localhost")
//	cli := ca.IssueClient(t, "payments")
//	bad := ca.IssueClient(t, "old", truststoretest.Expired())
package truststoretest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/trustflow/trustflow/internal/pki"
)

// Default validity, relative to the kit's now: every certificate is valid
// from an hour before now (tolerating clock skew in tests); CAs for ten
// years, leaves for ninety days.
const (
	backdate     = time.Hour
	caLifetime   = 10 * 365 * 24 * time.Hour
	leafLifetime = 90 * 24 * time.Hour
)

// CA is a certificate authority whose key stays in memory.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// Chain holds the CAs above this one, its issuer first, excluding the
	// root. Empty for a root.
	Chain []*x509.Certificate

	root *CA
	now  time.Time
}

// Leaf is an end-entity certificate and its key.
type Leaf struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// Chain holds the intermediate CAs from the leaf's issuer upwards,
	// excluding the root: what a TLS peer sends after its certificate.
	Chain []*x509.Certificate
}

type config struct {
	now          time.Time
	expired      bool
	notYetValid  bool
	notBefore    time.Time
	notAfter     time.Time
	subject      *pkix.Name
	keyType      string
	serial       *big.Int
	ekus         []x509.ExtKeyUsage
	ekusSet      bool
	notCA        bool
	noBasicCons  bool
	pathLen      *int
	names        []string
	keyUsage     x509.KeyUsage
	keyUsageSet  bool
	crlDistPoint []string
}

// Option changes what NewCA, Intermediate, Issue, IssueServer or
// IssueClient make.
type Option func(*config)

// Now sets the reference time validity periods are computed from. It is
// inherited by the CAs and leaves a CA issues. Defaults to time.Now().
func Now(now time.Time) Option { return func(c *config) { c.now = now } }

// Validity sets the exact validity period.
func Validity(notBefore, notAfter time.Time) Option {
	return func(c *config) { c.notBefore, c.notAfter = notBefore, notAfter }
}

// Expired makes a certificate that expired a day before now.
func Expired() Option { return func(c *config) { c.expired = true } }

// NotYetValid makes a certificate that becomes valid a day after now.
func NotYetValid() Option { return func(c *config) { c.notYetValid = true } }

// NoClientAuthEKU gives the certificate an extended key usage of serverAuth
// only, so it may not authenticate a TLS client.
func NoClientAuthEKU() Option {
	return func(c *config) { c.ekus, c.ekusSet = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, true }
}

// ExtKeyUsage sets the extended key usages; none means the extension is left out.
func ExtKeyUsage(ekus ...x509.ExtKeyUsage) Option {
	return func(c *config) { c.ekus, c.ekusSet = ekus, true }
}

// KeyUsage sets the key usage bits.
func KeyUsage(ku x509.KeyUsage) Option {
	return func(c *config) { c.keyUsage, c.keyUsageSet = ku, true }
}

// NotACA makes NewCA or Intermediate produce a leaf used as a CA: its
// basicConstraints say CA:FALSE, yet it signs what it issues.
func NotACA() Option { return func(c *config) { c.notCA = true } }

// NoBasicConstraints leaves the basicConstraints extension out of a CA
// certificate, which then may not act as a CA.
func NoBasicConstraints() Option { return func(c *config) { c.noBasicCons = true } }

// PathLen sets a CA's pathLenConstraint.
func PathLen(n int) Option { return func(c *config) { c.pathLen = &n } }

// RSA1024 gives the certificate a 1024-bit RSA key, too weak for trustflow.
func RSA1024() Option { return KeyType("rsa-1024") }

// KeyType sets the key type: any of pki.KeyTypes(), or "rsa-1024".
// Defaults to "ecdsa-p256".
func KeyType(keyType string) Option { return func(c *config) { c.keyType = keyType } }

// Serial sets the serial number. Defaults to a random 128-bit number.
func Serial(serial *big.Int) Option { return func(c *config) { c.serial = new(big.Int).Set(serial) } }

// Subject sets the subject. Defaults to a CN naming the certificate's role.
func Subject(name pkix.Name) Option { return func(c *config) { c.subject = &name } }

// CommonName sets the subject to CN=cn.
func CommonName(cn string) Option { return Subject(pkix.Name{CommonName: cn}) }

// Names adds subjectAltNames: DNS names, IP literals, e-mail addresses
// (with "@") and URIs (with "://").
func Names(names ...string) Option {
	return func(c *config) { c.names = append(c.names, names...) }
}

// CRLDistributionPoints sets the certificate's CRL distribution point URLs.
func CRLDistributionPoints(urls ...string) Option {
	return func(c *config) { c.crlDistPoint = urls }
}

func newConfig(t testing.TB, now time.Time, opts []Option) *config {
	t.Helper()
	c := &config{now: now}
	for _, o := range opts {
		o(c)
	}
	if c.now.IsZero() {
		c.now = time.Now()
	}
	c.now = c.now.Truncate(time.Second)
	if c.serial == nil {
		s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
		if err != nil {
			t.Fatalf("truststoretest: serial: %v", err)
		}
		c.serial = s.Add(s, big.NewInt(1))
	}
	return c
}

func (c *config) validity(lifetime time.Duration) (time.Time, time.Time) {
	switch {
	case !c.notBefore.IsZero() || !c.notAfter.IsZero():
		nb, na := c.notBefore, c.notAfter
		if nb.IsZero() {
			nb = c.now.Add(-backdate)
		}
		if na.IsZero() {
			na = c.now.Add(lifetime)
		}
		return nb, na
	case c.expired:
		return c.now.Add(-48 * time.Hour), c.now.Add(-24 * time.Hour)
	case c.notYetValid:
		return c.now.Add(24 * time.Hour), c.now.Add(48 * time.Hour)
	}
	return c.now.Add(-backdate), c.now.Add(lifetime)
}

func (c *config) key(t testing.TB) crypto.Signer {
	t.Helper()
	if c.keyType == "rsa-1024" {
		k, err := rsa.GenerateKey(rand.Reader, 1024)
		if err != nil {
			t.Fatalf("truststoretest: generate rsa-1024 key: %v", err)
		}
		return k
	}
	if c.keyType == "" || c.keyType == "ecdsa-p256" {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatalf("truststoretest: generate key: %v", err)
		}
		return k
	}
	k, err := pki.GenerateKey(c.keyType)
	if err != nil {
		t.Fatalf("truststoretest: %v", err)
	}
	return k
}

func (c *config) addNames(t testing.TB, tmpl *x509.Certificate) {
	t.Helper()
	for _, n := range c.names {
		switch {
		case net.ParseIP(n) != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(n))
		case strings.Contains(n, "://"):
			u, err := url.Parse(n)
			if err != nil {
				t.Fatalf("truststoretest: URI SAN %q: %v", n, err)
			}
			tmpl.URIs = append(tmpl.URIs, u)
		case strings.Contains(n, "@"):
			tmpl.EmailAddresses = append(tmpl.EmailAddresses, n)
		default:
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
}

// NewCA makes a self-signed root CA (ECDSA P-256 unless KeyType says otherwise).
func NewCA(t testing.TB, opts ...Option) *CA {
	t.Helper()
	c := newConfig(t, time.Time{}, opts)
	subject := pkix.Name{CommonName: "trustflow test root CA", Organization: []string{"trustflow tests"}}
	if c.subject != nil {
		subject = *c.subject
	}
	key := c.key(t)
	tmpl := c.caTemplate(t, subject)
	cert := create(t, tmpl, tmpl, key.Public(), key)
	ca := &CA{Cert: cert, Key: key, now: c.now}
	ca.root = ca
	return ca
}

func (c *config) caTemplate(t testing.TB, subject pkix.Name) *x509.Certificate {
	t.Helper()
	nb, na := c.validity(caLifetime)
	tmpl := &x509.Certificate{
		SerialNumber:          c.serial,
		Subject:               subject,
		NotBefore:             nb,
		NotAfter:              na,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: !c.noBasicCons,
		IsCA:                  !c.notCA && !c.noBasicCons,
		CRLDistributionPoints: c.crlDistPoint,
	}
	if c.notCA || c.noBasicCons {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	}
	if c.keyUsageSet {
		tmpl.KeyUsage = c.keyUsage
	}
	if c.pathLen != nil {
		tmpl.MaxPathLen = *c.pathLen
		tmpl.MaxPathLenZero = *c.pathLen == 0
	}
	if c.ekusSet {
		tmpl.ExtKeyUsage = c.ekus
	}
	c.addNames(t, tmpl)
	return tmpl
}

// Intermediate makes a CA issued by ca.
func (ca *CA) Intermediate(t testing.TB, opts ...Option) *CA {
	t.Helper()
	c := newConfig(t, ca.now, opts)
	subject := pkix.Name{CommonName: "trustflow test intermediate CA " + shortSerial(c.serial), Organization: []string{"trustflow tests"}}
	if c.subject != nil {
		subject = *c.subject
	}
	key := c.key(t)
	tmpl := c.caTemplate(t, subject)
	cert := create(t, tmpl, ca.Cert, key.Public(), ca.Key)
	chain := ca.issuingChain()
	return &CA{Cert: cert, Key: key, Chain: chain, root: ca.root, now: c.now}
}

// issuingChain is what a certificate issued by ca carries: ca itself unless
// it is the root, then ca's own chain.
func (ca *CA) issuingChain() []*x509.Certificate {
	if ca.root == ca {
		return nil
	}
	return append([]*x509.Certificate{ca.Cert}, ca.Chain...)
}

func shortSerial(s *big.Int) string {
	h := s.Text(16)
	return h[:min(8, len(h))]
}

// Root returns the root CA at the top of ca's chain (ca itself for a root).
func (ca *CA) Root() *CA { return ca.root }

// Issue makes an end-entity certificate: a TLS server certificate for Names
// unless options say otherwise.
func (ca *CA) Issue(t testing.TB, opts ...Option) *Leaf {
	t.Helper()
	c := newConfig(t, ca.now, opts)
	ekus := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	if c.ekusSet {
		ekus = c.ekus
	}
	subject := pkix.Name{CommonName: "trustflow test leaf"}
	if len(c.names) > 0 {
		subject.CommonName = c.names[0]
	}
	if c.subject != nil {
		subject = *c.subject
	}
	return ca.issueLeaf(t, c, subject, ekus)
}

// IssueServer makes a TLS server certificate for the given DNS names and IP
// literals, valid for ninety days.
func (ca *CA) IssueServer(t testing.TB, names ...string) *Leaf {
	t.Helper()
	if len(names) == 0 {
		names = []string{"localhost", "127.0.0.1", "::1"}
	}
	return ca.Issue(t, Names(names...))
}

// IssueClient makes a TLS client certificate with subject CN=cn and
// extended key usage clientAuth, valid for ninety days.
func (ca *CA) IssueClient(t testing.TB, cn string, opts ...Option) *Leaf {
	t.Helper()
	c := newConfig(t, ca.now, opts)
	ekus := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if c.ekusSet {
		ekus = c.ekus
	}
	subject := pkix.Name{CommonName: cn}
	if c.subject != nil {
		subject = *c.subject
	}
	return ca.issueLeaf(t, c, subject, ekus)
}

func (ca *CA) issueLeaf(t testing.TB, c *config, subject pkix.Name, ekus []x509.ExtKeyUsage) *Leaf {
	t.Helper()
	key := c.key(t)
	nb, na := c.validity(leafLifetime)
	ku := x509.KeyUsageDigitalSignature
	if _, ok := key.(*rsa.PrivateKey); ok {
		ku |= x509.KeyUsageKeyEncipherment
	}
	if c.keyUsageSet {
		ku = c.keyUsage
	}
	tmpl := &x509.Certificate{
		SerialNumber:          c.serial,
		Subject:               subject,
		NotBefore:             nb,
		NotAfter:              na,
		KeyUsage:              ku,
		ExtKeyUsage:           ekus,
		BasicConstraintsValid: true,
		CRLDistributionPoints: c.crlDistPoint,
	}
	c.addNames(t, tmpl)
	cert := create(t, tmpl, ca.Cert, key.Public(), ca.Key)
	return &Leaf{Cert: cert, Key: key, Chain: ca.issuingChain()}
}

func create(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatalf("truststoretest: create certificate %q: %v", tmpl.Subject, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("truststoretest: parse certificate %q: %v", tmpl.Subject, err)
	}
	return cert
}

// CertPEM returns the CA certificate as PEM.
func (ca *CA) CertPEM() []byte { return pki.EncodeCertificatesPEM(ca.Cert) }

// KeyPEM returns the CA's private key as PKCS#8 PEM.
func (ca *CA) KeyPEM() []byte { return keyPEM(ca.Key) }

// Pool returns a pool trusting this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// CRL makes a CRL signed by ca that revokes the given certificates, current
// at ca's now (valid from an hour before to a day after), with CRL number 1.
func (ca *CA) CRL(t testing.TB, revoked ...*x509.Certificate) *x509.RevocationList {
	t.Helper()
	tmpl := &x509.RevocationList{
		Number:     big.NewInt(1),
		ThisUpdate: ca.now.Add(-backdate),
		NextUpdate: ca.now.Add(24 * time.Hour),
	}
	for _, c := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber:   c.SerialNumber,
			RevocationTime: ca.now.Add(-backdate / 2),
			ReasonCode:     1, // keyCompromise
		})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		t.Fatalf("truststoretest: create CRL: %v", err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatalf("truststoretest: parse CRL: %v", err)
	}
	return crl
}

// CertPEM returns the leaf certificate alone as PEM.
func (l *Leaf) CertPEM() []byte { return pki.EncodeCertificatesPEM(l.Cert) }

// ChainPEM returns the leaf followed by its intermediates as PEM.
func (l *Leaf) ChainPEM() []byte {
	return pki.EncodeCertificatesPEM(append([]*x509.Certificate{l.Cert}, l.Chain...)...)
}

// KeyPEM returns the private key as unencrypted PKCS#8 PEM.
func (l *Leaf) KeyPEM() []byte { return keyPEM(l.Key) }

// TLSCertificate returns the leaf, its intermediates and key for a
// tls.Config (Certificates or GetClientCertificate).
func (l *Leaf) TLSCertificate() tls.Certificate {
	tc := tls.Certificate{Certificate: [][]byte{l.Cert.Raw}, PrivateKey: l.Key, Leaf: l.Cert}
	for _, c := range l.Chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc
}

func keyPEM(key crypto.Signer) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		panic("truststoretest: marshal key: " + err.Error()) // keys made here always marshal
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}
