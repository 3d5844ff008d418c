package flow

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestStepDefaults(t *testing.T) {
	t.Parallel()
	d := mustParse(t, `apiVersion: trustflow/v1
kind: Flow
name: defaults
trigger: {manual: {}}
steps:
  - id: plain
    call: {connector: hr, path: /}
  - id: slow
    call: {connector: hr, method: PURGE, path: /cache, expect: [204, 404, 204]}
    timeout: 2m
    retry: {max_attempts: 10, initial_backoff: 2m}
  - id: loop
    foreach: [a, b]
    steps:
      - id: again
        flow: {name: other}
        retry: {max_attempts: 2, initial_backoff: 1s, max_backoff: 4s, multiplier: 3}
  - id: stop
    fail: done
`)
	plain := d.Step("plain")
	require.Equal(t, "GET", plain.Call.Method)
	require.Equal(t, DefaultCallTimeout, plain.AttemptTimeout())
	require.Equal(t, Retry{MaxAttempts: 1, InitialBackoff: time.Second, MaxBackoff: time.Minute, Multiplier: 2}, plain.Retry)
	require.True(t, plain.Call.Accepts(200))
	require.True(t, plain.Call.Accepts(299))
	require.False(t, plain.Call.Accepts(300))
	require.False(t, plain.Call.Accepts(199))

	slow := d.Step("slow")
	require.Equal(t, "PURGE", slow.Call.Method)
	require.Equal(t, []int{204, 404}, slow.Call.Expect)
	require.True(t, slow.Call.Accepts(404))
	require.False(t, slow.Call.Accepts(200))
	require.Equal(t, 2*time.Minute, slow.AttemptTimeout())
	require.Equal(t, Retry{MaxAttempts: 10, InitialBackoff: 2 * time.Minute, MaxBackoff: 2 * time.Minute, Multiplier: 2}, slow.Retry)

	loop := d.Step("loop")
	require.Equal(t, DefaultLoopVariable, loop.As)
	require.Equal(t, 1, loop.Concurrency)
	require.Zero(t, loop.AttemptTimeout())

	again := d.Step("again")
	require.Equal(t, "other", again.SubFlow)
	require.Nil(t, again.SubInput)
	for n, want := range map[int]time.Duration{1: time.Second, 2: 3 * time.Second, 3: 4 * time.Second, 50: 4 * time.Second} {
		require.Equal(t, want, again.Retry.Backoff(n), "attempt %d", n)
	}

	msg, ok := d.Step("stop").FailMessage.Literal()
	require.True(t, ok)
	require.Equal(t, "done", msg)
	require.Equal(t, []string{"hr"}, d.Connectors())
	require.Equal(t, []string{"other"}, d.SubFlows())
}

func TestParseDurations(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{
		"300ms": 300 * time.Millisecond, "30s": 30 * time.Second, "1h30m": 90 * time.Minute,
		"7d": 7 * 24 * time.Hour, "1d12h": 36 * time.Hour, "0s": 0,
	} {
		got, err := parseDuration(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "1x", "d", "1d-1h", "1dd", "99999999999d"} {
		_, err := parseDuration(in)
		require.Error(t, err, in)
	}
}
