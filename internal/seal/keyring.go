package seal

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
)

// Blob format, version 1. All sizes are in bytes; n is the plaintext length.
//
//	offset  size  field
//	0       3     magic "TFS"
//	3       1     version, 0x01
//	4       8     KEK id: the raw bytes whose hex form is KEK.ID
//	12      60    wrapped DEK: nonce (12) || AES-256-GCM(KEK, DEK (32)) || tag (16)
//	              additional data: bytes 0..11 (magic, version, KEK id)
//	72      12    payload nonce
//	84      n+16  payload: AES-256-GCM(DEK, plaintext) || tag (16)
//	              additional data: bytes 0..3 (magic, version) || caller's aad
//
// Both nonces are random and generated inside the cryptographic module. The
// header is bound to the wrapped DEK, so a changed KEK id or version does not
// unwrap; the caller's aad (the record id) is bound to the payload, which does
// not depend on the KEK, so [Keyring.Rewrap] replaces bytes 4..71 and copies
// bytes 72.. unchanged.
const (
	// Overhead is how many bytes longer a sealed blob is than its plaintext:
	// 100, so the shortest blob (empty plaintext) is 100 bytes.
	Overhead = payloadOffset + nonceSize + tagSize

	blobVersion      = 0x01
	nonceSize        = 12
	tagSize          = 16
	dekSize          = 32
	kekIDOffset      = len(blobMagic) + 1
	headerSize       = kekIDOffset + kekIDSize
	wrappedDEKSize   = nonceSize + dekSize + tagSize
	payloadOffset    = headerSize + wrappedDEKSize
	payloadAADPrefix = kekIDOffset // payload aad starts with magic and version
)

const blobMagic = "TFS"

// Keyring seals with its current KEK and opens blobs wrapped by any KEK it
// holds, so blobs stay readable while a rotation rewraps them. A Keyring is
// immutable and safe for concurrent use.
type Keyring struct {
	current *KEK
	held    map[[kekIDSize]byte]*KEK
	ids     []string // current first, then previous in the order given
}

// NewKeyring returns a keyring that seals with current and opens blobs wrapped
// by current or any of previous. Nil or zero KEK values are ignored, as is a
// previous KEK with the id of one already held. A keyring whose current KEK is
// nil only opens and rewraps.
func NewKeyring(current *KEK, previous ...*KEK) *Keyring {
	r := &Keyring{held: make(map[[kekIDSize]byte]*KEK, 1+len(previous))}
	if current.usable() {
		r.current = current
	}
	for _, k := range append([]*KEK{current}, previous...) {
		if !k.usable() {
			continue
		}
		if _, ok := r.held[k.id]; ok {
			continue
		}
		r.held[k.id] = k
		r.ids = append(r.ids, k.ID())
	}
	return r
}

// CurrentID returns the id of the KEK that seals, or "" if there is none.
func (r *Keyring) CurrentID() string {
	if r.current == nil {
		return ""
	}
	return r.current.ID()
}

// IDs returns the ids of the KEKs the keyring holds, current first.
func (r *Keyring) IDs() []string { return append([]string(nil), r.ids...) }

// KEKs returns the KEKs the keyring holds, current first, so that a new
// keyring can keep them as previous keys during a rotation.
func (r *Keyring) KEKs() []*KEK {
	out := make([]*KEK, 0, len(r.ids))
	if r.current != nil {
		out = append(out, r.current)
	}
	for _, k := range r.held {
		if k != r.current {
			out = append(out, k)
		}
	}
	return out
}

// Seal encrypts plaintext under a fresh data key wrapped by the current KEK,
// binding aad (normally the record id), and returns the blob. It neither
// modifies nor retains plaintext or aad.
func (r *Keyring) Seal(plaintext, aad []byte) ([]byte, error) {
	if r.current == nil {
		return nil, ErrNoCurrentKEK.Wrap("seal: seal", nil)
	}
	var dek [dekSize]byte
	defer clear(dek[:])
	if _, err := rand.Read(dek[:]); err != nil {
		return nil, fmt.Errorf("seal: seal: data key: %w", err)
	}
	payloadAEAD, err := newAEAD(dek[:])
	if err != nil {
		return nil, fmt.Errorf("seal: seal: %w", err)
	}
	header := newHeader(r.current)
	blob := make([]byte, 0, Overhead+len(plaintext))
	blob = append(blob, header[:]...)
	blob, err = wrapDEK(r.current, blob, dek[:], header[:])
	if err != nil {
		return nil, fmt.Errorf("seal: seal: %w", err)
	}
	blob = payloadAEAD.Seal(blob, nil, plaintext, payloadAAD(aad))
	return blob, nil
}

// Open authenticates and decrypts a blob sealed with the same aad by a KEK the
// keyring holds. A blob that fails authentication in any way returns an error
// matching [ErrTampered]; one wrapped by a KEK the keyring does not hold
// returns an [*UnknownKEKError]. On success the plaintext is a new, non-nil
// slice. Open never panics and never modifies blob.
func (r *Keyring) Open(blob, aad []byte) ([]byte, error) {
	const op = "open"
	b, err := parseBlob(op, blob)
	if err != nil {
		return nil, err
	}
	var dek [dekSize]byte
	defer clear(dek[:])
	if err := r.unwrap(op, b, &dek); err != nil {
		return nil, err
	}
	payloadAEAD, err := newAEAD(dek[:])
	if err != nil {
		return nil, fmt.Errorf("seal: open: %w", err)
	}
	// A non-nil result even for an empty plaintext: nil means failure.
	plaintext := make([]byte, 0, len(b.payload)-nonceSize-tagSize)
	plaintext, err = payloadAEAD.Open(plaintext, nil, b.payload, payloadAAD(aad))
	if err != nil {
		return nil, &tamperedError{op, "payload does not authenticate with this aad (altered, or sealed for another record)"}
	}
	return plaintext, nil
}

