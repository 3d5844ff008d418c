package app

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/config"
	"github.com/trustflow/trustflow/internal/custody"
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
	a, err := New(context.Background(), cfg, Options{Stderr: io.Discard, Logger: slog.New(slog.NewTextHandler(logs, nil)), KEKRefresh: 20 * time.Millisecond})
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

// storedKEKIDs lists the KEK ids that sealed values of every registered
// column name.
func storedKEKIDs(t *testing.T, st *store.Store) []string {
	t.Helper()
	counts, err := st.SealedKEKCounts(context.Background())
	require.NoError(t, err)
	var ids []string
	for _, byKEK := range counts {
		for id := range byKEK {
			if !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
	}
	slices.Sort(ids)
	return ids
}

// kekStates returns the recorded KEKs as id -> state.
func kekStates(t *testing.T, st *store.Store) map[string]string {
	t.Helper()
	recs, err := st.KEKs(context.Background())
	require.NoError(t, err)
	out := map[string]string{}
	for _, r := range recs {
		out[r.ID] = r.State
	}
	return out
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
	From     []string       `json:"from_kek_ids"`
	To       string         `json:"to_kek_id"`
	Keys     int            `json:"keys"`
	Verified int            `json:"verified"`
	Columns  map[string]int `json:"columns"`
}

func postRotate(t *testing.T, a *App, query string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, a.URL()+"/api/v1/kek/rotate"+query, nil)
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
			require.Equal(t, map[string]string{oldID: store.KEKActive}, kekStates(t, a.Store), "the first start records the KEK id, never the key")

			resp, body := postRotate(t, a, "")
			require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
			var res custody.Result
			require.NoError(t, json.Unmarshal(body, &res))
			newID := loadKEKID(t, cfg.KEKFile)
			require.NotEqual(t, oldID, newID)
			require.Equal(t, custody.Result{FromKEKs: []string{oldID}, ToKEK: newID, Keys: 1, Total: 1, Verified: 1,
				Columns: map[string]int{"identity key": 1}}, res)
			require.Equal(t, map[string]string{oldID: store.KEKRetired, newID: store.KEKActive}, kekStates(t, a.Store))

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
			require.Equal(t, rotationDetails{From: []string{oldID}, To: newID, Keys: 1, Verified: 1, Columns: map[string]int{"identity key": 1}}, det)
			require.NotContains(t, logs.String(), string(bytes.TrimSpace(newFile)))

			// Streamed: progress lines, then the result.
			resp, body = postRotate(t, a, "?progress=true")
			require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
			require.Equal(t, "application/x-ndjson", resp.Header.Get("Content-Type"))
			lines := bytes.Split(bytes.TrimSpace(body), []byte("\n"))
			require.Len(t, lines, 2, "%s", body)
			require.JSONEq(t, `{"rewrapped":1,"total":1}`, string(lines[0]))
			var final struct {
				Result custody.Result `json:"result"`
			}
			require.NoError(t, json.Unmarshal(lines[1], &final))
			require.Equal(t, []string{newID}, final.Result.FromKEKs)
			thirdID := loadKEKID(t, cfg.KEKFile)
			require.Equal(t, thirdID, final.Result.ToKEK)
			require.NoError(t, a.Stop())

			// A new server on the same data dir opens the key with the new KEK.
			b := newKEKApp(t, cfg, io.Discard)
			require.Empty(t, b.AdminToken, "the second start does not create another admin token")
			requireActiveOpens(t, b, "payments", leaf)
			require.NoError(t, b.Stop())

			// The old KEK alone does not even start: it is not the active one.
			require.NoError(t, os.WriteFile(cfg.KEKFile, oldFile, 0o600))
			_, err = New(context.Background(), cfg, Options{Stderr: io.Discard, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			var wrong *custody.WrongKEKError
			require.ErrorAs(t, err, &wrong)
			require.Equal(t, thirdID, wrong.Expected)
			require.Equal(t, []string{oldID}, wrong.Holds)
			require.ErrorContains(t, err, "the database's active key-encryption key is "+thirdID+", but this node's source file://"+cfg.KEKFile+" holds "+oldID)
		})
	}
}

