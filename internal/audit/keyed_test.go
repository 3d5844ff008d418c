package audit_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

var t0 = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// openKeyed opens a keyed log whose key file and checkpoint copy live in
// dir (empty dir: a key file in a temp dir and no checkpoint copy).
func openKeyed(t testing.TB, st *store.Store, dir string, c clock.Clock, edit ...func(*audit.Config)) *audit.Log {
	t.Helper()
	l, err := tryOpen(st, dir, c, edit...)
	require.NoError(t, err)
	t.Cleanup(l.Stop)
	return l
}

func tryOpen(st *store.Store, dir string, c clock.Clock, edit ...func(*audit.Config)) (*audit.Log, error) {
	cfg := audit.Config{Store: st, Source: audit.FileKeySource{Path: filepath.Join(dir, "audit.key")}, Clock: c, DataDir: dir,
		Logger: slog.New(slog.DiscardHandler)}
	for _, e := range edit {
		e(&cfg)
	}
	return audit.Open(context.Background(), cfg)
}

func exec1(t testing.TB, st *store.Store, q string, args ...any) {
	t.Helper()
	_, err := st.DB().ExecContext(context.Background(), q, args...)
	require.NoError(t, err, q)
}

func allRecords(t testing.TB, log *audit.Log) []audit.Record {
	t.Helper()
	var out []audit.Record
	f := audit.Filter{Ascending: true, Limit: 1000}
	for {
		page, err := log.List(context.Background(), f)
		require.NoError(t, err)
		out = append(out, page...)
		if len(page) < f.Limit {
			return out
		}
		f.AfterSeq = page[len(page)-1].Seq
	}
}

// rewrite is what someone with write access to the database does to hide
// an edit: from record from on, apply edit and recompute every link and
// hash with hash (and move the head to the last record).
func rewrite(t testing.TB, st *store.Store, log *audit.Log, from int64, edit func(*audit.Record), hash func(audit.Record) string) {
	t.Helper()
	recs := allRecords(t, log)
	prev := ""
	for i := range recs {
		r := &recs[i]
		if r.Seq < from {
			prev = r.Hash
			continue
		}
		edit(r)
		r.PrevHash = prev
		r.Hash = hash(*r)
		prev = r.Hash
		exec1(t, st, "UPDATE audit_records SET target = $1, key_id = $2, prev_hash = $3, hash = $4 WHERE seq = $5", r.Target, r.KeyID, r.PrevHash, r.Hash, r.Seq)
	}
	last := recs[len(recs)-1]
	exec1(t, st, "UPDATE audit_head SET seq = $1, hash = $2, key_id = $3", last.Seq, last.Hash, last.KeyID)
}

func sha256Hash(r audit.Record) string {
	h, err := audit.Hash(r)
	if err != nil {
		panic(err)
	}
	return h
}

func TestOpenKeysANewDatabaseFromRecordOne(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		ctx := context.Background()
		dir := t.TempDir()
		log := openKeyed(t, st, dir, clock.NewFake(t0))
		require.True(t, log.Created)
		require.True(t, log.Registered)
		require.Regexp(t, `^[0-9a-f]{16}$`, log.KeyID())

		fi, err := os.Stat(filepath.Join(dir, "audit.key"))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

		recs := allRecords(t, log)
		require.Len(t, recs, 1)
		require.Equal(t, "audit.key.record", recs[0].Action)
		require.Equal(t, log.KeyID(), recs[0].KeyID)
		require.Equal(t, "", recs[0].PrevHash)
		var details map[string]any
		require.NoError(t, json.Unmarshal(recs[0].Details, &details))
		require.Equal(t, log.KeyID(), details["key_id"])
		require.EqualValues(t, 1, details["keyed_from"])
		require.EqualValues(t, 0, details["unkeyed_records"])
		_, err = audit.Hash(recs[0])
		require.Error(t, err, "a keyed record has no unkeyed hash")

		// The first checkpoint is in the data dir and the database.
		file, err := audit.ReadCheckpointFile(filepath.Join(dir, audit.CheckpointFileName))
		require.NoError(t, err)
		require.Equal(t, audit.Checkpoint{Seq: 1, HeadHash: recs[0].Hash, KeyedFrom: 1, Time: t0, KeyID: log.KeyID(),
			PublicKey: file.PublicKey, Signature: file.Signature}, file)
		st0, err := log.Status(ctx)
		require.NoError(t, err)
		require.Equal(t, &file, st0.Latest)
		require.Equal(t, st0.PublicKey, file.PublicKey)

		v, err := log.Verify(ctx)
		require.NoError(t, err)
		require.Equal(t, audit.Verification{OK: true, Records: 1, HeadSeq: 1, HeadHash: recs[0].Hash, KeyID: log.KeyID(), KeyedFrom: 1,
			Checkpoints: 2, CheckpointSeq: 1, CheckpointTime: &t0, CheckpointSource: "data dir"}, v)

		// Records appended now are keyed and verify.
		appendN(t, log, st, 3)
		recs = allRecords(t, log)
		require.Len(t, recs, 4)
		for i, r := range recs[1:] {
			require.Equal(t, log.KeyID(), r.KeyID)
			require.Equal(t, recs[i].Hash, r.PrevHash)
		}
		v, err = log.Verify(ctx)
		require.NoError(t, err)
		require.True(t, v.OK, v.Problem)
		require.Equal(t, int64(4), v.Records)
	})
}

