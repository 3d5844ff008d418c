package flow

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseLimitsBlock(t *testing.T) {
	t.Parallel()
	d, err := Parse("limits.yaml", readFixture(t, "valid/limits.yaml"))
	require.NoError(t, err)
	require.Equal(t, int64(2), d.Limits.SubflowDepth)
	require.Equal(t, int64(500), d.Limits.ForeachItems)
	require.Equal(t, int64(262144), d.Limits.StepOutputBytes)
	require.Equal(t, int64(4194304), d.Limits.RunStateBytes)
	require.Equal(t, int64(3), d.Limits.RunsInFlight)
	for _, key := range LimitKeys {
		require.NotZero(t, d.Limits.Get(key), key)
	}
	line, col := d.Limits.Pos(LimitForeachItems)
	require.Equal(t, [2]int{10, 18}, [2]int{line, col})
	require.Equal(t, "@every 90s", d.Trigger.Cron)

	// Without the block every limit is the server's.
	plain := mustParse(t, evalHead+"${1}\n")
	require.Equal(t, Limits{}, plain.Limits)
	line, col = plain.Limits.Pos(LimitRunsInFlight)
	require.Zero(t, line+col)
}

func TestScheduleIntervals(t *testing.T) {
	t.Parallel()
	doc := func(cron string) string {
		return "apiVersion: trustflow/v1\nkind: Flow\nname: t\ntrigger:\n  schedule: {cron: \"" + cron + "\"}\nsteps: [{id: a, set: {}}]\n"
	}
	for _, ok := range []string{"@every 1s", "@every 90s", "@every 1h30m", "*/5 * * * *", "@hourly"} {
		_, err := Parse("s.yaml", []byte(doc(ok)))
		require.NoError(t, err, ok)
	}
	for _, bad := range []string{"@every 1ns", "@every 999ms", "@every 1.5s"} {
		got := problemsOf(t, "s.yaml", []byte(doc(bad)))
		require.Len(t, got, 1, bad)
		require.Equal(t, "trigger.schedule.cron", got[0].Path)
		require.Contains(t, got[0].Message, "at most once a second", bad)
		require.Contains(t, got[0].Hint, "@every 30s")
	}
}

// callResult is what a call step's result looks like to expressions:
// status, headers, a parsed body and the handshake evidence, five levels
// deep.
func callResult(i int) map[string]any {
	return map[string]any{
		"status":      int64(200),
		"headers":     map[string]any{"content-type": "application/json"},
		"body":        map[string]any{"key": fmt.Sprintf("run/each[%d].c", i), "n": int64(1), "tags": []any{"a", "b"}},
		"duration_ms": int64(3),
		"tls": map[string]any{
			"version": "TLS 1.3", "cipher_suite": "TLS_AES_128_GCM_SHA256", "server_requested_client_cert": true,
			"server_chain":       []any{map[string]any{"subject": "CN=127.0.0.1", "fingerprint_sha256": strings.Repeat("ab", 32)}},
			"acceptable_cas":     []any{"CN=demo"},
			"presented_identity": map[string]any{"name": "svc", "version": int64(1), "serial": "01"},
		},
	}
}

// foreachOf is a foreach step's result of n items, each holding call c.
func foreachOf(n int) map[string]any {
	results := make([]any, n)
	for i := range results {
		results[i] = map[string]any{"c": callResult(i)}
	}
	return map[string]any{"results": results}
}

// Reading a whole foreach's results (items holding call results, nested
// deeper than CEL's size calculator followed, or more than 10,000 values)
// used to run over the memory limit even with one item: the memory limit
// counted what an expression read. It counts what it builds.
func TestReadingForeachResultsWorksUpToTheItemLimit(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 100, 10_000} {
		s := evalScope()
		s.Steps["lookup"] = foreachOf(n)
		for src, want := range map[string]any{
			"${size(steps.lookup.results)}":                                        int64(n),
			"${steps.lookup.results[size(steps.lookup.results) - 1].c.status}":     int64(200),
			"${steps.lookup.results.all(r, r.c.tls.server_requested_client_cert)}": true,
			"${size(steps.lookup.results.map(r, r.c.body.key))}":                   int64(n),
			"${size(steps.lookup.results.filter(r, r.c.status == 200))}":           int64(n),
			"${steps.lookup.results.map(r, r.c)[0].tls.server_chain[0].subject}":   "CN=127.0.0.1",
			"${size(steps.lookup.results + [1])}":                                  int64(n + 1),
			"${has(steps.lookup.results[0].c.tls.presented_identity.serial)}":      true,
			"${steps.lookup.results[0] == steps.lookup.results[0]}":                true,
			"${steps.lookup.results[0].c.body.tags == ['a', 'b']}":                 true,
			"${'b' in steps.lookup.results[0].c.body.tags}":                        true,
			"${size(steps.lookup.results[0].c.tls)}":                               int64(6),
		} {
			got, err := evalExpr(t, src, s)
			require.NoError(t, err, "%d items: %s", n, src)
			require.Equal(t, want, got, "%d items: %s", n, src)
		}
		// The whole list comes back as data while it fits the result limit.
		if n <= 100 {
			got, err := evalExpr(t, "${steps.lookup.results}", s)
			require.NoError(t, err)
			require.Equal(t, s.Steps["lookup"].(map[string]any)["results"], got)
		}
	}
	// The loop variable and a typed input are read values too.
	s := evalScope()
	s.Input["obj"] = foreachOf(3)
	got, err := evalExpr(t, "${input.obj.results[2].c.tls.server_chain[0].subject}", s)
	require.NoError(t, err)
	require.Equal(t, "CN=127.0.0.1", got)
}