func TestKEKRotationFailureKeepsEveryKey(t *testing.T) {
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

			resp, body := postRotate(t, a, "")
			require.Equal(t, http.StatusInternalServerError, resp.StatusCode, "%s", body)
			var apiErr struct {
				Error struct {
					Code    string `json:"code"`
					Message string `json:"message"`
				} `json:"error"`
			}
			require.NoError(t, json.Unmarshal(body, &apiErr))
			require.Equal(t, "kek_rotation_failed", apiErr.Error.Code)
			require.Contains(t, apiErr.Error.Message, "re-wrap the identity key [")

			// The old key stays where it was, the new one waits beside it,
			// and both are held: every intact value opens.
			got, err := os.ReadFile(cfg.KEKFile)
			require.NoError(t, err)
			require.Equal(t, oldFile, got)
			next, err := seal.LoadKEKFile(cfg.KEKFile + ".next")
			require.NoError(t, err)
			require.ElementsMatch(t, []string{oldID, next.ID()}, a.Trust.Keyring().IDs())
			require.Equal(t, map[string]string{oldID: store.KEKRetiring, next.ID(): store.KEKActive}, kekStates(t, a.Store))
			requireActiveOpens(t, a, "payments", good)
			require.NoError(t, a.Stop())

			// A restart serves (the damaged value blocks only the rotation).
			var logs kekLog
			b := newKEKApp(t, cfg, &logs)
			requireActiveOpens(t, b, "payments", good)
			require.Contains(t, logs.String(), "the interrupted key-encryption key rotation cannot finish yet")
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

// Each case leaves the data dir and the database as a rotation stopped at
// some point would (the process test kills real ones); the next start
// must serve with every value readable, and end with one KEK.
func TestKEKRotationFinishesAfterACrash(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// crash leaves the state a rotation to next interrupted would.
		crash func(t *testing.T, a *App, cfg config.Config, next *seal.KEK)
		// rotated says whether next is the KEK once the restart is done.
		rotated bool
	}{
		{"after writing kek.next, before it became active", func(t *testing.T, a *App, cfg config.Config, next *seal.KEK) {
			require.NoError(t, seal.WriteKEKFile(cfg.KEKFile+".next", next))
		}, false},
		{"after it became active, before any re-wrap", func(t *testing.T, a *App, cfg config.Config, next *seal.KEK) {
			require.NoError(t, seal.WriteKEKFile(cfg.KEKFile+".next", next))
			beginRotation(t, a, next)
		}, true},
		{"half-way through the re-wrap", func(t *testing.T, a *App, cfg config.Config, next *seal.KEK) {
			require.NoError(t, seal.WriteKEKFile(cfg.KEKFile+".next", next))
			beginRotation(t, a, next)
			rewrapOne(t, a, next)
		}, true},
		{"after the old KEK was retired, before the file was replaced", func(t *testing.T, a *App, cfg config.Config, next *seal.KEK) {
			require.NoError(t, seal.WriteKEKFile(cfg.KEKFile+".next", next))
			beginRotation(t, a, next)
			rewrapOne(t, a, next)
			rewrapOne(t, a, next)
			_, err := a.Store.DB().ExecContext(context.Background(), "UPDATE keks SET state = 'retired' WHERE state = 'retiring'")
			require.NoError(t, err)
		}, true},
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
				want := oldID
				if tc.rotated {
					want = next.ID()
				}
				if tc.rotated && !strings.HasPrefix(tc.name, "after the old KEK was retired") {
					require.Contains(t, logs.String(), "finishing an interrupted key-encryption key rotation")
				}
				require.Equal(t, want, loadKEKID(t, cfg.KEKFile))
				requireNoNext(t, cfg)
				require.Equal(t, []string{want}, b.Trust.Keyring().IDs())
				require.Equal(t, []string{want}, storedKEKIDs(t, b.Store))
				requireActiveOpens(t, b, "payments", leaf)
				requireActiveOpens(t, b, "billing", other)
				require.NoError(t, b.Stop())

				// And the next start is an ordinary one, with only one KEK.
				var again kekLog
				c := newKEKApp(t, cfg, &again)
				require.NotContains(t, again.String(), "interrupted")
				require.Equal(t, []string{want}, c.Trust.Keyring().IDs())
				requireActiveOpens(t, c, "payments", leaf)
			})
		}
	}
}

