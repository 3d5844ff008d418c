package backup

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/custody"
	"github.com/trustflow/trustflow/internal/seal"
	"github.com/trustflow/trustflow/internal/store"
)

// TestBackupAndRestore backs up a live database and restores it into an
// empty data dir three ways: with the KEK file copied separately, and with
// the KEK included under each key derivation.
func TestBackupAndRestore(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		include  bool
		kdf      KDF
		unkeyed  bool
		keyFiles []string
	}{
		{name: "keys copied separately"},
		{name: "keys included, scrypt", include: true, kdf: testKDF, keyFiles: []string{"kek", "audit.key"}},
		{name: "keys included, pbkdf2", include: true, kdf: KDF{Name: KDFPBKDF2, Iterations: 1000}, keyFiles: []string{"kek", "audit.key"}},
		{name: "a chain without an audit key, kek included", include: true, kdf: testKDF, unkeyed: true, keyFiles: []string{"kek"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			src := newInstallKeyed(t, !tc.unkeyed)
			active := src.keys.ActiveID()
			auditKeyID := src.log.KeyID()
			outDir := t.TempDir()
			out := filepath.Join(outDir, "trustflow.tar")
			cfg := src.config(t, out)
			cfg.IncludeKEK, cfg.KDF = tc.include, tc.kdf
			if tc.include {
				cfg.Passphrase = testPassphrase
			}
			res, err := Create(t.Context(), cfg)
			require.NoError(t, err)

			// One file, 0600, nothing else left beside it.
			require.Equal(t, []string{"trustflow.tar"}, fileNames(t, outDir))
			fi, err := os.Stat(out)
			require.NoError(t, err)
			require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
			data, err := os.ReadFile(out)
			require.NoError(t, err)
			require.Equal(t, int64(len(data)), res.Size)
			require.Equal(t, sum(data), res.SHA256)
			require.NotContains(t, string(data), "whsec-", "sealed values stay sealed")

			latest, err := store.LatestSchemaVersion(store.SQLite)
			require.NoError(t, err)
			want := Manifest{Format: Format, FormatVersion: 1, TrustflowVersion: "1.2.3", TrustflowCommit: "abc123", CreatedAt: testNow,
				Dialect: "sqlite", SchemaVersion: latest, ActiveKEK: active, KEKIDs: []string{active},
				KEKSource: "file://" + src.kekFile, KEKIncluded: tc.include, Members: res.Manifest.Members}
			if !tc.unkeyed {
				want.AuditKeyID, want.AuditKeySource, want.AuditKeyIncluded = auditKeyID, "file://"+src.auditKeyFile, tc.include
			}
			if tc.include {
				want.KEK = res.Manifest.KEK
				require.Equal(t, tc.kdf.Name, res.Manifest.KEK.KDF)
				require.Len(t, res.Manifest.KEK.Salt, 32)
				require.Equal(t, []string{DatabaseName, KEKName}, []string{res.Manifest.Members[0].Name, res.Manifest.Members[1].Name})
				for _, f := range []string{src.kekFile, src.auditKeyFile} {
					if f == "" {
						continue
					}
					key, err := os.ReadFile(f)
					require.NoError(t, err)
					require.NotContains(t, string(data), string(bytes.Split(key, []byte("\n"))[1]), "no key is ever in clear")
				}
			} else {
				require.Len(t, res.Manifest.Members, 1)
			}
			require.Equal(t, want, res.Manifest)
			arch, err := Read(bytes.NewReader(data), new(bytes.Buffer))
			require.NoError(t, err)
			require.Equal(t, want, arch.Manifest)

			// Restore into a new data dir.
			dst := filepath.Join(t.TempDir(), "data")
			rc := restoreTo(out, dst)
			if tc.include {
				rc.Passphrase = testPassphrase
			} else {
				src.copyKeys(t, dst)
			}
			got, err := Restore(t.Context(), rc)
			require.NoError(t, err)
			files := []string{"audit.key", "kek", "trustflow.db"}
			if tc.unkeyed {
				files = files[1:]
			}
			require.Equal(t, files, fileNames(t, dst), "no temporary file is left")
			for _, name := range files {
				fi, err := os.Stat(filepath.Join(dst, name))
				require.NoError(t, err)
				require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), name)
			}
			var written []string
			for _, f := range tc.keyFiles {
				written = append(written, filepath.Join(dst, f))
			}
			require.Equal(t, Restored{File: out, SHA256: res.SHA256, Manifest: want, Database: rc.Database, MigratedTo: latest,
				KEKSource: "file://" + rc.KEKFile, AuditKeySource: "file://" + rc.AuditKeyFile, KeyFiles: written,
				AuditChain: got.AuditChain, AuditSeq: got.AuditSeq}, got)
			require.True(t, got.AuditChain.OK)
			require.Equal(t, got.AuditChain.HeadSeq+1, got.AuditSeq)
			k, err := seal.LoadKEKFile(rc.KEKFile)
			require.NoError(t, err)
			require.Equal(t, active, k.ID())

			if !tc.unkeyed {
				k, err := audit.FileKeySource{Path: rc.AuditKeyFile}.Load(t.Context())
				require.NoError(t, err)
				require.Equal(t, auditKeyID, k.ID())
				require.Equal(t, auditKeyID, got.AuditChain.KeyID, "the restored chain verified under its audit key")
			}

			st, _ := requireServes(t, dst, src.flows)
			recs, err := audit.New(st, nil).List(t.Context(), audit.Filter{Action: "backup.restore"})
			require.NoError(t, err)
			require.Len(t, recs, 1)
			require.Equal(t, got.AuditSeq, recs[0].Seq)
			require.Equal(t, audit.System, recs[0].Actor)
			require.Equal(t, "backup/"+res.SHA256[:16], recs[0].Target)
			var details map[string]any
			require.NoError(t, json.Unmarshal(recs[0].Details, &details))
			wantDetails := map[string]any{"audit_chain_intact": true, "backup_created_at": "2031-05-06T07:08:09.123456Z", "backup_schema_version": float64(latest),
				"backup_sha256": res.SHA256, "backup_trustflow_version": "1.2.3", "kek_ids": []any{active}, "kek_included": tc.include,
				"kek_source": "file://" + rc.KEKFile, "replaced_database": false, "schema_version": float64(latest)}
			if !tc.unkeyed {
				wantDetails["audit_key_id"] = auditKeyID
			}
			require.Equal(t, wantDetails, details)
		})
	}
}

