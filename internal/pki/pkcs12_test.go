package pki_test

import (
	"crypto/fips140"
	"crypto/x509"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/trustflow/trustflow/internal/pki"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

func TestParsePKCS12(t *testing.T) {
	t.Parallel()
	tests := []struct {
		fixture  string
		password string
		leaf     string
		keyType  string
		chain    []string
	}{
		{"client-modern.p12", p12Pass, "client.trustflow.test", "ecdsa-p256", []string{"Trustflow Test Issuing CA", "Trustflow Test Root CA"}},
		{"client-legacy-rc2.p12", p12Pass, "client.trustflow.test", "ecdsa-p256", []string{"Trustflow Test Issuing CA", "Trustflow Test Root CA"}},
		{"client-legacy-3des.p12", p12Pass, "client.trustflow.test", "ecdsa-p256", []string{"Trustflow Test Issuing CA", "Trustflow Test Root CA"}},
		{"rsa-client.p12", p12Pass, "rsa.trustflow.test", "rsa-2048", []string{"Trustflow Test Issuing CA", "Trustflow Test Root CA"}},
		{"client-empty-password.p12", "", "client.trustflow.test", "ecdsa-p256", []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			t.Parallel()
			key, leaf, chain, err := pki.ParsePKCS12(fixture(t, tt.fixture), tt.password)
			require.NoError(t, err)
			require.Equal(t, tt.leaf, leaf.Subject.CommonName)
			require.Equal(t, tt.keyType, pki.KeyType(key.Public()))
			require.NoError(t, pki.KeyMatchesCertificate(key, leaf))
			require.Equal(t, tt.chain, subjects(chain))
			require.NoError(t, pki.CheckChain(leaf, chain))
		})
	}
}

func TestParsePKCS12PBMAC1(t *testing.T) {
	t.Parallel()
	// RFC 9579 Appendix A.1: PBMAC1 with PBKDF2-HMAC-SHA256.
	key, leaf, _, err := pki.ParsePKCS12(fixture(t, "pbmac1-rfc9579-a1.p12"), "1234")
	require.NoError(t, err)
	require.NoError(t, pki.KeyMatchesCertificate(key, leaf))
	_, _, _, err = pki.ParsePKCS12(fixture(t, "pbmac1-rfc9579-a1.p12"), "12345")
	requireCode(t, err, pki.CodeWrongPassword)

	// What OpenSSL 3.4+ writes with -pbmac1_pbkdf2, via go-pkcs12's encoder.
	ca := truststoretest.NewCA(t)
	inter := ca.Intermediate(t)
	l := inter.IssueClient(t, "pbmac1")
	data, err := pkcs12.Modern2026.Encode(l.Key, l.Cert, append(l.Chain, ca.Cert), "pass")
	require.NoError(t, err)
	key, leaf, chain, err := pki.ParsePKCS12(data, "pass")
	require.NoError(t, err)
	require.True(t, leaf.Equal(l.Cert))
	require.NoError(t, pki.KeyMatchesCertificate(key, leaf))
	require.Len(t, chain, 2)
}

func TestParsePKCS12LeafNotFirst(t *testing.T) {
	t.Parallel()
	ca := truststoretest.NewCA(t)
	inter := ca.Intermediate(t)
	l := inter.IssueClient(t, "last")
	// The CA certificates come before the leaf; the root before the intermediate.
	data, err := pkcs12.Modern2023.Encode(l.Key, ca.Cert, []*x509.Certificate{inter.Cert, l.Cert}, "pass")
	require.NoError(t, err)
	_, leaf, chain, err := pki.ParsePKCS12(data, "pass")
	require.NoError(t, err)
	require.True(t, leaf.Equal(l.Cert))
	require.Equal(t, []string{inter.Cert.Subject.CommonName, ca.Cert.Subject.CommonName}, subjects(chain))
}

func TestParsePKCS12Errors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		fixture  string
		password string
		code     string
	}{
		{"client-modern.p12", "wrong", pki.CodeWrongPassword},
		{"client-legacy-rc2.p12", "wrong", pki.CodeWrongPassword},
		{"client-legacy-3des.p12", "wrong", pki.CodeWrongPassword},
		{"client-modern.p12", "", pki.CodePasswordRequired},
		{"certs-only.p12", p12Pass, pki.CodeNoPrivateKey},
		{"client-too-many-iterations.p12", p12Pass, pki.CodeTooLarge},
		{"client.pem", p12Pass, pki.CodeUnsupportedFormat},
		{"root-ca.der", p12Pass, pki.CodeMalformedPKCS12},
		{"truncated.der", p12Pass, pki.CodeMalformedPKCS12},
		{"garbage.txt", p12Pass, pki.CodeMalformedPKCS12},
	}
	for _, tt := range tests {
		t.Run(tt.fixture+"/"+tt.password, func(t *testing.T) {
			t.Parallel()
			_, _, _, err := pki.ParsePKCS12(fixture(t, tt.fixture), tt.password)
			e := requireCode(t, err, tt.code)
			require.NotEmpty(t, e.Hint)
		})
	}
}

