package cli_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/api"
	"github.com/trustflow/trustflow/internal/pki"
	"github.com/trustflow/trustflow/internal/truststore"
)

// requireVersion checks every field of an identity version that holds
// cert, with chain after it.
func requireVersion(t *testing.T, v truststore.Version, n int, status, source string, cert *x509.Certificate, chain []pki.CertInfo) {
	t.Helper()
	require.Equal(t, n, v.Version)
	require.Equal(t, status, v.Status)
	require.Equal(t, source, v.Source)
	require.Equal(t, "ecdsa-p256", v.KeyType)
	require.Equal(t, serial(cert), v.Serial)
	require.Equal(t, cert.Subject.String(), v.Subject)
	require.Equal(t, cert.Issuer.String(), v.Issuer)
	require.Equal(t, fingerprint(cert), v.FingerprintSHA256)
	require.NotNil(t, v.NotBefore)
	require.NotNil(t, v.NotAfter)
	require.True(t, cert.NotBefore.Equal(*v.NotBefore))
	require.True(t, cert.NotAfter.Equal(*v.NotAfter))
	require.Equal(t, cert.DNSNames, v.DNSNames)
	require.Equal(t, chain, v.Chain)
	require.Empty(t, v.CSR)
}

// versionStatus is a version's number and status.
type versionStatus struct {
	Version int
	Status  string
}

func statuses(id truststore.Identity) []versionStatus {
	out := []versionStatus{}
	for _, v := range id.Versions {
		out = append(out, versionStatus{v.Version, v.Status})
	}
	return out
}

func TestIdentityImport(t *testing.T) {
	t.Parallel()
	f, s := setup(t)
	client, root := f.cert(f.client), f.cert(f.caCert)
	rootChain := []pki.CertInfo{caCertInfo(root)}

	var id truststore.Identity
	s.json(t, &id, "identity", "import", "pem", "--cert", f.client, "--key", f.clientKey, "--description", "payments API")
	require.Equal(t, "pem", id.Name)
	require.Equal(t, "payments API", id.Description)
	require.Equal(t, truststore.StatusActive, id.Status)
	require.Equal(t, 1, id.ActiveVersion)
	require.Len(t, id.Versions, 1)
	requireVersion(t, id.Versions[0], 1, truststore.StatusActive, "imported", client, nil)
	require.NotNil(t, id.Versions[0].ActivatedAt)

	var shown truststore.Identity
	s.json(t, &shown, "identity", "show", "pem")
	require.Equal(t, id, shown)

	for _, tc := range []struct {
		name string
		args []string
	}{
		{"encrypted", []string{"--cert", f.client, "--key", f.clientKeyEncrypted, "--key-password-file", f.password, "--chain", f.caCert}},
		{"p12", []string{"--pkcs12", f.p12, "--password-file", f.password}},
		{"p12-legacy", []string{"--pkcs12", f.p12Legacy, "--password-file", f.password}},
	} {
		s.json(t, &id, append([]string{"identity", "import", tc.name}, tc.args...)...)
		require.Equal(t, tc.name, id.Name, tc.name)
		require.Equal(t, truststore.StatusActive, id.Status, tc.name)
		require.Equal(t, 1, id.ActiveVersion, tc.name)
		require.Len(t, id.Versions, 1, tc.name)
		requireVersion(t, id.Versions[0], 1, truststore.StatusActive, "imported", client, rootChain)
	}

	out := s.ok(t, "identity", "import", "table", "--pkcs12", f.p12, "--password-file", f.password)
	lines := strings.Split(out, "\n")
	require.Equal(t, "imported identity table: version 1 is active", lines[0])
	require.Equal(t, "identity table: active, active version 1", lines[2])
	require.Equal(t, []string{"VERSION", "STATUS", "SERIAL", "SUBJECT", "ISSUER", "FINGERPRINT", "NOT_AFTER", "KEY_TYPE"}, strings.Fields(lines[4]))
	require.Equal(t, []string{"*", "1", "active", serial(client)}, strings.Fields(lines[5])[:4])
	require.Contains(t, lines[5], "  "+client.Subject.String()+"  "+client.Issuer.String()+"  "+fingerprint(client)+"  ")
	require.True(t, strings.HasSuffix(lines[5], "  ecdsa-p256"), lines[5])

	var names []string
	var listed []truststore.Identity
	s.json(t, &listed, "identity", "list")
	for _, l := range listed {
		names = append(names, l.Name)
	}
	require.ElementsMatch(t, []string{"pem", "encrypted", "p12", "p12-legacy", "table"}, names)
}

