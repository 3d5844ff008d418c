package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/trustflow/trustflow/internal/policy"
)

func newPolicyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Show and change the organisation-wide egress and TLS policy every outbound connection obeys"}
	show := &cobra.Command{
		Use:   "show",
		Short: "Print the policy in force; -o json|yaml prints the document `policy set -f` takes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			v, err := c.Policy(contextOf(cmd))
			if err != nil {
				return err
			}
			return g.render(v.Document, func(w io.Writer) { printPolicy(w, v) })
		},
	}
	var file string
	set := &cobra.Command{
		Use:   "set -f FILE",
		Short: "Replace the policy with a kind: Policy document (admin, audited)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return flagError("-f", "no policy file given", "write the document (see `trustflow policy show -o yaml`) and pass -f FILE")
			}
			data, err := readInputFile("-f", file)
			if err != nil {
				return err
			}
			p, err := policy.Parse(file, data)
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			v, err := c.SetPolicy(contextOf(cmd), p.Document())
			if err != nil {
				return err
			}
			return g.render(v, func(w io.Writer) { printChange(w, "set the policy", v) })
		},
	}
	set.Flags().StringVarP(&file, "file", "f", "", "policy document (YAML or JSON)")
	var host, ports string
	rule := func(use, short string, call func(cmd *cobra.Command, r policy.Rule) (policy.View, error), done string) *cobra.Command {
		c := &cobra.Command{
			Use:   use + " --host H [--ports P]",
			Short: short,
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				if host == "" {
					return flagError("--host", "no host given", "give a host name, *.suffix, an IP address or a CIDR, e.g. --host 10.20.0.0/16")
				}
				v, err := call(cmd, policy.Rule{Host: host, Ports: ports})
				if err != nil {
					return err
				}
				return g.render(v, func(w io.Writer) { printChange(w, done, v) })
			},
		}
		c.Flags().StringVar(&host, "host", "", "exact host name, *.suffix, IP address or CIDR")
		c.Flags().StringVar(&ports, "ports", "*", `ports: "443", "443,8443", "8000-8999" or "*"`)
		return c
	}
	allow := rule("allow", "Add one egress allow rule (admin, audited)", func(cmd *cobra.Command, r policy.Rule) (policy.View, error) {
		c, err := g.client()
		if err != nil {
			return policy.View{}, err
		}
		return c.AllowEgress(contextOf(cmd), r)
	}, "allowed the destination")
	disallow := rule("disallow", "Remove one egress allow rule (admin, audited)", func(cmd *cobra.Command, r policy.Rule) (policy.View, error) {
		c, err := g.client()
		if err != nil {
			return policy.View{}, err
		}
		return c.DisallowEgress(contextOf(cmd), r)
	}, "removed the rule")
	check := &cobra.Command{
		Use:   "check",
		Short: "List the connectors and identities that break the policy in force (exit code 2 when any do)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			res, err := c.CheckPolicy(contextOf(cmd))
			if err != nil {
				return err
			}
			if err := g.render(res, func(w io.Writer) {
				if len(res.Violations) == 0 {
					fmt.Fprintf(w, "nothing breaks policy revision %d\n", res.Revision)
					return
				}
				fmt.Fprintln(w, "KIND\tNAME\tRULE\tPROBLEM")
				for _, v := range res.Violations {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", v.Kind, v.Name, v.Rule, v.Message)
				}
			}); err != nil {
				return err
			}
			if len(res.Violations) > 0 {
				return &exitError{code: 2, msg: fmt.Sprintf("%s break the policy", plural(len(res.Violations), "connector or identity"))}
			}
			return nil
		},
	}
	cmd.AddCommand(show, set, allow, disallow, check)
	return cmd
}

func printPolicy(w io.Writer, v policy.View) {
	d := v.Document
	if v.Revision == 0 {
		fmt.Fprintln(w, "revision:\t0 (the default policy; nothing was set)")
	} else {
		fmt.Fprintf(w, "revision:\t%d (by %s at %s)\n", v.Revision, v.UpdatedBy, v.UpdatedAt.Format("2006-01-02 15:04:05Z07:00"))
	}
	fmt.Fprintf(w, "egress default:\t%s (loopback, link-local, unspecified and multicast addresses only by an IP or CIDR rule)\n", d.Egress.Default)
	if len(d.Egress.Allow) == 0 {
		fmt.Fprintln(w, "egress allow:\t-")
	}
	for i, r := range d.Egress.Allow {
		label := ""
		if i == 0 {
			label = "egress allow:"
		}
		fmt.Fprintf(w, "%s\t%s ports %s\n", label, r.Host, r.Ports)
	}
	fmt.Fprintf(w, "tls min version:\t%s\n", d.TLS.MinVersion)
	if len(d.TLS.CipherSuites) > 0 {
		fmt.Fprintf(w, "tls cipher suites:\t%s\n", strings.Join(d.TLS.CipherSuites, ", "))
	}
	if len(d.TLS.Curves) > 0 {
		fmt.Fprintf(w, "tls curves:\t%s\n", strings.Join(d.TLS.Curves, ", "))
	}
	fmt.Fprintf(w, "require mtls:\t%v\nallow system roots:\t%v\nallow plaintext:\t%v\nallow no client auth request:\t%v\n",
		d.TLS.RequireMTLS, d.TLS.AllowSystemRoots, d.TLS.AllowPlaintext, d.TLS.AllowNoClientAuthRequest)
	life := d.Identities.MaxLifetime
	if life == "" {
		life = "-"
	}
	fmt.Fprintf(w, "identity min rsa bits:\t%d\nidentity min ec bits:\t%d\nidentity max lifetime:\t%s\nrequire clientAuth eku:\t%v\n",
		d.Identities.MinRSABits, d.Identities.MinECBits, life, d.Identities.RequireClientAuthEKU)
}

func printChange(w io.Writer, done string, v policy.View) {
	fmt.Fprintf(w, "%s: policy revision %d\n", done, v.Revision)
	for _, x := range v.Violations {
		fmt.Fprintf(w, "breaks it:\t%s %s: %s (%s)\n", x.Kind, x.Name, x.Message, x.Rule)
	}
}
