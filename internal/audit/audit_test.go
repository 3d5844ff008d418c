package audit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

var alice = audit.Actor{ID: "tok_a", Name: "alice", Role: "admin"}

func appendN(t testing.TB, log *audit.Log, st *store.Store, n int) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < n; i++ {
		err := st.InTx(ctx, func(tx *store.Tx) error {
			_, err := log.Append(ctx, tx, audit.Entry{Actor: alice, Action: "token.create", Target: fmt.Sprintf("token/%d", i),
				Details: map[string]any{"i": i, "role": "operator"}})
			return err
		})
		require.NoError(t, err)
	}
}

func TestAppendChainsRecords(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		fc := clock.NewFake(time.Date(2026, 3, 1, 10, 0, 0, 987654321, time.UTC))
		log := audit.New(st, fc)
		appendN(t, log, st, 3)
		recs, err := log.List(ctx, audit.Filter{Ascending: true})
		require.NoError(t, err)
		require.Len(t, recs, 3)
		require.Equal(t, "", recs[0].PrevHash)
		require.Equal(t, recs[0].Hash, recs[1].PrevHash)
		require.Equal(t, recs[1].Hash, recs[2].PrevHash)
		require.Equal(t, time.Date(2026, 3, 1, 10, 0, 0, 987654000, time.UTC), recs[0].Time)
		require.Equal(t, alice, recs[2].Actor)
		require.Equal(t, "success", recs[2].Outcome)
		require.JSONEq(t, `{"i":2,"role":"operator"}`, string(recs[2].Details))
		for _, r := range recs {
			h, err := audit.Hash(r)
			require.NoError(t, err)
			require.Equal(t, h, r.Hash)
		}
		v, err := log.Verify(ctx)
		require.NoError(t, err)
		require.Equal(t, audit.Verification{OK: true, Records: 3, HeadSeq: 3, HeadHash: recs[2].Hash}, v)
	})
}

func TestAppendRollsBackWithTheChange(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		log := audit.New(st, nil)
		err := st.InTx(ctx, func(tx *store.Tx) error {
			if _, err := log.Append(ctx, tx, audit.Entry{Actor: alice, Action: "x.y"}); err != nil {
				return err
			}
			return fmt.Errorf("the change failed")
		})
		require.Error(t, err)
		recs, err := log.List(ctx, audit.Filter{})
		require.NoError(t, err)
		require.Empty(t, recs)
		v, err := log.Verify(ctx)
		require.NoError(t, err)
		require.True(t, v.OK)
	})
}

// TestVerifyDetectsTampering edits, deletes and swaps records behind the
// log's back, as someone with database access would.
func TestVerifyDetectsTampering(t *testing.T) {
	cases := []struct {
		name      string
		tamper    []string
		wantBad   int64
		wantWords string
	}{
		{"edited details", []string{`UPDATE audit_records SET details = '{"i":2,"role":"admin"}' WHERE seq = 3`}, 3, "altered"},
		{"edited actor", []string{`UPDATE audit_records SET actor_name = 'mallory' WHERE seq = 2`}, 2, "altered"},
		{"edited outcome", []string{`UPDATE audit_records SET outcome = 'failure' WHERE seq = 4`}, 4, "altered"},
		{"edited time", []string{`UPDATE audit_records SET time = time + 1 WHERE seq = 1`}, 1, "altered"},
		{"deleted middle", []string{`DELETE FROM audit_records WHERE seq = 3`}, 3, "missing"},
		{"deleted last", []string{`DELETE FROM audit_records WHERE seq = 5`}, 5, "removed"},
		{"deleted last and head rewound", []string{`DELETE FROM audit_records WHERE seq = 5`, `UPDATE audit_head SET seq = 4`}, 5, "removed"},
		{"swapped two records", []string{
			`UPDATE audit_records SET seq = 100 WHERE seq = 2`,
			`UPDATE audit_records SET seq = 2 WHERE seq = 3`,
			`UPDATE audit_records SET seq = 3 WHERE seq = 100`,
		}, 2, "does not follow"},
		{"rehashed edit", []string{
			// An edit whose own hash is recomputed still breaks the next link.
			`UPDATE audit_records SET target = 'token/x', hash = 'forged' WHERE seq = 2`,
		}, 2, "altered"},
	}
	for _, d := range storetest.Dialects(t) {
		for _, tc := range cases {
			t.Run(string(d)+"/"+tc.name, func(t *testing.T) {
				ctx := context.Background()
				st := storetest.Open(t, d)
				log := audit.New(st, nil)
				appendN(t, log, st, 5)
				for _, q := range tc.tamper {
					_, err := st.DB().ExecContext(ctx, q)
					require.NoError(t, err, q)
				}
				v, err := log.Verify(ctx)
				require.NoError(t, err)
				require.False(t, v.OK)
				require.Equal(t, tc.wantBad, v.FirstBadSeq, v.Problem)
				require.Contains(t, v.Problem, tc.wantWords)
			})
		}
	}
}

