package truststore_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"
	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/pki"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
	"github.com/trustflow/trustflow/internal/truststore"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

// caAudit is the details of ca.add and ca.update records.
type caAudit struct {
	Fingerprints    []string `json:"fingerprints_sha256"`
	OldFingerprints []string `json:"old_fingerprints_sha256"`
	Subjects        []string `json:"subjects"`
	AllowLeafAnchor bool     `json:"allow_leaf_anchor"`
	AllowExpired    bool     `json:"allow_expired"`
}

func infos(certs ...*x509.Certificate) []pki.CertInfo {
	out := make([]pki.CertInfo, len(certs))
	for i, c := range certs {
		out[i] = pki.Info(c)
	}
	return out
}

func certsPEM(certs ...*x509.Certificate) []byte { return pki.EncodeCertificatesPEM(certs...) }

// certsOnlyPKCS7 makes a degenerate PKCS#7 signedData holding certs, as
// `openssl crl2pkcs7 -nocrl` does.
func certsOnlyPKCS7(t testing.TB, certs ...*x509.Certificate) []byte {
	t.Helper()
	var der []byte
	for _, c := range certs {
		der = append(der, c.Raw...)
	}
	p7, err := pkcs7.DegenerateCertificate(der)
	require.NoError(t, err)
	return p7
}

func caCount(t testing.TB, svc *truststore.Service) int {
	t.Helper()
	cas, err := svc.ListCAs(context.Background())
	require.NoError(t, err)
	return len(cas)
}

func TestAddCAFormats(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		ctx := context.Background()
		root := e.ca.Cert
		inter := e.ca.Intermediate(t).Cert
		otherRoot := truststoretest.NewCA(t, truststoretest.Now(t0), truststoretest.CommonName("other root")).Cert
		cases := []struct {
			name string
			data []byte
			want []*x509.Certificate
		}{
			{"pem-one", certsPEM(root), []*x509.Certificate{root}},
			{"pem-many", certsPEM(root, inter, otherRoot), []*x509.Certificate{root, inter, otherRoot}},
			{"pem-duplicates", certsPEM(root, inter, root, inter, otherRoot, root), []*x509.Certificate{root, inter, otherRoot}},
			{"der", root.Raw, []*x509.Certificate{root}},
			{"pkcs7-der", certsOnlyPKCS7(t, inter, root), []*x509.Certificate{inter, root}},
			{"pkcs7-pem", pem.EncodeToMemory(&pem.Block{Type: "PKCS7", Bytes: certsOnlyPKCS7(t, root, inter, root)}), []*x509.Certificate{root, inter}},
			{"openssl-pem", append(fixture(t, "root-ca.pem"), fixture(t, "intermediate-ca.pem")...),
				[]*x509.Certificate{fixtureCert(t, "root-ca.pem"), fixtureCert(t, "intermediate-ca.pem")}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				got, err := e.svc.AddCA(ctx, alice, truststore.CARequest{Name: tc.name, Description: "  Corporate roots \n", Data: tc.data})
				require.NoError(t, err)
				want := truststore.CA{Name: tc.name, Description: "Corporate roots", Certificates: infos(tc.want...), CreatedAt: t0, UpdatedAt: t0, Revision: 1}
				require.Equal(t, want, got)

				shown, err := e.svc.GetCA(ctx, tc.name)
				require.NoError(t, err)
				require.Equal(t, want, shown)

				anchors, err := e.svc.Anchors(ctx, tc.name)
				require.NoError(t, err)
				require.Equal(t, fingerprintsOf(tc.want), fingerprintsOf(anchors))

				rec := lastAudit(t, e.audit, "ca.add")
				require.Equal(t, alice, rec.Actor)
				require.Equal(t, "ca/"+tc.name, rec.Target)
				require.Equal(t, "success", rec.Outcome)
				require.Equal(t, caAudit{Fingerprints: fingerprintsOf(tc.want), Subjects: subjectsOf(tc.want)}, details[caAudit](t, rec))
			})
		}

		list, err := e.svc.ListCAs(ctx)
		require.NoError(t, err)
		var names []string
		for _, c := range list {
			names = append(names, c.Name)
		}
		require.Equal(t, []string{"der", "openssl-pem", "pem-duplicates", "pem-many", "pem-one", "pkcs7-der", "pkcs7-pem"}, names)
	})
}

