// Package config owns trustflow's server configuration: the Config struct
// filled from flags and environment, its defaults, and its validation. Every
// default lives here, in WithDefaults, and every rule in Validate.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"time"
)

// Environment variables read by the CLI for the matching flags.
const (
	EnvDataDir     = "TRUSTFLOW_DATA_DIR"
	EnvDatabaseURL = "TRUSTFLOW_DATABASE_URL"
	EnvServer      = "TRUSTFLOW_SERVER"
	EnvToken       = "TRUSTFLOW_TOKEN"
	EnvKEKFile     = "TRUSTFLOW_KEK_FILE"
	EnvKEK         = "TRUSTFLOW_KEK"
	EnvAuditKey    = "TRUSTFLOW_AUDIT_KEY"
)

// Defaults.
const (
	DefaultDataDir       = "./trustflow-data"
	DefaultListen        = "127.0.0.1:8321"
	DefaultServer        = "http://127.0.0.1:8321"
	DefaultLogFormat     = "text"
	DefaultMaxBodyBytes  = 1 << 20
	DefaultShutdownAfter = 15 * time.Second
	AdminTokenFile       = "admin.token"
	// DefaultAuthFailRate and DefaultAuthFailBurst bound refused requests
	// (no valid token, a role without the permission, a bad webhook
	// signature) per source: 10 a second, 20 at once.
	DefaultAuthFailRate  = 10.0
	DefaultAuthFailBurst = 20
	// DefaultMaxWait caps ?wait= on run starts and webhooks.
	DefaultMaxWait = 5 * time.Minute
	// DefaultWriteTimeout bounds writing one answer, and each write of a
	// streamed one (audit export, KEK rotation progress).
	DefaultWriteTimeout = 30 * time.Second
	// DefaultMaxConnections caps open HTTP connections.
	DefaultMaxConnections = 1024
	KEKFileName           = "kek"
	SQLiteFileName        = "trustflow.db"
)

// Audit key defaults.
const (
	// AuditKeyFileName is the default audit key file in the data dir.
	AuditKeyFileName = "audit.key"
	// DefaultAuditCheckpointEvery and DefaultAuditCheckpointRecords say
	// when a periodic audit checkpoint is made: 5 minutes after the
	// latest, or 1000 records, whichever comes first.
	DefaultAuditCheckpointEvery   = 5 * time.Minute
	DefaultAuditCheckpointRecords = 1000
)

// Webhook defaults.
const (
	// DefaultWebhookWindow is how far a signed webhook's timestamp may be
	// from the server's clock.
	DefaultWebhookWindow = 5 * time.Minute
	// DefaultWebhookDeliveryTTL is how long a webhook delivery id is kept.
	DefaultWebhookDeliveryTTL = 24 * time.Hour
)

