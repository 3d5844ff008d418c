package pki_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/pki"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

func TestCheckCA(t *testing.T) {
	t.Parallel()
	tests := []struct {
		fixture         string
		allowLeafAnchor bool
		code            string // "" = accepted
	}{
		{"root-ca.pem", false, ""},
		{"intermediate-ca.pem", false, ""},
		{"ca-without-basic-constraints.pem", false, pki.CodeNotACA},
		{"ca-without-basic-constraints.pem", true, ""}, // self-signed: may be pinned as its own anchor
		{"leaf-used-as-ca.pem", false, pki.CodeNotACA},
		{"leaf-used-as-ca.pem", true, pki.CodeNotACA}, // not self-signed: never
		{"self-signed-leaf.pem", false, pki.CodeNotACA},
		{"self-signed-leaf.pem", true, ""},
		{"client.pem", true, pki.CodeNotACA},
	}
	for _, tt := range tests {
		err := pki.CheckCA(fixtureCert(t, tt.fixture), tt.allowLeafAnchor)
		if tt.code == "" {
			require.NoError(t, err, tt.fixture)
			continue
		}
		e := requireCode(t, err, tt.code)
		require.NotEmpty(t, e.Hint)
	}

	err := pki.CheckCA(fixtureCert(t, "ca-without-basic-constraints.pem"), false)
	e := requireCode(t, err, pki.CodeNotACA)
	require.Equal(t, "certificate 'CN=CA Without Basic Constraints' is not a CA: it has no basicConstraints extension", e.Message)
	require.Contains(t, e.Hint, "--allow-leaf-anchor")

	err = pki.CheckCA(fixtureCert(t, "leaf-used-as-ca.pem"), true)
	e = requireCode(t, err, pki.CodeNotACA)
	require.Equal(t, "certificate 'CN=Leaf Used As CA' is not a CA: its basicConstraints extension says CA:FALSE", e.Message)
	require.Contains(t, e.Hint, "--allow-leaf-anchor accepts only self-signed certificates")

	ca := truststoretest.NewCA(t, truststoretest.KeyUsage(x509.KeyUsageDigitalSignature))
	requireCode(t, pki.CheckCA(ca.Cert, false), pki.CodeNotACA)
}

func TestCheckValidity(t *testing.T) {
	t.Parallel()
	require.NoError(t, pki.CheckValidity(fixtureCert(t, "client.pem"), time.Now()))

	now := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	err := pki.CheckValidity(fixtureCert(t, "expired-client.pem"), now)
	e := requireCode(t, err, pki.CodeExpired)
	require.Equal(t, "certificate 'CN=expired.trustflow.test' expired at 2001-01-01T00:00:00Z (checked at 2030-06-01T12:00:00Z)", e.Message)

	err = pki.CheckValidity(fixtureCert(t, "not-yet-valid-client.pem"), now)
	e = requireCode(t, err, pki.CodeNotYetValid)
	require.Equal(t, "certificate 'CN=future.trustflow.test' is not valid until 2100-01-01T00:00:00Z (checked at 2030-06-01T12:00:00Z)", e.Message)

	ca := truststoretest.NewCA(t, truststoretest.Now(now))
	requireCode(t, pki.CheckValidity(ca.IssueClient(t, "x", truststoretest.Expired()).Cert, now), pki.CodeExpired)
	requireCode(t, pki.CheckValidity(ca.IssueClient(t, "x", truststoretest.NotYetValid()).Cert, now), pki.CodeNotYetValid)
	require.NoError(t, pki.CheckValidity(ca.IssueClient(t, "x").Cert, now))
}

func TestCheckClientAuth(t *testing.T) {
	t.Parallel()
	require.NoError(t, pki.CheckClientAuth(fixtureCert(t, "client.pem")))
	require.NoError(t, pki.CheckClientAuth(fixtureCert(t, "rsa-client.pem"))) // clientAuth and serverAuth
	require.NoError(t, pki.CheckClientAuth(fixtureCert(t, "root-ca.pem")))    // no EKU extension: any usage

	err := pki.CheckClientAuth(fixtureCert(t, "server-only-eku.pem"))
	e := requireCode(t, err, pki.CodeNoClientAuthEKU)
	require.Equal(t, "certificate 'CN=api.trustflow.test' may not be used for TLS client authentication: its extended key usage is serverAuth", e.Message)
	require.Contains(t, e.Hint, "extendedKeyUsage=clientAuth")

	ca := truststoretest.NewCA(t)
	requireCode(t, pki.CheckClientAuth(ca.IssueClient(t, "x", truststoretest.NoClientAuthEKU()).Cert), pki.CodeNoClientAuthEKU)
	require.NoError(t, pki.CheckClientAuth(ca.IssueClient(t, "x", truststoretest.ExtKeyUsage(x509.ExtKeyUsageAny)).Cert))
	require.NoError(t, pki.CheckClientAuth(ca.IssueClient(t, "x", truststoretest.ExtKeyUsage()).Cert))
}