func fingerprintsOf(certs []*x509.Certificate) []string {
	out := make([]string, len(certs))
	for i, c := range certs {
		out[i] = pki.FingerprintSHA256(c)
	}
	return out
}

func subjectsOf(certs []*x509.Certificate) []string {
	out := make([]string, len(certs))
	for i, c := range certs {
		out[i] = c.Subject.String()
	}
	return out
}

func TestAddCARefused(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		ctx := context.Background()
		_, err := e.svc.AddCA(ctx, alice, truststore.CARequest{Name: "taken", Data: e.ca.CertPEM()})
		require.NoError(t, err)

		selfSignedLeaf := truststoretest.NewCA(t, truststoretest.Now(t0), truststoretest.NotACA(), truststoretest.CommonName("legacy.example.test"))
		noBC := truststoretest.NewCA(t, truststoretest.Now(t0), truststoretest.NoBasicConstraints())
		expired := truststoretest.NewCA(t, truststoretest.Now(t0), truststoretest.Expired())
		future := truststoretest.NewCA(t, truststoretest.Now(t0), truststoretest.NotYetValid())
		issuedLeaf := e.client(t, "payments")

		cases := []struct {
			name        string
			req         truststore.CARequest
			code, field string
			hint        string // a part of the hint
		}{
			{"bad name", truststore.CARequest{Name: "Corp Root", Data: e.ca.CertPEM()}, "invalid_name", "name", "lowercase"},
			{"empty name", truststore.CARequest{Name: "", Data: e.ca.CertPEM()}, "invalid_name", "name", "lowercase"},
			{"no data", truststore.CARequest{Name: "corp"}, "required", "file", "--file"},
			{"garbage", truststore.CARequest{Name: "corp", Data: []byte("not a certificate, not a key, just text\n")}, "malformed_pem", "file", ""},
			{"key instead of certificate", truststore.CARequest{Name: "corp", Data: issuedLeaf.KeyPEM()}, "no_certificates", "file", ""},
			{"self-signed leaf", truststore.CARequest{Name: "corp", Data: selfSignedLeaf.CertPEM()}, "not_a_ca", "file", "--allow-leaf-anchor"},
			{"no basic constraints", truststore.CARequest{Name: "corp", Data: noBC.CertPEM()}, "not_a_ca", "file", "--allow-leaf-anchor"},
			{"issued leaf", truststore.CARequest{Name: "corp", Data: issuedLeaf.CertPEM()}, "not_a_ca", "file", "import the CA that issued it"},
			{"issued leaf as anchor", truststore.CARequest{Name: "corp", Data: issuedLeaf.CertPEM(), AllowLeafAnchor: true}, "not_a_ca", "file", "--allow-leaf-anchor accepts only self-signed"},
			{"leaf inside a bundle", truststore.CARequest{Name: "corp", Data: certsPEM(e.ca.Cert, issuedLeaf.Cert)}, "not_a_ca", "file", ""},
			{"expired", truststore.CARequest{Name: "corp", Data: expired.CertPEM()}, "expired", "file", "--allow-expired"},
			{"not yet valid", truststore.CARequest{Name: "corp", Data: future.CertPEM()}, "not_yet_valid", "file", "--allow-expired"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				head, count := auditHead(t, st), caCount(t, e.svc)
				_, err := e.svc.AddCA(ctx, alice, tc.req)
				ie := requireInputError(t, err, tc.code, tc.field)
				require.Contains(t, ie.Hint, tc.hint)
				require.Equal(t, head, auditHead(t, st), "a refused request is not audited as a change")
				require.Equal(t, count, caCount(t, e.svc))
			})
		}

		t.Run("duplicate name", func(t *testing.T) {
			head, count := auditHead(t, st), caCount(t, e.svc)
			_, err := e.svc.AddCA(ctx, alice, truststore.CARequest{Name: "taken", Data: e.ca.CertPEM()})
			ce := requireConflict(t, err, "already_exists")
			require.Equal(t, `truststore: a CA named "taken" already exists`, ce.Error())
			require.Contains(t, ce.Hint, "trustflow ca update taken")
			require.Equal(t, head, auditHead(t, st))
			require.Equal(t, count, caCount(t, e.svc))
		})
	})
}