func TestOpenRefusesAnotherAuditKey(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		firstDir := t.TempDir()
		first := openKeyed(t, st, firstDir, nil)

		// A node with a key of its own.
		other := t.TempDir()
		otherKey, err := audit.FileKeySource{Path: filepath.Join(other, "audit.key")}.Create(context.Background())
		require.NoError(t, err)
		_, err = tryOpen(st, other, nil)
		var wrong *audit.WrongKeyError
		require.ErrorAs(t, err, &wrong)
		require.Equal(t, audit.WrongKeyError{Expected: first.KeyID(), Source: "file://" + filepath.Join(other, "audit.key"), Holds: otherKey.ID()}, *wrong)
		require.Contains(t, err.Error(), "keyed under audit key "+first.KeyID())
		require.Contains(t, err.Error(), "copy the audit key from a node that serves this database")

		// A node with no key: refused, and no key is created for it.
		empty := t.TempDir()
		_, err = tryOpen(st, empty, nil)
		require.ErrorAs(t, err, &wrong)
		require.Equal(t, "", wrong.Holds)
		require.NoFileExists(t, filepath.Join(empty, "audit.key"))

		// An env:// node with the same key is welcome: nodes share one key.
		text, err := os.ReadFile(filepath.Join(firstDir, "audit.key"))
		require.NoError(t, err)
		secret := strings.TrimSpace(strings.SplitN(string(text), "\n", 2)[1])
		second := openKeyed(t, st, t.TempDir(), nil, func(c *audit.Config) {
			c.Source = audit.EnvKeySource{Name: "AK", Getenv: func(n string) string { return map[string]string{"AK": secret}[n] }}
		})
		require.False(t, second.Registered)
		require.Equal(t, first.KeyID(), second.KeyID())
		appendN(t, first, st, 2)
		appendN(t, second, st, 2)
		v, err := first.Verify(context.Background())
		require.NoError(t, err)
		require.True(t, v.OK, v.Problem)
		require.Equal(t, int64(5), v.Records)
	})
}

func TestOpenKeysAnExistingUnkeyedChain(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		ctx := context.Background()
		legacy := audit.New(st, nil)
		appendN(t, legacy, st, 5)
		old := allRecords(t, legacy)

		log := openKeyed(t, st, t.TempDir(), nil)
		require.True(t, log.Registered)
		recs := allRecords(t, log)
		require.Len(t, recs, 6)
		require.Equal(t, old, recs[:5], "records before the key keep their SHA-256 link")
		require.Equal(t, "audit.key.record", recs[5].Action)
		require.Equal(t, recs[4].Hash, recs[5].PrevHash, "the first keyed record commits to the last unkeyed one")
		v, err := log.Verify(ctx)
		require.NoError(t, err)
		require.True(t, v.OK, v.Problem)
		require.Equal(t, int64(6), v.KeyedFrom)
		require.Equal(t, int64(6), v.Records)

		// The unkeyed log can no longer append: the chain is keyed.
		err = legacy.Record(ctx, audit.Entry{Actor: alice, Action: "x.y"})
		var nk *audit.NotKeyedError
		require.ErrorAs(t, err, &nk)
		require.Equal(t, audit.NotKeyedError{KeyID: log.KeyID()}, *nk)

		// Rewriting an unkeyed record and recomputing the unkeyed hashes
		// after it is caught by the first keyed record.
		recs = allRecords(t, log)
		prev := recs[0].Hash
		for i := 1; i < 5; i++ {
			r := recs[i]
			if i == 1 {
				r.Target = "token/forged"
			}
			r.PrevHash = prev
			r.Hash = sha256Hash(r)
			prev = r.Hash
			exec1(t, st, "UPDATE audit_records SET target = $1, prev_hash = $2, hash = $3 WHERE seq = $4", r.Target, r.PrevHash, r.Hash, r.Seq)
		}
		v, err = log.Verify(ctx)
		require.NoError(t, err)
		require.False(t, v.OK)
		require.Equal(t, int64(6), v.FirstBadSeq, v.Problem)
		require.Contains(t, v.Problem, "does not follow")
	})
}