func TestIdentityImportRefusesBadInput(t *testing.T) {
	t.Parallel()
	f, s := setup(t)

	// Wrong or missing passwords: the server says so, and nothing is stored.
	r := s.run(t, "identity", "import", "x", "--cert", f.client, "--key", f.clientKeyEncrypted, "--key-password-file", f.wrongPassword)
	require.Equal(t, result{code: 1, stderr: "Error: key: the password does not decrypt the private key\n" +
		"Hint: check the password: `openssl pkey -in key.pem -noout` asks for it and says whether it is right\n"}, r)
	r = s.run(t, "identity", "import", "x", "--cert", f.client, "--key", f.clientKeyEncrypted)
	require.Equal(t, result{code: 1, stderr: "Error: key: the private key is encrypted and no password was given\n" +
		"Hint: give the password the key was encrypted with, or decrypt it first with `openssl pkey -in key.pem -out key-plain.pem`\n"}, r)
	for _, p12 := range []string{f.p12, f.p12Legacy} {
		r = s.run(t, "identity", "import", "x", "--pkcs12", p12, "--password-file", f.wrongPassword)
		require.Equal(t, result{code: 1, stderr: "Error: pkcs12: the password does not decrypt the PKCS#12 file\n" +
			"Hint: check the password: `openssl pkcs12 -in identity.p12 -noout` asks for it and says whether it is right (add -legacy for old 3DES/RC2 files)\n"}, r)
	}
	r = s.run(t, "identity", "import", "x", "--cert", f.client, "--key", f.client2Key)
	require.Equal(t, 1, r.code)
	require.True(t, strings.HasPrefix(r.stderr, "Error: key: "), r.stderr)
	require.Contains(t, r.stderr, "\nHint: ")

	// Flags that cannot go together, and files that cannot be read, are
	// refused before anything is sent.
	missing := f.path("missing.pem")
	for _, tc := range []struct {
		args   []string
		stderr string
	}{
		{[]string{"--pkcs12", f.p12, "--cert", f.client},
			"Error: --pkcs12 and --cert: give either a PKCS#12 file or a certificate and key, not both\nHint: a PKCS#12 file already holds the certificate and key: drop --cert, or drop --pkcs12\n"},
		{[]string{"--pkcs12", f.p12, "--key", f.clientKey},
			"Error: --pkcs12 and --key: give either a PKCS#12 file or a certificate and key, not both\nHint: a PKCS#12 file already holds the certificate and key: drop --key, or drop --pkcs12\n"},
		{[]string{"--pkcs12", f.p12, "--key-password-file", f.password},
			"Error: --key-password-file: is for an encrypted --key, not --pkcs12\nHint: give the PKCS#12 file's password with --password-file\n"},
		{[]string{"--cert", f.client, "--key", f.clientKeyEncrypted, "--password-file", f.password},
			"Error: --password-file: is the --pkcs12 file's password, and no --pkcs12 was given\nHint: for an encrypted --key use --key-password-file\n"},
		{nil, "Error: --cert: required\nHint: give --cert FILE and --key FILE, or --pkcs12 FILE\n"},
		{[]string{"--cert", f.client}, "Error: --key: required with --cert\nHint: give the certificate's private key with --key FILE, or use --pkcs12\n"},
		{[]string{"--key", f.clientKey}, "Error: --cert: required with --key\nHint: give the certificate that belongs to the key with --cert FILE\n"},
		{[]string{"--cert", missing, "--key", f.clientKey}, "Error: --cert: open " + missing + ": no such file or directory\n"},
		{[]string{"--cert", f.client, "--key", missing}, "Error: --key: open " + missing + ": no such file or directory\n"},
		{[]string{"--cert", f.client, "--key", f.clientKey, "--key-password-file", missing}, "Error: --key-password-file: open " + missing + ": no such file or directory\n"},
		{[]string{"--pkcs12", missing}, "Error: --pkcs12: open " + missing + ": no such file or directory\n"},
		{[]string{"--pkcs12", f.p12, "--password-file", missing}, "Error: --password-file: open " + missing + ": no such file or directory\n"},
		{[]string{"--cert", f.client, "--key", f.clientKey, "--chain", missing}, "Error: --chain: open " + missing + ": no such file or directory\n"},
		{[]string{"--cert", f.dir, "--key", f.clientKey}, "Error: --cert: read " + f.dir + ": is a directory\n"},
	} {
		r := s.run(t, append([]string{"identity", "import", "x"}, tc.args...)...)
		require.Equal(t, result{code: 1, stderr: tc.stderr}, r, "%q", tc.args)
	}
	big := f.write("big.p12", strings.Repeat("\x30", 700<<10+1))
	r = s.run(t, "identity", "import", "x", "--pkcs12", big)
	require.Equal(t, result{code: 1, stderr: "Error: --pkcs12: " + big + " is larger than 700 KiB (the API takes at most 1 MiB of JSON, base64 included)\n" +
		"Hint: give the certificate, key or bundle file itself; split a very large CA bundle into several CAs\n"}, r)

	var listed []truststore.Identity
	s.json(t, &listed, "identity", "list")
	require.Equal(t, []truststore.Identity{}, listed)

	// A name that is taken.
	s.ok(t, "identity", "import", "x", "--cert", f.client, "--key", f.clientKey)
	r = s.run(t, "identity", "import", "x", "--cert", f.client, "--key", f.clientKey)
	require.Equal(t, result{code: 1, stderr: "Error: an identity named \"x\" already exists\n" +
		"Hint: choose another name, or add a version to it with `trustflow identity rotate x`\n"}, r)
}

