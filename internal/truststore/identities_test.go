package truststore_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/trustflow/trustflow/internal/pki"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
	"github.com/trustflow/trustflow/internal/truststore"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

// identityAudit is the details of identity.* records.
type identityAudit struct {
	Version               int    `json:"version"`
	KeyType               string `json:"key_type"`
	Status                string `json:"status"`
	Fingerprint           string `json:"fingerprint_sha256"`
	Serial                string `json:"serial"`
	Subject               string `json:"subject"`
	Issuer                string `json:"issuer"`
	NotAfter              string `json:"not_after"`
	PreviousActiveVersion *int   `json:"previous_active_version"`
	Activated             *bool  `json:"activated"`
	SubjectRequested      string `json:"subject_requested"`
	Versions              []int  `json:"versions"`
}

// wantVersion is the public view of a version holding cert and chain.
func wantVersion(version int, status, source string, cert *x509.Certificate, chain []*x509.Certificate, created time.Time, activated *time.Time) truststore.Version {
	info := pki.Info(cert)
	v := truststore.Version{
		Version: version, Status: status, Source: source, KeyType: info.KeyType, KeyStore: truststore.KeyStoreSealed,
		Serial: info.Serial, Subject: info.Subject, Issuer: info.Issuer, FingerprintSHA256: info.FingerprintSHA256,
		NotBefore: &info.NotBefore, NotAfter: &info.NotAfter, DNSNames: cert.DNSNames,
		CreatedAt: created, ActivatedAt: activated,
	}
	if len(chain) > 0 {
		v.Chain = infos(chain...)
	}
	return v
}

func ptr[T any](v T) *T { return &v }

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func pkcs8DER(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	return der
}

func sec1DER(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
	require.NoError(t, err)
	return der
}

func pfx(t testing.TB, enc *pkcs12.Encoder, leaf *truststoretest.Leaf, password string) []byte {
	t.Helper()
	data, err := enc.Encode(leaf.Key, leaf.Cert, leaf.Chain, password)
	require.NoError(t, err)
	return data
}

