package truststore_test

import (
	"bytes"
	"context"
	"crypto"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/seal"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
	"github.com/trustflow/trustflow/internal/truststore"
)

// requireKeyUnavailable asserts err is a key_unavailable error for the
// identity version whose cause matches want.
func requireKeyUnavailable(t testing.TB, err error, identityID string, version int, want error) {
	t.Helper()
	var ku *errs.Error
	require.ErrorAs(t, err, &ku, "error: %v", err)
	require.Equal(t, truststore.CodeKeyUnavailable, ku.Code)
	require.Equal(t, fmt.Sprintf("truststore: identity version %s/v%d", identityID, version), ku.Op)
	require.ErrorIs(t, err, want)
	require.Contains(t, err.Error(), "cannot be unsealed: the stored key was altered, or this server has a different key-encryption key")
}

func kekIDs(t testing.TB, st *store.Store) []string {
	t.Helper()
	rows, err := st.DB().QueryContext(context.Background(), "SELECT DISTINCT kek_id FROM identity_versions ORDER BY kek_id")
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		require.NoError(t, rows.Scan(&id))
		out = append(out, id)
	}
	require.NoError(t, rows.Err())
	return out
}

func TestFlippedByteFailsClosed(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		ctx := context.Background()
		e.importLeaf(t, "payments", e.client(t, "payments"))
		id := identityID(t, st, "payments")
		orig := sealedKey(t, st, id, 1)

		// One case per field of the blob (see seal's format).
		cases := []struct {
			name   string
			offset int
			want   error
		}{
			{"magic", 0, seal.ErrTampered},
			{"format version", 3, seal.ErrTampered},
			{"kek id", 4, seal.ErrUnknownKEK},
			{"wrapped data key", 30, seal.ErrTampered},
			{"wrapped data key tag", 71, seal.ErrTampered},
			{"payload nonce", 72, seal.ErrTampered},
			{"payload", 100, seal.ErrTampered},
			{"payload tag", len(orig) - 1, seal.ErrTampered},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				blob := bytes.Clone(orig)
				blob[tc.offset] ^= 0x01
				setSealedKey(t, st, id, 1, blob)
				defer setSealedKey(t, st, id, 1, orig)

				node := e.service(t, e.svc.Keyring()) // nothing cached
				head := auditHead(t, st)
				require.NotPanics(t, func() {
					_, err := node.Active(ctx, "payments")
					requireKeyUnavailable(t, err, id, 1, tc.want)
				})
				rec := lastAudit(t, e.audit, "identity.key_unavailable")
				require.Equal(t, head.Seq+1, rec.Seq, "exactly one record")
				require.Equal(t, audit.System, rec.Actor)
				require.Equal(t, "identity/payments", rec.Target)
				require.Equal(t, audit.OutcomeFailure, rec.Outcome)
				type keyAudit struct {
					Version int    `json:"version"`
					Reason  string `json:"reason"`
				}
				require.Equal(t, keyAudit{Version: 1, Reason: "sealed key failed authentication"}, details[keyAudit](t, rec))
			})
		}

		node := e.service(t, e.svc.Keyring())
		_, err := node.Active(ctx, "payments")
		require.NoError(t, err, "the original blob still opens")

		t.Run("truncated and empty", func(t *testing.T) {
			for _, blob := range [][]byte{orig[:len(orig)-1], orig[:seal.Overhead-1], {}} {
				setSealedKey(t, st, id, 1, blob)
				_, err := e.service(t, e.svc.Keyring()).Active(ctx, "payments")
				requireKeyUnavailable(t, err, id, 1, seal.ErrTampered)
			}
			setSealedKey(t, st, id, 1, orig)
		})

		t.Run("pending key", func(t *testing.T) {
			_, csr, err := e.svc.Create(ctx, alice, truststore.CreateRequest{Name: "generated", GenerateSpec: truststore.GenerateSpec{Subject: "CN=generated"}})
			require.NoError(t, err)
			gid := identityID(t, st, "generated")
			blob := sealedKey(t, st, gid, 1)
			blob[len(blob)-1] ^= 0x80
			setSealedKey(t, st, gid, 1, blob)
			head := auditHead(t, st)
			_, err = e.svc.InstallCertificate(ctx, alice, truststore.InstallRequest{Name: "generated", Cert: signCSR(t, e.ca, csr)})
			requireKeyUnavailable(t, err, gid, 1, seal.ErrTampered)
			require.Equal(t, head, auditHead(t, st), "the install changed nothing")
			ident, err := e.svc.Get(ctx, "generated")
			require.NoError(t, err)
			require.Equal(t, map[int]string{1: "pending"}, statuses(ident))
		})
	})
}

func TestSealedKeyIsBoundToItsRow(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		ctx := context.Background()
		a1, a2, b1 := e.client(t, "a1"), e.client(t, "a2"), e.client(t, "b1")
		e.importLeaf(t, "alpha", a1)
		_, err := e.svc.Rotate(ctx, alice, truststore.RotateRequest{Name: "alpha", Material: truststore.Material{Cert: a2.CertPEM(), Key: a2.KeyPEM()}})
		require.NoError(t, err)
		e.importLeaf(t, "beta", b1)
		idA, idB := identityID(t, st, "alpha"), identityID(t, st, "beta")
		alpha1, alpha2, beta1 := sealedKey(t, st, idA, 1), sealedKey(t, st, idA, 2), sealedKey(t, st, idB, 1)

		// alpha v1's blob moved to another identity's row.
		setSealedKey(t, st, idB, 1, alpha1)
		_, err = e.service(t, e.svc.Keyring()).Active(ctx, "beta")
		requireKeyUnavailable(t, err, idB, 1, seal.ErrTampered)

		// ... and to another version of the same identity.
		setSealedKey(t, st, idA, 2, alpha1)
		_, err = e.service(t, e.svc.Keyring()).Active(ctx, "alpha")
		requireKeyUnavailable(t, err, idA, 2, seal.ErrTampered)

		// Back in place, both open.
		setSealedKey(t, st, idA, 2, alpha2)
		setSealedKey(t, st, idB, 1, beta1)
		node := e.service(t, e.svc.Keyring())
		for name, pub := range map[string]crypto.PublicKey{"alpha": a2.Cert.PublicKey, "beta": b1.Cert.PublicKey} {
			ac, err := node.Active(ctx, name)
			require.NoError(t, err)
			samePublicKey(t, pub, ac.Certificate.PrivateKey)
		}
	})
}
