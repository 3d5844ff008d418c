//go:build !cgo

package hsm

import (
	"context"
	"crypto"
	"io"

	"github.com/trustflow/trustflow/internal/seal"
)

// noCgo is the error of every operation in a binary built without cgo.
func noCgo(u URI) error {
	return tokenError(u.TokenName(), CodeModuleNotLoadable, "this trustflow binary was built without cgo (CGO_ENABLED=0), so it cannot load a PKCS#11 module", "build with cgo to use pkcs11: URIs", nil)
}

// Tokens would cache token contexts; without cgo it opens none.
type Tokens struct{}

// NewTokens returns a Tokens whose every operation fails: this binary was
// built without cgo.
func NewTokens() *Tokens { return &Tokens{} }

// Close does nothing.
func (t *Tokens) Close() error { return nil }

// GenerateSigner fails: this binary was built without cgo.
func (t *Tokens) GenerateSigner(ctx context.Context, u URI, keyType string) (*Signer, error) {
	return nil, noCgo(u)
}

// FindSigner fails: this binary was built without cgo.
func (t *Tokens) FindSigner(ctx context.Context, u URI) (*Signer, error) { return nil, noCgo(u) }

// Signer is a private key inside a token; without cgo there is none.
type Signer struct{ uri URI }

// Public returns nil.
func (s *Signer) Public() crypto.PublicKey { return nil }

// Sign fails: this binary was built without cgo.
func (s *Signer) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) { return nil, noCgo(s.uri) }

// URI names the key.
func (s *Signer) URI() URI { return s.uri }

func (t *Tokens) loadKEKs(ctx context.Context, u URI) ([]*seal.KEK, error) { return nil, noCgo(u) }
func (t *Tokens) createKEK(ctx context.Context, u URI, first bool) (*seal.KEK, error) {
	return nil, noCgo(u)
}
func (t *Tokens) commitKEK(ctx context.Context, u URI, id string) error { return noCgo(u) }

// Destroy fails: this binary was built without cgo.
func (s *Signer) Destroy() error { return noCgo(s.uri) }
