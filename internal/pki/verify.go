package pki

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/trustflow/trustflow/internal/errs"
)

// Purposes for VerifyOptions.Purpose.
const (
	PurposeServer = "server" // TLS server authentication (serverAuth); the default
	PurposeClient = "client" // TLS client authentication (clientAuth)
	PurposeAny    = "any"    // no extended key usage requirement
)

// NoIntermediates is the VerifyOptions.MaxChainDepth that allows only chains
// in which a trusted CA issued the leaf directly.
const NoIntermediates = -1

// VerifyOptions says what Verify checks. The zero value of each field means
// its default.
type VerifyOptions struct {
	// Roots are the trusted CAs (trust anchors). Required: Verify never falls
	// back to the system roots; callers that want them add them here.
	Roots []*x509.Certificate
	// Intermediates are untrusted certificates that may complete a chain,
	// normally those the peer sent after its leaf.
	Intermediates []*x509.Certificate
	// DNSName is the host name or IP literal the leaf must be valid for.
	// Empty means no name check.
	DNSName string
	// Time is when the chain must be valid. Defaults to now.
	Time time.Time
	// Purpose is the extended key usage the chain must allow: PurposeServer
	// (the default), PurposeClient or PurposeAny.
	Purpose string
	// CRLs are revocation lists to check the chain against. A CRL applies to
	// a certificate when its issuer name matches the certificate's issuer; it
	// must then be signed by that issuer (with cRLSign if the issuer has a
	// keyUsage extension), carry a non-critical CRL number, have no
	// unsupported critical extension and be current at Time, or verification
	// fails. Trust anchors are not checked. Certificates for which no CRL
	// applies pass unless RequireCRLs is set.
	CRLs []*x509.RevocationList
	// RequireCRLs makes a missing CRL for any non-root certificate of the
	// chain a failure (Code "crl_missing"). Defaults to false.
	RequireCRLs bool
	// MaxChainDepth is the largest number of intermediate CAs allowed between
	// the leaf and the trust anchor; self-issued intermediates (CA key
	// rollover) do not count, as in RFC 5280 path length. 0 means no limit;
	// NoIntermediates allows none.
	MaxChainDepth int
}

// VerifyResult is a successful verification.
type VerifyResult struct {
	// Chain runs from the leaf to the trust anchor.
	Chain []*x509.Certificate
}

// Verify checks that leaf chains to one of opts.Roots through
// opts.Intermediates, for opts.Purpose and opts.DNSName at opts.Time, and
// that no certificate of the chain is revoked by opts.CRLs. Path building,
// signature, validity period, name constraint, path length, key usage and
// policy checks are those of crypto/x509.Certificate.Verify. Verify adds CRL
// checking, MaxChainDepth, a key-strength floor (no RSA key under MinRSABits
// and no DSA key anywhere in the chain: Code "weak_key") and a diagnosis of
// failures: the returned *errs.Error names the certificate at fault, says how to
// fix it, and wraps the crypto/x509 error. When several chains are possible,
// the first that passes every check is returned.
//
// It is the one verification path trustflow uses: `ca verify`, connectors'
// VerifyConnection and the probe all call it.
func Verify(leaf *x509.Certificate, opts VerifyOptions) (VerifyResult, error) {
	if leaf == nil {
		return VerifyResult{}, newError(CodeInvalidOption, "pass the peer's leaf certificate", nil, "no certificate to verify")
	}
	if len(opts.Roots) == 0 {
		return VerifyResult{}, newError(CodeNoTrustedCAs, "import the CA that issued the peer's certificate into the trust store (or enable system roots)", nil,
			"no trusted CAs to verify certificate %s against", certName(leaf))
	}
	var ekus []x509.ExtKeyUsage
	switch opts.Purpose {
	case "", PurposeServer:
		ekus = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	case PurposeClient:
		ekus = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	case PurposeAny:
		ekus = []x509.ExtKeyUsage{x509.ExtKeyUsageAny}
	default:
		return VerifyResult{}, newError(CodeInvalidOption, "use \"server\", \"client\" or \"any\"", nil, "unknown verification purpose %q", opts.Purpose)
	}
	if opts.Time.IsZero() {
		opts.Time = time.Now()
	}
	roots := x509.NewCertPool()
	for _, c := range opts.Roots {
		if c != nil {
			roots.AddCert(c)
		}
	}
	inter := x509.NewCertPool()
	for _, c := range opts.Intermediates {
		if c != nil {
			inter.AddCert(c)
		}
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		DNSName:       opts.DNSName,
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   opts.Time,
		KeyUsages:     ekus,
	})
	if err != nil {
		return VerifyResult{}, diagnose(leaf, err, &opts)
	}
	var first, revoked *errs.Error
	for _, chain := range chains {
		e := checkChainDepth(chain, opts.MaxChainDepth)
		if e == nil {
			e = checkChainKeys(chain)
		}
		if e == nil {
			e = checkRevocation(chain, &opts)
		}
		if e == nil {
			return VerifyResult{Chain: chain}, nil
		}
		if first == nil {
			first = e
		}
		if revoked == nil && e.Code == CodeRevoked {
			revoked = e
		}
	}
	if revoked != nil {
		return VerifyResult{}, revoked
	}
	return VerifyResult{}, first
}

