package cli_test

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/apiclient"
	"github.com/trustflow/trustflow/internal/app"
	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/config"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

// TestAuditCheckpointsEndToEnd runs what an assessor does through the CLI
// against a real server: read the audit key, take a checkpoint, keep it,
// and later prove with it that nothing it covers was cut.
func TestAuditCheckpointsEndToEnd(t *testing.T) {
	t.Parallel()
	for _, d := range storetest.Dialects(t) {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			s := e2eStart(t, d)
			keyFile, err := os.Stat(filepath.Join(s.dir, config.AuditKeyFileName))
			require.NoError(t, err)
			require.Equal(t, os.FileMode(0o600), keyFile.Mode().Perm(), "the audit key is created 0600 on first start")

			status := e2eStrict[apiclient.AuditStatus](t, s.ok(t, "audit", "status", "-o", "json"))
			require.Regexp(t, `^[0-9a-f]{16}$`, status.KeyID)
			require.Equal(t, int64(1), status.KeyedFrom, "a new database is keyed from record 1")
			require.NotNil(t, status.DataDir, "the first start leaves a checkpoint in the data dir")
			table := s.ok(t, "audit", "status")
			require.Contains(t, table, status.KeyID)
			require.Contains(t, table, "-----BEGIN PUBLIC KEY-----")

			// Take a checkpoint and keep it, as an assessor would.
			out := s.ok(t, "audit", "checkpoint", "-o", "json")
			cp := e2eStrict[apiclient.AuditCheckpoint](t, out)
			require.Equal(t, status.KeyID, cp.KeyID)
			require.Regexp(t, `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$`, cp.Time, "the time as signed")
			kept := filepath.Join(t.TempDir(), "checkpoint.json")
			require.NoError(t, os.WriteFile(kept, []byte(out), 0o644))

			s.ok(t, "token", "create", "--role", "auditor", "--name", "assessor")
			v := e2eStrict[apiclient.AuditVerification](t, s.ok(t, "audit", "verify", "--checkpoint", kept, "-o", "json"))
			require.True(t, v.OK, v.Problem)
			require.Equal(t, "given", v.CheckpointSource)
			require.Equal(t, cp.Seq, v.CheckpointSeq)
			require.Equal(t, fmt.Sprintf("audit chain intact: %d records, head %d %s\n"+
				"keyed with HMAC-SHA256 under audit key %s from record 1; matches %d checkpoints, the given checkpoint of record %d signed %s (given)\n",
				v.Records, v.HeadSeq, v.HeadHash, cp.KeyID, v.Checkpoints, cp.Seq, v.CheckpointTime.UTC().Format(time.RFC3339)),
				s.ok(t, "audit", "verify", "--checkpoint", kept))

			// A checkpoint of another deployment is refused.
			other := e2eStart(t, d)
			otherFile := filepath.Join(t.TempDir(), "other.json")
			require.NoError(t, os.WriteFile(otherFile, []byte(other.ok(t, "audit", "checkpoint", "-o", "json")), 0o644))
			otherStatus := e2eStrict[apiclient.AuditStatus](t, other.ok(t, "audit", "status", "-o", "json"))
			r := s.cli(t, "audit", "verify", "--checkpoint", otherFile)
			require.Equal(t, 1, r.code)
			require.Empty(t, r.stdout)
			require.Regexp(t, `^Error: checkpoint\.key_id: the checkpoint of record \d+ is signed by audit key `+otherStatus.KeyID+`, but this deployment's audit key is `+status.KeyID+`: it comes from another deployment\n`+
				`Hint: verify it against the deployment that made it, or take a checkpoint of this one with `+"`trustflow audit checkpoint`\n$", r.stderr)

			// A file that is not a checkpoint is named before the server is asked.
			bad := filepath.Join(t.TempDir(), "bad.json")
			require.NoError(t, os.WriteFile(bad, []byte(strings.Replace(out, `"seq": `, `"seq": -`, 1)), 0o644))
			r = s.cli(t, "audit", "verify", "--checkpoint", bad)
			require.Equal(t, e2eResult{code: 1, stderr: "Error: --checkpoint " + bad + ": seq: must be a record number, 1 or more; use the checkpoint exactly as `trustflow audit checkpoint -o json` printed it\n"}, r)

			// Records written after the kept checkpoint, then checkpointed.
			for i := 0; i < 3; i++ {
				s.ok(t, "token", "create", "--role", "operator", "--name", fmt.Sprintf("op%d", i))
			}
			later := filepath.Join(t.TempDir(), "later.json")
			require.NoError(t, os.WriteFile(later, []byte(s.ok(t, "audit", "checkpoint", "-o", "json")), 0o644))
			laterCP := e2eStrict[apiclient.AuditCheckpoint](t, readE2EFile(t, later))

			// Someone with the database cuts the last records, moves the head
			// back and deletes every checkpoint in the database.
			db := s.app.Store.DB()
			cut := laterCP.Seq - 4
			var hash, keyID string
			require.NoError(t, db.QueryRow("SELECT hash, key_id FROM audit_records WHERE seq = $1", cut).Scan(&hash, &keyID))
			_, err = db.Exec("DELETE FROM audit_records WHERE seq > $1", cut)
			require.NoError(t, err)
			_, err = db.Exec("DELETE FROM audit_checkpoints")
			require.NoError(t, err)
			_, err = db.Exec("UPDATE audit_head SET seq = $1, hash = $2, key_id = $3", cut, hash, keyID)
			require.NoError(t, err)

			// verify alone finds it through the data dir's checkpoint ...
			r = s.cli(t, "audit", "verify")
			require.Equal(t, 2, r.code)
			require.Empty(t, r.stdout)
			require.Regexp(t, fmt.Sprintf(`^Error: audit chain broken at record %d: records %d to %d were removed: the chain ends at record %d, but the checkpoint signed at \S+ \(data dir\) covers record %d`,
				cut+1, cut+1, laterCP.Seq, cut, laterCP.Seq), r.stderr)
			// ... and the assessor's kept checkpoint says the same.
			r = s.cli(t, "audit", "verify", "--checkpoint", later, "-o", "json")
			require.Equal(t, 2, r.code)
			v = e2eStrict[apiclient.AuditVerification](t, r.stdout)
			require.False(t, v.OK)
			require.Equal(t, cut+1, v.FirstBadSeq)
			require.Regexp(t, regexp.QuoteMeta(fmt.Sprintf("records %d to %d were removed", cut+1, laterCP.Seq)), v.Problem)

			// The export a SIEM took before carries the checkpoints too.
			exported := other.ok(t, "audit", "export")
			require.Contains(t, exported, `{"checkpoint":{"seq":1,`)
		})
	}
}

