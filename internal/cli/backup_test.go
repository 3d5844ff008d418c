package cli_test

import (
	"context"
	"crypto/tls"
	"database/sql"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/apiclient"
	"github.com/trustflow/trustflow/internal/app"
	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/backup"
	"github.com/trustflow/trustflow/internal/config"
	"github.com/trustflow/trustflow/internal/engine"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

const backupFlow = `apiVersion: trustflow/v1
kind: Flow
name: nightly-sync
trigger: {manual: {}}
input:
  at: {type: string, required: true}
steps:
  - id: wait
    sleep: {until: "${input.at}"}
  - id: push
    call: {connector: api, method: POST, path: /sync, body: {run: "${run.id}"}}
output: {status: "${steps.push.status}"}
`

// backupEndpoint is an HTTPS endpoint on loopback that requires a client
// certificate from the demo CA and the connector's bearer token, and
// counts the run calls it accepted.
type backupEndpoint struct {
	url    string
	ca     *truststoretest.CA
	bearer string
	mu     sync.Mutex
	calls  []string // the client certificate's CN of each accepted POST /sync
}

func newBackupEndpoint(t *testing.T) *backupEndpoint {
	t.Helper()
	ep := &backupEndpoint{ca: truststoretest.NewCA(t), bearer: "tok-" + strings.Repeat("b", 24)}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+ep.bearer {
			http.Error(w, "bad token", http.StatusUnauthorized)
			return
		}
		if r.Method == http.MethodPost && r.URL.Path == "/sync" {
			ep.mu.Lock()
			ep.calls = append(ep.calls, r.TLS.PeerCertificates[0].Subject.CommonName)
			ep.mu.Unlock()
		}
		w.Write([]byte(`{"ok":true}`))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ep.ca.IssueServer(t, "127.0.0.1").TLSCertificate()},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ep.ca.Pool()}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ep.url = srv.URL
	return ep
}

// allow is the CLI command that lets connectors reach the endpoint, which
// the default egress policy denies (it is on loopback).
func (ep *backupEndpoint) allow() []string {
	u, _ := url.Parse(ep.url)
	return []string{"policy", "allow", "--host", u.Hostname(), "--ports", u.Port()}
}

func (ep *backupEndpoint) accepted() []string {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	return append([]string(nil), ep.calls...)
}

// backupServer starts a server in-process on dir (and db, "" for SQLite).
func backupServer(t *testing.T, dir, db string) *app.App {
	t.Helper()
	a, err := app.New(t.Context(), config.Config{DataDir: dir, DatabaseURL: db, Listen: "127.0.0.1:0"},
		app.Options{Logger: slog.New(slog.DiscardHandler), Stderr: io.Discard, KEKRefresh: 50 * time.Millisecond})
	require.NoError(t, err)
	require.NoError(t, a.Start(t.Context()))
	t.Cleanup(func() { a.Stop() })
	return a
}

// backupCLI runs the CLI against a with the given token.
func backupCLI(t *testing.T, a *app.App, dir, token string, args ...string) e2eResult {
	t.Helper()
	return e2eRun(t, append([]string{"--server", a.URL(), "--data-dir", dir, "--token", token}, args...)...)
}

func backupOK(t *testing.T, r e2eResult, what string) string {
	t.Helper()
	require.Equal(t, 0, r.code, "%s: %s", what, r.stderr)
	require.Empty(t, r.stderr, what)
	return r.stdout
}

