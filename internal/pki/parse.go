package pki

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"

	"github.com/trustflow/trustflow/internal/errs"
)

// MaxInputSize is the largest input any parser in pki accepts (4 MiB): far
// more than a CA bundle, key or PKCS#12 file needs, small enough that parsing
// cannot exhaust memory.
const MaxInputSize = 4 << 20

// maxItems bounds how many PEM blocks or certificates one input may hold.
const maxItems = 10000

const hintPEMCert = "provide the certificate as PEM (-----BEGIN CERTIFICATE-----) or DER; convert with `openssl x509 -in cert -out cert.pem` (add `-inform DER` for DER input)"

func checkSize(data []byte, what string) *errs.Error {
	if len(data) > MaxInputSize {
		return newError(CodeTooLarge, fmt.Sprintf("split the input; pki reads at most %d bytes at a time", MaxInputSize), nil,
			"%s input is %d bytes, over the %d-byte limit", what, len(data), MaxInputSize)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return newError(CodeMalformedPEM, "the file or field is empty: check the path, or that the paste was not cut off", nil,
			"%s input is empty", what)
	}
	return nil
}

// isPEM reports whether data holds a PEM begin line.
func isPEM(data []byte) bool {
	return bytes.Contains(data, []byte("-----BEGIN "))
}

// decodePEM returns all PEM blocks in data, ignoring text around them. A begin
// line whose block does not decode (bad base64, missing end line) is an error
// naming the block, rather than being skipped silently.
func decodePEM(data []byte) ([]*pem.Block, *errs.Error) {
	var (
		blocks []*pem.Block
		begins []string // types announced by begin lines, in order
	)
	for line := range bytes.Lines(data) {
		line = bytes.TrimSpace(line)
		if typ, ok := bytes.CutPrefix(line, []byte("-----BEGIN ")); ok && bytes.HasSuffix(typ, []byte("-----")) {
			begins = append(begins, string(bytes.TrimSuffix(typ, []byte("-----"))))
			if len(begins) > maxItems {
				return nil, newError(CodeTooLarge, "split the bundle into smaller files", nil,
					"PEM input holds more than %d blocks", maxItems)
			}
		}
	}
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		blocks = append(blocks, b)
	}
	if len(blocks) < len(begins) {
		// Find the first announced block that did not decode.
		i := 0
		for i < len(blocks) && blocks[i].Type == begins[i] {
			i++
		}
		return nil, newError(CodeMalformedPEM,
			"check that the block was copied whole: it needs its -----END "+begins[i]+"----- line and unbroken base64 between the lines",
			nil, "PEM block #%d (%s) is damaged: bad base64 or a missing end line", i+1, begins[i])
	}
	if len(blocks) == 0 {
		return nil, newError(CodeMalformedPEM, "check that the file holds PEM blocks (-----BEGIN ...-----)", nil, "no PEM block found")
	}
	return blocks, nil
}

// pemTypes lists the distinct block types for messages.
func pemTypes(blocks []*pem.Block) string {
	var types []string
	for _, b := range blocks {
		if !slices.Contains(types, b.Type) {
			types = append(types, b.Type)
		}
	}
	return strings.Join(types, ", ")
}

// ParseCertificates parses certificates from PEM (any number of CERTIFICATE
// blocks, text between them ignored; PKCS7 blocks and CERTIFICATE blocks that
// hold a PKCS#7 bundle are expanded), DER (one certificate, or several
// concatenated) or a DER/BER PKCS#7 certs-only bundle (.p7b, .p7c). It returns
// at least one certificate or a *errs.Error.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	if err := checkSize(data, "certificate"); err != nil {
		return nil, err
	}
	if !isPEM(data) {
		return parseDERCertificates(data)
	}
	blocks, perr := decodePEM(data)
	if perr != nil {
		return nil, perr
	}
	var certs []*x509.Certificate
	for i, b := range blocks {
		var got []*x509.Certificate
		switch b.Type {
		case "CERTIFICATE", "X509 CERTIFICATE":
			c, err := x509.ParseCertificate(b.Bytes)
			if err == nil {
				got = []*x509.Certificate{c}
				break
			}
			if isPKCS7(b.Bytes) {
				p7certs, perr := parsePKCS7(b.Bytes)
				if perr != nil {
					return nil, perr
				}
				got = p7certs
				break
			}
			return nil, newError(CodeMalformedCertificate, certParseHint(err), err,
				"PEM block #%d (%s) is not a valid X.509 certificate", i+1, b.Type)
		case "TRUSTED CERTIFICATE":
			// OpenSSL's trusted-certificate form: the certificate followed by
			// trust settings. The certificate is the first element.
			c, err := parseTrustedCertificate(b.Bytes)
			if err != nil {
				return nil, newError(CodeMalformedCertificate, certParseHint(err), err,
					"PEM block #%d (TRUSTED CERTIFICATE) is not a valid X.509 certificate", i+1)
			}
			got = []*x509.Certificate{c}
		case "PKCS7", "PKCS #7 SIGNED DATA", "CMS":
			p7certs, perr := parsePKCS7(b.Bytes)
			if perr != nil {
				return nil, perr
			}
			got = p7certs
		default:
			continue // keys, CRLs, parameters: not certificates
		}
		certs = append(certs, got...)
		if len(certs) > maxItems {
			return nil, newError(CodeTooLarge, "split the bundle into smaller files", nil,
				"input holds more than %d certificates", maxItems)
		}
	}
	if len(certs) == 0 {
		return nil, newError(CodeNoCertificates, noCertHint(blocks), nil,
			"no certificate found: the PEM data holds only %s blocks", pemTypes(blocks))
	}
	return certs, nil
}