// keyedChain opens a keyed log over a fresh database of dialect d, appends
// records up to seq 300 and checkpoints the head: the state an attacker
// with database access starts from.
func keyedChain(t *testing.T, d store.Dialect, dir string) (*store.Store, *audit.Log, audit.Checkpoint) {
	t.Helper()
	st := storetest.Open(t, d)
	log := openKeyed(t, st, dir, nil)
	appendN(t, log, st, 299)
	cp, err := log.Checkpoint(context.Background(), nil)
	require.NoError(t, err)
	require.Equal(t, int64(300), cp.Seq)
	return st, log, cp
}

// truncate deletes the records after seq and moves the head back to seq,
// as someone hiding the last records would.
func truncate(t *testing.T, st *store.Store, seq int64) {
	t.Helper()
	var hash, keyID string
	require.NoError(t, st.DB().QueryRow("SELECT hash, key_id FROM audit_records WHERE seq = $1", seq).Scan(&hash, &keyID))
	exec1(t, st, "DELETE FROM audit_records WHERE seq > $1", seq)
	exec1(t, st, "UPDATE audit_head SET seq = $1, hash = $2, key_id = $3", seq, hash, keyID)
}

func TestVerifyDetectsTailTruncation(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// noDataDir runs the node without a data dir copy.
		noDataDir bool
		// dropCheckpoints also deletes the database's checkpoints.
		dropCheckpoints bool
		wantSource      string
	}{
		{"checkpoints in the database and the data dir", false, false, "database"},
		{"database checkpoints deleted too: the data dir copy", false, true, "data dir"},
		{"no data dir: the database checkpoints", true, false, "database"},
	}
	for _, d := range storetest.Dialects(t) {
		for _, tc := range cases {
			t.Run(string(d)+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				ctx := context.Background()
				dir := t.TempDir()
				st, log, _ := keyedChain(t, d, dir)
				if tc.noDataDir {
					log = openKeyed(t, st, dir, nil, func(c *audit.Config) { c.DataDir = "" })
				}
				truncate(t, st, 200)
				if tc.dropCheckpoints {
					exec1(t, st, "DELETE FROM audit_checkpoints")
				}
				head, err := st.AuditHead(ctx)
				require.NoError(t, err)
				require.Equal(t, int64(200), head.Seq, "the head was moved back consistently")

				v, err := log.Verify(ctx)
				require.NoError(t, err)
				require.False(t, v.OK)
				require.Equal(t, int64(201), v.FirstBadSeq, v.Problem)
				require.Regexp(t, `^records 201 to 300 were removed: the chain ends at record 200, but the checkpoint signed at \S+ \(`+tc.wantSource+`\) covers record 300`, v.Problem)

				// No checkpoint is signed over the truncated chain.
				_, err = log.Checkpoint(ctx, nil)
				var broken *audit.BrokenError
				require.ErrorAs(t, err, &broken)
				require.Equal(t, int64(201), broken.Seq)
				require.Equal(t, audit.CodeChainBroken, errs.CodeOf(err))
			})
		}
	}
}

