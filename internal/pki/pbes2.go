package pki

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/fips140"
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"hash"

	"github.com/trustflow/trustflow/internal/errs"
)

// Encrypted PKCS#8 (RFC 5958 EncryptedPrivateKeyInfo) with PBES2 (RFC 8018).
// OpenSSL has written this form by default since 1.1.0:
// PBKDF2 with HMAC-SHA-256 and AES-256-CBC.

var (
	oidPBES2      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidPBKDF2     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	oidScrypt     = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 11591, 4, 11}
	oidHMACSHA1   = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 7}
	oidHMACSHA224 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 8}
	oidHMACSHA256 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}
	oidHMACSHA384 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 10}
	oidHMACSHA512 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 11}
	oidAES128CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidAES192CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 22}
	oidAES256CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	oidDESEDE3CBC = asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}

	// PBES1 (PKCS#5 v1.5) and PKCS#12 v1 password-based encryption arcs.
	oidPKCS5PBES1 = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5}
	oidPKCS12PBE  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 1}
)

const (
	hintReencryptKey = "re-encrypt the key with `openssl pkcs8 -topk8 -v2 aes-256-cbc -v2prf hmacWithSHA256 -in key.pem -out key-pkcs8.pem`"
	hintKeyFIPS      = "FIPS 140-only mode accepts encrypted keys only with PBKDF2-HMAC-SHA-2, a salt of at least 16 bytes and AES-CBC (OpenSSL 3.0 writes 8-byte salts): re-encrypt the key with a tool that writes such keys, import it unencrypted over a trusted channel, or better, generate the key in trustflow and have a CSR signed"
)

type encryptedPrivateKeyInfo struct {
	Algorithm     pkix.AlgorithmIdentifier
	EncryptedData []byte
}

type pbes2Params struct {
	KeyDerivationFunc pkix.AlgorithmIdentifier
	EncryptionScheme  pkix.AlgorithmIdentifier
}

type pbkdf2Params struct {
	Salt       []byte
	Iterations int
	KeyLength  int                      `asn1:"optional"`
	PRF        pkix.AlgorithmIdentifier `asn1:"optional"`
}

func hasPrefixOID(oid, prefix asn1.ObjectIdentifier) bool {
	return len(oid) > len(prefix) && oid[:len(prefix)].Equal(prefix)
}

// isEncryptedPKCS8 reports whether der is an EncryptedPrivateKeyInfo with a
// password-based encryption algorithm.
func isEncryptedPKCS8(der []byte) bool {
	var info encryptedPrivateKeyInfo
	rest, err := asn1.Unmarshal(der, &info)
	if err != nil || len(rest) != 0 {
		return false
	}
	a := info.Algorithm.Algorithm
	return a.Equal(oidPBES2) || hasPrefixOID(a, oidPKCS5PBES1) || hasPrefixOID(a, oidPKCS12PBE)
}

// parseEncryptedPKCS8Key decrypts and parses an encrypted PKCS#8 key.
func parseEncryptedPKCS8Key(der []byte, password []byte) (crypto.Signer, error) {
	plain, err := decryptPKCS8(der, password)
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(plain)
	if err != nil {
		// Correct padding by chance under a wrong password.
		return nil, newError(CodeWrongPassword, hintWrongKeyPassword, err, "the password does not decrypt the private key")
	}
	return toSigner(k)
}