// requireCSR parses a CSR and checks its signature, subject and names.
func requireCSR(t *testing.T, text, subject string, dns []string) *x509.CertificateRequest {
	t.Helper()
	block, rest := pem.Decode([]byte(text))
	require.NotNil(t, block, text)
	require.Equal(t, "CERTIFICATE REQUEST", block.Type)
	require.Empty(t, strings.TrimSpace(string(rest)))
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	require.NoError(t, err)
	require.NoError(t, csr.CheckSignature())
	require.Equal(t, subject, csr.Subject.String())
	require.Equal(t, dns, csr.DNSNames)
	return csr
}

func TestIdentityCreateAndInstallCert(t *testing.T) {
	t.Parallel()
	f, s := setup(t)

	csrPath := f.path("gen.csr")
	out := s.ok(t, "identity", "create", "gen", "--subject", "CN=trustflow-prod,O=Example Agency", "--dns", "a.example.org", "--dns", "b.example.org",
		"--key-type", "ecdsa-p384", "--csr-out", csrPath, "--description", "generated here")
	require.Equal(t, "created identity gen (ecdsa-p384 key), waiting for its certificate; CSR written to "+csrPath+
		": have your CA sign it, then run `trustflow identity install-cert gen --cert FILE`\n", out)
	fi, err := os.Stat(csrPath)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o644), fi.Mode().Perm())
	csrText := readFile(t, csrPath)
	csr := requireCSR(t, csrText, "CN=trustflow-prod,O=Example Agency", []string{"a.example.org", "b.example.org"})
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	require.True(t, ok)
	require.Equal(t, elliptic.P384(), pub.Curve)

	var id truststore.Identity
	s.json(t, &id, "identity", "show", "gen")
	require.Equal(t, "gen", id.Name)
	require.Equal(t, "generated here", id.Description)
	require.Equal(t, truststore.StatusPending, id.Status)
	require.Equal(t, 0, id.ActiveVersion)
	require.Len(t, id.Versions, 1)
	v := id.Versions[0]
	require.Equal(t, truststore.Version{Version: 1, Status: truststore.StatusPending, Source: "generated", KeyType: "ecdsa-p384", KeyStore: truststore.KeyStoreSealed, CSR: csrText, CreatedAt: v.CreatedAt}, v)

	// The CA signs the CSR; the certificate goes in and becomes active.
	signed := f.sign(csrPath, "client.ext")
	cert := f.cert(signed)
	s.json(t, &id, "identity", "install-cert", "gen", "--cert", signed, "--chain", f.caCert)
	require.Equal(t, truststore.StatusActive, id.Status)
	require.Equal(t, 1, id.ActiveVersion)
	require.Len(t, id.Versions, 1)
	require.Equal(t, "generated", id.Versions[0].Source)
	require.Equal(t, "ecdsa-p384", id.Versions[0].KeyType)
	require.Equal(t, fingerprint(cert), id.Versions[0].FingerprintSHA256)
	require.Equal(t, []string{"a.example.org", "b.example.org"}, id.Versions[0].DNSNames)
	require.Equal(t, []pki.CertInfo{caCertInfo(f.cert(f.caCert))}, id.Versions[0].Chain)
	require.Empty(t, id.Versions[0].CSR)
	var shown truststore.Identity
	s.json(t, &shown, "identity", "show", "gen")
	require.Equal(t, id, shown)

	r := s.run(t, "identity", "install-cert", "gen", "--cert", signed)
	require.Equal(t, result{code: 1, stderr: "Error: identity \"gen\" has no version waiting for a certificate\n" +
		"Hint: generate a key and CSR first with `trustflow identity rotate gen --generate`\n"}, r)

	// Without --csr-out the CSR follows the summary on standard output.
	out = s.ok(t, "identity", "create", "stdout", "--subject", "CN=stdout")
	summary, pemText, found := strings.Cut(out, "\n")
	require.True(t, found)
	require.Equal(t, "created identity stdout (ecdsa-p256 key), waiting for its certificate; have your CA sign it, then run `trustflow identity install-cert stdout --cert FILE`", summary)
	requireCSR(t, pemText, "CN=stdout", nil)

	// JSON is {identity, csr}.
	var created api.CreatedIdentity
	s.json(t, &created, "identity", "create", "json", "--subject", "CN=json,O=Example Agency", "--key-type", "rsa-2048")
	require.Equal(t, "json", created.Identity.Name)
	require.Equal(t, truststore.StatusPending, created.Identity.Status)
	require.Len(t, created.Identity.Versions, 1)
	require.Equal(t, "rsa-2048", created.Identity.Versions[0].KeyType)
	require.Equal(t, created.CSR, created.Identity.Versions[0].CSR)
	requireCSR(t, created.CSR, "CN=json,O=Example Agency", nil)

	// A certificate for another key does not fit the pending version.
	r = s.run(t, "identity", "install-cert", "json", "--cert", f.client)
	require.Equal(t, 1, r.code)
	require.True(t, strings.HasPrefix(r.stderr, "Error: cert: "), r.stderr)
	require.Contains(t, r.stderr, "\nHint: ")
	require.Contains(t, r.stderr, "install the certificate issued for the CSR of version 1")

	// Local problems: nothing is created.
	r = s.run(t, "identity", "create", "again", "--subject", "CN=again", "--csr-out", csrPath)
	require.Equal(t, result{code: 1, stderr: "Error: --csr-out: " + csrPath + " already exists\nHint: choose another path, or remove the file first\n"}, r)
	r = s.run(t, "identity", "create", "again")
	require.Equal(t, result{code: 1, stderr: "Error: --subject: required\nHint: give the certificate's subject, e.g. --subject \"CN=trustflow-prod,O=Example Agency\"\n"}, r)
	r = s.run(t, "identity", "install-cert", "json")
	require.Equal(t, result{code: 1, stderr: "Error: --cert: required\nHint: give the certificate your CA signed from the CSR with --cert FILE\n"}, r)
	r = s.run(t, "identity", "show", "again")
	require.Equal(t, result{code: 1, stderr: "Error: identity \"again\" does not exist\nHint: check the name; list them with `trustflow identity list`\n"}, r)

	// The server refuses a bad subject; the --csr-out file is not left behind.
	badOut := f.path("bad.csr")
	r = s.run(t, "identity", "create", "again", "--subject", "nonsense", "--csr-out", badOut)
	require.Equal(t, 1, r.code)
	require.True(t, strings.HasPrefix(r.stderr, "Error: subject: "), r.stderr)
	require.NoFileExists(t, badOut)
}