// checkChainDepth enforces VerifyOptions.MaxChainDepth.
func checkChainDepth(chain []*x509.Certificate, maxDepth int) *errs.Error {
	if maxDepth == 0 {
		return nil
	}
	limit := max(maxDepth, 0)
	n := 0
	for i := 1; i < len(chain)-1; i++ {
		c := chain[i]
		if !bytes.Equal(c.RawSubject, c.RawIssuer) {
			n++
		}
	}
	if n <= limit {
		return nil
	}
	return newError(CodePathLength, "have the peer use a certificate from a CA closer to the trust anchor, or raise the connector's maximum chain depth", nil,
		"the chain of certificate %s has %d intermediate CAs, over the limit of %d: %s",
		certName(chain[0]), n, limit, chainNames(chain))
}

// MinRSABits is the smallest RSA key Verify accepts anywhere in a chain
// (NIST SP 800-131A and the CA/Browser Forum baseline requirements).
const MinRSABits = 2048

// checkChainKeys refuses weak or obsolete public keys in a chain: RSA keys
// under MinRSABits and DSA keys.
func checkChainKeys(chain []*x509.Certificate) *errs.Error {
	for i, c := range chain {
		role := "intermediate CA"
		switch i {
		case 0:
			role = "certificate"
		case len(chain) - 1:
			role = "trusted CA"
		}
		if k, ok := c.PublicKey.(*rsa.PublicKey); ok && k.N.BitLen() < MinRSABits {
			return newError(CodeWeakKey, "reissue it with an ECDSA P-256 key or an RSA key of at least 2048 bits", nil,
				"%s %s has a %d-bit RSA key; trustflow requires at least %d bits", role, certName(c), k.N.BitLen(), MinRSABits)
		}
		if c.PublicKeyAlgorithm == x509.DSA {
			return newError(CodeWeakKey, "reissue it with an ECDSA P-256 key or an RSA key of at least 2048 bits", nil,
				"%s %s has a DSA key, which TLS no longer uses", role, certName(c))
		}
	}
	return nil
}

// chainNames renders a chain for messages.
func chainNames(chain []*x509.Certificate) string {
	names := make([]string, len(chain))
	for i, c := range chain {
		names[i] = certName(c)
	}
	return strings.Join(names, " <- ")
}

// diagnosisBudget bounds the signature checks a diagnosis may make, as
// crypto/x509 bounds its own: the peer chooses the intermediates, and may send
// many with the same name.
type diagnosisBudget struct{ left int }

const maxDiagnosisSignatureChecks = 100

// issuedBy is the package's issuedBy within the budget; once the budget is
// spent, nothing issued anything.
func (b *diagnosisBudget) issuedBy(child, parent *x509.Certificate) bool {
	if !bytes.Equal(child.RawIssuer, parent.RawSubject) || b.left <= 0 {
		return false
	}
	b.left--
	return issuedBy(child, parent)
}