// beginRotation records next as active and the current KEK as retiring,
// as the first transaction of a rotation does.
func beginRotation(t *testing.T, a *App, next *seal.KEK) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, a.Store.InTx(ctx, func(tx *store.Tx) error {
		if _, err := tx.SQL().ExecContext(ctx, "UPDATE keks SET state = 'retiring' WHERE state = 'active'"); err != nil {
			return err
		}
		now := time.Now()
		return tx.PutKEK(ctx, store.KEKRecord{ID: next.ID(), State: store.KEKActive, Source: "test", CreatedAt: now, ActivatedAt: &now})
	}))
}

// rewrapOne re-wraps one identity key still under another KEK to next.
func rewrapOne(t *testing.T, a *App, next *seal.KEK) {
	t.Helper()
	ctx := context.Background()
	col := store.SealedColumns()[0]
	require.Equal(t, "identity_versions", col.Table)
	page, err := a.Store.SealedPage(ctx, nil, col, next.ID(), nil, 1)
	require.NoError(t, err)
	require.Len(t, page, 1)
	blob, err := a.Trust.Keyring().Rewrap(page[0].Blob, next)
	require.NoError(t, err)
	require.NoError(t, a.Store.InTx(ctx, func(tx *store.Tx) error {
		ok, err := tx.ReplaceSealed(ctx, col, page[0], blob, next.ID())
		require.True(t, ok)
		return err
	}))
}

