// Package bench holds the in-repo engine benchmark (docs/performance.md): it
// starts an mTLS upstream, the reference proxy (bench/cmd/refproxy) and
// trustflow on loopback, drives each with the same closed-loop webhook load
// and reports throughput, latency, CPU and memory with the ratio to the
// reference. The harness is in its tests: TestWebhookBenchmarkShort checks
// that it works, BenchmarkWebhook runs the full measurement.
package bench
