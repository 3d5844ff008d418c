package pki

import (
	"bytes"
	"crypto"
	"crypto/fips140"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/trustflow/trustflow/internal/errs"

	"software.sslmate.com/src/go-pkcs12"
)

const (
	hintPKCS12Export = "re-export it with `openssl pkcs12 -export -in cert.pem -inkey key.pem -certfile chain.pem -out identity.p12` (OpenSSL 3 defaults: AES-256-CBC, PBKDF2, SHA-256 MAC)"
	hintPKCS12FIPS   = "FIPS 140-only mode refuses SHA-1 MACs, 3DES/RC2 encryption and PBKDF2 salts shorter than 16 bytes, and `openssl pkcs12 -export` writes 8-byte salts: re-export with a tool that writes PBES2 (AES-256-CBC, PBKDF2-HMAC-SHA256, 16-byte salts) and a SHA-256 or PBMAC1 MAC, or import the certificate and key as PEM (`openssl pkcs12 -in identity.p12 -nokeys -out cert.pem`, `openssl pkcs12 -in identity.p12 -nocerts -noenc -out key.pem`, over a trusted channel), or better, generate the key in trustflow and have a CSR signed"
	hintP12Password  = "check the password: `openssl pkcs12 -in identity.p12 -noout` asks for it and says whether it is right (add -legacy for old 3DES/RC2 files)"
)

// isPKCS12 reports whether der starts like a PKCS#12 PFX (version 3).
func isPKCS12(der []byte) bool {
	var pfx struct {
		Version  int
		AuthSafe struct {
			ContentType asn1.ObjectIdentifier
			Content     asn1.RawValue `asn1:"tag:0,explicit,optional"`
		}
		MacData asn1.RawValue `asn1:"optional"`
	}
	rest, err := asn1.Unmarshal(der, &pfx)
	return err == nil && len(rest) == 0 && pfx.Version == 3
}

// ParsePKCS12 decodes a PKCS#12 (.p12/.pfx) file holding one private key, its
// certificate and optionally the CA chain. It reads legacy files (3DES and
// RC2 with a SHA-1 MAC), modern ones (PBES2 with AES-256-CBC and PBKDF2, SHA-2
// MAC) and PBMAC1 (RFC 9579) MACs. leaf is the certificate matching key,
// whatever its position in the file; chain holds the other certificates,
// issuers of leaf first in signing order.
//
// A wrong password gives Code "wrong_password" ("password_required" when
// password is empty). Under GODEBUG=fips140=only, files protected with
// algorithms FIPS 140-3 does not approve give Code "fips_disallowed".
func ParsePKCS12(data []byte, password string) (key crypto.Signer, leaf *x509.Certificate, chain []*x509.Certificate, err error) {
	if e := checkSize(data, "PKCS#12"); e != nil {
		return nil, nil, nil, e
	}
	if isPEM(data) {
		return nil, nil, nil, newError(CodeUnsupportedFormat,
			"import the PEM certificate and key directly, or bundle them with `openssl pkcs12 -export -in cert.pem -inkey key.pem -certfile chain.pem -out identity.p12`",
			nil, "input is PEM text, not a binary PKCS#12 file")
	}
	if !utf8.ValidString(password) {
		return nil, nil, nil, newError(CodeInvalidOption, "give the password as UTF-8 text", nil, "the PKCS#12 password is not valid UTF-8")
	}
	if !isPKCS12(data) {
		if der, err := base64.StdEncoding.DecodeString(string(bytes.Join(bytes.Fields(data), nil))); err == nil && isPKCS12(der) {
			return nil, nil, nil, newError(CodeMalformedPKCS12, "decode it first, e.g. `base64 -d identity.p12.b64 > identity.p12`", nil,
				"input is a base64-encoded PKCS#12 file; trustflow reads the binary form")
		}
		if what := describeDER(data); what != "" {
			return nil, nil, nil, newError(CodeMalformedPKCS12, "give the .p12/.pfx file that holds the certificate and its key", nil,
				"input is %s, not a PKCS#12 file", what)
		}
		return nil, nil, nil, newError(CodeMalformedPKCS12, hintPKCS12Export, nil, "input is not a PKCS#12 file")
	}
	if e := checkKDFWork(data, "the PKCS#12 file"); e != nil {
		return nil, nil, nil, e
	}

	defer func() {
		if r := recover(); r != nil {
			hint := hintPKCS12Export
			if fips140.Enforced() {
				hint = hintPKCS12FIPS
			}
			key, leaf, chain, err = nil, nil, nil, recoveredCryptoPanic(r, "the PKCS#12 file", hint)
		}
	}()
	rawKey, first, rest, derr := pkcs12.DecodeChain(data, password)
	if derr != nil {
		return nil, nil, nil, pkcs12Error(derr, password)
	}
	key, err = toSigner(rawKey)
	if err != nil {
		return nil, nil, nil, err
	}
	certs := append([]*x509.Certificate{first}, rest...)
	for i, c := range certs {
		if publicKeyEqual(key.Public(), c.PublicKey) {
			leaf = c
			certs = append(certs[:i:i], certs[i+1:]...)
			break
		}
	}
	if leaf == nil {
		return nil, nil, nil, newError(CodeKeyMismatch, hintPKCS12Export, nil,
			"the PKCS#12 file's private key (%s) matches none of its %d certificates (first: %s)",
			KeyType(key.Public()), len(certs), certName(first))
	}
	return key, leaf, orderChain(leaf, certs), nil
}

