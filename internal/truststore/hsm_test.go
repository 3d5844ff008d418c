package truststore_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/hsm"
	"github.com/trustflow/trustflow/internal/hsm/hsmtest"
	"github.com/trustflow/trustflow/internal/pki"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
	"github.com/trustflow/trustflow/internal/truststore"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

func TestMain(m *testing.M) {
	code := hsmtest.Main(m)
	if opensslSrv != nil {
		opensslSrv.Close()
	}
	os.Exit(code)
}

// One openssl s_server per package, trusting serverCA's clients.
var (
	opensslOnce sync.Once
	serverCA    *truststoretest.CA
	opensslSrv  *hsmtest.OpenSSLServer
	opensslErr  error
)

// openssl returns the server; clientCA is the CA it trusts for clients.
func openssl(t *testing.T) (srv *hsmtest.OpenSSLServer, clientCA *truststoretest.CA) {
	t.Helper()
	opensslOnce.Do(func() {
		serverCA = truststoretest.NewCA(t)
		leaf := serverCA.IssueServer(t)
		opensslSrv, opensslErr = hsmtest.StartOpenSSL(leaf.CertPEM(), leaf.KeyPEM(), serverCA.CertPEM())
	})
	require.NoError(t, opensslErr)
	return opensslSrv, serverCA
}

// handshake makes one HTTPS GET presenting identity name through
// Service.Active, as connectors do, and returns the status or the error.
func handshake(t *testing.T, svc *truststore.Service, name, url string, roots *x509.CertPool) (int, error) {
	t.Helper()
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			ac, err := svc.Active(context.Background(), name)
			if err != nil {
				return nil, err
			}
			return ac.Certificate, nil
		}}
	tr := &http.Transport{TLSClientConfig: cfg}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 20 * time.Second}).Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}

func TestHSMIdentity(t *testing.T) {
	hsmtest.Require(t)
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		tokens := hsm.NewTokens()
		defer tokens.Close()
		tok := hsmtest.NewToken(t, "ts")
		keyStore := tok.WithObject("tf-payments").KeyRef()
		srv, ca := openssl(t)
		// Certificates from ca are valid now (the openssl server runs on
		// the wall clock); the trust store's clock is set to match.
		e := newEnv(t, st, func(c *truststore.Config) { c.HSM = tokens })
		e.clock.Set(time.Now())

		for _, kt := range hsm.KeyTypes() {
			name := "hsm-" + kt
			ident, csrPEM, err := e.svc.Create(ctx, alice, truststore.CreateRequest{Name: name,
				GenerateSpec: truststore.GenerateSpec{Subject: "CN=" + name, KeyType: kt, KeyStore: strings.Replace(keyStore, "tf-payments", "tf-"+kt, 1)}})
			require.NoError(t, err)
			v := ident.Versions[0]
			require.Equal(t, truststore.KeyStorePKCS11, v.KeyStore)
			require.Equal(t, tok.Token, v.KeyRef.Token)
			require.Equal(t, "tf-"+kt, v.KeyRef.Label)
			require.Len(t, v.KeyRef.ID, 32)
			require.NotContains(t, v.KeyRef.URI, "pin-value")
			require.Equal(t, kt, v.KeyType)
			// Nothing sealed: the key is in the token.
			require.Empty(t, sealedKey(t, st, identityID(t, st, name), 1))

			cert := signCSRNow(t, ca, csrPEM)
			ident, err = e.svc.InstallCertificate(ctx, alice, truststore.InstallRequest{Name: name, Cert: cert})
			require.NoError(t, err)
			require.Equal(t, truststore.StatusActive, ident.Status)

			ac, err := e.svc.Active(ctx, name)
			require.NoError(t, err)
			_, isToken := ac.Certificate.PrivateKey.(*hsm.Signer)
			require.True(t, isToken, "the handshake key is the token's signer, not a copy")

			goSrv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
			srvLeaf := ca.IssueServer(t)
			goSrv.TLS = &tls.Config{Certificates: []tls.Certificate{srvLeaf.TLSCertificate()}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool()}
			goSrv.StartTLS()
			code, err := handshake(t, e.svc, name, goSrv.URL, ca.Pool())
			goSrv.Close()
			require.NoError(t, err, kt)
			require.Equal(t, http.StatusOK, code)

			code, err = handshake(t, e.svc, name, "https://"+srv.Addr+"/", ca.Pool())
			require.NoError(t, err, kt)
			require.Equal(t, http.StatusOK, code)
		}

		// Rotation generates the next version's key in the same token.
		res, err := e.svc.Rotate(ctx, alice, truststore.RotateRequest{Name: "hsm-ecdsa-p256", Generate: &truststore.GenerateSpec{Subject: "CN=hsm-ecdsa-p256"}})
		require.NoError(t, err)
		v2 := res.Identity.Versions[1]
		require.Equal(t, truststore.KeyStorePKCS11, v2.KeyStore)
		require.Equal(t, "tf-ecdsa-p256-v2", v2.KeyRef.Label)
		_, err = e.svc.InstallCertificate(ctx, alice, truststore.InstallRequest{Name: "hsm-ecdsa-p256", Cert: signCSRNow(t, ca, res.CSR)})
		require.NoError(t, err)
		code, err := handshake(t, e.svc, "hsm-ecdsa-p256", "https://"+srv.Addr+"/", ca.Pool())
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, code)
		ac, err := e.svc.Active(ctx, "hsm-ecdsa-p256")
		require.NoError(t, err)
		require.Equal(t, 2, ac.Info.Version)

		// A certificate for a key already in the token is imported by
		// reference; one for another key is refused like a mismatch.
		signer, err := tokens.GenerateSigner(ctx, tok.WithObject("made-elsewhere"), "ecdsa-p256")
		require.NoError(t, err)
		leafPEM := certFor(t, ca, signer)
		imported, err := e.svc.Import(ctx, alice, truststore.ImportRequest{Name: "byref",
			Material: truststore.Material{Cert: leafPEM, KeyRef: tok.WithObject("made-elsewhere").KeyRef()}})
		require.NoError(t, err)
		require.Equal(t, truststore.KeyStorePKCS11, imported.Versions[0].KeyStore)
		code, err = handshake(t, e.svc, "byref", "https://"+srv.Addr+"/", ca.Pool())
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, code)

		_, err = e.svc.Import(ctx, alice, truststore.ImportRequest{Name: "mismatch",
			Material: truststore.Material{Cert: leafPEM, KeyRef: tok.WithObject("tf-ecdsa-p384").KeyRef()}})
		requireInputError(t, err, "key_mismatch", "key")
		_, err = e.svc.Import(ctx, alice, truststore.ImportRequest{Name: "nokey",
			Material: truststore.Material{Cert: leafPEM, KeyRef: tok.WithObject("absent").KeyRef()}})
		requireInputError(t, err, hsm.CodeKeyNotFound, "key_ref")
		_, _, err = e.svc.Create(ctx, alice, truststore.CreateRequest{Name: "pinvalue",
			GenerateSpec: truststore.GenerateSpec{Subject: "CN=x", KeyStore: "pkcs11:token=" + tok.Token + "?module-path=" + tok.ModulePath + "&pin-value=1234"}})
		requireInputError(t, err, "pin_value_not_stored", "key_store")
		_, _, err = e.svc.Create(ctx, alice, truststore.CreateRequest{Name: "hsm-ecdsa-p384-again",
			GenerateSpec: truststore.GenerateSpec{Subject: "CN=x", KeyStore: tok.WithObject("tf-ecdsa-p384").KeyRef()}})
		var he *errs.Error
		require.ErrorAs(t, err, &he)
		require.Equal(t, hsm.CodeKeyExists, he.Code)
	})
}

