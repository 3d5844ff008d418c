package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/trustflow/trustflow/internal/errs"
)

// ErrInUse means another connection, usually a running trustflow server,
// has the SQLite file open.
var ErrInUse = errors.New("store: the database is in use")

// SnapshotSQLite writes a consistent copy of the SQLite database at src to
// dst with VACUUM INTO, while other connections (a running server) go on
// reading and writing: the copy is one read transaction's view, WAL
// included, in a single file (rollback journal mode, no -wal beside it).
// src must exist; dst must not.
func SnapshotSQLite(ctx context.Context, src, dst string) error {
	if err := mustExist(src); err != nil {
		return err
	}
	db, err := sql.Open("sqlite", sqliteFileDSN(src, "rw", DefaultBusyTimeoutMillis))
	if err != nil {
		return fmt.Errorf("store: open sqlite %s: %w", src, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, "VACUUM INTO $1", dst); err != nil {
		return fmt.Errorf("store: snapshot %s: %w", src, err)
	}
	if err := os.Chmod(dst, 0o600); err != nil {
		return fmt.Errorf("store: snapshot %s: %w", src, err)
	}
	return nil
}

// DefaultBusyTimeoutMillis is how long the file-level SQLite operations
// here wait for a lock another connection holds briefly.
const DefaultBusyTimeoutMillis = 10_000

// OpenSnapshot opens the SQLite file at path read-only and without
// migrating it, to read a backup's schema version, key-encryption key ids
// and integrity before anything is changed. Close it after use.
func OpenSnapshot(ctx context.Context, path string) (*Store, error) {
	if err := mustExist(path); err != nil {
		return nil, err
	}
	db, err := sql.Open("sqlite", sqliteFileDSN(path, "ro", DefaultBusyTimeoutMillis))
	if err != nil {
		return nil, fmt.Errorf("store: open sqlite %s: %w", path, err)
	}
	db.SetMaxOpenConns(2)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open sqlite %s: %w", path, err)
	}
	// A snapshot answers a few queries once: they run as text.
	p := &pool{DB: db}
	return &Store{dialect: SQLite, write: p, read: p}, nil
}

// IntegrityCheck runs SQLite's quick_check over the whole file and returns
// an error naming the first problem it reports. On PostgreSQL it only
// pings.
func (s *Store) IntegrityCheck(ctx context.Context) error {
	if s.dialect != SQLite {
		return s.Ping(ctx)
	}
	rows, err := s.read.QueryContext(ctx, "PRAGMA quick_check")
	if err != nil {
		return fmt.Errorf("store: integrity check: %w", err)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return fmt.Errorf("store: integrity check: %w", err)
		}
		if line != "ok" {
			problems = append(problems, line)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("store: integrity check: %w", err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("store: integrity check: %s", strings.Join(problems, "; "))
	}
	return nil
}

// ReleaseSQLite folds the write-ahead log of the SQLite file at path into
// the file and switches it to rollback journal mode, so that the file
// alone holds the whole database and can be moved or replaced (the server
// switches it back to WAL when it opens it). It takes the file's exclusive
// lock to do so, and returns an error matching [ErrInUse] when any other
// connection, in this process or another, has the file open: a running
// server always does.
func ReleaseSQLite(ctx context.Context, path string) error {
	if err := mustExist(path); err != nil {
		return err
	}
	db, err := sql.Open("sqlite", sqliteFileDSN(path, "rw", 0))
	if err != nil {
		return fmt.Errorf("store: open sqlite %s: %w", path, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	var mode string
	err = db.QueryRowContext(ctx, "PRAGMA journal_mode=DELETE").Scan(&mode)
	var sqErr *sqlite.Error
	if errors.As(err, &sqErr) && (sqErr.Code()&0xff == sqlite3.SQLITE_BUSY || sqErr.Code()&0xff == sqlite3.SQLITE_LOCKED) {
		return fmt.Errorf("%w: %s", ErrInUse, path)
	}
	if err != nil {
		return fmt.Errorf("store: release sqlite %s: %w", path, err)
	}
	if mode != "delete" {
		return fmt.Errorf("store: release sqlite %s: journal mode stayed %q: %w", path, mode, ErrInUse)
	}
	return nil
}

// LatestSchemaVersion is the newest schema version this binary's
// migrations for d reach.
func LatestSchemaVersion(d Dialect) (int, error) {
	migs, err := loadMigrations(d)
	if err != nil {
		return 0, err
	}
	return len(migs), nil
}

// sqliteFileDSN opens path without creating it (mode ro or rw) and without
// changing its journal mode.
func sqliteFileDSN(path, mode string, busyMillis int) string {
	return fmt.Sprintf("file:%s?mode=%s&_pragma=busy_timeout(%d)", path, mode, busyMillis)
}

func mustExist(path string) error {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &errs.Error{Kind: errs.NotFound, Code: "not_found", Op: "store: open", Message: "no database at " + path,
			Hint: "check --data-dir (or --db): the server creates its database there when it first starts"}
	}
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("store: %s is not a regular file", path)
	}
	return nil
}
