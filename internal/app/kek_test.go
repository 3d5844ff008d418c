package app

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/config"
	"github.com/trustflow/trustflow/internal/seal"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
	"github.com/trustflow/trustflow/internal/truststore"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

// kekLog is a log sink safe for the server's goroutines.
type kekLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *kekLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *kekLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// kekConfig is a config for a fresh data dir and a fresh database of
// dialect d (SQLite in the data dir, or a PostgreSQL schema of its own).
func kekConfig(t *testing.T, d store.Dialect) config.Config {
	t.Helper()
	cfg := config.Config{DataDir: filepath.Join(t.TempDir(), "data"), Listen: "127.0.0.1:0"}
	if d == store.Postgres {
		cfg.DatabaseURL = storetest.DatabaseURL(t, d)
	}
	return cfg.WithDefaults()
}

// newKEKApp builds the server on cfg, logging to logs; it is stopped at
// cleanup (Stop is idempotent, so tests may stop it earlier).
func newKEKApp(t *testing.T, cfg config.Config, logs io.Writer) *App {
	t.Helper()
	a, err := New(context.Background(), cfg, Options{Stderr: io.Discard, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	require.NoError(t, err)
	t.Cleanup(func() { a.Stop() })
	return a
}

// importIdentity imports a fresh client identity named name and returns its
// leaf.
func importIdentity(t *testing.T, a *App, name string) *truststoretest.Leaf {
	t.Helper()
	leaf := truststoretest.NewCA(t).IssueClient(t, name)
	_, err := a.Trust.Import(context.Background(), audit.System, truststore.ImportRequest{
		Name: name, Material: truststore.Material{Cert: leaf.CertPEM(), Key: leaf.KeyPEM()},
	})
	require.NoError(t, err)
	return leaf
}

// requireActiveOpens asserts that a serves name's key, the private half of
// leaf's certificate.
func requireActiveOpens(t *testing.T, a *App, name string, leaf *truststoretest.Leaf) {
	t.Helper()
	ac, err := a.Trust.Active(context.Background(), name)
	require.NoError(t, err)
	signer, ok := ac.Certificate.PrivateKey.(crypto.Signer)
	require.True(t, ok)
	require.True(t, leaf.Cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(signer.Public()))
}

func loadKEKID(t *testing.T, path string) string {
	t.Helper()
	k, err := seal.LoadKEKFile(path)
	require.NoError(t, err)
	return k.ID()
}

func requireNoNext(t *testing.T, cfg config.Config) {
	t.Helper()
	_, err := os.Stat(cfg.KEKFile + ".next")
	require.ErrorIs(t, err, fs.ErrNotExist, "no unfinished rotation is left behind")
}

// storedKEKIDs lists the KEK ids the sealed keys name.
func storedKEKIDs(t *testing.T, st *store.Store) []string {
	t.Helper()
	rows, err := st.DB().QueryContext(context.Background(), "SELECT DISTINCT kek_id FROM identity_versions ORDER BY kek_id")
	require.NoError(t, err)
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		require.NoError(t, rows.Scan(&id))
		ids = append(ids, id)
	}
	require.NoError(t, rows.Err())
	return ids
}

// lastKEKRotation returns the newest kek.rotate audit record.
func lastKEKRotation(t *testing.T, a *App) audit.Record {
	t.Helper()
	recs, err := a.Audit.List(context.Background(), audit.Filter{Action: "kek.rotate", Limit: 1})
	require.NoError(t, err)
	require.Len(t, recs, 1)
	return recs[0]
}

type rotationDetails struct {
	From []string `json:"from_kek_ids"`
	To   string   `json:"to_kek_id"`
	Keys int      `json:"keys"`
	Pass int      `json:"pass"`
}

func postRotate(t *testing.T, a *App) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, a.URL()+"/api/v1/kek/rotate", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+a.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, body
}

