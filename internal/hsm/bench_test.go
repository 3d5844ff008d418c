package hsm_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"net"
	"testing"

	"github.com/trustflow/trustflow/internal/hsm/hsmtest"
)

// BenchmarkHandshake measures full TLS 1.3 mutual handshakes (no session
// resumption) over an in-memory pipe, ECDSA P-256 on both sides, with the
// client's key in memory (software) or in SoftHSM2 (pkcs11).
func BenchmarkHandshake(b *testing.B) {
	c := ca(b)
	srvLeaf := c.IssueServer(b)
	serverCfg := &tls.Config{Certificates: []tls.Certificate{srvLeaf.TLSCertificate()}, ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs: c.Pool(), MinVersion: tls.VersionTLS13, SessionTicketsDisabled: true}

	soft, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	ts := sharedTokens(b)
	u := hsmtest.NewToken(b, "bench")
	tok, err := ts.GenerateSigner(context.Background(), u.WithObject("bench-p256"), "ecdsa-p256")
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		key  crypto.Signer
	}{{"software", soft}, {"pkcs11", tok}} {
		cert := clientCert(b, bc.key)
		clientCfg := &tls.Config{RootCAs: c.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS13,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }}
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				cc, sc := net.Pipe()
				errc := make(chan error, 1)
				go func() {
					s := tls.Server(sc, serverCfg)
					errc <- s.Handshake()
				}()
				cl := tls.Client(cc, clientCfg)
				if err := cl.Handshake(); err != nil {
					b.Fatal(err)
				}
				if err := <-errc; err != nil {
					b.Fatal(err)
				}
				// Close the pipe, not the TLS conns: over an unbuffered
				// pipe both close_notify writes would wait for a reader.
				cc.Close()
				sc.Close()
			}
		})
	}
}