func TestVerifyDetectsRewrittenHistory(t *testing.T) {
	t.Parallel()
	guess, _, err := audit.NewKey()
	require.NoError(t, err)
	forgeTarget := func(r *audit.Record) {
		if r.Seq == 2 {
			r.Target = "token/forged"
		}
	}
	cases := []struct {
		name    string
		tamper  func(t *testing.T, st *store.Store, log *audit.Log)
		wantBad int64
		want    string
	}{
		{"record 2 rewritten, every later hash recomputed with SHA-256", func(t *testing.T, st *store.Store, log *audit.Log) {
			rewrite(t, st, log, 2, forgeTarget, func(r audit.Record) string {
				r.KeyID = "" // SHA-256 of the record, stored under the real key id
				return sha256Hash(r)
			})
		}, 2, `^record 2 was altered: its MAC does not verify under audit key [0-9a-f]{16}$`},
		{"record 2 rewritten as unkeyed SHA-256 records from there on", func(t *testing.T, st *store.Store, log *audit.Log) {
			rewrite(t, st, log, 2, func(r *audit.Record) { forgeTarget(r); r.KeyID = "" }, sha256Hash)
		}, 2, `^record 2 is not keyed, but the chain is keyed from record 1: a keyed record was replaced by an unkeyed one$`},
		{"record 2 rewritten with a guessed key under the real key id", func(t *testing.T, st *store.Store, log *audit.Log) {
			rewrite(t, st, log, 2, forgeTarget, func(r audit.Record) string { return audit.ForgeMAC(guess, r) })
		}, 2, `^record 2 was altered: its MAC does not verify under audit key`},
		{"record 2 rewritten with a guessed key under its own id", func(t *testing.T, st *store.Store, log *audit.Log) {
			rewrite(t, st, log, 2, func(r *audit.Record) { forgeTarget(r); r.KeyID = guess.ID() }, func(r audit.Record) string { return audit.ForgeMAC(guess, r) })
		}, 2, `^record 2 is keyed under audit key [0-9a-f]{16}, not this deployment's [0-9a-f]{16}: it was forged with another key$`},
		{"head record deleted", func(t *testing.T, st *store.Store, log *audit.Log) {
			exec1(t, st, "DELETE FROM audit_records WHERE seq = 300")
		}, 300, `^record 300 was removed: the chain ends at record 299, but the checkpoint signed at`},
		{"head row deleted", func(t *testing.T, st *store.Store, log *audit.Log) {
			exec1(t, st, "DELETE FROM audit_head")
		}, 300, `^the chain head row \(audit_head\) is missing`},
		{"a checkpoint forged with a guessed key", func(t *testing.T, st *store.Store, log *audit.Log) {
			exec1(t, st, "UPDATE audit_checkpoints SET signature = $1 WHERE seq = 300", base64.StdEncoding.EncodeToString(make([]byte, 64)))
		}, 300, `^the database's checkpoint of record 300 is not a valid checkpoint of this deployment \(forged or altered\): signature: the signature of the checkpoint of record 300 does not verify`},
	}
	for _, d := range storetest.Dialects(t) {
		for _, tc := range cases {
			t.Run(string(d)+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				ctx := context.Background()
				st, log, _ := keyedChain(t, d, t.TempDir())
				tc.tamper(t, st, log)
				v, err := log.Verify(ctx)
				require.NoError(t, err)
				require.False(t, v.OK)
				require.Equal(t, tc.wantBad, v.FirstBadSeq, v.Problem)
				require.Regexp(t, tc.want, v.Problem)
			})
		}
	}
}

func forgeTarget2(r *audit.Record) {
	if r.Seq == 2 {
		r.Target = "token/forged"
	}
}

// TestVerifyDetectsADowngrade: someone rewrites the keyed records as
// unkeyed ones and moves keyed_from past them, so the chain looks like one
// from before the audit key. The checkpoints outside the database still
// say where it was keyed from.
func TestVerifyDetectsADowngrade(t *testing.T) {
	t.Parallel()
	for _, d := range storetest.Dialects(t) {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			dir := t.TempDir()
			st, log, _ := keyedChain(t, d, dir)
			rewrite(t, st, log, 1, func(r *audit.Record) { forgeTarget2(r); r.KeyID = "" }, sha256Hash)
			exec1(t, st, "UPDATE audit_keys SET keyed_from = 301")
			exec1(t, st, "DELETE FROM audit_checkpoints")
			v0, err := audit.New(st, nil).Verify(ctx)
			require.NoError(t, err)
			require.True(t, v0.OK, "in the database alone, the chain looks like one from before the audit key: %s", v0.Problem)

			// The running node remembers where the chain was keyed from.
			v, err := log.Verify(ctx)
			require.NoError(t, err)
			require.False(t, v.OK)
			require.Contains(t, v.Problem, "keyed_from was moved")

			// A node started afresh on the tampered database has the data
			// dir's checkpoint.
			fresh := openKeyed(t, st, dir, nil)
			v, err = fresh.Verify(ctx)
			require.NoError(t, err)
			require.False(t, v.OK)
			require.Equal(t, int64(1), v.FirstBadSeq)
			require.Regexp(t, `^the checkpoint signed at \S+ \(data dir\) says the chain is keyed from record 1, but the database says from record 301 \(keyed_from was moved\)$`, v.Problem)
		})
	}
}

func TestOpenRefusesADeletedKeyRecord(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		dir := t.TempDir()
		log := openKeyed(t, st, dir, nil)
		appendN(t, log, st, 2)
		exec1(t, st, "DELETE FROM audit_keys")
		_, err := tryOpen(st, dir, nil)
		require.ErrorContains(t, err, "record 1 and later are keyed under audit key "+log.KeyID()+", but the database records no audit key (its audit_keys row was deleted)")
		v, err := log.Verify(context.Background())
		require.NoError(t, err)
		require.False(t, v.OK)
		require.Contains(t, v.Problem, "the audit_keys row was deleted")
	})
}