func TestKEKRotationOverHTTP(t *testing.T) {
	t.Parallel()
	for _, d := range storetest.Dialects(t) {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			cfg := kekConfig(t, d)
			var logs kekLog
			a := newKEKApp(t, cfg, &logs)
			require.NoError(t, a.Start(context.Background()))
			leaf := importIdentity(t, a, "payments")
			oldFile, err := os.ReadFile(cfg.KEKFile)
			require.NoError(t, err)
			oldID := loadKEKID(t, cfg.KEKFile)

			resp, body := postRotate(t, a)
			require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
			var res truststore.RewrapResult
			require.NoError(t, json.Unmarshal(body, &res))
			newID := loadKEKID(t, cfg.KEKFile)
			require.NotEqual(t, oldID, newID)
			require.Equal(t, truststore.RewrapResult{FromKEKs: []string{oldID}, ToKEK: newID, Keys: 1}, res)

			newFile, err := os.ReadFile(cfg.KEKFile)
			require.NoError(t, err)
			require.NotEqual(t, oldFile, newFile, "the kek file was replaced")
			fi, err := os.Stat(cfg.KEKFile)
			require.NoError(t, err)
			require.Equal(t, fs.FileMode(0o600), fi.Mode().Perm())
			requireNoNext(t, cfg)
			require.Equal(t, []string{newID}, a.Trust.Keyring().IDs(), "the old KEK is dropped from memory")
			require.Equal(t, []string{newID}, storedKEKIDs(t, a.Store))
			requireActiveOpens(t, a, "payments", leaf)
			rec := lastKEKRotation(t, a)
			require.Equal(t, "admin", rec.Actor.Role)
			var det rotationDetails
			require.NoError(t, json.Unmarshal(rec.Details, &det))
			require.Equal(t, rotationDetails{From: []string{oldID}, To: newID, Keys: 1, Pass: 1}, det)
			require.NotContains(t, logs.String(), string(bytes.TrimSpace(newFile)))
			require.NoError(t, a.Stop())

			// A new server on the same data dir opens the key with the new KEK.
			b := newKEKApp(t, cfg, io.Discard)
			require.Empty(t, b.AdminToken, "the second start does not create another admin token")
			requireActiveOpens(t, b, "payments", leaf)
			require.NoError(t, b.Stop())

			// The old KEK alone no longer opens it.
			require.NoError(t, os.WriteFile(cfg.KEKFile, oldFile, 0o600))
			c := newKEKApp(t, cfg, io.Discard)
			_, err = c.Trust.Active(context.Background(), "payments")
			var ku *truststore.KeyUnavailableError
			require.ErrorAs(t, err, &ku)
			require.ErrorIs(t, err, seal.ErrUnknownKEK)
		})
	}
}

func TestKEKRotationFailureLeavesTheOldKEK(t *testing.T) {
	t.Parallel()
	for _, d := range storetest.Dialects(t) {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			cfg := kekConfig(t, d)
			a := newKEKApp(t, cfg, io.Discard)
			require.NoError(t, a.Start(context.Background()))
			good := importIdentity(t, a, "payments")
			importIdentity(t, a, "billing")
			oldFile, err := os.ReadFile(cfg.KEKFile)
			require.NoError(t, err)
			oldID := loadKEKID(t, cfg.KEKFile)

			// Damage billing's wrapped data key: the rotation cannot unwrap it.
			ctx := context.Background()
			_, err = a.Store.DB().ExecContext(ctx, "UPDATE identity_versions SET sealed_key = $1 WHERE identity_id = (SELECT id FROM identities WHERE name = $2)",
				flipByte(t, a, "billing", 30), "billing")
			require.NoError(t, err)

			resp, body := postRotate(t, a)
			require.Equal(t, http.StatusInternalServerError, resp.StatusCode, "%s", body)
			var apiErr struct {
				Error struct {
					Code string `json:"code"`
				} `json:"error"`
			}
			require.NoError(t, json.Unmarshal(body, &apiErr))
			require.Equal(t, "key_unavailable", apiErr.Error.Code)

			got, err := os.ReadFile(cfg.KEKFile)
			require.NoError(t, err)
			require.Equal(t, oldFile, got)
			requireNoNext(t, cfg)
			require.Equal(t, []string{oldID}, a.Trust.Keyring().IDs())
			require.Equal(t, []string{oldID}, storedKEKIDs(t, a.Store))
			requireActiveOpens(t, a, "payments", good)
		})
	}
}

// flipByte returns the identity's sealed key with one byte changed.
func flipByte(t *testing.T, a *App, name string, offset int) []byte {
	t.Helper()
	var blob []byte
	require.NoError(t, a.Store.DB().QueryRowContext(context.Background(),
		"SELECT sealed_key FROM identity_versions WHERE identity_id = (SELECT id FROM identities WHERE name = $1)", name).Scan(&blob))
	blob[offset] ^= 0x01
	return blob
}

