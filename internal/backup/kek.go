package backup

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/fips140"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strings"

	"golang.org/x/crypto/scrypt"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/seal"
)

// Key-derivation functions for the passphrase of an included KEK.
const (
	// KDFScrypt is scrypt (RFC 7914): memory-hard, the default.
	KDFScrypt = "scrypt"
	// KDFPBKDF2 is PBKDF2-HMAC-SHA256 (NIST SP 800-132), used when Go's
	// FIPS 140-3 module is enabled, since scrypt is not an approved KDF.
	KDFPBKDF2 = "pbkdf2-sha256"
	// CipherAESGCM is the only cipher: AES-256-GCM, a random 96-bit nonce
	// before the ciphertext and the 16-byte tag after it.
	CipherAESGCM = "AES-256-GCM"
)

// MinPassphrase is the shortest passphrase Create accepts.
const MinPassphrase = 12

// Limits a reader enforces on the KDF parameters in a manifest, so that a
// hostile file cannot ask for gigabytes of memory or hours of work.
const (
	minScryptLogN  = 10
	maxScryptLogN  = 20
	maxScryptMem   = 256 << 20 // 128 * r * N bytes
	maxScryptR     = 16
	maxScryptP     = 4
	minPBKDF2Iter  = 1_000
	maxPBKDF2Iter  = 10_000_000
	minSaltSize    = 16
	maxSaltSize    = 64
	kekAADPrefix   = "trustflow-backup-kek-v1\n"
	defaultLogN    = 17 // 128 MiB with r = 8
	defaultR       = 8
	defaultP       = 1
	defaultPBKDF2  = 600_000 // OWASP's 2023 figure for PBKDF2-HMAC-SHA256
	saltSize       = 32
	derivedKeySize = 32
)

// ErrWrongPassphrase means the passphrase does not open the included keys
// (or the encrypted keys, or the database they are bound to, were altered).
var ErrWrongPassphrase error = &errs.Error{Kind: errs.Invalid, Code: "wrong_passphrase", Field: "--passphrase-file", Op: "backup: restore",
	Message: "the passphrase does not decrypt the keys in the backup (a wrong passphrase, or the file was altered)",
	Hint:    "give the passphrase the backup was made with"}

// KDF chooses the key derivation for an included KEK. The zero value
// means scrypt with N = 2^17, r = 8, p = 1 (128 MiB, a fraction of a
// second), or PBKDF2-HMAC-SHA256 with 600,000 iterations when Go's FIPS
// 140-3 module is enabled.
type KDF struct {
	// Name is KDFScrypt or KDFPBKDF2.
	Name string
	// LogN, R and P are scrypt's cost parameters (N = 2^LogN).
	LogN, R, P int
	// Iterations is PBKDF2's iteration count.
	Iterations int
}

func (k KDF) withDefaults() KDF {
	if k.Name == "" {
		k.Name = KDFScrypt
		if fips140.Enabled() {
			k.Name = KDFPBKDF2
		}
	}
	switch k.Name {
	case KDFScrypt:
		if k.LogN == 0 {
			k.LogN = defaultLogN
		}
		if k.R == 0 {
			k.R = defaultR
		}
		if k.P == 0 {
			k.P = defaultP
		}
	case KDFPBKDF2:
		if k.Iterations == 0 {
			k.Iterations = defaultPBKDF2
		}
	}
	return k
}

// KEKEncryption is how a backup's kek.enc member is encrypted: a key
// derived from the passphrase by KDF with Salt, then AES-256-GCM with the
// database's SHA-256 and the KEK ids as additional data, so the keys open
// only with the database they were backed up with.
type KEKEncryption struct {
	Member string `json:"member"`
	Cipher string `json:"cipher"`
	KDF    string `json:"kdf"`
	// Salt is random, 32 bytes (base64 in JSON).
	Salt       []byte `json:"salt"`
	ScryptLogN int    `json:"scrypt_log_n,omitempty"`
	ScryptR    int    `json:"scrypt_r,omitempty"`
	ScryptP    int    `json:"scrypt_p,omitempty"`
	Iterations int    `json:"pbkdf2_iterations,omitempty"`
}

