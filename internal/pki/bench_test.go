package pki_test

import (
	"bytes"
	"crypto/x509"
	"testing"

	"github.com/trustflow/trustflow/internal/pki"
	tt "github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

func BenchmarkParsePKCS12(b *testing.B) {
	for _, name := range []string{"client-modern.p12", "client-legacy-3des.p12"} {
		data := fixture(b, name)
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, _, _, err := pki.ParsePKCS12(data, p12Pass); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParsePEMBundle parses a 150-certificate CA bundle, about the size
// of a public root store.
func BenchmarkParsePEMBundle(b *testing.B) {
	var bundle bytes.Buffer
	for range 50 {
		bundle.Write(fixture(b, "client-chain.pem"))
		bundle.Write(fixture(b, "root-ca.pem"))
	}
	data := bundle.Bytes()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		certs, err := pki.ParseCertificates(data)
		if err != nil || len(certs) != 150 {
			b.Fatal(len(certs), err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	root := tt.NewCA(b)
	inter := root.Intermediate(b)
	leaf := inter.IssueServer(b, "api.example")
	opts := pki.VerifyOptions{
		Roots:         []*x509.Certificate{root.Cert},
		Intermediates: leaf.Chain,
		DNSName:       "api.example",
	}
	b.Run("chain", func(b *testing.B) {
		for b.Loop() {
			if _, err := pki.Verify(leaf.Cert, opts); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("chain+crls", func(b *testing.B) {
		o := opts
		o.CRLs = []*x509.RevocationList{inter.CRL(b, inter.IssueServer(b, "revoked.example").Cert), root.CRL(b)}
		o.RequireCRLs = true
		for b.Loop() {
			if _, err := pki.Verify(leaf.Cert, o); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("unknown-authority", func(b *testing.B) {
		o := opts
		o.Intermediates = nil
		for b.Loop() {
			if _, err := pki.Verify(leaf.Cert, o); err == nil {
				b.Fatal("verified")
			}
		}
	})
}
