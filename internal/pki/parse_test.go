package pki_test

import (
	"bytes"
	"encoding/pem"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/pki"
)

func TestParseCertificates(t *testing.T) {
	t.Parallel()
	const (
		client = "client.trustflow.test"
		inter  = "Trustflow Test Issuing CA"
		root   = "Trustflow Test Root CA"
	)
	tests := []struct {
		fixture string
		want    []string // subjects' common names
	}{
		{"client.pem", []string{client}},
		{"client-chain.pem", []string{client, inter}},
		{"ca-chain.pem", []string{inter, root}},
		{"root-ca.der", []string{root}},
		{"bundle-with-text.pem", []string{client, inter}},
		{"trusted-certificate.pem", []string{root}},
		{"chain.p7b", []string{client, inter, root}},
		{"chain.p7b.pem", []string{client, inter, root}},
		{"chain-p7-in-certificate-block.pem", []string{client, inter, root}},
		{"signed-ber.p7m", []string{inter, client}},       // CMS keeps certificates in a SET
		{"key-does-not-match-cert.pem", []string{client}}, // the key block is ignored
		{"ed25519-client.pem", []string{"ed25519.trustflow.test"}},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			t.Parallel()
			certs, err := pki.ParseCertificates(fixture(t, tt.fixture))
			require.NoError(t, err)
			require.Equal(t, tt.want, subjects(certs))
		})
	}
}

func TestParseCertificatesErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		data []byte
		code string
	}{
		{"garbage.pem", fixture(t, "garbage.pem"), pki.CodeMalformedPEM},
		{"garbage.txt", fixture(t, "garbage.txt"), pki.CodeMalformedPEM},
		{"truncated.pem", fixture(t, "truncated.pem"), pki.CodeMalformedPEM},
		{"truncated.der", fixture(t, "truncated.der"), pki.CodeMalformedCertificate},
		{"base64 without armour", fixture(t, "client-base64-no-armour.txt"), pki.CodeMalformedPEM},
		{"private key only", fixture(t, "client-key-pkcs8.pem"), pki.CodeNoCertificates},
		{"DER private key", fixture(t, "client-key-pkcs8.der"), pki.CodeNoCertificates},
		{"CSR", fixture(t, "client.csr"), pki.CodeNoCertificates},
		{"PKCS#12", fixture(t, "client-modern.p12"), pki.CodeNoCertificates},
		{"empty", nil, pki.CodeMalformedPEM},
		{"whitespace", []byte(" \n\t"), pki.CodeMalformedPEM},
		{"too large", bytes.Repeat([]byte("a"), pki.MaxInputSize+1), pki.CodeTooLarge},
		{"bad certificate block", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x03, 0x02, 0x01, 0x01}}), pki.CodeMalformedCertificate},
		{"bad PKCS7 block", pem.EncodeToMemory(&pem.Block{Type: "PKCS7", Bytes: []byte{0x30, 0x03, 0x02, 0x01, 0x01}}), pki.CodeMalformedPKCS7},
		{"deeply nested PKCS7", append([]byte{0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02}, bytes.Repeat([]byte{0x30, 0x80}, 100000)...), pki.CodeMalformedPKCS7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := pki.ParseCertificates(tt.data)
			e := requireCode(t, err, tt.code)
			require.NotEmpty(t, e.Hint)
		})
	}
}

func TestParseCertificatesMessages(t *testing.T) {
	t.Parallel()
	_, err := pki.ParseCertificates(append(fixture(t, "client.pem"), fixture(t, "truncated.pem")...))
	e := requireCode(t, err, pki.CodeMalformedPEM)
	require.Equal(t, "PEM block #2 (CERTIFICATE) is damaged: bad base64 or a missing end line", e.Message)

	_, err = pki.ParseCertificates(fixture(t, "client-key-pkcs8.pem"))
	e = requireCode(t, err, pki.CodeNoCertificates)
	require.Equal(t, "no certificate found: the PEM data holds only PRIVATE KEY blocks", e.Message)
	require.Contains(t, e.Hint, "private key")

	_, err = pki.ParseCertificates(fixture(t, "client-base64-no-armour.txt"))
	e = requireCode(t, err, pki.CodeMalformedPEM)
	require.Contains(t, e.Hint, "without PEM armour")
}

func TestParseCSR(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"client.csr", "client.csr.der"} {
		csr, err := pki.ParseCSR(fixture(t, name))
		require.NoError(t, err, name)
		require.Equal(t, "client.trustflow.test", csr.Subject.CommonName)
		require.Equal(t, []string{"client.trustflow.test"}, csr.DNSNames)
	}

	tests := []struct {
		fixture string
		code    string
	}{
		{"csr-bad-signature.pem", pki.CodeBadSignature},
		{"client.pem", pki.CodeMalformedCSR},
		{"root-ca.der", pki.CodeMalformedCSR},
		{"garbage.pem", pki.CodeMalformedPEM},
		{"truncated.der", pki.CodeMalformedCSR},
	}
	for _, tt := range tests {
		_, err := pki.ParseCSR(fixture(t, tt.fixture))
		requireCode(t, err, tt.code)
	}
}

func TestParseCRLs(t *testing.T) {
	t.Parallel()
	crls, err := pki.ParseCRLs(fixture(t, "intermediate-ca.crl.pem"))
	require.NoError(t, err)
	require.Len(t, crls, 1)
	require.Equal(t, "CN=Trustflow Test Issuing CA,O=Trustflow Tests", crls[0].Issuer.String())

	block, _ := pem.Decode(fixture(t, "intermediate-ca.crl.pem"))
	crls, err = pki.ParseCRLs(block.Bytes)
	require.NoError(t, err)
	require.Len(t, crls, 1)

	_, err = pki.ParseCRLs(fixture(t, "client.pem"))
	requireCode(t, err, pki.CodeMalformedCRL)
	_, err = pki.ParseCRLs(fixture(t, "truncated.der"))
	requireCode(t, err, pki.CodeMalformedCRL)
}