// Rewrap returns blob with its data key unwrapped by whichever held KEK
// wrapped it and wrapped again under to, which need not be held. The payload
// ciphertext is copied unchanged, so no plaintext is handled and no record id
// is needed; the payload is authenticated when the new blob is opened. Rewrap
// never modifies blob. Rotation jobs skip blobs whose [KEKID] already is
// to.ID(), though rewrapping those is harmless.
func (r *Keyring) Rewrap(blob []byte, to *KEK) ([]byte, error) {
	if !to.usable() {
		return nil, errors.New("seal: rewrap: nil target key-encryption key")
	}
	const op = "rewrap"
	b, err := parseBlob(op, blob)
	if err != nil {
		return nil, err
	}
	var dek [dekSize]byte
	defer clear(dek[:])
	if err := r.unwrap(op, b, &dek); err != nil {
		return nil, err
	}
	header := newHeader(to)
	out := make([]byte, 0, len(blob))
	out = append(out, header[:]...)
	out, err = wrapDEK(to, out, dek[:], header[:])
	if err != nil {
		return nil, fmt.Errorf("seal: rewrap: %w", err)
	}
	out = append(out, b.payload...)
	return out, nil
}

// wrapDEK appends dek wrapped by k to dst. cipher.AEAD.Seal cannot return
// an error, so a device-held KEK whose token fails (removed, logged out)
// panics inside it; that panic becomes an error here, never a crash.
func wrapDEK(k *KEK, dst, dek, header []byte) (out []byte, err error) {
	if k.external {
		defer func() {
			if p := recover(); p != nil {
				if perr, ok := p.(error); ok {
					err = fmt.Errorf("key-encryption key %s in its device: %w", k.ID(), perr)
				} else {
					err = fmt.Errorf("key-encryption key %s in its device: %v", k.ID(), p)
				}
			}
		}()
	}
	return k.aead.Seal(dst, nil, dek, header), nil
}

// KEKID returns the id of the KEK that wrapped blob, without any key. It fails
// with an error matching [ErrTampered] if blob is not a well-formed blob; the
// id itself is authenticated only when the blob is opened or rewrapped.
func KEKID(blob []byte) (string, error) {
	b, err := parseBlob("kek id", blob)
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(b.kekID[:]), nil
}

// parsedBlob holds views into a blob; it copies nothing but the KEK id.
type parsedBlob struct {
	header     []byte // magic, version, KEK id
	kekID      [kekIDSize]byte
	wrappedDEK []byte
	payload    []byte // payload nonce, ciphertext and tag
}

// parseBlob splits a version 1 blob into its fields, checking every bound.
func parseBlob(op string, blob []byte) (parsedBlob, error) {
	if !bytes.HasPrefix(blob, []byte(blobMagic)) {
		return parsedBlob{}, &tamperedError{op, "not a trustflow sealed blob"}
	}
	if len(blob) > len(blobMagic) && blob[len(blobMagic)] != blobVersion {
		return parsedBlob{}, &tamperedError{op, fmt.Sprintf("unsupported blob version %d", blob[len(blobMagic)])}
	}
	if len(blob) < Overhead {
		return parsedBlob{}, &tamperedError{op, fmt.Sprintf("truncated: %d bytes, shorter than the %d-byte minimum", len(blob), Overhead)}
	}
	b := parsedBlob{
		header:     blob[:headerSize:headerSize],
		wrappedDEK: blob[headerSize:payloadOffset:payloadOffset],
		payload:    blob[payloadOffset:len(blob):len(blob)],
	}
	copy(b.kekID[:], blob[kekIDOffset:headerSize])
	return b, nil
}

// unwrap decrypts b's data key into dek with the held KEK that wrapped it.
func (r *Keyring) unwrap(op string, b parsedBlob, dek *[dekSize]byte) error {
	k, ok := r.held[b.kekID]
	if !ok {
		return &UnknownKEKError{Op: op, ID: hex.EncodeToString(b.kekID[:]), Held: r.IDs()}
	}
	if _, err := k.aead.Open(dek[:0], nil, b.wrappedDEK, b.header); err != nil {
		return &tamperedError{op, "wrapped data key does not authenticate under key-encryption key " + k.ID()}
	}
	return nil
}

// newHeader returns the blob header naming k.
func newHeader(k *KEK) [headerSize]byte {
	var h [headerSize]byte
	copy(h[:], blobMagic)
	h[len(blobMagic)] = blobVersion
	copy(h[kekIDOffset:], k.id[:])
	return h
}

// payloadAAD returns the payload's additional data: magic, version, aad.
func payloadAAD(aad []byte) []byte {
	out := make([]byte, 0, payloadAADPrefix+len(aad))
	out = append(out, blobMagic...)
	out = append(out, blobVersion)
	return append(out, aad...)
}