func TestImportKeyFormats(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		ctx := context.Background()
		inter := e.ca.Intermediate(t)
		ec := inter.IssueClient(t, "ec.example.test", truststoretest.Names("ec.example.test"))
		p384 := e.client(t, "p384", truststoretest.KeyType("ecdsa-p384"))
		rsaLeaf := e.client(t, "rsa", truststoretest.KeyType("rsa-2048"))
		ed := e.client(t, "ed25519", truststoretest.KeyType("ed25519"))
		fixClient, fixInter, fixRoot := fixtureCert(t, "client.pem"), fixtureCert(t, "intermediate-ca.pem"), fixtureCert(t, "root-ca.pem")
		fixRSA := fixtureCert(t, "rsa-client.pem")

		cases := []struct {
			name     string
			material truststore.Material
			leaf     *x509.Certificate
			chain    []*x509.Certificate
		}{
			{"pkcs8-pem", truststore.Material{Cert: ec.ChainPEM(), Key: ec.KeyPEM()}, ec.Cert, ec.Chain},
			{"pkcs8-der", truststore.Material{Cert: ec.Cert.Raw, Key: pkcs8DER(t, ec.Key), Chain: certsPEM(ec.Chain...)}, ec.Cert, ec.Chain},
			{"pkcs8-pem-with-chain-file", truststore.Material{Cert: ec.CertPEM(), Key: ec.KeyPEM(), Chain: certsPEM(inter.Cert, e.ca.Cert)}, ec.Cert, []*x509.Certificate{inter.Cert, e.ca.Cert}},
			{"sec1-pem", truststore.Material{Cert: ec.ChainPEM(), Key: pemBlock("EC PRIVATE KEY", sec1DER(t, ec.Key))}, ec.Cert, ec.Chain},
			{"sec1-der", truststore.Material{Cert: ec.ChainPEM(), Key: sec1DER(t, ec.Key)}, ec.Cert, ec.Chain},
			{"p384-sec1", truststore.Material{Cert: p384.CertPEM(), Key: pemBlock("EC PRIVATE KEY", sec1DER(t, p384.Key))}, p384.Cert, nil},
			{"pkcs1-pem", truststore.Material{Cert: rsaLeaf.CertPEM(), Key: pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaLeaf.Key.(*rsa.PrivateKey)))}, rsaLeaf.Cert, nil},
			{"pkcs1-der", truststore.Material{Cert: rsaLeaf.Cert.Raw, Key: x509.MarshalPKCS1PrivateKey(rsaLeaf.Key.(*rsa.PrivateKey))}, rsaLeaf.Cert, nil},
			{"rsa-pkcs8", truststore.Material{Cert: rsaLeaf.CertPEM(), Key: rsaLeaf.KeyPEM()}, rsaLeaf.Cert, nil},
			{"ed25519-pkcs8", truststore.Material{Cert: ed.CertPEM(), Key: ed.KeyPEM()}, ed.Cert, nil},
			{"pkcs12-modern", truststore.Material{PKCS12: pfx(t, pkcs12.Modern2023, ec, "s3cret"), PKCS12Password: "s3cret"}, ec.Cert, ec.Chain},
			{"pkcs12-legacy", truststore.Material{PKCS12: pfx(t, pkcs12.LegacyDES, rsaLeaf, "s3cret"), PKCS12Password: "s3cret"}, rsaLeaf.Cert, nil},
			{"pkcs12-ed25519", truststore.Material{PKCS12: pfx(t, pkcs12.Modern2023, ed, "s3cret"), PKCS12Password: "s3cret"}, ed.Cert, nil},
			// Files written by OpenSSL.
			{"openssl-pkcs8-encrypted-pem", truststore.Material{Cert: fixture(t, "client.pem"), Key: fixture(t, "client-key-pkcs8-aes256.pem"), KeyPassword: []byte(keyPass)}, fixClient, nil},
			{"openssl-pkcs8-encrypted-der", truststore.Material{Cert: fixture(t, "client.pem"), Key: fixture(t, "client-key-pkcs8-aes256.der"), KeyPassword: []byte(keyPass), Chain: fixture(t, "intermediate-ca.pem")}, fixClient, []*x509.Certificate{fixInter}},
			{"openssl-sec1-pem", truststore.Material{Cert: fixture(t, "client.pem"), Key: fixture(t, "client-key-sec1.pem")}, fixClient, nil},
			{"openssl-sec1-der", truststore.Material{Cert: fixture(t, "client.pem"), Key: fixture(t, "client-key-sec1.der")}, fixClient, nil},
			{"openssl-pkcs1", truststore.Material{Cert: fixture(t, "rsa-client.pem"), Key: fixture(t, "rsa-client-key-pkcs1.pem")}, fixRSA, nil},
			{"openssl-pkcs12-modern", truststore.Material{PKCS12: fixture(t, "client-modern.p12"), PKCS12Password: p12Pass}, fixClient, []*x509.Certificate{fixInter, fixRoot}},
			{"openssl-pkcs12-legacy-3des", truststore.Material{PKCS12: fixture(t, "client-legacy-3des.p12"), PKCS12Password: p12Pass}, fixClient, []*x509.Certificate{fixInter, fixRoot}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				got, err := e.svc.Import(ctx, alice, truststore.ImportRequest{Name: tc.name, Description: " imported ", Material: tc.material})
				require.NoError(t, err)
				want := truststore.Identity{Name: tc.name, Description: "imported", Status: "active", ActiveVersion: 1, CreatedAt: t0, UpdatedAt: t0,
					Versions: []truststore.Version{wantVersion(1, "active", "imported", tc.leaf, tc.chain, t0, &t0)}}
				require.Equal(t, want, got)
				shown, err := e.svc.Get(ctx, tc.name)
				require.NoError(t, err)
				require.Equal(t, want, shown)

				rec := lastAudit(t, e.audit, "identity.import")
				require.Equal(t, alice, rec.Actor)
				require.Equal(t, "identity/"+tc.name, rec.Target)
				info := pki.Info(tc.leaf)
				require.Equal(t, identityAudit{Version: 1, KeyType: info.KeyType, Status: "active", Fingerprint: info.FingerprintSHA256,
					Serial: info.Serial, Subject: info.Subject, Issuer: info.Issuer, NotAfter: info.NotAfter.Format(time.RFC3339)}, details[identityAudit](t, rec))

				ac, err := e.svc.Active(ctx, tc.name)
				require.NoError(t, err)
				require.Equal(t, truststore.ActiveInfo{Identity: tc.name, Version: 1, Serial: info.Serial, FingerprintSHA256: info.FingerprintSHA256}, ac.Info)
				require.Equal(t, tc.leaf.Raw, ac.Certificate.Leaf.Raw)
				wantDER := [][]byte{tc.leaf.Raw}
				for _, c := range tc.chain {
					wantDER = append(wantDER, c.Raw)
				}
				require.Equal(t, wantDER, ac.Certificate.Certificate)
				samePublicKey(t, tc.leaf.PublicKey, ac.Certificate.PrivateKey)
			})
		}
	})
}