// diagnose turns a crypto/x509 verification error into an *errs.Error naming the
// certificate at fault.
func diagnose(leaf *x509.Certificate, err error, opts *VerifyOptions) *errs.Error {
	var (
		uaErr   x509.UnknownAuthorityError
		invErr  x509.CertificateInvalidError
		hostErr x509.HostnameError
		algErr  x509.InsecureAlgorithmError
		critErr x509.UnhandledCriticalExtension
		cvErr   x509.ConstraintViolationError
	)
	switch {
	case errors.As(err, &hostErr):
		return hostnameError(hostErr, err)
	case errors.As(err, &uaErr):
		// crypto/x509 names the certificate whose issuer it could not find,
		// which may be an intermediate; the diagnosis walks up from the
		// leaf to name the whole path.
		return diagnoseUnknownAuthority(leaf, err, opts)
	case errors.As(err, &invErr):
		return diagnoseInvalid(leaf, invErr, err, opts)
	case errors.As(err, &algErr):
		return newError(CodeInsecureAlgorithm, "have the CA reissue the certificate with a SHA-256 (or stronger) signature", err,
			"certificate %s is signed with %s, which is not accepted", certName(leaf), x509.SignatureAlgorithm(algErr))
	case errors.As(err, &critErr):
		return newError(CodeVerifyFailed, "have the CA reissue the certificate without the unknown critical extension", err,
			"certificate %s has a critical extension trustflow does not understand (%s)", certName(leaf), oidList(leaf.UnhandledCriticalExtensions))
	case errors.As(err, &cvErr):
		return newError(CodeNotACA, "the issuing certificate is not a CA; import the real issuing CA", err,
			"a certificate in the chain of %s is not allowed to sign certificates", certName(leaf))
	case strings.Contains(err.Error(), "signature check attempts limit"):
		return newError(CodeVerifyFailed, "have the peer send only the intermediates of its own chain", err,
			"building a chain for certificate %s gave up: too many candidate issuers", certName(leaf))
	}
	return newError(CodeVerifyFailed, "check the certificate and chain with `trustflow ca verify`", err,
		"certificate %s could not be verified", certName(leaf))
}

func oidList(oids []asn1.ObjectIdentifier) string {
	s := make([]string, len(oids))
	for i, o := range oids {
		s[i] = o.String()
	}
	return strings.Join(s, ", ")
}

func hostnameError(h x509.HostnameError, err error) *errs.Error {
	c := h.Certificate
	host := strings.TrimSuffix(strings.TrimPrefix(h.Host, "["), "]")
	var names []string
	names = append(names, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	san := "DNS:" + host
	if net.ParseIP(host) != nil {
		san = "IP:" + host
	}
	hint := fmt.Sprintf("connect using a name the certificate lists, or reissue it with subjectAltName %s (OpenSSL: `-addext subjectAltName=%s`)", san, san)
	if len(names) == 0 {
		msg := fmt.Sprintf("certificate %s has no subjectAltName, so it is valid for no host name, not even %q", certName(c), host)
		if c.Subject.CommonName != "" {
			msg += fmt.Sprintf(" (the Common Name %q is ignored, as by all current TLS clients)", c.Subject.CommonName)
		}
		return &errs.Error{Kind: errs.Invalid, Code: CodeHostnameMismatch, Message: msg, Hint: hint, Op: "pki", Err: err}
	}
	if len(names) > 20 {
		names = append(names[:20], fmt.Sprintf("and %d more", len(names)-20))
	}
	return newError(CodeHostnameMismatch, hint, err, "certificate %s is valid for %s, not %q",
		certName(c), strings.Join(names, ", "), host)
}

// purposeText names the purpose for messages.
func purposeText(p string) string {
	switch p {
	case PurposeClient:
		return "TLS client authentication (clientAuth)"
	case PurposeAny:
		return "any purpose"
	}
	return "TLS server authentication (serverAuth)"
}

func purposeEKU(p string) x509.ExtKeyUsage {
	if p == PurposeClient {
		return x509.ExtKeyUsageClientAuth
	}
	return x509.ExtKeyUsageServerAuth
}

func allowsEKU(c *x509.Certificate, want x509.ExtKeyUsage) bool {
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return true
	}
	return slices.Contains(c.ExtKeyUsage, want) || slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageAny)
}

