// Package backup owns trustflow's backup file: [Create] takes a
// consistent copy of a running installation's SQLite database (VACUUM
// INTO, while the server goes on serving) and writes it, with a manifest
// of checksums and of the key ids a restore needs, to one tar file;
// [Restore] checks such a file completely before it changes anything,
// then installs the database in a data dir atomically and records the
// restore in its audit chain.
//
// The keys the data dir holds — the key-encryption keys (KEKs) that seal
// private keys and secrets, and the audit key that chains audit records —
// are handled explicitly: they are in a backup only when asked for
// (Config.IncludeKEK), encrypted under a key derived from a passphrase
// (scrypt, or PBKDF2 in FIPS mode; AES-256-GCM), never in clear. Without
// them, Create names the key ids to keep separately, and Restore checks
// that the configured sources hold them, naming any that is missing.
//
// PostgreSQL installations are backed up with pg_dump; see docs/keys.md.
package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/seal"
	"github.com/trustflow/trustflow/internal/store"
)

// Config configures Create.
type Config struct {
	// Database is the SQLite file to back up. Required; it must exist.
	Database string
	// Out is the backup file to write (mode 0600). Required. It is written
	// to a temporary file beside it and renamed into place, so an existing
	// file is replaced only by a complete backup.
	Out string
	// Source is the installation's KEK source. Required: the manifest
	// names it, and with IncludeKEK the keys are read from it.
	Source seal.Source
	// AuditKeySource describes where the installation's audit key lives
	// (a file:// or env:// URI), for the manifest.
	AuditKeySource string
	// AuditKeyText is the audit key as its file or variable holds it. It is
	// read only with IncludeKEK, and then required when the database's
	// audit chain is keyed.
	AuditKeyText []byte
	// IncludeKEK puts the KEKs the database needs, and its audit key, in
	// the backup, encrypted under Passphrase. A KEK whose key cannot leave
	// its source (a PKCS#11 token) is refused.
	IncludeKEK bool
	// Passphrase encrypts the included keys; at least MinPassphrase
	// characters. Required with IncludeKEK, unused without it.
	Passphrase string
	// KDF chooses the key derivation. The zero value is the default; see
	// KDF.
	KDF KDF
	// Version and Commit describe the trustflow binary, for the manifest.
	Version, Commit string
	// Clock defaults to the wall clock.
	Clock clock.Clock
}

// Result is what Create wrote.
type Result struct {
	File     string   `json:"file"`
	Size     int64    `json:"size"`
	SHA256   string   `json:"sha256"`
	Manifest Manifest `json:"manifest"`
}