func TestImportRefused(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		ctx := context.Background()
		good := e.client(t, "good")
		e.importLeaf(t, "taken", good)

		interA, interB := e.ca.Intermediate(t), e.ca.Intermediate(t)
		fromA := interA.IssueClient(t, "from-a")
		noClientAuth := e.client(t, "server-only", truststoretest.NoClientAuthEKU())
		expired := e.client(t, "expired", truststoretest.Expired())
		future := e.client(t, "future", truststoretest.NotYetValid())
		p12 := pfx(t, pkcs12.Modern2023, good, "right")
		mismatch := fixture(t, "key-does-not-match-cert.pem")

		cases := []struct {
			name        string
			req         truststore.ImportRequest
			code, field string
		}{
			{"key does not match certificate", truststore.ImportRequest{Name: "x", Material: truststore.Material{Cert: mismatch, Key: mismatch}}, "key_mismatch", "key"},
			{"key of another leaf", truststore.ImportRequest{Name: "x", Material: truststore.Material{Cert: good.CertPEM(), Key: fromA.KeyPEM()}}, "key_mismatch", "key"},
			{"encrypted key, wrong password", truststore.ImportRequest{Name: "x", Material: truststore.Material{Cert: fixture(t, "client.pem"), Key: fixture(t, "client-key-pkcs8-aes256.pem"), KeyPassword: []byte("wrong")}}, "wrong_password", "key"},
			{"encrypted key, no password", truststore.ImportRequest{Name: "x", Material: truststore.Material{Cert: fixture(t, "client.pem"), Key: fixture(t, "client-key-pkcs8-aes256.pem")}}, "password_required", "key"},
			{"pkcs12, wrong password", truststore.ImportRequest{Name: "x", Material: truststore.Material{PKCS12: p12, PKCS12Password: "wrong"}}, "wrong_password", "pkcs12"},
			{"pkcs12 from openssl, wrong password", truststore.ImportRequest{Name: "x", Material: truststore.Material{PKCS12: fixture(t, "client-modern.p12"), PKCS12Password: "wrong"}}, "wrong_password", "pkcs12"},
			{"pkcs12, no password", truststore.ImportRequest{Name: "x", Material: truststore.Material{PKCS12: p12}}, "password_required", "pkcs12"},
			{"pkcs12 and certificate", truststore.ImportRequest{Name: "x", Material: truststore.Material{PKCS12: p12, PKCS12Password: "right", Cert: good.CertPEM()}}, "invalid_input", "pkcs12"},
			{"pkcs12 that is PEM", truststore.ImportRequest{Name: "x", Material: truststore.Material{PKCS12: good.CertPEM(), PKCS12Password: "right"}}, "unsupported_format", "pkcs12"},
			{"no clientAuth", truststore.ImportRequest{Name: "x", Material: truststore.Material{Cert: noClientAuth.CertPEM(), Key: noClientAuth.KeyPEM()}}, "no_client_auth_eku", "cert"},
			{"expired", truststore.ImportRequest{Name: "x", Material: truststore.Material{Cert: expired.CertPEM(), Key: expired.KeyPEM()}}, "expired", "cert"},
			{"not yet valid", truststore.ImportRequest{Name: "x", Material: truststore.Material{Cert: future.CertPEM(), Key: future.KeyPEM()}}, "not_yet_valid", "cert"},
			{"chain of another CA", truststore.ImportRequest{Name: "x", Material: truststore.Material{Cert: fromA.CertPEM(), Key: fromA.KeyPEM(), Chain: certsPEM(interB.Cert)}}, "chain_broken", "chain"},
			{"chain out of order", truststore.ImportRequest{Name: "x", Material: truststore.Material{Cert: fromA.CertPEM(), Key: fromA.KeyPEM(), Chain: certsPEM(e.ca.Cert, interA.Cert)}}, "chain_broken", "chain"},
			{"chain in cert file of another CA", truststore.ImportRequest{Name: "x", Material: truststore.Material{Cert: certsPEM(fromA.Cert, interB.Cert), Key: fromA.KeyPEM()}}, "chain_broken", "chain"},
			{"chain not certificates", truststore.ImportRequest{Name: "x", Material: truststore.Material{Cert: fromA.CertPEM(), Key: fromA.KeyPEM(), Chain: fromA.KeyPEM()}}, "no_certificates", "chain"},
			{"no certificate", truststore.ImportRequest{Name: "x", Material: truststore.Material{Key: good.KeyPEM()}}, "required", "cert"},
			{"no key", truststore.ImportRequest{Name: "x", Material: truststore.Material{Cert: good.CertPEM()}}, "required", "key"},
			{"certificate is a key", truststore.ImportRequest{Name: "x", Material: truststore.Material{Cert: good.KeyPEM(), Key: good.KeyPEM()}}, "no_certificates", "cert"},
			{"key is a certificate", truststore.ImportRequest{Name: "x", Material: truststore.Material{Cert: good.CertPEM(), Key: good.CertPEM()}}, "no_private_key", "key"},
			{"key is text", truststore.ImportRequest{Name: "x", Material: truststore.Material{Cert: good.CertPEM(), Key: []byte("hunter2")}}, "malformed_pem", "key"},
			{"bad name", truststore.ImportRequest{Name: "Payments Prod", Material: truststore.Material{Cert: good.CertPEM(), Key: good.KeyPEM()}}, "invalid_name", "name"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				head := auditHead(t, st)
				_, err := e.svc.Import(ctx, alice, tc.req)
				ie := requireInputError(t, err, tc.code, tc.field)
				require.NotEmpty(t, ie.Hint)
				require.Equal(t, head, auditHead(t, st))
				list, err := e.svc.List(ctx, 0)
				require.NoError(t, err)
				require.Len(t, list, 1, "nothing was stored")
			})
		}

		t.Run("duplicate name", func(t *testing.T) {
			head := auditHead(t, st)
			_, err := e.svc.Import(ctx, alice, truststore.ImportRequest{Name: "taken", Material: truststore.Material{Cert: good.CertPEM(), Key: good.KeyPEM()}})
			ce := requireConflict(t, err, "already_exists")
			require.Contains(t, ce.Hint, "trustflow identity rotate taken")
			require.Equal(t, head, auditHead(t, st))
		})

		t.Run("allow expired", func(t *testing.T) {
			got, err := e.svc.Import(ctx, alice, truststore.ImportRequest{Name: "old", Material: truststore.Material{Cert: expired.CertPEM(), Key: expired.KeyPEM(), AllowExpired: true}})
			require.NoError(t, err)
			require.Equal(t, map[int]string{1: "active"}, statuses(got))
		})
	})
}

