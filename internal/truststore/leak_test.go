package truststore_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
	"github.com/trustflow/trustflow/internal/truststore"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

// secret is one private key in the forms it must never appear in.
type secret struct {
	name   string
	pkcs8  []byte   // plain PKCS#8 DER
	needle []string // lowercase strings that must not appear anywhere
}

// keySecret lists the encodings of key an output could leak: its PKCS#8
// DER in base64 and hex, every line of its PEM bodies (PKCS#8, and PKCS#1
// or SEC 1), and its raw private scalars in hex and base64.
func keySecret(t testing.TB, name string, key crypto.PrivateKey) secret {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	s := secret{name: name, pkcs8: der}
	add := func(b []byte) {
		s.needle = append(s.needle,
			strings.ToLower(hex.EncodeToString(b)),
			strings.ToLower(base64.StdEncoding.EncodeToString(b)),
			strings.ToLower(base64.RawURLEncoding.EncodeToString(b)))
	}
	pemLines := func(typ string, der []byte) {
		body := strings.TrimSpace(string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})))
		for _, line := range strings.Split(body, "\n") {
			if !strings.HasPrefix(line, "-----") && len(line) >= 16 {
				s.needle = append(s.needle, strings.ToLower(line))
			}
		}
	}
	add(der)
	pemLines("PRIVATE KEY", der)
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		sec1, err := x509.MarshalECPrivateKey(k)
		require.NoError(t, err)
		pemLines("EC PRIVATE KEY", sec1)
		raw, err := k.Bytes()
		require.NoError(t, err)
		add(raw)
	case *rsa.PrivateKey:
		pemLines("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k))
		add(k.D.Bytes())
		for _, p := range k.Primes {
			add(p.Bytes())
		}
	case ed25519.PrivateKey:
		add(k.Seed())
	default:
		t.Fatalf("unexpected key type %T", key)
	}
	return s
}

// found reports whether any form of s occurs in text.
func (s secret) found(text string) bool {
	lower := strings.ToLower(text)
	for _, n := range s.needle {
		if strings.Contains(lower, n) {
			return true
		}
	}
	return false
}

// scan fails if any secret, or any of the extra strings, occurs in text.
func scan(t testing.TB, what, text string, secrets []secret, extra ...string) {
	t.Helper()
	lower := strings.ToLower(text)
	for _, s := range secrets {
		require.False(t, s.found(text), "%s contains the private key of %s", what, s.name)
	}
	for _, x := range extra {
		require.False(t, strings.Contains(lower, strings.ToLower(x)), "%s contains %q", what, x)
	}
}

