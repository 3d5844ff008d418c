package cli_test

import (
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/pki"
	"github.com/trustflow/trustflow/internal/truststore"
)

// caCertInfo is what the API says about a CA certificate made by fixtures.
func caCertInfo(c *x509.Certificate) pki.CertInfo {
	return pki.CertInfo{Serial: serial(c), Subject: c.Subject.String(), Issuer: c.Issuer.String(), FingerprintSHA256: fingerprint(c),
		NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(), KeyType: "ecdsa-p256", IsCA: true}
}

func TestCALifecycle(t *testing.T) {
	t.Parallel()
	f, s := setup(t)
	root, other := f.cert(f.caCert), f.cert(f.ca2Cert)

	out := s.ok(t, "ca", "add", "hr-prod", "--file", f.caCert, "--description", "HR system's servers")
	require.Equal(t, fmt.Sprintf("added CA hr-prod with 1 certificate\nSUBJECT%sISSUER%sFINGERPRINT%sNOT_AFTER\n%s  %s  %s  %s\n",
		strings.Repeat(" ", len(root.Subject.String())-len("SUBJECT")+2), strings.Repeat(" ", len(root.Issuer.String())-len("ISSUER")+2),
		strings.Repeat(" ", 64-len("FINGERPRINT")+2),
		root.Subject.String(), root.Issuer.String(), fingerprint(root), root.NotAfter.UTC().Format("2006-01-02T15:04:05Z")), out)

	var shown truststore.CA
	s.json(t, &shown, "ca", "show", "hr-prod")
	require.Equal(t, "hr-prod", shown.Name)
	require.Equal(t, "HR system's servers", shown.Description)
	require.False(t, shown.AllowLeafAnchor)
	require.Equal(t, int64(1), shown.Revision)
	require.Equal(t, []pki.CertInfo{caCertInfo(root)}, shown.Certificates)

	table := s.ok(t, "ca", "show", "hr-prod")
	require.Contains(t, table, "Description:        HR system's servers\n")
	require.Contains(t, table, fingerprint(root))

	var listed []truststore.CA
	s.json(t, &listed, "ca", "list")
	require.Equal(t, []truststore.CA{shown}, listed)

	// update replaces the certificates in place and keeps the description.
	bundle := f.write("bundle.pem", readFile(t, f.caCert)+readFile(t, f.ca2Cert))
	var updated truststore.CA
	s.json(t, &updated, "ca", "update", "hr-prod", "--file", bundle)
	require.Equal(t, "hr-prod", updated.Name)
	require.Equal(t, "HR system's servers", updated.Description)
	require.Equal(t, int64(2), updated.Revision)
	require.Equal(t, []pki.CertInfo{caCertInfo(root), caCertInfo(other)}, updated.Certificates)
	require.Equal(t, shown.CreatedAt, updated.CreatedAt)

	s.json(t, &updated, "ca", "update", "hr-prod", "--file", f.ca2Cert, "--description", "now the other root")
	require.Equal(t, "now the other root", updated.Description)
	require.Equal(t, int64(3), updated.Revision)
	require.Equal(t, []pki.CertInfo{caCertInfo(other)}, updated.Certificates)

	var gone struct {
		Kind    string `json:"kind"`
		Name    string `json:"name"`
		Removed bool   `json:"removed"`
	}
	s.json(t, &gone, "ca", "remove", "hr-prod")
	require.Equal(t, "ca", gone.Kind)
	require.Equal(t, "hr-prod", gone.Name)
	require.True(t, gone.Removed)

	r := s.run(t, "ca", "show", "hr-prod")
	require.Equal(t, 1, r.code)
	require.Equal(t, "Error: CA \"hr-prod\" does not exist\nHint: check the name; list them with `trustflow ca list`\n", r.stderr)
	require.Empty(t, r.stdout)

	require.Equal(t, "removed CA x\n", func() string {
		s.ok(t, "ca", "add", "x", "--file", f.caCert)
		return s.ok(t, "ca", "remove", "x")
	}())
	s.json(t, &listed, "ca", "list")
	require.Equal(t, []truststore.CA{}, listed)
}