// Create writes a backup of the SQLite database cfg.Database to cfg.Out.
// It only reads the database, and may run while a server uses it.
func Create(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	switch {
	case cfg.Database == "":
		return Result{}, errors.New("backup: no database to back up")
	case cfg.Out == "":
		return Result{}, errors.New("backup: no output file")
	case cfg.Source == nil:
		return Result{}, errors.New("backup: no key-encryption key source")
	}
	if cfg.IncludeKEK && len([]rune(cfg.Passphrase)) < MinPassphrase {
		return Result{}, &errs.Error{Kind: errs.Invalid, Code: "passphrase_too_short", Field: "--passphrase-file", Op: "backup",
			Message: fmt.Sprintf("the passphrase that encrypts the included keys must be at least %d characters", MinPassphrase),
			Hint:    "put a longer passphrase in the file; keep it apart from the backup"}
	}
	out, err := filepath.Abs(cfg.Out)
	if err != nil {
		return Result{}, fmt.Errorf("backup: %w", err)
	}
	work, err := os.MkdirTemp(filepath.Dir(out), "."+filepath.Base(out)+".work-*")
	if err != nil {
		return Result{}, fmt.Errorf("backup: %w", err)
	}
	defer os.RemoveAll(work)
	snap := filepath.Join(work, DatabaseName)
	if err := store.SnapshotSQLite(ctx, cfg.Database, snap); err != nil {
		return Result{}, fmt.Errorf("backup: %w", err)
	}
	info, err := inspect(ctx, snap)
	if err != nil {
		return Result{}, fmt.Errorf("backup: the copy of %s: %w", cfg.Database, err)
	}
	dbMember, err := describe(snap, DatabaseName)
	if err != nil {
		return Result{}, err
	}
	m := &Manifest{
		Format: Format, FormatVersion: FormatVersion, TrustflowVersion: cfg.Version, TrustflowCommit: cfg.Commit,
		CreatedAt: cfg.Clock.Now().UTC().Truncate(time.Microsecond), Dialect: "sqlite", SchemaVersion: info.schema,
		ActiveKEK: info.active, KEKIDs: info.needed, KEKSource: cfg.Source.String(),
		Members: []Member{dbMember},
	}
	if info.auditKey != "" {
		m.AuditKeyID, m.AuditKeySource = info.auditKey, cfg.AuditKeySource
	}
	var sealedKeys []byte
	if cfg.IncludeKEK {
		keys, err := keysFor(ctx, cfg, info)
		if err != nil {
			return Result{}, err
		}
		enc, ct, err := encryptKEKs(keys, info.needed, info.auditKey, dbMember.SHA256, cfg.Passphrase, cfg.KDF)
		if err != nil {
			return Result{}, err
		}
		sum := sha256.Sum256(ct)
		m.KEKIncluded, m.AuditKeyIncluded, m.KEK, sealedKeys = true, info.auditKey != "", enc, ct
		m.Members = append(m.Members, Member{Name: KEKName, Size: int64(len(ct)), SHA256: hex.EncodeToString(sum[:])})
	}
	if err := m.validate(); err != nil {
		return Result{}, fmt.Errorf("backup: the manifest it would write: %w", err)
	}
	res := Result{File: out, Manifest: *m}
	err = writeFileAtomic(out, func(w io.Writer) error {
		db, err := os.Open(snap)
		if err != nil {
			return err
		}
		defer db.Close()
		h := sha256.New()
		cw := &countWriter{w: io.MultiWriter(w, h)}
		if err := writeArchive(cw, m, db, sealedKeys); err != nil {
			return err
		}
		res.Size, res.SHA256 = cw.n, hex.EncodeToString(h.Sum(nil))
		return nil
	})
	if err != nil {
		return Result{}, fmt.Errorf("backup: write %s: %w", out, err)
	}
	return res, nil
}

// keysFor gathers the keys --include-kek puts in the backup: the KEKs the
// database needs, from the source, and its audit key.
func keysFor(ctx context.Context, cfg Config, info dbInfo) (payloadKeys, error) {
	if len(info.needed) == 0 {
		return payloadKeys{}, &errs.Error{Kind: errs.Invalid, Code: "no_kek", Field: "--include-kek", Op: "backup",
			Message: "the database names no key-encryption key, so there is none to include", Hint: "run backup without --include-kek"}
	}
	held, err := cfg.Source.Load(ctx)
	if err != nil {
		return payloadKeys{}, fmt.Errorf("backup: --include-kek: load the key-encryption keys from %s: %w", cfg.Source, err)
	}
	byID := map[string]*seal.KEK{}
	for _, k := range held {
		byID[k.ID()] = k
	}
	var keys payloadKeys
	var missing []string
	for _, id := range info.needed {
		k := byID[id]
		switch {
		case k == nil:
			missing = append(missing, id)
		case k.External():
			return payloadKeys{}, &errs.Error{Kind: errs.Invalid, Code: "kek_not_exportable", Field: "--include-kek", Op: "backup",
				Message: fmt.Sprintf("key-encryption key %s is held in a device (%s) and cannot leave it", id, cfg.Source),
				Hint:    "back up the token with its vendor's tools, and run backup without --include-kek"}
		default:
			keys.keks = append(keys.keks, k)
		}
	}
	if len(missing) > 0 {
		return payloadKeys{}, &errs.Error{Kind: errs.Unavailable, Code: "kek_unavailable", Field: "--include-kek", Op: "backup",
			Message: fmt.Sprintf("the database needs key-encryption key %s, which %s does not hold", strings.Join(missing, ", "), cfg.Source),
			Hint:    "point --kek at the source the server uses"}
	}
	if info.auditKey != "" {
		k, err := audit.ParseKey(cfg.AuditKeyText)
		if err != nil || k.ID() != info.auditKey {
			return payloadKeys{}, &errs.Error{Kind: errs.Unavailable, Code: "audit_key_unavailable", Field: "--include-kek", Op: "backup", Err: err,
				Message: fmt.Sprintf("the database's audit chain is keyed under audit key %s, which %s does not hold", info.auditKey, orNone(cfg.AuditKeySource)),
				Hint:    "point --audit-key at the source the server uses"}
		}
		keys.auditKey, keys.auditText = k, auditKeyFileText(cfg.AuditKeyText)
	}
	return keys, nil
}

