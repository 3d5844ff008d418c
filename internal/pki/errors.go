package pki

import (
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	"github.com/trustflow/trustflow/internal/errs"
)

// Error codes. They are stable: the API layer and the CLI switch on them.
const (
	CodeMalformedPEM         = "malformed_pem"         // PEM armour damaged or missing
	CodeMalformedCertificate = "malformed_certificate" // a certificate that does not parse
	CodeMalformedKey         = "malformed_key"         // a private key that does not parse
	CodeMalformedCSR         = "malformed_csr"         // a CSR that does not parse
	CodeMalformedPKCS7       = "malformed_pkcs7"       // a PKCS#7 bundle that does not parse
	CodeMalformedPKCS12      = "malformed_pkcs12"      // a PKCS#12 file that does not parse
	CodeMalformedCRL         = "malformed_crl"         // a CRL that does not parse
	CodeNoCertificates       = "no_certificates"       // the input holds no certificate
	CodeNoPrivateKey         = "no_private_key"        // the input holds no private key
	CodeMultipleKeys         = "multiple_keys"         // the input holds more than one private key
	CodeUnsupportedFormat    = "unsupported_format"    // a format or algorithm pki does not read
	CodeTooLarge             = "too_large"             // input or key-derivation work over the limits
	CodeWrongPassword        = "wrong_password"        // the password does not decrypt the input
	CodePasswordRequired     = "password_required"     // the input is encrypted and no password was given
	CodeBadSignature         = "bad_signature"         // a CSR whose self-signature does not verify
	CodeKeyMismatch          = "key_mismatch"          // private key and certificate do not belong together
	CodeNotACA               = "not_a_ca"              // a certificate used as a CA that may not act as one
	CodeExpired              = "expired"               // validity period ended
	CodeNotYetValid          = "not_yet_valid"         // validity period not started
	CodeNoClientAuthEKU      = "no_client_auth_eku"    // extended key usage excludes TLS client authentication
	CodeChainBroken          = "chain_broken"          // a chain whose elements did not sign each other
	CodeFIPSDisallowed       = "fips_disallowed"       // key or algorithm not approved under FIPS 140-3
	CodeInvalidKeyType       = "invalid_key_type"      // GenerateKey given an unknown key type
	CodeInvalidSubject       = "invalid_subject"       // ParseSubject given a bad distinguished name
	CodeInvalidOption        = "invalid_option"        // VerifyOptions or another argument is wrong
	CodeNoTrustedCAs         = "no_trusted_cas"        // Verify called without roots
	CodeUnknownAuthority     = "unknown_authority"     // the chain does not lead to a trusted CA
	CodeHostnameMismatch     = "hostname_mismatch"     // the certificate is not valid for the name asked for
	CodeIncompatibleUsage    = "incompatible_usage"    // extended key usage forbids the purpose
	CodeNameConstraints      = "name_constraints"      // a CA's name constraints exclude the certificate
	CodePathLength           = "path_length_exceeded"  // too many CAs under a CA's pathLenConstraint, or over MaxChainDepth
	CodeInsecureAlgorithm    = "insecure_algorithm"    // signature algorithm refused (e.g. SHA-1)
	CodeWeakKey              = "weak_key"              // RSA key under 2048 bits or DSA key in a chain
	CodeRevoked              = "revoked"               // listed on its issuer's CRL
	CodeCRLInvalid           = "crl_invalid"           // a CRL that cannot be trusted or used
	CodeCRLExpired           = "crl_expired"           // a CRL past its nextUpdate (or not yet valid)
	CodeCRLMissing           = "crl_missing"           // RequireCRLs set and no CRL covers a certificate
	CodeVerifyFailed         = "verify_failed"         // any other verification failure
)

// newError is how pki fails: an errs.Invalid error with a Code* code, a
// message that names the certificate or field at fault, and the cause for
// logs. Its text is "pki: <message>: <cause>".
func newError(code, hint string, cause error, format string, args ...any) *errs.Error {
	return &errs.Error{Kind: errs.Invalid, Code: code, Message: fmt.Sprintf(format, args...), Hint: hint, Op: "pki", Err: cause}
}

// certName names a certificate for messages: its subject in RFC 4514 form,
// quoted; for an empty subject the first SAN or the serial number.
func certName(c *x509.Certificate) string {
	if c == nil {
		return "'<nil>'"
	}
	if s := c.Subject.String(); s != "" {
		return "'" + s + "'"
	}
	switch {
	case len(c.DNSNames) > 0:
		return "'" + c.DNSNames[0] + "' (empty subject)"
	case len(c.IPAddresses) > 0:
		return "'" + c.IPAddresses[0].String() + "' (empty subject)"
	case len(c.URIs) > 0:
		return "'" + c.URIs[0].String() + "' (empty subject)"
	case c.SerialNumber != nil:
		return "with serial " + serialHex(c) + " (empty subject)"
	}
	return "'' (empty subject)"
}

// quoteName quotes a distinguished name string for messages.
func quoteName(s string) string {
	if s == "" {
		return "'' (empty name)"
	}
	return "'" + s + "'"
}

// listOrNone joins items for messages, or says "none".
func listOrNone(items []string) string {
	if len(items) == 0 {
		return "none"
	}
	return strings.Join(items, ", ")
}

// timeText formats times in messages.
func timeText(t time.Time) string {
	return t.UTC().Format(time.RFC3339)
}
