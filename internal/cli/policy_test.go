package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/policy"
	"github.com/trustflow/trustflow/internal/store"
)

func TestPolicyCommands(t *testing.T) {
	t.Parallel()
	s := e2eStart(t, store.SQLite)

	out := s.ok(t, "policy", "show")
	require.Regexp(t, `^revision: +0 \(the default policy; nothing was set\)\n`, out)
	require.Contains(t, out, "egress default:")
	def := e2eStrict[policy.Document](t, s.ok(t, "policy", "show", "-o", "json"))
	require.Equal(t, policy.Default(), def, "show -o json prints the document set takes")

	require.Equal(t, "allowed the destination: policy revision 1\n", s.ok(t, "policy", "allow", "--host", "127.0.0.1", "--ports", "8443"))
	require.Equal(t, "removed the rule: policy revision 2\n", s.ok(t, "policy", "disallow", "--host", "127.0.0.1", "--ports", "8443"))
	r := s.cli(t, "policy", "disallow", "--host", "127.0.0.1", "--ports", "8443")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "Error: the policy has no egress rule for 127.0.0.1 ports 8443")

	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("apiVersion: trustflow/v1\nkind: Policy\ntls:\n  min_versoin: \"1.3\"\n"), 0o600))
	r = s.cli(t, "policy", "set", "-f", bad)
	require.Equal(t, 1, r.code)
	require.Equal(t, "Error: "+bad+":4:3: tls.min_versoin: unknown key \"min_versoin\"\nHint: the keys here are allow_no_client_auth_request, allow_plaintext, allow_system_roots, cipher_suites, curves, min_version, require_mtls\n", r.stderr)

	good := filepath.Join(dir, "good.yaml")
	require.NoError(t, os.WriteFile(good, []byte("apiVersion: trustflow/v1\nkind: Policy\negress: {default: deny, allow: [{host: '*.agency.example', ports: '443'}]}\ntls: {min_version: '1.3'}\n"), 0o600))
	require.Equal(t, "set the policy: policy revision 3\n", s.ok(t, "policy", "set", "-f", good))
	doc := e2eStrict[policy.Document](t, s.ok(t, "policy", "show", "-o", "json"))
	require.Equal(t, policy.DefaultDeny, doc.Egress.Default)
	require.Equal(t, "1.3", doc.TLS.MinVersion)
	require.True(t, strings.HasPrefix(s.ok(t, "policy", "check"), "nothing breaks policy revision 3"))
}