// auditKeyFileHeader is the first line of an audit key file (see
// audit.ParseKey); a key given as bare base64 (an env:// variable) is
// stored in the backup in that form too, so a restore can write the file.
const auditKeyFileHeader = "trustflow-audit-key-v1"

func auditKeyFileText(text []byte) []byte {
	t := bytes.TrimSpace(text)
	if !bytes.HasPrefix(t, []byte(auditKeyFileHeader)) {
		t = append([]byte(auditKeyFileHeader+"\n"), t...)
	}
	return append(t, '\n')
}

// dbInfo is what a backup records about its database.
type dbInfo struct {
	schema int
	active string
	// needed lists, sorted, the active KEK and every KEK a sealed value names.
	needed []string
	// auditKey is the audit key the chain is keyed under, or "".
	auditKey string
}

// inspect opens a copy of the database read-only and reads what the
// manifest records, after SQLite's integrity check.
func inspect(ctx context.Context, path string) (dbInfo, error) {
	st, err := store.OpenSnapshot(ctx, path)
	if err != nil {
		return dbInfo{}, err
	}
	defer st.Close()
	if err := st.IntegrityCheck(ctx); err != nil {
		return dbInfo{}, err
	}
	var info dbInfo
	if info.schema, err = st.SchemaVersion(ctx); err != nil {
		return dbInfo{}, err
	}
	recs, err := st.KEKs(ctx)
	if err != nil {
		return dbInfo{}, err
	}
	counts, err := st.SealedKEKCounts(ctx)
	if err != nil {
		return dbInfo{}, err
	}
	need := map[string]bool{}
	for _, r := range recs {
		if r.State == store.KEKActive {
			info.active = r.ID
			need[r.ID] = true
		}
	}
	for _, byKEK := range counts {
		for id := range byKEK {
			need[id] = true
		}
	}
	for id := range need {
		info.needed = append(info.needed, id)
	}
	sort.Strings(info.needed)
	keys, err := st.AuditKeys(ctx)
	if err != nil {
		return dbInfo{}, err
	}
	switch len(keys) {
	case 0:
	case 1:
		info.auditKey = keys[0].ID
	default:
		return dbInfo{}, fmt.Errorf("the database records %d audit keys; this version keys the chain under exactly one", len(keys))
	}
	return info, nil
}

// describe hashes a member's file.
func describe(path, name string) (Member, error) {
	f, err := os.Open(path)
	if err != nil {
		return Member{}, fmt.Errorf("backup: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return Member{}, fmt.Errorf("backup: read %s: %w", path, err)
	}
	return Member{Name: name, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func orNone(s string) string {
	if s == "" {
		return "this node's audit key source"
	}
	return s
}
