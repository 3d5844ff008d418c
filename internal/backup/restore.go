package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/seal"
	"github.com/trustflow/trustflow/internal/store"
)

// RestoreConfig configures Restore.
type RestoreConfig struct {
	// In is the backup file. Required.
	In string
	// Database is the SQLite file to restore to. Required. It is replaced
	// only with Force.
	Database string
	// DataDir is the data dir the restored server will use: its copy of
	// the latest audit checkpoint (audit.checkpoint), which vouches for the
	// chain being replaced, is moved aside. Empty leaves none to move.
	DataDir string
	// Source is the KEK source the restored installation will use.
	// Required: without included keys, Restore checks that it holds every
	// KEK the database needs.
	Source seal.Source
	// KEKFile is the source's file when it is a file:// source ("" for
	// env:// and pkcs11:): an included KEK is written there (and a second
	// one, from an interrupted rotation, to KEKFile.next).
	KEKFile string
	// AuditKey is the audit key source the restored installation will use.
	// Required for a backup whose audit chain is keyed: the restore is
	// recorded in that chain, under that key.
	AuditKey audit.KeySource
	// AuditKeyFile is AuditKey's file when it is a file:// source, where an
	// included audit key is written ("" for env://).
	AuditKeyFile string
	// Passphrase decrypts included keys. Without it, included keys are
	// ignored and the sources must hold them.
	Passphrase string
	// Force replaces an existing database, and existing key files that
	// hold other keys (which are kept beside them, never deleted).
	Force bool
	// AllowMissingKEK restores even when the source lacks KEKs the
	// database needs (the server then refuses to start until it has them).
	// A missing audit key is always refused: the restore could not be
	// recorded.
	AllowMissingKEK bool
	// Clock defaults to the wall clock.
	Clock clock.Clock
}

// Restored is what Restore did.
type Restored struct {
	File     string   `json:"file"`
	SHA256   string   `json:"sha256"`
	Manifest Manifest `json:"manifest"`
	Database string   `json:"database"`
	// ReplacedDatabase reports that a database was there before (Force).
	ReplacedDatabase bool `json:"replaced_database"`
	// MigratedTo is the schema version after restore's migrations (the
	// backup's own, or this binary's newer one).
	MigratedTo     int    `json:"schema_version"`
	KEKSource      string `json:"kek_source"`
	AuditKeySource string `json:"audit_key_source,omitempty"`
	// KeyFiles lists the key files written from the backup.
	KeyFiles []string `json:"key_files_written,omitempty"`
	// KeptAside lists the files moved aside: key files holding other keys
	// (Force), and the data dir's audit checkpoint of the replaced chain.
	KeptAside []string `json:"kept_aside,omitempty"`
	// MissingKEKs lists the KEKs the source lacks (AllowMissingKEK).
	MissingKEKs []string `json:"missing_kek_ids,omitempty"`
	// AuditChain is the restored chain's verification before the restore
	// record was added, and AuditSeq that record's sequence number.
	AuditChain audit.Verification `json:"audit_chain"`
	AuditSeq   int64              `json:"audit_seq"`
}

// ErrExists matches the refusal to replace a database or a key file
// without Force.
var ErrExists error = errs.E(errs.Conflict, "restore_would_replace", "restore would replace existing data", "")

// MissingKeyError means the sources lack keys the backup's database needs:
// KEKs its sealed values name, or the audit key its chain is keyed under.
type MissingKeyError struct {
	// KEKs lists the missing KEK ids; KEKSource is where Restore looked
	// and KEKBackedUpFrom where the backed-up installation kept them.
	KEKs                       []string
	KEKSource, KEKBackedUpFrom string
	// AuditKey is the missing audit key id ("" when it is not missing).
	AuditKey                             string
	AuditKeySource, AuditKeyBackedUpFrom string
	// Included reports that the backup holds the keys, encrypted.
	Included bool
}