// TestBackupIsConsistentWhileWriting takes backups while another
// connection keeps appending audit records (as a busy server does): every
// backup restores to an intact chain.
func TestBackupIsConsistentWhileWriting(t *testing.T) {
	t.Parallel()
	src := newInstall(t)
	log := src.log
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var appended int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if err := log.Record(ctx, audit.Entry{Actor: audit.System, Action: "test.write", Target: "t"}); err != nil {
				if ctx.Err() == nil {
					t.Errorf("append: %v", err)
				}
				return
			}
			appended++
		}
	}()
	dir := t.TempDir()
	var heads []int64
	for i := range 3 {
		out := filepath.Join(dir, "b.tar")
		_, err := Create(t.Context(), src.config(t, out))
		require.NoError(t, err, "backup %d", i)
		dst := filepath.Join(t.TempDir(), "data")
		rc := restoreTo(out, dst)
		src.copyKeys(t, dst)
		got, err := Restore(t.Context(), rc)
		require.NoError(t, err)
		require.True(t, got.AuditChain.OK, got.AuditChain.Problem)
		heads = append(heads, got.AuditChain.HeadSeq)
		requireServes(t, dst, src.flows)
	}
	cancel()
	wg.Wait()
	require.Greater(t, appended, 0)
	require.IsIncreasing(t, heads, "each backup saw the writes before it")
}

