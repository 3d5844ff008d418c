package hsm

import (
	"fmt"

	"github.com/trustflow/trustflow/internal/errs"
)

// Diagnosis codes of a token error (see tokenError).
const (
	// CodeTokenNotFound: no token with the URI's label or serial is
	// present in any slot of the module.
	CodeTokenNotFound = "token_not_found"
	// CodePINIncorrect: the token refused the PIN.
	CodePINIncorrect = "pin_incorrect"
	// CodePINLocked: the token locked its user PIN after too many wrong
	// attempts.
	CodePINLocked = "pin_locked"
	// CodeModuleNotLoadable: the PKCS#11 module does not load or does not
	// initialise (or this binary was built without cgo).
	CodeModuleNotLoadable = "module_not_loadable"
	// CodeKeyNotFound: the token holds no key with the URI's label or id.
	CodeKeyNotFound = "key_not_found"
	// CodeKeyExists: a key with that label is already in the token.
	CodeKeyExists = "key_exists"
	// CodePINSourceUnreadable: the PIN file or variable cannot be read.
	CodePINSourceUnreadable = "pin_source_unreadable"
	// CodeTokenError: the token failed an operation for another reason.
	CodeTokenError = "token_error"
)

// tokenError is a failure to use a token, with a diagnosis and the fix: an
// *errs.Error whose Code is one of the Code* constants and whose message
// names the token. It never holds a PIN. A token that is missing, locked or
// refuses the PIN is Unavailable (trying again after the fix works); a key
// label already taken is a Conflict; a key the URI names but the token lacks
// is Invalid.
func tokenError(token, code, msg, hint string, cause error) *errs.Error {
	kind := errs.Unavailable
	switch code {
	case CodeKeyExists:
		kind = errs.Conflict
	case CodeKeyNotFound:
		kind = errs.Invalid
	}
	return &errs.Error{Kind: kind, Code: code, Message: fmt.Sprintf("PKCS#11 token %q: %s", token, msg), Hint: hint, Op: "hsm", Err: cause}
}

// KeyTypes lists the key types GenerateSigner makes in a token, named as
// package pki names them. The first is the default.
func KeyTypes() []string { return []string{"ecdsa-p256", "ecdsa-p384", "rsa-3072"} }
