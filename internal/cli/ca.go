package cli

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trustflow/trustflow/internal/apiclient"
)

// caFlags are the flags of `ca add` and `ca update`.
type caFlags struct {
	file, description string
	allowLeafAnchor   bool
	allowExpired      bool
}

func (f *caFlags) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&f.file, "file", "", "CA certificate file: PEM (one or many certificates), DER or PKCS#7 (required)")
	fs.StringVar(&f.description, "description", "", "what the CA is for")
	fs.BoolVar(&f.allowLeafAnchor, "allow-leaf-anchor", false, "accept a self-signed non-CA certificate (a legacy server's own certificate) as an anchor")
	fs.BoolVar(&f.allowExpired, "allow-expired", false, "accept certificates outside their validity period")
	_ = cmd.MarkFlagRequired("file") // the flag exists: the error is impossible
}

func (f *caFlags) request(name string) (apiclient.CARequest, error) {
	data, err := readInputFile("--file", f.file)
	if err != nil {
		return apiclient.CARequest{}, err
	}
	return apiclient.CARequest{Name: name, Description: f.description, Data: data, AllowLeafAnchor: f.allowLeafAnchor, AllowExpired: f.allowExpired}, nil
}

func newCACmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "ca", Short: "Manage the CA bundles connectors trust to sign servers' certificates"}

	var addFlags caFlags
	add := &cobra.Command{
		Use:   "add NAME --file FILE",
		Short: "Add a CA bundle",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := addFlags.request(args[0])
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ca, err := c.AddCA(contextOf(cmd), req)
			if err != nil {
				return err
			}
			return g.render(ca, func(w io.Writer) {
				fmt.Fprintf(w, "added CA %s with %s\n", ca.Name, plural(len(ca.Certificates), "certificate"))
				caCertTable(w, ca)
			})
		},
	}
	addFlags.register(add)

	list := &cobra.Command{
		Use:   "list",
		Short: "List CA bundles",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			cas, err := c.ListCAs(contextOf(cmd))
			if err != nil {
				return err
			}
			if cas == nil {
				cas = []apiclient.CA{}
			}
			return g.render(cas, func(w io.Writer) {
				row(w, "NAME", "CERTIFICATES", "FIRST SUBJECT", "EARLIEST NOT AFTER", "DESCRIPTION")
				for _, ca := range cas {
					subject, notAfter := "-", "-"
					if len(ca.Certificates) > 0 {
						subject = ca.Certificates[0].Subject
						earliest := ca.Certificates[0].NotAfter
						for _, cert := range ca.Certificates[1:] {
							if cert.NotAfter.Before(earliest) {
								earliest = cert.NotAfter
							}
						}
						notAfter = fmtTime(&earliest)
					}
					row(w, ca.Name, strconv.Itoa(len(ca.Certificates)), subject, notAfter, orDash(ca.Description))
				}
			})
		},
	}

	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a CA bundle and its certificates",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ca, err := c.GetCA(contextOf(cmd), args[0])
			if err != nil {
				return err
			}
			return g.render(ca, func(w io.Writer) {
				fmt.Fprintf(w, "Name:\t%s\n", ca.Name)
				fmt.Fprintf(w, "Description:\t%s\n", orDash(ca.Description))
				fmt.Fprintf(w, "Allow leaf anchor:\t%t\n", ca.AllowLeafAnchor)
				fmt.Fprintf(w, "Revision:\t%d (updated %s)\n", ca.Revision, fmtTime(&ca.UpdatedAt))
				fmt.Fprintln(w)
				caCertTable(w, ca)
			})
		},
	}

	var updateFlags caFlags
	update := &cobra.Command{
		Use:   "update NAME --file FILE",
		Short: "Replace a CA bundle's certificates in place (connectors that use it see the new bundle on their next handshake)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := updateFlags.request("")
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ca, err := c.UpdateCA(contextOf(cmd), args[0], req)
			if err != nil {
				return err
			}
			return g.render(ca, func(w io.Writer) {
				fmt.Fprintf(w, "updated CA %s (revision %d) with %s\n", ca.Name, ca.Revision, plural(len(ca.Certificates), "certificate"))
				caCertTable(w, ca)
			})
		},
	}
	updateFlags.register(update)

	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a CA bundle (refused while a connector uses it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			if err := c.RemoveCA(contextOf(cmd), args[0]); err != nil {
				return err
			}
			return g.render(removed{Kind: "ca", Name: args[0], Removed: true}, func(w io.Writer) {
				fmt.Fprintf(w, "removed CA %s\n", args[0])
			})
		},
	}

	cmd.AddCommand(add, list, show, update, remove, newCAVerifyCmd(g))
	return cmd
}