// TestRestoreRefuses checks every refusal, and that each leaves the data
// dir exactly as it was.
func TestRestoreRefuses(t *testing.T) {
	t.Parallel()
	src := newInstall(t)
	active, auditKeyID := src.keys.ActiveID(), src.log.KeyID()
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain.tar")
	_, err := Create(t.Context(), src.config(t, plain))
	require.NoError(t, err)
	withKEK := filepath.Join(dir, "with-kek.tar")
	cfg := src.config(t, withKEK)
	cfg.IncludeKEK, cfg.Passphrase = true, testPassphrase
	_, err = Create(t.Context(), cfg)
	require.NoError(t, err)
	data, err := os.ReadFile(plain)
	require.NoError(t, err)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, b, 0o600))
		return p
	}
	flipped := append([]byte{}, data...)
	flipped[len(flipped)/2] ^= 0x01
	other, err := seal.NewKEK()
	require.NoError(t, err)
	_, otherAudit, err := audit.NewKey()
	require.NoError(t, err)
	otherAuditKey, err := audit.ParseKey(otherAudit)
	require.NoError(t, err)

	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dst string, rc *RestoreConfig)
		is    error
		want  string // the error, with DST for the data dir
	}{
		{"wrong passphrase", func(t *testing.T, dst string, rc *RestoreConfig) {
			rc.In, rc.Passphrase = withKEK, "not the passphrase at all"
		}, ErrWrongPassphrase, "backup: restore: --passphrase-file: the passphrase does not decrypt the keys in the backup (a wrong passphrase, or the file was altered); nothing was changed"},
		{"keys neither in the backup nor in place", func(t *testing.T, dst string, rc *RestoreConfig) {}, nil,
			"backup: the backup's database needs key-encryption key " + active + " and audit key " + auditKeyID + ", which this installation does not hold " +
				"(it looked in file://DST/kek and file://DST/audit.key); copy them from the backed-up installation (file://" + src.kekFile + ", file://" + src.auditKeyFile + "), " +
				"or point --kek and --audit-key at a source that holds them; nothing was changed"},
		{"only the kek missing", func(t *testing.T, dst string, rc *RestoreConfig) {
			copyFile(t, src.auditKeyFile, rc.AuditKeyFile)
		}, nil, "backup: the backup's database needs key-encryption key " + active + ", which this installation does not hold (it looked in file://DST/kek); " +
			"copy them from the backed-up installation (file://" + src.kekFile + "), or point --kek at a source that holds them " +
			"(--allow-missing-kek restores anyway: the server then refuses to start until it has them); nothing was changed"},
		{"keys in the backup but no passphrase", func(t *testing.T, dst string, rc *RestoreConfig) { rc.In = withKEK }, nil,
			"; the backup includes them, encrypted: give its passphrase with --passphrase-file; nothing was changed"},
		{"a different kek in the source", func(t *testing.T, dst string, rc *RestoreConfig) {
			copyFile(t, src.auditKeyFile, rc.AuditKeyFile)
			require.NoError(t, seal.WriteKEKFile(rc.KEKFile, other))
		}, nil, "needs key-encryption key " + active + ", which this installation does not hold"},
		{"a different audit key, even with --allow-missing-kek", func(t *testing.T, dst string, rc *RestoreConfig) {
			copyFile(t, src.kekFile, rc.KEKFile)
			require.NoError(t, os.WriteFile(rc.AuditKeyFile, otherAudit, 0o600))
			rc.AllowMissingKEK = true
		}, nil, "needs audit key " + auditKeyID + ", which this installation does not hold (it looked in file://DST/audit.key)"},
		{"a different kek file, with the keys in the backup", func(t *testing.T, dst string, rc *RestoreConfig) {
			require.NoError(t, seal.WriteKEKFile(rc.KEKFile, other))
			rc.In, rc.Passphrase = withKEK, testPassphrase
		}, ErrExists, "backup: restore: DST/kek holds key-encryption key " + other.ID() + ", not the backup's key-encryption key " + active + "; nothing was changed"},
		{"a different audit key file, with the keys in the backup", func(t *testing.T, dst string, rc *RestoreConfig) {
			require.NoError(t, os.WriteFile(rc.AuditKeyFile, otherAudit, 0o600))
			rc.In, rc.Passphrase = withKEK, testPassphrase
		}, ErrExists, "backup: restore: DST/audit.key holds audit key " + otherAuditKey.ID() + ", not the backup's audit key " + auditKeyID + "; nothing was changed"},
		{"an existing database", func(t *testing.T, dst string, rc *RestoreConfig) {
			src.copyKeys(t, dst)
			require.NoError(t, os.WriteFile(rc.Database, []byte("old"), 0o600))
		}, ErrExists, "backup: restore: a database already exists at DST/trustflow.db; nothing was changed"},
		{"a running server, even with --force", func(t *testing.T, dst string, rc *RestoreConfig) {
			src.copyKeys(t, dst)
			st, err := store.Open(t.Context(), store.Config{Dialect: store.SQLite, DSN: rc.Database})
			require.NoError(t, err)
			t.Cleanup(func() { st.Close() })
			rc.Force = true
		}, store.ErrInUse, "backup: restore: another process, a running trustflow server perhaps, has DST/trustflow.db open; nothing was changed: store: the database is in use: DST/trustflow.db"},
		{"a truncated file", func(t *testing.T, dst string, rc *RestoreConfig) {
			src.copyKeys(t, dst)
			rc.In = write("truncated.tar", data[:len(data)/2])
		}, ErrCorrupt, "backup: read: the file is not a trustflow backup, or it is damaged: trustflow.db: unexpected EOF (the file is truncated or damaged); nothing was changed"},
		{"a damaged database", func(t *testing.T, dst string, rc *RestoreConfig) {
			src.copyKeys(t, dst)
			rc.In = write("flipped.tar", flipped)
		}, ErrCorrupt, "backup: read: the file is not a trustflow backup, or it is damaged: member trustflow.db has sha256 "},
		{"a damaged database with a matching manifest", func(t *testing.T, dst string, rc *RestoreConfig) {
			src.copyKeys(t, dst)
			m := fixtureManifest(nil)
			m.ActiveKEK, m.KEKIDs, m.AuditKeyID = active, []string{active}, auditKeyID
			rc.In = write("fake-db.tar", archiveOf(t, m, nil))
		}, ErrCorrupt, ": file is not a database (26); nothing was changed"},
		{"a database newer than this binary", func(t *testing.T, dst string, rc *RestoreConfig) {
			src.copyKeys(t, dst)
			newer := newInstall(t)
			_, err := newer.st.DB().ExecContext(t.Context(), "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, '0999_future.sql', 0)")
			require.NoError(t, err)
			out := filepath.Join(t.TempDir(), "newer.tar")
			cfg := newer.config(t, out)
			cfg.Version = "9.9.9"
			_, err = Create(t.Context(), cfg)
			require.NoError(t, err)
			rc.In = out
		}, store.ErrSchemaTooNew, "backup: restore: the backup was made by trustflow 9.9.9 with database schema 999, newer than this binary knows"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dst := filepath.Join(t.TempDir(), "data")
			require.NoError(t, os.MkdirAll(dst, 0o700))
			rc := restoreTo(plain, dst)
			tc.setup(t, dst, &rc)
			before := dirState(t, dst)
			_, err := Restore(t.Context(), rc)
			require.Error(t, err)
			if tc.is != nil {
				require.ErrorIs(t, err, tc.is)
			}
			require.Contains(t, err.Error(), replaceDST(tc.want, dst))
			require.Contains(t, err.Error(), "nothing was changed")
			require.Equal(t, before, dirState(t, dst), "a refused restore changes nothing")
		})
	}

	t.Run("the missing keys are named", func(t *testing.T) {
		t.Parallel()
		dst := filepath.Join(t.TempDir(), "data")
		_, err := Restore(t.Context(), restoreTo(plain, dst))
		var merr *MissingKeyError
		require.ErrorAs(t, err, &merr)
		require.Equal(t, &MissingKeyError{KEKs: []string{active}, KEKSource: "file://" + filepath.Join(dst, "kek"), KEKBackedUpFrom: "file://" + src.kekFile,
			AuditKey: auditKeyID, AuditKeySource: "file://" + filepath.Join(dst, "audit.key"), AuditKeyBackedUpFrom: "file://" + src.auditKeyFile}, merr)
	})
}

