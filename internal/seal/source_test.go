package seal_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/seal"
)

func kekIDs(keks []*seal.KEK) []string {
	out := make([]string, len(keks))
	for i, k := range keks {
		out[i] = k.ID()
	}
	return out
}

func TestFileSourceLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src := seal.FileSource{Path: filepath.Join(t.TempDir(), "data", "kek")}
	require.Equal(t, "file://"+src.Path, src.String())

	_, err := src.Load(ctx)
	require.ErrorIs(t, err, seal.ErrNoKEK)

	first, err := src.Create(ctx)
	require.NoError(t, err)
	_, err = src.Create(ctx)
	require.ErrorIs(t, err, fs.ErrExist, "Create never replaces a key")
	keks, err := src.Load(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{first.ID()}, kekIDs(keks))

	next, err := src.Stage(ctx)
	require.NoError(t, err)
	fi, err := os.Stat(src.NextPath())
	require.NoError(t, err)
	require.Equal(t, fs.FileMode(0o600), fi.Mode().Perm())
	keks, err = src.Load(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{first.ID(), next.ID()}, kekIDs(keks), "a staged key loads beside the committed one")

	require.ErrorContains(t, src.Commit(ctx, "0011223344556677"), "holds neither it nor a staged key with that id")
	require.NoError(t, src.Commit(ctx, next.ID()))
	keks, err = src.Load(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{next.ID()}, kekIDs(keks))
	_, err = os.Stat(src.NextPath())
	require.ErrorIs(t, err, fs.ErrNotExist)

	// A staged key that never became active is dropped by committing the
	// current one.
	orphan, err := src.Stage(ctx)
	require.NoError(t, err)
	require.NotEqual(t, next.ID(), orphan.ID())
	require.NoError(t, src.Commit(ctx, next.ID()))
	keks, err = src.Load(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{next.ID()}, kekIDs(keks))

	// A staged file that does not load is named.
	require.NoError(t, os.WriteFile(src.NextPath(), []byte("garbage"), 0o600))
	_, err = src.Load(ctx)
	require.ErrorContains(t, err, "an interrupted key rotation left "+src.NextPath()+", which does not load")
}

func TestEnvSource(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := map[string]string{}
	src := seal.EnvSource{Name: "TF_KEK", Getenv: func(k string) string { return env[k] }}
	require.Equal(t, "env://TF_KEK", src.String())

	_, err := src.Load(ctx)
	require.ErrorIs(t, err, seal.ErrNoKEK)
	require.ErrorContains(t, err, "the variable TF_KEK is empty or unset")
	_, err = src.Create(ctx)
	require.ErrorIs(t, err, seal.ErrReadOnlySource)

	k, err := seal.NewKEK()
	require.NoError(t, err)
	text, err := seal.EncodeKEK(k)
	require.NoError(t, err)
	env["TF_KEK"] = text + "\n"
	keks, err := src.Load(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{k.ID()}, kekIDs(keks))

	_, err = src.Stage(ctx)
	require.ErrorIs(t, err, seal.ErrReadOnlySource)
	require.ErrorContains(t, err, "put a new key from `trustflow kek generate` in TF_KEK and the current one in TF_KEK_PREVIOUS")

	// The KEK file's text format is accepted too, and earlier keys come
	// from NAME_PREVIOUS.
	n, err := seal.NewKEK()
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, seal.WriteKEKFile(filepath.Join(dir, "kek"), n))
	raw, err := os.ReadFile(filepath.Join(dir, "kek"))
	require.NoError(t, err)
	env["TF_KEK"], env["TF_KEK_PREVIOUS"] = string(raw), text
	keks, err = src.Load(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{n.ID(), k.ID()}, kekIDs(keks))
	require.NoError(t, src.Commit(ctx, n.ID()))
	require.ErrorContains(t, src.Commit(ctx, k.ID()), "TF_KEK holds "+n.ID())

	for name, bad := range map[string]string{
		"not base64": "!!!",
		"short":      base64.StdEncoding.EncodeToString(make([]byte, 16)),
	} {
		env["TF_KEK"] = bad
		_, err := src.Load(ctx)
		require.Error(t, err, name)
		require.NotContains(t, err.Error(), bad, "errors never quote the key")
	}
	env["TF_KEK"], env["TF_KEK_PREVIOUS"] = text, "x"
	_, err = src.Load(ctx)
	require.ErrorContains(t, err, "key 1 of TF_KEK_PREVIOUS")
}