func TestVerifyDetectsForgedLink(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		log := audit.New(st, nil)
		appendN(t, log, st, 4)
		// Rewrite record 2 consistently (new hash) without fixing record 3.
		recs, err := log.List(ctx, audit.Filter{Ascending: true})
		require.NoError(t, err)
		r := recs[1]
		r.Target = "token/forged"
		h, err := audit.Hash(r)
		require.NoError(t, err)
		_, err = st.DB().ExecContext(ctx, `UPDATE audit_records SET target = $1, hash = $2 WHERE seq = 2`, r.Target, h)
		require.NoError(t, err)
		v, err := log.Verify(ctx)
		require.NoError(t, err)
		require.False(t, v.OK)
		require.Equal(t, int64(3), v.FirstBadSeq)
		require.Contains(t, v.Problem, "does not follow")
	})
}

func TestConcurrentWritersKeepChainLinear(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		log := audit.New(st, nil)
		const writers, each = 8, 25
		var wg sync.WaitGroup
		errs := make(chan error, writers*each)
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < each; i++ {
					errs <- log.Record(ctx, audit.Entry{Actor: alice, Action: "test.write", Target: fmt.Sprintf("w%d/%d", w, i)})
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		v, err := log.Verify(ctx)
		require.NoError(t, err)
		require.True(t, v.OK, v.Problem)
		require.Equal(t, int64(writers*each), v.Records)
	})
}

func TestExportIsOldestFirstJSONLines(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		log := audit.New(st, nil)
		appendN(t, log, st, 3)
		var buf bytes.Buffer
		n, err := log.Export(ctx, &buf, audit.Filter{})
		require.NoError(t, err)
		require.Equal(t, 3, n)
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		require.Len(t, lines, 3)
		for i, line := range lines {
			var r audit.Record
			require.NoError(t, json.Unmarshal([]byte(line), &r))
			require.Equal(t, int64(i+1), r.Seq)
			h, err := audit.Hash(r)
			require.NoError(t, err)
			require.Equal(t, r.Hash, h, "an exported record can be verified on its own")
		}
	})
}

// BenchmarkAppend measures durable audit appends (one transaction each):
// keyed (HMAC-SHA256, as the server appends), unkeyed (SHA-256, as before
// the audit key) and, as the baseline in the same run, a bare single-row
// insert transaction.
func BenchmarkAppend(b *testing.B) {
	for _, d := range storetest.Dialects(b) {
		b.Run(string(d)+"/audit-append", func(b *testing.B) {
			st := storetest.Open(b, d)
			log := openKeyed(b, st, b.TempDir(), nil)
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := log.Record(ctx, audit.Entry{Actor: alice, Action: "bench.append", Target: "x", Details: map[string]any{"i": i}}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
		b.Run(string(d)+"/unkeyed-append", func(b *testing.B) {
			st := storetest.Open(b, d)
			log := audit.New(st, nil)
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := log.Record(ctx, audit.Entry{Actor: alice, Action: "bench.append", Target: "x", Details: map[string]any{"i": i}}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
		// interleaved runs one keyed append, one unkeyed append and one bare
		// insert per iteration, so that load from elsewhere on the machine
		// falls on all three alike; keyed/unkeyed is the cost of the key.
		b.Run(string(d)+"/interleaved", func(b *testing.B) {
			keyedStore, unkeyedStore, bare := storetest.Open(b, d), storetest.Open(b, d), storetest.Open(b, d)
			keyed, unkeyed := openKeyed(b, keyedStore, b.TempDir(), nil), audit.New(unkeyedStore, nil)
			ctx := context.Background()
			var tk, tu, tb time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				e := audit.Entry{Actor: alice, Action: "bench.append", Target: "x", Details: map[string]any{"i": i}}
				t0 := time.Now()
				if err := keyed.Record(ctx, e); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if err := unkeyed.Record(ctx, e); err != nil {
					b.Fatal(err)
				}
				t2 := time.Now()
				err := bare.InTx(ctx, func(tx *store.Tx) error {
					_, err := tx.SQL().ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, 'bench', 0)", 1000+i)
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
				tk, tu, tb = tk+t1.Sub(t0), tu+t2.Sub(t1), tb+time.Since(t2)
			}
			b.ReportMetric(float64(tk.Nanoseconds())/float64(b.N), "keyed-ns/op")
			b.ReportMetric(float64(tu.Nanoseconds())/float64(b.N), "unkeyed-ns/op")
			b.ReportMetric(float64(tb.Nanoseconds())/float64(b.N), "insert-ns/op")
			b.ReportMetric(float64(tk)/float64(tu), "keyed/unkeyed")
			b.ReportMetric(float64(tk)/float64(tb), "keyed/insert")
		})
		b.Run(string(d)+"/baseline-insert", func(b *testing.B) {
			st := storetest.Open(b, d)
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				err := st.InTx(ctx, func(tx *store.Tx) error {
					_, err := tx.SQL().ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, 'bench', 0)", 1000+i)
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
