package app_test

import (
	"bytes"
	"context"
	"crypto/fips140"
	"encoding/json"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/api"
	"github.com/trustflow/trustflow/internal/app"
	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/config"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

var secretForm = regexp.MustCompile(`tf_[A-Za-z0-9_-]{43}`)

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testConfig is a config for a fresh data dir (not yet created) and a fresh
// database of dialect d: SQLite in the data dir, or a PostgreSQL schema.
func testConfig(t *testing.T, d store.Dialect) config.Config {
	t.Helper()
	cfg := config.Config{DataDir: filepath.Join(t.TempDir(), "data"), Listen: "127.0.0.1:0"}
	if d == store.Postgres {
		cfg.DatabaseURL = storetest.DatabaseURL(t, d)
	}
	return cfg
}

func requireMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, want, fi.Mode().Perm(), "%s", path)
}

func TestFirstAndSecondStart(t *testing.T) {
	t.Parallel()
	for _, d := range storetest.Dialects(t) {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			cfg := testConfig(t, d)
			var stderr syncBuffer
			a, err := app.New(ctx, cfg, app.Options{Stderr: &stderr, Build: api.BuildInfo{Version: "1.2.3"}})
			require.NoError(t, err)
			t.Cleanup(func() { a.Stop() })

			requireMode(t, cfg.DataDir, 0o700)
			requireMode(t, filepath.Join(cfg.DataDir, config.KEKFileName), 0o600)
			tokenFile := filepath.Join(cfg.DataDir, config.AdminTokenFile)
			requireMode(t, tokenFile, 0o600)
			if d == store.SQLite {
				requireMode(t, filepath.Join(cfg.DataDir, config.SQLiteFileName), 0o600)
			}
			b, err := os.ReadFile(tokenFile)
			require.NoError(t, err)
			require.Regexp(t, `^tf_[A-Za-z0-9_-]{43}\n$`, string(b), "exactly one line holding the token")
			require.Equal(t, a.AdminToken+"\n", string(b))
			require.Equal(t, []string{a.AdminToken}, secretForm.FindAllString(stderr.String(), -1), "the token is printed once")
			require.Contains(t, stderr.String(), tokenFile)

			// The token works against the real listener.
			require.NoError(t, a.Start(ctx))
			require.ErrorContains(t, a.Start(ctx), "app: already started")
			req, err := http.NewRequestWithContext(ctx, "GET", a.URL()+"/api/v1/whoami", nil)
			require.NoError(t, err)
			req.Header.Set("Authorization", "Bearer "+a.AdminToken)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			var me auth.Principal
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&me))
			resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode)
			require.Equal(t, "admin", me.Name)
			require.Equal(t, auth.RoleAdmin, me.Role)
			require.NoError(t, a.Stop())
			require.NoError(t, a.Stop(), "Stop is idempotent")

			// A second start with the same data dir creates and prints no token.
			var stderr2 syncBuffer
			a2, err := app.New(ctx, cfg, app.Options{Stderr: &stderr2})
			require.NoError(t, err)
			t.Cleanup(func() { a2.Stop() })
			require.Empty(t, a2.AdminToken)
			require.NotContains(t, stderr2.String(), "tf_")
			b2, err := os.ReadFile(tokenFile)
			require.NoError(t, err)
			require.Equal(t, b, b2)
			toks, err := a2.Auth.List(ctx)
			require.NoError(t, err)
			require.Len(t, toks, 1)
			p, err := a2.Auth.Authenticate(ctx, a.AdminToken)
			require.NoError(t, err)
			require.Equal(t, me, p)
		})
	}
}

func TestDataDirIsTightened(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, store.SQLite)
	require.NoError(t, os.Mkdir(cfg.DataDir, 0o755))
	a, err := app.New(context.Background(), cfg, app.Options{Stderr: &syncBuffer{}})
	require.NoError(t, err)
	t.Cleanup(func() { a.Stop() })
	requireMode(t, cfg.DataDir, 0o700)
}

func TestFIPSRequiresTheModule(t *testing.T) {
	t.Parallel()
	if fips140.Enabled() {
		t.Skip("the FIPS 140-3 module is enabled in this process")
	}
	cfg := testConfig(t, store.SQLite)
	cfg.FIPS = true
	_, err := app.New(context.Background(), cfg, app.Options{Stderr: &syncBuffer{}})
	require.ErrorContains(t, err, "GODEBUG=fips140=on")
	require.ErrorContains(t, err, "GOFIPS140=v1.0.0")
	_, statErr := os.Stat(cfg.DataDir)
	require.ErrorIs(t, statErr, fs.ErrNotExist, "a refused start creates nothing")
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, store.SQLite)
	cfg.Listen = "nope"
	cfg.LogFormat = "xml"
	_, err := app.New(context.Background(), cfg, app.Options{Stderr: &syncBuffer{}})
	require.ErrorContains(t, err, "--listen")
	require.ErrorContains(t, err, "--log-format")
}

// signalHandler is a slog handler that closes serving when the server logs
// that it is serving.
type signalHandler struct {
	slog.Handler
	once    *sync.Once
	serving chan struct{}
}

func (h signalHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "trustflow serving" {
		h.once.Do(func() { close(h.serving) })
	}
	return h.Handler.Handle(ctx, r)
}

func TestRunServesUntilCancelled(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, store.SQLite)
	var logs syncBuffer
	h := signalHandler{Handler: slog.NewTextHandler(&logs, nil), once: &sync.Once{}, serving: make(chan struct{})}
	a, err := app.New(context.Background(), cfg, app.Options{Stderr: &logs, Logger: slog.New(h)})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	select {
	case <-h.serving:
	case err := <-done:
		t.Fatalf("Run returned before serving: %v", err)
	}
	resp, err := http.Get(a.URL() + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	cancel()
	require.NoError(t, <-done)
	require.True(t, strings.Contains(logs.String(), "shutting down"), logs.String())
	require.Error(t, a.Store.Ping(context.Background()), "Run closes the database on the way out")
	_, err = http.Get(a.URL() + "/healthz")
	require.Error(t, err, "the listener is closed")
}