// TestParsePKCS12FIPSOnly runs itself again under GODEBUG=fips140=only, where
// Go's crypto panics on SHA-1, 3DES, RC2 and short PBKDF2 salts: ParsePKCS12
// and ParsePrivateKey must turn that into Code "fips_disallowed".
func TestParsePKCS12FIPSOnly(t *testing.T) {
	if os.Getenv("TRUSTFLOW_PKI_FIPS_CHILD") != "1" {
		if testing.Short() {
			t.Skip("runs a child test process")
		}
		// go-pkcs12's Modern2026 profile (PBMAC1, PBES2 with AES-256-CBC,
		// PBKDF2-HMAC-SHA256 and 16-byte salts) is FIPS-compatible to read;
		// writing it needs SHA-1 (for localKeyId), so it is written here.
		ca := truststoretest.NewCA(t)
		l := ca.IssueClient(t, "fips")
		data, err := pkcs12.Modern2026.Encode(l.Key, l.Cert, nil, "a long enough password")
		require.NoError(t, err)
		p12 := filepath.Join(t.TempDir(), "modern2026.p12")
		require.NoError(t, os.WriteFile(p12, data, 0o600))

		cmd := exec.Command(os.Args[0], "-test.run=^TestParsePKCS12FIPSOnly$", "-test.v")
		cmd.Env = append(os.Environ(), "GODEBUG=fips140=only", "TRUSTFLOW_PKI_FIPS_CHILD=1", "TRUSTFLOW_PKI_FIPS_P12="+p12)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "child test under fips140=only failed:\n%s", out)
		if !testing.Verbose() {
			return
		}
		t.Logf("child output:\n%s", out)
		return
	}
	if !fips140.Enforced() {
		t.Skip("GODEBUG=fips140=only is not in effect on this platform")
	}
	for _, tt := range []struct{ fixture, password string }{
		{"client-legacy-rc2.p12", p12Pass},
		{"client-legacy-3des.p12", p12Pass},
		{"client-modern.p12", p12Pass}, // OpenSSL's 8-byte PBKDF2 salt
	} {
		_, _, _, err := pki.ParsePKCS12(fixture(t, tt.fixture), tt.password)
		e := requireCode(t, err, pki.CodeFIPSDisallowed)
		require.Contains(t, e.Hint, "FIPS 140-only mode refuses", tt.fixture)
		t.Logf("%s: %v", tt.fixture, err)
	}
	for _, name := range []string{"client-key-pkcs8-aes128-sha1.pem", "client-key-pkcs8-des3.pem", "client-key-pkcs8-aes256.pem"} {
		_, err := pki.ParsePrivateKey(fixture(t, name), []byte(keyPass))
		requireCode(t, err, pki.CodeFIPSDisallowed)
		t.Logf("%s: %v", name, err)
	}
	data, err := os.ReadFile(os.Getenv("TRUSTFLOW_PKI_FIPS_P12"))
	require.NoError(t, err)
	_, leaf, _, err := pki.ParsePKCS12(data, "a long enough password")
	require.NoError(t, err)
	require.Equal(t, "fips", leaf.Subject.CommonName)

	// Unencrypted keys and certificates are fine.
	_, err = pki.ParsePrivateKey(fixture(t, "client-key-pkcs8.pem"), nil)
	require.NoError(t, err)
}

func TestParsePKCS12Base64(t *testing.T) {
	t.Parallel()
	b64 := base64.StdEncoding.EncodeToString(fixture(t, "client-modern.p12"))
	_, _, _, err := pki.ParsePKCS12([]byte(b64+"\n"), p12Pass)
	e := requireCode(t, err, pki.CodeMalformedPKCS12)
	require.Contains(t, e.Hint, "base64 -d")
	_, _, _, err = pki.ParsePKCS12(fixture(t, "client-modern.p12"), "\xff")
	requireCode(t, err, pki.CodeInvalidOption)
}
