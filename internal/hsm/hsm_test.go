package hsm_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/hsm"
	"github.com/trustflow/trustflow/internal/hsm/hsmtest"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

func TestMain(m *testing.M) {
	code := hsmtest.Main(m)
	if opensslSrv != nil {
		opensslSrv.Close()
	}
	os.Exit(code)
}

// Every test shares one Tokens, as a trustflow process does.
var (
	tokensOnce sync.Once
	tokens     *hsm.Tokens
)

func sharedTokens(t testing.TB) *hsm.Tokens {
	t.Helper()
	hsmtest.Require(t)
	tokensOnce.Do(func() { tokens = hsm.NewTokens() })
	return tokens
}

// The test CA and the openssl server that trusts it are made once per
// package.
var (
	caOnce     sync.Once
	testCA     *truststoretest.CA
	opensslSrv *hsmtest.OpenSSLServer
	opensslErr error
)

func ca(t testing.TB) *truststoretest.CA {
	t.Helper()
	caOnce.Do(func() {
		testCA = truststoretest.NewCA(t)
		srv := testCA.IssueServer(t)
		opensslSrv, opensslErr = hsmtest.StartOpenSSL(srv.CertPEM(), srv.KeyPEM(), testCA.CertPEM())
	})
	return testCA
}

func openssl(t testing.TB) *hsmtest.OpenSSLServer {
	t.Helper()
	ca(t)
	if opensslErr != nil {
		t.Fatalf("openssl s_server: %v", opensslErr)
	}
	return opensslSrv
}

// clientCert issues a client certificate for key from the test CA and
// returns it as a tls.Certificate whose key is key.
func clientCert(t testing.TB, key crypto.Signer) tls.Certificate {
	t.Helper()
	c := ca(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "trustflow-hsm-client"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.Cert, key.Public(), c.Key)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func requireCode(t testing.TB, err error, code string) *errs.Error {
	t.Helper()
	var e *errs.Error
	require.ErrorAs(t, err, &e, "error: %v", err)
	require.Equal(t, code, e.Code, "error: %v", err)
	require.NotEmpty(t, e.Hint)
	require.NotContains(t, err.Error(), hsmtest.PIN)
	return e
}

func TestGenerateSignVerify(t *testing.T) {
	ts := sharedTokens(t)
	u := hsmtest.NewToken(t, "gen")
	for _, kt := range hsm.KeyTypes() {
		t.Run(kt, func(t *testing.T) {
			ctx := context.Background()
			s, err := ts.GenerateSigner(ctx, u.WithObject("key-"+kt), kt)
			require.NoError(t, err)
			require.Equal(t, "key-"+kt, s.URI().Object)
			require.Len(t, s.URI().ID, 16)

			digest := sha256.Sum256([]byte("trustflow"))
			switch pub := s.Public().(type) {
			case *ecdsa.PublicKey:
				sig, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
				require.NoError(t, err)
				require.True(t, ecdsa.VerifyASN1(pub, digest[:], sig))
			case *rsa.PublicKey:
				require.Equal(t, 3072, pub.N.BitLen())
				sig, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
				require.NoError(t, err)
				require.NoError(t, rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig))
				pss := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
				sig, err = s.Sign(rand.Reader, digest[:], pss)
				require.NoError(t, err)
				require.NoError(t, rsa.VerifyPSS(pub, crypto.SHA256, digest[:], sig, pss))
			default:
				t.Fatalf("public key %T", pub)
			}

			// Found again by label, and by id alone.
			byLabel, err := ts.FindSigner(ctx, u.WithObject("key-"+kt))
			require.NoError(t, err)
			require.True(t, byLabel.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(s.Public()))
			require.Equal(t, s.URI().ID, byLabel.URI().ID)
			byID := u
			byID.ID = s.URI().ID
			found, err := ts.FindSigner(ctx, byID)
			require.NoError(t, err)
			require.True(t, found.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(s.Public()))

			// Never overwritten.
			_, err = ts.GenerateSigner(ctx, u.WithObject("key-"+kt), kt)
			e := requireCode(t, err, hsm.CodeKeyExists)
			require.Contains(t, e.Message, "key-"+kt)
		})
	}
}

func TestFindSignerMissing(t *testing.T) {
	ts := sharedTokens(t)
	u := hsmtest.NewToken(t, "missing")
	_, err := ts.FindSigner(context.Background(), u.WithObject("nope"))
	e := requireCode(t, err, hsm.CodeKeyNotFound)
	require.Contains(t, e.Message, fmt.Sprintf("PKCS#11 token %q: ", u.Token))
}