func decryptPKCS8(der []byte, password []byte) (plain []byte, err error) {
	var info encryptedPrivateKeyInfo
	if rest, err := asn1.Unmarshal(der, &info); err != nil || len(rest) != 0 {
		if err == nil {
			err = fmt.Errorf("%d trailing bytes", len(rest))
		}
		return nil, newError(CodeMalformedKey, hintKeyFormats, err, "the encrypted private key is malformed")
	}
	alg := info.Algorithm.Algorithm
	if !alg.Equal(oidPBES2) {
		if hasPrefixOID(alg, oidPKCS5PBES1) || hasPrefixOID(alg, oidPKCS12PBE) {
			return nil, newError(CodeUnsupportedFormat, hintReencryptKey, nil,
				"the private key is encrypted with legacy PKCS#5 v1.5 / PKCS#12 encryption (%s), which trustflow does not read", alg)
		}
		return nil, newError(CodeUnsupportedFormat, hintReencryptKey, nil, "the private key is encrypted with an unknown algorithm (%s)", alg)
	}
	if len(password) == 0 {
		return nil, newError(CodePasswordRequired, hintKeyRequired, nil, "the private key is encrypted and no password was given")
	}
	if kerr := checkKDFWork(der, "the encrypted private key"); kerr != nil {
		return nil, kerr
	}

	var params pbes2Params
	if rest, err := asn1.Unmarshal(info.Algorithm.Parameters.FullBytes, &params); err != nil || len(rest) != 0 {
		return nil, newError(CodeMalformedKey, hintReencryptKey, err, "the PBES2 parameters of the encrypted private key are malformed")
	}
	if !params.KeyDerivationFunc.Algorithm.Equal(oidPBKDF2) {
		what := params.KeyDerivationFunc.Algorithm.String()
		if params.KeyDerivationFunc.Algorithm.Equal(oidScrypt) {
			what = "scrypt"
		}
		return nil, newError(CodeUnsupportedFormat, hintReencryptKey, nil,
			"the private key's password is derived with %s; trustflow reads PBKDF2 only", what)
	}
	var kdf pbkdf2Params
	if rest, err := asn1.Unmarshal(params.KeyDerivationFunc.Parameters.FullBytes, &kdf); err != nil || len(rest) != 0 {
		return nil, newError(CodeMalformedKey, hintReencryptKey, err, "the PBKDF2 parameters of the encrypted private key are malformed")
	}
	if kdf.Iterations <= 0 {
		return nil, newError(CodeMalformedKey, hintReencryptKey, nil, "the encrypted private key has an invalid PBKDF2 iteration count (%d)", kdf.Iterations)
	}
	prfName, newHash := "hmacWithSHA1", func() hash.Hash { return sha1.New() }
	switch prf := kdf.PRF.Algorithm; {
	case len(prf) == 0 || prf.Equal(oidHMACSHA1):
	case prf.Equal(oidHMACSHA224):
		prfName, newHash = "hmacWithSHA224", sha256.New224
	case prf.Equal(oidHMACSHA256):
		prfName, newHash = "hmacWithSHA256", sha256.New
	case prf.Equal(oidHMACSHA384):
		prfName, newHash = "hmacWithSHA384", sha512.New384
	case prf.Equal(oidHMACSHA512):
		prfName, newHash = "hmacWithSHA512", sha512.New
	default:
		return nil, newError(CodeUnsupportedFormat, hintReencryptKey, nil, "the private key uses an unsupported PBKDF2 pseudo-random function (%s)", prf)
	}

	var (
		cipherName string
		keyLen     int
		newBlock   func([]byte) (cipher.Block, error)
	)
	switch scheme := params.EncryptionScheme.Algorithm; {
	case scheme.Equal(oidAES128CBC):
		cipherName, keyLen, newBlock = "AES-128-CBC", 16, aes.NewCipher
	case scheme.Equal(oidAES192CBC):
		cipherName, keyLen, newBlock = "AES-192-CBC", 24, aes.NewCipher
	case scheme.Equal(oidAES256CBC):
		cipherName, keyLen, newBlock = "AES-256-CBC", 32, aes.NewCipher
	case scheme.Equal(oidDESEDE3CBC):
		cipherName, keyLen, newBlock = "DES-EDE3-CBC", 24, des.NewTripleDESCipher
	default:
		return nil, newError(CodeUnsupportedFormat, hintReencryptKey, nil, "the private key is encrypted with an unsupported cipher (%s)", scheme)
	}
	if kdf.KeyLength != 0 && kdf.KeyLength != keyLen {
		return nil, newError(CodeMalformedKey, hintReencryptKey, nil,
			"the encrypted private key asks for a %d-byte key for %s, which needs %d", kdf.KeyLength, cipherName, keyLen)
	}
	if fips140.Enforced() && (prfName == "hmacWithSHA1" || cipherName == "DES-EDE3-CBC") {
		return nil, newError(CodeFIPSDisallowed, hintKeyFIPS, nil,
			"the private key is encrypted with %s and %s, not allowed in FIPS 140-only mode", prfName, cipherName)
	}
	var iv []byte
	if rest, err := asn1.Unmarshal(params.EncryptionScheme.Parameters.FullBytes, &iv); err != nil || len(rest) != 0 {
		return nil, newError(CodeMalformedKey, hintReencryptKey, err, "the %s parameters of the encrypted private key are malformed", cipherName)
	}

	defer func() {
		if r := recover(); r != nil {
			hint := hintReencryptKey
			if fips140.Enforced() {
				hint = hintKeyFIPS
			}
			plain, err = nil, recoveredCryptoPanic(r, "the encrypted private key", hint)
		}
	}()
	key, err := pbkdf2.Key(newHash, string(password), kdf.Salt, kdf.Iterations, keyLen)
	if err != nil {
		if fips140.Enforced() {
			return nil, newError(CodeFIPSDisallowed, hintKeyFIPS, err,
				"the private key's PBKDF2 parameters (%s, %d-byte salt) are not allowed in FIPS 140-only mode", prfName, len(kdf.Salt))
		}
		return nil, newError(CodeMalformedKey, hintReencryptKey, err, "deriving the key that decrypts the private key failed")
	}
	block, err := newBlock(key)
	if err != nil {
		return nil, newError(CodeMalformedKey, hintReencryptKey, err, "setting up %s failed", cipherName)
	}
	bs := block.BlockSize()
	if len(iv) != bs {
		return nil, newError(CodeMalformedKey, hintReencryptKey, nil,
			"the encrypted private key has a %d-byte IV; %s needs %d", len(iv), cipherName, bs)
	}
	ct := info.EncryptedData
	if len(ct) == 0 || len(ct)%bs != 0 {
		return nil, newError(CodeMalformedKey, hintReencryptKey, nil,
			"the encrypted private key is %d bytes, not a whole number of %s blocks", len(ct), cipherName)
	}
	out := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(out, ct)
	unpadded, ok := unpadPKCS7(out, bs)
	if !ok {
		return nil, newError(CodeWrongPassword, hintWrongKeyPassword, nil, "the password does not decrypt the private key")
	}
	return unpadded, nil
}

// unpadPKCS7 removes PKCS#7 padding; false means the padding is wrong, which
// for decrypted data almost always means a wrong password.
func unpadPKCS7(b []byte, bs int) ([]byte, bool) {
	if len(b) == 0 {
		return nil, false
	}
	n := int(b[len(b)-1])
	if n == 0 || n > bs || n > len(b) {
		return nil, false
	}
	for _, x := range b[len(b)-n:] {
		if int(x) != n {
			return nil, false
		}
	}
	return b[:len(b)-n], true
}

// recoveredCryptoPanic turns a panic from a crypto primitive into an Error.
// Under GODEBUG=fips140=only, Go's crypto panics when asked for an algorithm
// FIPS 140-3 does not approve (SHA-1 HMAC, 3DES, short HMAC keys).
func recoveredCryptoPanic(r any, what, hint string) *errs.Error {
	cause := fmt.Errorf("%v", r)
	if fips140.Enforced() {
		return newError(CodeFIPSDisallowed, hint, cause,
			"%s is protected with algorithms that FIPS 140-only mode does not allow", what)
	}
	return newError(CodeUnsupportedFormat, hint, cause, "%s could not be decoded", what)
}
