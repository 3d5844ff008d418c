// Package app is trustflow's composition root: it builds every component
// from a config.Config, starts them, and stops them in order. Nothing
// imports app but the CLI.
package app

import (
	"context"
	"crypto/fips140"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trustflow/trustflow/internal/api"
	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/config"
	"github.com/trustflow/trustflow/internal/connector"
	"github.com/trustflow/trustflow/internal/custody"
	"github.com/trustflow/trustflow/internal/engine"
	"github.com/trustflow/trustflow/internal/hsm"
	"github.com/trustflow/trustflow/internal/policy"
	"github.com/trustflow/trustflow/internal/probe"
	"github.com/trustflow/trustflow/internal/seal"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/truststore"
	"github.com/trustflow/trustflow/internal/web"
)

// Options are what the CLI hands the composition root besides the config.
type Options struct {
	// Logger defaults to a text logger on Stderr.
	Logger *slog.Logger
	// Build describes the binary.
	Build api.BuildInfo
	// Stderr receives the admin token on first start. Defaults to os.Stderr.
	Stderr io.Writer
	// Clock defaults to the wall clock.
	Clock clock.Clock
	// Getenv reads environment variables (an env:// KEK). Defaults to
	// os.Getenv.
	Getenv func(string) string
	// KEKRefresh is how often the node re-reads the active key-encryption
	// key id. Defaults to 2s.
	KEKRefresh time.Duration
}

// App is a built trustflow server.
type App struct {
	cfg        config.Config
	log        *slog.Logger
	Store      *store.Store
	Audit      *audit.Log
	Auth       *auth.Service
	Trust      *truststore.Service
	Connectors *connector.Service
	Engine     *engine.Engine
	Keys       *custody.Manager
	Policy     *policy.Service
	API        *api.Server
	Console    *web.Console

	// AdminToken is the admin token's secret when this start created it.
	AdminToken string

	mu       sync.Mutex
	srv      *http.Server
	ln       net.Listener
	serveErr chan error
	stopped  bool

	engineStarted bool
	tokens        *hsm.Tokens
}

// FIPSHint says how to get a binary whose FIPS 140-3 module is enabled.
const FIPSHint = "build with `GOFIPS140=v1.0.0 go build ./cmd/trustflow`, or run with `GODEBUG=fips140=on`"