func (e *MissingKeyError) Error() string {
	var need, here, there, flags []string
	if len(e.KEKs) > 0 {
		noun := "key-encryption key "
		if len(e.KEKs) > 1 {
			noun = "key-encryption keys "
		}
		need = append(need, noun+strings.Join(e.KEKs, ", "))
		here, there, flags = append(here, e.KEKSource), append(there, e.KEKBackedUpFrom), append(flags, "--kek")
	}
	if e.AuditKey != "" {
		need = append(need, "audit key "+e.AuditKey)
		here, there, flags = append(here, orNone(e.AuditKeySource)), append(there, e.AuditKeyBackedUpFrom), append(flags, "--audit-key")
	}
	msg := fmt.Sprintf("backup: the backup's database needs %s, which this installation does not hold (it looked in %s); "+
		"copy them from the backed-up installation (%s), or point %s at a source that holds them",
		strings.Join(need, " and "), strings.Join(here, " and "), strings.Join(there, ", "), strings.Join(flags, " and "))
	if e.Included {
		msg += "; the backup includes them, encrypted: give its passphrase with --passphrase-file"
	}
	if e.AuditKey == "" {
		msg += " (--allow-missing-kek restores anyway: the server then refuses to start until it has them)"
	}
	return msg
}

// Restore checks the backup in cfg.In completely (manifest, checksums,
// SQLite integrity, schema version, keys) and only then installs it:
// included keys are written to the key files, the database is migrated to
// this binary's schema, a backup.restore audit record is appended to its
// chain, and it is renamed over cfg.Database. Any error before the key
// files are written leaves the data dir as it was, and says so. A
// database that another process (a running server) has open is never
// replaced.
func Restore(ctx context.Context, cfg RestoreConfig) (res Restored, err error) {
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	switch {
	case cfg.In == "":
		return Restored{}, errors.New("backup: restore: no backup file")
	case cfg.Database == "":
		return Restored{}, errors.New("backup: restore: no database path")
	case cfg.Source == nil:
		return Restored{}, errors.New("backup: restore: no key-encryption key source")
	}
	changed := false
	defer func() {
		if err != nil && !changed {
			err = unchanged(err)
		}
	}()
	res = Restored{File: cfg.In, Database: cfg.Database, KEKSource: cfg.Source.String()}
	if cfg.AuditKey != nil {
		res.AuditKeySource = cfg.AuditKey.String()
	}
	dir := filepath.Dir(cfg.Database)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Restored{}, fmt.Errorf("backup: restore: %w", err)
	}

	// 1. Read and check the whole file into a temporary database beside
	// the target.
	tmp, arch, sum, err := unpack(cfg.In, dir)
	if tmp != "" {
		defer removeDB(tmp)
	}
	if err != nil {
		return Restored{}, err
	}
	m := arch.Manifest
	res.Manifest, res.SHA256 = m, sum
	latest, err := store.LatestSchemaVersion(store.SQLite)
	if err != nil {
		return Restored{}, err
	}
	if m.SchemaVersion > latest {
		return Restored{}, &errs.Error{Kind: errs.Conflict, Code: "schema_too_new", Op: "backup: restore", Err: store.ErrSchemaTooNew,
			Message: fmt.Sprintf("the backup was made by trustflow %s with database schema %d, newer than this binary knows (%d)", orUnknown(m.TrustflowVersion), m.SchemaVersion, latest),
			Hint:    fmt.Sprintf("restore it with trustflow %s or newer", orUnknown(m.TrustflowVersion))}
	}
	info, err := inspect(ctx, tmp)
	if err != nil {
		return Restored{}, corrupt("the database in it: %v", err)
	}
	if info.schema != m.SchemaVersion || !slices.Equal(info.needed, m.KEKIDs) || info.active != m.ActiveKEK || info.auditKey != m.AuditKeyID {
		return Restored{}, corrupt("the manifest does not describe the database in it (schema %d, keys %v, audit key %q; the database has schema %d, keys %v, audit key %q)",
			m.SchemaVersion, m.KEKIDs, m.AuditKeyID, info.schema, info.needed, info.auditKey)
	}

	// 2. What is there already.
	_, statErr := os.Stat(cfg.Database)
	res.ReplacedDatabase = statErr == nil
	if res.ReplacedDatabase {
		if !cfg.Force {
			return Restored{}, &errs.Error{Kind: errs.Conflict, Code: "restore_would_replace", Op: "backup: restore",
				Message: "a database already exists at " + cfg.Database,
				Hint:    "restore replaces it only with --force (move it away first to keep it)"}
		}
		if err := release(ctx, cfg.Database); err != nil {
			return Restored{}, err
		}
	} else if !errors.Is(statErr, fs.ErrNotExist) {
		return Restored{}, fmt.Errorf("backup: restore: %w", statErr)
	}

	// 3. The keys.
	plan, auditKey, err := planKeys(ctx, cfg, arch, &res)
	if err != nil {
		return Restored{}, err
	}
	var checkpoint *audit.Checkpoint
	if cfg.DataDir != "" {
		path := filepath.Join(cfg.DataDir, audit.CheckpointFileName)
		if _, err := os.Lstat(path); err == nil {
			plan.moves = append(plan.moves, fileMove{from: path, to: aside(path, cfg.Clock)})
			if c, err := audit.ReadCheckpointFile(path); err == nil {
				checkpoint = &c
			}
		}
	}

	// 4. Bring the database to this binary's schema and record the
	// restore in its chain, still in the temporary file.
	if err := prepare(ctx, tmp, cfg, auditKey, checkpoint, &res); err != nil {
		return Restored{}, err
	}

	// 5. Install: the keys first, then the database.
	changed = len(plan.writes) > 0 || len(plan.moves) > 0
	if err := plan.apply(&res); err != nil {
		return Restored{}, err
	}
	if res.ReplacedDatabase {
		// A server may have started since the first check.
		if err := release(ctx, cfg.Database); err != nil {
			return Restored{}, err
		}
	}
	for _, suffix := range []string{"-wal", "-shm", "-journal"} {
		if err := os.Remove(cfg.Database + suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return Restored{}, fmt.Errorf("backup: restore: remove the old %s: %w", cfg.Database+suffix, err)
		}
	}
	if err := os.Rename(tmp, cfg.Database); err != nil {
		return Restored{}, fmt.Errorf("backup: restore: move the database into place: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return Restored{}, fmt.Errorf("backup: restore: %w", err)
	}
	return res, nil
}

