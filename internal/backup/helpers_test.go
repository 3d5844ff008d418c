package backup

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/custody"
	"github.com/trustflow/trustflow/internal/seal"
	"github.com/trustflow/trustflow/internal/store"
)

// testKDF keeps the tests fast; the defaults are exercised by the CLI
// tests.
var testKDF = KDF{Name: KDFScrypt, LogN: 10, R: 8, P: 1}

const testPassphrase = "correct horse battery staple"

var testNow = time.Date(2031, 5, 6, 7, 8, 9, 123456000, time.UTC)

// install is a data dir with an open database (as a running server has
// it), its KEK file and audit key file, and flows whose webhook secrets
// are sealed.
type install struct {
	dir, db, kekFile, auditKeyFile string
	st                             *store.Store
	log                            *audit.Log
	keys                           *custody.Manager
	flows                          []string
}

// newInstall opens a data dir as app.New does: the audit chain keyed under
// the data dir's audit key.
func newInstall(t *testing.T) *install { return newInstallKeyed(t, true) }

// newInstallKeyed opens a data dir with a keyed audit chain, or one
// without an audit key (an installation from before audit keys).
func newInstallKeyed(t *testing.T, keyed bool) *install {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	in := &install{dir: dir, db: filepath.Join(dir, "trustflow.db"), kekFile: filepath.Join(dir, "kek")}
	if keyed {
		in.auditKeyFile = filepath.Join(dir, "audit.key")
	}
	st, err := store.Open(t.Context(), store.Config{Dialect: store.SQLite, DSN: in.db})
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	in.st = st
	in.log = openLog(t, st, in.auditKeyFile, dir)
	keys, err := custody.Open(t.Context(), custody.Config{Store: st, Audit: in.log, Source: seal.FileSource{Path: in.kekFile},
		Logger: slog.New(slog.DiscardHandler), RefreshEvery: 10 * time.Millisecond})
	require.NoError(t, err)
	in.keys = keys
	in.flows = in.sealWebhooks(t, "alpha", "beta", "gamma")
	return in
}

// openLog opens the audit log keyed under the key in keyFile (created if
// missing), keeping checkpoints in dir; unkeyed when keyFile is "".
func openLog(t *testing.T, st *store.Store, keyFile, dir string) *audit.Log {
	t.Helper()
	if keyFile == "" {
		return audit.New(st, nil)
	}
	log, err := audit.Open(t.Context(), audit.Config{Store: st, Source: audit.FileKeySource{Path: keyFile}, DataDir: dir, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	return log
}

// close closes the database, as a stopped server leaves it.
func (in *install) close(t *testing.T) {
	t.Helper()
	require.NoError(t, in.st.Close())
}

// sealWebhooks stores flows whose webhook secrets the active KEK seals.
func (in *install) sealWebhooks(t *testing.T, names ...string) []string {
	t.Helper()
	kr := in.keys.Keyring()
	for _, name := range names {
		blob, err := kr.Seal([]byte("whsec-"+name), store.WebhookSecretAAD(name))
		require.NoError(t, err)
		_, err = in.st.DB().ExecContext(t.Context(),
			"INSERT INTO flows (name, current_version, trigger_kind, webhook_secret, kek_id, created_at, updated_at) VALUES ($1, 1, 'webhook', $2, $3, 0, 0)",
			name, blob, kr.CurrentID())
		require.NoError(t, err)
	}
	return names
}

// config is a Config that backs in up to out.
func (in *install) config(t *testing.T, out string) Config {
	cfg := Config{Database: in.db, Out: out, Source: seal.FileSource{Path: in.kekFile}, Version: "1.2.3", Commit: "abc123",
		KDF: testKDF, Clock: clock.NewFake(testNow)}
	if in.auditKeyFile != "" {
		text, err := os.ReadFile(in.auditKeyFile)
		require.NoError(t, err)
		cfg.AuditKeySource, cfg.AuditKeyText = "file://"+in.auditKeyFile, text
	}
	return cfg
}

// copyKeys copies the KEK and audit key files to dir, as an operator who
// keeps them apart from the backups does.
func (in *install) copyKeys(t *testing.T, dir string) {
	t.Helper()
	copyFile(t, in.kekFile, filepath.Join(dir, "kek"))
	if in.auditKeyFile != "" {
		copyFile(t, in.auditKeyFile, filepath.Join(dir, "audit.key"))
	}
}

// restoreTo is a RestoreConfig for a data dir with the default key files.
func restoreTo(in, dir string) RestoreConfig {
	kek := filepath.Join(dir, "kek")
	auditKey := filepath.Join(dir, "audit.key")
	return RestoreConfig{In: in, Database: filepath.Join(dir, "trustflow.db"), DataDir: dir, Source: seal.FileSource{Path: kek}, KEKFile: kek,
		AuditKey: audit.FileKeySource{Path: auditKey}, AuditKeyFile: auditKey, Clock: clock.NewFake(testNow.Add(time.Hour))}
}

// requireServes opens the restored data dir as a server would and checks
// that its sealed values open and its audit chain is intact.
func requireServes(t *testing.T, dir string, flows []string) (*store.Store, *custody.Manager) {
	t.Helper()
	st, err := store.Open(t.Context(), store.Config{Dialect: store.SQLite, DSN: filepath.Join(dir, "trustflow.db")})
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	keyFile := filepath.Join(dir, "audit.key")
	if _, err := os.Stat(keyFile); err != nil {
		keyFile = "" // a chain without an audit key
	}
	log := openLog(t, st, keyFile, dir)
	keys, err := custody.Open(t.Context(), custody.Config{Store: st, Audit: log, Source: seal.FileSource{Path: filepath.Join(dir, "kek")},
		Logger: slog.New(slog.DiscardHandler), RefreshEvery: 10 * time.Millisecond})
	require.NoError(t, err)
	for _, name := range flows {
		var blob []byte
		require.NoError(t, st.DB().QueryRowContext(t.Context(), "SELECT webhook_secret FROM flows WHERE name = $1", name).Scan(&blob))
		plain, err := keys.Keyring().Open(blob, store.WebhookSecretAAD(name))
		require.NoError(t, err, name)
		require.Equal(t, "whsec-"+name, string(plain))
	}
	v, err := log.Verify(t.Context())
	require.NoError(t, err)
	require.True(t, v.OK, v.Problem)
	return st, keys
}

// dirState maps every file under dir to its mode and checksum, to show
// that a refused restore changed nothing.
func dirState(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if os.IsNotExist(err) && p == dir {
			return filepath.SkipDir
		}
		if err != nil || d.IsDir() || strings.HasSuffix(p, "-shm") {
			// SQLite's shared-memory index changes when a connection
			// merely looks; it holds no data.
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		rel, _ := filepath.Rel(dir, p)
		out[rel] = fmt.Sprintf("%v %x", fi.Mode(), sum)
		return nil
	})
	require.NoError(t, err)
	return out
}

func fileNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(filepath.Dir(to), 0o700))
	require.NoError(t, os.WriteFile(to, b, 0o600))
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// entry is one raw tar member, for hostile archives.
type entry struct {
	name string
	typ  byte
	body []byte
	// size overrides the header's size when not -1.
	size int64
}

