package app

import (
	"context"
	"fmt"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/config"
	"github.com/trustflow/trustflow/internal/store"
)

// auditKeySource builds the audit key source that --audit-key names.
func auditKeySource(cfg config.Config, getenv func(string) string) (audit.KeySource, error) {
	src, err := config.ParseAuditKeyURI(cfg.AuditKey)
	if err != nil {
		return nil, err
	}
	if src.Scheme == "env" {
		return audit.EnvKeySource{Name: src.Path, Getenv: getenv}, nil
	}
	return audit.FileKeySource{Path: src.Path}, nil
}

// openAudit opens the keyed audit log: the node refuses to start without
// the audit key the database's chain is keyed under.
func openAudit(ctx context.Context, cfg config.Config, st *store.Store, opts Options) (*audit.Log, error) {
	source, err := auditKeySource(cfg, opts.Getenv)
	if err != nil {
		return nil, fmt.Errorf("app: audit key: %w", err)
	}
	log, err := audit.Open(ctx, audit.Config{Store: st, Source: source, Clock: opts.Clock, Logger: opts.Logger, DataDir: cfg.DataDir,
		CheckpointEvery: cfg.AuditCheckpointEvery, CheckpointRecords: cfg.AuditCheckpointRecords})
	if err != nil {
		return nil, fmt.Errorf("app: audit key: %w", err)
	}
	if log.Created {
		opts.Logger.Info("created audit key", "source", source.String(), "audit_key_id", log.KeyID())
	}
	if log.Registered {
		opts.Logger.Info("keyed the audit chain", "audit_key_id", log.KeyID())
	}
	return log, nil
}
