package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

// BenchmarkGroupCommit appends audit records (head, insert, head update,
// one transaction each) from conc goroutines through InTx and through
// InTxGrouped, alternating rounds of 200 in the same run so that load from
// elsewhere falls on both alike. grouped/intx is the throughput ratio.
func BenchmarkGroupCommit(b *testing.B) {
	for _, d := range storetest.Dialects(b) {
		for _, conc := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/conc=%d", d, conc), func(b *testing.B) {
				ctx := context.Background()
				st := storetest.Open(b, d)
				now := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
				appendOne := func(tx *store.Tx) error {
					head, err := tx.LockAuditHead(ctx)
					if err != nil {
						return err
					}
					return tx.AppendAudit(ctx, store.AuditRecord{Seq: head.Seq + 1, Time: now, ActorID: "tok_a", ActorName: "alice", ActorRole: "admin",
						Action: "connector.call", Target: "connector/bench", Outcome: "success", Details: `{"status":200}`, PrevHash: head.Hash, Hash: fmt.Sprint("h", head.Seq+1)})
				}
				round := func(k int, run func(context.Context, func(*store.Tx) error) error) time.Duration {
					var wg sync.WaitGroup
					start := time.Now()
					for g := range conc {
						wg.Add(1)
						go func() {
							defer wg.Done()
							for i := g; i < k; i += conc {
								if err := run(ctx, appendOne); err != nil {
									b.Error(err)
									return
								}
							}
						}()
					}
					wg.Wait()
					return time.Since(start)
				}
				const size = 200
				var plain, grouped time.Duration
				b.ResetTimer()
				for done := 0; done < b.N; done += size {
					k := min(size, b.N-done)
					plain += round(k, st.InTx)
					grouped += round(k, st.InTxGrouped)
				}
				b.StopTimer()
				b.ReportMetric(float64(plain.Nanoseconds())/float64(b.N), "intx-ns/op")
				b.ReportMetric(float64(grouped.Nanoseconds())/float64(b.N), "grouped-ns/op")
				b.ReportMetric(float64(plain)/float64(grouped), "grouped/intx")
			})
		}
	}
}
