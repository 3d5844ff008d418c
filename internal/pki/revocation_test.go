package pki_test

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/pki"
	tt "github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

type idp struct {
	DistributionPoint          asn1.RawValue `asn1:"optional,tag:0"`
	OnlyContainsUserCerts      bool          `asn1:"optional,tag:1"`
	OnlyContainsCACerts        bool          `asn1:"optional,tag:2"`
	IndirectCRL                bool          `asn1:"optional,tag:4"`
	OnlyContainsAttributeCerts bool          `asn1:"optional,tag:5"`
}

func idpExtension(t *testing.T, v idp) pkix.Extension {
	t.Helper()
	der, err := asn1.Marshal(v)
	require.NoError(t, err)
	return pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 28}, Critical: true, Value: der}
}

// fullNameURI encodes a DistributionPointName fullName holding one URI.
func fullNameURI(t *testing.T, uri string) asn1.RawValue {
	t.Helper()
	gn, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(uri)})
	require.NoError(t, err)
	full, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: gn})
	require.NoError(t, err)
	return asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: full}
}

func crlWith(t *testing.T, ca *tt.CA, revoked *x509.Certificate, exts ...pkix.Extension) *x509.RevocationList {
	t.Helper()
	tmpl := &x509.RevocationList{
		Number:          big.NewInt(7),
		ThisUpdate:      verifyNow.Add(-time.Hour),
		NextUpdate:      verifyNow.Add(time.Hour),
		ExtraExtensions: exts,
		RevokedCertificateEntries: []x509.RevocationListEntry{{
			SerialNumber: revoked.SerialNumber, RevocationTime: verifyNow.Add(-time.Minute),
		}},
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	require.NoError(t, err)
	crl, err := x509.ParseRevocationList(der)
	require.NoError(t, err)
	return crl
}

func TestVerifyCRLScope(t *testing.T) {
	t.Parallel()
	root := tt.NewCA(t, tt.Now(verifyNow), tt.CommonName("Root CA"))
	leaf := root.IssueServer(t, "api.example")
	partitioned := root.Issue(t, tt.Names("api.example"), tt.CRLDistributionPoints("http://crl.example/part1.crl"))
	o := pki.VerifyOptions{Roots: []*x509.Certificate{root.Cert}, DNSName: "api.example", Time: verifyNow}
	verify := func(c *x509.Certificate, crl *x509.RevocationList, require bool) error {
		o := o
		o.CRLs, o.RequireCRLs = []*x509.RevocationList{crl}, require
		_, err := pki.Verify(c, o)
		return err
	}

	// A CRL of CA certificates only does not cover a leaf.
	caOnly := crlWith(t, root, leaf.Cert, idpExtension(t, idp{OnlyContainsCACerts: true}))
	require.NoError(t, verify(leaf.Cert, caOnly, false))
	requireCode(t, verify(leaf.Cert, caOnly, true), pki.CodeCRLMissing)

	// A CRL of end-entity certificates does.
	userOnly := crlWith(t, root, leaf.Cert, idpExtension(t, idp{OnlyContainsUserCerts: true}))
	requireCode(t, verify(leaf.Cert, userOnly, false), pki.CodeRevoked)

	// A partitioned CRL covers the certificates that point at it.
	part2 := crlWith(t, root, partitioned.Cert, idpExtension(t, idp{DistributionPoint: fullNameURI(t, "http://crl.example/part2.crl")}))
	require.NoError(t, verify(partitioned.Cert, part2, false))
	part1 := crlWith(t, root, partitioned.Cert, idpExtension(t, idp{DistributionPoint: fullNameURI(t, "http://crl.example/part1.crl")}))
	requireCode(t, verify(partitioned.Cert, part1, false), pki.CodeRevoked)

	// What trustflow does not support fails closed.
	e := requireCode(t, verify(leaf.Cert, crlWith(t, root, leaf.Cert, idpExtension(t, idp{IndirectCRL: true})), false), pki.CodeCRLInvalid)
	require.Equal(t, "the CRL of 'CN=Root CA' is an indirect CRL, which trustflow does not support", e.Message)
	delta := pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 27}, Critical: true, Value: []byte{0x02, 0x01, 0x01}}
	e = requireCode(t, verify(leaf.Cert, crlWith(t, root, leaf.Cert, delta), false), pki.CodeCRLInvalid)
	require.Equal(t, "the CRL of 'CN=Root CA' is a delta CRL, which trustflow does not use", e.Message)
	unknown := pkix.Extension{Id: asn1.ObjectIdentifier{1, 2, 3, 4}, Critical: true, Value: []byte{0x05, 0x00}}
	e = requireCode(t, verify(leaf.Cert, crlWith(t, root, leaf.Cert, unknown), false), pki.CodeCRLInvalid)
	require.Equal(t, "the CRL of 'CN=Root CA' has a critical extension trustflow does not understand (1.2.3.4)", e.Message)
	requireCode(t, verify(leaf.Cert, crlWith(t, root, leaf.Cert, pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 28}, Value: []byte{0x01}}), false), pki.CodeCRLInvalid)

	// A CRL that is not yet valid.
	o.Time = verifyNow.Add(-2 * time.Hour)
	root2 := tt.NewCA(t, tt.Now(verifyNow.Add(-3*time.Hour)), tt.CommonName("Early CA"))
	early := root2.IssueServer(t, "api.example")
	o.Roots = []*x509.Certificate{root2.Cert}
	e = requireCode(t, verify(early.Cert, crlWith(t, root2, leaf.Cert), false), pki.CodeCRLExpired)
	require.Equal(t, "the CRL of 'CN=Early CA' is not valid until 2031-03-14T14:09:26Z (checked at 2031-03-14T13:09:26Z)", e.Message)
}
