package pki

import (
	"bytes"
	"crypto/x509"
	"fmt"

	"github.com/smallstep/pkcs7"
)

// oidSignedDataDER is the DER encoding (tag, length, value) of the PKCS#7
// signedData content type, 1.2.840.113549.1.7.2.
var oidSignedDataDER = []byte{0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02}

// maxBERDepth bounds the nesting of PKCS#7 input; certs-only bundles nest
// about a dozen levels deep.
const maxBERDepth = 64

const hintPKCS7 = "re-export the bundle with `openssl crl2pkcs7 -nocrl -certfile chain.pem -out chain.p7b`, or give the certificates as PEM"

// isPKCS7 reports whether b starts like a PKCS#7 ContentInfo of type
// signedData, in DER or BER (indefinite length).
func isPKCS7(b []byte) bool {
	if len(b) < 2 || b[0] != 0x30 {
		return false
	}
	off := 2
	switch l := b[1]; {
	case l == 0x80: // indefinite
	case l > 0x80:
		off += int(l & 0x7f)
	}
	return len(b) >= off+len(oidSignedDataDER) && bytes.Equal(b[off:off+len(oidSignedDataDER)], oidSignedDataDER)
}

// parsePKCS7 extracts the certificates of a PKCS#7 signedData (normally a
// certs-only bundle). Signatures, if any, are not checked: the bundle is only
// a way to carry certificates.
func parsePKCS7(der []byte) (certs []*x509.Certificate, err error) {
	if berTooDeep(der, maxBERDepth) {
		return nil, newError(CodeMalformedPKCS7, hintPKCS7, nil, "PKCS#7 data nests deeper than %d levels", maxBERDepth)
	}
	defer func() {
		if r := recover(); r != nil {
			certs, err = nil, newError(CodeMalformedPKCS7, hintPKCS7, fmt.Errorf("%v", r), "PKCS#7 data is malformed")
		}
	}()
	p7, perr := pkcs7.Parse(der)
	if perr != nil {
		return nil, newError(CodeMalformedPKCS7, hintPKCS7, perr, "PKCS#7 data is malformed")
	}
	if len(p7.Certificates) == 0 {
		return nil, newError(CodeNoCertificates, hintPKCS7, nil, "the PKCS#7 bundle holds no certificate")
	}
	if len(p7.Certificates) > maxItems {
		return nil, newError(CodeTooLarge, "split the bundle into smaller files", nil,
			"the PKCS#7 bundle holds more than %d certificates", maxItems)
	}
	return p7.Certificates, nil
}

// berTooDeep reports whether BER data nests constructed elements more than
// maxDepth levels deep. Malformed data reports false: the parser rejects it.
func berTooDeep(b []byte, maxDepth int) bool {
	_, deep, _ := berWalk(b, 0, 0, maxDepth)
	return deep
}

// berWalk walks the element at b[off:] and returns the offset after it,
// whether it nests too deep, and whether it is well formed.
func berWalk(b []byte, off, depth, maxDepth int) (end int, deep, ok bool) {
	if depth > maxDepth {
		return 0, true, false
	}
	if off >= len(b) {
		return 0, false, false
	}
	constructed := b[off]&0x20 != 0
	tagHigh := b[off]&0x1f == 0x1f
	off++
	if tagHigh {
		for off < len(b) && b[off]&0x80 != 0 {
			off++
		}
		off++
	}
	if off >= len(b) {
		return 0, false, false
	}
	l := int(b[off])
	off++
	indefinite := false
	switch {
	case l == 0x80:
		if !constructed {
			return 0, false, false
		}
		indefinite = true
	case l > 0x80:
		n := l & 0x7f
		if n > 4 || off+n > len(b) {
			return 0, false, false
		}
		l = 0
		for _, x := range b[off : off+n] {
			l = l<<8 | int(x)
		}
		off += n
	}
	if !indefinite {
		if l < 0 || off+l > len(b) {
			return 0, false, false
		}
		end = off + l
		if !constructed {
			return end, false, true
		}
		for off < end {
			off, deep, ok = berWalk(b, off, depth+1, maxDepth)
			if deep || !ok {
				return 0, deep, false
			}
		}
		return end, false, true
	}
	for {
		if off+2 <= len(b) && b[off] == 0 && b[off+1] == 0 {
			return off + 2, false, true
		}
		off, deep, ok = berWalk(b, off, depth+1, maxDepth)
		if deep || !ok {
			return 0, deep, false
		}
	}
}
