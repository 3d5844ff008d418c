package pki_test

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"github.com/trustflow/trustflow/internal/errs"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/pki"
)

// Passwords of the fixtures made by testdata/gen.sh.
const (
	keyPass = "trustflow-key-pass"
	p12Pass = "trustflow-p12-pass"
)

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	require.NoError(t, err)
	return data
}

func fixtureCert(t testing.TB, name string) *x509.Certificate {
	t.Helper()
	certs, err := pki.ParseCertificates(fixture(t, name))
	require.NoError(t, err)
	require.Len(t, certs, 1, name)
	return certs[0]
}

func fixtureCerts(t testing.TB, name string) []*x509.Certificate {
	t.Helper()
	certs, err := pki.ParseCertificates(fixture(t, name))
	require.NoError(t, err)
	return certs
}

// requireCode asserts that err is a *errs.Error with code, and returns it.
func requireCode(t testing.TB, err error, code string) *errs.Error {
	t.Helper()
	require.Error(t, err)
	var e *errs.Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, code, e.Code, "error: %v", err)
	require.NotEmpty(t, e.Message)
	require.Regexp(t, `^pki: [a-z'A-Z0-9#]`, e.Error())
	return e
}

func subjects(certs []*x509.Certificate) []string {
	out := make([]string, len(certs))
	for i, c := range certs {
		out[i] = c.Subject.CommonName
	}
	return out
}
