package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
)

func newKEKCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "kek", Short: "Manage the key-encryption key that seals identities' private keys"}
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Re-wrap every sealed private key under a new key-encryption key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			res, err := c.RotateKEK(contextOf(cmd))
			if err != nil {
				return err
			}
			if res.FromKEKs == nil {
				res.FromKEKs = []string{}
			}
			return g.render(res, func(w io.Writer) {
				from := strings.Join(res.FromKEKs, ", ")
				if from == "" {
					from = "-"
				}
				fmt.Fprintf(w, "rotated the key-encryption key: re-wrapped %s\n", plural(res.Keys, "key"))
				fmt.Fprintf(w, "from:\t%s\n", from)
				fmt.Fprintf(w, "to:\t%s\n", res.ToKEK)
			})
		},
	}
	cmd.AddCommand(rotate)
	return cmd
}