// Config configures `trustflow serve`. The zero value means "every default";
// call WithDefaults then Validate before use.
type Config struct {
	// DataDir holds the SQLite database, the key-encryption key and the admin
	// token file. Defaults to ./trustflow-data.
	DataDir string
	// Listen is the API listener's address. Defaults to 127.0.0.1:8321.
	Listen string
	// DatabaseURL selects the database: empty means SQLite in DataDir;
	// postgres:// or postgresql:// selects PostgreSQL; sqlite:PATH (or
	// file:PATH) names another SQLite file.
	DatabaseURL string
	// KEKFile is the key-encryption key's path. Defaults to DataDir/kek.
	// Used when KEK is empty.
	KEKFile string
	// KEK names where the key-encryption key lives: file://PATH, env://NAME,
	// or a PKCS#11 URI (pkcs11:token=T;object=O?module-path=...). Defaults to
	// file://KEKFile.
	KEK string
	// AuditKey names where the audit key (which chains audit records and
	// signs checkpoints) lives: file://PATH or env://NAME. Defaults to
	// file://DataDir/audit.key.
	AuditKey string
	// AuditCheckpointEvery is how long after the latest audit checkpoint a
	// new one is made, if records were appended. Defaults to 5m.
	AuditCheckpointEvery time.Duration
	// AuditCheckpointRecords is how many records appended since the latest
	// checkpoint make a new one sooner. Defaults to 1000.
	AuditCheckpointRecords int64
	// AllowMissingKEK starts the server even when sealed values name
	// key-encryption keys the KEK source does not hold (audited).
	AllowMissingKEK bool
	// LogFormat is "text" or "json". Defaults to text.
	LogFormat string
	// FIPS refuses to start unless Go's FIPS 140-3 module is enabled.
	FIPS bool
	// TLSCert and TLSKey, both or neither, make the API listener serve HTTPS.
	TLSCert string
	TLSKey  string
	// MaxBodyBytes bounds request bodies; larger ones get 413. Defaults to 1 MiB.
	MaxBodyBytes int64
	// ShutdownTimeout bounds graceful shutdown. Defaults to 15s.
	ShutdownTimeout time.Duration
	// Workers is how many runs this node advances at once. Defaults to 16.
	Workers int
	// JobTimeout bounds one advance of a run (the engine yields long
	// before). Defaults to 5m.
	JobTimeout time.Duration
	// RescueAfter is how long after a node died its runs resume on another
	// node: the lease of a run outlives its holder's last renewal (every
	// third of it) that long. Defaults to 10s.
	RescueAfter time.Duration
	// IdleConnectors is how many connectors keep their client and idle
	// connections at once (the least recently used beyond it release
	// theirs). Defaults to 64; -1 means no bound.
	IdleConnectors int
	// AuthFailRate is how many refused requests a second one source may
	// make before it gets 429; AuthFailBurst how many at once. Default 10
	// and 20.
	AuthFailRate  float64
	AuthFailBurst int
	// TrustedProxies are the CIDRs of reverse proxies whose
	// X-Forwarded-For names the client. Empty (the default) trusts none:
	// the source of a request is its peer address.
	TrustedProxies []string
	// MaxWait caps ?wait= on run starts and webhooks. Defaults to 5m.
	MaxWait time.Duration
	// WriteTimeout bounds writing one answer, and each write of a streamed
	// one: a client that stops reading is dropped. Defaults to 30s.
	WriteTimeout time.Duration
	// MaxConnections caps open HTTP connections; more wait in the kernel's
	// accept queue. Defaults to 1024.
	MaxConnections int
	// MetricsAuth makes /metrics require a valid token (any role: the
	// system:read permission). Defaults to off.
	MetricsAuth bool
	// RunLimits are the server's limits on runs (limits.go).
	RunLimits
	// WebhookWindow is how far a signed webhook's X-Trustflow-Timestamp may
	// be from the server's clock, either way, and so how long an accepted
	// signature is remembered to refuse its replay. Defaults to 5m.
	WebhookWindow time.Duration
	// WebhookDeliveryTTL is how long an X-Trustflow-Delivery id maps to the
	// run its first delivery started. Defaults to 24h.
	WebhookDeliveryTTL time.Duration
}