func diagnoseInvalid(leaf *x509.Certificate, e x509.CertificateInvalidError, err error, opts *VerifyOptions) *errs.Error {
	c := e.Cert
	if c == nil {
		c = leaf
	}
	role := roleOf(c, leaf, opts)
	path := pathTo(leaf, c, opts.Intermediates)
	who := role + " " + certName(c)
	if len(path) > 1 {
		who += ", which issued " + certName(path[len(path)-2]) + ","
	}
	switch e.Reason {
	case x509.Expired:
		return validityError(c, who, opts.Time, err)
	case x509.NotAuthorizedToSign:
		return newError(CodeNotACA, "import the real issuing CA; a certificate without CA:TRUE cannot issue others", err,
			"%s is not a CA, so it may not issue certificates", who)
	case x509.TooManyIntermediates:
		if len(path) > 1 {
			return pathLenError(c, role, leaf, len(path)-2, err)
		}
		return newError(CodePathLength, hintPathLen, err,
			"%s %s allows at most %d intermediate CAs below it (pathLenConstraint), and the chain of %s has more",
			role, certName(c), c.MaxPathLen, certName(leaf))
	case x509.CANotAuthorizedForThisName, x509.UnconstrainedName, x509.NameConstraintsWithoutSANs, x509.TooManyConstraints:
		detail := e.Detail
		if detail == "" {
			detail = strings.TrimPrefix(err.Error(), "x509: ")
		}
		return newError(CodeNameConstraints, "a CA's name constraints exclude a name in the certificate: use a certificate from a CA allowed to issue for that name", err,
			"certificate %s is outside the names its CAs may issue for: %s", certName(leaf), detail)
	case x509.IncompatibleUsage, x509.CANotAuthorizedForExtKeyUsage:
		want := purposeEKU(opts.Purpose)
		if !allowsEKU(leaf, want) {
			return newError(CodeIncompatibleUsage, fmt.Sprintf("reissue the certificate with extendedKeyUsage %s (OpenSSL: `-addext extendedKeyUsage=%s`)", ekuText[want], ekuText[want]), err,
				"certificate %s may not be used for %s: its extended key usage is %s", certName(leaf), purposeText(opts.Purpose), listOrNone(ekuNames(leaf)))
		}
		return newError(CodeIncompatibleUsage, "a CA's extended key usage restricts what it may issue for; use a certificate from a CA allowed for this purpose", err,
			"a CA in the chain of certificate %s may not issue certificates for %s", certName(leaf), purposeText(opts.Purpose))
	case x509.NameMismatch:
		return newError(CodeChainBroken, "import the CA that issued the certificate", err,
			"the issuer name of certificate %s does not match its issuing CA's subject", certName(c))
	}
	return newError(CodeVerifyFailed, "check the chain with `openssl verify -CAfile ca.pem -untrusted chain.pem cert.pem`", err,
		"certificate %s could not be verified: %s", certName(leaf), strings.TrimPrefix(err.Error(), "x509: "))
}

// roleOf names c's place in the chain for messages.
func roleOf(c, leaf *x509.Certificate, opts *VerifyOptions) string {
	switch {
	case c == leaf || c.Equal(leaf):
		return "certificate"
	case slices.ContainsFunc(opts.Roots, c.Equal):
		return "trusted CA"
	}
	return "intermediate CA"
}

// validityError reports that c, described by who, is outside its validity
// period at now.
func validityError(c *x509.Certificate, who string, now time.Time, cause error) *errs.Error {
	if now.Before(c.NotBefore) {
		return newError(CodeNotYetValid, "check this machine's clock, or wait until the certificate becomes valid", cause,
			"%s is not valid until %s (checked at %s)", who, timeText(c.NotBefore), timeText(now))
	}
	return newError(CodeExpired, renewHint(c), cause,
		"%s expired at %s (checked at %s)", who, timeText(c.NotAfter), timeText(now))
}

