package pki

import "github.com/trustflow/trustflow/internal/errs"

// Password-based key derivation is deliberately slow, and the iteration count
// comes from the input. These limits keep a hostile or odd file from pinning a
// CPU: a PBKDF2 or PKCS#12 KDF round costs about a microsecond, so the total
// stays within a few seconds. Common tools use 2,048 (OpenSSL) to 600,000
// (OWASP guidance for PBKDF2-HMAC-SHA256) iterations.
const (
	maxKDFIterations = 1_000_000 // one derivation
	maxKDFWork       = 3_000_000 // all derivations needed for one file
)

const hintKDF = "re-export the file with a standard iteration count, e.g. `openssl pkcs12 -export -iter 100000 ...` or `openssl pkcs8 -topk8 -v2 aes-256-cbc -iter 100000 ...`"

// checkKDFWork scans DER data for password-based key-derivation parameters
// (PKCS#12 MacData and PBE parameters, PBKDF2 parameters: every place an
// iteration count follows a salt) and refuses iteration counts over the
// limits before any derivation runs.
func checkKDFWork(der []byte, what string) *errs.Error {
	s := kdfScan{}
	s.walk(der, 0)
	switch {
	case s.huge:
		return newError(CodeTooLarge, hintKDF, nil, "%s asks for an out-of-range key-derivation iteration count", what)
	case s.max > maxKDFIterations:
		return newError(CodeTooLarge, hintKDF, nil,
			"%s asks for %d key-derivation iterations, over the limit of %d", what, s.max, maxKDFIterations)
	case s.total > maxKDFWork:
		return newError(CodeTooLarge, hintKDF, nil,
			"%s asks for %d key-derivation iterations in total, over the limit of %d", what, s.total, maxKDFWork)
	}
	return nil
}

type kdfScan struct {
	max, total int64
	huge       bool
	elements   int
}

const (
	kdfScanMaxDepth    = 32
	kdfScanMaxElements = 200_000
)

// walk visits the DER elements in b (a sequence of elements) at depth.
func (s *kdfScan) walk(b []byte, depth int) {
	if depth > kdfScanMaxDepth {
		return
	}
	prevOctet := false
	for len(b) > 0 && !s.huge {
		s.elements++
		if s.elements > kdfScanMaxElements {
			return
		}
		n, ok := derElementLen(b)
		if !ok {
			return
		}
		hdr := n - derContentLen(b, n)
		tag, content := b[0], b[hdr:n]
		switch {
		case tag == 0x02 && prevOctet: // INTEGER after OCTET STRING: an iteration count
			s.count(content)
		case tag&0x20 != 0: // constructed: SEQUENCE, SET, explicit tags
			s.walk(content, depth+1)
		case tag == 0x04: // OCTET STRING that may wrap DER
			if m, ok := derElementLen(content); ok && m == len(content) && content[0]&0x20 != 0 {
				s.walk(content, depth+1)
			}
		}
		prevOctet = tag == 0x04
		b = b[n:]
	}
}

func (s *kdfScan) count(content []byte) {
	if len(content) == 0 || content[0]&0x80 != 0 {
		return // negative or empty: the parser rejects it
	}
	for len(content) > 1 && content[0] == 0 {
		content = content[1:]
	}
	if len(content) > 7 {
		s.huge = true
		return
	}
	var v int64
	for _, x := range content {
		v = v<<8 | int64(x)
	}
	s.max = max(s.max, v)
	s.total += v
}

// derContentLen returns the content length of the DER element b[:n].
func derContentLen(b []byte, n int) int {
	if b[1]&0x80 == 0 {
		return n - 2
	}
	return n - 2 - int(b[1]&0x7f)
}