func replaceDST(s, dst string) string {
	return string(bytes.ReplaceAll([]byte(s), []byte("DST"), []byte(dst)))
}

// TestRestoreForce replaces a stopped installation's database and key
// files holding other keys, which it keeps aside, with the data dir's
// audit checkpoint of the replaced chain.
func TestRestoreForce(t *testing.T) {
	t.Parallel()
	src := newInstall(t)
	out := filepath.Join(t.TempDir(), "b.tar")
	cfg := src.config(t, out)
	cfg.IncludeKEK, cfg.Passphrase = true, testPassphrase
	_, err := Create(t.Context(), cfg)
	require.NoError(t, err)

	old := newInstall(t) // another installation, stopped, with its own keys
	_, err = old.log.Checkpoint(t.Context(), nil)
	require.NoError(t, err)
	oldCheckpoint, err := audit.ReadCheckpointFile(filepath.Join(old.dir, audit.CheckpointFileName))
	require.NoError(t, err)
	old.close(t)
	oldKEK, err := os.ReadFile(old.kekFile)
	require.NoError(t, err)
	rc := restoreTo(out, old.dir)
	rc.Passphrase, rc.Force = testPassphrase, true
	got, err := Restore(t.Context(), rc)
	require.NoError(t, err)
	require.True(t, got.ReplacedDatabase)
	require.Equal(t, []string{rc.KEKFile, rc.AuditKeyFile}, got.KeyFiles)
	suffix := fmt.Sprintf(".replaced-%d", testNow.Add(time.Hour).Unix())
	checkpointAside := filepath.Join(old.dir, audit.CheckpointFileName) + suffix
	require.Equal(t, []string{rc.KEKFile + suffix, rc.AuditKeyFile + suffix, checkpointAside}, got.KeptAside)
	kept, err := os.ReadFile(rc.KEKFile + suffix)
	require.NoError(t, err)
	require.Equal(t, oldKEK, kept, "a replaced key is kept, never deleted")
	require.Equal(t, []string{"audit.checkpoint" + suffix, "audit.key", "audit.key" + suffix, "kek", "kek" + suffix, "trustflow.db"}, fileNames(t, old.dir),
		"no -wal or -shm of the old database is left")
	st, _ := requireServes(t, old.dir, src.flows)
	recs, err := audit.New(st, nil).List(t.Context(), audit.Filter{Action: "backup.restore"})
	require.NoError(t, err)
	require.Len(t, recs, 1)
	var details struct {
		Replaced           bool `json:"replaced_database"`
		ReplacedCheckpoint struct {
			Seq      int64  `json:"seq"`
			HeadHash string `json:"head_hash"`
			KeyID    string `json:"key_id"`
		} `json:"replaced_checkpoint"`
	}
	require.NoError(t, json.Unmarshal(recs[0].Details, &details))
	require.True(t, details.Replaced)
	require.Equal(t, oldCheckpoint.Seq, details.ReplacedCheckpoint.Seq, "the rollback names the head the data dir vouched for")
	require.Equal(t, oldCheckpoint.HeadHash, details.ReplacedCheckpoint.HeadHash)
	require.Equal(t, old.log.KeyID(), details.ReplacedCheckpoint.KeyID)
	require.NoError(t, st.Close(), "stop the restored server")

	// Restoring the same backup again over the restored one writes no key:
	// the files already hold them.
	got, err = Restore(t.Context(), rc)
	require.NoError(t, err)
	require.Empty(t, got.KeyFiles)
	require.Empty(t, got.KeptAside)
}

