package app

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/trustflow/trustflow/internal/api"
	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/backup"
	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/config"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/hsm"
)

// ErrPostgresBackup means `trustflow backup` was pointed at PostgreSQL,
// which is backed up with pg_dump (docs/keys.md, "Backup and restore").
var ErrPostgresBackup error = &errs.Error{Kind: errs.Invalid, Code: "postgres_backup", Field: "--db", Op: "app: backup",
	Message: "trustflow backup copies SQLite databases; back up PostgreSQL with `pg_dump -Fc`, and keep the key-encryption key and the audit key apart",
	Hint:    "follow docs/keys.md, \"Backup and restore\"; `trustflow kek status` names the key ids to keep"}

// errPostgresRestore is ErrPostgresBackup's counterpart for restore.
var errPostgresRestore error = &errs.Error{Kind: errs.Invalid, Code: "postgres_backup", Field: "--db", Op: "app: restore",
	Message: "trustflow restore installs SQLite backups; restore PostgreSQL with `pg_restore` from a `pg_dump -Fc` file, and put the keys in place",
	Hint:    "follow docs/keys.md, \"Backup and restore\""}

// BackupOptions are `trustflow backup`'s choices besides the config (whose
// DataDir, DatabaseURL, KEK, KEKFile and AuditKey are used).
type BackupOptions struct {
	// Out is the backup file. Required.
	Out string
	// IncludeKEK puts the key-encryption keys and the audit key in the
	// backup, encrypted under Passphrase.
	IncludeKEK bool
	Passphrase string
	// KDF chooses the passphrase's key derivation; the zero value is the
	// default (see backup.KDF).
	KDF backup.KDF
	// Build describes the binary, for the manifest.
	Build api.BuildInfo
	// Getenv reads environment variables (an env:// KEK). Defaults to
	// os.Getenv.
	Getenv func(string) string
	// Clock defaults to the wall clock.
	Clock clock.Clock
}

// Backup writes a backup of the installation cfg describes; a server may
// be running on it.
func Backup(ctx context.Context, cfg config.Config, opts BackupOptions) (res backup.Result, err error) {
	cfg = cfg.WithDefaults()
	db, err := config.ParseDatabaseURL(cfg.DatabaseURL, cfg.DataDir)
	if err != nil {
		return backup.Result{}, err
	}
	if db.Dialect == "postgres" {
		return backup.Result{}, ErrPostgresBackup
	}
	kek, err := config.ParseKEKURI(cfg.KEK)
	if err != nil {
		return backup.Result{}, err
	}
	if opts.IncludeKEK && kek.Scheme == "pkcs11" {
		return backup.Result{}, &errs.Error{Kind: errs.Invalid, Code: "kek_not_exportable", Field: "--include-kek", Op: "app: backup",
			Message: "the key-encryption key lives in a PKCS#11 token and cannot leave it",
			Hint:    "back up the token with its vendor's tools (or replicate it to another token), and run backup without --include-kek"}
	}
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	auditKey, err := config.ParseAuditKeyURI(cfg.AuditKey)
	if err != nil {
		return backup.Result{}, err
	}
	bc := backup.Config{
		Database: db.DSN, Out: opts.Out, AuditKeySource: cfg.AuditKey, IncludeKEK: opts.IncludeKEK, Passphrase: opts.Passphrase,
		KDF: opts.KDF, Version: opts.Build.Version, Commit: opts.Build.Commit, Clock: opts.Clock,
	}
	if opts.IncludeKEK {
		// The audit key's own text: the backup stores the key, not what
		// is derived from it.
		if bc.AuditKeyText, err = auditKeyText(auditKey, opts.Getenv); err != nil {
			return backup.Result{}, err
		}
		defer clear(bc.AuditKeyText)
	}
	tokens := hsm.NewTokens()
	defer func() {
		if cerr := tokens.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("app: close PKCS#11 sessions: %w", cerr))
		}
	}()
	if bc.Source, err = kekSource(cfg, opts.Getenv, tokens); err != nil {
		return backup.Result{}, fmt.Errorf("app: key-encryption key: %w", err)
	}
	return backup.Create(ctx, bc)
}

// auditKeyText reads the audit key as its file or variable holds it; empty
// when there is none (a chain without an audit key needs none).
func auditKeyText(src config.KEKSource, getenv func(string) string) ([]byte, error) {
	if src.Scheme == "env" {
		return []byte(getenv(src.Path)), nil
	}
	b, err := os.ReadFile(src.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("app: read the audit key: %w", err)
	}
	return b, nil
}

// RestoreOptions are `trustflow restore`'s choices besides the config
// (whose DataDir, DatabaseURL, KEK, KEKFile and AuditKey say where to
// restore to).
type RestoreOptions struct {
	// In is the backup file. Required.
	In string
	// Passphrase decrypts a KEK included in the backup.
	Passphrase string
	// Force replaces an existing database and a different KEK file.
	Force bool
	// AllowMissingKEK restores although the KEK source lacks keys the
	// database needs.
	AllowMissingKEK bool
	// Getenv reads environment variables (an env:// KEK). Defaults to
	// os.Getenv.
	Getenv func(string) string
	// Clock defaults to the wall clock.
	Clock clock.Clock
}

// Restore installs a backup into the installation cfg describes, which
// must not be running.
func Restore(ctx context.Context, cfg config.Config, opts RestoreOptions) (res backup.Restored, err error) {
	cfg = cfg.WithDefaults()
	db, err := config.ParseDatabaseURL(cfg.DatabaseURL, cfg.DataDir)
	if err != nil {
		return backup.Restored{}, err
	}
	if db.Dialect == "postgres" {
		return backup.Restored{}, errPostgresRestore
	}
	kek, err := config.ParseKEKURI(cfg.KEK)
	if err != nil {
		return backup.Restored{}, err
	}
	if err := ensureDataDir(cfg.DataDir); err != nil {
		return backup.Restored{}, err
	}
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	tokens := hsm.NewTokens()
	defer func() {
		if cerr := tokens.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("app: close PKCS#11 sessions: %w", cerr))
		}
	}()
	source, err := kekSource(cfg, opts.Getenv, tokens)
	if err != nil {
		return backup.Restored{}, fmt.Errorf("app: key-encryption key: %w", err)
	}
	auditKey, err := auditKeySource(cfg, opts.Getenv)
	if err != nil {
		return backup.Restored{}, fmt.Errorf("app: audit key: %w", err)
	}
	rc := backup.RestoreConfig{
		In: opts.In, Database: db.DSN, DataDir: cfg.DataDir, Source: source, AuditKey: auditKey, Passphrase: opts.Passphrase,
		Force: opts.Force, AllowMissingKEK: opts.AllowMissingKEK, Clock: opts.Clock,
	}
	if kek.Scheme == "file" {
		rc.KEKFile = kek.Path
	}
	if f, ok := auditKey.(audit.FileKeySource); ok {
		rc.AuditKeyFile = f.Path
	}
	return backup.Restore(ctx, rc)
}