func TestCreateAndInstall(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		ctx := context.Background()
		const subject = "CN=payments-client,O=Example Agency"
		ident, csrPEM, err := e.svc.Create(ctx, alice, truststore.CreateRequest{Name: "payments", Description: "Payments",
			GenerateSpec: truststore.GenerateSpec{Subject: subject, DNSNames: []string{"payments.example.test"}}})
		require.NoError(t, err)

		csr, err := pki.ParseCSR([]byte(csrPEM))
		require.NoError(t, err)
		require.NoError(t, csr.CheckSignature())
		require.Equal(t, subject, csr.Subject.String())
		require.Equal(t, []string{"payments.example.test"}, csr.DNSNames)
		require.Equal(t, "ecdsa-p256", pki.KeyType(csr.PublicKey))

		pending := truststore.Identity{Name: "payments", Description: "Payments", Status: "pending", CreatedAt: t0, UpdatedAt: t0,
			Versions: []truststore.Version{{Version: 1, Status: "pending", Source: "generated", KeyType: "ecdsa-p256", KeyStore: truststore.KeyStoreSealed, CSR: csrPEM, CreatedAt: t0}}}
		require.Equal(t, pending, ident)
		shown, err := e.svc.Get(ctx, "payments")
		require.NoError(t, err)
		require.Equal(t, pending, shown)
		rec := lastAudit(t, e.audit, "identity.create")
		require.Equal(t, alice, rec.Actor)
		require.Equal(t, identityAudit{Version: 1, KeyType: "ecdsa-p256", Status: "pending", SubjectRequested: subject}, details[identityAudit](t, rec))

		_, err = e.svc.Active(ctx, "payments")
		requireConflict(t, err, "no_active_version")

		t.Run("certificate for another key", func(t *testing.T) {
			head := auditHead(t, st)
			other := e.client(t, "payments-client")
			_, err := e.svc.InstallCertificate(ctx, alice, truststore.InstallRequest{Name: "payments", Cert: other.CertPEM()})
			ie := requireInputError(t, err, "key_mismatch", "cert")
			require.Contains(t, ie.Hint, "the CSR of version 1")
			require.Equal(t, head, auditHead(t, st))
			shown, err := e.svc.Get(ctx, "payments")
			require.NoError(t, err)
			require.Equal(t, pending, shown)
		})
		t.Run("bad install requests", func(t *testing.T) {
			head := auditHead(t, st)
			_, err := e.svc.InstallCertificate(ctx, alice, truststore.InstallRequest{Name: "payments"})
			requireInputError(t, err, "required", "cert")
			_, err = e.svc.InstallCertificate(ctx, alice, truststore.InstallRequest{Name: "payments", Cert: []byte("junk")})
			requireInputError(t, err, "malformed_pem", "cert")
			_, err = e.svc.InstallCertificate(ctx, alice, truststore.InstallRequest{Name: "nope", Cert: signCSR(t, e.ca, csrPEM)})
			requireNotFound(t, err, "identity", "nope")
			require.Equal(t, head, auditHead(t, st))
		})

		e.clock.Advance(time.Hour)
		signed := signCSR(t, e.ca, csrPEM)
		leaf, err := pki.ParseCertificates(signed)
		require.NoError(t, err)
		installed, err := e.svc.InstallCertificate(ctx, alice, truststore.InstallRequest{Name: "payments", Cert: signed, Chain: e.ca.CertPEM()})
		require.NoError(t, err)
		at := t0.Add(time.Hour)
		want := truststore.Identity{Name: "payments", Description: "Payments", Status: "active", ActiveVersion: 1, CreatedAt: t0, UpdatedAt: at,
			Versions: []truststore.Version{wantVersion(1, "active", "generated", leaf[0], []*x509.Certificate{e.ca.Cert}, t0, &at)}}
		require.Equal(t, want, installed)
		shown, err = e.svc.Get(ctx, "payments")
		require.NoError(t, err)
		require.Equal(t, want, shown)
		rec = lastAudit(t, e.audit, "identity.install_cert")
		require.True(t, *details[identityAudit](t, rec).Activated)

		ac, err := e.svc.Active(ctx, "payments")
		require.NoError(t, err)
		require.Equal(t, truststore.ActiveInfo{Identity: "payments", Version: 1, Serial: want.Versions[0].Serial, FingerprintSHA256: want.Versions[0].FingerprintSHA256}, ac.Info)
		samePublicKey(t, csr.PublicKey, ac.Certificate.PrivateKey)

		_, err = e.svc.InstallCertificate(ctx, alice, truststore.InstallRequest{Name: "payments", Cert: signed})
		requireConflict(t, err, "no_pending_version")
	})
}

func TestCreateRefused(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		ctx := context.Background()
		_, _, err := e.svc.Create(ctx, alice, truststore.CreateRequest{Name: "taken", GenerateSpec: truststore.GenerateSpec{Subject: "CN=taken"}})
		require.NoError(t, err)
		head := auditHead(t, st)
		cases := []struct {
			name        string
			req         truststore.CreateRequest
			code, field string
		}{
			{"bad name", truststore.CreateRequest{Name: "-x", GenerateSpec: truststore.GenerateSpec{Subject: "CN=x"}}, "invalid_name", "name"},
			{"no subject", truststore.CreateRequest{Name: "x", GenerateSpec: truststore.GenerateSpec{Subject: "  "}}, "required", "subject"},
			{"bad subject", truststore.CreateRequest{Name: "x", GenerateSpec: truststore.GenerateSpec{Subject: "CN"}}, "invalid_subject", "subject"},
			{"bad key type", truststore.CreateRequest{Name: "x", GenerateSpec: truststore.GenerateSpec{Subject: "CN=x", KeyType: "rsa-1024"}}, "invalid_key_type", "key_type"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				_, _, err := e.svc.Create(ctx, alice, tc.req)
				requireInputError(t, err, tc.code, tc.field)
			})
		}
		_, _, err = e.svc.Create(ctx, alice, truststore.CreateRequest{Name: "taken", GenerateSpec: truststore.GenerateSpec{Subject: "CN=taken"}})
		requireConflict(t, err, "already_exists")
		require.Equal(t, head, auditHead(t, st))
	})
}