func TestAddCAOverrides(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		ctx := context.Background()

		leaf := truststoretest.NewCA(t, truststoretest.Now(t0), truststoretest.NotACA(), truststoretest.CommonName("legacy.example.test"))
		got, err := e.svc.AddCA(ctx, alice, truststore.CARequest{Name: "legacy", Data: leaf.CertPEM(), AllowLeafAnchor: true})
		require.NoError(t, err)
		require.Equal(t, truststore.CA{Name: "legacy", AllowLeafAnchor: true, Certificates: infos(leaf.Cert), CreatedAt: t0, UpdatedAt: t0, Revision: 1}, got)
		require.Equal(t, caAudit{Fingerprints: fingerprintsOf([]*x509.Certificate{leaf.Cert}), Subjects: []string{"CN=legacy.example.test"}, AllowLeafAnchor: true},
			details[caAudit](t, lastAudit(t, e.audit, "ca.add")))

		expired := truststoretest.NewCA(t, truststoretest.Now(t0), truststoretest.Expired())
		got, err = e.svc.AddCA(ctx, alice, truststore.CARequest{Name: "old", Data: expired.CertPEM(), AllowExpired: true})
		require.NoError(t, err)
		require.Equal(t, infos(expired.Cert), got.Certificates)
		require.True(t, details[caAudit](t, lastAudit(t, e.audit, "ca.add")).AllowExpired)

		// The clock decides: a CA valid at t0 is refused once it has expired.
		e.clock.Set(e.ca.Cert.NotAfter.Add(time.Second))
		_, err = e.svc.AddCA(ctx, alice, truststore.CARequest{Name: "late", Data: e.ca.CertPEM()})
		requireInputError(t, err, "expired", "file")
	})
}

func TestAddCAFIPS(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st, func(c *truststore.Config) { c.FIPS = true })
		ctx := context.Background()
		weak := truststoretest.NewCA(t, truststoretest.Now(t0), truststoretest.RSA1024())
		_, err := e.svc.AddCA(ctx, alice, truststore.CARequest{Name: "weak", Data: weak.CertPEM()})
		ie := requireInputError(t, err, "fips_disallowed", "file")
		require.Contains(t, ie.Message, "RSA needs at least 2048 bits")

		_, err = e.svc.AddCA(ctx, alice, truststore.CARequest{Name: "strong", Data: e.ca.CertPEM()})
		require.NoError(t, err)
	})
}

