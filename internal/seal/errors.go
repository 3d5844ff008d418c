package seal

import (
	"errors"
	"strings"

	"github.com/trustflow/trustflow/internal/errs"
)

// ErrNoCurrentKEK is matched by the error of Seal on a keyring without a
// current KEK: a node whose source lacks the database's active KEK (during
// a rotation on another node) seals nothing until it has it. It is
// Unavailable: the same request through a node that holds the key, or
// through this one once its source has it, succeeds.
var ErrNoCurrentKEK = &errs.Error{Kind: errs.Unavailable, Code: "kek_unavailable",
	Message: "keyring has no current key-encryption key",
	Hint: "this node does not hold the active key-encryption key, so it seals nothing: send the request to a node whose /readyz is ok, " +
		"or copy the active key to this node's --kek source (it resumes by itself within seconds)"}

// ErrTampered is returned when a blob fails authentication: a byte was changed,
// the blob was truncated or extended, it is not a sealed blob at all, or it was
// opened with other additional data (another record id) than it was sealed with.
var ErrTampered = errors.New("seal: blob failed authentication")

// ErrUnknownKEK is matched by errors for blobs wrapped by a key-encryption key
// the keyring does not hold. The concrete error is an [*UnknownKEKError], which
// names the KEK id.
var ErrUnknownKEK = errors.New("seal: unknown key-encryption key")

// UnknownKEKError reports a blob wrapped by a KEK the keyring does not hold.
type UnknownKEKError struct {
	// Op is the operation that failed: "open" or "rewrap".
	Op string
	// ID is the id of the KEK that wrapped the blob, as returned by [KEK.ID].
	ID string
	// Held lists the ids of the KEKs the keyring holds, current first.
	Held []string
}

func (e *UnknownKEKError) Error() string {
	return "seal: " + e.Op + ": blob was wrapped by key-encryption key " + e.ID +
		", which the keyring does not hold (holds: " + strings.Join(e.Held, ", ") + ")"
}

// Unwrap returns [ErrUnknownKEK], so errors.Is(err, ErrUnknownKEK) holds.
func (e *UnknownKEKError) Unwrap() error { return ErrUnknownKEK }

// tamperedError is a blob that failed authentication; it matches ErrTampered
// and says which part failed.
type tamperedError struct {
	op     string // "open", "rewrap", "kek id"
	reason string
}

func (e *tamperedError) Error() string {
	return "seal: " + e.op + ": blob failed authentication: " + e.reason
}

func (e *tamperedError) Unwrap() error { return ErrTampered }
