// Package store is trustflow's database seam. It opens SQLite (embedded
// default) or PostgreSQL, runs the embedded per-dialect migrations, and owns
// every query. Callers change state inside InTx so that a change, its audit
// record and any job it enqueues commit in one transaction.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/trustflow/trustflow/internal/errs"
)

// Sentinel errors callers test with errors.Is.
var (
	// ErrNotFound means the row asked for does not exist. It is an
	// errs.NotFound error, so every not-found error matches it.
	ErrNotFound error = errs.E(errs.NotFound, "not_found", "the resource does not exist", "check the name or id")
	// ErrConflict means a uniqueness or reference constraint refused the change.
	ErrConflict error = errs.E(errs.Conflict, "conflict", "the change conflicts with the current state", "reload the resource and try again")
)

// Dialect names a database engine.
type Dialect string

// The supported dialects.
const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// Config says which database to open.
type Config struct {
	// Dialect is SQLite or Postgres.
	Dialect Dialect
	// DSN is the SQLite file path or the PostgreSQL URL.
	DSN string
	// MaxReadConns bounds the read pool. Defaults to 8.
	MaxReadConns int
	// BusyTimeout is SQLite's busy_timeout. Defaults to 10s.
	BusyTimeout time.Duration
}

func (c Config) withDefaults() Config {
	if c.MaxReadConns == 0 {
		c.MaxReadConns = 8
	}
	if c.BusyTimeout == 0 {
		c.BusyTimeout = 10 * time.Second
	}
	return c
}

// Store is an open database. Writes go through one connection on SQLite (the
// single writer), reads through a separate pool.
// On SQLite both run their queries as statements prepared once per pool
// (stmtCache); on PostgreSQL pgx caches them per connection itself.
type Store struct {
	dialect Dialect
	write   *pool
	read    *pool
	group   grouper // SQLite's group writer (InTxGrouped)
}

// Open opens the database and applies pending migrations.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg = cfg.withDefaults()
	var s *Store
	var err error
	switch cfg.Dialect {
	case SQLite:
		s, err = openSQLite(cfg)
	case Postgres:
		s, err = openPostgres(ctx, cfg)
	default:
		return nil, fmt.Errorf("store: unknown dialect %q (want sqlite or postgres)", cfg.Dialect)
	}
	if err != nil {
		return nil, err
	}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func sqliteDSN(path string, busy time.Duration, readOnly bool) string {
	// busy_timeout comes first so that the pragmas after it wait rather than fail.
	q := fmt.Sprintf("_pragma=busy_timeout(%d)&_pragma=journal_mode(wal)&_pragma=foreign_keys(1)&_pragma=synchronous(normal)&_txlock=immediate", busy.Milliseconds())
	if readOnly {
		q += "&mode=ro"
	}
	return "file:" + path + "?" + q
}

func openSQLite(cfg Config) (*Store, error) {
	if dir := filepath.Dir(cfg.DSN); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("store: create directory for %s: %w", cfg.DSN, err)
		}
	}
	w, err := sql.Open("sqlite", sqliteDSN(cfg.DSN, cfg.BusyTimeout, false))
	if err != nil {
		return nil, fmt.Errorf("store: open sqlite %s: %w", cfg.DSN, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	if err := w.Ping(); err != nil {
		w.Close()
		return nil, fmt.Errorf("store: open sqlite %s: %w", cfg.DSN, err)
	}
	if err := os.Chmod(cfg.DSN, 0o600); err != nil {
		w.Close()
		return nil, fmt.Errorf("store: restrict permissions of %s: %w", cfg.DSN, err)
	}
	r, err := sql.Open("sqlite", sqliteDSN(cfg.DSN, cfg.BusyTimeout, true))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("store: open sqlite read pool %s: %w", cfg.DSN, err)
	}
	r.SetMaxOpenConns(cfg.MaxReadConns)
	r.SetMaxIdleConns(cfg.MaxReadConns)
	return &Store{dialect: SQLite, write: newPool(w), read: newPool(r)}, nil
}

func openPostgres(ctx context.Context, cfg Config) (*Store, error) {
	db, err := sql.Open("pgx", cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("store: open postgres: %w", err)
	}
	db.SetMaxOpenConns(cfg.MaxReadConns + 8)
	db.SetMaxIdleConns(cfg.MaxReadConns)
	db.SetConnMaxIdleTime(5 * time.Minute)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: connect to postgres: %w", err)
	}
	// No statement cache: pgx's default exec mode already prepares each SQL
	// text once per connection and reuses it (QueryExecModeCacheStatement),
	// and a second cache above it measured no faster.
	p := &pool{DB: db}
	return &Store{dialect: Postgres, write: p, read: p}, nil
}