// requireRestoredServes starts a server on a restored data dir and checks
// everything the backup promised: the audit chain verifies with the
// restore recorded, the connector (identity key and bearer token, both
// sealed) passes its mutual-TLS test, and the run queued at backup time
// finishes by calling the endpoint.
func requireRestoredServes(t *testing.T, dir, token, runID string, ep *backupEndpoint) {
	t.Helper()
	before := len(ep.accepted())
	a := backupServer(t, dir, "")
	v := e2eStrict[apiclient.AuditVerification](t, backupOK(t, backupCLI(t, a, dir, token, "audit", "verify", "-o", "json"), "audit verify"))
	require.True(t, v.OK)
	page := e2eStrict[apiclient.AuditPage](t, backupOK(t, backupCLI(t, a, dir, token, "audit", "list", "--action", "backup.restore", "-o", "json"), "audit list"))
	require.Len(t, page.Records, 1)
	require.Equal(t, "system", page.Records[0].Actor.ID)

	backupOK(t, backupCLI(t, a, dir, token, "connector", "test", "api"), "connector test")

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	done, err := a.Engine.Wait(ctx, runID)
	require.NoError(t, err)
	require.Equal(t, engine.StatusSucceeded, done.Status, "%+v", done.Error)
	require.Equal(t, map[string]any{"status": float64(200)}, done.Output)
	require.Equal(t, []string{"trustflow-svc"}, ep.accepted()[before:], "the queued run called the endpoint once, with the restored identity")
	require.NoError(t, a.Stop())
}

