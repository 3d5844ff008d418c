package truststore_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/pki"
	"github.com/trustflow/trustflow/internal/seal"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/truststore"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

// t0 is where every test's fake clock starts. The fixtures in testdata are
// valid from 2026-11-28 for a century, and the in-memory CAs are made
// relative to t0, so both are valid at t0.
var t0 = time.Date(2027, 3, 1, 9, 0, 0, 0, time.UTC)

// Passwords of the fixtures in testdata.
const (
	keyPass = "trustflow-key-pass"
	p12Pass = "trustflow-p12-pass"
)

// alice is the actor of every change the tests make.
var alice = audit.Actor{ID: "tok_alice", Name: "alice", Role: "admin"}

// env is a trust store over a real database, with a fake clock, a fresh
// KEK and an in-memory test CA valid at t0.
type env struct {
	st    *store.Store
	clock *clock.Fake
	audit *audit.Log
	kek   *seal.KEK
	svc   *truststore.Service
	ca    *truststoretest.CA
}

// newEnv builds the trust store over st; opts adjust its Config.
func newEnv(t testing.TB, st *store.Store, opts ...func(*truststore.Config)) *env {
	t.Helper()
	kek, err := seal.NewKEK()
	require.NoError(t, err)
	e := &env{st: st, clock: clock.NewFake(t0), kek: kek}
	e.audit = audit.New(st, e.clock)
	e.svc = e.service(t, seal.NewKeyring(kek), opts...)
	e.ca = truststoretest.NewCA(t, truststoretest.Now(t0))
	return e
}

// service returns another Service on e's store, audit log and clock: a
// second trustflow node, or the same node restarted with keyring.
func (e *env) service(t testing.TB, keyring *seal.Keyring, opts ...func(*truststore.Config)) *truststore.Service {
	t.Helper()
	cfg := truststore.Config{Store: e.st, Audit: e.audit, Keyring: keyring, Clock: e.clock}
	for _, o := range opts {
		o(&cfg)
	}
	svc, err := truststore.New(cfg)
	require.NoError(t, err)
	return svc
}

// client issues a client certificate from e's CA.
func (e *env) client(t testing.TB, cn string, opts ...truststoretest.Option) *truststoretest.Leaf {
	t.Helper()
	return e.ca.IssueClient(t, cn, opts...)
}

// importLeaf imports leaf (with its chain) as a new identity.
func (e *env) importLeaf(t testing.TB, name string, leaf *truststoretest.Leaf) truststore.Identity {
	t.Helper()
	ident, err := e.svc.Import(context.Background(), alice, truststore.ImportRequest{
		Name: name, Material: truststore.Material{Cert: leaf.ChainPEM(), Key: leaf.KeyPEM()},
	})
	require.NoError(t, err)
	return ident
}

// fixture reads a file from testdata.
func fixture(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	require.NoError(t, err)
	return data
}

// fixtureCert parses the one certificate in a testdata file.
func fixtureCert(t testing.TB, name string) *x509.Certificate {
	t.Helper()
	certs, err := pki.ParseCertificates(fixture(t, name))
	require.NoError(t, err)
	require.Len(t, certs, 1, name)
	return certs[0]
}

// requireInputError asserts err is an *InputError with code on field.
func requireInputError(t testing.TB, err error, code, field string) *errs.Error {
	t.Helper()
	require.Error(t, err)
	var e *errs.Error
	require.ErrorAs(t, err, &e, "error: %v", err)
	require.Equal(t, code, e.Code, "error: %v", err)
	require.Equal(t, field, e.Field, "error: %v", err)
	require.Equal(t, errs.Invalid, e.Kind, "error: %v", err)
	require.NotEmpty(t, e.Message)
	return e
}

// requireConflict asserts err is a *ConflictError with code.
func requireConflict(t testing.TB, err error, code string) *errs.Error {
	t.Helper()
	require.Error(t, err)
	var e *errs.Error
	require.ErrorAs(t, err, &e, "error: %v", err)
	require.Equal(t, code, e.Code, "error: %v", err)
	require.Equal(t, errs.Conflict, e.Kind, "error: %v", err)
	require.NotEmpty(t, e.Message)
	require.NotEmpty(t, e.Hint)
	return e
}