func TestRotateActivatePrune(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		ctx := context.Background()
		v1, v2, v3, v4 := e.client(t, "v1"), e.client(t, "v2"), e.client(t, "v3"), e.client(t, "v4")
		e.importLeaf(t, "payments", v1)
		serial := func() string {
			t.Helper()
			ac, err := e.svc.Active(ctx, "payments")
			require.NoError(t, err)
			return ac.Info.Serial
		}
		requireStatuses := func(want map[int]string, activeVersion int, activeSerial string) {
			t.Helper()
			ident, err := e.svc.Get(ctx, "payments")
			require.NoError(t, err)
			require.Equal(t, want, statuses(ident))
			require.Equal(t, activeVersion, ident.ActiveVersion)
			a, ok := ident.Active()
			require.True(t, ok)
			require.Equal(t, activeVersion, a.Version)
			require.Equal(t, activeSerial, serial(), "the handshake path serves the active version at once")
		}
		s1, s2, s3 := pki.Info(v1.Cert).Serial, pki.Info(v2.Cert).Serial, pki.Info(v3.Cert).Serial
		requireStatuses(map[int]string{1: "active"}, 1, s1)

		// Rotate (import): v2 is active at once, v1 retired.
		e.clock.Advance(time.Minute)
		res, err := e.svc.Rotate(ctx, alice, truststore.RotateRequest{Name: "payments", Material: truststore.Material{Cert: v2.CertPEM(), Key: v2.KeyPEM()}})
		require.NoError(t, err)
		require.Equal(t, 2, res.Version)
		require.Empty(t, res.CSR)
		require.Equal(t, map[int]string{1: "retired", 2: "active"}, statuses(res.Identity))
		at := t0.Add(time.Minute)
		require.Equal(t, wantVersion(2, "active", "imported", v2.Cert, nil, at, &at), res.Identity.Versions[1])
		rec := lastAudit(t, e.audit, "identity.rotate")
		require.Equal(t, identityAudit{Version: 2, KeyType: "ecdsa-p256", Status: "active", Fingerprint: pki.FingerprintSHA256(v2.Cert), Serial: s2,
			Subject: "CN=v2", Issuer: e.ca.Cert.Subject.String(), NotAfter: v2.Cert.NotAfter.UTC().Format(time.RFC3339), PreviousActiveVersion: ptr(1)},
			details[identityAudit](t, rec))
		requireStatuses(map[int]string{1: "retired", 2: "active"}, 2, s2)

		// Rotate --stage: v3 waits, v2 stays active.
		res, err = e.svc.Rotate(ctx, alice, truststore.RotateRequest{Name: "payments", Stage: true, Material: truststore.Material{Cert: v3.CertPEM(), Key: v3.KeyPEM()}})
		require.NoError(t, err)
		require.Equal(t, 3, res.Version)
		require.Equal(t, map[int]string{1: "retired", 2: "active", 3: "staged"}, statuses(res.Identity))
		requireStatuses(map[int]string{1: "retired", 2: "active", 3: "staged"}, 2, s2)

		// Activate the staged version, then roll back to v2.
		ident, err := e.svc.Activate(ctx, alice, "payments", 3)
		require.NoError(t, err)
		require.Equal(t, map[int]string{1: "retired", 2: "retired", 3: "active"}, statuses(ident))
		require.Equal(t, ptr(2), details[identityAudit](t, lastAudit(t, e.audit, "identity.activate")).PreviousActiveVersion)
		requireStatuses(map[int]string{1: "retired", 2: "retired", 3: "active"}, 3, s3)
		ident, err = e.svc.Activate(ctx, alice, "payments", 2)
		require.NoError(t, err)
		require.Equal(t, map[int]string{1: "retired", 2: "active", 3: "retired"}, statuses(ident))
		requireStatuses(map[int]string{1: "retired", 2: "active", 3: "retired"}, 2, s2)

		head := auditHead(t, st)
		_, err = e.svc.Activate(ctx, alice, "payments", 2)
		requireConflict(t, err, "already_active")
		_, err = e.svc.Activate(ctx, alice, "payments", 9)
		requireNotFound(t, err, "identity version", "payments v9")
		_, err = e.svc.Activate(ctx, alice, "nope", 1)
		requireNotFound(t, err, "identity", "nope")
		_, err = e.svc.Rotate(ctx, alice, truststore.RotateRequest{Name: "nope", Material: truststore.Material{Cert: v4.CertPEM(), Key: v4.KeyPEM()}})
		requireNotFound(t, err, "identity", "nope")
		_, err = e.svc.Rotate(ctx, alice, truststore.RotateRequest{Name: "payments", Material: truststore.Material{Cert: v4.CertPEM(), Key: v1.KeyPEM()}})
		requireInputError(t, err, "key_mismatch", "key")
		require.Equal(t, head, auditHead(t, st))
		requireStatuses(map[int]string{1: "retired", 2: "active", 3: "retired"}, 2, s2)

		// A staged import (v4) and a staged generated key (v5) survive Prune.
		_, err = e.svc.Rotate(ctx, alice, truststore.RotateRequest{Name: "payments", Stage: true, Material: truststore.Material{Cert: v4.CertPEM(), Key: v4.KeyPEM()}})
		require.NoError(t, err)
		res, err = e.svc.Rotate(ctx, alice, truststore.RotateRequest{Name: "payments", Stage: true, Generate: &truststore.GenerateSpec{Subject: "CN=v5"}})
		require.NoError(t, err)
		require.Equal(t, 5, res.Version)
		require.NotEmpty(t, res.CSR)
		require.Equal(t, res.CSR, res.Identity.Versions[4].CSR)
		_, err = e.svc.Rotate(ctx, alice, truststore.RotateRequest{Name: "payments", Generate: &truststore.GenerateSpec{Subject: "CN=v6"}})
		requireConflict(t, err, "pending_version")
		_, err = e.svc.Activate(ctx, alice, "payments", 5)
		requireConflict(t, err, "pending_version")
		requireStatuses(map[int]string{1: "retired", 2: "active", 3: "retired", 4: "staged", 5: "pending"}, 2, s2)

		ident, pruned, err := e.svc.Prune(ctx, alice, "payments")
		require.NoError(t, err)
		require.Equal(t, []int{1, 3}, pruned)
		require.Equal(t, map[int]string{2: "active", 4: "staged", 5: "pending"}, statuses(ident))
		require.Equal(t, []int{1, 3}, details[identityAudit](t, lastAudit(t, e.audit, "identity.prune")).Versions)
		requireStatuses(map[int]string{2: "active", 4: "staged", 5: "pending"}, 2, s2)
		_, err = e.svc.Activate(ctx, alice, "payments", 1)
		requireNotFound(t, err, "identity version", "payments v1")

		head = auditHead(t, st)
		_, pruned, err = e.svc.Prune(ctx, alice, "payments")
		require.NoError(t, err)
		require.Empty(t, pruned)
		require.Equal(t, head, auditHead(t, st), "pruning nothing records nothing")

		// The staged generated key: install keeps it staged; activate it.
		signed := signCSR(t, e.ca, res.CSR)
		ident, err = e.svc.InstallCertificate(ctx, alice, truststore.InstallRequest{Name: "payments", Cert: signed})
		require.NoError(t, err)
		require.Equal(t, map[int]string{2: "active", 4: "staged", 5: "staged"}, statuses(ident))
		require.False(t, *details[identityAudit](t, lastAudit(t, e.audit, "identity.install_cert")).Activated)
		requireStatuses(map[int]string{2: "active", 4: "staged", 5: "staged"}, 2, s2)
		_, err = e.svc.Activate(ctx, alice, "payments", 5)
		require.NoError(t, err)
		s5 := ident.Versions[2].Serial
		requireStatuses(map[int]string{2: "retired", 4: "staged", 5: "active"}, 5, s5)

		// Rotate --generate without --stage: active once installed.
		res, err = e.svc.Rotate(ctx, alice, truststore.RotateRequest{Name: "payments", Generate: &truststore.GenerateSpec{Subject: "CN=v6", KeyType: "ed25519"}})
		require.NoError(t, err)
		requireStatuses(map[int]string{2: "retired", 4: "staged", 5: "active", 6: "pending"}, 5, s5)
		ident, err = e.svc.InstallCertificate(ctx, alice, truststore.InstallRequest{Name: "payments", Cert: signCSR(t, e.ca, res.CSR)})
		require.NoError(t, err)
		s6 := ident.Versions[3].Serial
		require.Equal(t, "ed25519", ident.Versions[3].KeyType)
		requireStatuses(map[int]string{2: "retired", 4: "staged", 5: "retired", 6: "active"}, 6, s6)

		// An expired version cannot come back.
		e.clock.Set(v4.Cert.NotAfter.Add(time.Second))
		_, err = e.svc.Activate(ctx, alice, "payments", 4)
		requireConflict(t, err, "expired")

		var actions []string
		for _, r := range auditAll(t, e.audit) {
			actions = append(actions, r.Action)
			require.Equal(t, alice, r.Actor)
		}
		require.Equal(t, []string{"identity.import", "identity.rotate", "identity.rotate", "identity.activate", "identity.activate",
			"identity.rotate", "identity.rotate", "identity.prune", "identity.install_cert", "identity.activate", "identity.rotate", "identity.install_cert"}, actions)
	})
}

