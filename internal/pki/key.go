package pki

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"strings"
)

const (
	hintConvertLegacyPEM = "convert it to encrypted PKCS#8 with `openssl pkcs8 -topk8 -v2 aes-256-cbc -in key.pem -out key-pkcs8.pem` (asks for the old and a new password)"
	hintWrongKeyPassword = "check the password: `openssl pkey -in key.pem -noout` asks for it and says whether it is right"
	hintKeyRequired      = "give the password the key was encrypted with, or decrypt it first with `openssl pkey -in key.pem -out key-plain.pem`"
	hintKeyFormats       = "provide the private key as PEM or DER in PKCS#8 (-----BEGIN PRIVATE KEY----- or ENCRYPTED PRIVATE KEY), PKCS#1 (RSA PRIVATE KEY) or SEC 1 (EC PRIVATE KEY) form; `openssl pkey -in key -out key.pem` converts most others"
)

// keyPEMTypes are the PEM block types that hold private keys.
var keyPEMTypes = map[string]bool{
	"PRIVATE KEY":           true,
	"ENCRYPTED PRIVATE KEY": true,
	"RSA PRIVATE KEY":       true,
	"EC PRIVATE KEY":        true,
	"OPENSSH PRIVATE KEY":   true,
	"DSA PRIVATE KEY":       true,
}

// ParsePrivateKey parses a private key from PEM or DER: PKCS#8 (plain, or
// encrypted with PBES2: PBKDF2 with HMAC-SHA-1 or SHA-2 and AES-CBC or
// 3DES-CBC, as `openssl pkcs8 -topk8 -v2 aes-256-cbc` makes), PKCS#1 RSA
// and SEC 1 EC keys. password decrypts an encrypted PKCS#8 key and is ignored
// for plain keys. Keys encrypted with OpenSSL's legacy PEM encryption
// ("Proc-Type: 4,ENCRYPTED") are refused with a hint to convert them. Exactly
// one private key must be present; certificates and other PEM blocks around
// it are ignored.
func ParsePrivateKey(data []byte, password []byte) (crypto.Signer, error) {
	if err := checkSize(data, "private key"); err != nil {
		return nil, err
	}
	if !isPEM(data) {
		if data[0] != 0x30 {
			return nil, newError(CodeMalformedPEM, notDERHint(data), nil, "private key input is neither PEM nor DER")
		}
		return parseDERKey(data, password)
	}
	blocks, perr := decodePEM(data)
	if perr != nil {
		return nil, perr
	}
	var key *pem.Block
	for _, b := range blocks {
		if !keyPEMTypes[b.Type] {
			continue
		}
		if key != nil {
			return nil, newError(CodeMultipleKeys, "give a file with exactly one private key", nil,
				"the PEM data holds more than one private key (%s and %s)", key.Type, b.Type)
		}
		key = b
	}
	if key == nil {
		hint := hintKeyFormats
		for _, b := range blocks {
			if strings.Contains(b.Type, "CERTIFICATE") {
				hint = "this file holds certificates; give the private key file that belongs to the certificate"
				break
			}
		}
		return nil, newError(CodeNoPrivateKey, hint, nil, "no private key found: the PEM data holds only %s blocks", pemTypes(blocks))
	}
	if key.Headers["Proc-Type"] != "" || key.Headers["DEK-Info"] != "" {
		return nil, newError(CodeUnsupportedFormat, hintConvertLegacyPEM, nil,
			"the %s block uses OpenSSL's legacy PEM encryption (Proc-Type: %s), which trustflow does not read",
			key.Type, key.Headers["Proc-Type"])
	}
	switch key.Type {
	case "PRIVATE KEY":
		return parsePKCS8Key(key.Bytes, "PEM PRIVATE KEY block")
	case "ENCRYPTED PRIVATE KEY":
		return parseEncryptedPKCS8Key(key.Bytes, password)
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(key.Bytes)
		if err != nil {
			if s, err2 := parsePKCS8Key(key.Bytes, ""); err2 == nil {
				return s, nil // mislabelled PKCS#8
			}
			return nil, newError(CodeMalformedKey, hintKeyFormats, err, "the RSA PRIVATE KEY block is not a valid PKCS#1 RSA key")
		}
		return k, nil
	case "EC PRIVATE KEY":
		k, err := x509.ParseECPrivateKey(key.Bytes)
		if err != nil {
			if s, err2 := parsePKCS8Key(key.Bytes, ""); err2 == nil {
				return s, nil // mislabelled PKCS#8
			}
			return nil, newError(CodeMalformedKey, hintKeyFormats, err, "the EC PRIVATE KEY block is not a valid SEC 1 EC key")
		}
		return k, nil
	case "OPENSSH PRIVATE KEY":
		return nil, newError(CodeUnsupportedFormat,
			"convert it to PKCS#8 with `ssh-keygen -p -m PKCS8 -f keyfile` (rewrites the file in place), or better, issue an X.509 key pair for trustflow",
			nil, "the key is in OpenSSH format, which trustflow does not read")
	default: // DSA PRIVATE KEY
		return nil, dsaError()
	}
}