// TestServeRefusesAnotherAuditKey restarts a server whose audit key was
// replaced: it refuses to start, naming the key the database expects.
func TestServeRefusesAnotherAuditKey(t *testing.T) {
	t.Parallel()
	for _, d := range storetest.Dialects(t) {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			dbURL := e2eDatabase(t, d)
			dir := filepath.Join(t.TempDir(), "data")
			cfg := config.Config{DataDir: dir, Listen: "127.0.0.1:0", DatabaseURL: dbURL}
			opts := app.Options{Logger: slog.New(slog.DiscardHandler), Stderr: io.Discard}
			a, err := app.New(t.Context(), cfg, opts)
			require.NoError(t, err)
			want := a.Audit.KeyID()
			require.NoError(t, a.Stop())

			keyPath := filepath.Join(dir, config.AuditKeyFileName)
			original, err := os.ReadFile(keyPath)
			require.NoError(t, err)
			_, text, err := audit.NewKey()
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(keyPath, text, 0o600))
			_, err = app.New(t.Context(), cfg, opts)
			require.ErrorContains(t, err, "app: audit key: audit: the database's audit chain is keyed under audit key "+want+", but this node's source file://"+keyPath+" holds ")
			require.ErrorContains(t, err, "copy the audit key from a node that serves this database")

			// Without any key the node refuses too, and creates none.
			require.NoError(t, os.Remove(keyPath))
			_, err = app.New(t.Context(), cfg, opts)
			require.ErrorContains(t, err, "holds no key")
			require.NoFileExists(t, keyPath)

			// The right key in an environment variable, as a second node has it.
			if d == store.Postgres {
				secret := strings.TrimSpace(strings.SplitN(string(original), "\n", 2)[1])
				env := func(name string) string { return map[string]string{"TF_AUDIT": secret}[name] }
				b, err := app.New(t.Context(), config.Config{DataDir: filepath.Join(t.TempDir(), "node2"), Listen: "127.0.0.1:0", DatabaseURL: dbURL,
					AuditKey: "env://TF_AUDIT", KEK: "file://" + filepath.Join(dir, config.KEKFileName)}, app.Options{Logger: slog.New(slog.DiscardHandler), Stderr: io.Discard, Getenv: env})
				require.NoError(t, err)
				require.Equal(t, want, b.Audit.KeyID())
				require.NoError(t, b.Stop())
			}
		})
	}
}
