//go:build cgo

package hsm

import (
	"context"
	"errors"
	"strings"
	"sync"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"

	"github.com/trustflow/trustflow/internal/errs"
)

// gcmNonceSize is the AES-GCM nonce the token is given: 96 bits, as NIST
// SP 800-38D recommends (crypto11 defaults to 128).
const gcmNonceSize = 12

// Tokens opens PKCS#11 tokens and keeps one crypto11 context (a logged-in
// session pool) per module and token for the life of the process:
// contexts are expensive, and a module is initialised once per process.
// The zero value is not usable; call NewTokens. A Tokens is safe for
// concurrent use. Close releases every context.
type Tokens struct {
	mu     sync.Mutex
	open   map[tokenKey]*crypto11.Context
	closed bool
}

type tokenKey struct{ module, token, serial string }

// NewTokens returns an empty cache of token contexts.
func NewTokens() *Tokens { return &Tokens{open: map[tokenKey]*crypto11.Context{}} }

// Close logs out of every token and unloads the modules. Later calls fail.
// Close is idempotent.
func (t *Tokens) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var errs []error
	for k, c := range t.open {
		if err := c.Close(); err != nil {
			errs = append(errs, err)
		}
		delete(t.open, k)
	}
	t.closed = true
	return errors.Join(errs...)
}

// context returns the cached context of u's token, logging in with u's PIN
// the first time. A failed login is not cached, so fixing the PIN (file)
// and retrying works without a restart.
func (t *Tokens) context(ctx context.Context, u URI) (*crypto11.Context, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	k := tokenKey{module: u.ModulePath, token: u.Token, serial: u.Serial}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, tokenError(u.TokenName(), CodeTokenError, "the token cache is closed", "this trustflow node is shutting down", nil)
	}
	if c := t.open[k]; c != nil {
		return c, nil
	}
	pin, err := u.pin()
	if err != nil {
		return nil, err
	}
	cfg := &crypto11.Config{Path: u.ModulePath, Pin: pin, GCMIVLength: gcmNonceSize}
	// crypto11 selects the token one way: the serial when given (it is
	// unique), else the label.
	if u.Serial != "" {
		cfg.TokenSerial = u.Serial
	} else {
		cfg.TokenLabel = u.Token
	}
	c, err := crypto11.Configure(cfg)
	cfg.Pin = ""
	if err != nil {
		return nil, configureError(u, err)
	}
	t.open[k] = c
	return c, nil
}

// forget drops u's cached context after an error that means its sessions
// are gone (token removed, logged out), so the next use logs in again.
func (t *Tokens) forget(u URI, err error) {
	var rv pkcs11.Error
	if !errors.As(err, &rv) {
		return
	}
	switch rv {
	case pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED, pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_DEVICE_REMOVED,
		pkcs11.CKR_USER_NOT_LOGGED_IN, pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED:
	default:
		return
	}
	k := tokenKey{module: u.ModulePath, token: u.Token, serial: u.Serial}
	t.mu.Lock()
	c := t.open[k]
	delete(t.open, k)
	t.mu.Unlock()
	if c != nil {
		go c.Close() // blocks until in-flight operations return their sessions
	}
}

// configureError diagnoses a failed crypto11.Configure.
func configureError(u URI, err error) error {
	tok := u.TokenName()
	msg := err.Error()
	switch {
	case strings.Contains(msg, "could not find PKCS#11 token"):
		return tokenError(tok, CodeTokenNotFound, "no such token in any slot of "+u.ModulePath, "check the token= label (list them with `softhsm2-util --show-slots` or `pkcs11-tool --module "+u.ModulePath+" -L`), that the device is connected, and that the module's configuration (for SoftHSM2: SOFTHSM2_CONF) is the one trustflow reads", nil)
	case strings.Contains(msg, "failed to open module"), strings.Contains(msg, "failed to initialize module"):
		return tokenError(tok, CodeModuleNotLoadable, "the PKCS#11 module "+u.ModulePath+" does not load", "check module-path: the file must exist, be readable by trustflow, and match this machine's architecture (for SoftHSM2 on Debian: apt-get install softhsm2, /usr/lib/softhsm/libsofthsm2.so)", unwrapP11(err))
	}
	if e := p11Error(u, err); e != nil {
		return e
	}
	return tokenError(tok, CodeTokenError, "opening the token failed", "check the token with the vendor's tools", errors.New(msg))
}

func unwrapP11(err error) error {
	var rv pkcs11.Error
	if errors.As(err, &rv) {
		return rv
	}
	return nil
}

// p11Error diagnoses a CKR_* return value, or returns nil for other errors.
func p11Error(u URI, err error) *errs.Error {
	var rv pkcs11.Error
	if !errors.As(err, &rv) {
		return nil
	}
	tok := u.TokenName()
	switch rv {
	case pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_INVALID, pkcs11.CKR_PIN_LEN_RANGE:
		return tokenError(tok, CodePINIncorrect, "the token refused the PIN", "put the token's user PIN (not the SO PIN) in "+pinWhere(u)+"; each wrong attempt brings the token closer to locking it", rv)
	case pkcs11.CKR_PIN_LOCKED, pkcs11.CKR_PIN_EXPIRED:
		return tokenError(tok, CodePINLocked, "the token has locked (or expired) its user PIN", "the security officer must reset the user PIN (`softhsm2-util` cannot; use `pkcs11-tool --login --login-type so --init-pin`, or the vendor's tool), then update "+pinWhere(u), rv)
	case pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_TOKEN_NOT_RECOGNIZED, pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_SLOT_ID_INVALID:
		return tokenError(tok, CodeTokenNotFound, "the token is not present", "reconnect the device (or restore the token), then retry", rv)
	case pkcs11.CKR_USER_PIN_NOT_INITIALIZED:
		return tokenError(tok, CodePINIncorrect, "the token has no user PIN yet", "initialise the user PIN (`softhsm2-util --init-token` sets both, or `pkcs11-tool --init-pin`)", rv)
	case pkcs11.CKR_GENERAL_ERROR, pkcs11.CKR_DEVICE_ERROR, pkcs11.CKR_DEVICE_MEMORY, pkcs11.CKR_HOST_MEMORY:
		return tokenError(tok, CodeTokenError, "the token failed", "check the device and its logs, then retry", rv)
	}
	return tokenError(tok, CodeTokenError, "the token refused the operation", "check that the token supports it (see docs/keys.md)", rv)
}

func pinWhere(u URI) string {
	switch {
	case strings.HasPrefix(u.PinSource, "file:"):
		return "the file " + strings.TrimPrefix(u.PinSource, "file:")
	case strings.HasPrefix(u.PinSource, "env:"):
		return "the variable " + strings.TrimPrefix(u.PinSource, "env:")
	}
	return "pin-source"
}

// opError wraps an error of an operation on u's token: a CKR_* value gets
// its diagnosis, anything else is a token_error naming op.
func (t *Tokens) opError(u URI, op string, err error) error {
	t.forget(u, err)
	if e := p11Error(u, err); e != nil {
		e.Message = op + ": " + e.Message
		return e
	}
	return tokenError(u.TokenName(), CodeTokenError, op+" failed", "check the token with the vendor's tools", err)
}