func TestNoPrivateKeyMaterialLeaks(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		ctx := context.Background()
		const p12Password, keyPassword = "p12-password-c0rrect", "pkcs8-password-h0rse"
		var out []any // every value the service returned
		keep := func(v any, err error) {
			t.Helper()
			require.NoError(t, err)
			out = append(out, v)
		}
		var secrets []secret
		var failures []string // the messages of refused requests

		ec, ecNext := e.client(t, "ec"), e.client(t, "ec-next")
		rsaLeaf := e.client(t, "rsa", truststoretest.KeyType("rsa-2048"))
		ed := e.client(t, "ed", truststoretest.KeyType("ed25519"))
		p12Leaf := e.client(t, "p12", truststoretest.KeyType("ecdsa-p384"))
		for _, l := range []struct {
			name string
			key  crypto.PrivateKey
		}{{"ec", ec.Key}, {"ec-next", ecNext.Key}, {"rsa", rsaLeaf.Key}, {"ed25519", ed.Key}, {"p12", p12Leaf.Key}} {
			secrets = append(secrets, keySecret(t, l.name, l.key))
		}

		keep(e.svc.Import(ctx, alice, truststore.ImportRequest{Name: "ec", Material: truststore.Material{Cert: ec.ChainPEM(), Key: ec.KeyPEM()}}))
		keep(e.svc.Import(ctx, alice, truststore.ImportRequest{Name: "rsa", Material: truststore.Material{Cert: rsaLeaf.CertPEM(),
			Key: pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaLeaf.Key.(*rsa.PrivateKey)))}}))
		keep(e.svc.Import(ctx, alice, truststore.ImportRequest{Name: "ed25519", Material: truststore.Material{Cert: ed.CertPEM(), Key: ed.KeyPEM()}}))
		p12, err := pkcs12.Modern2023.Encode(p12Leaf.Key, p12Leaf.Cert, nil, p12Password)
		require.NoError(t, err)
		keep(e.svc.Import(ctx, alice, truststore.ImportRequest{Name: "p12", Material: truststore.Material{PKCS12: p12, PKCS12Password: p12Password}}))
		keep(e.svc.Import(ctx, alice, truststore.ImportRequest{Name: "encrypted", Material: truststore.Material{
			Cert: fixture(t, "client.pem"), Key: fixture(t, "client-key-pkcs8-aes256.pem"), KeyPassword: []byte(keyPass)}}))

		// Refused requests carry the same material.
		for _, req := range []truststore.ImportRequest{
			{Name: "bad-1", Material: truststore.Material{PKCS12: p12, PKCS12Password: "wrong"}},
			{Name: "bad-2", Material: truststore.Material{Cert: ec.CertPEM(), Key: rsaLeaf.KeyPEM()}},
			{Name: "bad-3", Material: truststore.Material{Cert: ec.KeyPEM(), Key: ec.KeyPEM()}},
			{Name: "bad-4", Material: truststore.Material{Cert: ec.CertPEM(), Key: ec.CertPEM()}},
			{Name: "Bad Name", Material: truststore.Material{Cert: ec.CertPEM(), Key: ec.KeyPEM()}},
			{Name: "bad-5", Material: truststore.Material{Cert: ec.CertPEM(), Key: ec.KeyPEM()[:len(ec.KeyPEM())/2]}},
			{Name: "bad-6", Material: truststore.Material{Cert: ec.CertPEM(), Key: ec.KeyPEM(), Chain: ec.KeyPEM()}},
		} {
			_, err := e.svc.Import(ctx, alice, req)
			require.Error(t, err)
			failures = append(failures, err.Error())
			var ie *errs.Error
			require.ErrorAs(t, err, &ie)
			failures = append(failures, ie.Message, ie.Hint)
		}

		// Create + install; the generated key is only reachable in memory.
		created, csr, err := e.svc.Create(ctx, alice, truststore.CreateRequest{Name: "generated", GenerateSpec: truststore.GenerateSpec{Subject: "CN=generated", KeyType: "rsa-2048"}})
		keep(created, err)
		keep(e.svc.InstallCertificate(ctx, alice, truststore.InstallRequest{Name: "generated", Cert: signCSR(t, e.ca, csr)}))
		ac, err := e.svc.Active(ctx, "generated")
		require.NoError(t, err)
		secrets = append(secrets, keySecret(t, "generated", ac.Certificate.PrivateKey))
		out = append(out, ac.Info)

		// Rotations: import, then generate (staged) and install.
		keep(e.svc.Rotate(ctx, alice, truststore.RotateRequest{Name: "ec", Material: truststore.Material{Cert: ecNext.CertPEM(), Key: ecNext.KeyPEM()}}))
		rot, err := e.svc.Rotate(ctx, alice, truststore.RotateRequest{Name: "generated", Stage: true, Generate: &truststore.GenerateSpec{Subject: "CN=generated-2"}})
		keep(rot, err)
		keep(e.svc.InstallCertificate(ctx, alice, truststore.InstallRequest{Name: "generated", Cert: signCSR(t, e.ca, rot.CSR)}))
		keep(e.svc.Activate(ctx, alice, "generated", 2))
		ac, err = e.svc.Active(ctx, "generated")
		require.NoError(t, err)
		secrets = append(secrets, keySecret(t, "generated-2", ac.Certificate.PrivateKey))
		for _, name := range []string{"ec", "rsa", "ed25519", "p12", "encrypted"} {
			ac, err := e.svc.Active(ctx, name)
			require.NoError(t, err)
			out = append(out, ac.Info)
		}
		encKey, err := e.svc.Active(ctx, "encrypted")
		require.NoError(t, err)
		secrets = append(secrets, keySecret(t, "encrypted", encKey.Certificate.PrivateKey))

		ident, pruned, err := e.svc.Prune(ctx, alice, "ec")
		keep(ident, err)
		out = append(out, pruned)
		for _, name := range []string{"ec", "rsa", "ed25519", "p12", "encrypted", "generated"} {
			keep(e.svc.Get(ctx, name))
		}
		keep(e.svc.List(ctx, 0))
		require.NoError(t, e.svc.Remove(ctx, alice, "ed25519"))

		// The scan finds a key in each form it looks for.
		for _, s := range secrets {
			asJSON, err := json.Marshal(map[string][]byte{"key": s.pkcs8})
			require.NoError(t, err)
			for _, form := range []string{string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: s.pkcs8})), strings.ToUpper(hex.EncodeToString(s.pkcs8)), string(asJSON)} {
				require.True(t, s.found(form), "the scan misses the key of %s in %q", s.name, form)
			}
		}

		views, err := json.Marshal(out)
		require.NoError(t, err)
		scan(t, "the service's answers", string(views), secrets, p12Password, keyPassword, keyPass)
		scan(t, "the errors of refused requests", strings.Join(failures, "\n"), secrets, p12Password, keyPassword, keyPass)

		records := auditAll(t, e.audit)
		require.GreaterOrEqual(t, len(records), 12)
		auditJSON, err := json.Marshal(records)
		require.NoError(t, err)
		scan(t, "the audit log", string(auditJSON), secrets, p12Password, keyPassword, keyPass)

		// The database holds the keys only sealed.
		rows, err := st.DB().QueryContext(ctx, "SELECT sealed_key, csr_pem, cert_pem, chain_pem, subject, issuer FROM identity_versions")
		require.NoError(t, err)
		defer rows.Close()
		n := 0
		for rows.Next() {
			var sealed []byte
			var csrPEM, certPEM, chainPEM, subject, issuer string
			require.NoError(t, rows.Scan(&sealed, &csrPEM, &certPEM, &chainPEM, &subject, &issuer))
			for _, s := range secrets {
				require.False(t, bytes.Contains(sealed, s.pkcs8), "sealed_key holds the plain PKCS#8 key of %s", s.name)
				require.False(t, bytes.Contains(sealed, s.pkcs8[len(s.pkcs8)-32:]), "sealed_key holds the tail of the plain PKCS#8 key of %s", s.name)
			}
			scan(t, "identity_versions", strings.Join([]string{hex.EncodeToString(sealed), csrPEM, certPEM, chainPEM, subject, issuer}, "\n"), secrets)
			n++
		}
		require.NoError(t, rows.Err())
		require.Equal(t, 6, n) // ec v2 (v1 pruned), rsa, p12, encrypted, generated v1 and v2; ed25519 removed
	})
}
