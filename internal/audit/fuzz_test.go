package audit_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/audit"
)

// FuzzParseCheckpoint feeds ParseCheckpoint what an assessor, a log
// pipeline or a tampered data dir might hand it: it never panics, and what
// it accepts survives a JSON round trip unchanged.
func FuzzParseCheckpoint(f *testing.F) {
	good, err := os.ReadFile(filepath.Join("testdata", "checkpoint.json"))
	require.NoError(f, err)
	f.Add(good)
	f.Add([]byte(`{"checkpoint": {}}`))
	f.Add([]byte(`{"seq": 1, "head_hash": "", "keyed_from": 1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := audit.ParseCheckpoint(data)
		if err != nil {
			return
		}
		b, err := json.Marshal(c)
		require.NoError(t, err)
		again, err := audit.ParseCheckpoint(b)
		require.NoError(t, err)
		require.Equal(t, c, again)
		require.Equal(t, c.SignedMessage(), again.SignedMessage())
	})
}

// FuzzParseKey feeds ParseKey what a key file or variable might hold: it
// never panics, and an accepted key has a 16-hex-digit id.
func FuzzParseKey(f *testing.F) {
	for _, name := range []string{"kek-file-not-audit-key.txt", "short-key.txt", "not-base64.txt", "trailing-line.txt"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		require.NoError(f, err)
		f.Add(data)
	}
	_, text, err := audit.NewKey()
	require.NoError(f, err)
	f.Add(text)
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := audit.ParseKey(data)
		if err != nil {
			return
		}
		require.Regexp(t, `^[0-9a-f]{16}$`, k.ID())
	})
}