func TestUpdateCA(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		ctx := context.Background()
		oldRoot := e.ca.Cert
		newRoot := truststoretest.NewCA(t, truststoretest.Now(t0), truststoretest.CommonName("renewed root")).Cert
		_, err := e.svc.AddCA(ctx, alice, truststore.CARequest{Name: "corp", Description: "Corporate root", Data: certsPEM(oldRoot)})
		require.NoError(t, err)

		e.clock.Advance(time.Hour)
		got, err := e.svc.UpdateCA(ctx, alice, truststore.CARequest{Name: "corp", Data: certsPEM(newRoot, oldRoot)})
		require.NoError(t, err)
		want := truststore.CA{Name: "corp", Description: "Corporate root", Certificates: infos(newRoot, oldRoot),
			CreatedAt: t0, UpdatedAt: t0.Add(time.Hour), Revision: 2}
		require.Equal(t, want, got)
		shown, err := e.svc.GetCA(ctx, "corp")
		require.NoError(t, err)
		require.Equal(t, want, shown, "the stored revision is the one returned")

		rec := lastAudit(t, e.audit, "ca.update")
		require.Equal(t, alice, rec.Actor)
		require.Equal(t, "ca/corp", rec.Target)
		require.Equal(t, caAudit{
			OldFingerprints: []string{pki.FingerprintSHA256(oldRoot)},
			Fingerprints:    []string{pki.FingerprintSHA256(newRoot), pki.FingerprintSHA256(oldRoot)},
			Subjects:        []string{"CN=renewed root", oldRoot.Subject.String()},
		}, details[caAudit](t, rec))

		got, err = e.svc.UpdateCA(ctx, alice, truststore.CARequest{Name: "corp", Description: "Renewed", Data: certsPEM(newRoot)})
		require.NoError(t, err)
		require.EqualValues(t, 3, got.Revision)
		require.Equal(t, "Renewed", got.Description)
		require.Equal(t, infos(newRoot), got.Certificates)

		t.Run("refused", func(t *testing.T) {
			head := auditHead(t, st)
			expired := truststoretest.NewCA(t, truststoretest.Now(t0), truststoretest.Expired())
			_, err := e.svc.UpdateCA(ctx, alice, truststore.CARequest{Name: "corp", Data: expired.CertPEM()})
			requireInputError(t, err, "expired", "file")
			_, err = e.svc.UpdateCA(ctx, alice, truststore.CARequest{Name: "corp"})
			requireInputError(t, err, "required", "file")
			_, err = e.svc.UpdateCA(ctx, alice, truststore.CARequest{Name: "nope", Data: e.ca.CertPEM()})
			requireNotFound(t, err, "CA", "nope")

			require.Equal(t, head, auditHead(t, st))
			shown, err := e.svc.GetCA(ctx, "corp")
			require.NoError(t, err)
			require.EqualValues(t, 3, shown.Revision)
			require.Equal(t, infos(newRoot), shown.Certificates)
		})
	})
}

func TestRemoveCA(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		type call struct{ kind, name string }
		var calls []call
		inUse := func(_ context.Context, tx *store.Tx, kind, name string) ([]string, error) {
			require.NotNil(t, tx, "the guard runs inside the removal's transaction")
			calls = append(calls, call{kind, name})
			if name == "corp" {
				return []string{"conn-a"}, nil
			}
			return nil, nil
		}
		e := newEnv(t, st, func(c *truststore.Config) { c.InUse = inUse })
		ctx := context.Background()
		for _, name := range []string{"corp", "spare"} {
			_, err := e.svc.AddCA(ctx, alice, truststore.CARequest{Name: name, Data: e.ca.CertPEM()})
			require.NoError(t, err)
		}

		head := auditHead(t, st)
		err := e.svc.RemoveCA(ctx, alice, "corp")
		ce := requireConflict(t, err, "in_use")
		require.Equal(t, []string{"conn-a"}, ce.UsedBy)
		require.Equal(t, `truststore: CA "corp" is still used by connectors: conn-a`, ce.Error())
		require.Equal(t, head, auditHead(t, st))
		_, err = e.svc.GetCA(ctx, "corp")
		require.NoError(t, err, "a refused removal keeps the CA")

		require.NoError(t, e.svc.RemoveCA(ctx, alice, "spare"))
		require.Equal(t, []call{{"ca", "corp"}, {"ca", "spare"}}, calls)
		_, err = e.svc.GetCA(ctx, "spare")
		requireNotFound(t, err, "CA", "spare")
		rec := lastAudit(t, e.audit, "ca.remove")
		require.Equal(t, alice, rec.Actor)
		require.Equal(t, "ca/spare", rec.Target)
		require.Equal(t, caAudit{Fingerprints: []string{pki.FingerprintSHA256(e.ca.Cert)}}, details[caAudit](t, rec))

		err = e.svc.RemoveCA(ctx, alice, "spare")
		requireNotFound(t, err, "CA", "spare")
		require.Equal(t, 1, caCount(t, e.svc))
	})
}