// TestRestoreDuringRotation restores a backup taken while a KEK rotation
// was under way: both keys are in it, the file source gets both (KEK and
// KEK.next), and the first start finishes the rotation.
func TestRestoreDuringRotation(t *testing.T) {
	t.Parallel()
	src := newInstall(t)
	oldID := src.keys.ActiveID()
	// What `kek rotate` has done after its first step: the new key is
	// staged in the source and active in the database; values sealed
	// before are still under the old one.
	next, err := seal.FileSource{Path: src.kekFile}.Stage(t.Context())
	require.NoError(t, err)
	now := time.Now()
	require.NoError(t, src.st.InTx(t.Context(), func(tx *store.Tx) error {
		if err := tx.PutKEK(t.Context(), store.KEKRecord{ID: oldID, State: store.KEKRetiring, Source: "file://" + src.kekFile, CreatedAt: now}); err != nil {
			return err
		}
		return tx.PutKEK(t.Context(), store.KEKRecord{ID: next.ID(), State: store.KEKActive, Source: "file://" + src.kekFile, CreatedAt: now, ActivatedAt: &now})
	}))
	out := filepath.Join(t.TempDir(), "b.tar")
	cfg := src.config(t, out)
	cfg.IncludeKEK, cfg.Passphrase = true, testPassphrase
	res, err := Create(t.Context(), cfg)
	require.NoError(t, err)
	want := []string{oldID, next.ID()}
	if want[0] > want[1] {
		want[0], want[1] = want[1], want[0]
	}
	require.Equal(t, want, res.Manifest.KEKIDs)
	require.Equal(t, next.ID(), res.Manifest.ActiveKEK)

	dst := filepath.Join(t.TempDir(), "data")
	rc := restoreTo(out, dst)
	rc.Passphrase = testPassphrase
	got, err := Restore(t.Context(), rc)
	require.NoError(t, err)
	require.Equal(t, []string{rc.KEKFile, rc.KEKFile + ".next", rc.AuditKeyFile}, got.KeyFiles)
	k, err := seal.LoadKEKFile(rc.KEKFile)
	require.NoError(t, err)
	require.Equal(t, next.ID(), k.ID(), "the active key is the committed one")

	st, keys := requireServes(t, dst, src.flows)
	require.Equal(t, next.ID(), keys.ActiveID())
	counts, err := st.SealedKEKCounts(t.Context())
	require.NoError(t, err)
	require.Equal(t, map[string]int{next.ID(): 3}, counts["flows.webhook_secret"], "the start finished the rotation")
	_, err = os.Stat(rc.KEKFile + ".next")
	require.ErrorIs(t, err, os.ErrNotExist, "and the source dropped the old key")
}