// TestBackupRestoreEndToEnd backs up a running server holding an
// identity, a connector with a bearer secret, a flow and a queued run;
// wipes the data dir; and restores it twice, with the KEK inside the
// backup and with the KEK file copied separately. Each restored server
// verifies its audit chain, passes `connector test` and finishes the run.
func TestBackupRestoreEndToEnd(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	dir := filepath.Join(root, "data")
	ep := newBackupEndpoint(t)
	write := func(name string, data []byte) string {
		p := filepath.Join(root, name)
		require.NoError(t, os.WriteFile(p, data, 0o600))
		return p
	}
	client := ep.ca.IssueClient(t, "trustflow-svc")
	a := backupServer(t, dir, "")
	token := strings.TrimSpace(readE2EFile(t, filepath.Join(dir, config.AdminTokenFile)))
	run := func(args ...string) e2eResult { return backupCLI(t, a, dir, token, args...) }
	ok := func(args ...string) string { return backupOK(t, run(args...), strings.Join(args, " ")) }

	ok("ca", "add", "demo", "--file", write("ca.pem", ep.ca.CertPEM()))
	ok("identity", "import", "svc", "--cert", write("client.pem", client.CertPEM()), "--key", write("client.key", client.KeyPEM()))
	ok(ep.allow()...) // the egress policy denies loopback; the restored policy must still allow it
	ok("connector", "create", "api", "--url", ep.url, "--identity", "svc", "--ca", "demo", "--auth", "bearer", "--token-file", write("bearer", []byte(ep.bearer+"\n")))
	ok("connector", "test", "api")
	ok("flow", "apply", "-f", write("sync.yaml", []byte(backupFlow)))
	// The run sleeps (a durable timer: its queue job is scheduled) until
	// after the backup, the wipe and the restore.
	at := time.Now().Add(4 * time.Second)
	started := e2eStrict[apiclient.Run](t, ok("flow", "run", "nightly-sync", "--input", `{"at":"`+at.UTC().Format(time.RFC3339Nano)+`"}`, "-o", "json"))

	// Back up online, twice: the KEK kept apart, and the KEK included.
	passFile := write("passphrase", []byte("a long backup passphrase\n"))
	t0 := time.Now()
	plainOut := filepath.Join(root, "plain.tar")
	plain := e2eStrict[backup.Result](t, ok("backup", "--out", plainOut, "-o", "json"))
	kekOut := filepath.Join(root, "with-kek.tar")
	withKEK := e2eStrict[backup.Result](t, ok("backup", "--out", kekOut, "--include-kek", "--passphrase-file", passFile, "-o", "json"))
	t.Logf("two online backups (%d and %d bytes) in %v", plain.Size, withKEK.Size, time.Since(t0))
	status, err := a.Engine.GetRun(t.Context(), started.ID)
	require.NoError(t, err)
	require.Contains(t, []string{engine.StatusQueued, engine.StatusRunning, engine.StatusSleeping}, status.Status, "the run had not finished when the backups were taken")
	require.True(t, time.Now().Before(at), "the backups were taken before the run could continue")
	require.Empty(t, ep.accepted())

	activeKEK, auditKey := plain.Manifest.ActiveKEK, plain.Manifest.AuditKeyID
	require.Equal(t, []string{activeKEK}, plain.Manifest.KEKIDs)
	require.NotEmpty(t, auditKey, "the server keys its audit chain")
	require.False(t, plain.Manifest.KEKIncluded)
	require.True(t, withKEK.Manifest.KEKIncluded)
	require.True(t, withKEK.Manifest.AuditKeyIncluded)
	out := ok("backup", "--out", filepath.Join(root, "table.tar"))
	require.Regexp(t, `(?m)^keys:\s+`+regexp.QuoteMeta("NOT in the backup: keep key-encryption key "+activeKEK+" (file://"+filepath.Join(dir, "kek")+") and audit key "+auditKey+
		" (file://"+filepath.Join(dir, "audit.key")+") separately; a restore needs them")+`$`, out)

	// restore refuses to replace the database of a running server.
	r := run("restore", "--in", plainOut, "--force")
	require.Equal(t, 1, r.code)
	require.Equal(t, "Error: another process, a running trustflow server perhaps, has "+filepath.Join(dir, "trustflow.db")+
		" open; nothing was changed\nHint: stop the server that uses it, then restore\n", r.stderr)

	// Stop, keep the key files apart, wipe.
	keys := filepath.Join(root, "keys")
	for _, f := range []string{"kek", "audit.key"} {
		copyKEK(t, filepath.Join(dir, f), filepath.Join(keys, f))
	}
	require.NoError(t, a.Stop())
	require.NoError(t, os.RemoveAll(dir))

	// Without the keys, restore names the keys it needs and writes nothing.
	r = e2eRun(t, "--data-dir", dir, "restore", "--in", plainOut)
	require.Equal(t, e2eResult{code: 1, stderr: "Error: backup: the backup's database needs key-encryption key " + activeKEK + " and audit key " + auditKey +
		", which this installation does not hold (it looked in file://" + filepath.Join(dir, "kek") + " and file://" + filepath.Join(dir, "audit.key") + "); " +
		"copy them from the backed-up installation (file://" + filepath.Join(dir, "kek") + ", file://" + filepath.Join(dir, "audit.key") + "), " +
		"or point --kek and --audit-key at a source that holds them; nothing was changed\n"}, r)
	requireEmptyDir(t, dir)
	r = e2eRun(t, "--data-dir", dir, "restore", "--in", kekOut, "--passphrase-file", write("wrong", []byte("not the passphrase\n")))
	require.Equal(t, e2eResult{code: 1, stderr: "Error: --passphrase-file: the passphrase does not decrypt the keys in the backup (a wrong passphrase, or the file was altered); nothing was changed\n" +
		"Hint: give the passphrase the backup was made with\n"}, r)
	requireEmptyDir(t, dir)

	// With the KEK from the backup.
	t0 = time.Now()
	res := e2eRun(t, "--data-dir", dir, "restore", "--in", kekOut, "--passphrase-file", passFile, "-o", "json")
	require.Equal(t, 0, res.code, res.stderr)
	restored := e2eStrict[backup.Restored](t, res.stdout)
	t.Logf("restore with the KEK included: %v", time.Since(t0))
	require.Equal(t, []string{filepath.Join(dir, "kek"), filepath.Join(dir, "audit.key")}, restored.KeyFiles)
	require.True(t, restored.AuditChain.OK)
	requireRestoredServes(t, dir, token, started.ID, ep)

	// With the key files copied separately, into another data dir.
	dir2 := filepath.Join(root, "data2")
	for _, f := range []string{"kek", "audit.key"} {
		copyKEK(t, filepath.Join(keys, f), filepath.Join(dir2, f))
	}
	res = e2eRun(t, "--data-dir", dir2, "restore", "--in", plainOut)
	require.Equal(t, 0, res.code, res.stderr)
	require.Empty(t, res.stderr)
	lines := strings.Split(strings.TrimSuffix(res.stdout, "\n"), "\n")
	require.Len(t, lines, 4, res.stdout)
	require.Equal(t, "restored "+plainOut+" into "+filepath.Join(dir2, "trustflow.db"), lines[0])
	require.Regexp(t, `^keys:\s+`+regexp.QuoteMeta("key-encryption key "+activeKEK+" and audit key "+auditKey+", held by file://"+filepath.Join(dir2, "kek")+
		" and file://"+filepath.Join(dir2, "audit.key"))+`$`, lines[2])
	require.Regexp(t, `^audit:\s+chain intact \(\d+ records\); this restore is record \d+ \(backup.restore\)$`, lines[3])
	requireRestoredServes(t, dir2, token, started.ID, ep)
}

