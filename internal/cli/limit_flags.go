package cli

import (
	"time"

	"github.com/spf13/pflag"

	"github.com/trustflow/trustflow/internal/config"
)

// sizeFlag is a flag of bytes written with a unit (1MiB, 512KiB).
type sizeFlag struct{ v *int64 }

func (f sizeFlag) String() string {
	if f.v == nil || *f.v == 0 {
		return ""
	}
	return config.FormatSize(*f.v)
}

func (f sizeFlag) Set(s string) error {
	n, err := config.ParseSize(s)
	if err != nil {
		return err
	}
	*f.v = n
	return nil
}

func (sizeFlag) Type() string { return "size" }

// daysFlag is a duration flag that also takes days (30d, 1d12h).
type daysFlag struct{ v *time.Duration }

func (f daysFlag) String() string {
	if f.v == nil || *f.v == 0 {
		return ""
	}
	return config.FormatDuration(*f.v)
}

func (f daysFlag) Set(s string) error {
	d, err := config.ParseDuration(s)
	if err != nil {
		return err
	}
	*f.v = d
	return nil
}

func (daysFlag) Type() string { return "duration" }

// addLimitFlags adds serve's run limit flags: the server's limits, which a
// flow's limits block may only lower.
func addLimitFlags(f *pflag.FlagSet, l *config.RunLimits) {
	f.IntVar(&l.MaxSubflowDepth, "max-subflow-depth", config.DefaultMaxSubflowDepth, "most levels of sub-flow runs below a run, counted across flows")
	f.IntVar(&l.MaxForeachItems, "max-foreach-items", config.DefaultMaxForeachItems, "most items one foreach step takes")
	l.MaxStepOutput = config.DefaultMaxStepOutput
	f.Var(sizeFlag{&l.MaxStepOutput}, "max-step-output", "largest stored result of one step, and a run's output, as JSON (e.g. 1MiB)")
	l.MaxRunState = config.DefaultMaxRunState
	f.Var(sizeFlag{&l.MaxRunState}, "max-run-state", "most one run's checkpoints hold: results, states, errors (e.g. 16MiB)")
	l.MaxRunDuration = config.DefaultMaxRunDuration
	f.Var(daysFlag{&l.MaxRunDuration}, "max-run-duration", "longest a run may last, sleeps included (e.g. 30d)")
	f.IntVar(&l.MaxRunsInFlight, "max-runs-in-flight", config.DefaultMaxRunsInFlight, "most runs of one flow queued, running or sleeping; a start over it is refused (429)")
}