// oidDSA is the DSA public key algorithm (RFC 3279).
var oidDSA = asn1.ObjectIdentifier{1, 2, 840, 10040, 4, 1}

// isDSAPKCS8 reports whether der is an unencrypted PKCS#8 key whose
// algorithm is DSA, which crypto/x509 reports only as "unknown algorithm".
func isDSAPKCS8(der []byte) bool {
	var pk struct {
		Version int
		Algo    pkix.AlgorithmIdentifier
		Key     []byte
	}
	rest, err := asn1.Unmarshal(der, &pk)
	return err == nil && len(rest) == 0 && pk.Algo.Algorithm.Equal(oidDSA)
}

func dsaError() error {
	return newError(CodeUnsupportedFormat, "use ECDSA P-256/P-384 or RSA ≥ 2048", nil, "DSA keys are not supported")
}

func parseDERKey(der []byte, password []byte) (crypto.Signer, error) {
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		return toSigner(k)
	}
	if isEncryptedPKCS8(der) {
		return parseEncryptedPKCS8Key(der, password)
	}
	if isDSAPKCS8(der) {
		return nil, dsaError()
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, nil
	}
	if isPKCS12(der) {
		return nil, newError(CodeUnsupportedFormat, "import the file as PKCS#12 (it holds the certificate and key together), or extract the key with `openssl pkcs12 -in file.p12 -nocerts -out key.pem`",
			nil, "input is a PKCS#12 (.p12/.pfx) file, not a bare private key")
	}
	if what := describeDER(der); what != "" {
		return nil, newError(CodeNoPrivateKey, "give the private key file that belongs to the certificate", nil,
			"input is %s, not a private key", what)
	}
	return nil, newError(CodeMalformedKey, hintKeyFormats, nil, "DER input is not a PKCS#8, PKCS#1 or SEC 1 private key")
}

// parsePKCS8Key parses an unencrypted PKCS#8 key; what names it in messages.
func parsePKCS8Key(der []byte, what string) (crypto.Signer, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		if isEncryptedPKCS8(der) {
			return nil, newError(CodeMalformedKey, "label the block -----BEGIN ENCRYPTED PRIVATE KEY-----", err,
				"the %s holds an encrypted key but is labelled as unencrypted", what)
		}
		if isDSAPKCS8(der) {
			return nil, dsaError()
		}
		hint := hintKeyFormats
		if strings.Contains(err.Error(), "unknown public key algorithm") {
			hint = "use an ECDSA (P-256, P-384, P-521), RSA or Ed25519 key"
		}
		return nil, newError(CodeMalformedKey, hint, err, "the %s is not a valid PKCS#8 private key", what)
	}
	return toSigner(k)
}

// toSigner accepts the private key types trustflow can sign with.
func toSigner(k any) (crypto.Signer, error) {
	switch k := k.(type) {
	case *rsa.PrivateKey:
		return k, nil
	case *ecdsa.PrivateKey:
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	case *ecdh.PrivateKey:
		return nil, newError(CodeUnsupportedFormat, "use an ECDSA (P-256, P-384, P-521), RSA or Ed25519 key", nil,
			"the key is an X25519 key-agreement key, which cannot sign")
	}
	return nil, newError(CodeUnsupportedFormat, "use an ECDSA (P-256, P-384, P-521), RSA or Ed25519 key", nil,
		"the key type %T is not supported", k)
}

// KeyMatchesCertificate reports whether key is the private key of cert's
// public key, as Error{Code: "key_mismatch"} if not.
func KeyMatchesCertificate(key crypto.Signer, cert *x509.Certificate) error {
	if key == nil || cert == nil {
		return newError(CodeKeyMismatch, "give both the certificate and its private key", nil, "a certificate and a private key are both required")
	}
	if publicKeyEqual(key.Public(), cert.PublicKey) {
		return nil
	}
	return newError(CodeKeyMismatch,
		"the key belongs to another certificate: compare `openssl x509 -in cert.pem -noout -pubkey` with `openssl pkey -in key.pem -pubout`, and pair the certificate with the key its CSR was made from",
		nil, "the private key (%s) does not match the public key of certificate %s (%s)",
		KeyType(key.Public()), certName(cert), KeyType(cert.PublicKey))
}

// publicKeyEqual reports whether two public keys are the same key.
func publicKeyEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}
