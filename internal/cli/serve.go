package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/trustflow/trustflow/internal/api"
	"github.com/trustflow/trustflow/internal/app"
	"github.com/trustflow/trustflow/internal/config"
)

func newServeCmd(g *globals) *cobra.Command {
	var cfg config.Config
	var logLevel string
	var kekRefresh time.Duration
	var cpuProfile string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the trustflow server: API, workers and scheduler",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.DataDir = g.dataDir
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: want debug, info, warn or error", logLevel)
			}
			if kekRefresh < 0 {
				return fmt.Errorf("--kek-refresh %s: must be positive", kekRefresh)
			}
			logger := newLogger(g, cfg.LogFormat, level)
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if cpuProfile != "" {
				end, err := startCPUProfile(cpuProfile)
				if err != nil {
					return err
				}
				defer end()
			}
			a, err := app.New(ctx, cfg, app.Options{Logger: logger, Build: api.BuildInfo(g.build), Stderr: g.stderr, KEKRefresh: kekRefresh})
			if err != nil {
				return err
			}
			return a.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", config.DefaultListen, "address to listen on")
	f.StringVar(&cfg.DatabaseURL, "db", g.getenv(config.EnvDatabaseURL), "database: postgres://... for PostgreSQL; empty for SQLite in the data dir (env "+config.EnvDatabaseURL+")")
	f.StringVar(&cfg.KEKFile, "kek-file", g.getenv(config.EnvKEKFile), "key-encryption key file (env "+config.EnvKEKFile+"; default DATA_DIR/kek); same as --kek file://PATH")
	f.StringVar(&cfg.KEK, "kek", g.getenv(config.EnvKEK), "where the key-encryption key lives: file://PATH, env://NAME or a pkcs11: URI (env "+config.EnvKEK+"; default file://DATA_DIR/kek)")
	f.StringVar(&cfg.AuditKey, "audit-key", g.getenv(config.EnvAuditKey), "where the audit key (it chains audit records and signs checkpoints) lives: file://PATH or env://NAME (env "+config.EnvAuditKey+"; default file://DATA_DIR/audit.key)")
	f.DurationVar(&cfg.AuditCheckpointEvery, "audit-checkpoint-every", config.DefaultAuditCheckpointEvery, "sign an audit checkpoint this long after the latest one, if records were appended since")
	f.Int64Var(&cfg.AuditCheckpointRecords, "audit-checkpoint-records", config.DefaultAuditCheckpointRecords, "sign one sooner once this many records were appended since the latest")
	f.BoolVar(&cfg.AllowMissingKEK, "allow-missing-kek", false, "start even if sealed values name key-encryption keys the --kek source lacks (they stay unreadable; audited)")
	f.BoolVar(&cfg.FIPS, "fips", false, "refuse to start unless Go's FIPS 140-3 module is enabled; apply the FIPS key and TLS policy")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "serve the API over HTTPS with this certificate (PEM)")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "private key for --tls-cert (PEM)")
	f.StringVar(&cfg.LogFormat, "log-format", config.DefaultLogFormat, "log format: text or json")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.IntVar(&cfg.Workers, "workers", 0, "how many runs this node advances at once (default 16)")
	f.IntVar(&cfg.IdleConnectors, "idle-connectors", 0, "how many connectors keep their client and idle connections at once; the least recently used beyond it release theirs and resume their TLS session on their next call (default 64; -1: no bound)")
	f.DurationVar(&cfg.JobTimeout, "job-timeout", 0, "bound on one advance of a run; the engine yields long before (default 5m)")
	f.DurationVar(&cfg.WebhookWindow, "webhook-window", config.DefaultWebhookWindow, "how far a signed webhook's X-Trustflow-Timestamp may be from this server's clock, either way; accepted signatures are remembered that long to refuse replays (the same on every node)")
	f.DurationVar(&cfg.WebhookDeliveryTTL, "webhook-delivery-ttl", config.DefaultWebhookDeliveryTTL, "how long an X-Trustflow-Delivery id returns the run its first delivery started")
	f.DurationVar(&cfg.RescueAfter, "rescue-after", 0, "how long after a node died its runs resume on another: a run's lease outlives its node's last renewal (every third of it) that long (default 10s)")
	f.Float64Var(&cfg.AuthFailRate, "auth-fail-rate", config.DefaultAuthFailRate, "refused requests (no valid token, a role without the permission, a bad webhook signature) a second one source may make before it gets 429")
	f.IntVar(&cfg.AuthFailBurst, "auth-fail-burst", config.DefaultAuthFailBurst, "refused requests one source may make at once before it gets 429")
	f.StringSliceVar(&cfg.TrustedProxies, "trusted-proxy", nil, "CIDR of a reverse proxy whose X-Forwarded-For names the client (repeat or comma-separate; default: none, the peer address is the source)")
	f.DurationVar(&cfg.MaxWait, "max-wait", config.DefaultMaxWait, "longest ?wait= a run start or webhook may ask for")
	f.DurationVar(&cfg.WriteTimeout, "write-timeout", config.DefaultWriteTimeout, "time to write an answer, and each write of a streamed one (audit export); a client that stops reading is dropped")
	f.IntVar(&cfg.MaxConnections, "max-connections", config.DefaultMaxConnections, "most HTTP connections open at once; more wait to be accepted")
	f.BoolVar(&cfg.MetricsAuth, "metrics-auth", false, "make /metrics require a valid token (any role)")
	addLimitFlags(f, &cfg.RunLimits)
	// How often the node re-reads the active key-encryption key id; the
	// process tests of rotations shorten it. Hidden: the default is the
	// documented behaviour.
	f.DurationVar(&kekRefresh, "kek-refresh", 0, "how often to re-read the active key-encryption key id (default 2s)")
	f.Lookup("kek-refresh").Hidden = true
	// A CPU profile of the whole serve, written when it stops (SIGINT or
	// SIGTERM): the webhook benchmark's profile. Hidden: a tool for
	// measuring trustflow, not for running it.
	f.StringVar(&cpuProfile, "cpu-profile", "", "write a CPU profile (pprof) to this file until the server stops")
	f.Lookup("cpu-profile").Hidden = true
	return cmd
}

func startCPUProfile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("--cpu-profile %s: %w", path, err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpu-profile %s: %w", path, err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

func newLogger(g *globals, format string, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(g.stderr, opts))
	}
	return slog.New(slog.NewTextHandler(g.stderr, opts))
}

// contextOf returns the command's context, never nil.
func contextOf(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}
