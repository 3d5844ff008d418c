package truststore

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"slices"
	"time"

	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/pki"
	"github.com/trustflow/trustflow/internal/policy"
)

// Codes of identity certificates every server would refuse, or the policy
// does.
const (
	CodeCACertificate      = "ca_certificate"
	CodeNoDigitalSignature = "no_digital_signature"
	CodeIsTrustStoreCA     = "is_trust_store_ca"
	CodeLifetimeTooLong    = "lifetime_too_long"
	CodeNoClientAuthEKU    = "client_auth_eku_required"
)

// currentPolicy is the policy in force; without one, the default.
func (s *Service) currentPolicy() *policy.Policy {
	if s.cfg.Policy != nil {
		if p := s.cfg.Policy(); p != nil {
			return p
		}
	}
	p, err := policy.Compile(policy.Default())
	if err != nil {
		panic(fmt.Sprintf("truststore: the default policy does not compile: %v", err)) // a programming error
	}
	return p
}

// identityFaults lists why leaf cannot be an identity under p: a key below
// the policy's size, a CA certificate, a key usage without
// digitalSignature, a lifetime over the policy's maximum, no clientAuth
// extended key usage when the policy requires one. Each is a pki-style
// errs.Invalid error on field cert (or key).
func identityFaults(leaf *x509.Certificate, p *policy.Policy) []*errs.Error {
	var out []*errs.Error
	bad := func(field, code, hint, format string, args ...any) {
		out = append(out, &errs.Error{Kind: errs.Invalid, Code: code, Field: field, Message: fmt.Sprintf(format, args...), Hint: hint, Op: "truststore"})
	}
	d := p.Document().Identities
	name := leaf.Subject.String()
	if e := keyFault(leaf.PublicKey, d, "certificate '"+name+"' has"); e != nil {
		out = append(out, e)
	}
	if leaf.BasicConstraintsValid && leaf.IsCA {
		bad("cert", CodeCACertificate, "import the client certificate the CA issued for trustflow; to trust this CA for servers, add it with `trustflow ca add`",
			"certificate '%s' is a CA certificate (basicConstraints CA:TRUE), not a client identity", name)
	}
	if leaf.KeyUsage != 0 && leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		bad("cert", CodeNoDigitalSignature, "reissue it with keyUsage digitalSignature (OpenSSL: `-addext keyUsage=digitalSignature`)",
			"certificate '%s' has a key usage without digitalSignature, so it cannot sign a TLS handshake and every server refuses it", name)
	}
	if max := p.MaxLifetime(); max > 0 && leaf.NotAfter.Sub(leaf.NotBefore) > max {
		bad("cert", CodeLifetimeTooLong, fmt.Sprintf("issue a certificate valid for at most %s", d.MaxLifetime),
			"certificate '%s' is valid for %d days; the policy's maximum (identities.max_lifetime) is %s", name, int(leaf.NotAfter.Sub(leaf.NotBefore)/(24*time.Hour)), d.MaxLifetime)
	}
	if d.RequireClientAuthEKU && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		bad("cert", CodeNoClientAuthEKU, "reissue it with extendedKeyUsage clientAuth (OpenSSL: `-addext extendedKeyUsage=clientAuth`)",
			"certificate '%s' has no extended key usage clientAuth, which the policy requires (identities.require_client_auth_eku)", name)
	}
	return out
}

// keyFault refuses a public key below the policy's sizes; what says whose
// key it is ("certificate 'CN=x' has", "the generated key is").
func keyFault(pub any, d policy.Identities, what string) *errs.Error {
	bad := func(hint, format string, args ...any) *errs.Error {
		return &errs.Error{Kind: errs.Invalid, Code: pki.CodeWeakKey, Field: "key", Message: fmt.Sprintf(format, args...), Hint: hint, Op: "truststore"}
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if bits := k.N.BitLen(); bits < d.MinRSABits {
			return bad(fmt.Sprintf("use a new key pair: ECDSA P-256 or RSA of at least %d bits (`trustflow identity create NAME --key-type ecdsa-p256`)", d.MinRSABits),
				"%s an RSA-%d key; the policy's minimum (identities.min_rsa_bits) is %d bits, and servers refuse weaker keys", what, bits, d.MinRSABits)
		}
	case *ecdsa.PublicKey:
		if bits := k.Curve.Params().BitSize; bits < d.MinECBits {
			return bad(fmt.Sprintf("use a new key pair on a curve of at least %d bits", d.MinECBits),
				"%s a %d-bit EC key; the policy's minimum (identities.min_ec_bits) is %d", what, bits, d.MinECBits)
		}
	}
	return nil
}

// checkIdentityRules refuses leaf as an identity: for every fault above, and
// when it is itself one of the trust store's CA certificates.
func (s *Service) checkIdentityRules(ctx context.Context, leaf *x509.Certificate) error {
	if faults := identityFaults(leaf, s.currentPolicy()); len(faults) > 0 {
		return faults[0]
	}
	cas, err := s.store.ListCAs(ctx)
	if err != nil {
		return fmt.Errorf("truststore: compare with the trust store's CAs: %w", err)
	}
	fp := pki.FingerprintSHA256(leaf)
	for _, ca := range cas {
		certs, err := pki.ParseCertificates([]byte(ca.PEM))
		if err != nil {
			continue
		}
		for _, c := range certs {
			if pki.FingerprintSHA256(c) == fp {
				return &errs.Error{Kind: errs.Invalid, Code: CodeIsTrustStoreCA, Field: "cert", Op: "truststore",
					Message: fmt.Sprintf("certificate '%s' is a certificate of the trust store's CA %q, not a client identity", leaf.Subject, ca.Name),
					Hint:    "import the client certificate issued for trustflow, with its private key"}
			}
		}
	}
	return nil
}

// CheckPolicy lists the identities whose active certificate breaks p, for
// `policy check`.
func (s *Service) CheckPolicy(ctx context.Context, p *policy.Policy) ([]policy.Violation, error) {
	idents, err := s.List(ctx, 0)
	if err != nil {
		return nil, err
	}
	var out []policy.Violation
	for _, ident := range idents {
		ac, err := s.Active(ctx, ident.Name)
		if err != nil || ac.Certificate == nil || ac.Certificate.Leaf == nil {
			continue // no active version: nothing is presented
		}
		for _, f := range identityFaults(ac.Certificate.Leaf, p) {
			out = append(out, policy.Violation{Kind: "identity", Name: ident.Name, Rule: f.Code, Message: f.Message})
		}
	}
	return out, nil
}