// WithDefaults returns a copy of c with every unset field defaulted.
func (c Config) WithDefaults() Config {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.KEKFile == "" {
		c.KEKFile = filepath.Join(c.DataDir, KEKFileName)
	}
	if c.KEK == "" {
		c.KEK = "file://" + c.KEKFile
	}
	if c.AuditKey == "" {
		c.AuditKey = "file://" + filepath.Join(c.DataDir, AuditKeyFileName)
	}
	if c.AuditCheckpointEvery == 0 {
		c.AuditCheckpointEvery = DefaultAuditCheckpointEvery
	}
	if c.AuditCheckpointRecords == 0 {
		c.AuditCheckpointRecords = DefaultAuditCheckpointRecords
	}
	if c.LogFormat == "" {
		c.LogFormat = DefaultLogFormat
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownAfter
	}
	if c.Workers == 0 {
		c.Workers = 16
	}
	if c.JobTimeout == 0 {
		c.JobTimeout = 5 * time.Minute
	}
	if c.RescueAfter == 0 {
		c.RescueAfter = DefaultRescueAfter
	}
	if c.AuthFailRate == 0 {
		c.AuthFailRate = DefaultAuthFailRate
	}
	if c.AuthFailBurst == 0 {
		c.AuthFailBurst = DefaultAuthFailBurst
	}
	if c.MaxWait == 0 {
		c.MaxWait = DefaultMaxWait
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.WebhookWindow == 0 {
		c.WebhookWindow = DefaultWebhookWindow
	}
	if c.WebhookDeliveryTTL == 0 {
		c.WebhookDeliveryTTL = DefaultWebhookDeliveryTTL
	}
	c.RunLimits = c.RunLimits.withDefaults()
	return c
}

// Bounds of --rescue-after, the lease of a run.
const (
	DefaultRescueAfter = 10 * time.Second
	MinRescueAfter     = time.Second
	MaxRescueAfter     = 24 * time.Hour
)

// Validate reports every invalid field at once, naming the flag and the fix.
func (c Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("--listen %q: want HOST:PORT, e.g. 127.0.0.1:8321: %w", c.Listen, err))
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("--log-format %q: want text or json", c.LogFormat))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key: give both to serve HTTPS, or neither"))
	}
	if c.RescueAfter < MinRescueAfter || c.RescueAfter > MaxRescueAfter {
		errs = append(errs, fmt.Errorf("--rescue-after %s: want %s to %s (a node renews its leases every third of it; shorter would take live runs from a busy node)", c.RescueAfter, MinRescueAfter, MaxRescueAfter))
	}
	if c.IdleConnectors < -1 {
		errs = append(errs, fmt.Errorf("--idle-connectors %d: want a count, 0 for the default (64), or -1 for no bound", c.IdleConnectors))
	}
	if c.Workers < 1 || c.Workers > 1024 {
		errs = append(errs, fmt.Errorf("--workers %d: want 1 to 1024", c.Workers))
	}
	if c.MaxBodyBytes < 0 {
		errs = append(errs, errors.New("max body bytes: must be positive"))
	}
	if c.AuthFailRate < 0 || c.AuthFailRate > 1e6 {
		errs = append(errs, fmt.Errorf("--auth-fail-rate %g: want refused requests a second per source, more than 0 (e.g. 10)", c.AuthFailRate))
	}
	if c.AuthFailBurst < 1 || c.AuthFailBurst > 1e6 {
		errs = append(errs, fmt.Errorf("--auth-fail-burst %d: want 1 or more (e.g. 20)", c.AuthFailBurst))
	}
	if _, err := ParseTrustedProxies(c.TrustedProxies); err != nil {
		errs = append(errs, err)
	}
	if c.MaxWait < time.Second || c.MaxWait > time.Hour {
		errs = append(errs, fmt.Errorf("--max-wait %s: want 1s to 1h", c.MaxWait))
	}
	if c.WriteTimeout < time.Second || c.WriteTimeout > time.Hour {
		errs = append(errs, fmt.Errorf("--write-timeout %s: want 1s to 1h", c.WriteTimeout))
	}
	if c.MaxConnections < 1 || c.MaxConnections > 1<<20 {
		errs = append(errs, fmt.Errorf("--max-connections %d: want 1 to 1048576", c.MaxConnections))
	}
	if c.WebhookWindow < 10*time.Second || c.WebhookWindow > time.Hour {
		errs = append(errs, fmt.Errorf("--webhook-window %s: want 10s to 1h (e.g. 5m); the same on every node", c.WebhookWindow))
	}
	if c.WebhookDeliveryTTL < c.WebhookWindow || c.WebhookDeliveryTTL > 30*24*time.Hour {
		errs = append(errs, fmt.Errorf("--webhook-delivery-ttl %s: want --webhook-window (%s) to 720h (e.g. 24h)", c.WebhookDeliveryTTL, c.WebhookWindow))
	}
	if _, err := ParseDatabaseURL(c.DatabaseURL, c.DataDir); err != nil {
		errs = append(errs, err)
	}
	if _, err := ParseKEKURI(c.KEK); err != nil {
		errs = append(errs, err)
	}
	if _, err := ParseAuditKeyURI(c.AuditKey); err != nil {
		errs = append(errs, err)
	}
	if c.AuditCheckpointEvery < MinAuditCheckpointEvery || c.AuditCheckpointEvery > MaxAuditCheckpointEvery {
		errs = append(errs, fmt.Errorf("--audit-checkpoint-every %s: want %s to %s (e.g. 5m)", c.AuditCheckpointEvery, MinAuditCheckpointEvery, MaxAuditCheckpointEvery))
	}
	if c.AuditCheckpointRecords < 1 || c.AuditCheckpointRecords > MaxAuditCheckpointRecords {
		errs = append(errs, fmt.Errorf("--audit-checkpoint-records %d: want 1 to %d (e.g. 1000)", c.AuditCheckpointRecords, MaxAuditCheckpointRecords))
	}
	errs = append(errs, c.RunLimits.validate()...)
	if len(errs) > 0 {
		return fmt.Errorf("config: %w", errors.Join(errs...))
	}
	return nil
}

