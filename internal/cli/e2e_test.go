package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/fips140"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/trustflow/trustflow/internal/apiclient"
	"github.com/trustflow/trustflow/internal/app"
	"github.com/trustflow/trustflow/internal/cli"
	"github.com/trustflow/trustflow/internal/config"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

// The end-to-end tests run the CLI in-process against a real server on a
// loopback port. Their helpers carry an e2e prefix.

var (
	e2eBuild      = cli.Build{Version: "1.2.3", Commit: "abc123"}
	e2eSecretForm = regexp.MustCompile(`tf_[A-Za-z0-9_-]{43}`)
	e2eServingRe  = regexp.MustCompile(`msg="trustflow serving" addr=(\S+)`)
)

// e2eGetenv is an empty environment, so that the caller's TRUSTFLOW_*
// variables never leak into a test.
func e2eGetenv(string) string { return "" }

type e2eResult struct {
	code           int
	stdout, stderr string
}

// e2eRun runs the CLI with args and an empty environment.
func e2eRun(t *testing.T, args ...string) e2eResult {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := cli.Execute(t.Context(), args, strings.NewReader(""), &stdout, &stderr, e2eGetenv, e2eBuild)
	return e2eResult{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// e2eDatabase is the --db value for a fresh database of dialect d: empty
// (SQLite in the data dir) or a PostgreSQL URL with a schema of its own.
func e2eDatabase(t *testing.T, d store.Dialect) string {
	t.Helper()
	if d == store.Postgres {
		return storetest.DatabaseURL(t, d)
	}
	return ""
}

// e2eServer is a server built by app.New and started on 127.0.0.1:0.
type e2eServer struct {
	app *app.App
	dir string
}

func e2eStart(t *testing.T, d store.Dialect) *e2eServer {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	a, err := app.New(t.Context(), config.Config{DataDir: dir, Listen: "127.0.0.1:0", DatabaseURL: e2eDatabase(t, d)},
		app.Options{Logger: slog.New(slog.DiscardHandler), Stderr: io.Discard})
	require.NoError(t, err)
	require.NoError(t, a.Start(t.Context()))
	t.Cleanup(func() { require.NoError(t, a.Stop()) })
	return &e2eServer{app: a, dir: dir}
}

// cli runs the CLI against the server; the token comes from the admin
// token file in the data dir unless args give --token.
func (s *e2eServer) cli(t *testing.T, args ...string) e2eResult {
	t.Helper()
	return e2eRun(t, append([]string{"--server", s.app.URL(), "--data-dir", s.dir}, args...)...)
}

// ok runs the CLI and requires exit code 0 and nothing on stderr.
func (s *e2eServer) ok(t *testing.T, args ...string) string {
	t.Helper()
	r := s.cli(t, args...)
	require.Equal(t, 0, r.code, "trustflow %s: %s", strings.Join(args, " "), r.stderr)
	require.Empty(t, r.stderr)
	return r.stdout
}

// e2eStrict decodes exactly one JSON value, refusing unknown fields.
func e2eStrict[T any](t *testing.T, text string) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(strings.NewReader(text))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&v), text)
	_, err := dec.Token()
	require.ErrorIs(t, err, io.EOF, "trailing data: %s", text)
	return v
}

// e2eYAMLToken is a token as `token list -o yaml` prints it.
type e2eYAMLToken struct {
	ID        string `yaml:"id"`
	Name      string `yaml:"name"`
	Role      string `yaml:"role"`
	CreatedAt string `yaml:"created_at"`
	CreatedBy string `yaml:"created_by"`
	ExpiresAt string `yaml:"expires_at"`
	RevokedAt string `yaml:"revoked_at"`
	Status    string `yaml:"status"`
}

