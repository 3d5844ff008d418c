package config

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRunLimitDefaults(t *testing.T) {
	c := Config{}.WithDefaults()
	require.Equal(t, RunLimits{MaxSubflowDepth: 8, MaxForeachItems: 10_000, MaxStepOutput: 1 << 20, MaxRunState: 16 << 20,
		MaxRunDuration: 30 * 24 * time.Hour, MaxRunsInFlight: 100}, c.RunLimits)
	require.NoError(t, c.Validate())
}

func TestRunLimitsAreValidated(t *testing.T) {
	for _, tc := range []struct {
		limits RunLimits
		want   string
	}{
		{RunLimits{MaxSubflowDepth: -1}, "--max-subflow-depth -1: want 1 to 64 (e.g. 8)"},
		{RunLimits{MaxForeachItems: 2_000_000}, "--max-foreach-items 2000000: want 1 to 1000000 (e.g. 10000)"},
		{RunLimits{MaxStepOutput: 100}, "--max-step-output 100B: want 1KiB to 64MiB (e.g. 1MiB)"},
		{RunLimits{MaxStepOutput: 4 << 20, MaxRunState: 2 << 20}, "--max-run-state 2MiB: want --max-step-output (4MiB) to 4GiB (e.g. 16MiB)"},
		{RunLimits{MaxRunDuration: 292 * 365 * 24 * time.Hour}, "--max-run-duration 106580d: want 1m to 366d (e.g. 30d)"},
		{RunLimits{MaxRunsInFlight: -5}, "--max-runs-in-flight -5: want 1 to 1000000 (e.g. 100)"},
	} {
		c := Config{RunLimits: tc.limits}.WithDefaults()
		err := c.Validate()
		require.Error(t, err, tc.want)
		require.Contains(t, err.Error(), tc.want)
		require.NotContains(t, err.Error(), "\n", "only the bad flag is named: %v", err)
	}
}

func TestParseSizeAndDuration(t *testing.T) {
	for in, want := range map[string]int64{"1048576": 1 << 20, "1MiB": 1 << 20, "512KiB": 512 << 10, "2GiB": 2 << 30, "16 MiB": 16 << 20, "0": 0, "7B": 7} {
		got, err := ParseSize(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "1MB", "1.5MiB", "-1", "MiB", "9223372036854775807GiB"} {
		_, err := ParseSize(in)
		require.ErrorContains(t, err, "is not a size: write a whole number of bytes, or one with a unit", in)
	}
	require.Equal(t, "1MiB", FormatSize(1<<20))
	require.Equal(t, "1500B", FormatSize(1500))

	for in, want := range map[string]time.Duration{"30d": 30 * 24 * time.Hour, "1d12h": 36 * time.Hour, "90m": 90 * time.Minute, "12h": 12 * time.Hour} {
		got, err := ParseDuration(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "d", "0d", "1.5d", "-1d", "30", "1d-1h", "106751992d"} {
		_, err := ParseDuration(in)
		require.ErrorContains(t, err, "is not a duration", in)
	}
	require.Equal(t, "30d", FormatDuration(30*24*time.Hour))
	require.Equal(t, "36h0m0s", FormatDuration(36*time.Hour))
}