func TestVerify(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		ctx := context.Background()
		inter := e.ca.Intermediate(t)
		server := inter.IssueServer(t, "api.example.test")
		client := inter.IssueClient(t, "payments")
		stranger := truststoretest.NewCA(t, truststoretest.Now(t0), truststoretest.CommonName("stranger root")).IssueServer(t, "api.example.test")
		_, err := e.svc.AddCA(ctx, alice, truststore.CARequest{Name: "corp", Data: e.ca.CertPEM()})
		require.NoError(t, err)
		_, err = e.svc.AddCA(ctx, alice, truststore.CARequest{Name: "other", Data: truststoretest.NewCA(t, truststoretest.Now(t0)).CertPEM()})
		require.NoError(t, err)
		head := auditHead(t, st)

		valid := func(leaf *truststoretest.Leaf) truststore.Verification {
			return truststore.Verification{Valid: true, Leaf: pki.Info(leaf.Cert), Chain: infos(leaf.Cert, inter.Cert, e.ca.Cert)}
		}
		invalid := func(leaf *truststoretest.Leaf, code string) truststore.Verification {
			return truststore.Verification{Leaf: pki.Info(leaf.Cert), Error: &truststore.VerifyError{Code: code}}
		}
		cases := []struct {
			name string
			req  truststore.VerifyRequest
			want truststore.Verification
		}{
			{"valid with chain in leaf file", truststore.VerifyRequest{CA: []string{"corp"}, Leaf: server.ChainPEM(), Name: "api.example.test"}, valid(server)},
			{"valid with separate intermediates", truststore.VerifyRequest{CA: []string{"corp"}, Leaf: server.CertPEM(), Intermediates: certsPEM(inter.Cert), Name: "api.example.test"}, valid(server)},
			{"valid against several CAs", truststore.VerifyRequest{CA: []string{"other", "corp"}, Leaf: server.ChainPEM(), Name: "api.example.test"}, valid(server)},
			{"valid client", truststore.VerifyRequest{CA: []string{"corp"}, Leaf: client.ChainPEM(), Purpose: "client"}, valid(client)},
			{"unknown authority", truststore.VerifyRequest{CA: []string{"corp"}, Leaf: stranger.ChainPEM(), Name: "api.example.test"}, invalid(stranger, "unknown_authority")},
			{"missing intermediate", truststore.VerifyRequest{CA: []string{"corp"}, Leaf: server.CertPEM(), Name: "api.example.test"}, invalid(server, "unknown_authority")},
			{"other CA", truststore.VerifyRequest{CA: []string{"other"}, Leaf: server.ChainPEM(), Name: "api.example.test"}, invalid(server, "unknown_authority")},
			{"hostname mismatch", truststore.VerifyRequest{CA: []string{"corp"}, Leaf: server.ChainPEM(), Name: "billing.example.test"}, invalid(server, "hostname_mismatch")},
			{"expired at the given time", truststore.VerifyRequest{CA: []string{"corp"}, Leaf: server.ChainPEM(), Name: "api.example.test", Time: server.Cert.NotAfter.Add(time.Minute)}, invalid(server, "expired")},
			{"not yet valid at the given time", truststore.VerifyRequest{CA: []string{"corp"}, Leaf: server.ChainPEM(), Name: "api.example.test", Time: server.Cert.NotBefore.Add(-time.Minute)}, invalid(server, "not_yet_valid")},
			{"server certificate as client", truststore.VerifyRequest{CA: []string{"corp"}, Leaf: server.ChainPEM(), Purpose: "client"}, invalid(server, "incompatible_usage")},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				got, err := e.svc.Verify(ctx, tc.req)
				require.NoError(t, err)
				if got.Error != nil {
					require.NotEmpty(t, got.Error.Message)
					require.NotEmpty(t, got.Error.Hint)
					got.Error.Message, got.Error.Hint = "", ""
				}
				require.Equal(t, tc.want, got)
			})
		}

		t.Run("clock decides when no time is given", func(t *testing.T) {
			req := truststore.VerifyRequest{CA: []string{"corp"}, Leaf: server.ChainPEM(), Name: "api.example.test"}
			got, err := e.svc.Verify(ctx, req)
			require.NoError(t, err)
			require.True(t, got.Valid)
			e.clock.Set(server.Cert.NotAfter.Add(time.Second))
			defer e.clock.Set(t0)
			got, err = e.svc.Verify(ctx, req)
			require.NoError(t, err)
			require.Equal(t, "expired", got.Error.Code)
		})

		t.Run("bad requests", func(t *testing.T) {
			_, err := e.svc.Verify(ctx, truststore.VerifyRequest{Leaf: server.ChainPEM()})
			requireInputError(t, err, "required", "ca")
			_, err = e.svc.Verify(ctx, truststore.VerifyRequest{CA: []string{"corp"}})
			requireInputError(t, err, "required", "leaf")
			_, err = e.svc.Verify(ctx, truststore.VerifyRequest{CA: []string{"corp", "nope"}, Leaf: server.ChainPEM()})
			ie := requireInputError(t, err, "unknown_ca", "ca")
			require.Equal(t, `CA "nope" does not exist`, ie.Message)
			_, err = e.svc.Verify(ctx, truststore.VerifyRequest{CA: []string{"corp"}, Leaf: []byte("junk")})
			requireInputError(t, err, "malformed_pem", "leaf")
			_, err = e.svc.Verify(ctx, truststore.VerifyRequest{CA: []string{"corp"}, Leaf: server.CertPEM(), Intermediates: []byte("junk")})
			requireInputError(t, err, "malformed_pem", "intermediates")
			_, err = e.svc.Verify(ctx, truststore.VerifyRequest{CA: []string{"corp"}, Leaf: server.CertPEM(), Purpose: "both"})
			requireInputError(t, err, "invalid_input", "purpose")
		})

		require.Equal(t, head, auditHead(t, st), "verification changes nothing")
	})
}