func TestVerifyCheckpoint(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		ctx := context.Background()
		fc := clock.NewFake(t0)
		log := openKeyed(t, st, t.TempDir(), fc)
		appendN(t, log, st, 10)
		fc.Advance(time.Minute)
		cp, err := log.Checkpoint(ctx, &alice)
		require.NoError(t, err)
		require.Equal(t, int64(12), cp.Seq, "an on-demand checkpoint covers its own audit.checkpoint record")
		last := allRecords(t, log)[11]
		require.Equal(t, "audit.checkpoint", last.Action)
		require.Equal(t, alice, last.Actor)
		require.Equal(t, last.Hash, cp.HeadHash)
		appendN(t, log, st, 5)

		// Through its JSON form, as an assessor keeps it.
		b, err := json.MarshalIndent(cp, "", "  ")
		require.NoError(t, err)
		parsed, err := audit.ParseCheckpoint(b)
		require.NoError(t, err)
		require.Equal(t, cp, parsed)
		v, err := log.VerifyCheckpoint(ctx, parsed)
		require.NoError(t, err)
		at := t0.Add(time.Minute)
		require.Equal(t, audit.Verification{OK: true, Records: 17, HeadSeq: 17, HeadHash: allRecords(t, log)[16].Hash, KeyID: log.KeyID(), KeyedFrom: 1,
			Checkpoints: 4, CheckpointSeq: 12, CheckpointTime: &at, CheckpointSource: "given"}, v)

		// Edited after signing: refused, nothing walked.
		edited := cp
		edited.HeadHash = strings.Repeat("0", 64)
		_, err = log.VerifyCheckpoint(ctx, edited)
		require.Equal(t, audit.CodeCheckpointForged, errs.CodeOf(err))
		e, _ := errs.As(err)
		require.Equal(t, "signature", e.Field)

		// A record the checkpoint covers is rewritten (MAC and all, as if
		// with the key): the signed head no longer matches.
		exec1(t, st, "UPDATE audit_records SET hash = $1 WHERE seq = 12", strings.Repeat("a", 64))
		exec1(t, st, "DELETE FROM audit_checkpoints")
		v, err = log.VerifyCheckpoint(ctx, parsed)
		require.NoError(t, err)
		require.False(t, v.OK)
		require.Equal(t, int64(12), v.FirstBadSeq)
	})
}

func TestCheckpointFromAnotherDeploymentIsRefused(t *testing.T) {
	t.Parallel()
	for _, d := range storetest.Dialects(t) {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			dirA := t.TempDir()
			stA := storetest.Open(t, d)
			a := openKeyed(t, stA, dirA, nil)
			b := openKeyed(t, storetest.Open(t, d), t.TempDir(), nil)
			cpB, err := b.Checkpoint(ctx, nil)
			require.NoError(t, err)

			_, err = a.VerifyCheckpoint(ctx, cpB)
			require.Equal(t, audit.CodeCheckpointOtherKey, errs.CodeOf(err))
			require.Equal(t, errs.Invalid, errs.KindOf(err))
			e, _ := errs.As(err)
			require.Equal(t, fmt.Sprintf("key_id: the checkpoint of record 1 is signed by audit key %s, but this deployment's audit key is %s: it comes from another deployment", b.KeyID(), a.KeyID()), e.Public())

			// Renaming the key in it breaks its signature.
			cpB.KeyID = a.KeyID()
			_, err = a.VerifyCheckpoint(ctx, cpB)
			require.Equal(t, audit.CodeCheckpointForged, errs.CodeOf(err))

			// Another deployment's checkpoint put in the data dir.
			require.NoError(t, os.WriteFile(filepath.Join(dirA, audit.CheckpointFileName), []byte(mustJSON(t, cpB)), 0o600))
			v, err := a.Verify(ctx)
			require.NoError(t, err)
			require.False(t, v.OK)
			require.Contains(t, v.Problem, "is not a valid checkpoint of this deployment")
		})
	}
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

func TestTickCheckpointsWhenDue(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		ctx := context.Background()
		fc := clock.NewFake(t0)
		dir := t.TempDir()
		log := openKeyed(t, st, dir, fc, func(c *audit.Config) { c.CheckpointEvery = 5 * time.Minute; c.CheckpointRecords = 10 })
		latest := func() int64 {
			c, err := st.LatestAuditCheckpoint(ctx)
			require.NoError(t, err)
			return c.Seq
		}
		tick := func() bool {
			made, err := log.Tick(ctx)
			require.NoError(t, err)
			return made
		}
		require.False(t, tick(), "nothing appended since the first checkpoint")
		appendN(t, log, st, 8)
		fc.Advance(4 * time.Minute)
		require.False(t, tick(), "8 records and 4 minutes: not due")
		appendN(t, log, st, 2)
		require.True(t, tick(), "10 records")
		require.Equal(t, int64(11), latest())
		appendN(t, log, st, 1)
		fc.Advance(4*time.Minute + 59*time.Second)
		require.False(t, tick())
		fc.Advance(time.Second)
		require.True(t, tick(), "5 minutes")
		require.Equal(t, int64(12), latest())
		fc.Advance(time.Hour)
		require.False(t, tick(), "nothing appended")
		file, err := audit.ReadCheckpointFile(filepath.Join(dir, audit.CheckpointFileName))
		require.NoError(t, err)
		require.Equal(t, int64(12), file.Seq)
	})
}

