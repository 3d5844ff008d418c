package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

// BenchmarkHotPath does the store's share of one run with one step: the run
// and its start record in one transaction, the step's checkpoint, the
// finish and its record in one transaction, and a read of the run.
func BenchmarkHotPath(b *testing.B) {
	for _, d := range storetest.Dialects(b) {
		b.Run(string(d), func(b *testing.B) {
			ctx := context.Background()
			st := storetest.Open(b, d)
			now := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
			if err := st.InTx(ctx, func(tx *store.Tx) error {
				return tx.InsertFlow(ctx, store.Flow{Name: "bench", CurrentVersion: 1, TriggerKind: "manual", CreatedAt: now, UpdatedAt: now})
			}); err != nil {
				b.Fatal(err)
			}
			audit := func(tx *store.Tx, action, target string) error {
				head, err := tx.LockAuditHead(ctx)
				if err != nil {
					return err
				}
				return tx.AppendAudit(ctx, store.AuditRecord{Seq: head.Seq + 1, Time: now, ActorID: "tok_a", ActorName: "alice", ActorRole: "admin",
					Action: action, Target: target, Outcome: "success", Details: `{"flow":"bench"}`, PrevHash: head.Hash, Hash: fmt.Sprintf("h%d", head.Seq+1)})
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				id := fmt.Sprintf("run_%d", i)
				r := store.Run{ID: id, FlowName: "bench", FlowVersion: 1, Status: "queued", TriggerKind: "manual", Input: "{}", InputSealed: []byte("sealed"), KEKID: "kek_a",
					CreatedBy: "tok_a", CreatedAt: now, UpdatedAt: now}
				if err := st.InTx(ctx, func(tx *store.Tx) error {
					if err := tx.InsertRun(ctx, r); err != nil {
						return err
					}
					return audit(tx, "run.start", id)
				}); err != nil {
					b.Fatal(err)
				}
				if err := st.InTx(ctx, func(tx *store.Tx) error {
					return tx.PutStep(ctx, store.Step{RunID: id, Path: "call", StepID: "call", Kind: "call", Status: "succeeded",
						Attempts: 1, State: "{}", Output: `{"status":200}`, Evidence: "{}", Error: "", StartedAt: &now, FinishedAt: &now, Seq: 1})
				}); err != nil {
					b.Fatal(err)
				}
				r.Status, r.Output, r.StartedAt, r.FinishedAt = "succeeded", `{"ok":true}`, &now, &now
				if err := st.InTx(ctx, func(tx *store.Tx) error {
					if err := tx.UpdateRun(ctx, r); err != nil {
						return err
					}
					return audit(tx, "run.succeeded", id)
				}); err != nil {
					b.Fatal(err)
				}
				if _, err := st.Run(ctx, id); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
