package seal_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/seal"
)

var recordAAD = []byte("identities/01J9Z3K4T6V8X0")

func TestSealOpenRoundTrip(t *testing.T) {
	t.Parallel()
	r := seal.NewKeyring(newKEK(t))
	for _, size := range []int{0, 1, 31, 32, 256, 4096, 1 << 20} {
		plaintext := bytes.Repeat([]byte{0xA5}, size)

		blob, err := r.Seal(plaintext, recordAAD)
		require.NoError(t, err)
		require.Len(t, blob, size+seal.Overhead)

		got, err := r.Open(blob, recordAAD)
		require.NoError(t, err)
		require.Equal(t, plaintext, got, "size %d", size)
	}
}

func TestSealIsRandomized(t *testing.T) {
	t.Parallel()
	r := seal.NewKeyring(newKEK(t))
	a, err := r.Seal([]byte("same"), recordAAD)
	require.NoError(t, err)
	b, err := r.Seal([]byte("same"), recordAAD)
	require.NoError(t, err)
	require.NotEqual(t, a[kekIDEnd:], b[kekIDEnd:], "fresh data key and nonces per seal")
	require.Equal(t, a[:kekIDEnd], b[:kekIDEnd], "same header")
}

func TestSealAndOpenDoNotModifyInputs(t *testing.T) {
	t.Parallel()
	r := seal.NewKeyring(newKEK(t))
	plaintext := []byte("-----BEGIN PRIVATE KEY-----")
	aad := bytes.Clone(recordAAD)
	blob, err := r.Seal(plaintext, aad)
	require.NoError(t, err)
	require.Equal(t, "-----BEGIN PRIVATE KEY-----", string(plaintext))
	require.Equal(t, recordAAD, aad)

	blobCopy := bytes.Clone(blob)
	got, err := r.Open(blob, aad)
	require.NoError(t, err)
	require.Equal(t, blobCopy, blob)
	got[0] = 'X' // the result does not alias the blob
	require.Equal(t, blobCopy, blob)
}

func TestOpenFailsClosedOnEveryByteFlip(t *testing.T) {
	t.Parallel()
	current, previous := newKEK(t), newKEK(t)
	r := seal.NewKeyring(current, previous)
	blob, err := r.Seal(bytes.Repeat([]byte("k"), 256), recordAAD)
	require.NoError(t, err)

	for i := range blob {
		for _, mask := range []byte{0x01, 0x80, 0xFF} {
			got, err := r.Open(flip(blob, i, mask), recordAAD)
			require.Nil(t, got, "byte %d mask %#x", i, mask)
			if i >= kekIDStart && i < kekIDEnd {
				require.ErrorIs(t, err, seal.ErrUnknownKEK, "byte %d mask %#x", i, mask)
				require.NotErrorIs(t, err, seal.ErrTampered)
			} else {
				require.ErrorIs(t, err, seal.ErrTampered, "byte %d mask %#x", i, mask)
				require.NotErrorIs(t, err, seal.ErrUnknownKEK)
			}
			require.True(t, strings.HasPrefix(err.Error(), "seal: open: "), err.Error())
		}
	}
}

func TestOpenFailsClosedOnTruncationAndExtension(t *testing.T) {
	t.Parallel()
	r := seal.NewKeyring(newKEK(t))
	blob, err := r.Seal([]byte("secret"), recordAAD)
	require.NoError(t, err)

	for n := range len(blob) {
		_, err := r.Open(blob[:n], recordAAD)
		require.ErrorIs(t, err, seal.ErrTampered, "truncated to %d bytes", n)
	}
	for _, extra := range [][]byte{{0}, []byte("tail"), bytes.Repeat([]byte{0}, 16)} {
		_, err := r.Open(append(bytes.Clone(blob), extra...), recordAAD)
		require.ErrorIs(t, err, seal.ErrTampered)
	}
	_, err = r.Open(blob[:seal.Overhead-1], recordAAD)
	require.EqualError(t, err, "seal: open: blob failed authentication: truncated: 99 bytes, shorter than the 100-byte minimum")
	_, err = r.Open(nil, recordAAD)
	require.ErrorIs(t, err, seal.ErrTampered)
	require.EqualError(t, err, "seal: open: blob failed authentication: not a trustflow sealed blob")
}