func TestCAAddRefusesBadInput(t *testing.T) {
	t.Parallel()
	f, s := setup(t)

	// A client certificate is not a CA: the server refuses it with a hint.
	r := s.run(t, "ca", "add", "leaf", "--file", f.client)
	require.Equal(t, 1, r.code)
	require.Empty(t, r.stdout)
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	require.Len(t, lines, 2, r.stderr)
	require.True(t, strings.HasPrefix(lines[0], "Error: file: certificate "), r.stderr)
	require.True(t, strings.HasSuffix(lines[0], " is not a CA: its basicConstraints extension says CA:FALSE"), r.stderr)
	require.Equal(t, "Hint: import the CA that issued it instead (issuer '"+f.cert(f.caCert).Subject.String()+"')", lines[1])

	// A self-signed end-entity certificate is an anchor only when asked.
	r = s.run(t, "ca", "add", "legacy", "--file", f.selfSigned)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "\nHint: this is a self-signed end-entity certificate: to trust exactly this certificate as its own anchor, import it with --allow-leaf-anchor")
	var legacy truststore.CA
	s.json(t, &legacy, "ca", "add", "legacy", "--file", f.selfSigned, "--allow-leaf-anchor")
	require.True(t, legacy.AllowLeafAnchor)
	require.Len(t, legacy.Certificates, 1)
	require.False(t, legacy.Certificates[0].IsCA)
	require.Equal(t, []string{"legacy.example.org"}, legacy.Certificates[0].DNSNames)
	s.ok(t, "ca", "remove", "legacy")

	// Problems with the files are found before anything is sent.
	missing := f.path("missing.pem")
	r = s.run(t, "ca", "add", "x", "--file", missing)
	require.Equal(t, result{code: 1, stderr: "Error: --file: open " + missing + ": no such file or directory\n"}, r)

	big := f.write("big.pem", strings.Repeat("A", 700<<10+1))
	r = s.run(t, "ca", "add", "x", "--file", big)
	require.Equal(t, 1, r.code)
	require.Equal(t, "Error: --file: "+big+" is larger than 700 KiB (the API takes at most 1 MiB of JSON, base64 included)\nHint: give the certificate, key or bundle file itself; split a very large CA bundle into several CAs\n", r.stderr)

	r = s.run(t, "ca", "add", "x")
	require.Equal(t, result{code: 1, stderr: "Error: required flag(s) \"file\" not set\n"}, r)

	// None of it changed anything.
	var listed []truststore.CA
	s.json(t, &listed, "ca", "list")
	require.Equal(t, []truststore.CA{}, listed)
}