// A node started against a database with an empty data dir never makes a
// KEK of its own: it refuses, naming the key it needs.
func TestNodeWithoutTheKEKRefusesToStart(t *testing.T) {
	t.Parallel()
	for _, d := range storetest.Dialects(t) {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			cfg := kekConfig(t, d)
			a := newKEKApp(t, cfg, io.Discard)
			importIdentity(t, a, "payments")
			id := loadKEKID(t, cfg.KEKFile)
			require.NoError(t, a.Stop())

			empty := cfg
			empty.DataDir = filepath.Join(t.TempDir(), "other")
			empty.KEKFile, empty.KEK = "", ""
			if d == store.SQLite {
				empty.DatabaseURL = "sqlite:" + filepath.Join(cfg.DataDir, config.SQLiteFileName)
			}
			empty = empty.WithDefaults()
			_, err := New(context.Background(), empty, Options{Stderr: io.Discard, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			var wrong *custody.WrongKEKError
			require.ErrorAs(t, err, &wrong)
			require.Equal(t, id, wrong.Expected)
			require.Empty(t, wrong.Holds)
			_, statErr := os.Stat(empty.KEKFile)
			require.ErrorIs(t, statErr, fs.ErrNotExist, "no KEK was created")

			// Another KEK is refused the same way, before anything is served.
			other, err := seal.NewKEK()
			require.NoError(t, err)
			require.NoError(t, seal.WriteKEKFile(empty.KEKFile, other))
			_, err = New(context.Background(), empty, Options{Stderr: io.Discard, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			require.ErrorAs(t, err, &wrong)
			require.Equal(t, []string{other.ID()}, wrong.Holds)
		})
	}
}

// Sealed values whose KEK the node lacks stop the start, named by column,
// unless --allow-missing-kek, which is audited.
func TestStartupNamesSealedValuesItCannotOpen(t *testing.T) {
	t.Parallel()
	for _, d := range storetest.Dialects(t) {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			cfg := kekConfig(t, d)
			a := newKEKApp(t, cfg, io.Discard)
			importIdentity(t, a, "payments")
			foreign, err := seal.NewKEK()
			require.NoError(t, err)
			blob, err := seal.NewKeyring(foreign).Seal([]byte("x"), store.IdentityKeyAAD("id-x", 1))
			require.NoError(t, err)
			_, err = a.Store.DB().ExecContext(context.Background(), "UPDATE identity_versions SET sealed_key = $1, kek_id = $2", blob, foreign.ID())
			require.NoError(t, err)
			require.NoError(t, a.Stop())

			_, err = New(context.Background(), cfg, Options{Stderr: io.Discard, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			var missing *custody.MissingKEKError
			require.ErrorAs(t, err, &missing)
			require.Equal(t, map[string][]string{foreign.ID(): {"identity_versions.sealed_key: 1"}}, missing.Missing)
			require.ErrorContains(t, err, "--allow-missing-kek")

			allow := cfg
			allow.AllowMissingKEK = true
			b := newKEKApp(t, allow, io.Discard)
			recs, err := b.Audit.List(context.Background(), audit.Filter{Action: "kek.missing_allowed"})
			require.NoError(t, err)
			require.Len(t, recs, 1)
			require.Contains(t, string(recs[0].Details), foreign.ID())
		})
	}
}

// An env:// source cannot make keys: the operator puts the new key in the
// variable and the old one in NAME_PREVIOUS, and the rotation re-wraps to it.
func TestKEKRotationWithAnEnvSource(t *testing.T) {
	t.Parallel()
	for _, d := range storetest.Dialects(t) {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			cfg := kekConfig(t, d)
			cfg.KEK = "env://TF_TEST_KEK"
			env := map[string]string{}
			start := func() *App {
				a, err := New(context.Background(), cfg, Options{Stderr: io.Discard, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
					KEKRefresh: 20 * time.Millisecond, Getenv: func(k string) string { return env[k] }})
				require.NoError(t, err)
				t.Cleanup(func() { a.Stop() })
				require.NoError(t, a.Start(context.Background()))
				return a
			}
			first, err := seal.NewKEK()
			require.NoError(t, err)
			second, err := seal.NewKEK()
			require.NoError(t, err)
			b64 := func(k *seal.KEK) string { s, err := seal.EncodeKEK(k); require.NoError(t, err); return s }

			_, err = New(context.Background(), cfg, Options{Stderr: io.Discard, Getenv: func(k string) string { return env[k] }})
			require.ErrorIs(t, err, seal.ErrReadOnlySource, "an unset variable is never filled in by trustflow")

			env["TF_TEST_KEK"] = b64(first)
			a := start()
			leaf := importIdentity(t, a, "payments")
			_, statErr := os.Stat(cfg.KEKFile)
			require.ErrorIs(t, statErr, fs.ErrNotExist, "no key file is written for an env:// source")

			resp, body := postRotate(t, a, "")
			require.Equal(t, http.StatusConflict, resp.StatusCode, "%s", body)
			require.Contains(t, string(body), `"code": "kek_source_read_only"`)
			require.Contains(t, string(body), "TF_TEST_KEK_PREVIOUS")
			require.NoError(t, a.Stop())

			env["TF_TEST_KEK"], env["TF_TEST_KEK_PREVIOUS"] = b64(second), b64(first)
			b := start()
			b.AdminToken = a.AdminToken // printed at the first start only
			requireActiveOpens(t, b, "payments", leaf)
			resp, body = postRotate(t, b, "")
			require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
			var res custody.Result
			require.NoError(t, json.Unmarshal(body, &res))
			require.Equal(t, custody.Result{FromKEKs: []string{first.ID()}, ToKEK: second.ID(), Keys: 1, Total: 1, Verified: 1,
				Columns: map[string]int{"identity key": 1}}, res)
			require.NoError(t, b.Stop())

			delete(env, "TF_TEST_KEK_PREVIOUS")
			c := start()
			requireActiveOpens(t, c, "payments", leaf)
			require.Equal(t, []string{second.ID()}, c.Trust.Keyring().IDs())
		})
	}
}
