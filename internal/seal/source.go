package seal

import (
	"context"
	"errors"
)

// Source is where a node's key-encryption keys live: a file in the data dir,
// an environment variable, or a PKCS#11 token. A Source hands out KEKs; it does
// not decide which one seals: the database records the active KEK id, and the
// node builds its keyring with that one current.
//
// A rotation stages a new KEK in the source (durably, before anything is
// sealed with it), re-wraps every stored blob, and only then commits, which
// lets the source forget the old KEK. A crash between Stage and Commit leaves
// both KEKs loadable.
type Source interface {
	// Load returns every KEK the source holds now: the committed one and a
	// staged one, if any. It is called at start and again whenever the
	// database names a KEK the node does not hold.
	Load(ctx context.Context) ([]*KEK, error)
	// Create makes the source's first KEK. It is called only when the
	// database records no KEK at all (a new installation) and Load found
	// none.
	Create(ctx context.Context) (*KEK, error)
	// Stage creates a new KEK that Load returns from now on beside the
	// committed one. Sources that cannot create keys (an environment
	// variable) return an error matching ErrReadOnlySource.
	Stage(ctx context.Context) (*KEK, error)
	// Commit makes the KEK with id the source's only KEK, dropping the
	// others. It is called once no stored blob names any other KEK.
	Commit(ctx context.Context, id string) error
	// String describes the source for logs and errors (a path, a variable
	// name, a token and label); it never contains a secret.
	String() string
}

// ErrReadOnlySource is returned by Stage for a source that cannot create
// keys; the operator puts the new KEK there and the rotation re-wraps to it.
var ErrReadOnlySource = errors.New("seal: this key-encryption key source cannot create keys")

// ErrNoKEK is returned by Load when the source holds no KEK yet.
var ErrNoKEK = errors.New("seal: the source holds no key-encryption key")
