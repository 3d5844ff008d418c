package truststore_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
	"github.com/trustflow/trustflow/internal/truststore"
)

// reportOpsPerSecond adds throughput beside the ns/op the testing package
// reports.
func reportOpsPerSecond(b *testing.B) {
	b.Helper()
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(b.N)/s, "ops/s")
	}
}

// BenchmarkActiveLookup measures what a TLS handshake pays to get its client
// certificate: a cached hit; a lookup that re-reads the identity's revision
// every time (RevalidateAfter of 1ns, the worst case); and, as the floor,
// a map lookup under an RWMutex.
func BenchmarkActiveLookup(b *testing.B) {
	ctx := context.Background()
	for _, d := range storetest.Dialects(b) {
		b.Run(string(d), func(b *testing.B) {
			e := newEnv(b, storetest.Open(b, d))
			e.importLeaf(b, "payments", e.client(b, "payments"))
			b.Run("cached", func(b *testing.B) {
				// The fake clock stands still: the entry never needs revalidating.
				lookup(b, ctx, e.svc)
			})
			b.Run("revalidate-every-call", func(b *testing.B) {
				svc := e.service(b, e.svc.Keyring(), func(c *truststore.Config) {
					c.Clock = clock.Real{}
					c.RevalidateAfter = time.Nanosecond
				})
				lookup(b, ctx, svc)
			})
		})
	}
	b.Run("baseline-rwmutex-map", func(b *testing.B) {
		var mu sync.RWMutex
		m := map[string]*truststore.ActiveCertificate{"payments": {}}
		for i := range 100 {
			m[fmt.Sprintf("identity-%d", i)] = &truststore.ActiveCertificate{}
		}
		var hit *truststore.ActiveCertificate
		for b.Loop() {
			mu.RLock()
			hit = m["payments"]
			mu.RUnlock()
		}
		require.NotNil(b, hit)
		reportOpsPerSecond(b)
	})
}

func lookup(b *testing.B, ctx context.Context, svc *truststore.Service) {
	b.Helper()
	_, err := svc.Active(ctx, "payments")
	require.NoError(b, err)
	for b.Loop() {
		ac, err := svc.Active(ctx, "payments")
		if err != nil || ac.Certificate == nil {
			b.Fatalf("active: %v", err)
		}
	}
	reportOpsPerSecond(b)
}

// BenchmarkImport measures importing an ECDSA P-256 identity from PEM (parse,
// checks, seal, two inserts and an audit record in one transaction), against
// the floor of one bare token insert in a transaction.
func BenchmarkImport(b *testing.B) {
	ctx := context.Background()
	for _, d := range storetest.Dialects(b) {
		b.Run(string(d), func(b *testing.B) {
			st := storetest.Open(b, d)
			e := newEnv(b, st)
			leaf := e.client(b, "payments")
			cert, key := leaf.CertPEM(), leaf.KeyPEM()
			i := 0 // names stay unique however often the testing package runs a sub-benchmark
			b.Run("identity-pem", func(b *testing.B) {
				for b.Loop() {
					_, err := e.svc.Import(ctx, alice, truststore.ImportRequest{Name: fmt.Sprintf("bench-%d", i), Material: truststore.Material{Cert: cert, Key: key}})
					if err != nil {
						b.Fatal(err)
					}
					i++
				}
				reportOpsPerSecond(b)
			})
			b.Run("baseline-token-insert", func(b *testing.B) {
				for b.Loop() {
					err := st.InTx(ctx, func(tx *store.Tx) error {
						return tx.InsertToken(ctx, store.Token{ID: fmt.Sprintf("tok_bench_%d", i), Name: "bench", Role: "viewer",
							SecretHash: fmt.Sprintf("bench-hash-%d", i), CreatedAt: t0, CreatedBy: "bench"})
					})
					if err != nil {
						b.Fatal(err)
					}
					i++
				}
				reportOpsPerSecond(b)
			})
		})
	}
}
