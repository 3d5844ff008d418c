package pki_test

import (
	"errors"
	"testing"

	"github.com/trustflow/trustflow/internal/errs"

	"github.com/trustflow/trustflow/internal/pki"
)

// The fuzz targets check that parsers never panic, and that every failure is
// a *errs.Error with a code and a message. Seed corpora live in
// testdata/fuzz/<FuzzName>/ and include the bad fixtures; run one with
//
//	go test -run='^$' -fuzz=FuzzParseCertificates -fuzztime=20s ./internal/pki

func requirePKIError(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var e *errs.Error
	if !errors.As(err, &e) {
		t.Fatalf("error is a %T, not a *errs.Error: %v", err, err)
	}
	if e.Code == "" || e.Message == "" {
		t.Fatalf("error without code or message: %#v", e)
	}
}

var certFixtures = []string{
	"client.pem", "client-chain.pem", "root-ca.der", "bundle-with-text.pem", "trusted-certificate.pem",
	"chain.p7b", "chain.p7b.pem", "chain-p7-in-certificate-block.pem", "garbage.pem", "garbage.txt",
	"truncated.der", "truncated.pem", "client-base64-no-armour.txt", "ca-without-basic-constraints.pem",
	"key-does-not-match-cert.pem", "sha1-signed-client.pem",
}

func FuzzParseCertificates(f *testing.F) {
	for _, name := range certFixtures {
		f.Add(fixture(f, name))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := pki.ParseCertificates(data)
		requirePKIError(t, err)
		if err == nil {
			if len(certs) == 0 {
				t.Fatal("no error and no certificate")
			}
			for _, c := range certs {
				_ = pki.Info(c)
				_ = pki.SPKIPinSHA256(c)
				_ = pki.CheckCA(c, true)
				_ = pki.CheckFIPSCertificate(c)
			}
			_ = pki.CheckChain(certs[0], certs[1:])
		}
	})
}

var keyFixtures = []string{
	"client-key-pkcs8.pem", "client-key-pkcs8.der", "client-key-sec1.pem", "client-key-sec1.der",
	"client-key-sec1-with-params.pem", "client-key-pkcs8-aes256.pem", "client-key-pkcs8-aes256.der",
	"client-key-pkcs8-aes128-sha1.pem", "client-key-pkcs8-des3.pem", "client-key-pkcs8-pbes1.pem",
	"client-key-pkcs8-scrypt.pem", "client-key-legacy-encrypted.pem", "rsa-client-key-pkcs1.pem",
	"ed25519-client-key.pem", "x25519-key.pem", "dsa-key-traditional.pem", "openssh-key.pem",
	"garbage.pem", "truncated.der", "key-does-not-match-cert.pem",
}

func FuzzParsePrivateKey(f *testing.F) {
	for _, name := range keyFixtures {
		f.Add(fixture(f, name), []byte(keyPass))
		f.Add(fixture(f, name), []byte(nil))
	}
	f.Fuzz(func(t *testing.T, data, password []byte) {
		key, err := pki.ParsePrivateKey(data, password)
		requirePKIError(t, err)
		if err == nil && key == nil {
			t.Fatal("no error and no key")
		}
	})
}

var p12Fixtures = []string{
	"client-modern.p12", "client-legacy-rc2.p12", "client-legacy-3des.p12", "rsa-client.p12",
	"client-empty-password.p12", "certs-only.p12", "pbmac1-rfc9579-a1.p12", "truncated.der", "garbage.txt",
}

func FuzzParsePKCS12(f *testing.F) {
	for _, name := range p12Fixtures {
		f.Add(fixture(f, name), p12Pass)
	}
	f.Add(fixture(f, "pbmac1-rfc9579-a1.p12"), "1234")
	f.Add(fixture(f, "client-empty-password.p12"), "")
	f.Fuzz(func(t *testing.T, data []byte, password string) {
		key, leaf, _, err := pki.ParsePKCS12(data, password)
		requirePKIError(t, err)
		if err == nil {
			if key == nil || leaf == nil {
				t.Fatal("no error but no key or leaf")
			}
			if err := pki.KeyMatchesCertificate(key, leaf); err != nil {
				t.Fatalf("leaf does not match key: %v", err)
			}
		}
	})
}

func FuzzParseCSR(f *testing.F) {
	for _, name := range []string{"client.csr", "client.csr.der", "csr-bad-signature.pem", "client.pem", "garbage.pem", "truncated.der"} {
		f.Add(fixture(f, name))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		csr, err := pki.ParseCSR(data)
		requirePKIError(t, err)
		if err == nil && csr == nil {
			t.Fatal("no error and no CSR")
		}
	})
}

func FuzzParseSubject(f *testing.F) {
	for _, s := range []string{
		"CN=svc,O=Acme,OU=IT,C=US,L=Paris,ST=IDF", `CN=svc,O=Acme\, Inc.`, `CN=caf\C3\A9`, "/C=US/O=Acme/CN=svc",
		"CN=svc,emailAddress=ops@example.com", "CN=svc,2.5.4.97=VATDE-123", "CN=a+O=b", `CN=a\`, "", "=", ",,,",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		name, err := pki.ParseSubject(s)
		requirePKIError(t, err)
		if err == nil {
			_ = name.String()
		}
	})
}