// rawArchive writes members as given, whatever they say.
func rawArchive(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		hdr := &tar.Header{Typeflag: typ, Name: e.name, Mode: 0o600, ModTime: testNow.Truncate(time.Second), Format: tar.FormatPAX}
		if typ == tar.TypeReg {
			hdr.Size = int64(len(e.body))
		} else {
			hdr.Linkname = "elsewhere"
		}
		require.NoError(t, tw.WriteHeader(hdr))
		if typ == tar.TypeReg {
			_, err := tw.Write(e.body)
			require.NoError(t, err)
		}
	}
	require.NoError(t, tw.Close())
	return buf.Bytes()
}

// fakeDB stands in for a database in archives that are only read.
var fakeDB = []byte("SQLite format 3\x00 (not really: the reader does not look inside)\n")

// fixtureManifest is a valid manifest for fakeDB.
func fixtureManifest(kek []byte) *Manifest {
	m := &Manifest{Format: Format, FormatVersion: FormatVersion, TrustflowVersion: "1.2.3", TrustflowCommit: "abc123",
		CreatedAt: testNow, Dialect: "sqlite", SchemaVersion: 8, ActiveKEK: "0123456789abcdef",
		KEKIDs: []string{"0123456789abcdef"}, KEKSource: "file:///var/lib/trustflow/kek",
		Members: []Member{{Name: DatabaseName, Size: int64(len(fakeDB)), SHA256: sum(fakeDB)}}}
	if kek != nil {
		m.KEKIncluded = true
		m.KEK = &KEKEncryption{Member: KEKName, Cipher: CipherAESGCM, KDF: KDFScrypt, Salt: bytes.Repeat([]byte{7}, 32), ScryptLogN: 17, ScryptR: 8, ScryptP: 1}
		m.Members = append(m.Members, Member{Name: KEKName, Size: int64(len(kek)), SHA256: sum(kek)})
	}
	return m
}

func archiveOf(t testing.TB, m *Manifest, kek []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, writeArchive(&buf, m, bytes.NewReader(fakeDB), kek))
	return buf.Bytes()
}

func manifestJSON(t testing.TB, m *Manifest) []byte {
	t.Helper()
	b, err := json.MarshalIndent(m, "", "  ")
	require.NoError(t, err)
	return append(b, '\n')
}
