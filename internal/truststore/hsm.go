package truststore

import (
	"context"
	"crypto"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/hsm"
	"github.com/trustflow/trustflow/internal/pki"
	"github.com/trustflow/trustflow/internal/store"
)

// Where a version's private key is kept (Version.KeyStore).
const (
	KeyStoreSealed = "sealed" // sealed by a KEK, in the database
	KeyStorePKCS11 = "pkcs11" // inside a PKCS#11 token; the database holds its URI
)

// KeyRef says where a token-held key is: its token, label and id, and the
// URI trustflow finds it with (module-path and pin-source, never a PIN).
type KeyRef struct {
	URI   string `json:"uri"`
	Token string `json:"token"`
	Label string `json:"label"`
	ID    string `json:"id,omitempty"` // CKA_ID in hex
}

func keyRefView(ref string) *KeyRef {
	if ref == "" {
		return nil
	}
	u, err := hsm.ParseURI(ref)
	if err != nil {
		return &KeyRef{URI: ref}
	}
	return &KeyRef{URI: u.KeyRef(), Token: u.TokenName(), Label: u.Object, ID: hex.EncodeToString(u.ID)}
}

// tokens returns the PKCS#11 token cache: Config.HSM, or one made on
// first use.
func (s *Service) tokens() *hsm.Tokens {
	s.hsmOnce.Do(func() {
		if s.cfg.HSM == nil {
			s.cfg.HSM = hsm.NewTokens()
		}
	})
	return s.cfg.HSM
}

// parseKeyStore reads a --key-store / key_ref value: a pkcs11: URI whose
// PIN comes from a pin-source, so any node can log in again after a
// restart.
func parseKeyStore(field, v string) (hsm.URI, error) {
	u, err := hsm.ParseURI(strings.TrimSpace(v))
	if err != nil {
		if ue, ok := errs.As(err); ok {
			return u, &errs.Error{Kind: errs.Invalid, Code: "invalid_key_store", Field: field, Message: ue.Message, Hint: ue.Hint, Op: "truststore", Err: err}
		}
		return u, &errs.Error{Kind: errs.Invalid, Code: "invalid_key_store", Field: field, Message: err.Error(), Op: "truststore", Err: err}
	}
	if u.PinValue != "" {
		return u, invalid(field, "pin_value_not_stored", "the URI carries a pin-value, which trustflow never stores, so it could not log in to the token again",
			"put the PIN in a file readable only by trustflow and use pin-source=file:/path (or env:NAME) instead")
	}
	if u.PinSource == "" {
		return u, invalid(field, "pin_source_required", "the URI names no pin-source",
			"add &pin-source=file:/path/to/pin-file (or env:NAME) so trustflow can log in to the token")
	}
	return u, nil
}

// versionSuffix matches the label suffix of versions after the first.
var versionSuffix = regexp.MustCompile(`-v[0-9]+$`)

// tokenLabel is the label of version's key: the base label for version 1,
// base-vN for version N after it.
func tokenLabel(base string, version int) string {
	if version == 1 {
		return base
	}
	return fmt.Sprintf("%s-v%d", base, version)
}

// baseLabel is the label a version's key was derived from.
func baseLabel(v store.IdentityVersion) string {
	u, err := hsm.ParseURI(v.KeyRef)
	if err != nil {
		return ""
	}
	if v.Version > 1 && strings.HasSuffix(u.Object, fmt.Sprintf("-v%d", v.Version)) {
		return versionSuffix.ReplaceAllString(u.Object, "")
	}
	return u.Object
}

// tokenKeyStore returns the key store (with a base label) a generated
// version of an identity uses: the request's, or that of the newest
// token-held version when the request names none; ok is false for a
// sealed key.
func tokenKeyStore(spec GenerateSpec, name string, versions []store.IdentityVersion) (hsm.URI, bool, error) {
	switch strings.TrimSpace(spec.KeyStore) {
	case KeyStoreSealed:
		return hsm.URI{}, false, nil
	case "":
		for i := len(versions) - 1; i >= 0; i-- {
			if versions[i].KeyRef != "" {
				u, err := hsm.ParseURI(versions[i].KeyRef)
				if err != nil {
					return u, false, fmt.Errorf("truststore: stored key_ref of %q v%d: %w", name, versions[i].Version, err)
				}
				return u.WithObject(baseLabel(versions[i])), true, nil
			}
		}
		return hsm.URI{}, false, nil
	}
	u, err := parseKeyStore("key_store", spec.KeyStore)
	if err != nil {
		return u, false, err
	}
	if u.Object == "" {
		u.Object = "trustflow-" + name
	}
	return u.WithObject(u.Object), true, nil
}

