package pki_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/pki"
)

func TestParsePrivateKey(t *testing.T) {
	t.Parallel()
	client := fixtureCert(t, "client.pem")
	rsaClient := fixtureCert(t, "rsa-client.pem")
	edClient := fixtureCert(t, "ed25519-client.pem")
	tests := []struct {
		fixture  string
		password string
		cert     string
		keyType  string
	}{
		{"client-key-pkcs8.pem", "", "client", "ecdsa-p256"},
		{"client-key-pkcs8.der", "", "client", "ecdsa-p256"},
		{"client-key-sec1.pem", "", "client", "ecdsa-p256"},
		{"client-key-sec1.der", "", "client", "ecdsa-p256"},
		{"client-key-sec1-with-params.pem", "", "client", "ecdsa-p256"},
		{"client-key-pkcs8-aes256.pem", keyPass, "client", "ecdsa-p256"},
		{"client-key-pkcs8-aes256.der", keyPass, "client", "ecdsa-p256"},
		{"client-key-pkcs8-aes128-sha1.pem", keyPass, "client", "ecdsa-p256"},
		{"client-key-pkcs8-des3.pem", keyPass, "client", "ecdsa-p256"},
		{"client-key-pkcs8.pem", "ignored-for-plain-keys", "client", "ecdsa-p256"},
		{"rsa-client-key-pkcs1.pem", "", "rsa", "rsa-2048"},
		{"rsa-client-key-pkcs1.der", "", "rsa", "rsa-2048"},
		{"ed25519-client-key.pem", "", "ed25519", "ed25519"},
		{"key-does-not-match-cert.pem", "", "rsa", "rsa-2048"}, // the certificate block is ignored
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			t.Parallel()
			key, err := pki.ParsePrivateKey(fixture(t, tt.fixture), []byte(tt.password))
			require.NoError(t, err)
			require.Equal(t, tt.keyType, pki.KeyType(key.Public()))
			switch tt.cert {
			case "client":
				require.NoError(t, pki.KeyMatchesCertificate(key, client))
			case "rsa":
				require.NoError(t, pki.KeyMatchesCertificate(key, rsaClient))
			case "ed25519":
				require.NoError(t, pki.KeyMatchesCertificate(key, edClient))
			}
		})
	}
}

func TestParsePrivateKeyErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		fixture  string
		password string
		code     string
	}{
		{"client-key-pkcs8-aes256.pem", "", pki.CodePasswordRequired},
		{"client-key-pkcs8-aes256.pem", "wrong password", pki.CodeWrongPassword},
		{"client-key-pkcs8-aes256.der", "wrong password", pki.CodeWrongPassword},
		{"client-key-pkcs8-des3.pem", "wrong password", pki.CodeWrongPassword},
		{"client-key-pkcs8-aes128-sha1.pem", "wrong password", pki.CodeWrongPassword},
		{"client-key-pkcs8-pbes1.pem", keyPass, pki.CodeUnsupportedFormat},
		{"client-key-pkcs8-scrypt.pem", keyPass, pki.CodeUnsupportedFormat},
		{"client-key-pkcs8-too-many-iterations.pem", keyPass, pki.CodeTooLarge},
		{"client-key-legacy-encrypted.pem", keyPass, pki.CodeUnsupportedFormat},
		{"x25519-key.pem", "", pki.CodeUnsupportedFormat},
		{"dsa-key-pkcs8.pem", "", pki.CodeUnsupportedFormat}, // named as DSA, not as a bad PKCS#8 key
		{"dsa-key-traditional.pem", "", pki.CodeUnsupportedFormat},
		{"openssh-key.pem", "", pki.CodeUnsupportedFormat},
		{"client.pem", "", pki.CodeNoPrivateKey},
		{"root-ca.der", "", pki.CodeNoPrivateKey},
		{"client-modern.p12", p12Pass, pki.CodeUnsupportedFormat},
		{"garbage.pem", "", pki.CodeMalformedPEM},
		{"garbage.txt", "", pki.CodeMalformedPEM},
		{"truncated.der", "", pki.CodeMalformedKey},
	}
	for _, tt := range tests {
		t.Run(tt.fixture+"/"+tt.password, func(t *testing.T) {
			t.Parallel()
			_, err := pki.ParsePrivateKey(fixture(t, tt.fixture), []byte(tt.password))
			e := requireCode(t, err, tt.code)
			require.NotEmpty(t, e.Hint)
		})
	}
}

func TestParsePrivateKeyMultipleKeys(t *testing.T) {
	t.Parallel()
	data := append(fixture(t, "client-key-pkcs8.pem"), fixture(t, "rsa-client-key-pkcs1.pem")...)
	_, err := pki.ParsePrivateKey(data, nil)
	e := requireCode(t, err, pki.CodeMultipleKeys)
	require.Equal(t, "the PEM data holds more than one private key (PRIVATE KEY and RSA PRIVATE KEY)", e.Message)
}

func TestParsePrivateKeyMessages(t *testing.T) {
	t.Parallel()
	_, err := pki.ParsePrivateKey(fixture(t, "client-key-legacy-encrypted.pem"), []byte(keyPass))
	e := requireCode(t, err, pki.CodeUnsupportedFormat)
	require.Contains(t, e.Message, "legacy PEM encryption")
	require.Contains(t, e.Hint, "openssl pkcs8 -topk8 -v2 aes-256-cbc")

	_, err = pki.ParsePrivateKey(fixture(t, "client-key-pkcs8-too-many-iterations.pem"), []byte(keyPass))
	e = requireCode(t, err, pki.CodeTooLarge)
	require.Equal(t, "the encrypted private key asks for 3000000 key-derivation iterations, over the limit of 1000000", e.Message)
}

func TestKeyMatchesCertificate(t *testing.T) {
	t.Parallel()
	data := fixture(t, "key-does-not-match-cert.pem")
	certs, err := pki.ParseCertificates(data)
	require.NoError(t, err)
	key, err := pki.ParsePrivateKey(data, nil)
	require.NoError(t, err)

	err = pki.KeyMatchesCertificate(key, certs[0])
	e := requireCode(t, err, pki.CodeKeyMismatch)
	require.Equal(t, "the private key (rsa-2048) does not match the public key of certificate 'CN=client.trustflow.test,OU=Payments,O=Trustflow Tests' (ecdsa-p256)", e.Message)
	require.Contains(t, e.Hint, "openssl pkey -in key.pem -pubout")

	requireCode(t, pki.KeyMatchesCertificate(nil, certs[0]), pki.CodeKeyMismatch)
}