func TestUnknownKeyType(t *testing.T) {
	ts := sharedTokens(t)
	u := hsmtest.NewToken(t, "keytype")
	_, err := ts.GenerateSigner(context.Background(), u.WithObject("k"), "ed25519")
	requireCode(t, err, hsm.CodeTokenError)
}

func TestDiagnoses(t *testing.T) {
	ts := sharedTokens(t)
	u := hsmtest.NewToken(t, "diag")
	ctx := context.Background()
	dir := t.TempDir()

	t.Run("pin_incorrect", func(t *testing.T) {
		wrong := u
		wrong.PinSource = "file:" + dir + "/wrong"
		require.NoError(t, os.WriteFile(dir+"/wrong", []byte("9999\n"), 0o600))
		// Its own Tokens: the shared one may already be logged in to u.
		fresh := hsm.NewTokens()
		defer fresh.Close()
		_, err := fresh.FindSigner(ctx, wrong.WithObject("k"))
		e := requireCode(t, err, hsm.CodePINIncorrect)
		require.Contains(t, e.Message, fmt.Sprintf("PKCS#11 token %q: ", u.Token))
		require.Contains(t, e.Hint, dir+"/wrong")
		require.NotContains(t, err.Error(), "9999")
	})
	t.Run("token_not_found", func(t *testing.T) {
		other := u
		other.Token = "no-such-token"
		_, err := ts.FindSigner(ctx, other.WithObject("k"))
		e := requireCode(t, err, hsm.CodeTokenNotFound)
		require.Contains(t, e.Message, fmt.Sprintf("PKCS#11 token %q: ", "no-such-token"))
	})
	t.Run("module_not_loadable", func(t *testing.T) {
		bad := u
		bad.ModulePath = dir + "/libnothing.so"
		_, err := ts.FindSigner(ctx, bad.WithObject("k"))
		e := requireCode(t, err, hsm.CodeModuleNotLoadable)
		require.Contains(t, e.Message, dir+"/libnothing.so")
	})
	t.Run("pin_source_unreadable", func(t *testing.T) {
		bad := u
		bad.Token = "another-label" // not cached
		bad.PinSource = "file:" + dir + "/absent"
		_, err := ts.FindSigner(ctx, bad.WithObject("k"))
		e := requireCode(t, err, hsm.CodePINSourceUnreadable)
		require.Contains(t, e.Message, dir+"/absent")

		bad.PinSource = "env:TRUSTFLOW_TEST_NO_SUCH_PIN"
		_, err = ts.FindSigner(ctx, bad.WithObject("k"))
		requireCode(t, err, hsm.CodePINSourceUnreadable)
	})
}

// get makes one HTTPS request with cert as the client certificate and
// returns the status, or the error.
func get(t testing.TB, url string, roots *x509.CertPool, cert tls.Certificate, version uint16) (int, error) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: roots, MinVersion: version, MaxVersion: version,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil },
	}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 20 * time.Second}).Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}

func TestMutualTLS(t *testing.T) {
	ts := sharedTokens(t)
	u := hsmtest.NewToken(t, "mtls")
	c := ca(t)
	srvLeaf := c.IssueServer(t)

	goSrv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "no client certificate", http.StatusForbidden)
			return
		}
		w.Write([]byte(r.TLS.PeerCertificates[0].Subject.CommonName))
	}))
	goSrv.TLS = &tls.Config{Certificates: []tls.Certificate{srvLeaf.TLSCertificate()}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: c.Pool()}
	goSrv.StartTLS()
	defer goSrv.Close()
	ossl := openssl(t)

	for _, kt := range hsm.KeyTypes() {
		s, err := ts.GenerateSigner(context.Background(), u.WithObject("tls-"+kt), kt)
		require.NoError(t, err)
		cert := clientCert(t, s)
		for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
			name := kt + "/" + tls.VersionName(v)
			t.Run(name+"/go", func(t *testing.T) {
				code, err := get(t, goSrv.URL, c.Pool(), cert, v)
				require.NoError(t, err)
				require.Equal(t, http.StatusOK, code)
			})
			t.Run(name+"/openssl", func(t *testing.T) {
				code, err := get(t, "https://"+ossl.Addr+"/", c.Pool(), cert, v)
				require.NoError(t, err)
				require.Equal(t, http.StatusOK, code)
			})
		}
	}

	// The servers do refuse a client without a certificate, so the passes
	// above mean the token's key authenticated.
	t.Run("no client certificate is refused", func(t *testing.T) {
		for _, url := range []string{goSrv.URL, "https://" + ossl.Addr + "/"} {
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c.Pool(), MinVersion: tls.VersionTLS13}}
			_, err := (&http.Client{Transport: tr, Timeout: 20 * time.Second}).Get(url)
			tr.CloseIdleConnections()
			require.Error(t, err, url)
		}
	})
}
