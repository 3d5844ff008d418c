package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trustflow/trustflow/internal/apiclient"
)

// maxFlowFile bounds one flow document (the language's limit is 1 MiB).
const maxFlowFile = 1 << 20

// readFlowSources reads a flow file, or every .yaml/.yml/.json file of a
// directory (not recursively), in name order.
func readFlowSources(path string) ([]apiclient.FlowSource, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, flagError("-f", err.Error(), "give a flow file or a directory of them")
	}
	var files []string
	if fi.IsDir() {
		entries, err := os.ReadDir(path)
		if err != nil {
			return nil, flagError("-f", err.Error(), "")
		}
		for _, e := range entries {
			ext := strings.ToLower(filepath.Ext(e.Name()))
			if !e.IsDir() && (ext == ".yaml" || ext == ".yml" || ext == ".json") {
				files = append(files, filepath.Join(path, e.Name()))
			}
		}
		sort.Strings(files)
		if len(files) == 0 {
			return nil, flagError("-f", path+" holds no .yaml, .yml or .json file", "put the flow documents there, or name a file")
		}
	} else {
		files = []string{path}
	}
	var out []apiclient.FlowSource
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, flagError("-f", err.Error(), "")
		}
		if len(b) > maxFlowFile {
			return nil, flagError("-f", f+" is larger than 1 MiB, the limit of one flow document", "split the flow into sub-flows")
		}
		out = append(out, apiclient.FlowSource{Filename: f, Source: string(b)})
	}
	return out, nil
}

func newFlowCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "flow", Short: "Apply, list, show, remove and run flows"}

	var files []string
	apply := &cobra.Command{
		Use:   "apply -f FILE|DIR",
		Short: "Validate flow documents and store a new version of each that changed (nothing is stored if any is invalid)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(files) == 0 {
				return flagError("-f", "required", "give a flow file or directory: trustflow flow apply -f flows/")
			}
			var docs []apiclient.FlowSource
			for _, f := range files {
				d, err := readFlowSources(f)
				if err != nil {
					return err
				}
				docs = append(docs, d...)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			applied, err := c.ApplyFlows(contextOf(cmd), docs)
			if err != nil {
				return err
			}
			return g.render(applied, func(w io.Writer) {
				for _, a := range applied {
					if a.Changed {
						fmt.Fprintf(w, "flow %s: version %d applied (%s)\n", a.Name, a.Version, a.Filename)
					} else {
						fmt.Fprintf(w, "flow %s: unchanged (version %d)\n", a.Name, a.Version)
					}
				}
			})
		},
	}
	apply.Flags().StringArrayVarP(&files, "file", "f", nil, "flow document, or a directory of them (repeatable)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List flows",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			fs, err := c.ListFlows(contextOf(cmd))
			if err != nil {
				return err
			}
			if fs == nil {
				fs = []apiclient.Flow{}
			}
			return g.render(fs, func(w io.Writer) {
				row(w, "NAME", "VERSION", "TRIGGER", "DESCRIPTION")
				for _, f := range fs {
					row(w, f.Name, fmt.Sprint(f.Version), triggerText(f.Trigger), orDash(f.Description))
				}
			})
		},
	}
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a flow's document, trigger, inputs and versions",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			f, err := c.GetFlow(contextOf(cmd), args[0])
			if err != nil {
				return err
			}
			return g.render(f, func(w io.Writer) {
				fmt.Fprintf(w, "flow %s, version %d, trigger %s\n", f.Name, f.Version, triggerText(f.Trigger))
				for _, in := range f.Inputs {
					req := ""
					if in.Required {
						req = " (required)"
					}
					fmt.Fprintf(w, "input %s: %s%s\n", in.Name, in.Type, req)
				}
				fmt.Fprintln(w, "versions:")
				for _, v := range f.Versions {
					fmt.Fprintf(w, "  %d\t%s\t%s\t%s\n", v.Version, v.CreatedAt.Format(time.RFC3339), v.Filename, v.Digest[:12])
				}
				fmt.Fprintf(w, "---\n%s", f.Source)
			})
		},
	}
	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a flow (its runs are kept)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			if err := c.RemoveFlow(contextOf(cmd), args[0]); err != nil {
				return err
			}
			return g.render(map[string]string{"removed": args[0]}, func(w io.Writer) { fmt.Fprintf(w, "removed flow %s\n", args[0]) })
		},
	}

	var input string
	var wait bool
	var waitFor time.Duration
	run := &cobra.Command{
		Use:   "run NAME [--input JSON|@file] [--wait]",
		Short: "Start a run of a flow; --wait waits for its result",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in := map[string]any{}
			if input != "" {
				raw := []byte(input)
				if strings.HasPrefix(input, "@") {
					b, err := readInputFile("--input", strings.TrimPrefix(input, "@"))
					if err != nil {
						return err
					}
					raw = b
				}
				if err := json.Unmarshal(raw, &in); err != nil {
					return flagError("--input", "not a JSON object: "+err.Error(), `e.g. --input '{"user_id":"42"}'`)
				}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			var d time.Duration
			if wait {
				d = waitFor
			}
			r, err := c.StartRun(contextOf(cmd), args[0], in, d)
			if err != nil {
				return err
			}
			if err := g.render(r, func(w io.Writer) { printRun(w, r) }); err != nil {
				return err
			}
			if wait && r.Status == "failed" {
				return &exitError{code: 2}
			}
			return nil
		},
	}
	run.Flags().StringVar(&input, "input", "", "the run's input: a JSON object, or @file")
	run.Flags().BoolVar(&wait, "wait", false, "wait for the run to end and print its result")
	run.Flags().DurationVar(&waitFor, "wait-timeout", 5*time.Minute, "how long --wait waits (at most 5m)")

	cmd.AddCommand(apply, list, show, remove, run, newWebhookSecretCmd(g))
	return cmd
}

