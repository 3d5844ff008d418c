package seal_test

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/seal"
)

func TestNewKEKIsRandom(t *testing.T) {
	t.Parallel()
	a, b := newKEK(t), newKEK(t)
	require.NotEqual(t, a.ID(), b.ID())
	require.Len(t, a.ID(), 16)
}

// The id is recorded in every stored blob: it must never change for a key.
// Expected: hex(SHA-256("trustflow-kek-id-v1\n" || 00 01 ... 1f)[:8]).
func TestKEKIDIsStable(t *testing.T) {
	t.Parallel()
	require.Equal(t, "6e80ecf5c68f3ad8", fixedKEK(t, 0).ID())
	require.Equal(t, fixedKEK(t, 0).ID(), fixedKEK(t, 0).ID())
	require.NotEqual(t, fixedKEK(t, 0).ID(), fixedKEK(t, 1).ID())
}

func TestKEKFormattingNeverShowsTheKey(t *testing.T) {
	t.Parallel()
	k := fixedKEK(t, 0)
	keyB64 := strings.TrimSpace(strings.Split(string(kekText(0)), "\n")[1])
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
		got := fmt.Sprintf(verb, k)
		require.Contains(t, got, k.ID(), verb)
		require.NotContains(t, got, keyB64, verb)
	}
	for _, verb := range []string{"%x", "%X"} {
		require.NotContains(t, strings.ToLower(fmt.Sprintf(verb, k)), "000102030405060708", verb)
	}
	require.Equal(t, "seal.KEK("+k.ID()+")", k.String())
}

func TestParseKEK(t *testing.T) {
	t.Parallel()
	good := kekText(0)
	key32 := base64.StdEncoding.EncodeToString(make([]byte, 32))
	for name, in := range map[string]string{
		"file format":         string(good),
		"no trailing newline": strings.TrimSuffix(string(good), "\n"),
		"crlf":                strings.ReplaceAll(string(good), "\n", "\r\n"),
		"trailing blank line": string(good) + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			k, err := seal.ParseKEK([]byte(in))
			require.NoError(t, err)
			require.Equal(t, fixedKEK(t, 0).ID(), k.ID())
		})
	}
	for name, tc := range map[string]struct{ in, msg string }{
		"empty":          {"", "not a trustflow kek"},
		"no header":      {key32 + "\n", "not a trustflow kek"},
		"other version":  {"trustflow-kek-v2\n" + key32 + "\n", "not a trustflow kek"},
		"bad base64":     {"trustflow-kek-v1\n!!!!\n", "illegal base64"},
		"short key":      {"trustflow-kek-v1\n" + base64.StdEncoding.EncodeToString(make([]byte, 16)) + "\n", "key is 16 bytes, want 32"},
		"long key":       {"trustflow-kek-v1\n" + base64.StdEncoding.EncodeToString(make([]byte, 33)) + "\n", "key is 33 bytes, want 32"},
		"no key":         {"trustflow-kek-v1\n", "key is 0 bytes, want 32"},
		"extra line":     {"trustflow-kek-v1\n" + key32 + "\nmore\n", "unexpected data after the key line"},
		"two keys":       {"trustflow-kek-v1\n" + key32 + "\n" + key32 + "\n", "unexpected data after the key line"},
		"raw base64 key": {key32, "not a trustflow kek"},
	} {
		t.Run(name, func(t *testing.T) {
			k, err := seal.ParseKEK([]byte(tc.in))
			require.Nil(t, k)
			require.ErrorContains(t, err, tc.msg)
			require.True(t, strings.HasPrefix(err.Error(), "seal: "), err.Error())
			require.NotContains(t, err.Error(), key32)
		})
	}
}
