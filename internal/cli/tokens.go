package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/trustflow/trustflow/internal/apiclient"
)

func newTokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage API tokens"}
	var req apiclient.CreateTokenRequest
	create := &cobra.Command{
		Use:   "create",
		Short: "Create an API token (its secret is shown once)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			t, err := c.CreateToken(contextOf(cmd), req)
			if err != nil {
				return err
			}
			return g.render(t, func(w io.Writer) {
				row(w, "ID", "NAME", "ROLE", "EXPIRES")
				row(w, t.ID, t.Name, t.Role, fmtTime(t.ExpiresAt))
				fmt.Fprintf(w, "\nToken (shown once, store it now):\n%s\n", t.Token)
			})
		},
	}
	create.Flags().StringVar(&req.Role, "role", "", "role: admin, editor, operator or auditor (required)")
	create.Flags().StringVar(&req.Name, "name", "", "who or what uses the token (required)")
	create.Flags().StringVar(&req.ExpiresIn, "expires", "", "lifetime, e.g. 720h (default: never expires)")
	_ = create.MarkFlagRequired("role") // the flag exists: the error is impossible
	_ = create.MarkFlagRequired("name")

	list := &cobra.Command{
		Use:   "list",
		Short: "List API tokens",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			toks, err := c.ListTokens(contextOf(cmd))
			if err != nil {
				return err
			}
			if toks == nil {
				toks = []apiclient.Token{}
			}
			return g.render(toks, func(w io.Writer) {
				row(w, "ID", "NAME", "ROLE", "STATUS", "CREATED", "EXPIRES")
				for _, t := range toks {
					row(w, t.ID, t.Name, t.Role, t.Status, fmtTime(&t.CreatedAt), fmtTime(t.ExpiresAt))
				}
			})
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an API token",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			t, err := c.RevokeToken(contextOf(cmd), args[0])
			if err != nil {
				return err
			}
			return g.render(t, func(w io.Writer) {
				fmt.Fprintf(w, "revoked token %s (%s, %s)\n", t.ID, t.Name, t.Role)
			})
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}
