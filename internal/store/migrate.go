package store

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"
)

//go:embed migrations
var migrationFS embed.FS

// migrationLockID is the PostgreSQL advisory lock that serialises nodes
// migrating the same database at once.
const migrationLockID = 0x7472_7573_7466_6c6f // "trustflo"

type migration struct {
	version int
	name    string
	sql     string
}

func loadMigrations(d Dialect) ([]migration, error) {
	dir := "migrations/" + string(d)
	entries, err := fs.ReadDir(migrationFS, dir)
	if err != nil {
		return nil, fmt.Errorf("store: read migrations for %s: %w", d, err)
	}
	var out []migration
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".sql") {
			continue
		}
		num, _, ok := strings.Cut(name, "_")
		if !ok {
			return nil, fmt.Errorf("store: migration %s: name must be NNNN_description.sql", name)
		}
		v, err := strconv.Atoi(num)
		if err != nil {
			return nil, fmt.Errorf("store: migration %s: name must start with a number: %w", name, err)
		}
		body, err := fs.ReadFile(migrationFS, dir+"/"+name)
		if err != nil {
			return nil, fmt.Errorf("store: read migration %s: %w", name, err)
		}
		out = append(out, migration{version: v, name: name, sql: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i := range out {
		if out[i].version != i+1 {
			return nil, fmt.Errorf("store: migrations for %s: expected version %d, found %s", d, i+1, out[i].name)
		}
	}
	return out, nil
}

// ErrSchemaTooNew means the database was migrated by a newer trustflow
// than this binary: it holds a schema version this binary has no
// migration for. The error is a *SchemaTooNewError naming both versions.
var ErrSchemaTooNew = errors.New("store: database schema is newer than this binary")

// SchemaTooNewError is returned by Open when the database's schema is newer
// than the newest migration embedded in this binary. Running an older binary
// against it could misread or corrupt data, so Open refuses.
type SchemaTooNewError struct {
	// Database is the newest schema version recorded in the database.
	Database int
	// Binary is the newest schema version this binary knows.
	Binary int
}

func (e *SchemaTooNewError) Error() string {
	return fmt.Sprintf("store: the database schema is version %d, newer than this trustflow binary knows (%d); "+
		"upgrade trustflow to a version that knows schema %d, or restore a backup taken before the upgrade", e.Database, e.Binary, e.Database)
}

// Unwrap makes errors.Is(err, ErrSchemaTooNew) true.
func (e *SchemaTooNewError) Unwrap() error { return ErrSchemaTooNew }

// migrate applies every pending migration.
func (s *Store) migrate(ctx context.Context) error {
	return s.migrateTo(ctx, 0)
}

// migrateTo applies pending migrations up to and including version target
// (0: the newest) in one transaction. On PostgreSQL an advisory lock makes
// concurrent nodes wait for each other, so a node that starts against an
// already-migrated database applies nothing. A database already past the
// newest embedded migration is refused with a *SchemaTooNewError, checked
// after the lock so that a newer node migrating at the same moment is seen.
// Tests use a target to build a database at an earlier released schema.
func (s *Store) migrateTo(ctx context.Context, target int) error {
	migs, err := loadMigrations(s.dialect)
	if err != nil {
		return err
	}
	latest := len(migs)
	if target <= 0 || target > latest {
		target = latest
	}
	return s.InTx(ctx, func(tx *Tx) error {
		// Migrations run once, as text: their scripts hold several
		// statements, which PostgreSQL cannot prepare as one.
		raw := tx.tx.Tx
		if s.dialect == Postgres {
			if _, err := raw.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", int64(migrationLockID)); err != nil {
				return fmt.Errorf("store: lock for migration: %w", err)
			}
		}
		if _, err := raw.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version INTEGER PRIMARY KEY,
			name TEXT NOT NULL,
			applied_at BIGINT NOT NULL)`); err != nil {
			return fmt.Errorf("store: create schema_migrations: %w", err)
		}
		applied := map[int]bool{}
		newest := 0
		rows, err := raw.QueryContext(ctx, "SELECT version FROM schema_migrations")
		if err != nil {
			return fmt.Errorf("store: read schema_migrations: %w", err)
		}
		for rows.Next() {
			var v int
			if err := rows.Scan(&v); err != nil {
				rows.Close()
				return fmt.Errorf("store: read schema_migrations: %w", err)
			}
			applied[v] = true
			newest = max(newest, v)
		}
		if err := rows.Close(); err != nil {
			return fmt.Errorf("store: read schema_migrations: %w", err)
		}
		if newest > latest {
			return &SchemaTooNewError{Database: newest, Binary: latest}
		}
		for _, m := range migs[:target] {
			if applied[m.version] {
				continue
			}
			if _, err := raw.ExecContext(ctx, m.sql); err != nil {
				return fmt.Errorf("store: apply migration %s: %w", m.name, err)
			}
			if _, err := raw.ExecContext(ctx,
				"INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
				m.version, m.name, micros(time.Now())); err != nil {
				return fmt.Errorf("store: record migration %s: %w", m.name, err)
			}
		}
		return nil
	})
}

// SchemaVersion reports the newest applied migration.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	if err := s.read.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&v); err != nil {
		return 0, fmt.Errorf("store: schema version: %w", err)
	}
	return v, nil
}