func TestTickCopiesAnotherNodesCheckpoint(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		ctx := context.Background()
		dirA, dirB := t.TempDir(), t.TempDir()
		a := openKeyed(t, st, dirA, nil)
		require.NoError(t, os.Link(filepath.Join(dirA, "audit.key"), filepath.Join(dirB, "audit.key")))
		b := openKeyed(t, st, dirB, nil)
		require.NoFileExists(t, filepath.Join(dirB, audit.CheckpointFileName))
		appendN(t, a, st, 4)
		cp, err := a.Checkpoint(ctx, nil)
		require.NoError(t, err)
		made, err := b.Tick(ctx)
		require.NoError(t, err)
		require.False(t, made, "a's checkpoint is fresh")
		got, err := audit.ReadCheckpointFile(filepath.Join(dirB, audit.CheckpointFileName))
		require.NoError(t, err)
		require.Equal(t, cp, got)
	})
}

func TestCheckpointIsALogLine(t *testing.T) {
	t.Parallel()
	st := storetest.Open(t, store.SQLite)
	ctx := context.Background()
	var logs syncBuffer
	log := openKeyed(t, st, t.TempDir(), nil, func(c *audit.Config) { c.Logger = slog.New(slog.NewJSONHandler(&logs, nil)) })
	appendN(t, log, st, 2)
	cp, err := log.Checkpoint(ctx, nil)
	require.NoError(t, err)
	var lines []audit.Checkpoint
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		var line struct {
			Msg        string          `json:"msg"`
			Checkpoint json.RawMessage `json:"checkpoint"`
		}
		require.NoError(t, json.Unmarshal(sc.Bytes(), &line))
		if line.Msg == "audit checkpoint" {
			c, err := audit.ParseCheckpoint(line.Checkpoint)
			require.NoError(t, err, "a shipped log line holds a checkpoint ParseCheckpoint reads")
			lines = append(lines, c)
		}
	}
	require.Len(t, lines, 2, "the first checkpoint at Open, and this one")
	require.Equal(t, cp, lines[1])
	v, err := log.VerifyCheckpoint(ctx, lines[1])
	require.NoError(t, err)
	require.True(t, v.OK, v.Problem)
}

// TestCheckpointVerifiesWithOpenSSL runs what an assessor does without
// trustflow or any secret (docs/security.md, "How an assessor verifies"):
// the public key `audit status` prints, the checkpoint as `audit checkpoint
// -o json` prints it, jq and openssl. The clock is at .120000 seconds, so
// the signed time has trailing zeros.
func TestCheckpointVerifiesWithOpenSSL(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"openssl", "jq", "bash", "base64"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skip(tool + " is not installed")
		}
	}
	st := storetest.Open(t, store.SQLite)
	ctx := context.Background()
	log := openKeyed(t, st, t.TempDir(), clock.NewFake(t0.Add(120*time.Millisecond)))
	appendN(t, log, st, 3)
	cp, err := log.Checkpoint(ctx, nil)
	require.NoError(t, err)
	status, err := log.Status(ctx)
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "audit-public.pem"), []byte(status.PublicKeyPEM), 0o600))
	printed, err := json.MarshalIndent(cp, "", "  ")
	require.NoError(t, err)
	require.Contains(t, string(printed), `"time": "2026-03-01T10:00:00.120000Z"`)
	require.Equal(t, fmt.Sprintf("trustflow-audit-checkpoint-v1\nseq=%d\nhead_hash=%s\nkeyed_from=%d\ntime=2026-03-01T10:00:00.120000Z\nkey_id=%s\n",
		cp.Seq, cp.HeadHash, cp.KeyedFrom, cp.KeyID), string(cp.SignedMessage()), "the documented message")
	// The commands of docs/security.md, as written there.
	script := `jq -r '"trustflow-audit-checkpoint-v1\nseq=\(.seq)\nhead_hash=\(.head_hash)\nkeyed_from=\(.keyed_from)\ntime=\(.time)\nkey_id=\(.key_id)"' cp.json > msg
jq -r .signature cp.json | base64 -d > sig
openssl pkeyutl -verify -pubin -inkey audit-public.pem -rawin -in msg -sigfile sig`
	verify := func(checkpoint []byte) (string, error) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "cp.json"), checkpoint, 0o600))
		cmd := exec.Command("bash", "-e", "-c", script)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := verify(printed)
	require.NoError(t, err, out)
	require.Contains(t, out, "Signature Verified Successfully")
	forged := cp
	forged.Seq--
	b, err := json.Marshal(forged)
	require.NoError(t, err)
	out, err = verify(b)
	require.Error(t, err, "a changed checkpoint fails: %s", out)
}

