package seal

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
)

const (
	// kekSize is the size of a key-encryption key: AES-256.
	kekSize = 32
	// kekIDSize is the size of a KEK id in a blob; KEK.ID is its hex form.
	kekIDSize = 8
	// kekIDDomain separates KEK ids from any other hash of the same key.
	kekIDDomain = "trustflow-kek-id-v1\n"
	// kekFileHeader is the first line of a KEK file and of ParseKEK's input.
	kekFileHeader = "trustflow-kek-v1"
)

// KEK is a 256-bit key-encryption key. It wraps the data keys of sealed blobs
// and is never stored in the database. A KEK is immutable and safe for
// concurrent use. Formatting a KEK with fmt prints its id, never the key.
type KEK struct {
	key  [kekSize]byte
	id   [kekIDSize]byte
	aead cipher.AEAD // AES-256-GCM with random nonces under key
	// external is set when the key lives outside this process (an HSM):
	// key is then all zeros and aead calls into the device.
	external bool
}

// NewKEK returns a new random key-encryption key.
func NewKEK() (*KEK, error) {
	var key [kekSize]byte
	defer clear(key[:])
	if _, err := rand.Read(key[:]); err != nil {
		return nil, fmt.Errorf("seal: new kek: %w", err)
	}
	return newKEK(key[:])
}

// newKEK builds a KEK from a 32-byte key, which it copies.
func newKEK(key []byte) (*KEK, error) {
	if len(key) != kekSize {
		return nil, fmt.Errorf("seal: kek is %d bytes, want %d", len(key), kekSize)
	}
	k := &KEK{}
	copy(k.key[:], key)
	aead, err := newAEAD(k.key[:])
	if err != nil {
		return nil, fmt.Errorf("seal: kek: %w", err)
	}
	k.aead = aead
	h := sha256.New()
	h.Write([]byte(kekIDDomain))
	h.Write(k.key[:])
	copy(k.id[:], h.Sum(nil))
	return k, nil
}

// NewExternalKEK returns a KEK whose key never enters this process: aead
// wraps and unwraps data keys inside a device (an HSM) with AES-256-GCM,
// generating the 96-bit nonce itself and prepending it to the ciphertext, as
// [crypto/cipher.NewGCMWithRandomNonce] does (NonceSize 0, Overhead 28).
// id is the KEK's 16-hex-digit id, chosen when the device key was created
// and stored with it. An external KEK cannot be written to a file.
func NewExternalKEK(id string, aead cipher.AEAD) (*KEK, error) {
	raw, err := hex.DecodeString(id)
	if err != nil || len(raw) != kekIDSize {
		return nil, fmt.Errorf("seal: external kek: id %q is not %d hex digits", id, 2*kekIDSize)
	}
	if aead == nil {
		return nil, errors.New("seal: external kek: nil aead")
	}
	if aead.NonceSize() != 0 || aead.Overhead() != nonceSize+tagSize {
		return nil, fmt.Errorf("seal: external kek %s: the device cipher must generate its own 12-byte nonce and add a 16-byte tag (nonce size %d, overhead %d)", id, aead.NonceSize(), aead.Overhead())
	}
	k := &KEK{aead: aead, external: true}
	copy(k.id[:], raw)
	return k, nil
}

// External reports whether the key lives outside this process (an HSM), so
// it cannot be exported, backed up or written to a file.
func (k *KEK) External() bool { return k.external }

// usable reports whether k was made by this package rather than being a nil
// pointer or a zero KEK{} literal, which holds no key.
func (k *KEK) usable() bool { return k != nil && k.aead != nil }

// ID returns the KEK's short stable id: the first 8 bytes, in hex, of
// SHA-256("trustflow-kek-id-v1\n" || key). It reveals nothing about the key and
// is recorded in every blob the KEK wraps (see [KEKID]).
func (k *KEK) ID() string { return hex.EncodeToString(k.id[:]) }

// String returns "seal.KEK(<id>)"; the key itself is never formatted.
func (k *KEK) String() string { return "seal.KEK(" + k.ID() + ")" }

// GoString is like String, so %#v does not print the key either.
func (k *KEK) GoString() string { return k.String() }

// ParseKEK parses a KEK in the text format of a KEK file:
//
//	trustflow-kek-v1
//	<32-byte key in standard base64>
//
// A trailing newline and carriage returns are accepted. Errors never quote the
// input. ParseKEK does not modify or retain data.
func ParseKEK(data []byte) (*KEK, error) {
	rest, ok := bytes.CutPrefix(data, []byte(kekFileHeader+"\n"))
	if !ok {
		rest, ok = bytes.CutPrefix(data, []byte(kekFileHeader+"\r\n"))
	}
	if !ok {
		return nil, errors.New("seal: parse kek: missing first line " + kekFileHeader + "; not a trustflow kek")
	}
	line, tail, _ := bytes.Cut(rest, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(bytes.TrimSpace(tail)) != 0 {
		return nil, errors.New("seal: parse kek: unexpected data after the key line")
	}
	buf := make([]byte, base64.StdEncoding.DecodedLen(len(line)))
	defer clear(buf)
	n, err := base64.StdEncoding.Decode(buf, line)
	if err != nil {
		return nil, fmt.Errorf("seal: parse kek: key line: %w", err)
	}
	if n != kekSize {
		return nil, fmt.Errorf("seal: parse kek: key is %d bytes, want %d", n, kekSize)
	}
	return newKEK(buf[:n])
}

// appendText appends the KEK in the format ParseKEK reads. The result holds the
// key: callers zero it after use.
func (k *KEK) appendText(dst []byte) []byte {
	if k.external {
		panic("seal: appendText on an external kek") // callers check External first
	}
	dst = append(dst, kekFileHeader+"\n"...)
	dst = base64.StdEncoding.AppendEncode(dst, k.key[:])
	return append(dst, '\n')
}

// newAEAD returns AES-256-GCM under key, generating a random 96-bit nonce
// inside the cryptographic module on every Seal and prepending it.
func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCMWithRandomNonce(block)
}
