package cli

import (
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/config"
)

func TestLimitFlags(t *testing.T) {
	f := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	var l config.RunLimits
	addLimitFlags(f, &l)
	require.Equal(t, config.DefaultMaxSubflowDepth, l.MaxSubflowDepth)
	require.Equal(t, "1MiB", f.Lookup("max-step-output").DefValue)
	require.Equal(t, "30d", f.Lookup("max-run-duration").DefValue)

	require.NoError(t, f.Parse([]string{"--max-subflow-depth", "4", "--max-foreach-items", "500", "--max-step-output", "256KiB",
		"--max-run-state", "4MiB", "--max-run-duration", "7d12h", "--max-runs-in-flight", "10"}))
	require.Equal(t, config.RunLimits{MaxSubflowDepth: 4, MaxForeachItems: 500, MaxStepOutput: 256 << 10, MaxRunState: 4 << 20,
		MaxRunDuration: 180 * time.Hour, MaxRunsInFlight: 10}, l)
	require.NoError(t, config.Config{RunLimits: l}.WithDefaults().Validate())

	f = pflag.NewFlagSet("serve", pflag.ContinueOnError)
	addLimitFlags(f, &l)
	err := f.Parse([]string{"--max-step-output", "1MB"})
	require.ErrorContains(t, err, `invalid argument "1MB" for "--max-step-output" flag: "1MB" is not a size: write a whole number of bytes, or one with a unit: 512KiB, 1MiB, 1GiB`)
	err = f.Parse([]string{"--max-run-duration", "forever"})
	require.ErrorContains(t, err, `"forever" is not a duration: write e.g. 30d, 12h or 1d12h`)
}
