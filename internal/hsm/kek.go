package hsm

import (
	"context"
	"fmt"

	"github.com/trustflow/trustflow/internal/seal"
)

// KEKSource keeps trustflow's key-encryption keys inside a token, as
// AES-256 secret-key objects (sensitive, never extractable, CKA_ENCRYPT and
// CKA_DECRYPT) labelled URI.Object. Each object's CKA_ID is 8 random bytes
// whose hex form is the KEK id. Wrapping and unwrapping data keys runs in
// the token (CKM_AES_GCM with a random 96-bit nonce drawn here).
//
// Every KEK the source holds has the same label and a different id:
// Create makes the first, Stage adds another beside it, Load returns all of
// them (in the token's order; the database says which one seals), and
// Commit destroys (C_DestroyObject) every one but the committed id. A crash
// between Stage and Commit leaves both in the token, both loadable.
type KEKSource struct {
	Tokens *Tokens
	URI    URI
}

var _ seal.Source = KEKSource{}

// String names the token and label; it never contains the PIN.
func (s KEKSource) String() string { return s.URI.KeyRef() }

func (s KEKSource) check() error {
	if s.Tokens == nil {
		return fmt.Errorf("hsm: kek source %s: nil Tokens", s)
	}
	if s.URI.Object == "" {
		return tokenError(s.URI.TokenName(), CodeKeyNotFound, "the key-encryption key URI names no object", "add ;object=LABEL (e.g. object=trustflow-kek) to the pkcs11: URI", nil)
	}
	return nil
}

// Load returns every KEK labelled URI.Object, or an error matching
// [seal.ErrNoKEK] when there is none.
func (s KEKSource) Load(ctx context.Context) ([]*seal.KEK, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	return s.Tokens.loadKEKs(ctx, s.URI)
}

// Create generates the source's first KEK in the token. It refuses when a
// key labelled URI.Object exists already.
func (s KEKSource) Create(ctx context.Context) (*seal.KEK, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	return s.Tokens.createKEK(ctx, s.URI, true)
}

// Stage generates another KEK with the same label and a new id.
func (s KEKSource) Stage(ctx context.Context) (*seal.KEK, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	return s.Tokens.createKEK(ctx, s.URI, false)
}

// Commit destroys every KEK labelled URI.Object except id's.
func (s KEKSource) Commit(ctx context.Context, id string) error {
	if err := s.check(); err != nil {
		return err
	}
	return s.Tokens.commitKEK(ctx, s.URI, id)
}
