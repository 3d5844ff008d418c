package seal_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/trustflow/trustflow/internal/seal"
)

// FuzzOpen feeds arbitrary blobs and aad to Open, Rewrap and KEKID: none may
// panic, every failure is ErrTampered or ErrUnknownKEK, and whatever opens
// still opens to the same plaintext after a rewrap. The seed corpus in
// testdata/fuzz/FuzzOpen was sealed by fixedKEK(0) (current) and fixedKEK(1)
// (previous), with a few damaged and foreign blobs.
func FuzzOpen(f *testing.F) {
	current, previous, next := fixedKEK(f, 0), fixedKEK(f, 1), fixedKEK(f, 3)
	r := seal.NewKeyring(current, previous)
	rNext := seal.NewKeyring(next)

	f.Fuzz(func(t *testing.T, blob, aad []byte) {
		blobCopy := bytes.Clone(blob)

		plaintext, openErr := r.Open(blob, aad)
		if openErr != nil && !errors.Is(openErr, seal.ErrTampered) && !errors.Is(openErr, seal.ErrUnknownKEK) {
			t.Fatalf("Open: unexpected error class: %v", openErr)
		}
		if openErr != nil && plaintext != nil {
			t.Fatalf("Open returned plaintext with error %v", openErr)
		}

		id, idErr := seal.KEKID(blob)
		if idErr != nil && !errors.Is(idErr, seal.ErrTampered) {
			t.Fatalf("KEKID: unexpected error class: %v", idErr)
		}
		if openErr == nil && (idErr != nil || (id != current.ID() && id != previous.ID())) {
			t.Fatalf("opened a blob whose KEK id is %q (%v)", id, idErr)
		}

		rewrapped, rewrapErr := r.Rewrap(blob, next)
		if rewrapErr != nil && !errors.Is(rewrapErr, seal.ErrTampered) && !errors.Is(rewrapErr, seal.ErrUnknownKEK) {
			t.Fatalf("Rewrap: unexpected error class: %v", rewrapErr)
		}
		if openErr == nil {
			if rewrapErr != nil {
				t.Fatalf("Rewrap of a blob that opens: %v", rewrapErr)
			}
			again, err := rNext.Open(rewrapped, aad)
			if err != nil || !bytes.Equal(again, plaintext) {
				t.Fatalf("rewrapped blob opens to %q, %v; want %q", again, err, plaintext)
			}
		}

		if !bytes.Equal(blob, blobCopy) {
			t.Fatal("input blob was modified")
		}
	})
}