// deviceSource holds a KEK that lives in a device, as a PKCS#11 source does.
type deviceSource struct{ k *seal.KEK }

func (s deviceSource) Load(context.Context) ([]*seal.KEK, error) { return []*seal.KEK{s.k}, nil }
func (s deviceSource) Create(context.Context) (*seal.KEK, error) { return s.k, nil }
func (s deviceSource) Stage(context.Context) (*seal.KEK, error)  { return nil, seal.ErrReadOnlySource }
func (s deviceSource) Commit(context.Context, string) error      { return nil }
func (s deviceSource) String() string                            { return "pkcs11:token=t;object=kek" }

func TestCreateRefuses(t *testing.T) {
	t.Parallel()
	src := newInstall(t)
	dir := t.TempDir()

	cfg := src.config(t, filepath.Join(dir, "b.tar"))
	cfg.IncludeKEK, cfg.Passphrase = true, "short"
	_, err := Create(t.Context(), cfg)
	require.EqualError(t, err, "backup: --passphrase-file: the passphrase that encrypts the included keys must be at least 12 characters")

	cfg = src.config(t, filepath.Join(dir, "b.tar"))
	cfg.IncludeKEK, cfg.Passphrase, cfg.AuditKeyText = true, testPassphrase, nil
	_, err = Create(t.Context(), cfg)
	require.EqualError(t, err, "backup: --include-kek: the database's audit chain is keyed under audit key "+src.log.KeyID()+", which file://"+src.auditKeyFile+" does not hold: audit: parse audit key: the key is 0 bytes, want 32")

	cfg = src.config(t, filepath.Join(dir, "b.tar"))
	cfg.Database = filepath.Join(dir, "nothing-here.db")
	_, err = Create(t.Context(), cfg)
	require.ErrorIs(t, err, store.ErrNotFound)
	require.EqualError(t, err, "backup: store: open: no database at "+cfg.Database)

	// A KEK held in a device cannot be included.
	block, err := aes.NewCipher(make([]byte, 32))
	require.NoError(t, err)
	aead, err := cipher.NewGCMWithRandomNonce(block)
	require.NoError(t, err)
	dev, err := seal.NewExternalKEK("00112233445566aa", aead)
	require.NoError(t, err)
	hsmDir := filepath.Join(t.TempDir(), "data")
	st, err := store.Open(t.Context(), store.Config{Dialect: store.SQLite, DSN: filepath.Join(hsmDir, "trustflow.db")})
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	_, err = custody.Open(t.Context(), custody.Config{Store: st, Audit: audit.New(st, nil), Source: deviceSource{dev}})
	require.NoError(t, err)
	cfg = Config{Database: filepath.Join(hsmDir, "trustflow.db"), Out: filepath.Join(dir, "hsm.tar"), Source: deviceSource{dev},
		IncludeKEK: true, Passphrase: testPassphrase, KDF: testKDF, Clock: clock.NewFake(testNow)}
	_, err = Create(t.Context(), cfg)
	require.EqualError(t, err, "backup: --include-kek: key-encryption key 00112233445566aa is held in a device (pkcs11:token=t;object=kek) and cannot leave it")
	cfg.IncludeKEK = false
	res, err := Create(t.Context(), cfg)
	require.NoError(t, err, "without the key, the database alone is backed up")
	require.Equal(t, []string{"00112233445566aa"}, res.Manifest.KEKIDs)
	require.Equal(t, "pkcs11:token=t;object=kek", res.Manifest.KEKSource)
	require.Equal(t, []string{"hsm.tar"}, fileNames(t, dir), "a refused backup writes nothing")
}