func TestVerifySeesCAChanges(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		ctx := context.Background()
		other := e.service(t, e.svc.Keyring()) // a second node on the same database
		server := e.ca.IssueServer(t, "api.example.test")
		renewed := truststoretest.NewCA(t, truststoretest.Now(t0), truststoretest.CommonName("renewed root"))
		_, err := e.svc.AddCA(ctx, alice, truststore.CARequest{Name: "corp", Data: e.ca.CertPEM()})
		require.NoError(t, err)
		verdict := func(svc *truststore.Service) string {
			t.Helper()
			got, err := svc.Verify(ctx, truststore.VerifyRequest{CA: []string{"corp"}, Leaf: server.ChainPEM(), Name: "api.example.test"})
			var ie *errs.Error
			if errors.As(err, &ie) {
				return ie.Code
			}
			require.NoError(t, err)
			if got.Valid {
				return "valid"
			}
			return got.Error.Code
		}
		require.Equal(t, "valid", verdict(e.svc))
		require.Equal(t, "valid", verdict(other))

		// The bundle no longer holds the server's CA: this node knows at
		// once, the other within RevalidateAfter.
		_, err = e.svc.UpdateCA(ctx, alice, truststore.CARequest{Name: "corp", Data: renewed.CertPEM()})
		require.NoError(t, err)
		require.Equal(t, "unknown_authority", verdict(e.svc))
		require.Equal(t, "valid", verdict(other))
		e.clock.Advance(time.Second)
		require.Equal(t, "unknown_authority", verdict(other))
		require.Equal(t, "unknown_authority", verdict(e.svc)) // re-read: cached again from now

		_, err = other.UpdateCA(ctx, alice, truststore.CARequest{Name: "corp", Data: certsPEM(renewed.Cert, e.ca.Cert)})
		require.NoError(t, err)
		require.Equal(t, "valid", verdict(other))
		require.Equal(t, "unknown_authority", verdict(e.svc))
		e.clock.Advance(time.Second)
		require.Equal(t, "valid", verdict(e.svc))

		require.NoError(t, e.svc.RemoveCA(ctx, alice, "corp"))
		require.Equal(t, "unknown_ca", verdict(e.svc))
		e.clock.Advance(time.Second)
		require.Equal(t, "unknown_ca", verdict(other))
	})
}