func newCAVerifyCmd(g *globals) *cobra.Command {
	var caName, leaf, intermediates, name, at, purpose string
	cmd := &cobra.Command{
		Use:   "verify --ca NAME --leaf FILE",
		Short: "Check that a certificate chains to a CA bundle, as connectors check it; exit 2 when it does not",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if at != "" {
				if _, err := time.Parse(time.RFC3339, at); err != nil {
					return flagError("--time", fmt.Sprintf("%q is not an RFC 3339 time", at), "use e.g. 2026-01-31T00:00:00Z")
				}
			}
			switch purpose {
			case "server", "client":
			default:
				return flagError("--purpose", fmt.Sprintf("%q is not a purpose", purpose), "use server (the certificate of a server a connector calls) or client")
			}
			req := apiclient.VerifyRequest{Name: name, Time: at, Purpose: purpose}
			var err error
			if req.Leaf, err = readInputFile("--leaf", leaf); err != nil {
				return err
			}
			if req.Intermediates, err = readOptionalFile("--intermediates", intermediates); err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			v, err := c.VerifyCA(contextOf(cmd), caName, req)
			if err != nil {
				return err
			}
			if err := g.render(v, func(w io.Writer) {
				if !v.Valid {
					return
				}
				fmt.Fprintf(w, "valid: %s chains to CA %s\n", v.Leaf.Subject, caName)
				for _, cert := range v.Chain {
					fmt.Fprintf(w, "  %s ← %s\n", cert.Subject, cert.Issuer)
				}
			}); err != nil {
				return err
			}
			if v.Valid {
				return nil
			}
			msg := "the certificate does not verify"
			if v.Error != nil {
				msg = v.Error.Message
				if v.Error.Hint != "" {
					msg += "\nHint: " + v.Error.Hint
				}
			}
			return &exitError{code: 2, msg: msg}
		},
	}
	f := cmd.Flags()
	f.StringVar(&caName, "ca", "", "CA bundle to verify against (required)")
	f.StringVar(&leaf, "leaf", "", "certificate to verify (PEM or DER); may carry its chain after it (required)")
	f.StringVar(&intermediates, "intermediates", "", "intermediate CA certificates, if the leaf file lacks them")
	f.StringVar(&name, "name", "", "host name (or IP) the certificate must be valid for")
	f.StringVar(&at, "time", "", "verify as of this RFC 3339 time (default: now)")
	f.StringVar(&purpose, "purpose", "server", "what the certificate must be good for: server or client")
	_ = cmd.MarkFlagRequired("ca") // the flags exist: the errors are impossible
	_ = cmd.MarkFlagRequired("leaf")
	return cmd
}

// caCertTable prints a CA bundle's certificates.
func caCertTable(w io.Writer, ca apiclient.CA) {
	row(w, "SUBJECT", "ISSUER", "FINGERPRINT", "NOT_AFTER")
	for _, cert := range ca.Certificates {
		row(w, cert.Subject, cert.Issuer, cert.FingerprintSHA256, fmtTime(&cert.NotAfter))
	}
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

func orDash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "-"
	}
	return s
}
