package store

import (
	"context"
	"fmt"
)

// OpenAt opens the database like Open but migrates it only up to and
// including version (0: the newest), building a database at an earlier
// released schema.
func OpenAt(ctx context.Context, cfg Config, version int) (*Store, error) {
	cfg = cfg.withDefaults()
	var s *Store
	var err error
	switch cfg.Dialect {
	case SQLite:
		s, err = openSQLite(cfg)
	case Postgres:
		s, err = openPostgres(ctx, cfg)
	default:
		return nil, fmt.Errorf("store: unknown dialect %q", cfg.Dialect)
	}
	if err != nil {
		return nil, err
	}
	if err := s.migrateTo(ctx, version); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// LatestSchema is the newest schema version embedded for dialect d.
func LatestSchema(d Dialect) (int, error) {
	migs, err := loadMigrations(d)
	return len(migs), err
}
