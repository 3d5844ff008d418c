//go:build cgo

package hsm_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/hsm"
	"github.com/trustflow/trustflow/internal/hsm/hsmtest"
	"github.com/trustflow/trustflow/internal/seal"
)

// findObjects returns the handles of u's token objects of class labelled label.
func findObjects(t *testing.T, p *pkcs11.Ctx, sh pkcs11.SessionHandle, class uint, label string) []pkcs11.ObjectHandle {
	t.Helper()
	require.NoError(t, p.FindObjectsInit(sh, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, class), pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	}))
	hs, _, err := p.FindObjects(sh, 10)
	require.NoError(t, err)
	require.NoError(t, p.FindObjectsFinal(sh))
	return hs
}

// requireUnreadable asserts the token refuses to reveal attr of h, and
// reports the object sensitive and not extractable.
func requireUnreadable(t *testing.T, p *pkcs11.Ctx, sh pkcs11.SessionHandle, h pkcs11.ObjectHandle, attrs ...uint) {
	t.Helper()
	for _, a := range attrs {
		_, err := p.GetAttributeValue(sh, h, []*pkcs11.Attribute{pkcs11.NewAttribute(a, nil)})
		require.True(t, errors.Is(err, pkcs11.Error(pkcs11.CKR_ATTRIBUTE_SENSITIVE)), "attribute %#x: got %v, want CKR_ATTRIBUTE_SENSITIVE", a, err)
	}
	got, err := p.GetAttributeValue(sh, h, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil), pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, nil), pkcs11.NewAttribute(pkcs11.CKA_NEVER_EXTRACTABLE, nil),
	})
	require.NoError(t, err)
	require.Equal(t, []byte{1}, got[0].Value, "CKA_SENSITIVE")
	require.Equal(t, []byte{0}, got[1].Value, "CKA_EXTRACTABLE")
	require.Equal(t, []byte{1}, got[2].Value, "CKA_TOKEN")
	require.Equal(t, []byte{1}, got[3].Value, "CKA_NEVER_EXTRACTABLE")
}

func TestPrivateKeysCannotBeReadOut(t *testing.T) {
	ts := sharedTokens(t)
	u := hsmtest.NewToken(t, "extract")
	ctx := context.Background()
	for _, kt := range hsm.KeyTypes() {
		_, err := ts.GenerateSigner(ctx, u.WithObject("x-"+kt), kt)
		require.NoError(t, err)
	}
	kek, err := hsm.KEKSource{Tokens: ts, URI: u.WithObject("kek")}.Create(ctx)
	require.NoError(t, err)
	require.True(t, kek.External())

	p, sh := hsmtest.Session(t, u)
	for _, kt := range []string{"ecdsa-p256", "ecdsa-p384"} {
		hs := findObjects(t, p, sh, pkcs11.CKO_PRIVATE_KEY, "x-"+kt)
		require.Len(t, hs, 1)
		requireUnreadable(t, p, sh, hs[0], pkcs11.CKA_VALUE)
	}
	hs := findObjects(t, p, sh, pkcs11.CKO_PRIVATE_KEY, "x-rsa-3072")
	require.Len(t, hs, 1)
	requireUnreadable(t, p, sh, hs[0], pkcs11.CKA_PRIVATE_EXPONENT, pkcs11.CKA_PRIME_1, pkcs11.CKA_PRIME_2)
	hs = findObjects(t, p, sh, pkcs11.CKO_SECRET_KEY, "kek")
	require.Len(t, hs, 1)
	requireUnreadable(t, p, sh, hs[0], pkcs11.CKA_VALUE)
}

func TestKEKSource(t *testing.T) {
	ts := sharedTokens(t)
	u := hsmtest.NewToken(t, "kek")
	ctx := context.Background()
	src := hsm.KEKSource{Tokens: ts, URI: u.WithObject("trustflow-kek")}
	require.NotContains(t, src.String(), hsmtest.PIN)

	_, err := src.Load(ctx)
	require.ErrorIs(t, err, seal.ErrNoKEK)

	first, err := src.Create(ctx)
	require.NoError(t, err)
	require.True(t, first.External())
	require.Len(t, first.ID(), 16)
	_, err = src.Create(ctx)
	requireCode(t, err, hsm.CodeKeyExists)

	aad := []byte("trustflow/identity/id_1/v1")
	secret := []byte("a data key's payload")
	blob, err := seal.NewKeyring(first).Seal(secret, aad)
	require.NoError(t, err)
	kid, err := seal.KEKID(blob)
	require.NoError(t, err)
	require.Equal(t, first.ID(), kid)

	// A restarted node loads the KEK from the token and opens the blob.
	loaded, err := src.Load(ctx)
	require.NoError(t, err)
	require.Len(t, loaded, 1)
	require.Equal(t, first.ID(), loaded[0].ID())
	out, err := seal.NewKeyring(loaded[0]).Open(blob, aad)
	require.NoError(t, err)
	require.Equal(t, secret, out)
	_, err = seal.NewKeyring(loaded[0]).Open(blob, []byte("another record"))
	require.ErrorIs(t, err, seal.ErrTampered)

	// Rotation: stage, rewrap, commit.
	next, err := src.Stage(ctx)
	require.NoError(t, err)
	require.NotEqual(t, first.ID(), next.ID())
	loaded, err = src.Load(ctx)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{first.ID(), next.ID()}, ids(loaded))
	kr := seal.NewKeyring(next, first)
	rewrapped, err := kr.Rewrap(blob, next)
	require.NoError(t, err)
	require.NoError(t, src.Commit(ctx, next.ID()))

	loaded, err = src.Load(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{next.ID()}, ids(loaded))
	out, err = seal.NewKeyring(loaded[0]).Open(rewrapped, aad)
	require.NoError(t, err)
	require.Equal(t, secret, out)
	_, err = seal.NewKeyring(loaded[0]).Open(blob, aad)
	var unknown *seal.UnknownKEKError
	require.ErrorAs(t, err, &unknown, "the old KEK is gone from the token")

	requireCode(t, src.Commit(ctx, first.ID()), hsm.CodeKeyNotFound)
	require.True(t, bytes.Equal(out, secret))
}

func ids(keks []*seal.KEK) []string {
	var out []string
	for _, k := range keks {
		out = append(out, k.ID())
	}
	return out
}
