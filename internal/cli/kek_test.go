package cli_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/apiclient"
	"github.com/trustflow/trustflow/internal/truststore"
)

func TestKEKRotate(t *testing.T) {
	t.Parallel()
	f, s := setup(t)
	client := f.cert(f.client)
	s.ok(t, "identity", "import", "p12", "--pkcs12", f.p12, "--password-file", f.password)
	csrPath := f.path("pending.csr")
	s.ok(t, "identity", "create", "pending", "--subject", "CN=pending", "--csr-out", csrPath)

	var res apiclient.KEKRotation
	s.json(t, &res, "kek", "rotate")
	require.Equal(t, 2, res.Keys)
	require.Equal(t, 2, res.Total)
	require.Equal(t, 2, res.Verified)
	require.Equal(t, map[string]int{"identity key": 2}, res.Columns)
	require.Len(t, res.FromKEKs, 1)
	require.NotEmpty(t, res.ToKEK)
	require.NotEqual(t, res.FromKEKs[0], res.ToKEK)

	r := s.run(t, "kek", "rotate")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "rewrapped 2 of 2\n", r.stderr, "progress, as the re-wrap goes")
	out := r.stdout
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	require.Len(t, lines, 3, out)
	require.Equal(t, "rotated the key-encryption key: re-wrapped 2 sealed values, verified 2", lines[0])
	require.Equal(t, []string{"from:", res.ToKEK}, strings.Fields(lines[1]))
	require.Equal(t, "to:", strings.Fields(lines[2])[0])
	require.Len(t, strings.Fields(lines[2]), 2)
	require.NotEqual(t, res.ToKEK, strings.Fields(lines[2])[1])

	// The keys sealed before the rotations still open: the imported one
	// serves handshakes, and the pending one takes its certificate.
	active, err := s.app.Trust.Active(t.Context(), "p12")
	require.NoError(t, err)
	require.Equal(t, truststore.ActiveInfo{Identity: "p12", Version: 1, Serial: serial(client), FingerprintSHA256: fingerprint(client)}, active.Info)

	signedPath := f.sign(csrPath, "client.ext")
	signed := f.cert(signedPath)
	var id truststore.Identity
	s.json(t, &id, "identity", "install-cert", "pending", "--cert", signedPath)
	require.Equal(t, truststore.StatusActive, id.Status)
	require.Equal(t, []versionStatus{{1, "active"}}, statuses(id))
	active, err = s.app.Trust.Active(t.Context(), "pending")
	require.NoError(t, err)
	require.Equal(t, fingerprint(signed), active.Info.FingerprintSHA256)

	// New versions are sealed under the new KEK and rotate as before.
	s.ok(t, "identity", "rotate", "p12", "--cert", f.client2, "--key", f.client2Key, "--stage")
	s.json(t, &id, "identity", "activate", "p12", "--version", "2")
	require.Equal(t, []versionStatus{{1, "retired"}, {2, "active"}}, statuses(id))
	active, err = s.app.Trust.Active(t.Context(), "p12")
	require.NoError(t, err)
	require.Equal(t, fingerprint(f.cert(f.client2)), active.Info.FingerprintSHA256)
	s.json(t, &res, "kek", "rotate")
	require.Equal(t, 3, res.Keys)

	out = s.ok(t, "audit", "verify")
	require.True(t, strings.HasPrefix(out, "audit chain intact: "), out)
	var page apiclient.AuditPage
	s.json(t, &page, "audit", "list", "--action", "kek.rotate")
	require.Len(t, page.Records, 3)
	for _, r := range page.Records {
		require.Equal(t, "kek.rotate", r.Action)
		require.Equal(t, "success", r.Outcome)
	}
}