func TestOpenWithWrongAADFails(t *testing.T) {
	t.Parallel()
	r := seal.NewKeyring(newKEK(t))
	blob, err := r.Seal([]byte("secret"), []byte("identities/1"))
	require.NoError(t, err)

	for _, aad := range [][]byte{[]byte("identities/2"), []byte("identities/1 "), []byte("identities/"), nil} {
		got, err := r.Open(blob, aad)
		require.Nil(t, got)
		require.ErrorIs(t, err, seal.ErrTampered, "aad %q", aad)
		require.EqualError(t, err, "seal: open: blob failed authentication: payload does not authenticate with this aad (altered, or sealed for another record)")
	}
}

// A blob copied to another row, or pieces of two blobs spliced together, do
// not open.
func TestOpenRejectsSplicedBlobs(t *testing.T) {
	t.Parallel()
	r := seal.NewKeyring(newKEK(t))
	a, err := r.Seal([]byte("secret of a"), []byte("row-a"))
	require.NoError(t, err)
	b, err := r.Seal([]byte("secret of b"), []byte("row-b"))
	require.NoError(t, err)

	_, err = r.Open(a, []byte("row-b"))
	require.ErrorIs(t, err, seal.ErrTampered)

	spliced := append(bytes.Clone(a[:payloadOffset]), b[payloadOffset:]...)
	for _, aad := range []string{"row-a", "row-b"} {
		_, err = r.Open(spliced, []byte(aad))
		require.ErrorIs(t, err, seal.ErrTampered)
	}
}

func TestKeyringOpensWithAnyHeldKEK(t *testing.T) {
	t.Parallel()
	old, current := newKEK(t), newKEK(t)
	oldBlob, err := seal.NewKeyring(old).Seal([]byte("old"), recordAAD)
	require.NoError(t, err)

	r := seal.NewKeyring(current, old)
	require.Equal(t, current.ID(), r.CurrentID())
	require.Equal(t, []string{current.ID(), old.ID()}, r.IDs())

	got, err := r.Open(oldBlob, recordAAD)
	require.NoError(t, err)
	require.Equal(t, "old", string(got))

	newBlob, err := r.Seal([]byte("new"), recordAAD)
	require.NoError(t, err)
	id, err := seal.KEKID(newBlob)
	require.NoError(t, err)
	require.Equal(t, current.ID(), id, "the current KEK seals")
}

func TestNewKeyringIgnoresNilAndDuplicateKEKs(t *testing.T) {
	t.Parallel()
	k, other := fixedKEK(t, 0), fixedKEK(t, 1)
	r := seal.NewKeyring(k, nil, fixedKEK(t, 0), other, k)
	require.Equal(t, []string{k.ID(), other.ID()}, r.IDs())
}

func TestKeyringWithoutCurrentKEK(t *testing.T) {
	t.Parallel()
	old := newKEK(t)
	blob, err := seal.NewKeyring(old).Seal([]byte("x"), recordAAD)
	require.NoError(t, err)

	r := seal.NewKeyring(nil, old)
	require.Empty(t, r.CurrentID())
	_, err = r.Seal([]byte("x"), recordAAD)
	require.EqualError(t, err, "seal: seal: keyring has no current key-encryption key")
	require.ErrorIs(t, err, seal.ErrNoCurrentKEK)
	got, err := r.Open(blob, recordAAD)
	require.NoError(t, err)
	require.Equal(t, "x", string(got))
}

func TestOpenUnknownKEKNamesIt(t *testing.T) {
	t.Parallel()
	stranger, mine := newKEK(t), newKEK(t)
	blob, err := seal.NewKeyring(stranger).Seal([]byte("x"), recordAAD)
	require.NoError(t, err)

	_, err = seal.NewKeyring(mine).Open(blob, recordAAD)

	require.ErrorIs(t, err, seal.ErrUnknownKEK)
	var unknown *seal.UnknownKEKError
	require.ErrorAs(t, err, &unknown)
	require.Equal(t, &seal.UnknownKEKError{Op: "open", ID: stranger.ID(), Held: []string{mine.ID()}}, unknown)
	require.EqualError(t, err, "seal: open: blob was wrapped by key-encryption key "+stranger.ID()+
		", which the keyring does not hold (holds: "+mine.ID()+")")
}

