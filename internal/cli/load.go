package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/spf13/cobra"
)

// LoadReport is what `trustflow load` measured.
type LoadReport struct {
	Flow        string  `json:"flow"`
	Runs        int     `json:"runs"`
	Concurrency int     `json:"concurrency"`
	Succeeded   int     `json:"succeeded"`
	Failed      int     `json:"failed"`
	Errors      int     `json:"errors"`
	Seconds     float64 `json:"seconds"`
	RunsPerSec  float64 `json:"runs_per_second"`
	P50MS       float64 `json:"p50_ms"`
	P90MS       float64 `json:"p90_ms"`
	P99MS       float64 `json:"p99_ms"`
	MaxMS       float64 `json:"max_ms"`
	FirstError  string  `json:"first_error,omitempty"`
}

func newLoadCmd(g *globals) *cobra.Command {
	var flow, input string
	var runs, concurrency int
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "load --flow NAME [--runs 100] [--concurrency 8] [--input JSON]",
		Short: "Measure a server: start runs of a flow, wait for each, and report runs/s and latency percentiles",
		Long: "Starts --runs runs of the flow through the API, --concurrency at a time, each waiting for its result " +
			"(POST /api/v1/flows/NAME/runs?wait=...), and reports throughput and the distribution of start-to-end latency. " +
			"Point it only at a server and endpoints you own.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if flow == "" {
				return flagError("--flow", "required", "name the flow to run, e.g. --flow quickstart-offboard")
			}
			if runs < 1 || runs > 100000 {
				return flagError("--runs", fmt.Sprintf("%d is out of range", runs), "use 1 to 100000")
			}
			if concurrency < 1 || concurrency > 256 {
				return flagError("--concurrency", fmt.Sprintf("%d is out of range", concurrency), "use 1 to 256")
			}
			in := map[string]any{}
			if input != "" {
				if err := json.Unmarshal([]byte(input), &in); err != nil {
					return flagError("--input", "not a JSON object: "+err.Error(), `e.g. --input '{"user_id":"42"}'`)
				}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx := contextOf(cmd)
			rep := LoadReport{Flow: flow, Runs: runs, Concurrency: concurrency}
			lat := make([]time.Duration, 0, runs)
			var mu sync.Mutex
			work := make(chan struct{})
			var wg sync.WaitGroup
			start := time.Now()
			for range concurrency {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range work {
						t0 := time.Now()
						r, err := c.StartRun(ctx, flow, in, timeout)
						d := time.Since(t0)
						mu.Lock()
						switch {
						case err != nil:
							rep.Errors++
							if rep.FirstError == "" {
								rep.FirstError = err.Error()
							}
						case r.Status == "succeeded":
							rep.Succeeded++
							lat = append(lat, d)
						default:
							rep.Failed++
							if rep.FirstError == "" && r.Error != nil {
								rep.FirstError = r.Error.Message
							}
						}
						mu.Unlock()
					}
				}()
			}
			for range runs {
				if ctx.Err() != nil {
					break
				}
				work <- struct{}{}
			}
			close(work)
			wg.Wait()
			elapsed := time.Since(start)
			rep.Seconds = elapsed.Seconds()
			rep.RunsPerSec = float64(rep.Succeeded) / elapsed.Seconds()
			if len(lat) > 0 {
				sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
				pct := func(p float64) float64 {
					return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000
				}
				rep.P50MS, rep.P90MS, rep.P99MS, rep.MaxMS = pct(0.5), pct(0.9), pct(0.99), pct(1)
			}
			if err := g.render(rep, func(w io.Writer) {
				fmt.Fprintf(w, "flow %s: %d runs, %d at a time, in %.2fs\n", flow, runs, concurrency, rep.Seconds)
				fmt.Fprintf(w, "succeeded %d, failed %d, errors %d\n", rep.Succeeded, rep.Failed, rep.Errors)
				fmt.Fprintf(w, "throughput %.1f runs/s; latency p50 %.1fms p90 %.1fms p99 %.1fms max %.1fms\n", rep.RunsPerSec, rep.P50MS, rep.P90MS, rep.P99MS, rep.MaxMS)
				if rep.FirstError != "" {
					fmt.Fprintf(w, "first error: %s\n", rep.FirstError)
				}
			}); err != nil {
				return err
			}
			if rep.Succeeded != runs {
				return &exitError{code: 2, msg: fmt.Sprintf("%d of %d runs did not succeed", runs-rep.Succeeded, runs)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&flow, "flow", "", "flow to run (required)")
	cmd.Flags().StringVar(&input, "input", "", "each run's input, a JSON object")
	cmd.Flags().IntVar(&runs, "runs", 100, "how many runs")
	cmd.Flags().IntVar(&concurrency, "concurrency", 8, "how many runs at a time")
	cmd.Flags().DurationVar(&timeout, "run-timeout", time.Minute, "how long to wait for each run (at most 5m)")
	return cmd
}