func copyKEK(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(filepath.Dir(to), 0o700))
	require.NoError(t, os.WriteFile(to, b, 0o600))
}

func requireEmptyDir(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, ents, "a refused restore writes nothing")
}

func TestBackupFlags(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r := e2eRun(t, "--data-dir", dir, "backup")
	require.Equal(t, e2eResult{code: 1, stderr: "Error: --out: required\nHint: name the backup file, e.g. --out trustflow-backup.tar\n"}, r)
	r = e2eRun(t, "--data-dir", dir, "backup", "--out", "b.tar", "--include-kek")
	require.Equal(t, e2eResult{code: 1, stderr: "Error: --include-kek: needs --passphrase-file\nHint: put a passphrase of at least 12 characters in a file (mode 600) and name it with --passphrase-file\n"}, r)
	r = e2eRun(t, "--data-dir", dir, "backup", "--out", filepath.Join(dir, "b.tar"))
	require.Equal(t, 1, r.code)
	require.Equal(t, "Error: no database at "+filepath.Join(dir, "trustflow.db")+
		"\nHint: check --data-dir (or --db): the server creates its database there when it first starts\n", r.stderr)
	r = e2eRun(t, "--data-dir", dir, "backup", "--out", "b.tar", "--include-kek", "--passphrase-file", filepath.Join(dir, "nope"))
	require.Equal(t, e2eResult{code: 1, stderr: "Error: --passphrase-file: open " + filepath.Join(dir, "nope") + ": no such file or directory\n"}, r)
	pass := filepath.Join(dir, "pass")
	require.NoError(t, os.WriteFile(pass, []byte("a long backup passphrase\n"), 0o600))
	r = e2eRun(t, "--data-dir", dir, "backup", "--out", "b.tar", "--include-kek", "--passphrase-file", pass,
		"--kek", "pkcs11:token=t;object=kek?module-path=/usr/lib/softhsm/libsofthsm2.so")
	require.Equal(t, e2eResult{code: 1, stderr: "Error: --include-kek: the key-encryption key lives in a PKCS#11 token and cannot leave it\n" +
		"Hint: back up the token with its vendor's tools (or replicate it to another token), and run backup without --include-kek\n"}, r)
	r = e2eRun(t, "--data-dir", dir, "backup", "--out", "b.tar", "--passphrase-file", pass)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "Error: --passphrase-file: only used with --include-kek\n")
	r = e2eRun(t, "--data-dir", dir, "restore")
	require.Equal(t, e2eResult{code: 1, stderr: "Error: --in: required\nHint: name the backup file, e.g. --in trustflow-backup.tar\n"}, r)
	r = e2eRun(t, "--data-dir", dir, "backup", "--out", "b.tar", "--db", "postgres://u@127.0.0.1:1/db")
	require.Equal(t, e2eResult{code: 1, stderr: "Error: --db: trustflow backup copies SQLite databases; back up PostgreSQL with `pg_dump -Fc`, and keep the key-encryption key and the audit key apart\n" +
		"Hint: follow docs/keys.md, \"Backup and restore\"; `trustflow kek status` names the key ids to keep\n"}, r)
	r = e2eRun(t, "--data-dir", dir, "restore", "--in", "b.tar", "--db", "postgres://u@127.0.0.1:1/db")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "Error: --db: trustflow restore installs SQLite backups; restore PostgreSQL with `pg_restore`")
}