func TestIdentityRotateActivatePrune(t *testing.T) {
	t.Parallel()
	f, s := setup(t)
	client, client2 := f.cert(f.client), f.cert(f.client2)
	s.ok(t, "identity", "import", "svc", "--cert", f.client, "--key", f.clientKey)

	var rot truststore.RotateResult
	s.json(t, &rot, "identity", "rotate", "svc", "--cert", f.client2, "--key", f.client2Key, "--stage")
	require.Equal(t, 2, rot.Version)
	require.Empty(t, rot.CSR)
	require.Equal(t, 1, rot.Identity.ActiveVersion)
	require.Equal(t, []versionStatus{{1, "active"}, {2, "staged"}}, statuses(rot.Identity))

	var id truststore.Identity
	s.json(t, &id, "identity", "show", "svc")
	require.Equal(t, rot.Identity, id)
	requireVersion(t, id.Versions[0], 1, truststore.StatusActive, "imported", client, nil)
	requireVersion(t, id.Versions[1], 2, truststore.StatusStaged, "imported", client2, nil)
	require.Nil(t, id.Versions[1].ActivatedAt)

	table := s.ok(t, "identity", "show", "svc")
	lines := strings.Split(table, "\n")
	require.Equal(t, "identity svc: active, active version 1", lines[0])
	require.Equal(t, []string{"*", "1", "active"}, strings.Fields(lines[3])[:3])
	require.Equal(t, []string{"2", "staged"}, strings.Fields(lines[4])[:2])
	require.True(t, strings.HasPrefix(lines[4], "  2 "), lines[4])

	// Activate the staged version, then roll back.
	s.json(t, &id, "identity", "activate", "svc", "--version", "2")
	require.Equal(t, 2, id.ActiveVersion)
	require.Equal(t, []versionStatus{{1, "retired"}, {2, "active"}}, statuses(id))
	s.json(t, &id, "identity", "show", "svc")
	require.Equal(t, 2, id.ActiveVersion)
	require.Equal(t, []versionStatus{{1, "retired"}, {2, "active"}}, statuses(id))
	require.NotNil(t, id.Versions[1].ActivatedAt)

	out := s.ok(t, "identity", "activate", "svc", "--version", "1")
	require.True(t, strings.HasPrefix(out, "identity svc: version 1 is active\n\n"), out)
	s.json(t, &id, "identity", "show", "svc")
	require.Equal(t, truststore.StatusActive, id.Status)
	require.Equal(t, 1, id.ActiveVersion)
	require.Equal(t, []versionStatus{{1, "active"}, {2, "retired"}}, statuses(id))

	r := s.run(t, "identity", "activate", "svc", "--version", "1")
	require.Equal(t, result{code: 1, stderr: "Error: version 1 of \"svc\" is already active\nHint: nothing to do\n"}, r)
	r = s.run(t, "identity", "activate", "svc")
	require.Equal(t, result{code: 1, stderr: "Error: --version: required: the version number to activate (1 or more)\nHint: see the versions with `trustflow identity show svc`\n"}, r)
	r = s.run(t, "identity", "activate", "svc", "--version", "9")
	require.Equal(t, 1, r.code)
	require.True(t, strings.HasPrefix(r.stderr, "Error: identity version \"svc v9\" does not exist\n"), r.stderr)

	// Prune deletes the retired version.
	var pruned api.PruneResult
	s.json(t, &pruned, "identity", "prune", "svc")
	require.Equal(t, []int{2}, pruned.Pruned)
	require.Equal(t, []versionStatus{{1, "active"}}, statuses(pruned.Identity))
	s.json(t, &id, "identity", "show", "svc")
	require.Equal(t, pruned.Identity, id)
	out = s.ok(t, "identity", "prune", "svc")
	require.True(t, strings.HasPrefix(out, "identity svc has no retired versions to prune\n\n"), out)
	s.json(t, &pruned, "identity", "prune", "svc")
	require.Equal(t, []int{}, pruned.Pruned)

	// Rotating in a certificate that is already a version is refused.
	r = s.run(t, "identity", "rotate", "svc", "--pkcs12", f.p12, "--password-file", f.password)
	require.Equal(t, result{code: 1, stderr: "Error: this certificate is already version 1 of \"svc\"\nHint: to make it active again use `trustflow identity activate svc --version 1`\n"}, r)

	// An unstaged rotation is active at once. Version numbers are never
	// reused: v2 was pruned, so this is v3.
	client3, client3Key := f.issue("client3", "/CN=payments 3/O=trustflow tests", "client.ext")
	s.json(t, &rot, "identity", "rotate", "svc", "--cert", client3, "--key", client3Key)
	require.Equal(t, 3, rot.Version)
	require.Equal(t, rot.Version, rot.Identity.ActiveVersion)
	require.Equal(t, []versionStatus{{1, "retired"}, {rot.Version, "active"}}, statuses(rot.Identity))
	current := rot.Version

	// A generated, staged rotation: pending until its certificate comes,
	// then staged, and the active version does not change.
	csrPath := f.path("rotate.csr")
	out = s.ok(t, "identity", "rotate", "svc", "--generate", "--subject", "CN=svc next", "--dns", "svc.example.org", "--stage", "--csr-out", csrPath)
	next := current + 1
	require.Equal(t, fmt.Sprintf("identity svc: version %d (ecdsa-p256 key) generated, waiting for its certificate; it stays staged when its certificate is installed; "+
		"CSR written to %s: have your CA sign it, then run `trustflow identity install-cert svc --cert FILE`\n", next, csrPath), out)
	requireCSR(t, readFile(t, csrPath), "CN=svc next", []string{"svc.example.org"})
	s.json(t, &id, "identity", "show", "svc")
	require.Equal(t, current, id.ActiveVersion)
	require.Equal(t, []versionStatus{{1, "retired"}, {current, "active"}, {next, "pending"}}, statuses(id))

	r = s.run(t, "identity", "rotate", "svc", "--generate", "--subject", "CN=svc other")
	require.Equal(t, 1, r.code)
	require.Equal(t, fmt.Sprintf("Error: identity \"svc\" already has version %d waiting for its certificate\n"+
		"Hint: install its certificate with `trustflow identity install-cert svc --cert F` first\n", next), r.stderr)

	s.json(t, &id, "identity", "install-cert", "svc", "--cert", f.sign(csrPath, "client.ext"))
	require.Equal(t, current, id.ActiveVersion)
	require.Equal(t, []versionStatus{{1, "retired"}, {current, "active"}, {next, "staged"}}, statuses(id))
	s.json(t, &id, "identity", "activate", "svc", "--version", fmt.Sprint(next))
	require.Equal(t, []versionStatus{{1, "retired"}, {current, "retired"}, {next, "active"}}, statuses(id))

	// Generated rotations print the CSR when no --csr-out is given; JSON
	// carries it as csr.
	s.json(t, &rot, "identity", "rotate", "svc", "--generate", "--subject", "CN=svc json")
	require.Equal(t, next+1, rot.Version)
	requireCSR(t, rot.CSR, "CN=svc json", nil)
	require.Equal(t, next, rot.Identity.ActiveVersion)

	// Flags that do not go together.
	for _, tc := range []struct {
		args   []string
		stderr string
	}{
		{[]string{"--generate", "--subject", "CN=x", "--cert", f.client},
			"Error: --generate and --cert: cannot be combined\nHint: either generate a new key with --generate (and install its certificate later with `trustflow identity install-cert`), or import one with --cert/--key or --pkcs12\n"},
		{[]string{"--generate", "--subject", "CN=x", "--pkcs12", f.p12},
			"Error: --generate and --pkcs12: cannot be combined\nHint: either generate a new key with --generate (and install its certificate later with `trustflow identity install-cert`), or import one with --cert/--key or --pkcs12\n"},
		{[]string{"--generate"},
			"Error: --subject: required with --generate\nHint: give the certificate's subject, e.g. --subject \"CN=trustflow-prod,O=Example Agency\"\n"},
		{[]string{"--subject", "CN=x", "--cert", f.client, "--key", f.clientKey},
			"Error: --subject: only applies with --generate\nHint: add --generate to have trustflow generate the new key, or drop --subject\n"},
		{[]string{"--csr-out", f.path("x.csr"), "--cert", f.client, "--key", f.clientKey},
			"Error: --csr-out: only applies with --generate\nHint: add --generate to have trustflow generate the new key, or drop --csr-out\n"},
		{[]string{"--cert", f.client, "--pkcs12", f.p12},
			"Error: --pkcs12 and --cert: give either a PKCS#12 file or a certificate and key, not both\nHint: a PKCS#12 file already holds the certificate and key: drop --cert, or drop --pkcs12\n"},
		{nil, "Error: --cert: required\nHint: give --cert FILE and --key FILE, or --pkcs12 FILE\n"},
	} {
		r := s.run(t, append([]string{"identity", "rotate", "svc"}, tc.args...)...)
		require.Equal(t, result{code: 1, stderr: tc.stderr}, r, "%q", tc.args)
	}
	require.NoFileExists(t, f.path("x.csr"))
}

