package cli

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trustflow/trustflow/internal/api"
	"github.com/trustflow/trustflow/internal/app"
	"github.com/trustflow/trustflow/internal/backup"
	"github.com/trustflow/trustflow/internal/config"
)

// kekFlags registers the flags that say where the database and the keys
// (key-encryption key, audit key) live, as serve has them.
func kekFlags(cmd *cobra.Command, g *globals, cfg *config.Config) {
	f := cmd.Flags()
	f.StringVar(&cfg.DatabaseURL, "db", g.getenv(config.EnvDatabaseURL), "database: empty for SQLite in the data dir, or sqlite:PATH (env "+config.EnvDatabaseURL+"); PostgreSQL is backed up with pg_dump")
	f.StringVar(&cfg.KEKFile, "kek-file", g.getenv(config.EnvKEKFile), "key-encryption key file (env "+config.EnvKEKFile+"; default DATA_DIR/kek); same as --kek file://PATH")
	f.StringVar(&cfg.KEK, "kek", g.getenv(config.EnvKEK), "where the key-encryption key lives: file://PATH, env://NAME or a pkcs11: URI (env "+config.EnvKEK+"; default file://DATA_DIR/kek)")
	f.StringVar(&cfg.AuditKey, "audit-key", g.getenv(config.EnvAuditKey), "where the audit key lives: file://PATH or env://NAME (env "+config.EnvAuditKey+"; default file://DATA_DIR/audit.key)")
}