// newWebhookSecretCmd is `flow webhook-secret show|rotate`: the HMAC secret
// that signs a flow's webhook requests (see docs/flows.md, "Signing
// webhooks").
func newWebhookSecretCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "webhook-secret", Short: "Show or rotate the HMAC secret of a flow's webhook (trigger: {webhook: {auth: hmac}})"}
	show := &cobra.Command{
		Use:   "show FLOW",
		Short: "Print the webhook secret (reading it is audited)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			secret, err := c.WebhookSecret(contextOf(cmd), args[0])
			if err != nil {
				return err
			}
			return g.render(map[string]string{"secret": secret}, func(w io.Writer) { fmt.Fprintln(w, secret) })
		},
	}
	var overlap time.Duration
	rotate := &cobra.Command{
		Use:   "rotate FLOW [--overlap 24h]",
		Short: "Give the webhook a new secret, printed once; the old one keeps verifying for --overlap, then is forgotten",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if overlap < 0 {
				return flagError("--overlap", overlap.String()+" is negative", "give a duration such as 24h, or 0s to forget the old secret at once")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			rot, err := c.RotateWebhookSecret(contextOf(cmd), args[0], overlap)
			if err != nil {
				return err
			}
			return g.render(rot, func(w io.Writer) {
				if rot.PreviousValidUntil != nil {
					fmt.Fprintf(w, "rotated the webhook secret of flow %s; the previous one verifies until %s\n", args[0], rot.PreviousValidUntil.Format(time.RFC3339))
				} else {
					fmt.Fprintf(w, "rotated the webhook secret of flow %s; the previous one no longer verifies\n", args[0])
				}
				fmt.Fprintf(w, "\nNew secret (shown once, give it to the sender now):\n%s\n", rot.Secret)
			})
		},
	}
	rotate.Flags().DurationVar(&overlap, "overlap", 24*time.Hour, "how long the old secret keeps verifying (0s: not at all; at most 720h)")
	cmd.AddCommand(show, rotate)
	return cmd
}

func triggerText(t apiclient.FlowTrigger) string {
	switch t.Kind {
	case "schedule":
		tz := t.Timezone
		if tz == "" {
			tz = "UTC"
		}
		return fmt.Sprintf("schedule %q %s", t.Cron, tz)
	case "webhook":
		return "webhook (" + t.WebhookAuth + ")"
	case "event":
		return "event " + t.EventType
	}
	return t.Kind
}

