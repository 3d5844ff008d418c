package truststore

import (
	"context"
	"fmt"
	"sort"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/seal"
	"github.com/trustflow/trustflow/internal/store"
)

// RewrapResult reports a key-encryption key rotation.
type RewrapResult struct {
	FromKEKs []string `json:"from_kek_ids"`
	ToKEK    string   `json:"to_kek_id"`
	Keys     int      `json:"keys"`
}

// Rewrap makes keyring (which must hold to as its current KEK, and the old
// KEKs as previous ones) the one that seals and opens keys, then re-wraps
// every sealed private key's data key under to, in one transaction with its
// audit record. Payloads are not re-encrypted; a key that cannot be
// unwrapped aborts the rotation and changes nothing. Keys sealed
// concurrently under an old KEK are caught by a second pass.
func (s *Service) Rewrap(ctx context.Context, actor audit.Actor, keyring *seal.Keyring, to *seal.KEK) (RewrapResult, error) {
	if keyring.CurrentID() != to.ID() {
		return RewrapResult{}, fmt.Errorf("truststore: rewrap: the new keyring's current KEK is %s, not %s", keyring.CurrentID(), to.ID())
	}
	previous := s.keyring.Swap(keyring)
	committed := false
	res := RewrapResult{FromKEKs: []string{}, ToKEK: to.ID()}
	from := map[string]bool{}
	for pass := 0; pass < 3; pass++ {
		n := 0
		if committed {
			// Once the first pass committed, the rotation must finish even
			// if the caller goes away.
			ctx = context.WithoutCancel(ctx)
		}
		err := s.store.InTx(ctx, func(tx *store.Tx) error {
			keys, err := tx.SealedKeys(ctx)
			if err != nil {
				return err
			}
			for _, k := range keys {
				if k.KEKID == to.ID() {
					continue
				}
				blob, err := keyring.Rewrap(k.Sealed, to)
				if err != nil {
					return &KeyUnavailableError{IdentityID: k.IdentityID, Version: k.Version, Err: err}
				}
				from[k.KEKID] = true
				k.Sealed, k.KEKID = blob, to.ID()
				if err := tx.UpdateSealedKey(ctx, k); err != nil {
					return err
				}
				n++
			}
			secrets, err := tx.SealedSecrets(ctx)
			if err != nil {
				return err
			}
			for _, k := range secrets {
				if k.KEKID == to.ID() {
					continue
				}
				blob, err := keyring.Rewrap(k.Sealed, to)
				if err != nil {
					return fmt.Errorf("truststore: rewrap secret of connector %s: %w", k.ConnectorID, err)
				}
				from[k.KEKID] = true
				k.Sealed, k.KEKID = blob, to.ID()
				if err := tx.UpdateSealedSecret(ctx, k); err != nil {
					return err
				}
				n++
			}
			if pass > 0 && n == 0 {
				return nil
			}
			res.FromKEKs = res.FromKEKs[:0]
			for id := range from {
				res.FromKEKs = append(res.FromKEKs, id)
			}
			sort.Strings(res.FromKEKs)
			_, err = s.audit.Append(ctx, tx, audit.Entry{Actor: actor, Action: "kek.rotate", Target: "kek/" + to.ID(),
				Details: map[string]any{"from_kek_ids": res.FromKEKs, "to_kek_id": res.ToKEK, "keys": n, "pass": pass + 1}})
			return err
		})
		if err != nil {
			if !committed {
				s.keyring.Store(previous)
				return RewrapResult{}, err
			}
			return res, &RewrapIncompleteError{Err: err}
		}
		committed = true
		res.Keys += n
		if n == 0 {
			break
		}
	}
	return res, nil
}

// RewrapIncompleteError means a rotation's first pass committed (keys are
// now sealed under the new KEK) but a later pass, catching keys sealed
// concurrently under an old KEK, failed: the new KEK must be kept, and the
// rotation finished later with a keyring holding both.
type RewrapIncompleteError struct{ Err error }

func (e *RewrapIncompleteError) Error() string {
	return "truststore: key rotation committed but not finished: " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *RewrapIncompleteError) Unwrap() error { return e.Err }