// New builds the server: data dir, key-encryption key, database, services
// and API. It does not listen yet.
func New(ctx context.Context, cfg config.Config, opts Options) (*App, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(opts.Stderr, nil))
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if cfg.FIPS && !fips140.Enabled() {
		return nil, fmt.Errorf("app: --fips: the Go FIPS 140-3 module is not enabled in this process; %s", FIPSHint)
	}
	if err := ensureDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	// One cache of PKCS#11 sessions for the KEK and identity keys alike: a
	// module is initialised once per process.
	tokens := hsm.NewTokens()
	source, err := kekSource(cfg, opts.Getenv, tokens)
	if err != nil {
		return nil, fmt.Errorf("app: key-encryption key: %w", err)
	}
	dbc, err := config.ParseDatabaseURL(cfg.DatabaseURL, cfg.DataDir)
	if err != nil {
		return nil, err
	}
	st, err := store.Open(ctx, store.Config{Dialect: store.Dialect(dbc.Dialect), DSN: dbc.DSN})
	if err != nil {
		return nil, fmt.Errorf("app: open database: %w", err)
	}
	a := &App{cfg: cfg, log: opts.Logger, Store: st, tokens: tokens}
	if a.Audit, err = openAudit(ctx, cfg, st, opts); err != nil {
		st.Close()
		return nil, err
	}
	a.Auth = auth.NewService(st, a.Audit, opts.Clock)
	// The keyring is settled before anything can seal: the node refuses
	// to start without the database's active KEK, and finishes an
	// interrupted rotation first.
	a.Keys, err = custody.Open(ctx, custody.Config{Store: st, Audit: a.Audit, Source: source, Clock: opts.Clock, Logger: opts.Logger,
		AllowMissingKEK: cfg.AllowMissingKEK, RefreshEvery: opts.KEKRefresh,
		OnKeyring: func(kr *seal.Keyring) {
			if a.Trust != nil {
				a.Trust.UseKeyring(kr)
			}
		}})
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("app: key-encryption key: %w", err)
	}
	if a.Keys.Created {
		opts.Logger.Info("created key-encryption key", "source", source.String(), "kek_id", a.Keys.ActiveID())
	}
	// Every outbound connection, and every identity, obeys one policy.
	a.Policy, err = policy.NewService(ctx, policy.ServiceConfig{Store: st, Audit: a.Audit, Clock: opts.Clock, Check: a.policyViolations})
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("app: policy: %w", err)
	}
	a.Trust, err = truststore.New(truststore.Config{Store: st, Audit: a.Audit, Keyring: a.Keys.Keyring(), Clock: opts.Clock, FIPS: cfg.FIPS, HSM: tokens,
		Policy: a.Policy.Current})
	if err != nil {
		st.Close()
		return nil, err
	}
	a.Connectors, err = connector.New(connector.Config{Store: st, Audit: a.Audit, Trust: a.Trust, Clock: opts.Clock, Logger: opts.Logger, FIPS: cfg.FIPS,
		Policy: a.Policy.Current, IdleConnectors: cfg.IdleConnectors})
	if err != nil {
		st.Close()
		return nil, err
	}
	a.Trust.SetInUse(a.Connectors.InUse)
	a.Engine, err = engine.New(ctx, engine.Config{Store: st, Audit: a.Audit, Connectors: a.Connectors, Trust: a.Trust, Clock: opts.Clock,
		Logger: opts.Logger, Workers: cfg.Workers, JobTimeout: cfg.JobTimeout, LeaseTTL: cfg.RescueAfter, KeysReady: a.Keys.Ready,
		WebhookWindow: cfg.WebhookWindow, WebhookDeliveryTTL: cfg.WebhookDeliveryTTL,
		Limits: engine.Limits{SubflowDepth: cfg.MaxSubflowDepth, ForeachItems: cfg.MaxForeachItems, StepOutputBytes: cfg.MaxStepOutput,
			RunStateBytes: cfg.MaxRunState, RunDuration: cfg.MaxRunDuration, RunsInFlight: cfg.MaxRunsInFlight}})
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("app: engine: %w", err)
	}
	a.Trust.SetEventSink(a.Engine.TrustEvents())
	prober, err := probe.New(probe.Config{Trust: a.Trust, Audit: a.Audit, Clock: opts.Clock, Policy: a.Policy.Current})
	if err != nil {
		st.Close()
		return nil, err
	}

	path := filepath.Join(cfg.DataDir, config.AdminTokenFile)
	// The token file is written before the token commits: a crash between
	// the two leaves a stale file, which the next start replaces.
	secret, created, err := a.Auth.BootstrapWith(ctx, func(secret string) error {
		return writeFileAtomic(path, []byte(secret+"\n"), 0o600)
	})
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("app: create admin token: %w", err)
	}
	if created {
		a.AdminToken = secret
		showAdminToken(opts.Stderr, opts.Logger, path, secret)
	}
	trusted, err := config.ParseTrustedProxies(cfg.TrustedProxies)
	if err != nil {
		st.Close()
		return nil, err
	}

	a.API = api.New(api.Config{
		Store: st, Auth: a.Auth, Audit: a.Audit, Logger: opts.Logger, Build: opts.Build,
		FIPSRequired: cfg.FIPS, MaxBodyBytes: cfg.MaxBodyBytes, Registry: prometheus.NewRegistry(),
		Trust: a.Trust, RotateKEK: a.rotateKEK, KEKStatus: a.Keys.Status, KeysReady: a.Keys.Ready, Connectors: a.Connectors, Probe: prober, Engine: a.Engine,
		Policy: a.Policy, PolicyCheck: a.policyViolations,
		Refusals: api.RefusalConfig{Rate: cfg.AuthFailRate, Burst: cfg.AuthFailBurst, TrustedProxies: trusted},
		MaxWait:  cfg.MaxWait, WriteTimeout: cfg.WriteTimeout, MetricsAuth: cfg.MetricsAuth, Clock: opts.Clock,
	})
	a.Console, err = web.New(web.Config{Auth: a.Auth, Audit: a.Audit, Trust: a.Trust, Connectors: a.Connectors, Engine: a.Engine, Prober: prober,
		API: a.API.Handler(), Refusals: a.API, Clock: opts.Clock, Logger: opts.Logger, MaxBodyBytes: cfg.MaxBodyBytes})
	if err != nil {
		st.Close()
		return nil, err
	}
	return a, nil
}

