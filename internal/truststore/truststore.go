// Package truststore owns trustflow's trust store: the CA bundles that
// connectors trust to sign servers' certificates, and the client identities
// (certificate, chain and sealed private key, in versions of which exactly
// one is active) that trustflow presents. It validates every input with pki,
// seals keys with seal, records every change in the audit log in the same
// transaction, and serves the active identity to TLS handshakes.
package truststore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/policy"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/hsm"
	"github.com/trustflow/trustflow/internal/seal"
	"github.com/trustflow/trustflow/internal/store"
)

// InUseFunc reports which resources (by name) still use the CA or identity
// called name; kind is "ca" or "identity". It runs inside the removal's
// transaction.
type InUseFunc func(ctx context.Context, tx *store.Tx, kind, name string) ([]string, error)

// Config configures the trust store. Store, Audit and Keyring are required.
type Config struct {
	Store   *store.Store
	Audit   *audit.Log
	Keyring *seal.Keyring
	// Clock defaults to the wall clock.
	Clock clock.Clock
	// FIPS applies the FIPS 140-3 key and certificate policy to every import
	// and generation.
	FIPS bool
	// InUse guards removals. Defaults to "nothing uses anything".
	InUse InUseFunc
	// HSM opens the PKCS#11 tokens of identities whose keys live in one
	// (key_ref). Defaults to a cache the Service makes on first use and
	// never closes; the composition root passes one and closes it at
	// shutdown.
	HSM *hsm.Tokens
	// Policy returns the policy whose identity rules (key sizes, lifetime,
	// clientAuth) every imported or installed certificate must meet; nil
	// means the default policy.
	Policy func() *policy.Policy
	// RevalidateAfter is how long the handshake path trusts its cached
	// active identity before re-reading its revision. Changes made through
	// this Service take effect at once; this bounds the delay for changes
	// made by another node. Defaults to 1s.
	RevalidateAfter time.Duration
}

// Service is the trust store.
type Service struct {
	cfg     Config
	store   *store.Store
	audit   *audit.Log
	clock   clock.Clock
	keyring atomic.Pointer[seal.Keyring]

	hsmOnce sync.Once

	mu      sync.RWMutex
	active  map[string]*activeEntry
	anchors map[string]*anchorEntry
	events  EventSink
	// gen counts local changes to CAs and identities, so that callers
	// caching what they built from them (connector clients) notice at once.
	gen atomic.Int64
}

// New returns the trust store service.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Audit == nil || cfg.Keyring == nil {
		return nil, errors.New("truststore: Store, Audit and Keyring are required")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.InUse == nil {
		cfg.InUse = func(context.Context, *store.Tx, string, string) ([]string, error) { return nil, nil }
	}
	if cfg.RevalidateAfter == 0 {
		cfg.RevalidateAfter = time.Second
	}
	s := &Service{cfg: cfg, store: cfg.Store, audit: cfg.Audit, clock: cfg.Clock, active: map[string]*activeEntry{}, anchors: map[string]*anchorEntry{}}
	s.keyring.Store(cfg.Keyring)
	return s, nil
}

// EventSink receives lifecycle events (identity.rotated) inside the
// transaction of the change that caused them.
type EventSink func(ctx context.Context, tx *store.Tx, event string, payload map[string]any) error

// SetEventSink installs the receiver of lifecycle events.
func (s *Service) SetEventSink(f EventSink) { s.events = f }

func (s *Service) emit(ctx context.Context, tx *store.Tx, event string, payload map[string]any) error {
	if s.events == nil {
		return nil
	}
	return s.events(ctx, tx, event, payload)
}

// SetInUse installs the removal guard once the components that use CAs and
// identities exist.
func (s *Service) SetInUse(f InUseFunc) { s.cfg.InUse = f }

// UseKeyring replaces the keyring that seals and opens keys. The caller
// guarantees that it opens every stored key (see Rewrap).
func (s *Service) UseKeyring(kr *seal.Keyring) { s.keyring.Store(kr) }

// Generation changes whenever this Service changes a CA or an identity.
// Changes made by another node are seen within RevalidateAfter.
func (s *Service) Generation() int64 { return s.gen.Load() }

// RevalidateAfter is how long cached trust material is used before it is
// checked against the database again.
func (s *Service) RevalidateAfter() time.Duration { return s.cfg.RevalidateAfter }

// SealSecret seals a secret (a connector's password or token) bound to aad,
// and returns the blob and the id of the KEK that sealed it.
func (s *Service) SealSecret(plaintext, aad []byte) ([]byte, string, error) {
	kr := s.keyring.Load()
	blob, err := kr.Seal(plaintext, aad)
	if err != nil {
		return nil, "", fmt.Errorf("truststore: seal secret: %w", err)
	}
	return blob, kr.CurrentID(), nil
}

// OpenSecret opens a blob made by SealSecret with the same aad.
func (s *Service) OpenSecret(blob, aad []byte) ([]byte, error) {
	out, err := s.keyring.Load().Open(blob, aad)
	if err != nil {
		return nil, fmt.Errorf("truststore: open secret: %w", err)
	}
	return out, nil
}

// Keyring returns the keyring currently sealing keys.
func (s *Service) Keyring() *seal.Keyring { return s.keyring.Load() }

// The trust store's failures are *errs.Error values: Invalid naming the
// request field at fault (with pki's code, message and hint when pki found
// the problem), Conflict for a change the current state refuses (UsedBy
// names what still uses a resource), NotFound naming what does not exist.

// notFound says that the kind ("CA", "identity", "identity version") named
// name does not exist. It matches store.ErrNotFound.
func notFound(kind, name string) *errs.Error {
	e := errs.NotFoundNamed(kind, name, notFoundHint(kind))
	e.Op = "truststore"
	return e
}

func notFoundHint(kind string) string {
	switch kind {
	case "CA":
		return "check the name; list them with `trustflow ca list`"
	case "identity version":
		return "check the version; list them with `trustflow identity show NAME`"
	}
	return "check the name; list them with `trustflow identity list`"
}

// fieldError makes err (a pki *errs.Error, usually) an Invalid error on
// field, keeping its code, message and hint.
func fieldError(field string, err error) error {
	if pe, ok := errs.As(err); ok {
		return &errs.Error{Kind: errs.Invalid, Code: pe.Code, Field: field, Message: pe.Message, Hint: pe.Hint, Op: "truststore", Err: err}
	}
	return &errs.Error{Kind: errs.Invalid, Code: "invalid_input", Field: field, Message: err.Error(), Op: "truststore", Err: err}
}

func invalid(field, code, msg, hint string) error {
	return &errs.Error{Kind: errs.Invalid, Code: code, Field: field, Message: msg, Hint: hint, Op: "truststore"}
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

func checkName(field, name string) error {
	if !nameRE.MatchString(name) {
		return invalid(field, "invalid_name", fmt.Sprintf("%q is not a valid name", name),
			"use 1-63 lowercase letters, digits, '.', '-' or '_', starting with a letter or digit, e.g. hr-prod")
	}
	return nil
}

func newID(prefix string) (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("truststore: generate id: %w", err)
	}
	return prefix + hex.EncodeToString(b), nil
}

func (s *Service) now() time.Time { return s.clock.Now().UTC().Truncate(time.Microsecond) }