func printRun(w io.Writer, r apiclient.Run) {
	fmt.Fprintf(w, "run %s of %s v%d: %s\n", r.ID, r.Flow, r.FlowVersion, r.Status)
	if r.Error != nil {
		fmt.Fprintf(w, "error: %s: %s\n", r.Error.Code, r.Error.Message)
		if r.Error.Hint != "" {
			fmt.Fprintf(w, "hint: %s\n", r.Error.Hint)
		}
	}
	if r.Output != nil {
		b, _ := json.MarshalIndent(r.Output, "", "  ") // decoded JSON always re-encodes
		fmt.Fprintf(w, "output: %s\n", b)
	}
	if len(r.Steps) > 0 {
		fmt.Fprintln(w)
		row(w, "STEP", "KIND", "STATUS", "ATTEMPTS", "DURATION", "DETAIL")
		for _, s := range r.Steps {
			detail := ""
			if s.Error != nil {
				detail = s.Error.Code + ": " + s.Error.Message
			} else if m, ok := s.Output.(map[string]any); ok {
				if st, ok := m["status"]; ok {
					detail = fmt.Sprintf("status %v", st)
				}
			}
			if ev, ok := s.Evidence.(map[string]any); ok {
				if cc, ok := ev["client_certificate"].(map[string]any); ok {
					detail += fmt.Sprintf(" (%v, mTLS as %v v%v)", ev["tls_version"], cc["identity"], cc["version"])
				}
			}
			row(w, s.Path, s.Kind, s.Status, fmt.Sprint(s.Attempts), fmt.Sprintf("%dms", s.DurationMS), strings.TrimSpace(detail))
		}
	}
}

func newRunCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "run", Short: "List, show, cancel and retry runs"}
	var q apiclient.RunQuery
	list := &cobra.Command{
		Use:   "list [--flow F] [--status S]",
		Short: "List runs, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			runs, err := c.ListRuns(contextOf(cmd), q)
			if err != nil {
				return err
			}
			if runs == nil {
				runs = []apiclient.Run{}
			}
			return g.render(runs, func(w io.Writer) {
				row(w, "ID", "FLOW", "VERSION", "STATUS", "TRIGGER", "CREATED")
				for _, r := range runs {
					row(w, r.ID, r.Flow, fmt.Sprint(r.FlowVersion), r.Status, r.Trigger, fmtTime(&r.CreatedAt))
				}
			})
		},
	}
	list.Flags().StringVar(&q.Flow, "flow", "", "only runs of this flow")
	list.Flags().StringVar(&q.Status, "status", "", "only runs in this status")
	list.Flags().StringVar(&q.Since, "since", "", "RFC 3339: created at or after")
	list.Flags().StringVar(&q.Until, "until", "", "RFC 3339: created before")
	list.Flags().IntVar(&q.Limit, "limit", 50, "how many runs (1-1000)")

	one := func(use, short string, do func(c *apiclient.Client, cmd *cobra.Command, id string) (apiclient.Run, error)) *cobra.Command {
		return &cobra.Command{
			Use:   use,
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := g.client()
				if err != nil {
					return err
				}
				r, err := do(c, cmd, args[0])
				if err != nil {
					return err
				}
				return g.render(r, func(w io.Writer) { printRun(w, r) })
			},
		}
	}
	show := one("show ID", "Show a run: every step's status, attempts, output, evidence, error and duration",
		func(c *apiclient.Client, cmd *cobra.Command, id string) (apiclient.Run, error) {
			return c.GetRun(contextOf(cmd), id)
		})
	cancel := one("cancel ID", "Cancel a run",
		func(c *apiclient.Client, cmd *cobra.Command, id string) (apiclient.Run, error) {
			return c.CancelRun(contextOf(cmd), id)
		})
	retry := one("retry ID", "Restart a failed run from its failed step",
		func(c *apiclient.Client, cmd *cobra.Command, id string) (apiclient.Run, error) {
			return c.RetryRun(contextOf(cmd), id)
		})
	cmd.AddCommand(list, show, cancel, retry)
	return cmd
}