// Config returns the effective configuration.
func (a *App) Config() config.Config { return a.cfg }

// Start listens on the configured address and serves in the background.
func (a *App) Start(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ln != nil {
		return errors.New("app: already started")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", a.cfg.Listen)
	if err != nil {
		return fmt.Errorf("app: listen on %s (is another trustflow running? choose another with --listen): %w", a.cfg.Listen, err)
	}
	srv, err := httpServer(a.cfg, a.Console.Handler(), a.log)
	if err != nil {
		ln.Close()
		return err
	}
	ln = newLimitListener(ln, a.cfg.MaxConnections)
	if srv.TLSConfig != nil {
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	if err := a.Engine.Start(ctx); err != nil {
		ln.Close()
		return fmt.Errorf("app: start workers: %w", err)
	}
	a.engineStarted = true
	if err := a.Keys.Start(context.WithoutCancel(ctx)); err != nil {
		ln.Close()
		return fmt.Errorf("app: start key-encryption key checks: %w", err)
	}
	if err := a.Audit.Start(context.WithoutCancel(ctx)); err != nil {
		ln.Close()
		return fmt.Errorf("app: start audit checkpoints: %w", err)
	}
	if err := a.API.Start(context.WithoutCancel(ctx)); err != nil {
		ln.Close()
		return fmt.Errorf("app: start the API: %w", err)
	}
	a.ln, a.srv = ln, srv
	a.serveErr = make(chan error, 1)
	go func() {
		err := srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		a.serveErr <- err
	}()
	a.log.Info("trustflow serving", "addr", a.URL(), "database", string(a.Store.Dialect()), "fips140", fips140.Enabled())
	return nil
}

// URL is the API's base URL once started.
func (a *App) URL() string {
	if a.ln == nil {
		return ""
	}
	scheme := "http"
	if a.cfg.TLSCert != "" {
		scheme = "https"
	}
	return scheme + "://" + a.ln.Addr().String()
}

// Run starts the server and serves until ctx is cancelled, then shuts down
// gracefully.
func (a *App) Run(ctx context.Context) error {
	if err := a.Start(ctx); err != nil {
		a.Stop()
		return err
	}
	select {
	case <-ctx.Done():
		a.log.Info("shutting down")
		return a.Stop()
	case err := <-a.serveErr:
		a.serveErr <- err
		stopErr := a.Stop()
		if err != nil {
			return fmt.Errorf("app: serve: %w", err)
		}
		return stopErr
	}
}

// Stop drains in-flight requests (bounded by the shutdown timeout) and
// closes the database. It is idempotent.
func (a *App) Stop() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopped {
		return nil
	}
	a.stopped = true
	var errs []error
	if a.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
		defer cancel()
		if err := a.srv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("app: shutdown http: %w", err))
		}
	}
	// Refusals not yet recorded are written while the database is open.
	a.API.Stop()
	a.Keys.Stop()
	a.Audit.Stop()
	if a.engineStarted {
		ctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
		if err := a.Engine.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("app: stop workers: %w", err))
		}
		cancel()
	}
	if err := a.Store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("app: close database: %w", err))
	}
	if err := a.tokens.Close(); err != nil {
		errs = append(errs, fmt.Errorf("app: close PKCS#11 sessions: %w", err))
	}
	return errors.Join(errs...)
}

// ensureDataDir creates the data dir 0700, or tightens an existing one.
func ensureDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("app: create data dir %s: %w", dir, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("app: data dir %s: %w", dir, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("app: restrict data dir %s to 0700: %w", dir, err)
		}
	}
	return nil
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory, so a crash never leaves a half-written file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