func TestExportIncludesCheckpoints(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		ctx := context.Background()
		log := openKeyed(t, st, t.TempDir(), nil)
		appendN(t, log, st, 2)
		cp3, err := log.Checkpoint(ctx, nil)
		require.NoError(t, err)
		appendN(t, log, st, 1)
		var buf bytes.Buffer
		n, err := log.Export(ctx, &buf, audit.Filter{})
		require.NoError(t, err)
		require.Equal(t, 4, n)
		var kinds []string
		sc := bufio.NewScanner(&buf)
		for sc.Scan() {
			var probe map[string]json.RawMessage
			require.NoError(t, json.Unmarshal(sc.Bytes(), &probe))
			if raw, ok := probe["checkpoint"]; ok {
				c, err := audit.ParseCheckpoint(raw)
				require.NoError(t, err)
				kinds = append(kinds, fmt.Sprintf("checkpoint %d", c.Seq))
				if c.Seq == 3 {
					require.Equal(t, cp3, c)
				}
				continue
			}
			var r audit.Record
			require.NoError(t, json.Unmarshal(sc.Bytes(), &r))
			require.Equal(t, log.KeyID(), r.KeyID)
			kinds = append(kinds, fmt.Sprintf("record %d", r.Seq))
		}
		require.Equal(t, []string{"record 1", "checkpoint 1", "record 2", "record 3", "checkpoint 3", "record 4"}, kinds)
	})
}

func TestConcurrentAppendsAndCheckpoints(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		ctx := context.Background()
		log := openKeyed(t, st, t.TempDir(), nil)
		const writers, each = 4, 30
		var wg sync.WaitGroup
		errc := make(chan error, writers*each+100)
		stop := make(chan struct{})
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < each; i++ {
					errc <- log.Record(ctx, audit.Entry{Actor: alice, Action: "test.write", Target: fmt.Sprintf("w%d/%d", w, i)})
				}
			}()
		}
		var made []audit.Checkpoint
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				default:
				}
				cp, err := log.Checkpoint(ctx, nil)
				if err != nil {
					errc <- err
					return
				}
				made = append(made, cp)
			}
		}()
		wg.Wait()
		close(stop)
		<-done
		close(errc)
		for err := range errc {
			require.NoError(t, err)
		}
		require.NotEmpty(t, made)
		v, err := log.Verify(ctx)
		require.NoError(t, err)
		require.True(t, v.OK, v.Problem)
		require.Equal(t, int64(1+writers*each), v.Records)
		for _, cp := range made {
			v, err := log.VerifyCheckpoint(ctx, cp)
			require.NoError(t, err)
			require.True(t, v.OK, v.Problem)
		}
	})
}

func TestKeySources(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	src := audit.FileKeySource{Path: filepath.Join(dir, "audit.key")}
	_, err := src.Load(ctx)
	require.ErrorIs(t, err, audit.ErrNoKey)
	k, err := src.Create(ctx)
	require.NoError(t, err)
	_, err = src.Create(ctx)
	require.ErrorIs(t, err, os.ErrExist, "a key file is never replaced")
	again, err := src.Load(ctx)
	require.NoError(t, err)
	require.Equal(t, k.ID(), again.ID())
	require.Equal(t, "audit.Key("+k.ID()+")", fmt.Sprint(k))
	require.Equal(t, "audit.Key("+k.ID()+")", fmt.Sprintf("%#v", k))

	require.NoError(t, os.Chmod(src.Path, 0o640))
	_, err = src.Load(ctx)
	require.EqualError(t, err, fmt.Sprintf("audit: load audit key %s: permissions 0640 let group or others read the audit key; run: chmod 600 %s", src.Path, src.Path))

	env := func(v string) audit.EnvKeySource {
		return audit.EnvKeySource{Name: "AK", Getenv: func(string) string { return v }}
	}
	_, err = env("").Load(ctx)
	require.ErrorIs(t, err, audit.ErrNoKey)
	_, err = env("").Create(ctx)
	require.ErrorContains(t, err, "openssl rand -base64 32")
	text, err := os.ReadFile(src.Path)
	require.NoError(t, err)
	fromText, err := env(string(text)).Load(ctx)
	require.NoError(t, err)
	require.Equal(t, k.ID(), fromText.ID(), "the file's text in the variable")
	secret := strings.TrimSpace(strings.SplitN(string(text), "\n", 2)[1])
	fromB64, err := env(secret).Load(ctx)
	require.NoError(t, err)
	require.Equal(t, k.ID(), fromB64.ID(), "the secret alone in base64")
}

