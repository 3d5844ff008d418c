package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/trustflow/trustflow/internal/apiclient"
)

func addAuditFilters(cmd *cobra.Command, q *apiclient.AuditQuery) {
	f := cmd.Flags()
	f.StringVar(&q.Action, "action", "", "exact action (token.create) or prefix (token.*)")
	f.StringVar(&q.Actor, "actor", "", "actor token id or name")
	f.StringVar(&q.Target, "target", "", "exact target, e.g. token/tok_0123")
	f.StringVar(&q.Since, "since", "", "RFC 3339 time, inclusive")
	f.StringVar(&q.Until, "until", "", "RFC 3339 time, exclusive")
}

func newAuditCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Read, verify and export the hash-chained audit log"}

	var lq apiclient.AuditQuery
	list := &cobra.Command{
		Use:   "list",
		Short: "List audit records, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			page, err := c.ListAudit(contextOf(cmd), lq)
			if err != nil {
				return err
			}
			return g.render(page, func(w io.Writer) {
				row(w, "SEQ", "TIME", "ACTOR", "ROLE", "ACTION", "TARGET", "OUTCOME")
				for _, r := range page.Records {
					row(w, fmt.Sprint(r.Seq), fmtTime(&r.Time), r.Actor.Name, r.Actor.Role, r.Action, r.Target, r.Outcome)
				}
				if page.NextCursor != "" {
					fmt.Fprintf(w, "\nolder records: --cursor %s\n", page.NextCursor)
				}
			})
		},
	}
	addAuditFilters(list, &lq)
	list.Flags().IntVar(&lq.Limit, "limit", 50, "how many records (1-1000)")
	list.Flags().StringVar(&lq.Cursor, "cursor", "", "continue from a previous page's cursor")

	verify := &cobra.Command{
		Use:   "verify",
		Short: "Walk the hash chain; exit 0 only when no record was edited, deleted or reordered",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			v, err := c.VerifyAudit(contextOf(cmd))
			if err != nil {
				return err
			}
			if err := g.render(v, func(w io.Writer) {
				if v.OK {
					fmt.Fprintf(w, "audit chain intact: %d records, head %d %s\n", v.Records, v.HeadSeq, v.HeadHash)
				}
			}); err != nil {
				return err
			}
			if !v.OK {
				return &exitError{code: 2, msg: fmt.Sprintf("audit chain broken at record %d: %s", v.FirstBadSeq, v.Problem)}
			}
			return nil
		},
	}

	var eq apiclient.AuditQuery
	export := &cobra.Command{
		Use:   "export",
		Short: "Export audit records, oldest first, as JSON lines (for a SIEM)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			return c.ExportAudit(contextOf(cmd), eq, g.stdout)
		},
	}
	addAuditFilters(export, &eq)
	cmd.AddCommand(list, verify, export)
	return cmd
}