// ParseTrustedProxies parses --trusted-proxy values: CIDRs (10.0.0.0/8)
// or single addresses (10.0.0.7, taken as /32 or /128).
func ParseTrustedProxies(raw []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range raw {
		v = strings.TrimSpace(v)
		if p, err := netip.ParsePrefix(v); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(v)
		if err != nil {
			return nil, fmt.Errorf("--trusted-proxy %q: want a CIDR such as 10.0.0.0/8 or an address such as 10.0.0.7", v)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// Database is a parsed --db value.
type Database struct {
	// Dialect is "sqlite" or "postgres".
	Dialect string
	// DSN is what the driver opens: a file path for SQLite, the URL for PostgreSQL.
	DSN string
}

// ParseDatabaseURL interprets a --db value. Empty means SQLite in dataDir.
func ParseDatabaseURL(raw, dataDir string) (Database, error) {
	switch {
	case raw == "":
		return Database{Dialect: "sqlite", DSN: filepath.Join(dataDir, SQLiteFileName)}, nil
	case strings.HasPrefix(raw, "postgres://"), strings.HasPrefix(raw, "postgresql://"):
		if _, err := url.Parse(raw); err != nil {
			return Database{}, fmt.Errorf("--db: not a valid PostgreSQL URL (want postgres://user@host:5432/dbname): %w", err)
		}
		return Database{Dialect: "postgres", DSN: raw}, nil
	case strings.HasPrefix(raw, "sqlite:"):
		p := strings.TrimPrefix(strings.TrimPrefix(raw, "sqlite:"), "//")
		if p == "" {
			return Database{}, errors.New("--db sqlite: needs a file path, e.g. sqlite:/var/lib/trustflow/trustflow.db")
		}
		return Database{Dialect: "sqlite", DSN: p}, nil
	case strings.HasPrefix(raw, "file:"):
		return Database{Dialect: "sqlite", DSN: strings.TrimPrefix(raw, "file:")}, nil
	default:
		return Database{}, fmt.Errorf("--db %q: unknown database; use postgres://user@host:5432/db, sqlite:PATH, or leave it empty for SQLite in the data dir", redactURL(raw))
	}
}

// redactURL hides a password in a URL before it is shown in an error.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	return u.Redacted()
}

// KEKSource is a parsed --kek value.
type KEKSource struct {
	// Scheme is "file", "env" or "pkcs11".
	Scheme string
	// Path is the file (file), the variable name (env), or the whole URI
	// (pkcs11, parsed by the PKCS#11 layer).
	Path string
}

// Bounds of the audit checkpoint settings.
const (
	MinAuditCheckpointEvery   = time.Second
	MaxAuditCheckpointEvery   = 24 * time.Hour
	MaxAuditCheckpointRecords = 1_000_000
)

// ParseAuditKeyURI interprets an --audit-key value: file://PATH or
// env://NAME, with the rules of a --kek value. An audit key in a PKCS#11
// token is not supported yet.
func ParseAuditKeyURI(raw string) (KEKSource, error) {
	switch {
	case strings.HasPrefix(raw, "pkcs11:"):
		return KEKSource{}, errors.New("--audit-key pkcs11:: an audit key in a PKCS#11 token is not supported yet; use file://PATH (the default, DATA_DIR/audit.key) or env://NAME")
	case strings.HasPrefix(raw, "file://"):
		p := strings.TrimPrefix(raw, "file://")
		if p == "" {
			return KEKSource{}, errors.New("--audit-key file://: needs a path, e.g. file:///var/lib/trustflow/audit.key")
		}
		return KEKSource{Scheme: "file", Path: p}, nil
	case strings.HasPrefix(raw, "env://"):
		name := strings.TrimPrefix(raw, "env://")
		if name == "" || strings.ContainsAny(name, "=\x00 /") {
			return KEKSource{}, fmt.Errorf("--audit-key env://: needs an environment variable name, e.g. env://TRUSTFLOW_AUDIT_KEY_VALUE (got %q)", name)
		}
		return KEKSource{Scheme: "env", Path: name}, nil
	default:
		return KEKSource{}, errors.New("--audit-key: unknown audit key source; use file://PATH (the default, DATA_DIR/audit.key) or env://NAME (a variable holding 32 bytes in standard base64)")
	}
}

// ParseKEKURI interprets a --kek value.
func ParseKEKURI(raw string) (KEKSource, error) {
	switch {
	case strings.HasPrefix(raw, "file://"):
		p := strings.TrimPrefix(raw, "file://")
		if p == "" {
			return KEKSource{}, errors.New("--kek file://: needs a path, e.g. file:///var/lib/trustflow/kek")
		}
		return KEKSource{Scheme: "file", Path: p}, nil
	case strings.HasPrefix(raw, "env://"):
		name := strings.TrimPrefix(raw, "env://")
		if name == "" || strings.ContainsAny(name, "=\x00 /") {
			return KEKSource{}, fmt.Errorf("--kek env://: needs an environment variable name, e.g. env://TRUSTFLOW_KEK_VALUE (got %q)", name)
		}
		return KEKSource{Scheme: "env", Path: name}, nil
	case strings.HasPrefix(raw, "pkcs11:"):
		return KEKSource{Scheme: "pkcs11", Path: raw}, nil
	default:
		return KEKSource{}, errors.New("--kek: unknown key-encryption key source; use file://PATH, env://NAME or a pkcs11: URI (pkcs11:token=T;object=O?module-path=...&pin-source=file:PATH)")
	}
}