func TestIdentityListAndRemove(t *testing.T) {
	t.Parallel()
	f, s := setup(t)
	client := f.cert(f.client)
	s.ok(t, "identity", "import", "alpha", "--cert", f.client, "--key", f.clientKey)
	s.ok(t, "identity", "import", "beta", "--pkcs12", f.p12, "--password-file", f.password)
	s.ok(t, "identity", "create", "gamma", "--subject", "CN=gamma", "--key-type", "ed25519", "--csr-out", f.path("gamma.csr"))

	var listed []truststore.Identity
	s.json(t, &listed, "identity", "list")
	got := map[string]string{}
	for _, id := range listed {
		got[id.Name] = id.Status
	}
	require.Equal(t, map[string]string{"alpha": "active", "beta": "active", "gamma": "pending"}, got)

	out := s.ok(t, "identity", "list")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	require.Len(t, lines, 4)
	require.Equal(t, "NAME   STATUS   ACTIVE VERSION  KEY TYPE    NOT AFTER             DAYS LEFT", lines[0])
	notAfter := client.NotAfter.UTC().Format("2006-01-02T15:04:05Z")
	rows := map[string]string{}
	for _, l := range lines[1:] {
		rows[strings.Fields(l)[0]] = strings.Join(strings.Fields(l), " ")
	}
	require.Equal(t, map[string]string{
		"alpha": "alpha active 1 ecdsa-p256 " + notAfter + " 89",
		"beta":  "beta active 1 ecdsa-p256 " + notAfter + " 89",
		"gamma": "gamma pending - ed25519 - -",
	}, rows)

	// The certificates are valid for 90 days.
	s.json(t, &listed, "identity", "list", "--expiring", "30d")
	require.Equal(t, []truststore.Identity{}, listed)
	for _, within := range []string{"91d", "2200h"} {
		s.json(t, &listed, "identity", "list", "--expiring", within)
		require.Len(t, listed, 2, within)
		for _, id := range listed {
			require.Contains(t, []string{"alpha", "beta"}, id.Name)
		}
	}
	for _, bad := range []string{"soon", "0d", "-5h", "1.5d"} {
		r := s.run(t, "identity", "list", "--expiring", bad)
		require.Equal(t, result{code: 1, stderr: "Error: --expiring: \"" + bad + "\" is not a positive duration\nHint: use days (30d) or a Go duration (720h)\n"}, r)
	}

	out = s.ok(t, "identity", "remove", "alpha")
	require.Equal(t, "removed identity alpha\n", out)
	var gone struct {
		Kind    string `json:"kind"`
		Name    string `json:"name"`
		Removed bool   `json:"removed"`
	}
	s.json(t, &gone, "identity", "remove", "gamma")
	require.Equal(t, "identity", gone.Kind)
	require.Equal(t, "gamma", gone.Name)
	require.True(t, gone.Removed)
	r := s.run(t, "identity", "remove", "gamma")
	require.Equal(t, result{code: 1, stderr: "Error: identity \"gamma\" does not exist\nHint: check the name; list them with `trustflow identity list`\n"}, r)

	s.json(t, &listed, "identity", "list")
	require.Len(t, listed, 1)
	require.Equal(t, "beta", listed[0].Name)

	yaml := s.ok(t, "identity", "show", "beta", "-o", "yaml")
	require.Contains(t, yaml, "active_version: 1\n")
	require.Contains(t, yaml, "name: beta\n")
}