// TestPostgresBackupProcedure runs the procedure docs/keys.md documents
// for PostgreSQL: pg_dump -Fc while the server runs, the KEK file kept
// separately, pg_restore into an empty database (here: schema), and a
// start with the KEK; and shows that a start without the KEK names it.
func TestPostgresBackupProcedure(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"pg_dump", "pg_restore"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	dbURL := storetest.DatabaseURL(t, store.Postgres)
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	schema := u.Query().Get("search_path")
	q := u.Query()
	q.Del("search_path")
	u.RawQuery = q.Encode()
	base := u.String() // libpq knows no search_path parameter

	root := t.TempDir()
	dir := filepath.Join(root, "data")
	ep := newBackupEndpoint(t)
	client := ep.ca.IssueClient(t, "trustflow-svc")
	write := func(name string, data []byte) string {
		p := filepath.Join(root, name)
		require.NoError(t, os.WriteFile(p, data, 0o600))
		return p
	}
	a := backupServer(t, dir, dbURL)
	token := strings.TrimSpace(readE2EFile(t, filepath.Join(dir, config.AdminTokenFile)))
	ok := func(args ...string) string {
		return backupOK(t, backupCLI(t, a, dir, token, args...), strings.Join(args, " "))
	}
	ok("ca", "add", "demo", "--file", write("ca.pem", ep.ca.CertPEM()))
	ok("identity", "import", "svc", "--cert", write("client.pem", client.CertPEM()), "--key", write("client.key", client.KeyPEM()))
	ok(ep.allow()...)
	ok("connector", "create", "api", "--url", ep.url, "--identity", "svc", "--ca", "demo", "--auth", "bearer", "--token-file", write("bearer", []byte(ep.bearer)))
	st := e2eStrict[apiclient.KEKStatus](t, ok("kek", "status", "-o", "json"))

	// trustflow backup points at the procedure instead.
	r := e2eRun(t, "--data-dir", dir, "backup", "--out", filepath.Join(root, "x.tar"), "--db", dbURL)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "back up PostgreSQL with `pg_dump -Fc`")

	// pg_dump while the server runs; the key files kept separately.
	dump := filepath.Join(root, "trustflow.pgdump")
	pg(t, "pg_dump", "-Fc", "-n", schema, "-d", base, "-f", dump)
	keys := filepath.Join(root, "keys")
	for _, f := range []string{"kek", "audit.key"} {
		copyKEK(t, filepath.Join(dir, f), filepath.Join(keys, f))
	}
	require.NoError(t, a.Stop())

	// Wipe: the schema and the data dir.
	admin, err := sql.Open("pgx", base)
	require.NoError(t, err)
	defer admin.Close()
	_, err = admin.ExecContext(t.Context(), "DROP SCHEMA "+schema+" CASCADE")
	require.NoError(t, err)
	require.NoError(t, os.RemoveAll(dir))

	pg(t, "pg_restore", "--no-owner", "-d", base, dump)

	// A start without the keys names the key the database needs.
	noKeys := filepath.Join(root, "nokeys")
	_, err = app.New(t.Context(), config.Config{DataDir: noKeys, DatabaseURL: dbURL, Listen: "127.0.0.1:0"},
		app.Options{Logger: slog.New(slog.DiscardHandler), Stderr: io.Discard})
	require.ErrorContains(t, err, "this node's source file://"+filepath.Join(noKeys, "audit.key")+" holds no key")
	copyKEK(t, filepath.Join(keys, "audit.key"), filepath.Join(noKeys, "audit.key"))
	_, err = app.New(t.Context(), config.Config{DataDir: noKeys, DatabaseURL: dbURL, Listen: "127.0.0.1:0"},
		app.Options{Logger: slog.New(slog.DiscardHandler), Stderr: io.Discard})
	require.ErrorContains(t, err, "the database's active key-encryption key is "+st.ActiveKEK+", but this node's source file://"+filepath.Join(noKeys, "kek")+" holds no key")

	for _, f := range []string{"kek", "audit.key"} {
		copyKEK(t, filepath.Join(keys, f), filepath.Join(dir, f))
	}
	b := backupServer(t, dir, dbURL)
	v := e2eStrict[apiclient.AuditVerification](t, backupOK(t, backupCLI(t, b, dir, token, "audit", "verify", "-o", "json"), "audit verify"))
	require.True(t, v.OK)
	backupOK(t, backupCLI(t, b, dir, token, "connector", "test", "api"), "connector test")
	recs, err := b.Audit.List(t.Context(), audit.Filter{Action: "connector.create"})
	require.NoError(t, err)
	require.Len(t, recs, 1)
}

func pg(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), name, args...).CombinedOutput()
	require.NoError(t, err, "%s: %s", name, out)
}