func TestCAVerify(t *testing.T) {
	t.Parallel()
	f, s := setup(t)
	root, leaf := f.cert(f.caCert), f.cert(f.server)
	s.ok(t, "ca", "add", "hr-prod", "--file", f.caCert)

	out := s.ok(t, "ca", "verify", "--ca", "hr-prod", "--leaf", f.server, "--name", "api.example.org")
	require.Equal(t, fmt.Sprintf("valid: %s chains to CA hr-prod\n  %s ← %s\n  %s ← %s\n",
		leaf.Subject, leaf.Subject, root.Subject, root.Subject, root.Subject), out)

	var v truststore.Verification
	s.json(t, &v, "ca", "verify", "--ca", "hr-prod", "--leaf", f.server, "--name", "api-2.example.org", "--purpose", "server")
	require.True(t, v.Valid)
	require.Nil(t, v.Error)
	require.Equal(t, fingerprint(leaf), v.Leaf.FingerprintSHA256)
	require.Equal(t, []string{"api.example.org", "api-2.example.org"}, v.Leaf.DNSNames)
	require.Len(t, v.Chain, 2)
	require.Equal(t, fingerprint(leaf), v.Chain[0].FingerprintSHA256)
	require.Equal(t, caCertInfo(root), v.Chain[1])

	// Verified and invalid: exit 2 with the diagnosis, naming the names the
	// certificate is valid for.
	r := s.run(t, "ca", "verify", "--ca", "hr-prod", "--leaf", f.server, "--name", "wrong.example.org")
	require.Equal(t, 2, r.code)
	require.Empty(t, r.stdout)
	require.True(t, strings.HasPrefix(r.stderr, "Error: "), r.stderr)
	require.Contains(t, r.stderr, "api.example.org, api-2.example.org")
	require.Contains(t, r.stderr, `"wrong.example.org"`)
	require.Contains(t, r.stderr, "\nHint: ")

	r = s.run(t, "ca", "verify", "--ca", "hr-prod", "--leaf", f.server, "--name", "wrong.example.org", "-o", "json")
	require.Equal(t, 2, r.code)
	var invalid truststore.Verification
	decodeStrict(t, r.stdout, &invalid)
	require.False(t, invalid.Valid)
	require.Nil(t, invalid.Chain)
	require.Equal(t, fingerprint(leaf), invalid.Leaf.FingerprintSHA256)
	require.NotNil(t, invalid.Error)
	require.Equal(t, pki.CodeHostnameMismatch, invalid.Error.Code)
	require.Equal(t, "Error: "+invalid.Error.Message+"\nHint: "+invalid.Error.Hint+"\n", r.stderr)

	// A server certificate may not authenticate a client.
	r = s.run(t, "ca", "verify", "--ca", "hr-prod", "--leaf", f.server, "--purpose", "client", "-o", "json")
	require.Equal(t, 2, r.code)
	decodeStrict(t, r.stdout, &invalid)
	require.Equal(t, pki.CodeIncompatibleUsage, invalid.Error.Code)

	// Signed by another CA.
	s.ok(t, "ca", "add", "other", "--file", f.ca2Cert)
	r = s.run(t, "ca", "verify", "--ca", "other", "--leaf", f.server, "-o", "json")
	require.Equal(t, 2, r.code)
	decodeStrict(t, r.stdout, &invalid)
	require.Equal(t, pki.CodeUnknownAuthority, invalid.Error.Code)

	// As of a time after the certificate expired.
	at := leaf.NotAfter.AddDate(0, 0, 1).UTC().Format("2006-01-02T15:04:05Z")
	r = s.run(t, "ca", "verify", "--ca", "hr-prod", "--leaf", f.server, "--time", at, "-o", "json")
	require.Equal(t, 2, r.code)
	decodeStrict(t, r.stdout, &invalid)
	require.Equal(t, pki.CodeExpired, invalid.Error.Code)

	// Local mistakes and API errors exit 1.
	r = s.run(t, "ca", "verify", "--ca", "hr-prod", "--leaf", f.server, "--time", "yesterday")
	require.Equal(t, result{code: 1, stderr: "Error: --time: \"yesterday\" is not an RFC 3339 time\nHint: use e.g. 2026-01-31T00:00:00Z\n"}, r)
	r = s.run(t, "ca", "verify", "--ca", "hr-prod", "--leaf", f.server, "--purpose", "both")
	require.Equal(t, 1, r.code)
	require.True(t, strings.HasPrefix(r.stderr, "Error: --purpose: \"both\" is not a purpose\n"), r.stderr)
	r = s.run(t, "ca", "verify", "--ca", "nope", "--leaf", f.server)
	require.Equal(t, result{code: 1, stderr: "Error: ca: CA \"nope\" does not exist\nHint: list the CAs with `trustflow ca list`\n"}, r)
	r = s.run(t, "ca", "verify", "--ca", "hr-prod", "--leaf", f.caKey)
	require.Equal(t, 1, r.code)
	require.True(t, strings.HasPrefix(r.stderr, "Error: leaf: "), r.stderr)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}