// generateInToken makes version's key in u's token and its CSR.
func (s *Service) generateInToken(ctx context.Context, u hsm.URI, version int, spec GenerateSpec) (*hsm.Signer, []byte, string, error) {
	subject, err := s.checkSpec(spec)
	if err != nil {
		return nil, nil, "", err
	}
	keyType := spec.KeyType
	if keyType == "" {
		keyType = hsm.KeyTypes()[0]
	}
	if !contains(hsm.KeyTypes(), keyType) {
		return nil, nil, "", invalid("key_type", pki.CodeInvalidKeyType, fmt.Sprintf("trustflow does not generate %q keys in a token", keyType),
			"use one of: "+strings.Join(hsm.KeyTypes(), ", "))
	}
	signer, err := s.tokens().GenerateSigner(ctx, u.WithObject(tokenLabel(u.Object, version)), keyType)
	if err != nil {
		return nil, nil, "", err
	}
	if s.cfg.FIPS {
		if err := pki.CheckFIPSKey(signer.Public()); err != nil {
			return nil, nil, "", errors.Join(fieldError("key_type", err), destroy(signer))
		}
	}
	csr, err := pki.CreateCSR(signer, subject, spec.DNSNames)
	if err != nil {
		return nil, nil, "", errors.Join(fieldError("dns", err), destroy(signer))
	}
	return signer, csr, pki.KeyType(signer.Public()), nil
}

// destroy removes a key just generated for a change that failed, so the
// label is free for the retry.
func destroy(signer *hsm.Signer) error {
	if signer == nil {
		return nil
	}
	if err := signer.Destroy(); err != nil {
		return fmt.Errorf("truststore: the key %s generated for this change could not be removed from its token; remove it by hand before retrying: %w", signer.URI().KeyRef(), err)
	}
	return nil
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// findTokenKey finds the key a key_ref names, for an import.
func (s *Service) findTokenKey(ctx context.Context, ref string) (*hsm.Signer, error) {
	u, err := parseKeyStore("key_ref", ref)
	if err != nil {
		return nil, err
	}
	signer, err := s.tokens().FindSigner(ctx, u)
	if he, ok := errs.As(err); ok && he.Code == hsm.CodeKeyNotFound {
		return nil, &errs.Error{Kind: errs.Invalid, Code: hsm.CodeKeyNotFound, Field: "key_ref", Message: he.Message, Hint: he.Hint, Op: "truststore", Err: err}
	}
	return signer, err
}

// openTokenKey returns a token-held version's signer.
func (s *Service) openTokenKey(ctx context.Context, v store.IdentityVersion) (crypto.Signer, error) {
	u, err := hsm.ParseURI(v.KeyRef)
	if err != nil {
		return nil, fmt.Errorf("truststore: identity version %s/v%d: stored key_ref: %w", v.IdentityID, v.Version, err)
	}
	signer, err := s.tokens().FindSigner(ctx, u)
	if err != nil {
		return nil, &TokenKeyError{IdentityID: v.IdentityID, Version: v.Version, Err: err}
	}
	return signer, nil
}

// TokenKeyError means a version's key, kept in a PKCS#11 token, cannot be
// used now: the token is missing, its PIN is wrong or locked, or the key is
// gone. Err is the token error that names the token and the fix.
type TokenKeyError struct {
	IdentityID string
	Version    int
	Err        error
}

func (e *TokenKeyError) Error() string {
	return fmt.Sprintf("truststore: the private key of identity version %s/v%d is in a PKCS#11 token that cannot be used now: %v", e.IdentityID, e.Version, e.Err)
}

// Unwrap returns the cause, the token error.
func (e *TokenKeyError) Unwrap() error { return e.Err }

// hsmReason is the audit reason of a token key that is unavailable.
func hsmReason(err error) string {
	if he, ok := errs.As(err); ok {
		return "pkcs11 " + he.Code + ": " + he.Message
	}
	return "pkcs11 token error"
}