func pkcs12Error(err error, password string) *errs.Error {
	var notImpl pkcs12.NotImplementedError
	msg := err.Error()
	switch {
	case errors.Is(err, pkcs12.ErrIncorrectPassword), errors.Is(err, pkcs12.ErrDecryption):
		if password == "" {
			return newError(CodePasswordRequired, "give the password the PKCS#12 file was exported with", err,
				"the PKCS#12 file is password-protected and no password was given")
		}
		return newError(CodeWrongPassword, hintP12Password, err, "the password does not decrypt the PKCS#12 file")
	case fips140.Enforced() && strings.Contains(msg, "FIPS"):
		return newError(CodeFIPSDisallowed, hintPKCS12FIPS, err,
			"the PKCS#12 file is protected with algorithms that FIPS 140-only mode does not allow")
	case errors.As(err, &notImpl):
		return newError(CodeUnsupportedFormat, hintPKCS12Export, err,
			"the PKCS#12 file uses a feature trustflow does not read (%s)", strings.TrimPrefix(msg, "pkcs12: "))
	case strings.Contains(msg, "private key missing"):
		return newError(CodeNoPrivateKey,
			"this file holds only certificates: import them as CA certificates, or export the identity with its key (`openssl pkcs12 -export -inkey key.pem ...`)",
			err, "the PKCS#12 file holds no private key")
	case strings.Contains(msg, "certificate missing"):
		return newError(CodeNoCertificates, hintPKCS12Export, err, "the PKCS#12 file holds no certificate")
	case strings.Contains(msg, "exactly one key bag"):
		return newError(CodeMultipleKeys, "export one identity per file", err, "the PKCS#12 file holds more than one private key")
	case strings.Contains(msg, "unknown") || strings.Contains(msg, "not supported") || strings.Contains(msg, "unsupported"):
		return newError(CodeUnsupportedFormat, hintPKCS12Export, err, "the PKCS#12 file uses an algorithm trustflow does not read")
	}
	return newError(CodeMalformedPKCS12, hintPKCS12Export, err, "the PKCS#12 file is malformed")
}

// orderChain returns certs ordered from leaf's issuer upwards as far as the
// signatures link them, followed by the certificates that do not link, in
// their original order.
func orderChain(leaf *x509.Certificate, certs []*x509.Certificate) []*x509.Certificate {
	left := append([]*x509.Certificate(nil), certs...)
	var out []*x509.Certificate
	for cur := leaf; len(left) > 0 && !isSelfSigned(cur); {
		next := slices.IndexFunc(left, func(c *x509.Certificate) bool { return issuedBy(cur, c) })
		if next < 0 {
			break
		}
		cur = left[next]
		out = append(out, cur)
		left = slices.Delete(left, next, next+1)
	}
	return append(out, left...)
}
