package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"strings"

	"github.com/trustflow/trustflow/internal/errs"
)

// trustflow's FIPS 140-3 policy for keys and certificates, applied on import
// when `--fips` is set:
//
//   - RSA keys of at least 2048 bits (FIPS 186-5, SP 800-131A).
//   - ECDSA keys on P-256, P-384 or P-521.
//   - Ed25519 keys: FIPS 186-5 approves EdDSA and Go's FIPS 140-3 module
//     implements it, so they are allowed.
//   - Certificate signatures with SHA-2 (or SHA-3) digests, Ed25519, or
//     RSA-PSS; MD5 and SHA-1 signatures are refused. A self-signed
//     certificate's own signature is not checked: nobody relies on a trust
//     anchor's self-signature, and many long-lived roots carry a SHA-1 one.
//   - DSA and unknown key or signature algorithms are refused.

const hintFIPSKey = "use an ECDSA P-256 or P-384 key, or RSA with at least 2048 bits (trustflow generates ecdsa-p256 by default)"

// CheckFIPSKey checks a public key against the FIPS policy above.
func CheckFIPSKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N == nil || k.N.BitLen() < 2048 {
			return newError(CodeFIPSDisallowed, hintFIPSKey, nil, "%s keys are not allowed under FIPS 140-3: RSA needs at least 2048 bits", KeyType(pub))
		}
		return nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return nil
		}
		return newError(CodeFIPSDisallowed, hintFIPSKey, nil, "%s keys are not allowed under FIPS 140-3: ECDSA needs P-256, P-384 or P-521", KeyType(pub))
	case ed25519.PublicKey:
		return nil
	}
	if pub == nil {
		return newError(CodeFIPSDisallowed, hintFIPSKey, nil, "no public key given")
	}
	name := strings.TrimSuffix(strings.TrimPrefix(fmt.Sprintf("%T", pub), "*"), ".PublicKey")
	return newError(CodeFIPSDisallowed, hintFIPSKey, nil, "%s keys are not allowed under FIPS 140-3", name)
}

// fipsSignatureAlgorithms are the certificate signature algorithms the FIPS
// policy accepts.
var fipsSignatureAlgorithms = map[x509.SignatureAlgorithm]bool{
	x509.SHA256WithRSA:    true,
	x509.SHA384WithRSA:    true,
	x509.SHA512WithRSA:    true,
	x509.SHA256WithRSAPSS: true,
	x509.SHA384WithRSAPSS: true,
	x509.SHA512WithRSAPSS: true,
	x509.ECDSAWithSHA256:  true,
	x509.ECDSAWithSHA384:  true,
	x509.ECDSAWithSHA512:  true,
	x509.PureEd25519:      true,
}

// CheckFIPSCertificate checks cert's public key and signature algorithm
// against the FIPS policy above.
func CheckFIPSCertificate(cert *x509.Certificate) error {
	if err := CheckFIPSKey(cert.PublicKey); err != nil {
		e := err.(*errs.Error)
		e.Message = "certificate " + certName(cert) + ": " + e.Message
		return e
	}
	if !fipsSignatureAlgorithms[cert.SignatureAlgorithm] && !isSelfSigned(cert) {
		return newError(CodeFIPSDisallowed, "have the CA reissue the certificate with a SHA-256 (or stronger) signature", nil,
			"certificate %s is signed with %s, which is not allowed under FIPS 140-3", certName(cert), cert.SignatureAlgorithm)
	}
	return nil
}
