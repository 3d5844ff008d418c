package pki_test

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/pki"
)

func TestGenerateKey(t *testing.T) {
	t.Parallel()
	for _, kt := range []string{"", "ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa-2048", "ed25519", "ECDSA-P384"} {
		key, err := pki.GenerateKey(kt)
		require.NoError(t, err, kt)
		want := kt
		switch kt {
		case "":
			want = pki.DefaultKeyType
		case "ECDSA-P384":
			want = "ecdsa-p384"
		}
		require.Equal(t, want, pki.KeyType(key.Public()))
	}
	_, err := pki.GenerateKey("rsa-1024")
	e := requireCode(t, err, pki.CodeInvalidKeyType)
	require.Equal(t, `unknown key type "rsa-1024"`, e.Message)
	require.Equal(t, "use one of: ecdsa-p256, ecdsa-p384, ecdsa-p521, rsa-2048, rsa-3072, rsa-4096, ed25519", e.Hint)
}

func TestParseSubject(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want string // RFC 4514 of the result
	}{
		{"CN=svc", "CN=svc"},
		{"CN=svc,O=Acme,OU=IT,C=US,L=Paris,ST=IDF", "CN=svc,O=Acme,OU=IT,C=US,L=Paris,ST=IDF"},
		{"cn = svc , o = Acme", "CN=svc,O=Acme"},
		{`CN=svc,O=Acme\, Inc.`, `CN=svc,O=Acme\, Inc.`},
		{`CN=a\+b\=c\\d\"e`, `CN=a\+b=c\\d\"e`},
		{`CN=caf\C3\A9`, "CN=café"},
		{"CN=svc,OU=a,OU=b", "CN=svc,OU=a,OU=b"},
		{"O=Acme,CN=svc", "O=Acme,CN=svc"},
		{"/C=US/O=Acme/CN=svc", "CN=svc,O=Acme,C=US"},
		{"CN=svc,DC=example,DC=com", "CN=svc,0.9.2342.19200300.100.1.25=#13076578616d706c65,0.9.2342.19200300.100.1.25=#1303636f6d"},
		{"SERIALNUMBER=42,CN=svc", "SERIALNUMBER=42,CN=svc"},
	}
	for _, tt := range tests {
		name, err := pki.ParseSubject(tt.in)
		require.NoError(t, err, tt.in)
		require.Equal(t, tt.want, roundTripName(t, name), tt.in)
	}

	for in, oid := range map[string]asn1.ObjectIdentifier{
		"CN=svc,emailAddress=ops@example.com": {1, 2, 840, 113549, 1, 9, 1},
		"CN=svc,E=ops@example.com":            {1, 2, 840, 113549, 1, 9, 1},
		"CN=svc,2.5.4.97=ops@example.com":     {2, 5, 4, 97},
	} {
		name, err := pki.ParseSubject(in)
		require.NoError(t, err, in)
		require.Equal(t, "svc", name.CommonName)
		require.Len(t, name.ExtraNames, 2)
		require.True(t, name.ExtraNames[0].Type.Equal(oid), in)
		v := name.ExtraNames[0].Value
		if raw, ok := v.(asn1.RawValue); ok {
			require.Equal(t, asn1.TagIA5String, raw.Tag)
			v = string(raw.Bytes)
		}
		require.Equal(t, "ops@example.com", v)
	}

	// DC is encoded as IA5String.
	dc, err := pki.ParseSubject("CN=svc,DC=example,DC=com")
	require.NoError(t, err)
	der, err := asn1.Marshal(dc.ToRDNSequence())
	require.NoError(t, err)
	require.True(t, bytes.Contains(der, []byte("\x16\x03com")))

	bad := []struct {
		in      string
		message string
	}{
		{"", "the subject is empty"},
		{"svc", `attribute #1 "svc" is not of the form TYPE=value`},
		{"CN=svc,FOO=bar", `unknown attribute type "FOO"`},
		{"CN=svc,C=USA", `attribute C must be a two-letter country code, not "USA"`},
		{"CN=", "attribute CN has an empty value"},
		{"CN=a,CN=b", "attribute CN is given twice"},
		{`CN=a\`, "attribute CN: the value ends with a lone backslash"},
		{`CN=a\q`, `attribute CN: \q is not a valid escape`},
		{"CN=a+O=b", "attribute CN has a multi-valued RDN"},
		{"CN=#0403616263", "attribute CN: hex-encoded (#...) values are not supported; write the value as text"},
		{"CN=svc,emailAddress=not an address", `attribute emailAddress is not a valid e-mail address: "not an address"`},
		{"CN=" + string(make([]byte, 65)), "attribute CN is 65 characters long, over the limit of 64 (RFC 5280)"},
		{"CN=\xff", "the subject is not valid UTF-8"},
	}
	for _, tt := range bad {
		_, err := pki.ParseSubject(tt.in)
		e := requireCode(t, err, pki.CodeInvalidSubject)
		require.Equal(t, tt.message, e.Message, tt.in)
		require.NotEmpty(t, e.Hint)
	}
}

// roundTripName encodes name as a certificate subject would be and returns
// its RFC 4514 form.
func roundTripName(t *testing.T, name pkix.Name) string {
	t.Helper()
	der, err := asn1.Marshal(name.ToRDNSequence())
	require.NoError(t, err)
	var seq pkix.RDNSequence
	_, err = asn1.Unmarshal(der, &seq)
	require.NoError(t, err)
	return seq.String()
}

func TestCreateCSR(t *testing.T) {
	t.Parallel()
	key, err := pki.GenerateKey("")
	require.NoError(t, err)
	subject, err := pki.ParseSubject("CN=payments-client,O=Acme")
	require.NoError(t, err)
	pemCSR, err := pki.CreateCSR(key, subject, []string{"payments.internal", "*.payments.internal", "10.0.0.7", "ops@acme.example", "spiffe://acme.example/payments"})
	require.NoError(t, err)

	csr, err := pki.ParseCSR(pemCSR)
	require.NoError(t, err)
	require.Equal(t, "CN=payments-client,O=Acme", csr.Subject.String())
	require.Equal(t, []string{"payments.internal", "*.payments.internal"}, csr.DNSNames)
	require.Equal(t, "10.0.0.7", csr.IPAddresses[0].String())
	require.Equal(t, []string{"ops@acme.example"}, csr.EmailAddresses)
	require.Equal(t, "spiffe://acme.example/payments", csr.URIs[0].String())
	require.Equal(t, x509.ECDSAWithSHA256, csr.SignatureAlgorithm)
	require.True(t, csr.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()))

	for _, kt := range []string{"rsa-2048", "ed25519"} {
		k, err := pki.GenerateKey(kt)
		require.NoError(t, err)
		out, err := pki.CreateCSR(k, subject, nil)
		require.NoError(t, err)
		_, err = pki.ParseCSR(out)
		require.NoError(t, err)
	}

	_, err = pki.CreateCSR(key, subject, []string{"bad host name"})
	e := requireCode(t, err, pki.CodeInvalidOption)
	require.Equal(t, `subjectAltName "bad host name" is not a valid DNS name`, e.Message)
	_, err = pki.CreateCSR(key, pkix.Name{}, nil)
	requireCode(t, err, pki.CodeInvalidSubject)
	_, err = pki.CreateCSR(nil, subject, nil)
	requireCode(t, err, pki.CodeInvalidOption)
}

func TestEncodePEM(t *testing.T) {
	t.Parallel()
	certs := fixtureCerts(t, "client-chain.pem")
	back, err := pki.ParseCertificates(pki.EncodeCertificatesPEM(certs...))
	require.NoError(t, err)
	require.Len(t, back, 2)
	require.True(t, back[1].Equal(certs[1]))

	for _, kt := range []string{"ecdsa-p256", "rsa-2048", "ed25519"} {
		key, err := pki.GenerateKey(kt)
		require.NoError(t, err)
		out, err := pki.EncodePrivateKeyPEM(key)
		require.NoError(t, err)
		require.Contains(t, string(out), "-----BEGIN PRIVATE KEY-----")
		parsed, err := pki.ParsePrivateKey(out, nil)
		require.NoError(t, err)
		require.Equal(t, kt, pki.KeyType(parsed.Public()))
	}
}