func TestTokenAndAuditCommands(t *testing.T) {
	t.Parallel()
	for _, d := range storetest.Dialects(t) {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			s := e2eStart(t, d)
			admin, err := s.app.Auth.Authenticate(t.Context(), strings.TrimSpace(readE2EFile(t, filepath.Join(s.dir, config.AdminTokenFile))))
			require.NoError(t, err)

			// token create -o json prints the token, with its secret.
			created := e2eStrict[apiclient.Token](t, s.ok(t, "token", "create", "--role", "operator", "--name", "ci", "-o", "json"))
			require.Regexp(t, `^tf_[A-Za-z0-9_-]{43}$`, created.Token)
			require.Equal(t, "ci", created.Name)
			require.Equal(t, "operator", created.Role)
			require.Equal(t, "active", created.Status)
			require.Equal(t, admin.TokenID, created.CreatedBy)

			// token list -o yaml parses as YAML and never shows a secret.
			out := s.ok(t, "token", "list", "-o", "yaml")
			require.NotContains(t, out, created.Token)
			dec := yaml.NewDecoder(strings.NewReader(out))
			dec.KnownFields(true)
			var listed []e2eYAMLToken
			require.NoError(t, dec.Decode(&listed), out)
			require.Len(t, listed, 2)
			require.Equal(t, []string{admin.TokenID, created.ID}, []string{listed[0].ID, listed[1].ID})
			require.Equal(t, e2eYAMLToken{ID: created.ID, Name: "ci", Role: "operator", CreatedAt: listed[1].CreatedAt,
				CreatedBy: admin.TokenID, Status: "active"}, listed[1])
			require.NotEmpty(t, listed[1].CreatedAt)

			// The CLI prints the server's message and hint, and exits 1.
			r := s.cli(t, "--token", created.Token, "token", "list")
			require.Equal(t, e2eResult{code: 1, stderr: "Error: role operator may not tokens:read\n" +
				"Hint: ask an admin for a token with a role that has tokens:read (admin, auditor)\n"}, r)
			r = s.cli(t, "--token", "tf_not-a-token", "token", "list")
			require.Equal(t, e2eResult{code: 1, stderr: "Error: a valid API token is required\n" +
				"Hint: send Authorization: Bearer <token>; create one with `trustflow token create`, or use the admin token printed at first start\n"}, r)

			// Revoke, then revoke again.
			require.Equal(t, "revoked token "+created.ID+" (ci, operator)\n", s.ok(t, "token", "revoke", created.ID))
			r = s.cli(t, "token", "revoke", created.ID)
			require.Equal(t, e2eResult{code: 1, stderr: "Error: token " + created.ID + " is already revoked\nHint: nothing to do\n"}, r)

			// The audit log: list, export, verify.
			page := e2eStrict[apiclient.AuditPage](t, s.ok(t, "audit", "list", "-o", "json"))
			var actions []string
			for _, rec := range page.Records {
				actions = append(actions, rec.Action)
			}
			require.Equal(t, []string{"token.revoke", "auth.denied", "token.create", "token.create", "kek.record", "audit.key.record"}, actions,
				"newest first; the first start keys the audit chain, then records its KEK id; the two refusals of one source make one auth.denied record")
			n := int64(len(page.Records))
			keyID := page.Records[n-1].KeyID
			for _, rec := range page.Records {
				require.Equal(t, keyID, rec.KeyID, "every record is keyed under the audit key")
			}
			var exported []int64
			var checkpoints []int64
			sc := bufio.NewScanner(strings.NewReader(s.ok(t, "audit", "export", "--action", "token.*")))
			for sc.Scan() {
				if strings.HasPrefix(sc.Text(), `{"checkpoint":`) {
					checkpoints = append(checkpoints, e2eStrict[struct {
						Checkpoint apiclient.AuditCheckpoint `json:"checkpoint"`
					}](t, sc.Text()).Checkpoint.Seq)
					continue
				}
				exported = append(exported, e2eStrict[apiclient.AuditRecord](t, sc.Text()).Seq)
			}
			require.Equal(t, []int64{3, 4, n}, exported)
			require.Equal(t, []int64{1}, checkpoints, "the export carries the first start's checkpoint")

			v := e2eStrict[apiclient.AuditVerification](t, s.ok(t, "audit", "verify", "-o", "json"))
			require.NotNil(t, v.CheckpointTime)
			require.Equal(t, apiclient.AuditVerification{OK: true, Records: n, HeadSeq: n, HeadHash: page.Records[0].Hash, KeyID: keyID, KeyedFrom: 1,
				Checkpoints: 2, CheckpointSeq: 1, CheckpointTime: v.CheckpointTime, CheckpointSource: "data dir"}, v)
			require.Equal(t, fmt.Sprintf("audit chain intact: %d records, head %d %s\n", n, n, page.Records[0].Hash)+
				"keyed with HMAC-SHA256 under audit key "+keyID+" from record 1; matches 2 checkpoints, the newest checkpoint of record 1 signed "+v.CheckpointTime.UTC().Format(time.RFC3339)+" (data dir)\n",
				s.ok(t, "audit", "verify"))

			// Tampering with a record makes verify fail and name the record.
			_, err = s.app.Store.DB().Exec("UPDATE audit_records SET actor_name = 'mallory' WHERE seq = 2")
			require.NoError(t, err)
			r = s.cli(t, "audit", "verify")
			require.Equal(t, 2, r.code)
			require.Empty(t, r.stdout)
			require.Regexp(t, `^Error: audit chain broken at record 2: record 2 was altered: `, r.stderr)
			r = s.cli(t, "audit", "verify", "-o", "json")
			require.Equal(t, 2, r.code)
			v = e2eStrict[apiclient.AuditVerification](t, r.stdout)
			require.False(t, v.OK)
			require.Equal(t, int64(2), v.FirstBadSeq)
		})
	}
}

func readE2EFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

func TestCLIErrors(t *testing.T) {
	t.Parallel()
	r := e2eRun(t, "--server", "http://127.0.0.1:1", "--token", "tf_x", "token", "list")
	require.Equal(t, 1, r.code)
	require.Regexp(t, `^Error: apiclient: cannot reach the trustflow server at http://127.0.0.1:1 `, r.stderr)

	r = e2eRun(t, "-o", "xml", "version")
	require.Equal(t, e2eResult{code: 1, stderr: "Error: -o \"xml\": want table, json or yaml\n"}, r)

	r = e2eRun(t, "token", "create", "--name", "ci")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, `required flag(s) "role" not set`)
}