func noCertHint(blocks []*pem.Block) string {
	for _, b := range blocks {
		if strings.Contains(b.Type, "PRIVATE KEY") {
			return "this looks like a private key; import it as the key, and give the certificate (-----BEGIN CERTIFICATE-----) separately"
		}
		if b.Type == "CERTIFICATE REQUEST" || b.Type == "NEW CERTIFICATE REQUEST" {
			return "this is a certificate signing request; have it signed by your CA and import the certificate the CA returns"
		}
	}
	return hintPEMCert
}

func certParseHint(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "negative serial"):
		return "the certificate has a negative serial number, which RFC 5280 forbids; reissue it from a compliant CA"
	case strings.Contains(msg, "trailing data"):
		return "the DER data has extra bytes after the certificate; re-export it with `openssl x509 -in cert -out cert.pem`"
	}
	return "check that the certificate was copied whole; `openssl x509 -in cert -noout -text` shows whether it parses"
}

// parseTrustedCertificate reads the certificate at the start of an OpenSSL
// TRUSTED CERTIFICATE block, ignoring the trust settings after it.
func parseTrustedCertificate(der []byte) (*x509.Certificate, error) {
	n, ok := derElementLen(der)
	if !ok {
		return nil, fmt.Errorf("malformed DER")
	}
	return x509.ParseCertificate(der[:n])
}

// derElementLen returns the length of the first DER element of b (header and
// content), or false if b does not start with a well-formed definite-length
// element.
func derElementLen(b []byte) (int, bool) {
	if len(b) < 2 || b[0]&0x1f == 0x1f {
		return 0, false
	}
	l := int(b[1])
	hdr := 2
	if l&0x80 != 0 {
		n := l & 0x7f
		if n == 0 || n > 4 || len(b) < 2+n {
			return 0, false
		}
		l = 0
		for _, x := range b[2 : 2+n] {
			l = l<<8 | int(x)
		}
		hdr += n
	}
	if l < 0 || hdr+l > len(b) {
		return 0, false
	}
	return hdr + l, true
}

func parseDERCertificates(data []byte) ([]*x509.Certificate, error) {
	if data[0] != 0x30 {
		return nil, newError(CodeMalformedPEM, notDERHint(data), nil, "input is neither PEM nor DER")
	}
	c, err := x509.ParseCertificate(data)
	if err == nil {
		return []*x509.Certificate{c}, nil
	}
	if isPKCS7(data) {
		return parsePKCS7(data)
	}
	if certs, err2 := x509.ParseCertificates(data); err2 == nil && len(certs) > 0 {
		if len(certs) > maxItems {
			return nil, newError(CodeTooLarge, "split the bundle into smaller files", nil,
				"input holds more than %d certificates", maxItems)
		}
		return certs, nil
	}
	if isPKCS12(data) {
		return nil, newError(CodeNoCertificates, "import it as an identity (PKCS#12), or extract the certificates with `openssl pkcs12 -in file.p12 -nokeys -out certs.pem`", err,
			"input is a PKCS#12 (.p12/.pfx) file, not a certificate")
	}
	if what := describeDER(data); what != "" {
		return nil, newError(CodeNoCertificates, "give the certificate itself (PEM or DER); "+hintPEMCert, err,
			"input is %s, not a certificate", what)
	}
	return nil, newError(CodeMalformedCertificate, certParseHint(err), err, "DER input is not a valid X.509 certificate or PKCS#7 bundle")
}

