package hsm

import "fmt"

// Diagnosis codes of an [Error].
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

// Error is a failure to use a token, with a diagnosis and the fix. It never
// holds a PIN.
type Error struct {
	// Token is the token's label (or "serial S").
	Token string
	// Code is one of the Code* constants.
	Code string
	// Message says what went wrong; Hint how to fix it.
	Message string
	Hint    string
	// Err is the cause: a pkcs11.Error (CKR_*) or an I/O error.
	Err error
}

func (e *Error) Error() string {
	s := fmt.Sprintf("hsm: token %q: %s", e.Token, e.Message)
	if e.Err != nil {
		s += " (" + e.Err.Error() + ")"
	}
	if e.Hint != "" {
		s += "; " + e.Hint
	}
	return s
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// KeyTypes lists the key types GenerateSigner makes in a token, named as
// package pki names them. The first is the default.
func KeyTypes() []string { return []string{"ecdsa-p256", "ecdsa-p384", "rsa-3072"} }
