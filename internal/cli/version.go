package cli

import (
	"crypto/fips140"
	"fmt"
	"io"
	"runtime"

	"github.com/spf13/cobra"
)

// VersionInfo is what `trustflow version` reports.
type VersionInfo struct {
	Version    string `json:"version"`
	Commit     string `json:"commit"`
	GoVersion  string `json:"go_version"`
	FIPS140    bool   `json:"fips140_enabled"`
	Platform   string `json:"platform"`
	FIPSReason string `json:"fips140_hint,omitempty"`
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit, Go version and FIPS 140-3 module state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			v := VersionInfo{
				Version: g.build.Version, Commit: g.build.Commit, GoVersion: runtime.Version(),
				FIPS140: fips140.Enabled(), Platform: runtime.GOOS + "/" + runtime.GOARCH,
			}
			if !v.FIPS140 {
				v.FIPSReason = "enable with GODEBUG=fips140=on or build with GOFIPS140=v1.0.0"
			}
			return g.render(v, func(w io.Writer) {
				fmt.Fprintf(w, "trustflow %s (commit %s)\n", v.Version, v.Commit)
				fmt.Fprintf(w, "go:\t%s %s\n", v.GoVersion, v.Platform)
				state := "disabled"
				if v.FIPS140 {
					state = "enabled"
				}
				fmt.Fprintf(w, "fips 140-3 module:\t%s\n", state)
			})
		},
	}
}