func TestRewrap(t *testing.T) {
	t.Parallel()
	old, next := newKEK(t), newKEK(t)
	plaintext := []byte("-----BEGIN EC PRIVATE KEY-----")
	blob, err := seal.NewKeyring(old).Seal(plaintext, recordAAD)
	require.NoError(t, err)
	blobCopy := bytes.Clone(blob)

	// During a rotation the keyring holds both; `next` may also be unheld.
	for name, r := range map[string]*seal.Keyring{
		"next current, old held": seal.NewKeyring(next, old),
		"old only":               seal.NewKeyring(old),
	} {
		t.Run(name, func(t *testing.T) {
			rewrapped, err := r.Rewrap(blob, next)
			require.NoError(t, err)
			require.Equal(t, blobCopy, blob, "input unchanged")

			require.Len(t, rewrapped, len(blob))
			require.Equal(t, blob[payloadOffset:], rewrapped[payloadOffset:], "payload ciphertext is not re-encrypted")
			id, err := seal.KEKID(rewrapped)
			require.NoError(t, err)
			require.Equal(t, next.ID(), id)

			got, err := seal.NewKeyring(next).Open(rewrapped, recordAAD)
			require.NoError(t, err)
			require.Equal(t, plaintext, got)

			_, err = seal.NewKeyring(old).Open(rewrapped, recordAAD)
			require.ErrorIs(t, err, seal.ErrUnknownKEK)
			require.ErrorContains(t, err, next.ID())

			_, err = seal.NewKeyring(next).Open(rewrapped, []byte("another record"))
			require.ErrorIs(t, err, seal.ErrTampered, "the record binding survives a rewrap")
		})
	}

	_, err = seal.NewKeyring(next).Open(blob, recordAAD)
	require.ErrorIs(t, err, seal.ErrUnknownKEK, "the new KEK alone cannot open the old blob")
}

func TestRewrapToTheSameKEK(t *testing.T) {
	t.Parallel()
	k := newKEK(t)
	r := seal.NewKeyring(k)
	blob, err := r.Seal([]byte("x"), recordAAD)
	require.NoError(t, err)

	rewrapped, err := r.Rewrap(blob, k)
	require.NoError(t, err)
	require.NotEqual(t, blob, rewrapped, "fresh wrapping nonce")
	got, err := r.Open(rewrapped, recordAAD)
	require.NoError(t, err)
	require.Equal(t, "x", string(got))
}

func TestRewrapFailsClosed(t *testing.T) {
	t.Parallel()
	old, next, stranger := newKEK(t), newKEK(t), newKEK(t)
	r := seal.NewKeyring(old)
	blob, err := r.Seal([]byte("x"), recordAAD)
	require.NoError(t, err)

	_, err = r.Rewrap(blob, nil)
	require.EqualError(t, err, "seal: rewrap: nil target key-encryption key")

	_, err = seal.NewKeyring(stranger).Rewrap(blob, next)
	require.ErrorIs(t, err, seal.ErrUnknownKEK)
	require.ErrorContains(t, err, "seal: rewrap: blob was wrapped by key-encryption key "+old.ID())

	for i := range payloadOffset {
		_, err := r.Rewrap(flip(blob, i, 0x01), next)
		if i >= kekIDStart && i < kekIDEnd {
			require.ErrorIs(t, err, seal.ErrUnknownKEK, "byte %d", i)
		} else {
			require.ErrorIs(t, err, seal.ErrTampered, "byte %d", i)
		}
	}

	_, err = r.Rewrap(blob[:seal.Overhead-1], next)
	require.ErrorIs(t, err, seal.ErrTampered)

	// The payload is authenticated when opened, not when rewrapped: damage
	// carried through a rewrap is still caught.
	damaged := flip(blob, len(blob)-1, 0x01)
	rewrapped, err := r.Rewrap(damaged, next)
	require.NoError(t, err)
	_, err = seal.NewKeyring(next).Open(rewrapped, recordAAD)
	require.ErrorIs(t, err, seal.ErrTampered)
}

