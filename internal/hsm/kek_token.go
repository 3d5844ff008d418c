//go:build cgo

package hsm

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"

	"github.com/trustflow/trustflow/internal/seal"
)

const (
	kekIDSize = 8
	gcmTag    = 16
)

type tokenKEK struct {
	key *crypto11.SecretKey
	id  []byte
}

func (t *Tokens) findKEKs(ctx context.Context, u URI) (*crypto11.Context, []tokenKEK, error) {
	c, err := t.context(ctx, u)
	if err != nil {
		return nil, nil, err
	}
	keys, err := c.FindKeys(nil, []byte(u.Object))
	if err != nil {
		return nil, nil, t.opError(u, fmt.Sprintf("looking for key-encryption keys labelled %q", u.Object), err)
	}
	var out []tokenKEK
	for _, k := range keys {
		a, err := c.GetAttribute(k, crypto11.CkaId)
		if err != nil {
			return nil, nil, t.opError(u, "reading a key-encryption key's id", err)
		}
		if len(a.Value) != kekIDSize {
			return nil, nil, tokenError(u.TokenName(), CodeTokenError, fmt.Sprintf("a key labelled %q has a %d-byte id; trustflow's key-encryption keys have 8-byte ids", u.Object, len(a.Value)), "give the key-encryption key a label no other key uses", nil)
		}
		out = append(out, tokenKEK{key: k, id: a.Value})
	}
	return c, out, nil
}

func (t *Tokens) loadKEKs(ctx context.Context, u URI) ([]*seal.KEK, error) {
	_, keys, err := t.findKEKs(ctx, u)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("hsm: %s: no key labelled %q: %w", u.KeyRef(), u.Object, seal.ErrNoKEK)
	}
	out := make([]*seal.KEK, 0, len(keys))
	for _, k := range keys {
		kek, err := t.sealKEK(u, k)
		if err != nil {
			return nil, err
		}
		out = append(out, kek)
	}
	return out, nil
}

func (t *Tokens) sealKEK(u URI, k tokenKEK) (*seal.KEK, error) {
	gcm, err := k.key.NewGCM()
	if err != nil {
		return nil, tokenError(u.TokenName(), CodeTokenError, "the key-encryption key cannot do AES-GCM", "use a token that supports CKM_AES_GCM", err)
	}
	aead := &tokenGCM{gcm: gcm, tokens: t, uri: u}
	return seal.NewExternalKEK(hex.EncodeToString(k.id), aead)
}

func (t *Tokens) createKEK(ctx context.Context, u URI, first bool) (*seal.KEK, error) {
	c, keys, err := t.findKEKs(ctx, u)
	if err != nil {
		return nil, err
	}
	if first && len(keys) > 0 {
		return nil, tokenError(u.TokenName(), CodeKeyExists, fmt.Sprintf("the token already holds a key-encryption key labelled %q", u.Object), "trustflow never overwrites a key in a token: load it, or choose another object= label", nil)
	}
	if first {
		// A key pair of that label is no KEK, but taking its label would
		// make both ambiguous.
		if err := t.refuseExisting(u, c); err != nil {
			return nil, err
		}
	}
	id := make([]byte, kekIDSize)
	for {
		if _, err := rand.Read(id); err != nil {
			return nil, fmt.Errorf("hsm: kek id: %w", err)
		}
		taken := false
		for _, k := range keys {
			taken = taken || bytes.Equal(k.id, id)
		}
		if !taken {
			break
		}
	}
	tmpl, err := crypto11.NewAttributeSetWithIDAndLabel(id, []byte(u.Object))
	if err != nil {
		return nil, err
	}
	for _, a := range []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, false),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, false),
	} {
		if err := tmpl.Set(a.Type, a.Value); err != nil {
			return nil, err
		}
	}
	key, err := c.GenerateSecretKeyWithAttributes(tmpl, 256, crypto11.CipherAES)
	if err != nil {
		return nil, t.opError(u, fmt.Sprintf("generating an AES-256 key-encryption key labelled %q", u.Object), err)
	}
	return t.sealKEK(u, tokenKEK{key: key, id: id})
}

func (t *Tokens) commitKEK(ctx context.Context, u URI, id string) error {
	want, err := hex.DecodeString(id)
	if err != nil || len(want) != kekIDSize {
		return fmt.Errorf("hsm: commit kek: %q is not a 16-hex-digit kek id", id)
	}
	_, keys, err := t.findKEKs(ctx, u)
	if err != nil {
		return err
	}
	found := false
	for _, k := range keys {
		found = found || bytes.Equal(k.id, want)
	}
	if !found {
		return tokenError(u.TokenName(), CodeKeyNotFound, fmt.Sprintf("the token holds no key-encryption key %s labelled %q", id, u.Object), "nothing was destroyed; check the kek id and the URI's object= label", nil)
	}
	var errs []error
	for _, k := range keys {
		if bytes.Equal(k.id, want) {
			continue
		}
		if err := k.key.Delete(); err != nil {
			errs = append(errs, t.opError(u, fmt.Sprintf("destroying the old key-encryption key %x", k.id), err))
		}
	}
	return errors.Join(errs...)
}

// tokenGCM is AES-256-GCM in the token with the calling convention of
// cipher.NewGCMWithRandomNonce: NonceSize 0, Overhead 28, and Seal returns
// nonce || ciphertext || tag with a fresh random 96-bit nonce.
type tokenGCM struct {
	gcm    cipher.AEAD // crypto11's, with 12-byte nonces
	tokens *Tokens
	uri    URI
}

func (g *tokenGCM) NonceSize() int { return 0 }
func (g *tokenGCM) Overhead() int  { return gcmNonceSize + gcmTag }

// Seal encrypts in the token. cipher.AEAD's Seal cannot return an error, so
// a token failure panics with an *errs.Error (as crypto11 itself does), rather
// than returning a blob that would never open.
func (g *tokenGCM) Seal(dst, nonce, plaintext, additionalData []byte) []byte {
	if len(nonce) != 0 {
		panic("hsm: token AES-GCM draws its own nonce; pass a nil nonce")
	}
	var n [gcmNonceSize]byte
	if _, err := rand.Read(n[:]); err != nil {
		panic(fmt.Sprintf("hsm: nonce: %v", err))
	}
	var out []byte
	func() {
		defer func() {
			if r := recover(); r != nil {
				err, ok := r.(error)
				if !ok {
					err = fmt.Errorf("%v", r)
				}
				panic(g.tokens.opError(g.uri, "wrapping a data key with the key-encryption key", err))
			}
		}()
		out = g.gcm.Seal(nil, n[:], plaintext, additionalData)
	}()
	dst = append(dst, n[:]...)
	return append(dst, out...)
}

// Open decrypts nonce || ciphertext || tag in the token.
func (g *tokenGCM) Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error) {
	if len(nonce) != 0 {
		return nil, errors.New("hsm: token AES-GCM reads its nonce from the ciphertext; pass a nil nonce")
	}
	if len(ciphertext) < gcmNonceSize+gcmTag {
		return nil, errors.New("hsm: ciphertext too short")
	}
	out, err := g.gcm.Open(dst, ciphertext[:gcmNonceSize], ciphertext[gcmNonceSize:], additionalData)
	if err != nil {
		return nil, g.tokens.opError(g.uri, "unwrapping a data key with the key-encryption key", err)
	}
	return out, nil
}