// What an expression builds is still bounded: by the cost and memory
// limits, and by MaxResultBytes for its result and for the strings
// replace() and join() would build, which are refused before they are
// allocated.
func TestExpressionResultLimit(t *testing.T) {
	t.Parallel()
	s := evalScope()
	s.Input["name"] = strings.Repeat("a", 3000)
	big := strings.Repeat("x", 1<<20)
	s.Steps["lookup"] = map[string]any{"s": big}

	for src, wantMsg := range map[string]string{
		// 3,000 × 3,000 bytes: refused before strings.ReplaceAll runs.
		"${size(input.name.replace('a', input.name))}":             "replace would build a string of 9000000 bytes (limit expression_result: 4194304)",
		"${size(input.name.replace('a', input.name, 2000))}":       "replace would build a string of 6001000 bytes (limit expression_result: 4194304)",
		"${size([1, 2, 3, 4, 5].map(x, steps.lookup.s).join(''))}": "join would build a string of 5242880 bytes (limit expression_result: 4194304)",
		// Five references to one 1 MiB value cost nothing to build, and
		// five copies to convert.
		"${[steps.lookup, steps.lookup, steps.lookup, steps.lookup, steps.lookup]}":                    "the result is larger than 4194304 bytes (limit expression_result: 4194304)",
		"${size(json.encode([steps.lookup, steps.lookup, steps.lookup, steps.lookup, steps.lookup]))}": "json.encode: the result is larger than 4194304 bytes (limit expression_result: 4194304)",
	} {
		start := time.Now()
		_, err := evalExpr(t, src, s)
		require.ErrorIs(t, err, ErrResultLimit, src)
		var eerr *EvalError
		require.ErrorAs(t, err, &eerr)
		require.Equal(t, wantMsg, eerr.Message, src)
		require.Less(t, time.Since(start), 5*time.Second, src)
	}
	// Under the limit the same functions work.
	got, err := evalExpr(t, "${size(input.name.replace('a', 'bb'))}", s)
	require.NoError(t, err)
	require.Equal(t, int64(6000), got)
	got, err = evalExpr(t, "${size(input.name.replace('a', input.name, 100))}", s)
	require.NoError(t, err)
	require.Equal(t, int64(2900+100*3000), got)
	got, err = evalExpr(t, "${['a', 'b', 'c'].join('-')}", s)
	require.NoError(t, err)
	require.Equal(t, "a-b-c", got)
	got, err = evalExpr(t, "${'hello hello'.replace('he', 'we', 1)}", s)
	require.NoError(t, err)
	require.Equal(t, "wello hello", got)
	got, err = evalExpr(t, "${size(steps.lookup)}", s)
	require.NoError(t, err)
	require.Equal(t, int64(1), got)

	// Building by repetition runs into the cost limit first.
	_, err = evalExpr(t, "${size([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11].map(x, steps.lookup.s + 'x'))}", s)
	require.ErrorIs(t, err, ErrCostLimit)

	// A memory-limit error is also a cost-limit error, as before.
	doubling := "${[[1]]" + strings.Repeat(".map(x, [x, x])", 40) + "}"
	_, err = evalExpr(t, doubling, s)
	require.ErrorIs(t, err, ErrMemoryLimit)
	require.ErrorIs(t, err, ErrCostLimit)
}

// Reading one item of a large list costs what reading it from a small one
// does: the values an expression reads are not sized (sizing them took
// time in proportion to the whole list, at every read).
func TestReadingIsNotProportionalToTheDataRead(t *testing.T) {
	t.Parallel()
	x := mustParse(t, evalHead+"${size(steps.lookup.results)}\n").Step("a").Set["x"]
	timeReads := func(n int) time.Duration {
		s := evalScope()
		s.Steps["lookup"] = foreachOf(n)
		start := time.Now()
		for range 50 {
			got, err := x.Eval(context.Background(), s)
			require.NoError(t, err)
			require.Equal(t, int64(n), got)
		}
		return time.Since(start)
	}
	// The best of several rounds of each, so that a shared machine's
	// scheduling and GC do not decide; sizing every read made the ratio
	// about 20,000, so 100 still tells the two apart.
	best := func(n int) time.Duration {
		b := timeReads(n)
		for range 4 {
			b = min(b, timeReads(n))
		}
		return b
	}
	timeReads(1) // warm up
	small, large := best(1), best(10_000)
	require.Less(t, float64(large), 100*float64(small), "reading from 10,000 items took %s, from 1 item %s", large, small)
}