// unchanged adds "nothing was changed" to a refusal, in the message the
// CLI shows.
func unchanged(err error) error {
	var e *errs.Error
	if errors.As(err, &e) && e.Kind != errs.Internal {
		c := *e
		c.Message += "; nothing was changed"
		return &c
	}
	return fmt.Errorf("%w; nothing was changed", err)
}

// unpack reads the backup at path into a new temporary file in dir and
// returns its name (to be removed by the caller), the archive and the
// SHA-256 of the whole file.
func unpack(path, dir string) (tmp string, arch *Archive, sum string, err error) {
	in, err := os.Open(path)
	if err != nil {
		return "", nil, "", fmt.Errorf("backup: restore: %w", err)
	}
	defer in.Close()
	f, err := os.CreateTemp(dir, ".trustflow.db.restore-*")
	if err != nil {
		return "", nil, "", fmt.Errorf("backup: restore: %w", err)
	}
	tmp = f.Name()
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("backup: restore: %w", cerr)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return tmp, nil, "", fmt.Errorf("backup: restore: %w", err)
	}
	h := sha256.New()
	arch, err = Read(io.TeeReader(in, h), f)
	if err != nil {
		return tmp, nil, "", err
	}
	// Whatever follows the archive's end (tar pads with zero blocks)
	// counts in the file's checksum too.
	if _, err := io.Copy(h, in); err != nil {
		return tmp, nil, "", fmt.Errorf("backup: restore %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return tmp, nil, "", fmt.Errorf("backup: restore: %w", err)
	}
	return tmp, arch, hex.EncodeToString(h.Sum(nil)), nil
}

// release makes sure no process has the database open and folds its WAL
// in, so it can be replaced. A file that is not a SQLite database at all
// is left for the rename to replace.
func release(ctx context.Context, path string) error {
	if err := store.ReleaseSQLite(ctx, path); errors.Is(err, store.ErrInUse) {
		return &errs.Error{Kind: errs.Conflict, Code: "database_in_use", Op: "backup: restore", Err: err,
			Message: "another process, a running trustflow server perhaps, has " + path + " open",
			Hint:    "stop the server that uses it, then restore"}
	}
	// Any other error means there is no usable SQLite database there, and
	// --force replaces whatever it is.
	return nil
}

// keyPlan is the files a restore writes and moves before it installs the
// database.
type keyPlan struct {
	moves  []fileMove
	writes []fileWrite
}