func TestExternalKEK(t *testing.T) {
	t.Parallel()
	soft, err := seal.NewKEK()
	require.NoError(t, err)
	_, err = seal.NewExternalKEK("xyz", nil)
	require.ErrorContains(t, err, "is not 16 hex digits")
	_, err = seal.NewExternalKEK("0011223344556677", nil)
	require.ErrorContains(t, err, "nil aead")

	// A device AEAD shaped like GCM with its own nonce: here the standard
	// library's, standing in for the token's.
	block, err := aes.NewCipher(make([]byte, 32))
	require.NoError(t, err)
	callerNonce, err := cipher.NewGCM(block)
	require.NoError(t, err)
	_, err = seal.NewExternalKEK("0011223344556677", callerNonce)
	require.ErrorContains(t, err, "must generate its own 12-byte nonce")

	dev := newDeviceAEAD(t)
	ext, err := seal.NewExternalKEK("00112233445566ff", dev)
	require.NoError(t, err)
	require.True(t, ext.External())
	require.False(t, soft.External())
	require.Equal(t, "00112233445566ff", ext.ID())
	_, err = seal.EncodeKEK(ext)
	require.ErrorContains(t, err, "cannot be exported")
	require.ErrorContains(t, seal.WriteKEKFile(filepath.Join(t.TempDir(), "kek"), ext), "lives in a device and cannot be written to a file")

	// Blobs move between software and device KEKs through Rewrap.
	blob, err := seal.NewKeyring(soft).Seal([]byte("secret"), []byte("aad"))
	require.NoError(t, err)
	moved, err := seal.NewKeyring(soft).Rewrap(blob, ext)
	require.NoError(t, err)
	id, err := seal.KEKID(moved)
	require.NoError(t, err)
	require.Equal(t, ext.ID(), id)
	plain, err := seal.NewKeyring(ext).Open(moved, []byte("aad"))
	require.NoError(t, err)
	require.Equal(t, "secret", string(plain))

	// A device that fails while wrapping gives an error, not a crash.
	broken, err := seal.NewExternalKEK("00112233445566ee", failingAEAD{dev})
	require.NoError(t, err)
	_, err = seal.NewKeyring(broken).Seal([]byte("secret"), nil)
	require.ErrorContains(t, err, "seal: seal: key-encryption key 00112233445566ee in its device: token removed")
	_, err = seal.NewKeyring(soft).Rewrap(blob, broken)
	require.ErrorContains(t, err, "seal: rewrap: key-encryption key 00112233445566ee in its device: token removed")
}

// failingAEAD panics in Seal as a device-backed cipher does when its token
// fails.
type failingAEAD struct{ cipher.AEAD }

func (failingAEAD) Seal(dst, nonce, plaintext, aad []byte) []byte {
	panic(errors.New("token removed"))
}

// newDeviceAEAD returns AES-256-GCM with nonces generated inside the
// cipher, the shape NewExternalKEK asks of a device.
func newDeviceAEAD(t *testing.T) cipher.AEAD {
	t.Helper()
	key := make([]byte, 32)
	_, err := rand.Read(key)
	require.NoError(t, err)
	block, err := aes.NewCipher(key)
	require.NoError(t, err)
	aead, err := cipher.NewGCMWithRandomNonce(block)
	require.NoError(t, err)
	return aead
}