// TestHSMIdentityFailsClosed: a node whose token refuses its PIN presents
// no certificate, and the handshake fails with the token's diagnosis.
func TestHSMIdentityFailsClosed(t *testing.T) {
	hsmtest.Require(t)
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		tok := hsmtest.NewToken(t, "closed")
		srv, ca := openssl(t)
		first := hsm.NewTokens()
		e := newEnv(t, st, func(c *truststore.Config) { c.HSM = first })
		e.clock.Set(time.Now())
		_, csrPEM, err := e.svc.Create(ctx, alice, truststore.CreateRequest{Name: "locked-out",
			GenerateSpec: truststore.GenerateSpec{Subject: "CN=locked-out", KeyStore: tok.WithObject("tf-locked").KeyRef()}})
		require.NoError(t, err)
		_, err = e.svc.InstallCertificate(ctx, alice, truststore.InstallRequest{Name: "locked-out", Cert: signCSRNow(t, ca, csrPEM)})
		require.NoError(t, err)
		// Logging out (closing every session) and changing the PIN file
		// is a restarted node with a wrong PIN.
		require.NoError(t, first.Close())
		pinFile := strings.TrimPrefix(tok.PinSource, "file:")
		require.NoError(t, os.WriteFile(pinFile, []byte("0000\n"), 0o600))

		second := hsm.NewTokens()
		defer second.Close()
		svc := e.service(t, e.svc.Keyring(), func(c *truststore.Config) { c.HSM = second })
		_, err = svc.Active(ctx, "locked-out")
		var he *errs.Error
		require.ErrorAs(t, err, &he, "error: %v", err)
		require.Equal(t, hsm.CodePINIncorrect, he.Code)
		require.Contains(t, he.Message, fmt.Sprintf("PKCS#11 token %q: ", tok.Token))
		require.Contains(t, he.Hint, pinFile, "the hint says where the PIN is read from")
		var tke *truststore.TokenKeyError
		require.ErrorAs(t, err, &tke)
		lastAudit(t, e.audit, "identity.key_unavailable")

		_, err = handshake(t, svc, "locked-out", "https://"+srv.Addr+"/", ca.Pool())
		require.Error(t, err)
		require.True(t, errors.As(err, &he), "the handshake fails with the token's diagnosis: %v", err)

		// Fixing the PIN file is enough: failed logins are not cached.
		require.NoError(t, os.WriteFile(pinFile, []byte(hsmtest.PIN+"\n"), 0o600))
		code, err := handshake(t, svc, "locked-out", "https://"+srv.Addr+"/", ca.Pool())
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, code)
	})
}

// signCSRNow issues a client certificate for a CSR from ca, valid on the
// wall clock (the openssl server checks it against the real time).
func signCSRNow(t *testing.T, ca *truststoretest.CA, csrPEM string) []byte {
	t.Helper()
	csr, err := pki.ParseCSR([]byte(csrPEM))
	require.NoError(t, err)
	return issue(t, ca, csr.Subject.CommonName, csr.PublicKey)
}

// certFor issues a client certificate for key's public half.
func certFor(t *testing.T, ca *truststoretest.CA, key crypto.Signer) []byte {
	t.Helper()
	return issue(t, ca, "made-elsewhere", key.Public())
}

func issue(t *testing.T, ca *truststoretest.CA, cn string, pub crypto.PublicKey) []byte {
	t.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: serial.Add(serial, big.NewInt(1)), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return pki.EncodeCertificatesPEM(cert)
}
