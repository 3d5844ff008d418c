package truststoretest_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/trustflow/trustflow/internal/errs"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/pki"
	tt "github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

func requireCode(t *testing.T, err error, code string) {
	t.Helper()
	var e *errs.Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, code, e.Code, "error: %v", err)
}

func TestCA(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	root := tt.NewCA(t, tt.Now(now))
	require.NoError(t, pki.CheckCA(root.Cert, false))
	require.Equal(t, "ecdsa-p256", pki.KeyType(root.Cert.PublicKey))
	require.Equal(t, now.Add(-time.Hour), root.Cert.NotBefore)
	require.Same(t, root, root.Root())
	require.Empty(t, root.Chain)

	inter := root.Intermediate(t)
	require.NoError(t, pki.CheckCA(inter.Cert, false))
	require.Empty(t, inter.Chain)
	require.Same(t, root, inter.Root())
	sub := inter.Intermediate(t)
	require.Equal(t, []*x509.Certificate{inter.Cert}, sub.Chain)

	leaf := sub.IssueServer(t, "api.example", "127.0.0.1")
	require.Equal(t, []*x509.Certificate{sub.Cert, inter.Cert}, leaf.Chain)
	require.Equal(t, []string{"api.example"}, leaf.Cert.DNSNames)
	require.Equal(t, "127.0.0.1", leaf.Cert.IPAddresses[0].String())
	require.NoError(t, pki.CheckChain(leaf.Cert, append(leaf.Chain, root.Cert)))
	_, err := pki.Verify(leaf.Cert, pki.VerifyOptions{
		Roots: []*x509.Certificate{root.Cert}, Intermediates: leaf.Chain, DNSName: "api.example", Time: now,
	})
	require.NoError(t, err)

	// PEM round trips through pki.
	certs, err := pki.ParseCertificates(leaf.ChainPEM())
	require.NoError(t, err)
	require.Len(t, certs, 3)
	key, err := pki.ParsePrivateKey(leaf.KeyPEM(), nil)
	require.NoError(t, err)
	require.NoError(t, pki.KeyMatchesCertificate(key, leaf.Cert))
	certs, err = pki.ParseCertificates(root.CertPEM())
	require.NoError(t, err)
	require.True(t, certs[0].Equal(root.Cert))
	caKey, err := pki.ParsePrivateKey(root.KeyPEM(), nil)
	require.NoError(t, err)
	require.NoError(t, pki.KeyMatchesCertificate(caKey, root.Cert))
	_, err = leaf.Cert.Verify(x509.VerifyOptions{Roots: root.Pool(), Intermediates: pool(leaf.Chain), CurrentTime: now})
	require.NoError(t, err)
}

func pool(certs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func TestBadCertificates(t *testing.T) {
	t.Parallel()
	now := time.Now()
	ca := tt.NewCA(t)

	requireCode(t, pki.CheckValidity(ca.IssueClient(t, "old", tt.Expired()).Cert, now), pki.CodeExpired)
	requireCode(t, pki.CheckValidity(ca.IssueClient(t, "new", tt.NotYetValid()).Cert, now), pki.CodeNotYetValid)
	requireCode(t, pki.CheckClientAuth(ca.IssueClient(t, "srv", tt.NoClientAuthEKU()).Cert), pki.CodeNoClientAuthEKU)
	requireCode(t, pki.CheckCA(ca.Intermediate(t, tt.NotACA()).Cert, false), pki.CodeNotACA)
	requireCode(t, pki.CheckCA(tt.NewCA(t, tt.NoBasicConstraints()).Cert, false), pki.CodeNotACA)
	requireCode(t, pki.CheckFIPSCertificate(ca.IssueClient(t, "weak", tt.RSA1024()).Cert), pki.CodeFIPSDisallowed)
	requireCode(t, pki.CheckValidity(tt.NewCA(t, tt.Expired()).Cert, now), pki.CodeExpired)

	c := ca.IssueClient(t, "serial", tt.Serial(big.NewInt(4242)))
	require.Equal(t, "1092", pki.Info(c.Cert).Serial)
	for _, kt := range []string{"ecdsa-p384", "rsa-2048", "ed25519"} {
		require.Equal(t, kt, pki.KeyType(ca.IssueClient(t, kt, tt.KeyType(kt)).Cert.PublicKey))
	}
	nb, na := now.Add(-time.Minute).Truncate(time.Second), now.Add(time.Minute).Truncate(time.Second)
	v := ca.IssueClient(t, "short", tt.Validity(nb, na))
	require.True(t, v.Cert.NotBefore.Equal(nb))
	require.True(t, v.Cert.NotAfter.Equal(na))
	require.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, ca.IssueClient(t, "cli").Cert.ExtKeyUsage)
}

func TestCRL(t *testing.T) {
	t.Parallel()
	ca := tt.NewCA(t)
	good, bad := ca.IssueServer(t), ca.IssueServer(t)
	crl := ca.CRL(t, bad.Cert)
	require.NoError(t, crl.CheckSignatureFrom(ca.Cert))
	opts := pki.VerifyOptions{Roots: []*x509.Certificate{ca.Cert}, DNSName: "localhost", CRLs: []*x509.RevocationList{crl}}
	_, err := pki.Verify(good.Cert, opts)
	require.NoError(t, err)
	_, err = pki.Verify(bad.Cert, opts)
	requireCode(t, err, pki.CodeRevoked)
}

// TestMutualTLS runs a real mutual TLS handshake on loopback with the kit's
// certificates, as connector and API tests do.
func TestMutualTLS(t *testing.T) {
	t.Parallel()
	serverCA := tt.NewCA(t)
	clientCA := tt.NewCA(t, tt.CommonName("client CA"))
	server := serverCA.Intermediate(t).IssueServer(t, "127.0.0.1")
	client := clientCA.IssueClient(t, "payments")
	expired := clientCA.IssueClient(t, "old", tt.Expired())

	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.TLS.PeerCertificates[0].Subject.CommonName)
	}))
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{server.TLSCertificate()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clientCA.Pool(),
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	get := func(leaf *tt.Leaf) (string, error) {
		tr := &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: serverCA.Pool(),
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				c := leaf.TLSCertificate()
				return &c, nil
			},
		}}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Get(srv.URL)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return string(body), err
	}
	name, err := get(client)
	require.NoError(t, err)
	require.Equal(t, "payments", name)

	_, err = get(expired)
	require.ErrorContains(t, err, "expired certificate")
}
