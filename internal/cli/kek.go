package cli

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/trustflow/trustflow/internal/seal"
)

func newKEKCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "kek", Short: "Manage the key-encryption key that seals private keys, connector secrets, webhook secrets and secret run inputs"}
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Re-wrap every sealed value under a new key-encryption key, verify each opens, then drop the old key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			// Progress goes to stderr for people; -o json|yaml stays quiet
			// for scripts.
			last := -1
			res, err := c.RotateKEK(contextOf(cmd), func(done, total int) {
				if done != last && g.output == "table" {
					fmt.Fprintf(g.stderr, "rewrapped %d of %d\n", done, total)
					last = done
				}
			})
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
				fmt.Fprintf(w, "rotated the key-encryption key: re-wrapped %s, verified %d\n", plural(res.Keys, "sealed value"), res.Verified)
				fmt.Fprintf(w, "from:\t%s\n", from)
				fmt.Fprintf(w, "to:\t%s\n", res.ToKEK)
			})
		},
	}
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the key-encryption keys in use (ids, never keys) and how many sealed values each wraps",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			st, err := c.KEKStatus(contextOf(cmd))
			if err != nil {
				return err
			}
			return g.render(st, func(w io.Writer) {
				fmt.Fprintf(w, "active:\t%s\nsource:\t%s\nready:\t%v\n", st.ActiveKEK, st.Source, st.Ready)
				if st.Problem != "" {
					fmt.Fprintf(w, "problem:\t%s\n", st.Problem)
				}
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "\nKEK\tSTATE\tHELD\tSEALED VALUES")
				for _, k := range st.KEKs {
					var parts []string
					cols := make([]string, 0, len(st.Sealed))
					for col := range st.Sealed {
						cols = append(cols, col)
					}
					sort.Strings(cols)
					for _, col := range cols {
						if n := st.Sealed[col][k.ID]; n > 0 {
							parts = append(parts, fmt.Sprintf("%s %d", col, n))
						}
					}
					if len(parts) == 0 {
						parts = []string{"-"}
					}
					fmt.Fprintf(tw, "%s\t%s\t%v\t%s\n", k.ID, k.State, k.Held, strings.Join(parts, ", "))
				}
				tw.Flush()
			})
		},
	}
	generate := &cobra.Command{
		Use:   "generate",
		Short: "Print a new random key-encryption key in base64, for an env:// source (it is the key itself: store it as a secret)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := seal.NewKEK()
			if err != nil {
				return err
			}
			text, err := seal.EncodeKEK(k)
			if err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, text)
			fmt.Fprintf(g.stderr, "key-encryption key %s: put it in the variable that --kek env://NAME names (see docs/keys.md)\n", k.ID())
			return nil
		},
	}
	cmd.AddCommand(rotate, status, generate)
	return cmd
}