func (e *KEKEncryption) validate() error {
	if e.Member != KEKName {
		return corrupt("kek.member is %q, want %q", e.Member, KEKName)
	}
	if e.Cipher != CipherAESGCM {
		return corrupt("kek.cipher %q: want %s", e.Cipher, CipherAESGCM)
	}
	if len(e.Salt) < minSaltSize || len(e.Salt) > maxSaltSize {
		return corrupt("kek.salt is %d bytes, want %d to %d", len(e.Salt), minSaltSize, maxSaltSize)
	}
	switch e.KDF {
	case KDFScrypt:
		if e.Iterations != 0 {
			return corrupt("kek: scrypt takes no pbkdf2_iterations")
		}
		if e.ScryptLogN < minScryptLogN || e.ScryptLogN > maxScryptLogN || e.ScryptR < 1 || e.ScryptR > maxScryptR || e.ScryptP < 1 || e.ScryptP > maxScryptP {
			return corrupt("kek: scrypt parameters log N %d, r %d, p %d are out of range (log N %d to %d, r 1 to %d, p 1 to %d)",
				e.ScryptLogN, e.ScryptR, e.ScryptP, minScryptLogN, maxScryptLogN, maxScryptR, maxScryptP)
		}
		if int64(128*e.ScryptR)<<e.ScryptLogN > maxScryptMem {
			return corrupt("kek: scrypt parameters need more than %d MiB of memory", maxScryptMem>>20)
		}
	case KDFPBKDF2:
		if e.ScryptLogN != 0 || e.ScryptR != 0 || e.ScryptP != 0 {
			return corrupt("kek: pbkdf2-sha256 takes no scrypt parameters")
		}
		if e.Iterations < minPBKDF2Iter || e.Iterations > maxPBKDF2Iter {
			return corrupt("kek: pbkdf2_iterations %d is out of range (%d to %d)", e.Iterations, minPBKDF2Iter, maxPBKDF2Iter)
		}
	default:
		return corrupt("kek.kdf %q: want %s or %s", e.KDF, KDFScrypt, KDFPBKDF2)
	}
	return nil
}

// derive computes the AES-256 key from the passphrase.
func (e *KEKEncryption) derive(passphrase string) ([]byte, error) {
	switch e.KDF {
	case KDFScrypt:
		return scrypt.Key([]byte(passphrase), e.Salt, 1<<e.ScryptLogN, e.ScryptR, e.ScryptP, derivedKeySize)
	case KDFPBKDF2:
		return pbkdf2.Key(sha256.New, passphrase, e.Salt, e.Iterations, derivedKeySize)
	}
	return nil, fmt.Errorf("backup: unknown kdf %q", e.KDF)
}

// kekPayload is kek.enc's plaintext.
type kekPayload struct {
	// KEKs are the keys in standard base64 (seal.EncodeKEK), in the order
	// of the manifest's kek_ids.
	KEKs []string `json:"keks"`
	// AuditKey is the audit key in the text of an audit key file, when
	// the manifest has an audit_key_id.
	AuditKey string `json:"audit_key,omitempty"`
}

// payloadKeys are the keys kek.enc holds, decrypted.
type payloadKeys struct {
	keks []*seal.KEK
	// auditKey and auditText are the audit key and its file's text; nil
	// for a chain without an audit key.
	auditKey  *audit.Key
	auditText []byte
}

// kekAAD binds kek.enc to the database member and to the ids of the keys
// the manifest says it holds.
func kekAAD(dbSHA256 string, ids []string, auditKeyID string) []byte {
	return []byte(kekAADPrefix + dbSHA256 + "\n" + strings.Join(ids, ",") + "\n" + auditKeyID)
}

