//go:build cgo

package hsm

import (
	"context"
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"io"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"
)

// GenerateSigner generates a key pair of keyType (see [KeyTypes]) inside
// u's token, labelled u.Object, with a random 16-byte CKA_ID (or u.ID when
// given), and returns its signer. The private key is a token object that is
// sensitive and never extractable: it cannot be read out, not even
// wrapped. An existing key with the same label is never overwritten.
func (t *Tokens) GenerateSigner(ctx context.Context, u URI, keyType string) (*Signer, error) {
	if u.Object == "" {
		return nil, tokenError(u.TokenName(), CodeKeyNotFound, "the URI names no object to label the new key with", "add ;object=NAME to the pkcs11: URI", nil)
	}
	curve, bits, err := keyParams(u, keyType)
	if err != nil {
		return nil, err
	}
	c, err := t.context(ctx, u)
	if err != nil {
		return nil, err
	}
	if err := t.refuseExisting(u, c); err != nil {
		return nil, err
	}
	id := u.ID
	if len(id) == 0 {
		id = make([]byte, 16)
		if _, err := rand.Read(id); err != nil {
			return nil, fmt.Errorf("hsm: key id: %w", err)
		}
	}
	pub, priv, err := keyTemplates(id, []byte(u.Object), bits > 0)
	if err != nil {
		return nil, err
	}
	var s crypto11.Signer
	if bits > 0 {
		s, err = c.GenerateRSAKeyPairWithAttributes(pub, priv, bits)
	} else {
		s, err = c.GenerateECDSAKeyPairWithAttributes(pub, priv, curve)
	}
	if err != nil {
		return nil, t.opError(u, fmt.Sprintf("generating a %s key labelled %q", keyType, u.Object), err)
	}
	return &Signer{s: s, tokens: t, uri: u.WithID(id), keyType: keyType}, nil
}

func keyParams(u URI, keyType string) (elliptic.Curve, int, error) {
	switch keyType {
	case "", "ecdsa-p256":
		return elliptic.P256(), 0, nil
	case "ecdsa-p384":
		return elliptic.P384(), 0, nil
	case "rsa-3072":
		return nil, 3072, nil
	}
	return nil, 0, tokenError(u.TokenName(), CodeTokenError, fmt.Sprintf("trustflow does not generate %q keys in a token", keyType), "use --key-type ecdsa-p256, ecdsa-p384 or rsa-3072", nil)
}

// keyTemplates sets every security attribute explicitly rather than
// relying on crypto11's defaults: a token object, private, sensitive, not
// extractable, used only to sign.
func keyTemplates(id, label []byte, rsa bool) (pub, priv crypto11.AttributeSet, err error) {
	if pub, err = crypto11.NewAttributeSetWithIDAndLabel(id, label); err != nil {
		return nil, nil, err
	}
	if priv, err = crypto11.NewAttributeSetWithIDAndLabel(id, label); err != nil {
		return nil, nil, err
	}
	pubAttrs := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, false),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
	}
	privAttrs := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
	}
	if rsa {
		pubAttrs = append(pubAttrs, pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false))
		privAttrs = append(privAttrs, pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false))
	}
	if err := setAll(pub, pubAttrs); err != nil {
		return nil, nil, err
	}
	if err := setAll(priv, privAttrs); err != nil {
		return nil, nil, err
	}
	return pub, priv, nil
}

func setAll(set crypto11.AttributeSet, attrs []*pkcs11.Attribute) error {
	for _, a := range attrs {
		if err := set.Set(a.Type, a.Value); err != nil {
			return err
		}
	}
	return nil
}

// refuseExisting fails when the token already holds a key labelled
// u.Object.
func (t *Tokens) refuseExisting(u URI, c *crypto11.Context) error {
	pairs, err := c.FindKeyPairs(nil, []byte(u.Object))
	if err != nil {
		return t.opError(u, fmt.Sprintf("looking for keys labelled %q", u.Object), err)
	}
	secrets, err := c.FindKeys(nil, []byte(u.Object))
	if err != nil {
		return t.opError(u, fmt.Sprintf("looking for keys labelled %q", u.Object), err)
	}
	if len(pairs)+len(secrets) > 0 {
		return tokenError(u.TokenName(), CodeKeyExists, fmt.Sprintf("the token already holds a key labelled %q", u.Object), "choose another object= label; trustflow never overwrites a key in a token", nil)
	}
	return nil
}

// FindSigner finds the key pair that u names by label (object), id, or
// both, and returns its signer.
func (t *Tokens) FindSigner(ctx context.Context, u URI) (*Signer, error) {
	if u.Object == "" && len(u.ID) == 0 {
		return nil, tokenError(u.TokenName(), CodeKeyNotFound, "the URI names no key", "add ;object=LABEL (or ;id=...) to the pkcs11: URI", nil)
	}
	c, err := t.context(ctx, u)
	if err != nil {
		return nil, err
	}
	var label []byte
	if u.Object != "" {
		label = []byte(u.Object)
	}
	pairs, err := c.FindKeyPairs(u.ID, label)
	if err != nil {
		return nil, t.opError(u, "looking for the key "+describe(u), err)
	}
	switch len(pairs) {
	case 0:
		return nil, tokenError(u.TokenName(), CodeKeyNotFound, "the token holds no key pair "+describe(u), "check object= (and id=) against `pkcs11-tool --module "+u.ModulePath+" --login --list-objects`; the private key needs its public key object beside it", nil)
	case 1:
	default:
		return nil, tokenError(u.TokenName(), CodeKeyNotFound, fmt.Sprintf("the token holds %d key pairs %s", len(pairs), describe(u)), "add ;id=... to the URI to pick one", nil)
	}
	if len(u.ID) == 0 {
		a, err := c.GetAttribute(pairs[0], crypto11.CkaId)
		if err != nil {
			return nil, t.opError(u, "reading the key's id", err)
		}
		u = u.WithID(a.Value)
	}
	return &Signer{s: pairs[0], tokens: t, uri: u, keyType: ""}, nil
}

func describe(u URI) string {
	switch {
	case u.Object != "" && len(u.ID) > 0:
		return fmt.Sprintf("labelled %q with id %x", u.Object, u.ID)
	case u.Object != "":
		return fmt.Sprintf("labelled %q", u.Object)
	}
	return fmt.Sprintf("with id %x", u.ID)
}

// Signer is a private key inside a token. It implements crypto.Signer
// (ECDSA, and RSA with PKCS #1 v1.5 or PSS, as TLS 1.3 needs), so it serves
// as a tls.Certificate's PrivateKey; every signature is made by the token.
type Signer struct {
	s       crypto11.Signer
	tokens  *Tokens
	uri     URI
	keyType string
}

// Public returns the public key.
func (s *Signer) Public() crypto.PublicKey { return s.s.Public() }

// Sign signs digest in the token. rand is ignored: the token draws its own.
func (s *Signer) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	sig, err := s.s.Sign(rand, digest, opts)
	if err != nil {
		return nil, s.tokens.opError(s.uri, fmt.Sprintf("signing with the key labelled %q", s.uri.Object), err)
	}
	return sig, nil
}

// URI names the key: its token, label and id, and the URI's module and PIN
// source. Its KeyRef is what trustflow stores.
func (s *Signer) URI() URI { return s.uri }

// Destroy deletes the key pair from the token (C_DestroyObject on both
// halves). trustflow calls it only to undo a generation whose change
// failed.
func (s *Signer) Destroy() error {
	if err := s.s.Delete(); err != nil {
		return s.tokens.opError(s.uri, fmt.Sprintf("destroying the key labelled %q", s.uri.Object), err)
	}
	return nil
}