func TestVersion(t *testing.T) {
	t.Parallel()
	r := e2eRun(t, "version", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	var keys map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &keys))
	for _, k := range []string{"version", "commit", "go_version", "fips140_enabled"} {
		require.Contains(t, keys, k)
	}
	want := cli.VersionInfo{Version: "1.2.3", Commit: "abc123", GoVersion: runtime.Version(), FIPS140: fips140.Enabled(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if !want.FIPS140 {
		want.FIPSReason = "enable with GODEBUG=fips140=on or build with GOFIPS140=v1.0.0"
	}
	require.Equal(t, want, e2eStrict[cli.VersionInfo](t, r.stdout))

	r = e2eRun(t, "version")
	require.Equal(t, 0, r.code)
	require.True(t, strings.HasPrefix(r.stdout, "trustflow 1.2.3 (commit abc123)\n"), r.stdout)
}

// e2eServe runs `trustflow serve` in-process until stop is called.
type e2eServe struct {
	addr   string
	stderr *e2eLines
	stop   func() int
}

// e2eLines collects the lines written to a pipe.
type e2eLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *e2eLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func e2eStartServe(t *testing.T, args ...string) *e2eServe {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		code := cli.Execute(ctx, append([]string{"serve", "--listen", "127.0.0.1:0"}, args...), strings.NewReader(""), io.Discard, pw, e2eGetenv, e2eBuild)
		pw.Close()
		done <- code
	}()
	lines := &e2eLines{}
	serving := make(chan string, 1)
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines.mu.Lock()
			lines.lines = append(lines.lines, sc.Text())
			lines.mu.Unlock()
			if m := e2eServingRe.FindStringSubmatch(sc.Text()); m != nil {
				serving <- m[1]
			}
		}
		io.Copy(io.Discard, pr)
	}()
	s := &e2eServe{stderr: lines}
	var stopped bool
	var code int
	s.stop = func() int {
		if !stopped {
			cancel()
			code = <-done
			<-read
			stopped = true
		}
		return code
	}
	t.Cleanup(func() { s.stop() })
	select {
	case s.addr = <-serving:
	case code = <-done:
		<-read
		stopped = true
		t.Fatalf("serve exited with %d before serving:\n%s", code, lines)
	case <-time.After(30 * time.Second):
		t.Fatalf("serve did not start listening within 30s:\n%s", lines)
	}
	return s
}

func TestServeFirstAndSecondStart(t *testing.T) {
	t.Parallel()
	for _, d := range storetest.Dialects(t) {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "data")
			args := []string{"--data-dir", dir}
			if db := e2eDatabase(t, d); db != "" {
				args = append(args, "--db", db)
			}

			first := e2eStartServe(t, args...)
			r := e2eRun(t, "--server", first.addr, "--data-dir", dir, "token", "list", "-o", "json")
			require.Equal(t, 0, r.code, r.stderr)
			toks := e2eStrict[[]apiclient.Token](t, r.stdout)
			require.Len(t, toks, 1)
			require.Equal(t, 0, first.stop(), first.stderr.String())

			secret := strings.TrimSpace(readE2EFile(t, filepath.Join(dir, config.AdminTokenFile)))
			require.Equal(t, []string{secret}, e2eSecretForm.FindAllString(first.stderr.String(), -1),
				"the first start prints the admin token once")

			second := e2eStartServe(t, args...)
			r = e2eRun(t, "--server", second.addr, "--token", secret, "token", "list", "-o", "json")
			require.Equal(t, 0, r.code, r.stderr)
			require.Equal(t, toks, e2eStrict[[]apiclient.Token](t, r.stdout), "the second start creates no token")
			require.Equal(t, 0, second.stop())
			require.NotContains(t, second.stderr.String(), "tf_", "the second start prints no token")
		})
	}
}

func TestServeFIPSWithoutTheModule(t *testing.T) {
	t.Parallel()
	if fips140.Enabled() {
		t.Skip("the FIPS 140-3 module is enabled in this process")
	}
	dir := filepath.Join(t.TempDir(), "data")
	r := e2eRun(t, "serve", "--fips", "--data-dir", dir, "--listen", "127.0.0.1:0")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "GODEBUG=fips140=on")
	require.NotContains(t, r.stderr, "tf_")
	_, err := os.Stat(dir)
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestServeRejectsBadFlags(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	r := e2eRun(t, "serve", "--data-dir", dir, "--log-level", "loud")
	require.Equal(t, e2eResult{code: 1, stderr: "Error: --log-level \"loud\": want debug, info, warn or error\n"}, r)
	r = e2eRun(t, "serve", "--data-dir", dir, "--listen", "nope")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, `--listen "nope": want HOST:PORT`)
}