func TestKEKID(t *testing.T) {
	t.Parallel()
	k := newKEK(t)
	blob, err := seal.NewKeyring(k).Seal(nil, recordAAD)
	require.NoError(t, err)

	id, err := seal.KEKID(blob)
	require.NoError(t, err)
	require.Equal(t, k.ID(), id)

	for name, bad := range map[string][]byte{
		"nil":         nil,
		"truncated":   blob[:seal.Overhead-1],
		"plaintext":   bytes.Repeat([]byte("-----BEGIN PRIVATE KEY-----"), 5),
		"version 2":   flip(blob, 3, 0x03),
		"wrong magic": flip(blob, 0, 0x20),
	} {
		_, err := seal.KEKID(bad)
		require.ErrorIs(t, err, seal.ErrTampered, name)
		require.True(t, strings.HasPrefix(err.Error(), "seal: kek id: "), err.Error())
	}
}

// testdata/blob-v1.hex was sealed once by fixedKEK(0) with the aad and
// plaintext below; every later version of trustflow must open it.
func TestOpenVersion1Blob(t *testing.T) {
	t.Parallel()
	text, err := os.ReadFile("testdata/blob-v1.hex")
	require.NoError(t, err)
	blob, err := hex.DecodeString(strings.TrimSpace(string(text)))
	require.NoError(t, err)

	id, err := seal.KEKID(blob)
	require.NoError(t, err)
	require.Equal(t, fixedKEK(t, 0).ID(), id)

	got, err := seal.NewKeyring(fixedKEK(t, 1), fixedKEK(t, 0)).Open(blob, []byte("identities/42"))
	require.NoError(t, err)
	require.Equal(t, "trustflow sealed payload, format version 1", string(got))
}

func TestKeyringIsSafeForConcurrentUse(t *testing.T) {
	t.Parallel()
	old := newKEK(t)
	r := seal.NewKeyring(newKEK(t), old)
	oldBlob, err := seal.NewKeyring(old).Seal([]byte("old"), recordAAD)
	require.NoError(t, err)

	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for range 200 {
				blob, err := r.Seal([]byte("payload"), recordAAD)
				if err == nil {
					_, err = r.Open(blob, recordAAD)
				}
				if err == nil {
					_, err = r.Rewrap(oldBlob, old)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	require.NoError(t, errors.Join(func() (all []error) {
		for err := range errs {
			all = append(all, err)
		}
		return all
	}()...))
}

func BenchmarkSeal(b *testing.B) {
	r := seal.NewKeyring(fixedKEK(b, 0))
	plaintext := bytes.Repeat([]byte{0x5A}, 256)
	b.SetBytes(int64(len(plaintext)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Seal(plaintext, recordAAD); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	r := seal.NewKeyring(fixedKEK(b, 0))
	plaintext := bytes.Repeat([]byte{0x5A}, 256)
	blob, err := r.Seal(plaintext, recordAAD)
	require.NoError(b, err)
	b.SetBytes(int64(len(plaintext)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Open(blob, recordAAD); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRewrap(b *testing.B) {
	old, next := fixedKEK(b, 0), fixedKEK(b, 1)
	r := seal.NewKeyring(next, old)
	blob, err := seal.NewKeyring(old).Seal(bytes.Repeat([]byte{0x5A}, 256), recordAAD)
	require.NoError(b, err)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Rewrap(blob, next); err != nil {
			b.Fatal(err)
		}
	}
}

// A KEK{} literal holds no key: it neither seals nor is written anywhere.
func TestZeroKEKIsRefused(t *testing.T) {
	t.Parallel()
	zero := &seal.KEK{}
	r := seal.NewKeyring(zero, zero)
	require.Empty(t, r.CurrentID())
	require.Empty(t, r.IDs())
	_, err := r.Seal([]byte("x"), recordAAD)
	require.EqualError(t, err, "seal: seal: keyring has no current key-encryption key")

	blob, err := seal.NewKeyring(newKEK(t)).Seal([]byte("x"), recordAAD)
	require.NoError(t, err)
	_, err = seal.NewKeyring(newKEK(t)).Rewrap(blob, zero)
	require.EqualError(t, err, "seal: rewrap: nil target key-encryption key")
	_, err = r.Open(blob, recordAAD)
	require.ErrorIs(t, err, seal.ErrUnknownKEK)

	var empty seal.Keyring
	_, err = empty.Open(blob, recordAAD)
	require.ErrorIs(t, err, seal.ErrUnknownKEK)
	_, err = empty.Seal(nil, nil)
	require.Error(t, err)

	dir := t.TempDir()
	require.ErrorContains(t, seal.WriteKEKFile(dir+"/kek", zero), "nil kek")
	require.Empty(t, dirNames(t, dir))
}
