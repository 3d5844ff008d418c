// Package storetest opens real databases for tests: a SQLite file in the
// test's temp dir, and a PostgreSQL schema of its own (dropped afterwards)
// in the database named by TRUSTFLOW_TEST_DATABASE_URL. In CI (CI=true) a
// missing PostgreSQL URL fails the test instead of skipping it.
package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // "pgx" driver for schema setup

	"github.com/trustflow/trustflow/internal/store"
)

// EnvPostgresURL names the PostgreSQL database tests may use.
const EnvPostgresURL = "TRUSTFLOW_TEST_DATABASE_URL"

// Dialects lists the dialects to test: SQLite always, PostgreSQL when
// configured (required in CI).
func Dialects(t testing.TB) []store.Dialect {
	t.Helper()
	ds := []store.Dialect{store.SQLite}
	if os.Getenv(EnvPostgresURL) != "" {
		ds = append(ds, store.Postgres)
	} else if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not set: CI must test PostgreSQL", EnvPostgresURL)
	}
	return ds
}

// Each runs fn as a subtest once per dialect with a fresh, migrated store.
func Each(t *testing.T, fn func(t *testing.T, st *store.Store)) {
	t.Helper()
	for _, d := range Dialects(t) {
		t.Run(string(d), func(t *testing.T) {
			fn(t, Open(t, d))
		})
	}
}

// Open returns a fresh, migrated store of dialect d, closed at cleanup.
func Open(t testing.TB, d store.Dialect) *store.Store {
	t.Helper()
	dsn := DSN(t, d)
	cfg := store.Config{Dialect: d, DSN: dsn}
	st, err := store.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("storetest: open %s: %v", d, err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// DSN returns what store.Config.DSN (or `serve --db`) should be for a fresh
// database of dialect d: a new SQLite file path, or a PostgreSQL URL whose
// search_path is a new schema that is dropped at cleanup.
func DSN(t testing.TB, d store.Dialect) string {
	t.Helper()
	switch d {
	case store.SQLite:
		return filepath.Join(t.TempDir(), "trustflow.db")
	case store.Postgres:
		return postgresSchema(t)
	}
	t.Fatalf("storetest: unknown dialect %q", d)
	return ""
}

// DatabaseURL is DSN in the form `serve --db` takes.
func DatabaseURL(t testing.TB, d store.Dialect) string {
	t.Helper()
	dsn := DSN(t, d)
	if d == store.SQLite {
		return "sqlite:" + dsn
	}
	return dsn
}

func postgresSchema(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvPostgresURL)
	if base == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not set: CI must test PostgreSQL", EnvPostgresURL)
		}
		t.Skipf("%s is not set; skipping PostgreSQL", EnvPostgresURL)
	}
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	schema := "tftest_" + hex.EncodeToString(b)
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("storetest: open %s: %v", EnvPostgresURL, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		admin.Close()
		t.Fatalf("storetest: create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Logf("storetest: drop schema %s: %v", schema, err)
		}
		admin.Close()
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("storetest: parse %s: %v", EnvPostgresURL, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