// diagnoseUnknownAuthority explains why no chain from leaf reached a trusted
// CA, by walking up the candidate issuers itself: crypto/x509 keeps the
// reason in unexported fields.
func diagnoseUnknownAuthority(leaf *x509.Certificate, cause error, opts *VerifyOptions) *errs.Error {
	budget := &diagnosisBudget{left: maxDiagnosisSignatureChecks}
	var followed []*x509.Certificate
	cert := leaf
	seen := map[*x509.Certificate]bool{}
	for depth := 0; depth < 16; depth++ {
		followed = append(followed, cert)
		seen[cert] = true
		var sameName []*x509.Certificate
		for _, pool := range [][]*x509.Certificate{opts.Roots, opts.Intermediates} {
			for _, p := range pool {
				if p != nil && bytes.Equal(p.RawSubject, cert.RawIssuer) {
					sameName = append(sameName, p)
				}
			}
		}
		var next *x509.Certificate
		var problem *errs.Error
		for _, p := range sameName {
			if seen[p] || !budget.issuedBy(cert, p) {
				continue
			}
			role := roleOf(p, leaf, opts)
			if e := cert.CheckSignatureFrom(p); e != nil {
				var alg x509.InsecureAlgorithmError
				switch {
				case errors.As(e, &alg):
					problem = newError(CodeInsecureAlgorithm, "have the CA reissue the certificate with a SHA-256 (or stronger) signature", cause,
						"certificate %s is signed by %s %s with %s, which is not accepted", certName(cert), role, certName(p), x509.SignatureAlgorithm(alg))
				default:
					problem = newError(CodeNotACA, "import the real issuing CA; a certificate without CA:TRUE (and keyCertSign) cannot issue others", cause,
						"certificate %s was signed by %s %s, which is not a CA", certName(cert), role, certName(p))
				}
				continue
			}
			if below := len(followed) - 1; p.BasicConstraintsValid && (p.MaxPathLen > 0 || p.MaxPathLenZero) && below > p.MaxPathLen {
				problem = pathLenError(p, role, leaf, below, cause)
				continue
			}
			if opts.Time.Before(p.NotBefore) || opts.Time.After(p.NotAfter) {
				problem = validityError(p, role+" "+certName(p)+", which issued "+certName(cert)+",", opts.Time, cause)
				continue
			}
			if role == "trusted CA" {
				// A valid trusted issuer: the chain failed on a constraint
				// crypto/x509 only reports in its hint.
				return newError(CodeVerifyFailed, "check the chain with `openssl verify -CAfile ca.pem -untrusted chain.pem cert.pem`", cause,
					"certificate %s was issued by trusted CA %s, but the chain does not satisfy its constraints (path length, name constraints or key usage)",
					certName(cert), certName(p))
			}
			next = p
		}
		if problem != nil && next == nil {
			return problem
		}
		if next != nil {
			cert = next
			continue
		}
		if len(sameName) > 0 {
			hint := fmt.Sprintf("the CA %s was probably re-keyed, or another CA has the same name: import the CA certificate whose key signed this one", quoteName(cert.Issuer.String()))
			if len(cert.AuthorityKeyId) > 0 {
				hint += fmt.Sprintf(" (its Subject Key Identifier is %x, the certificate's Authority Key Identifier)", cert.AuthorityKeyId)
			}
			return newError(CodeUnknownAuthority, hint, cause,
				"certificate %s names %s as its issuer, but no CA of that name has the key that signed it%s",
				certName(cert), quoteName(cert.Issuer.String()), followedText(followed))
		}
		if budget.issuedBy(cert, cert) {
			return newError(CodeUnknownAuthority,
				"if you trust it, import it as a CA (with --allow-leaf-anchor when it is not a CA certificate); otherwise have the peer use a certificate from a trusted CA",
				cause, "certificate %s is self-signed and is not among the trusted CAs%s", certName(cert), followedText(followed))
		}
		hint := fmt.Sprintf("import the CA certificate of %s into the trust store, or, if it is an intermediate, have the peer send it along with its certificate", quoteName(cert.Issuer.String()))
		if len(cert.IssuingCertificateURL) > 0 {
			hint += " (it can be downloaded from " + cert.IssuingCertificateURL[0] + ")"
		}
		return newError(CodeUnknownAuthority, hint, cause,
			"certificate %s was issued by %s, which is not a trusted CA and which none of the trusted CAs signed%s",
			certName(cert), quoteName(cert.Issuer.String()), followedText(followed))
	}
	return newError(CodeUnknownAuthority, "check the chain with `openssl verify -CAfile ca.pem -untrusted chain.pem cert.pem`", cause,
		"certificate %s does not chain to a trusted CA", certName(leaf))
}

const hintPathLen = "use a chain that respects the CA's pathLenConstraint, or have the CA reissued without it"

func pathLenError(ca *x509.Certificate, role string, leaf *x509.Certificate, below int, cause error) *errs.Error {
	return newError(CodePathLength, hintPathLen, cause,
		"%s %s allows at most %d intermediate CAs below it (pathLenConstraint), but the chain of %s has %d",
		role, certName(ca), ca.MaxPathLen, certName(leaf), below)
}

// pathTo finds how leaf chains up to ca through intermediates, by names and
// signatures: leaf first, ca last. It returns nil when it finds no path.
func pathTo(leaf, ca *x509.Certificate, intermediates []*x509.Certificate) []*x509.Certificate {
	budget := &diagnosisBudget{left: maxDiagnosisSignatureChecks}
	visited := map[*x509.Certificate]bool{}
	var walk func(cur *x509.Certificate, path []*x509.Certificate) []*x509.Certificate
	walk = func(cur *x509.Certificate, path []*x509.Certificate) []*x509.Certificate {
		path = append(path, cur)
		if cur.Equal(ca) {
			return path
		}
		if len(path) > 8 {
			return nil
		}
		if budget.issuedBy(cur, ca) {
			return append(path, ca)
		}
		for _, c := range intermediates {
			if c != nil && !visited[c] && !slices.ContainsFunc(path, c.Equal) && budget.issuedBy(cur, c) {
				visited[c] = true
				if found := walk(c, path); found != nil {
					return found
				}
			}
		}
		return nil
	}
	return walk(leaf, nil)
}

func followedText(followed []*x509.Certificate) string {
	if len(followed) < 2 {
		return ""
	}
	return " (chain followed: " + chainNames(followed) + ")"
}