// notDERHint guesses what non-PEM, non-DER input is.
func notDERHint(data []byte) string {
	s := strings.TrimSpace(string(data[:min(len(data), 64)]))
	switch {
	case strings.HasPrefix(s, "ssh-") || strings.HasPrefix(s, "ecdsa-sha2-"):
		return "this is an OpenSSH key, not X.509; trustflow needs an X.509 certificate or a PEM/PKCS#8 key"
	case strings.HasPrefix(s, "MII"):
		if _, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(string(data)), "")); err == nil {
			return "this is base64 without PEM armour; add the -----BEGIN ...----- and -----END ...----- lines around it"
		}
	}
	return "provide PEM (text starting with -----BEGIN) or binary DER"
}

// describeDER names a DER structure that is not what the caller asked for.
func describeDER(der []byte) string {
	if _, err := x509.ParseCertificate(der); err == nil {
		return "a certificate"
	}
	if _, err := x509.ParseCertificateRequest(der); err == nil {
		return "a certificate signing request"
	}
	if _, err := x509.ParseRevocationList(der); err == nil {
		return "a certificate revocation list"
	}
	if _, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		return "a PKCS#8 private key"
	}
	if _, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return "a PKCS#1 RSA private key"
	}
	if _, err := x509.ParseECPrivateKey(der); err == nil {
		return "a SEC 1 EC private key"
	}
	if isPKCS12(der) {
		return "a PKCS#12 (.p12/.pfx) file"
	}
	return ""
}

// ParseCSR parses a certificate signing request from PEM ("CERTIFICATE
// REQUEST" or "NEW CERTIFICATE REQUEST") or DER, and checks its signature.
func ParseCSR(data []byte) (*x509.CertificateRequest, error) {
	if err := checkSize(data, "CSR"); err != nil {
		return nil, err
	}
	der := data
	if isPEM(data) {
		blocks, perr := decodePEM(data)
		if perr != nil {
			return nil, perr
		}
		der = nil
		for _, b := range blocks {
			if b.Type == "CERTIFICATE REQUEST" || b.Type == "NEW CERTIFICATE REQUEST" {
				der = b.Bytes
				break
			}
		}
		if der == nil {
			return nil, newError(CodeMalformedCSR, "provide a PEM block -----BEGIN CERTIFICATE REQUEST----- as made by `openssl req -new` or `trustflow identity csr`", nil,
				"no certificate request found: the PEM data holds only %s blocks", pemTypes(blocks))
		}
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		if len(der) > 0 && der[0] == 0x30 {
			if what := describeDER(der); what != "" {
				return nil, newError(CodeMalformedCSR, "provide the certificate signing request, made by `openssl req -new` or `trustflow identity csr`", err,
					"input is %s, not a certificate signing request", what)
			}
		}
		return nil, newError(CodeMalformedCSR, "check that the CSR was copied whole; `openssl req -in csr.pem -noout -text` shows whether it parses", err,
			"input is not a valid certificate signing request")
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, newError(CodeBadSignature, "the CSR was altered after signing or signed with another key; generate it again", err,
			"the signature of the certificate request for %s does not verify", quoteName(csr.Subject.String()))
	}
	return csr, nil
}

// ParseCRLs parses certificate revocation lists from PEM ("X509 CRL" blocks,
// other blocks ignored) or DER (one CRL). It does not check signatures: Verify
// checks each CRL against the issuer it applies to.
func ParseCRLs(data []byte) ([]*x509.RevocationList, error) {
	if err := checkSize(data, "CRL"); err != nil {
		return nil, err
	}
	const hint = "provide the CRL as PEM (-----BEGIN X509 CRL-----) or DER, e.g. as downloaded from the CA's CRL distribution point; `openssl crl -in crl -noout -text` shows whether it parses"
	if !isPEM(data) {
		crl, err := x509.ParseRevocationList(data)
		if err != nil {
			return nil, newError(CodeMalformedCRL, hint, err, "DER input is not a valid certificate revocation list")
		}
		return []*x509.RevocationList{crl}, nil
	}
	blocks, perr := decodePEM(data)
	if perr != nil {
		return nil, perr
	}
	var crls []*x509.RevocationList
	for i, b := range blocks {
		if b.Type != "X509 CRL" && b.Type != "CRL" {
			continue
		}
		crl, err := x509.ParseRevocationList(b.Bytes)
		if err != nil {
			return nil, newError(CodeMalformedCRL, hint, err, "PEM block #%d (%s) is not a valid certificate revocation list", i+1, b.Type)
		}
		crls = append(crls, crl)
	}
	if len(crls) == 0 {
		return nil, newError(CodeMalformedCRL, hint, nil, "no CRL found: the PEM data holds only %s blocks", pemTypes(blocks))
	}
	return crls, nil
}