// encryptKEKs encrypts keys (KEKs in the order of ids) under passphrase.
func encryptKEKs(keys payloadKeys, ids []string, auditKeyID, dbSHA256, passphrase string, kdf KDF) (*KEKEncryption, []byte, error) {
	kdf = kdf.withDefaults()
	enc := &KEKEncryption{Member: KEKName, Cipher: CipherAESGCM, KDF: kdf.Name, Salt: make([]byte, saltSize)}
	switch kdf.Name {
	case KDFScrypt:
		enc.ScryptLogN, enc.ScryptR, enc.ScryptP = kdf.LogN, kdf.R, kdf.P
	case KDFPBKDF2:
		enc.Iterations = kdf.Iterations
	}
	if _, err := rand.Read(enc.Salt); err != nil {
		return nil, nil, fmt.Errorf("backup: salt: %w", err)
	}
	if err := enc.validate(); err != nil {
		return nil, nil, fmt.Errorf("backup: kdf parameters: %w", err)
	}
	p := kekPayload{AuditKey: string(keys.auditText)}
	for _, k := range keys.keks {
		text, err := seal.EncodeKEK(k)
		if err != nil {
			return nil, nil, fmt.Errorf("backup: key-encryption key %s cannot leave its source: %w", k.ID(), err)
		}
		p.KEKs = append(p.KEKs, text)
	}
	plain, err := json.Marshal(p)
	if err != nil {
		return nil, nil, fmt.Errorf("backup: encode keys: %w", err)
	}
	defer clear(plain)
	aead, err := enc.aead(passphrase)
	if err != nil {
		return nil, nil, err
	}
	return enc, aead.Seal(nil, nil, plain, kekAAD(dbSHA256, ids, auditKeyID)), nil
}

// decryptKEKs opens kek.enc and checks that it holds exactly the keys the
// manifest names: the KEKs ids lists, in order, and the audit key
// auditKeyID ("" for none).
func decryptKEKs(enc *KEKEncryption, sealed []byte, ids []string, auditKeyID, dbSHA256, passphrase string) (payloadKeys, error) {
	aead, err := enc.aead(passphrase)
	if err != nil {
		return payloadKeys{}, err
	}
	plain, err := aead.Open(nil, nil, sealed, kekAAD(dbSHA256, ids, auditKeyID))
	if err != nil {
		return payloadKeys{}, ErrWrongPassphrase
	}
	defer clear(plain)
	var p kekPayload
	if err := json.Unmarshal(plain, &p); err != nil {
		return payloadKeys{}, corrupt("%s: the decrypted keys do not parse", KEKName)
	}
	if len(p.KEKs) != len(ids) {
		return payloadKeys{}, corrupt("%s holds %d keys, kek_ids lists %d", KEKName, len(p.KEKs), len(ids))
	}
	var out payloadKeys
	for i, text := range p.KEKs {
		k, err := seal.DecodeKEK(text)
		if err != nil {
			return payloadKeys{}, corrupt("%s: key %d: %v", KEKName, i+1, err)
		}
		if k.ID() != ids[i] {
			return payloadKeys{}, corrupt("%s: key %d is %s, kek_ids says %s", KEKName, i+1, k.ID(), ids[i])
		}
		out.keks = append(out.keks, k)
	}
	if (p.AuditKey != "") != (auditKeyID != "") {
		return payloadKeys{}, corrupt("%s and the manifest disagree on whether the audit key is included", KEKName)
	}
	if auditKeyID != "" {
		k, err := audit.ParseKey([]byte(p.AuditKey))
		if err != nil {
			return payloadKeys{}, corrupt("%s: the audit key: %v", KEKName, err)
		}
		if k.ID() != auditKeyID {
			return payloadKeys{}, corrupt("%s: the audit key is %s, audit_key_id says %s", KEKName, k.ID(), auditKeyID)
		}
		out.auditKey, out.auditText = k, []byte(p.AuditKey)
	}
	return out, nil
}

func (e *KEKEncryption) aead(passphrase string) (cipher.AEAD, error) {
	key, err := e.derive(passphrase)
	if err != nil {
		return nil, fmt.Errorf("backup: derive the key from the passphrase: %w", err)
	}
	defer clear(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	return aead, nil
}