func TestRemoveIdentity(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		var kinds []string
		e := newEnv(t, st, func(c *truststore.Config) {
			c.InUse = func(_ context.Context, _ *store.Tx, kind, name string) ([]string, error) {
				kinds = append(kinds, kind)
				if name == "payments" {
					return []string{"conn-a", "conn-b"}, nil
				}
				return nil, nil
			}
		})
		ctx := context.Background()
		v1, v2 := e.client(t, "v1"), e.client(t, "v2")
		e.importLeaf(t, "payments", v1)
		e.importLeaf(t, "billing", v1)
		_, err := e.svc.Rotate(ctx, alice, truststore.RotateRequest{Name: "billing", Material: truststore.Material{Cert: v2.CertPEM(), Key: v2.KeyPEM()}})
		require.NoError(t, err)
		_, err = e.svc.Active(ctx, "billing")
		require.NoError(t, err)

		head := auditHead(t, st)
		err = e.svc.Remove(ctx, alice, "payments")
		ce := requireConflict(t, err, "in_use")
		require.Equal(t, []string{"conn-a", "conn-b"}, ce.UsedBy)
		require.Equal(t, `truststore: identity "payments" is still used by connectors: conn-a, conn-b`, ce.Error())
		require.Equal(t, head, auditHead(t, st))
		_, err = e.svc.Active(ctx, "payments")
		require.NoError(t, err)

		require.NoError(t, e.svc.Remove(ctx, alice, "billing"))
		require.Equal(t, []string{"identity", "identity"}, kinds)
		_, err = e.svc.Get(ctx, "billing")
		requireNotFound(t, err, "identity", "billing")
		_, err = e.svc.Active(ctx, "billing")
		requireNotFound(t, err, "identity", "billing")
		rec := lastAudit(t, e.audit, "identity.remove")
		require.Equal(t, "identity/billing", rec.Target)
		type removeAudit struct {
			Versions     int      `json:"versions"`
			Fingerprints []string `json:"fingerprints_sha256"`
		}
		require.Equal(t, removeAudit{Versions: 2, Fingerprints: []string{pki.FingerprintSHA256(v1.Cert), pki.FingerprintSHA256(v2.Cert)}}, details[removeAudit](t, rec))
		var rows int
		require.NoError(t, st.DB().QueryRowContext(ctx, "SELECT COUNT(*) FROM identity_versions WHERE identity_id NOT IN (SELECT id FROM identities)").Scan(&rows))
		require.Zero(t, rows, "no orphaned versions (and sealed keys) remain")

		err = e.svc.Remove(ctx, alice, "billing")
		requireNotFound(t, err, "identity", "billing")
	})
}

