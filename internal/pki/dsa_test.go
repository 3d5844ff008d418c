package pki_test

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/pki"
)

// TestDSAKeysAreNamed: a DSA key, in any of its forms, is refused as DSA,
// not as a PKCS#8 key that does not parse.
func TestDSAKeysAreNamed(t *testing.T) {
	t.Parallel()
	der, err := asn1.Marshal(struct {
		Version int
		Algo    pkix.AlgorithmIdentifier
		Key     []byte
	}{0, pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 10040, 4, 1}, Parameters: asn1.NullRawValue}, []byte{2, 1, 7}})
	require.NoError(t, err)
	fixture, err := os.ReadFile("testdata/dsa-key-pkcs8.pem")
	require.NoError(t, err)
	for name, data := range map[string][]byte{
		"openssl genpkey dsa": fixture,
		"pkcs8 pem":           pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		"pkcs8 der":           der,
		"openssl pem":         pem.EncodeToMemory(&pem.Block{Type: "DSA PRIVATE KEY", Bytes: []byte{0x30, 0}}),
	} {
		_, err := pki.ParsePrivateKey(data, nil)
		e, ok := errs.As(err)
		require.True(t, ok, name)
		require.Equal(t, pki.CodeUnsupportedFormat, e.Code, name)
		require.Equal(t, "DSA keys are not supported", e.Message, name)
		require.Equal(t, "use ECDSA P-256/P-384 or RSA ≥ 2048", e.Hint, name)
	}
}