type fileMove struct{ from, to string }

type fileWrite struct {
	path string
	// kek or text is written: a KEK file, or an audit key file's text.
	kek  *seal.KEK
	text []byte
}

// planKeys decides how the restored installation gets its keys, and checks
// everything before anything is written. It returns the audit key the
// restore record is appended with (nil for a chain without one).
func planKeys(ctx context.Context, cfg RestoreConfig, arch *Archive, res *Restored) (keyPlan, *audit.Key, error) {
	m := arch.Manifest
	var plan keyPlan
	missing := &MissingKeyError{KEKSource: cfg.Source.String(), KEKBackedUpFrom: m.KEKSource,
		AuditKeySource: res.AuditKeySource, AuditKeyBackedUpFrom: m.AuditKeySource, Included: m.KEKIncluded}
	var auditKey *audit.Key
	if m.KEKIncluded && cfg.Passphrase != "" {
		keys, err := decryptKEKs(m.KEK, arch.SealedKEK, m.KEKIDs, m.AuditKeyID, m.Members[0].SHA256, cfg.Passphrase)
		if err != nil {
			return keyPlan{}, nil, err
		}
		if cfg.KEKFile != "" {
			if err := planKEKFiles(cfg, m.ActiveKEK, keys.keks, &plan); err != nil {
				return keyPlan{}, nil, err
			}
		} else if err := mustHoldKEKs(ctx, cfg.Source, m.KEKIDs); err != nil {
			return keyPlan{}, nil, err
		}
		if keys.auditKey != nil {
			auditKey = keys.auditKey
			if cfg.AuditKeyFile != "" {
				if err := planAuditKeyFile(cfg, keys, &plan); err != nil {
					return keyPlan{}, nil, err
				}
			} else if cfg.AuditKey == nil {
				missing.AuditKey = m.AuditKeyID
			} else if err := mustHoldAuditKey(ctx, cfg.AuditKey, m.AuditKeyID); err != nil {
				return keyPlan{}, nil, err
			}
		}
	} else {
		ids, err := missingKEKs(ctx, cfg.Source, m.KEKIDs)
		if err != nil {
			return keyPlan{}, nil, err
		}
		missing.KEKs = ids
		if m.AuditKeyID != "" {
			k, err := heldAuditKey(ctx, cfg.AuditKey, m.AuditKeyID)
			if err != nil {
				return keyPlan{}, nil, err
			}
			if k == nil {
				missing.AuditKey = m.AuditKeyID
			}
			auditKey = k
		}
	}
	if missing.AuditKey != "" || (len(missing.KEKs) > 0 && !cfg.AllowMissingKEK) {
		return keyPlan{}, nil, missing
	}
	res.MissingKEKs = missing.KEKs
	return plan, auditKey, nil
}

// planKEKFiles plans writing the active KEK to the KEK file and a second
// one (a backup taken during a rotation) to KEKFile.next, the two places a
// file source loads from.
func planKEKFiles(cfg RestoreConfig, active string, keks []*seal.KEK, plan *keyPlan) error {
	var first *seal.KEK
	var rest []*seal.KEK
	for _, k := range keks {
		if k.ID() == active && first == nil {
			first = k
		} else {
			rest = append(rest, k)
		}
	}
	if first == nil {
		first, rest = rest[0], rest[1:]
	}
	if len(rest) > 1 {
		return &errs.Error{Kind: errs.Invalid, Code: "too_many_keks", Field: "--kek", Op: "backup: restore",
			Message: fmt.Sprintf("the backup needs %d key-encryption keys, and a file source holds at most two", len(keks)),
			Hint:    "restore with --kek env://NAME, with the keys in NAME and NAME_PREVIOUS"}
	}
	targets := []fileWrite{{path: cfg.KEKFile, kek: first}}
	if len(rest) == 1 {
		targets = append(targets, fileWrite{path: cfg.KEKFile + ".next", kek: rest[0]})
	}
	for _, w := range targets {
		old, err := seal.LoadKEKFile(w.path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			plan.writes = append(plan.writes, w)
		case err == nil && old.ID() == w.kek.ID():
			// Already there.
		default:
			what := "a key that does not load"
			if err == nil {
				what = "key-encryption key " + old.ID()
			}
			if err := replaceKeyFile(cfg, plan, w, what, "key-encryption key "+w.kek.ID()); err != nil {
				return err
			}
		}
	}
	return nil
}