func TestFIPSPolicy(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		fips := func(c *truststore.Config) { c.FIPS = true }
		e := newEnv(t, st, fips)
		ctx := context.Background()
		weak := e.client(t, "weak", truststoretest.RSA1024())
		req := truststore.ImportRequest{Name: "weak", Material: truststore.Material{Cert: weak.CertPEM(), Key: weak.KeyPEM()}}
		_, err := e.svc.Import(ctx, alice, req)
		ie := requireInputError(t, err, "fips_disallowed", "key")
		require.Contains(t, ie.Message, "rsa-1024")

		_, err = e.svc.Import(ctx, alice, truststore.ImportRequest{Name: "sha1", Material: truststore.Material{Cert: fixture(t, "sha1-signed-client.pem"), Key: fixture(t, "client-key-sec1.pem")}})
		ie = requireInputError(t, err, "fips_disallowed", "cert")
		require.Contains(t, ie.Message, "ECDSA-SHA1")

		_, err = e.svc.Rotate(ctx, alice, truststore.RotateRequest{Name: "weak", Material: req.Material})
		requireInputError(t, err, "fips_disallowed", "key")

		ident, csr, err := e.svc.Create(ctx, alice, truststore.CreateRequest{Name: "rsa", GenerateSpec: truststore.GenerateSpec{Subject: "CN=rsa", KeyType: "rsa-2048"}})
		require.NoError(t, err)
		require.Equal(t, "rsa-2048", ident.Versions[0].KeyType)
		_, err = e.svc.InstallCertificate(ctx, alice, truststore.InstallRequest{Name: "rsa", Cert: signCSR(t, e.ca, csr)})
		require.NoError(t, err)
		e.importLeaf(t, "ed25519", e.client(t, "ed", truststoretest.KeyType("ed25519")))

		// Without FIPS, the same weak key is refused all the same: every
		// server would refuse it (the policy's identities.min_rsa_bits).
		plain := e.service(t, e.svc.Keyring())
		_, err = plain.Import(ctx, alice, req)
		ie = requireInputError(t, err, pki.CodeWeakKey, "key")
		require.Contains(t, ie.Message, "RSA-1024")
	})
}

func TestActiveCache(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		ctx := context.Background()
		other := e.service(t, e.svc.Keyring()) // a second node on the same database
		v1, v2, v3 := e.client(t, "v1"), e.client(t, "v2"), e.client(t, "v3")
		e.importLeaf(t, "payments", v1)
		active := func(svc *truststore.Service) string {
			t.Helper()
			ac, err := svc.Active(ctx, "payments")
			require.NoError(t, err)
			require.Equal(t, ac.Info.Serial, pki.Info(ac.Certificate.Leaf).Serial)
			return ac.Info.Serial
		}
		s1, s2, s3 := pki.Info(v1.Cert).Serial, pki.Info(v2.Cert).Serial, pki.Info(v3.Cert).Serial
		require.Equal(t, s1, active(e.svc))
		require.Equal(t, s1, active(other))

		// A rotation through this node is served at once; the other node
		// keeps its cached v1 until RevalidateAfter (1s by default).
		_, err := e.svc.Rotate(ctx, alice, truststore.RotateRequest{Name: "payments", Material: truststore.Material{Cert: v2.CertPEM(), Key: v2.KeyPEM()}})
		require.NoError(t, err)
		require.Equal(t, s2, active(e.svc))
		require.Equal(t, s1, active(other))
		e.clock.Advance(999 * time.Millisecond)
		require.Equal(t, s1, active(other))
		e.clock.Advance(time.Millisecond)
		require.Equal(t, s2, active(other))
		require.Equal(t, s2, active(e.svc)) // revalidated: unchanged, cached again from now

		// And the other way round.
		_, err = other.Rotate(ctx, alice, truststore.RotateRequest{Name: "payments", Material: truststore.Material{Cert: v3.CertPEM(), Key: v3.KeyPEM()}})
		require.NoError(t, err)
		require.Equal(t, s3, active(other))
		require.Equal(t, s2, active(e.svc))
		e.clock.Advance(time.Second)
		require.Equal(t, s3, active(e.svc))

		// A rollback and a removal on one node reach the other.
		_, err = other.Activate(ctx, alice, "payments", 1)
		require.NoError(t, err)
		e.clock.Advance(time.Second)
		require.Equal(t, s1, active(e.svc))
		require.NoError(t, other.Remove(ctx, alice, "payments"))
		e.clock.Advance(time.Second)
		_, err = e.svc.Active(ctx, "payments")
		requireNotFound(t, err, "identity", "payments")
	})
}