func TestKEKRotationFinishesAfterACrash(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// crash leaves the data dir as a rotation to next interrupted at
		// some point would.
		crash func(t *testing.T, a *App, cfg config.Config, next *seal.KEK)
		// keys is how many keys the restart still has to re-wrap.
		keys int
	}{
		{"after writing kek.next, before re-wrapping", func(t *testing.T, a *App, cfg config.Config, next *seal.KEK) {
			require.NoError(t, seal.WriteKEKFile(cfg.KEKFile+".next", next))
		}, 2},
		{"after the re-wrap committed, before the rename", func(t *testing.T, a *App, cfg config.Config, next *seal.KEK) {
			require.NoError(t, seal.WriteKEKFile(cfg.KEKFile+".next", next))
			res, err := a.Trust.Rewrap(context.Background(), audit.System, seal.NewKeyring(next, a.Trust.Keyring().KEKs()...), next)
			require.NoError(t, err)
			require.Equal(t, 2, res.Keys)
		}, 0},
	}
	for _, tc := range cases {
		for _, d := range storetest.Dialects(t) {
			t.Run(tc.name+"/"+string(d), func(t *testing.T) {
				t.Parallel()
				cfg := kekConfig(t, d)
				a := newKEKApp(t, cfg, io.Discard)
				leaf := importIdentity(t, a, "payments")
				other := importIdentity(t, a, "billing")
				oldID := loadKEKID(t, cfg.KEKFile)
				next, err := seal.NewKEK()
				require.NoError(t, err)
				tc.crash(t, a, cfg, next)
				require.NoError(t, a.Stop())
				require.Equal(t, oldID, loadKEKID(t, cfg.KEKFile), "the crash left the old KEK in place")

				var logs kekLog
				b := newKEKApp(t, cfg, &logs)
				require.Equal(t, next.ID(), loadKEKID(t, cfg.KEKFile), "the kek file is the .next key")
				requireNoNext(t, cfg)
				require.Equal(t, []string{next.ID()}, b.Trust.Keyring().IDs())
				require.Equal(t, []string{next.ID()}, storedKEKIDs(t, b.Store))
				requireActiveOpens(t, b, "payments", leaf)
				requireActiveOpens(t, b, "billing", other)
				require.Contains(t, logs.String(), "finishing an interrupted key-encryption key rotation")
				rec := lastKEKRotation(t, b)
				require.Equal(t, audit.System, rec.Actor)
				var det rotationDetails
				require.NoError(t, json.Unmarshal(rec.Details, &det))
				require.Equal(t, next.ID(), det.To)
				require.Equal(t, tc.keys, det.Keys)
				require.NoError(t, b.Stop())

				// And the next start is an ordinary one, with only the new KEK.
				var again kekLog
				c := newKEKApp(t, cfg, &again)
				require.NotContains(t, again.String(), "interrupted")
				require.Equal(t, []string{next.ID()}, c.Trust.Keyring().IDs())
				requireActiveOpens(t, c, "payments", leaf)
			})
		}
	}
}

// hookClock is the wall clock, except that its next Now runs hook first:
// the audit log asks for the time inside the re-wrap's transaction, which
// lets a test act between a pass's reads and its commit.
type hookClock struct {
	mu   sync.Mutex
	hook func()
}

func (c *hookClock) Now() time.Time {
	c.mu.Lock()
	h := c.hook
	c.hook = nil
	c.mu.Unlock()
	if h != nil {
		h()
	}
	return time.Now()
}

func (c *hookClock) next(h func()) {
	c.mu.Lock()
	c.hook = h
	c.mu.Unlock()
}

// A key sealed under the old KEK while the first pass runs is left for the
// second pass. When that pass fails, the first pass has already committed
// every other key under the new KEK, so the new KEK must survive on disk.
func TestKEKRotationKeepsTheNewKEKWhenALaterPassFails(t *testing.T) {
	t.Parallel()
	if !slices.Contains(storetest.Dialects(t), store.Postgres) {
		t.Skip("needs PostgreSQL: the late key is written by a second writer while the first pass holds its transaction")
	}
	cfg := kekConfig(t, store.Postgres)
	clk := &hookClock{}
	a, err := New(context.Background(), cfg, Options{Stderr: io.Discard, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Clock: clk})
	require.NoError(t, err)
	t.Cleanup(func() { a.Stop() })
	leaf := importIdentity(t, a, "payments")
	oldID := loadKEKID(t, cfg.KEKFile)
	var identity string
	var blob []byte
	require.NoError(t, a.Store.DB().QueryRowContext(context.Background(),
		"SELECT identity_id, sealed_key FROM identity_versions").Scan(&identity, &blob))
	late := bytes.Clone(blob)
	late[30] ^= 0x01 // a late key that will not re-wrap

	clk.next(func() {
		_, err := a.Store.DB().ExecContext(context.Background(), `INSERT INTO identity_versions (identity_id, version, status, source, key_type,
			sealed_key, kek_id, csr_pem, cert_pem, chain_pem, serial, subject, issuer, fingerprint, activate_on_install, created_at)
			VALUES ($1, 2, 'staged', 'imported', 'ecdsa-p256', $2, $3, '', '', '', '', '', '', '', false, 0)`, identity, late, oldID)
		require.NoError(t, err)
	})
	kf := &kekFiles{path: cfg.KEKFile, trust: a.Trust}
	_, err = kf.rotate(context.Background(), audit.System)
	var ku *truststore.KeyUnavailableError
	require.ErrorAs(t, err, &ku)
	require.Equal(t, 2, ku.Version)

	// Whatever the next start does about the late key, the KEKs on disk
	// still open every intact key.
	var onDisk []*seal.KEK
	for _, path := range []string{cfg.KEKFile, cfg.KEKFile + ".next"} {
		k, err := seal.LoadKEKFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		require.NoError(t, err)
		onDisk = append(onDisk, k)
	}
	fromDisk, err := truststore.New(truststore.Config{Store: a.Store, Audit: a.Audit, Keyring: seal.NewKeyring(onDisk[0], onDisk[1:]...)})
	require.NoError(t, err)
	ac, err := fromDisk.Active(context.Background(), "payments")
	require.NoError(t, err)
	require.True(t, leaf.Cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(ac.Certificate.PrivateKey.(crypto.Signer).Public()))
}