// planAuditKeyFile plans writing the included audit key to its file.
func planAuditKeyFile(cfg RestoreConfig, keys payloadKeys, plan *keyPlan) error {
	w := fileWrite{path: cfg.AuditKeyFile, text: keys.auditText}
	old, err := audit.FileKeySource{Path: cfg.AuditKeyFile}.Load(context.Background())
	switch {
	case errors.Is(err, audit.ErrNoKey):
		plan.writes = append(plan.writes, w)
		return nil
	case err == nil && old.ID() == keys.auditKey.ID():
		return nil
	}
	what := "a key that does not load"
	if err == nil {
		what = "audit key " + old.ID()
	}
	return replaceKeyFile(cfg, plan, w, what, "audit key "+keys.auditKey.ID())
}

// replaceKeyFile plans moving a key file that holds another key aside and
// writing the backup's, or refuses without Force.
func replaceKeyFile(cfg RestoreConfig, plan *keyPlan, w fileWrite, holds, want string) error {
	to := aside(w.path, cfg.Clock)
	if !cfg.Force {
		return &errs.Error{Kind: errs.Conflict, Code: "restore_would_replace", Op: "backup: restore",
			Message: fmt.Sprintf("%s holds %s, not the backup's %s", w.path, holds, want),
			Hint:    "restore replaces it only with --force (it is then kept as " + to + ")"}
	}
	plan.moves = append(plan.moves, fileMove{from: w.path, to: to})
	plan.writes = append(plan.writes, w)
	return nil
}

func aside(path string, c clock.Clock) string {
	return fmt.Sprintf("%s.replaced-%d", path, c.Now().Unix())
}

func (p keyPlan) apply(res *Restored) error {
	for _, mv := range p.moves {
		if err := os.Rename(mv.from, mv.to); err != nil {
			return fmt.Errorf("backup: restore: keep %s: %w", mv.from, err)
		}
		res.KeptAside = append(res.KeptAside, mv.to)
	}
	for _, w := range p.writes {
		var err error
		if w.kek != nil {
			err = seal.WriteKEKFile(w.path, w.kek)
		} else if err = os.MkdirAll(filepath.Dir(w.path), 0o700); err == nil {
			err = writeFileAtomic(w.path, func(f io.Writer) error {
				_, err := f.Write(w.text)
				return err
			})
		}
		if err != nil {
			return fmt.Errorf("backup: restore: write %s: %w", w.path, err)
		}
		res.KeyFiles = append(res.KeyFiles, w.path)
	}
	return nil
}

// missingKEKs returns the ids in need that src does not hold.
func missingKEKs(ctx context.Context, src seal.Source, need []string) ([]string, error) {
	if len(need) == 0 {
		return nil, nil
	}
	keks, err := src.Load(ctx)
	if err != nil && !errors.Is(err, seal.ErrNoKEK) {
		return nil, fmt.Errorf("backup: restore: load the key-encryption keys from %s: %w", src, err)
	}
	held := map[string]bool{}
	for _, k := range keks {
		held[k.ID()] = true
	}
	var missing []string
	for _, id := range need {
		if !held[id] {
			missing = append(missing, id)
		}
	}
	return missing, nil
}

// mustHoldKEKs refuses included KEKs for a source restore cannot write to
// that does not hold them already.
func mustHoldKEKs(ctx context.Context, src seal.Source, need []string) error {
	missing, err := missingKEKs(ctx, src, need)
	if err != nil || len(missing) == 0 {
		return err
	}
	return &errs.Error{Kind: errs.Invalid, Code: "source_not_writable", Field: "--kek", Op: "backup: restore",
		Message: fmt.Sprintf("the backup includes key-encryption key %s, but restore writes keys only to files and %s is not one", strings.Join(missing, ", "), src),
		Hint:    "restore with a file:// source (an env:// variable may then take that file's content), or put the key in " + src.String() + " first"}
}