func newBackupCmd(g *globals) *cobra.Command {
	var cfg config.Config
	var out, passFile string
	var includeKEK bool
	cmd := &cobra.Command{
		Use:   "backup --out FILE [--include-kek --passphrase-file FILE]",
		Short: "Write a consistent copy of the SQLite database to one file, while the server runs; the keys only with --include-kek, encrypted",
		Long: "Copies the SQLite database with VACUUM INTO (one consistent snapshot; the server keeps serving) into a tar file (0600, written atomically) " +
			"with a manifest of checksums, the schema version and the ids of the keys a restore needs: the key-encryption keys and the audit key. " +
			"The keys are not in the backup unless --include-kek, which encrypts them under a passphrase " +
			"(scrypt, or PBKDF2 in FIPS mode, and AES-256-GCM); without it, keep the keys named in the output separately. " +
			"PostgreSQL is backed up with pg_dump: see docs/keys.md.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return flagError("--out", "required", "name the backup file, e.g. --out trustflow-backup.tar")
			}
			if passFile != "" && !includeKEK {
				return flagError("--passphrase-file", "only used with --include-kek", "add --include-kek to put the key-encryption key in the backup, encrypted under the passphrase")
			}
			pass, err := readPasswordFile("--passphrase-file", passFile)
			if err != nil {
				return err
			}
			if includeKEK && pass == "" {
				return flagError("--include-kek", "needs --passphrase-file", fmt.Sprintf("put a passphrase of at least %d characters in a file (mode 600) and name it with --passphrase-file", backup.MinPassphrase))
			}
			cfg.DataDir = g.dataDir
			res, err := app.Backup(contextOf(cmd), cfg, app.BackupOptions{Out: out, IncludeKEK: includeKEK, Passphrase: pass,
				Build: api.BuildInfo(g.build), Getenv: g.getenv})
			if err != nil {
				return err
			}
			return g.render(res, func(w io.Writer) {
				m := res.Manifest
				fmt.Fprintf(w, "backup written to %s (%s, sha256 %s)\n", res.File, byteSize(res.Size), res.SHA256)
				fmt.Fprintf(w, "database:\tsqlite, schema %d, %s\n", m.SchemaVersion, m.CreatedAt.Format(time.RFC3339))
				switch {
				case len(m.KEKIDs) == 0 && m.AuditKeyID == "":
					fmt.Fprintf(w, "keys:\tnone needed\n")
				case m.KEKIncluded:
					fmt.Fprintf(w, "keys:\t%s included, encrypted under the passphrase (%s, %s); keep the passphrase: a restore needs it\n",
						keyList(m, false), m.KEK.KDF, m.KEK.Cipher)
				default:
					fmt.Fprintf(w, "keys:\tNOT in the backup: keep %s separately; a restore needs them\n", keyList(m, true))
				}
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "backup file to write (required; mode 0600, replaced atomically)")
	kekFlags(cmd, g, &cfg)
	f.BoolVar(&includeKEK, "include-kek", false, "put the key-encryption key and the audit key in the backup, encrypted under the passphrase (refused for a pkcs11: key)")
	f.StringVar(&passFile, "passphrase-file", "", "file holding the passphrase for --include-kek (at least 12 characters; a trailing newline is ignored)")
	return cmd
}

func newRestoreCmd(g *globals) *cobra.Command {
	var cfg config.Config
	var in, passFile string
	var force, allowMissing bool
	cmd := &cobra.Command{
		Use:   "restore --in FILE [--passphrase-file FILE] [--force]",
		Short: "Install a backup into the data dir (the server must be stopped), checking it completely first",
		Long: "Checks the backup's manifest, checksums, SQLite integrity, schema version and keys, and changes nothing if any check fails. " +
			"Then writes the included keys (decrypted with --passphrase-file) to the key files, migrates the database to this binary's schema, " +
			"records backup.restore in its audit chain and moves it into the data dir atomically. Without included keys, the --kek and --audit-key sources " +
			"must hold the keys the backup names. An existing database, or a key file with a different key, is replaced only with --force " +
			"(the old key file is kept beside it); the data dir's audit checkpoint of the replaced chain is kept aside.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if in == "" {
				return flagError("--in", "required", "name the backup file, e.g. --in trustflow-backup.tar")
			}
			pass, err := readPasswordFile("--passphrase-file", passFile)
			if err != nil {
				return err
			}
			cfg.DataDir = g.dataDir
			res, err := app.Restore(contextOf(cmd), cfg, app.RestoreOptions{In: in, Passphrase: pass, Force: force, AllowMissingKEK: allowMissing, Getenv: g.getenv})
			if err != nil {
				return err
			}
			if !res.AuditChain.OK {
				fmt.Fprintf(g.stderr, "Warning: the backup's audit chain is broken at record %d: %s\n", res.AuditChain.FirstBadSeq, res.AuditChain.Problem)
			}
			if len(res.MissingKEKs) > 0 {
				fmt.Fprintf(g.stderr, "Warning: %s does not hold key-encryption key %s: the server will not start until it does (copy it from %s)\n",
					res.KEKSource, strings.Join(res.MissingKEKs, ", "), res.Manifest.KEKSource)
			}
			return g.render(res, func(w io.Writer) {
				m := res.Manifest
				fmt.Fprintf(w, "restored %s into %s\n", res.File, res.Database)
				fmt.Fprintf(w, "backup:\t%s, trustflow %s, schema %d (now %d), sha256 %s\n", m.CreatedAt.Format(time.RFC3339),
					orDash(m.TrustflowVersion), m.SchemaVersion, res.MigratedTo, res.SHA256)
				held := []string{res.KEKSource}
				if m.AuditKeyID != "" {
					held = append(held, res.AuditKeySource)
				}
				switch {
				case len(m.KEKIDs) == 0 && m.AuditKeyID == "":
					fmt.Fprintf(w, "keys:\tnone needed\n")
				case len(res.MissingKEKs) > 0:
					fmt.Fprintf(w, "keys:\tMISSING key-encryption key %s in %s\n", strings.Join(res.MissingKEKs, ", "), res.KEKSource)
				case len(res.KeyFiles) > 0:
					fmt.Fprintf(w, "keys:\t%s, from the backup: wrote %s\n", keyList(m, false), strings.Join(res.KeyFiles, ", "))
				default:
					fmt.Fprintf(w, "keys:\t%s, held by %s\n", keyList(m, false), strings.Join(held, " and "))
				}
				for _, p := range res.KeptAside {
					fmt.Fprintf(w, "kept aside:\t%s\n", p)
				}
				if res.ReplacedDatabase {
					fmt.Fprintf(w, "replaced:\tthe database that was there (--force)\n")
				}
				chain := "intact"
				if !res.AuditChain.OK {
					chain = fmt.Sprintf("BROKEN at record %d", res.AuditChain.FirstBadSeq)
				}
				fmt.Fprintf(w, "audit:\tchain %s (%d records); this restore is record %d (backup.restore)\n", chain, res.AuditChain.Records, res.AuditSeq)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&in, "in", "", "backup file to restore (required)")
	kekFlags(cmd, g, &cfg)
	f.StringVar(&passFile, "passphrase-file", "", "file holding the passphrase of a backup made with --include-kek")
	f.BoolVar(&force, "force", false, "replace an existing database, and key files holding other keys (kept beside them as FILE.replaced-TIME)")
	f.BoolVar(&allowMissing, "allow-missing-kek", false, "restore even if the --kek source lacks keys the backup needs (the server refuses to start until it has them)")
	return cmd
}

// keyList names the keys a backup's database needs, with where the
// backed-up installation kept them when where is set.
func keyList(m backup.Manifest, where bool) string {
	var parts []string
	if len(m.KEKIDs) > 0 {
		p := "key-encryption key " + strings.Join(m.KEKIDs, ", ")
		if where {
			p += " (" + m.KEKSource + ")"
		}
		parts = append(parts, p)
	}
	if m.AuditKeyID != "" {
		p := "audit key " + m.AuditKeyID
		if where && m.AuditKeySource != "" {
			p += " (" + m.AuditKeySource + ")"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, " and ")
}

// byteSize formats n bytes for people.
func byteSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}
