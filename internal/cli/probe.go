package cli

import (
	"fmt"
	"io"
	"net/url"
	"time"

	"github.com/spf13/cobra"

	"github.com/trustflow/trustflow/internal/apiclient"
)

// exitNotEnforced is the exit code of `probe` when the endpoint does not
// enforce mutual TLS.
const exitNotEnforced = 3

func newProbeCmd(g *globals) *cobra.Command {
	var (
		cas      []string
		identity string
		timeout  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "probe URL [--ca CA]... [--identity ID] [--timeout 10s]",
		Short: "Check that an endpoint enforces mutual TLS; exit 3 when it does not",
		Long: `Check the endpoint's side of mutual TLS, from the trustflow server: does it refuse a
client without a certificate and one with a certificate no trusted CA issued (at the
TLS layer, or with a 400/401/403 right after the handshake)? Does it accept the
identity given with --identity? Does it refuse TLS 1.0 and 1.1? Does its chain verify
against the CAs given with --ca, for the URL's host, with 30 days or more to expiry?

Each check is a fresh connection. The identity is presented only to a server whose
chain verifies against --ca. The probe is audited (probe.run).

Exit status: 0 when mutual TLS is enforced (other checks may still fail or warn),
3 when it is not, 1 when the probe could not run.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			rep, err := c.Probe(contextOf(cmd), apiclient.ProbeRequest{URL: args[0], CAs: cas, Identity: identity, Timeout: timeout.String()})
			if err != nil {
				return err
			}
			if err := g.render(rep, func(w io.Writer) { probeTable(w, rep) }); err != nil {
				return err
			}
			if rep.Verdict == apiclient.ProbeEnforced {
				return nil
			}
			host := rep.URL
			if u, err := url.Parse(rep.URL); err == nil {
				host = u.Host
			}
			return &exitError{code: exitNotEnforced, msg: fmt.Sprintf("%s does not enforce mutual TLS (see %s)", host, failedRefusals(rep))}
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&cas, "ca", nil, "CA bundle the server's chain must verify against (repeatable); without it the chain checks are skipped and the identity is not presented")
	f.StringVar(&identity, "identity", "", "identity to present, to check that the server accepts it")
	f.DurationVar(&timeout, "timeout", 10*time.Second, "time allowed to each check's connection (at most 30s)")
	return cmd
}

// probeTable prints the checks, the hints of those that failed or warned,
// and the verdict.
func probeTable(w io.Writer, rep apiclient.ProbeReport) {
	row(w, "CHECK", "STATUS", "LAYER", "DETAIL")
	for _, c := range rep.Checks {
		row(w, c.Name, c.Status, orDash(c.Layer), c.Detail)
	}
	first := true
	for _, c := range rep.Checks {
		if c.Hint == "" || (c.Status != "fail" && c.Status != "warn") {
			continue
		}
		if first {
			fmt.Fprintln(w, "\nHints:")
			first = false
		}
		fmt.Fprintf(w, "  %s: %s\n", c.Name, c.Hint)
	}
	switch rep.Verdict {
	case apiclient.ProbeEnforced:
		fmt.Fprintf(w, "\nverdict: enforced: %s refuses clients without a trusted client certificate\n", rep.URL)
	default:
		fmt.Fprintf(w, "\nverdict: %s: %s accepts clients it should refuse, or could not be shown to refuse them\n", rep.Verdict, rep.URL)
	}
}

// failedRefusals names the refusal checks that did not pass.
func failedRefusals(rep apiclient.ProbeReport) string {
	out := ""
	for _, c := range rep.Checks {
		if (c.Name == "anonymous_refused" || c.Name == "untrusted_cert_refused") && c.Status != "pass" {
			if out != "" {
				out += " and "
			}
			out += c.Name
		}
	}
	if out == "" {
		return "the checks"
	}
	return out
}