func TestActiveCacheSeesRecreatedIdentity(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		ctx := context.Background()
		other := e.service(t, e.svc.Keyring())
		old, renewed := e.client(t, "old"), e.client(t, "new")
		e.importLeaf(t, "payments", old)
		ac, err := e.svc.Active(ctx, "payments")
		require.NoError(t, err)
		require.Equal(t, pki.Info(old.Cert).Serial, ac.Info.Serial)

		// Another node removes the identity and imports a new one under the
		// same name: a new row, whose revision starts again at 1.
		require.NoError(t, other.Remove(ctx, alice, "payments"))
		_, err = other.Import(ctx, alice, truststore.ImportRequest{Name: "payments", Material: truststore.Material{Cert: renewed.CertPEM(), Key: renewed.KeyPEM()}})
		require.NoError(t, err)

		e.clock.Advance(time.Second)
		ac, err = e.svc.Active(ctx, "payments")
		require.NoError(t, err)
		require.Equal(t, pki.Info(renewed.Cert).Serial, ac.Info.Serial, "the removed identity's key is no longer served")
		samePublicKey(t, renewed.Cert.PublicKey, ac.Certificate.PrivateKey)
	})
}

// Handshakes run while identities rotate: every answer must pair a
// certificate with its own key, and after a local rotation returns, the new
// version is served.
func TestActiveDuringRotations(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		ctx := context.Background()
		leaves := make([]*truststoretest.Leaf, 12)
		for i := range leaves {
			leaves[i] = e.client(t, fmt.Sprintf("v%d", i+1))
		}
		e.importLeaf(t, "payments", leaves[0])

		stop := make(chan struct{})
		// One handshake loop: with two cores, more would starve the database.
		errs := make(chan error, 1)
		var wg sync.WaitGroup
		for range 1 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					ac, err := e.svc.Active(ctx, "payments")
					if err == nil && !ac.Certificate.PrivateKey.(crypto.Signer).Public().(*ecdsa.PublicKey).Equal(ac.Certificate.Leaf.PublicKey) {
						err = fmt.Errorf("version %d: the key does not belong to the certificate", ac.Info.Version)
					}
					if err == nil && ac.Info.Serial != pki.Info(ac.Certificate.Leaf).Serial {
						err = fmt.Errorf("version %d: info names serial %s, certificate has %s", ac.Info.Version, ac.Info.Serial, pki.Info(ac.Certificate.Leaf).Serial)
					}
					if err != nil {
						errs <- err
						return
					}
					runtime.Gosched()
				}
			}()
		}
		for i, leaf := range leaves[1:] {
			_, err := e.svc.Rotate(ctx, alice, truststore.RotateRequest{Name: "payments", Material: truststore.Material{Cert: leaf.CertPEM(), Key: leaf.KeyPEM()}})
			require.NoError(t, err)
			ac, err := e.svc.Active(ctx, "payments")
			require.NoError(t, err)
			require.Equal(t, i+2, ac.Info.Version)
		}
		close(stop)
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
	})
}

func TestRotateRefusesAKnownCertificateAndNeverReusesVersions(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		ctx := context.Background()
		v1, v2, v3 := e.client(t, "v1"), e.client(t, "v2"), e.client(t, "v3")
		e.importLeaf(t, "payments", v1)
		rotate := func(l *truststoretest.Leaf) (truststore.RotateResult, error) {
			return e.svc.Rotate(ctx, alice, truststore.RotateRequest{Name: "payments", Material: truststore.Material{Cert: l.CertPEM(), Key: l.KeyPEM()}})
		}
		_, err := rotate(v2)
		require.NoError(t, err)

		head := auditHead(t, st)
		for _, l := range []*truststoretest.Leaf{v1, v2} {
			_, err = rotate(l)
			ce := requireConflict(t, err, "already_present")
			require.Contains(t, ce.Hint, "trustflow identity activate payments --version")
		}
		require.Equal(t, head, auditHead(t, st))

		// v2 is rolled back and pruned: its number is not given out again.
		_, err = e.svc.Activate(ctx, alice, "payments", 1)
		require.NoError(t, err)
		_, pruned, err := e.svc.Prune(ctx, alice, "payments")
		require.NoError(t, err)
		require.Equal(t, []int{2}, pruned)
		res, err := rotate(v3)
		require.NoError(t, err)
		require.Equal(t, 3, res.Version)
		require.Equal(t, map[int]string{1: "retired", 3: "active"}, statuses(res.Identity))
		_, pruned, err = e.svc.Prune(ctx, alice, "payments")
		require.NoError(t, err)
		require.Equal(t, []int{1}, pruned)
		res, err = e.svc.Rotate(ctx, alice, truststore.RotateRequest{Name: "payments", Generate: &truststore.GenerateSpec{Subject: "CN=v4"}})
		require.NoError(t, err)
		require.Equal(t, 4, res.Version)
	})
}