func TestCheckChain(t *testing.T) {
	t.Parallel()
	client := fixtureCert(t, "client.pem")
	require.NoError(t, pki.CheckChain(client, fixtureCerts(t, "ca-chain.pem")))
	require.NoError(t, pki.CheckChain(client, fixtureCerts(t, "intermediate-ca.pem")))
	require.NoError(t, pki.CheckChain(client, nil))

	err := pki.CheckChain(client, fixtureCerts(t, "ca-chain-reversed.pem"))
	e := requireCode(t, err, pki.CodeChainBroken)
	require.Equal(t, "chain certificate #1 is 'CN=Trustflow Test Root CA,O=Trustflow Tests', but 'CN=client.trustflow.test,OU=Payments,O=Trustflow Tests' was issued by 'CN=Trustflow Test Issuing CA,O=Trustflow Tests', which is chain certificate #2: the chain is out of order", e.Message)

	err = pki.CheckChain(client, fixtureCerts(t, "root-ca.pem"))
	e = requireCode(t, err, pki.CodeChainBroken)
	require.Equal(t, "chain certificate #1 is 'CN=Trustflow Test Root CA,O=Trustflow Tests', but 'CN=client.trustflow.test,OU=Payments,O=Trustflow Tests' was issued by 'CN=Trustflow Test Issuing CA,O=Trustflow Tests'", e.Message)

	// Same name, different key: a re-keyed CA.
	a := truststoretest.NewCA(t, truststoretest.CommonName("Same Name CA"))
	b := truststoretest.NewCA(t, truststoretest.CommonName("Same Name CA"))
	leaf := a.IssueClient(t, "x")
	err = pki.CheckChain(leaf.Cert, []*x509.Certificate{b.Cert})
	e = requireCode(t, err, pki.CodeChainBroken)
	require.Equal(t, "chain certificate #1, 'CN=Same Name CA', has the right name but its key did not sign 'CN=x'", e.Message)
}

func TestCheckFIPS(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"client.pem", "rsa-client.pem", "ed25519-client.pem", "root-ca.pem"} {
		require.NoError(t, pki.CheckFIPSCertificate(fixtureCert(t, name)), name)
	}
	tests := []struct {
		fixture string
		message string
	}{
		{"rsa1024-client.pem", "certificate 'CN=rsa1024.trustflow.test': rsa-1024 keys are not allowed under FIPS 140-3: RSA needs at least 2048 bits"},
		{"ecdsa-p224-client.pem", "certificate 'CN=p224.trustflow.test': ecdsa-p224 keys are not allowed under FIPS 140-3: ECDSA needs P-256, P-384 or P-521"},
		{"sha1-signed-client.pem", "certificate 'CN=sha1.trustflow.test' is signed with ECDSA-SHA1, which is not allowed under FIPS 140-3"},
	}
	for _, tt := range tests {
		err := pki.CheckFIPSCertificate(fixtureCert(t, tt.fixture))
		e := requireCode(t, err, pki.CodeFIPSDisallowed)
		require.Equal(t, tt.message, e.Message)
		require.NotEmpty(t, e.Hint)
	}

	k224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	require.NoError(t, err)
	requireCode(t, pki.CheckFIPSKey(k224.Public()), pki.CodeFIPSDisallowed)
	requireCode(t, pki.CheckFIPSKey(nil), pki.CodeFIPSDisallowed)
	for _, kt := range pki.KeyTypes() {
		if strings.HasPrefix(kt, "rsa-4096") {
			continue // slow to generate; rsa-2048 covers RSA
		}
		k, err := pki.GenerateKey(kt)
		require.NoError(t, err)
		require.NoError(t, pki.CheckFIPSKey(k.Public()), kt)
	}

	ca := truststoretest.NewCA(t)
	requireCode(t, pki.CheckFIPSCertificate(ca.IssueClient(t, "weak", truststoretest.RSA1024()).Cert), pki.CodeFIPSDisallowed)
}

func TestInfo(t *testing.T) {
	t.Parallel()
	client := fixtureCert(t, "client.pem")
	summary := strings.Fields(string(fixture(t, "client-openssl-summary.txt")))
	require.Len(t, summary, 3)

	info := pki.Info(client)
	require.Equal(t, summary[0], info.FingerprintSHA256)
	require.Equal(t, summary[0], pki.FingerprintSHA256(client))
	require.Equal(t, summary[1], pki.SPKIPinSHA256(client))
	require.Equal(t, summary[2], info.Serial)
	require.Equal(t, "CN=client.trustflow.test,OU=Payments,O=Trustflow Tests", info.Subject)
	require.Equal(t, "CN=Trustflow Test Issuing CA,O=Trustflow Tests", info.Issuer)
	require.Equal(t, "ecdsa-p256", info.KeyType)
	require.False(t, info.IsCA)
	require.Equal(t, []string{"client.trustflow.test"}, info.DNSNames)
	require.Nil(t, info.IPAddresses)

	server := pki.Info(fixtureCert(t, "server-only-eku.pem"))
	require.Equal(t, []string{"127.0.0.1"}, server.IPAddresses)
	require.True(t, pki.Info(fixtureCert(t, "root-ca.pem")).IsCA)

	raw, err := json.Marshal(pki.Info(fixtureCert(t, "root-ca.pem")))
	require.NoError(t, err)
	var fields map[string]any
	require.NoError(t, json.Unmarshal(raw, &fields))
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	require.ElementsMatch(t, []string{"serial", "subject", "issuer", "fingerprint_sha256", "not_before", "not_after", "key_type", "is_ca"}, keys)

	for _, tt := range []struct{ fixture, keyType string }{
		{"rsa-client.pem", "rsa-2048"},
		{"rsa1024-client.pem", "rsa-1024"},
		{"ed25519-client.pem", "ed25519"},
		{"ecdsa-p224-client.pem", "ecdsa-p224"},
	} {
		require.Equal(t, tt.keyType, pki.KeyType(fixtureCert(t, tt.fixture).PublicKey))
	}
	require.Equal(t, "unknown", pki.KeyType(nil))
}
