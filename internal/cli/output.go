package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"gopkg.in/yaml.v3"
)

// render prints v as JSON or YAML, or calls table for the table format.
func (g *globals) render(v any, table func(w io.Writer)) error {
	switch g.output {
	case "json":
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(v)
	case "yaml":
		// Round-trip through JSON so YAML keys match the JSON field names.
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode output: %w", err)
		}
		var generic any
		if err := json.Unmarshal(b, &generic); err != nil {
			return fmt.Errorf("encode output: %w", err)
		}
		enc := yaml.NewEncoder(g.stdout)
		enc.SetIndent(2)
		if err := enc.Encode(generic); err != nil {
			return fmt.Errorf("encode output: %w", err)
		}
		return enc.Close()
	default:
		tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
		table(tw)
		return tw.Flush()
	}
}

// row writes one tab-separated table row.
func row(w io.Writer, cols ...string) {
	fmt.Fprintln(w, strings.Join(cols, "\t"))
}

func fmtTime(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