// requireNotFound asserts err is a *NotFoundError for kind and name.
func requireNotFound(t testing.TB, err error, kind, name string) {
	t.Helper()
	var e *errs.Error
	require.ErrorAs(t, err, &e, "error: %v", err)
	require.Equal(t, errs.NotFound, e.Kind)
	require.Equal(t, fmt.Sprintf("%s %q does not exist", kind, name), e.Message)
	require.NotEmpty(t, e.Hint)
	require.ErrorIs(t, err, store.ErrNotFound)
}

// auditHead returns the audit log's head: it moves with every record.
func auditHead(t testing.TB, st *store.Store) store.AuditHead {
	t.Helper()
	h, err := st.AuditHead(context.Background())
	require.NoError(t, err)
	return h
}

// auditAll returns every audit record, oldest first.
func auditAll(t testing.TB, log *audit.Log) []audit.Record {
	t.Helper()
	var out []audit.Record
	var after int64
	for {
		page, err := log.List(context.Background(), audit.Filter{Ascending: true, AfterSeq: after, Limit: 100})
		require.NoError(t, err)
		out = append(out, page...)
		if len(page) < 100 {
			return out
		}
		after = page[len(page)-1].Seq
	}
}

// lastAudit returns the newest audit record and checks its action.
func lastAudit(t testing.TB, log *audit.Log, action string) audit.Record {
	t.Helper()
	recs, err := log.List(context.Background(), audit.Filter{Limit: 1})
	require.NoError(t, err)
	require.Len(t, recs, 1)
	require.Equal(t, action, recs[0].Action)
	return recs[0]
}

// details decodes a record's details into a value of type T.
func details[T any](t testing.TB, r audit.Record) T {
	t.Helper()
	var v T
	require.NoError(t, json.Unmarshal(r.Details, &v), "details: %s", r.Details)
	return v
}

// statuses lists an identity's version statuses by version number.
func statuses(ident truststore.Identity) map[int]string {
	out := map[int]string{}
	for _, v := range ident.Versions {
		out[v.Version] = v.Status
	}
	return out
}

// identityID reads an identity's row id, which the API never shows.
func identityID(t testing.TB, st *store.Store, name string) string {
	t.Helper()
	var id string
	require.NoError(t, st.DB().QueryRowContext(context.Background(), "SELECT id FROM identities WHERE name = $1", name).Scan(&id))
	return id
}

// sealedKey reads one version's sealed key straight from the database.
func sealedKey(t testing.TB, st *store.Store, identityID string, version int) []byte {
	t.Helper()
	var blob []byte
	require.NoError(t, st.DB().QueryRowContext(context.Background(),
		"SELECT sealed_key FROM identity_versions WHERE identity_id = $1 AND version = $2", identityID, version).Scan(&blob))
	return blob
}

// setSealedKey overwrites one version's sealed key, as an attacker with
// database access (or a botched restore) would.
func setSealedKey(t testing.TB, st *store.Store, identityID string, version int, blob []byte) {
	t.Helper()
	res, err := st.DB().ExecContext(context.Background(),
		"UPDATE identity_versions SET sealed_key = $1 WHERE identity_id = $2 AND version = $3", blob, identityID, version)
	require.NoError(t, err)
	n, err := res.RowsAffected()
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
}

// signCSR issues a client certificate for a CSR from ca, as the
// organisation's CA does for `identity create`: valid from an hour before
// t0 for ninety days, extended key usage clientAuth.
func signCSR(t testing.TB, ca *truststoretest.CA, csrPEM string) []byte {
	t.Helper()
	csr, err := pki.ParseCSR([]byte(csrPEM))
	require.NoError(t, err)
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(1)),
		Subject:               csr.Subject,
		DNSNames:              csr.DNSNames,
		NotBefore:             t0.Add(-time.Hour),
		NotAfter:              t0.Add(90 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return pki.EncodeCertificatesPEM(cert)
}

// samePublicKey asserts that key is the private half of pub.
func samePublicKey(t testing.TB, pub crypto.PublicKey, key crypto.PrivateKey) {
	t.Helper()
	signer, ok := key.(crypto.Signer)
	require.True(t, ok, "%T is not a crypto.Signer", key)
	eq, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	require.True(t, ok)
	require.True(t, eq.Equal(pub), "the private key does not belong to the public key")
}
