package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Defaults of the run limits; each is also the cap a flow's limits block
// may only lower.
const (
	DefaultMaxSubflowDepth = 8
	DefaultMaxForeachItems = 10_000
	DefaultMaxStepOutput   = 1 << 20
	DefaultMaxRunState     = 16 << 20
	DefaultMaxRunDuration  = 30 * 24 * time.Hour
	DefaultMaxRunsInFlight = 100
)

// RunLimits are the server's limits on runs (serve --max-*): the limits of
// every flow that sets none, and the caps a flow's limits block may only
// lower.
type RunLimits struct {
	// MaxSubflowDepth is how many levels of sub-flow runs may nest below a
	// run, counted across flows. Defaults to 8.
	MaxSubflowDepth int
	// MaxForeachItems is the most items one foreach step takes. Defaults
	// to 10,000.
	MaxForeachItems int
	// MaxStepOutput bounds a step's stored result and a run's output, in
	// bytes of JSON. Defaults to 1 MiB.
	MaxStepOutput int64
	// MaxRunState bounds what one run's checkpoints hold, in bytes.
	// Defaults to 16 MiB.
	MaxRunState int64
	// MaxRunDuration bounds a run from start to end, sleeps included.
	// Defaults to 30 days.
	MaxRunDuration time.Duration
	// MaxRunsInFlight is the most runs of one flow queued, running or
	// sleeping at once. Defaults to 100.
	MaxRunsInFlight int
}

func (l RunLimits) withDefaults() RunLimits {
	if l.MaxSubflowDepth == 0 {
		l.MaxSubflowDepth = DefaultMaxSubflowDepth
	}
	if l.MaxForeachItems == 0 {
		l.MaxForeachItems = DefaultMaxForeachItems
	}
	if l.MaxStepOutput == 0 {
		l.MaxStepOutput = DefaultMaxStepOutput
	}
	if l.MaxRunState == 0 {
		l.MaxRunState = DefaultMaxRunState
	}
	if l.MaxRunDuration == 0 {
		l.MaxRunDuration = DefaultMaxRunDuration
	}
	if l.MaxRunsInFlight == 0 {
		l.MaxRunsInFlight = DefaultMaxRunsInFlight
	}
	return l
}

// Ranges of the run limits.
const (
	maxSubflowDepth = 64
	maxForeachItems = 1_000_000
	minStepOutput   = 1 << 10
	maxStepOutput   = 64 << 20
	maxRunState     = 4 << 30
	minRunDuration  = time.Minute
	maxRunDuration  = 366 * 24 * time.Hour
	maxRunsInFlight = 1_000_000
)

func (l RunLimits) validate() []error {
	var errs []error
	if l.MaxSubflowDepth < 1 || l.MaxSubflowDepth > maxSubflowDepth {
		errs = append(errs, fmt.Errorf("--max-subflow-depth %d: want 1 to %d (e.g. %d)", l.MaxSubflowDepth, maxSubflowDepth, DefaultMaxSubflowDepth))
	}
	if l.MaxForeachItems < 1 || l.MaxForeachItems > maxForeachItems {
		errs = append(errs, fmt.Errorf("--max-foreach-items %d: want 1 to %d (e.g. %d)", l.MaxForeachItems, maxForeachItems, DefaultMaxForeachItems))
	}
	if l.MaxStepOutput < minStepOutput || l.MaxStepOutput > maxStepOutput {
		errs = append(errs, fmt.Errorf("--max-step-output %s: want 1KiB to 64MiB (e.g. 1MiB)", FormatSize(l.MaxStepOutput)))
	}
	if l.MaxRunState < l.MaxStepOutput || l.MaxRunState > maxRunState {
		errs = append(errs, fmt.Errorf("--max-run-state %s: want --max-step-output (%s) to 4GiB (e.g. 16MiB)", FormatSize(l.MaxRunState), FormatSize(l.MaxStepOutput)))
	}
	if l.MaxRunDuration < minRunDuration || l.MaxRunDuration > maxRunDuration {
		errs = append(errs, fmt.Errorf("--max-run-duration %s: want 1m to 366d (e.g. 30d)", FormatDuration(l.MaxRunDuration)))
	}
	if l.MaxRunsInFlight < 1 || l.MaxRunsInFlight > maxRunsInFlight {
		errs = append(errs, fmt.Errorf("--max-runs-in-flight %d: want 1 to %d (e.g. %d)", l.MaxRunsInFlight, maxRunsInFlight, DefaultMaxRunsInFlight))
	}
	return errs
}

// sizeUnits are the suffixes ParseSize takes, longest first.
var sizeUnits = []struct {
	suffix string
	factor int64
}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}

// ParseSize reads a size flag: a whole number of bytes, optionally with a
// unit: B, KiB, MiB, GiB (1MiB, 512KiB, 1048576).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	factor := int64(1)
	for _, u := range sizeUnits {
		if rest, ok := strings.CutSuffix(t, u.suffix); ok {
			t, factor = strings.TrimSpace(rest), u.factor
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/factor {
		return 0, fmt.Errorf("%q is not a size: write a whole number of bytes, or one with a unit: 512KiB, 1MiB, 1GiB", s)
	}
	return n * factor, nil
}

// FormatSize writes a size in the largest unit that divides it.
func FormatSize(n int64) string {
	for _, u := range sizeUnits {
		if n != 0 && n%u.factor == 0 {
			return strconv.FormatInt(n/u.factor, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}

// ParseDuration reads a duration flag: Go's syntax (90m, 12h) with an
// optional leading day count (30d, 1d12h).
func ParseDuration(s string) (time.Duration, error) {
	bad := fmt.Errorf("%q is not a duration: write e.g. 30d, 12h or 1d12h", s)
	t := strings.TrimSpace(s)
	var days int64
	if i := strings.Index(t, "d"); i > 0 {
		n, err := strconv.ParseInt(t[:i], 10, 64)
		if err != nil || n < 0 || n > math.MaxInt64/int64(24*time.Hour) {
			return 0, bad
		}
		days, t = n, t[i+1:]
	}
	d := time.Duration(days) * 24 * time.Hour
	if t == "" {
		if days == 0 {
			return 0, bad
		}
		return d, nil
	}
	rest, err := time.ParseDuration(t)
	if err != nil || rest < 0 || d > math.MaxInt64-rest {
		return 0, bad
	}
	return d + rest, nil
}

// FormatDuration writes a duration in whole days when it is whole days.
func FormatDuration(d time.Duration) string {
	if d >= 24*time.Hour && d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	return d.String()
}
