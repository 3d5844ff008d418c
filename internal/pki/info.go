package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// CertInfo is the public summary of a certificate shown by `ca show` and
// `identity show`. The JSON names are part of the API.
type CertInfo struct {
	Serial            string    `json:"serial"`             // lowercase hex, no colons
	Subject           string    `json:"subject"`            // RFC 4514 string
	Issuer            string    `json:"issuer"`             // RFC 4514 string
	FingerprintSHA256 string    `json:"fingerprint_sha256"` // lowercase hex SHA-256 over the DER
	NotBefore         time.Time `json:"not_before"`
	NotAfter          time.Time `json:"not_after"`
	KeyType           string    `json:"key_type"` // see KeyType
	IsCA              bool      `json:"is_ca"`
	DNSNames          []string  `json:"dns_names,omitempty"`
	IPAddresses       []string  `json:"ip_addresses,omitempty"`
}

// Info summarises cert.
func Info(cert *x509.Certificate) CertInfo {
	info := CertInfo{
		Serial:            serialHex(cert),
		Subject:           cert.Subject.String(),
		Issuer:            cert.Issuer.String(),
		FingerprintSHA256: FingerprintSHA256(cert),
		NotBefore:         cert.NotBefore.UTC(),
		NotAfter:          cert.NotAfter.UTC(),
		KeyType:           KeyType(cert.PublicKey),
		IsCA:              cert.BasicConstraintsValid && cert.IsCA,
	}
	if len(cert.DNSNames) > 0 {
		info.DNSNames = append([]string(nil), cert.DNSNames...)
	}
	for _, ip := range cert.IPAddresses {
		info.IPAddresses = append(info.IPAddresses, ip.String())
	}
	return info
}

// FingerprintSHA256 returns the lowercase hex SHA-256 of the certificate's DER,
// as `openssl x509 -fingerprint -sha256` prints it without the colons.
func FingerprintSHA256(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// SPKIPinSHA256 returns the certificate's public key pin in the HPKP / curl
// --pinnedpubkey format: "sha256/" + base64(SHA-256(SubjectPublicKeyInfo)).
func SPKIPinSHA256(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256/" + base64.StdEncoding.EncodeToString(sum[:])
}

// KeyType names a public key: "ecdsa-p256", "ecdsa-p384", "ecdsa-p521",
// "rsa-<bits>" (e.g. "rsa-2048"), "ed25519", "ecdsa-<curve>" for other curves,
// or "unknown".
func KeyType(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k == nil || k.Curve == nil {
			return "unknown"
		}
		return "ecdsa-" + strings.ToLower(strings.ReplaceAll(k.Curve.Params().Name, "-", ""))
	case *rsa.PublicKey:
		if k == nil || k.N == nil {
			return "unknown"
		}
		return fmt.Sprintf("rsa-%d", k.N.BitLen())
	case ed25519.PublicKey:
		return "ed25519"
	}
	return "unknown"
}

// serialHex is the serial number in lowercase hex without colons; negative
// serials (invalid, but seen) keep their sign.
func serialHex(cert *x509.Certificate) string {
	if cert == nil || cert.SerialNumber == nil {
		return ""
	}
	return cert.SerialNumber.Text(16)
}