func mustHoldAuditKey(ctx context.Context, src audit.KeySource, id string) error {
	k, err := heldAuditKey(ctx, src, id)
	if err != nil || k != nil {
		return err
	}
	return &errs.Error{Kind: errs.Invalid, Code: "source_not_writable", Field: "--audit-key", Op: "backup: restore",
		Message: fmt.Sprintf("the backup includes audit key %s, but restore writes keys only to files and %s is not one", id, src),
		Hint:    "restore with a file:// audit key source (an env:// variable may then take that file's content), or put the key in " + src.String() + " first"}
}

// heldAuditKey returns src's key when it is id, nil when src holds none or
// another.
func heldAuditKey(ctx context.Context, src audit.KeySource, id string) (*audit.Key, error) {
	if src == nil {
		return nil, nil
	}
	k, err := src.Load(ctx)
	if errors.Is(err, audit.ErrNoKey) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("backup: restore: load the audit key from %s: %w", src, err)
	}
	if k.ID() != id {
		return nil, nil
	}
	return k, nil
}

// givenKey is an audit key source holding one key already loaded.
type givenKey struct {
	k    *audit.Key
	name string
}

func (g givenKey) Load(context.Context) (*audit.Key, error) { return g.k, nil }
func (g givenKey) Create(context.Context) (*audit.Key, error) {
	return nil, errors.New("backup: restore creates no audit key")
}
func (g givenKey) String() string { return g.name }

// prepare migrates the temporary database, verifies its audit chain and
// appends the backup.restore record (under the chain's audit key, when it
// has one), then folds the WAL into the file.
func prepare(ctx context.Context, tmp string, cfg RestoreConfig, key *audit.Key, replaced *audit.Checkpoint, res *Restored) error {
	st, err := store.Open(ctx, store.Config{Dialect: store.SQLite, DSN: tmp})
	if err != nil {
		return fmt.Errorf("backup: restore: open the restored database: %w", err)
	}
	defer st.Close()
	var log *audit.Log
	if key != nil {
		log, err = audit.Open(ctx, audit.Config{Store: st, Source: givenKey{k: key, name: res.AuditKeySource}, Clock: cfg.Clock, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			return fmt.Errorf("backup: restore: %w", err)
		}
	} else {
		log = audit.New(st, cfg.Clock)
	}
	if res.AuditChain, err = log.Verify(ctx); err != nil {
		return fmt.Errorf("backup: restore: %w", err)
	}
	if res.MigratedTo, err = st.SchemaVersion(ctx); err != nil {
		return err
	}
	m := res.Manifest
	details := map[string]any{
		"backup_sha256": res.SHA256, "backup_created_at": m.CreatedAt, "backup_trustflow_version": m.TrustflowVersion,
		"backup_schema_version": m.SchemaVersion, "schema_version": res.MigratedTo, "kek_ids": m.KEKIDs,
		"kek_included": m.KEKIncluded, "kek_source": res.KEKSource, "replaced_database": res.ReplacedDatabase,
		"audit_chain_intact": res.AuditChain.OK,
	}
	if m.AuditKeyID != "" {
		details["audit_key_id"] = m.AuditKeyID
	}
	if len(res.MissingKEKs) > 0 {
		details["missing_kek_ids"] = res.MissingKEKs
	}
	if replaced != nil {
		// The data dir vouched for a later head of the chain being
		// replaced: say which, so the rollback is on the record.
		details["replaced_checkpoint"] = map[string]any{"seq": replaced.Seq, "head_hash": replaced.HeadHash, "time": replaced.Time, "key_id": replaced.KeyID}
	}
	err = st.InTx(ctx, func(tx *store.Tx) error {
		rec, err := log.Append(ctx, tx, audit.Entry{Actor: audit.System, Action: "backup.restore", Target: "backup/" + res.SHA256[:16], Details: details})
		res.AuditSeq = rec.Seq
		return err
	})
	if err != nil {
		return fmt.Errorf("backup: restore: record the restore: %w", err)
	}
	if err := st.Close(); err != nil {
		return fmt.Errorf("backup: restore: %w", err)
	}
	if err := store.ReleaseSQLite(ctx, tmp); err != nil {
		return fmt.Errorf("backup: restore: %w", err)
	}
	return nil
}

func removeDB(path string) {
	for _, p := range []string{path, path + "-wal", path + "-shm", path + "-journal"} {
		os.Remove(p)
	}
}

func orUnknown(v string) string {
	if v == "" {
		return "(unknown version)"
	}
	return v
}
