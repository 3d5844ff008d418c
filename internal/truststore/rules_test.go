package truststore_test

import (
	"context"
	"crypto/x509"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/pki"
	"github.com/trustflow/trustflow/internal/policy"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
	"github.com/trustflow/trustflow/internal/truststore"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

// TestIdentitiesEveryServerRefuses: each certificate below is refused at its
// field with a named reason, and nothing is stored.
func TestIdentitiesEveryServerRefuses(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newEnv(t, st)
		_, err := e.svc.AddCA(ctx, alice, truststore.CARequest{Name: "demo", Data: e.ca.CertPEM()})
		require.NoError(t, err)
		inter := e.ca.Intermediate(t)
		pair := func(l *truststoretest.Leaf) [2][]byte { return [2][]byte{l.CertPEM(), l.KeyPEM()} }
		for _, tc := range []struct {
			name, code, field, says string
			material                [2][]byte
		}{
			{"rsa1024", pki.CodeWeakKey, "key", "RSA-1024 key", pair(e.client(t, "w", truststoretest.RSA1024()))},
			{"ca", truststore.CodeCACertificate, "cert", "is a CA certificate", [2][]byte{inter.CertPEM(), inter.KeyPEM()}},
			{"trust-store-ca", truststore.CodeCACertificate, "cert", "is a CA certificate", [2][]byte{e.ca.CertPEM(), e.ca.KeyPEM()}},
			{"no-digital-signature", truststore.CodeNoDigitalSignature, "cert", "without digitalSignature",
				pair(e.client(t, "nds", truststoretest.KeyUsage(x509.KeyUsageKeyEncipherment)))},
			{"eku-excludes-client-auth", pki.CodeNoClientAuthEKU, "cert", "may not be used for TLS client authentication",
				pair(e.client(t, "srv", truststoretest.ExtKeyUsage(x509.ExtKeyUsageServerAuth)))},
		} {
			_, err := e.svc.Import(ctx, alice, truststore.ImportRequest{Name: tc.name, Material: truststore.Material{Cert: tc.material[0], Key: tc.material[1]}})
			ie := requireInputError(t, err, tc.code, tc.field)
			require.Contains(t, ie.Message, tc.says, tc.name)
			require.NotEmpty(t, ie.Hint, tc.name)
		}
		// A self-signed certificate the trust store holds as an anchor is
		// not an identity either.
		anchor := truststoretest.NewCA(t, truststoretest.Now(t0), truststoretest.NotACA(), truststoretest.KeyUsage(x509.KeyUsageDigitalSignature))
		_, err = e.svc.AddCA(ctx, alice, truststore.CARequest{Name: "pinned", Data: anchor.CertPEM(), AllowLeafAnchor: true})
		require.NoError(t, err)
		_, err = e.svc.Import(ctx, alice, truststore.ImportRequest{Name: "anchor", Material: truststore.Material{Cert: anchor.CertPEM(), Key: anchor.KeyPEM()}})
		ie := requireInputError(t, err, truststore.CodeIsTrustStoreCA, "cert")
		require.Contains(t, ie.Message, `the trust store's CA "pinned"`)
		list, err := e.svc.List(ctx, 0)
		require.NoError(t, err)
		require.Empty(t, list, "nothing was stored")
	})
}

// TestPolicyIdentityRules: the policy's key sizes, lifetime and clientAuth
// rules refuse imports, generation and installs, and `policy check` lists
// an active identity that a tightened policy breaks.
func TestPolicyIdentityRules(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		var cur *policy.Policy
		e := newEnv(t, st)
		svc := e.service(t, e.svc.Keyring(), func(c *truststore.Config) { c.Policy = func() *policy.Policy { return cur } })
		set := func(doc string) {
			p, err := policy.Parse("p.yaml", []byte("apiVersion: trustflow/v1\nkind: Policy\n"+doc))
			require.NoError(t, err)
			cur = p
		}
		set("")
		long := e.client(t, "long", truststoretest.KeyType("rsa-2048"), truststoretest.Validity(t0.Add(-time.Hour), t0.Add(800*24*time.Hour)))
		_, err := svc.Import(ctx, alice, truststore.ImportRequest{Name: "long", Material: truststore.Material{Cert: long.CertPEM(), Key: long.KeyPEM()}})
		require.NoError(t, err, "the default policy has no lifetime bound")

		set("identities: {min_rsa_bits: 3072, max_lifetime: 398d, require_client_auth_eku: true}\n")
		vs, err := svc.CheckPolicy(ctx, cur)
		require.NoError(t, err)
		rules := map[string]bool{}
		for _, v := range vs {
			require.Equal(t, "identity", v.Kind)
			require.Equal(t, "long", v.Name)
			rules[v.Rule] = true
		}
		require.Equal(t, map[string]bool{pki.CodeWeakKey: true, truststore.CodeLifetimeTooLong: true}, rules)

		_, err = svc.Import(ctx, alice, truststore.ImportRequest{Name: "again", Material: truststore.Material{Cert: long.CertPEM(), Key: long.KeyPEM()}})
		ie := requireInputError(t, err, pki.CodeWeakKey, "key")
		require.Contains(t, ie.Message, "identities.min_rsa_bits")

		p384 := e.client(t, "p384", truststoretest.KeyType("ecdsa-p384"), truststoretest.Validity(t0.Add(-time.Hour), t0.Add(800*24*time.Hour)))
		_, err = svc.Import(ctx, alice, truststore.ImportRequest{Name: "p384", Material: truststore.Material{Cert: p384.CertPEM(), Key: p384.KeyPEM()}})
		ie = requireInputError(t, err, truststore.CodeLifetimeTooLong, "cert")
		require.Contains(t, ie.Message, "valid for 800 days")

		noEKU := e.client(t, "noeku", truststoretest.ExtKeyUsage())
		_, err = svc.Import(ctx, alice, truststore.ImportRequest{Name: "noeku", Material: truststore.Material{Cert: noEKU.CertPEM(), Key: noEKU.KeyPEM()}})
		requireInputError(t, err, truststore.CodeNoClientAuthEKU, "cert")

		_, _, err = svc.Create(ctx, alice, truststore.CreateRequest{Name: "gen", GenerateSpec: truststore.GenerateSpec{Subject: "CN=gen", KeyType: "rsa-2048"}})
		ie = requireInputError(t, err, pki.CodeWeakKey, "key_type")
		require.Contains(t, ie.Message, "key type rsa-2048 is an RSA-2048 key")
	})
}