func TestParseKeyRefusesWhatIsNotAnAuditKey(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"kek-file-not-audit-key.txt", "short-key.txt", "not-base64.txt", "trailing-line.txt"} {
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", name))
			require.NoError(t, err)
			_, err = audit.ParseKey(data)
			require.Error(t, err)
			require.NotContains(t, err.Error(), strings.TrimSpace(string(data)), "an error never quotes the key")
		})
	}
	_, err := audit.ParseKey(nil)
	require.Error(t, err)
}

func TestParseCheckpointNamesTheField(t *testing.T) {
	t.Parallel()
	good, err := os.ReadFile(filepath.Join("testdata", "checkpoint.json"))
	require.NoError(t, err)
	cp, err := audit.ParseCheckpoint(good)
	require.NoError(t, err)
	mutate := func(f func(m map[string]any)) []byte {
		var m map[string]any
		require.NoError(t, json.Unmarshal(good, &m))
		f(m)
		b, err := json.Marshal(m)
		require.NoError(t, err)
		return b
	}
	cases := []struct {
		name  string
		data  []byte
		code  string
		field string
	}{
		{"unknown field", mutate(func(m map[string]any) { m["extra"] = 1 }), audit.CodeInvalidCheckpoint, ""},
		{"seq zero", mutate(func(m map[string]any) { m["seq"] = 0 }), audit.CodeInvalidCheckpoint, "seq"},
		{"short head hash", mutate(func(m map[string]any) { m["head_hash"] = "abc" }), audit.CodeInvalidCheckpoint, "head_hash"},
		{"keyed_from after seq", mutate(func(m map[string]any) { m["keyed_from"] = cp.Seq + 1 }), audit.CodeInvalidCheckpoint, "keyed_from"},
		{"nanosecond time", mutate(func(m map[string]any) { m["time"] = "2026-03-01T10:00:00.000000001Z" }), audit.CodeInvalidCheckpoint, "time"},
		{"upper-case key id", mutate(func(m map[string]any) { m["key_id"] = strings.ToUpper(cp.KeyID) }), audit.CodeInvalidCheckpoint, "key_id"},
		{"public key of another id", mutate(func(m map[string]any) { m["key_id"] = strings.Repeat("0", 16) }), audit.CodeInvalidCheckpoint, "public_key"},
		{"short signature", mutate(func(m map[string]any) { m["signature"] = "AAAA" }), audit.CodeInvalidCheckpoint, "signature"},
		{"two objects", append(append([]byte{}, good...), good...), audit.CodeInvalidCheckpoint, ""},
		{"too large", bytes.Repeat([]byte(" "), audit.MaxCheckpointSize+1), "checkpoint_too_large", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := audit.ParseCheckpoint(tc.data)
			e, ok := errs.As(err)
			require.True(t, ok, "%v", err)
			require.Equal(t, tc.code, e.Code, e.Public())
			require.Equal(t, tc.field, e.Field, e.Public())
			require.NotEmpty(t, e.Hint)
		})
	}
	_, err = audit.ParseCheckpoint(bytes.Repeat([]byte(" "), audit.MaxCheckpointSize+1))
	require.ErrorContains(t, err, fmt.Sprintf("%d-byte limit", audit.MaxCheckpointSize))
	require.True(t, errors.Is(err, &errs.Error{Kind: errs.TooLarge}))
}

// TestOpenRefusesADatabaseBehindTheDataDirsCheckpoint: a data dir whose
// checkpoint covers more records than the database holds (the database was
// replaced by an empty one) is not keyed over silently.
func TestOpenRefusesADatabaseBehindTheDataDirsCheckpoint(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first := storetest.Open(t, store.SQLite)
	log := openKeyed(t, first, dir, nil)
	appendN(t, log, first, 9)
	_, err := log.Checkpoint(context.Background(), nil)
	require.NoError(t, err)
	_, err = tryOpen(storetest.Open(t, store.SQLite), dir, nil)
	require.ErrorContains(t, err, "audit chain broken at record 2: records 2 to 10 were removed")
	require.ErrorContains(t, err, "move that file aside and start again")
}