// Dialect reports which engine the store uses.
func (s *Store) Dialect() Dialect { return s.dialect }

// DB returns the write handle, for components (such as the job queue) that
// must share the store's transactions.
func (s *Store) DB() *sql.DB { return s.write.DB }

// Close releases every connection.
func (s *Store) Close() error {
	s.closeGroup()
	err := s.write.close()
	if s.read != s.write {
		err = errors.Join(err, s.read.close())
	}
	return err
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.read.PingContext(ctx); err != nil {
		return fmt.Errorf("store: ping: %w", err)
	}
	var one int
	if err := s.read.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("store: ping: %w", err)
	}
	return nil
}

// Tx is a write transaction. Its methods are the store's write queries.
type Tx struct {
	tx      *txConn
	dialect Dialect
	after   []func()
	// auditHead is the chain head this transaction moved to (AppendAudit),
	// which it holds until it ends.
	auditHead *AuditHead
}

// AfterCommit calls fn once the transaction has committed (never if it
// rolls back): in-process signals about the change, such as waking the
// worker that will act on it.
func (t *Tx) AfterCommit(fn func()) { t.after = append(t.after, fn) }

func (t *Tx) committed() {
	for _, fn := range t.after {
		fn()
	}
}

// SQL returns the underlying transaction, for components that must enlist
// in it (the job queue inserts its jobs here).
func (t *Tx) SQL() *sql.Tx { return t.tx.Tx }

// Dialect reports which engine the transaction runs on.
func (t *Tx) Dialect() Dialect { return t.dialect }

// InTx runs fn in a write transaction, committing when it returns nil and
// rolling back otherwise.
func (s *Store) InTx(ctx context.Context, fn func(tx *Tx) error) (err error) {
	sqlTx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: begin: %w", err)
	}
	tx := &Tx{tx: &txConn{Tx: sqlTx, stmts: s.write.stmts}, dialect: s.dialect}
	defer func() {
		if p := recover(); p != nil {
			_ = sqlTx.Rollback() // the panic is what matters; rollback errors add nothing
			panic(p)
		}
	}()
	if err := fn(tx); err != nil {
		if rbErr := sqlTx.Rollback(); rbErr != nil && !errors.Is(rbErr, sql.ErrTxDone) {
			return errors.Join(err, fmt.Errorf("store: rollback: %w", rbErr))
		}
		tx.tx.prepareMissed(ctx)
		return err
	}
	if err := sqlTx.Commit(); err != nil {
		return fmt.Errorf("store: commit: %w", mapErr(err))
	}
	tx.tx.prepareMissed(ctx)
	tx.committed()
	return nil
}

// querier is what both the read pool and a transaction can run.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// mapErr turns driver constraint violations into ErrConflict and missing
// rows into ErrNotFound, keeping the cause.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "23") {
		return fmt.Errorf("%w: %s", ErrConflict, pgErr.Message)
	}
	var sqErr *sqlite.Error
	if errors.As(err, &sqErr) && sqErr.Code()&0xff == sqlite3.SQLITE_CONSTRAINT {
		return fmt.Errorf("%w: %s", ErrConflict, sqErr.Error())
	}
	return err
}

// IsDeadlock reports whether err is PostgreSQL breaking a deadlock (or a
// serialization failure): the transaction was rolled back and may be run
// again as a whole.
func IsDeadlock(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001")
}

// RetryOnDeadlock calls fn, a whole transaction (or statement) that changes
// nothing when it fails, and calls it again, up to four times with a short
// pause, while PostgreSQL fails it to break a deadlock.
func RetryOnDeadlock(fn func() error) error {
	err := fn()
	for attempt := 1; IsDeadlock(err) && attempt <= 4; attempt++ {
		time.Sleep(time.Duration(attempt) * 10 * time.Millisecond)
		err = fn()
	}
	return err
}

// micros converts a time to the stored representation: Unix microseconds, UTC.
func micros(t time.Time) int64 { return t.UTC().UnixMicro() }

// fromMicros converts a stored value back.
func fromMicros(v int64) time.Time { return time.UnixMicro(v).UTC() }

// nullMicros stores an optional time.
func nullMicros(t *time.Time) sql.NullInt64 {
	if t == nil || t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: micros(*t), Valid: true}
}

// fromNullMicros reads an optional time.
func fromNullMicros(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := fromMicros(v.Int64)
	return &t
}
