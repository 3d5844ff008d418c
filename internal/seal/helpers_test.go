package seal_test

import (
	"encoding/base64"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/seal"
)

// Offsets of the version 1 blob layout documented at seal.Overhead.
const (
	kekIDStart    = 4
	kekIDEnd      = 12
	payloadOffset = 72
)

// kekText returns the KEK file text of the key first, first+1, ..., first+31.
func kekText(first byte) []byte {
	key := make([]byte, 32)
	for i := range key {
		key[i] = first + byte(i)
	}
	return []byte("trustflow-kek-v1\n" + base64.StdEncoding.EncodeToString(key) + "\n")
}

// fixedKEK returns the deterministic KEK of kekText(first).
func fixedKEK(tb testing.TB, first byte) *seal.KEK {
	tb.Helper()
	k, err := seal.ParseKEK(kekText(first))
	require.NoError(tb, err)
	return k
}

func newKEK(tb testing.TB) *seal.KEK {
	tb.Helper()
	k, err := seal.NewKEK()
	require.NoError(tb, err)
	return k
}

func flip(b []byte, i int, mask byte) []byte {
	out := append([]byte(nil), b...)
	out[i] ^= mask
	return out
}
