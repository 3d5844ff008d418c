package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/trustflow/trustflow/internal/apiclient"
	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/errs"
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
	cmd := &cobra.Command{Use: "audit", Short: "Read, verify, checkpoint and export the keyed, hash-chained audit log"}

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

	var checkpointFile string
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Walk the chain and check it against every signed checkpoint; exit 0 only when no record was edited, deleted or reordered",
		Long: "Walk the audit chain on the server and check every record's MAC and link, and the chain against every signed checkpoint the " +
			"server knows (its database's and its data dir's copy). With --checkpoint FILE, also against that checkpoint (as `audit checkpoint " +
			"-o json` printed it): this proves that no record up to it was removed or altered since. A checkpoint of another deployment is " +
			"refused. Exit 0 when intact, 2 when broken, 1 on any other error.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var given json.RawMessage
			if checkpointFile != "" {
				var err error
				if given, err = readCheckpointFile(checkpointFile); err != nil {
					return err
				}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			var v apiclient.AuditVerification
			if given != nil {
				v, err = c.VerifyAuditCheckpoint(contextOf(cmd), given)
			} else {
				v, err = c.VerifyAudit(contextOf(cmd))
			}
			if err != nil {
				return err
			}
			if err := g.render(v, func(w io.Writer) {
				if v.OK {
					fmt.Fprintf(w, "audit chain intact: %d records, head %d %s\n", v.Records, v.HeadSeq, v.HeadHash)
					if line := verificationDetail(v); line != "" {
						fmt.Fprintln(w, line)
					}
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
	verify.Flags().StringVar(&checkpointFile, "checkpoint", "", "also check the chain against this signed checkpoint file (from `audit checkpoint -o json`, the log stream or a data dir's audit.checkpoint)")

	checkpoint := &cobra.Command{
		Use:   "checkpoint",
		Short: "Verify the records since the latest checkpoint, then sign the chain's head (keep the JSON to verify against later)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			cp, err := c.CreateAuditCheckpoint(contextOf(cmd))
			if err != nil {
				return err
			}
			return g.render(cp, func(w io.Writer) {
				row(w, "RECORD", "SIGNED", "AUDIT KEY", "HEAD HASH")
				row(w, fmt.Sprint(cp.Seq), cp.Time, cp.KeyID, cp.HeadHash)
				fmt.Fprintln(w, "\nkeep it with -o json; check the chain against it with `trustflow audit verify --checkpoint FILE`")
			})
		},
	}

	status := &cobra.Command{
		Use:   "status",
		Short: "Show the audit key's id and checkpoint public key (for an assessor), where the chain is keyed from, and the latest checkpoints",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			st, err := c.AuditStatus(contextOf(cmd))
			if err != nil {
				return err
			}
			return g.render(st, func(w io.Writer) {
				row(w, "audit key:", st.KeyID)
				row(w, "public key:", st.PublicKey+" (Ed25519)")
				row(w, "keyed from:", fmt.Sprintf("record %d", st.KeyedFrom))
				row(w, "head:", fmt.Sprintf("%d %s", st.HeadSeq, st.HeadHash))
				row(w, "checkpoints:", fmt.Sprintf("every %s, or after %d records", st.CheckpointEvery, st.CheckpointRecords))
				for _, cp := range []struct {
					name string
					c    *apiclient.AuditCheckpoint
				}{{"latest checkpoint:", st.Latest}, {"data dir checkpoint:", st.DataDir}} {
					if cp.c == nil {
						row(w, cp.name, "none")
						continue
					}
					row(w, cp.name, fmt.Sprintf("record %d, signed %s", cp.c.Seq, cp.c.Time))
				}
				fmt.Fprint(w, "\n"+st.PublicKeyPEM)
			})
		},
	}

	var eq apiclient.AuditQuery
	export := &cobra.Command{
		Use:   "export",
		Short: "Export audit records, oldest first, as JSON lines (for a SIEM), each signed checkpoint as a {\"checkpoint\": ...} line",
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
	cmd.AddCommand(list, verify, checkpoint, status, export)
	return cmd
}

// readCheckpointFile reads and checks the form of a checkpoint file, so
// that a wrong file is named before the server is asked.
func readCheckpointFile(path string) (json.RawMessage, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--checkpoint %s: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, audit.MaxCheckpointSize+1))
	if err != nil {
		return nil, fmt.Errorf("--checkpoint %s: %w", path, err)
	}
	if _, err := audit.ParseCheckpoint(data); err != nil {
		if e, ok := errs.As(err); ok {
			return nil, fmt.Errorf("--checkpoint %s: %s; %s", path, e.Public(), e.Hint)
		}
		return nil, fmt.Errorf("--checkpoint %s: %w", path, err)
	}
	return data, nil
}

// verificationDetail is the line under "audit chain intact" that says how
// the chain is keyed and which checkpoint it matched.
func verificationDetail(v apiclient.AuditVerification) string {
	if v.KeyID == "" {
		return ""
	}
	line := fmt.Sprintf("keyed with HMAC-SHA256 under audit key %s from record %d", v.KeyID, v.KeyedFrom)
	if v.Checkpoints == 0 {
		return line + "; no checkpoint yet"
	}
	what := "the newest checkpoint"
	if v.CheckpointSource == "given" {
		what = "the given checkpoint"
	}
	return fmt.Sprintf("%s; matches %d checkpoints, %s of record %d signed %s (%s)", line, v.Checkpoints, what, v.CheckpointSeq, fmtTime(v.CheckpointTime), v.CheckpointSource)
}
