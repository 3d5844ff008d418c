package cli

import (
	"io"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/trustflow/trustflow/internal/api"
	"github.com/trustflow/trustflow/internal/config"
	"github.com/trustflow/trustflow/internal/quickstart"
)

func newQuickstartCmd(g *globals) *cobra.Command {
	var listen, kek, keyStore string
	var exit bool
	cmd := &cobra.Command{
		Use:   "quickstart",
		Short: "Start trustflow with a demo mTLS endpoint, CA, identity and connector, and make a real mutual-TLS call",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(contextOf(cmd), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			out := g.stdout
			if g.output != "table" {
				out = io.Discard
			}
			res, err := quickstart.Run(ctx, quickstart.Options{
				Config: config.Config{DataDir: g.dataDir, Listen: listen, KEK: kek},
				Build:  api.BuildInfo(g.build), Stdout: out, Stderr: g.stderr, Exit: exit, KeyStore: keyStore,
			})
			if err != nil {
				return err
			}
			if g.output != "table" {
				return g.render(res, nil)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&listen, "listen", config.DefaultListen, "address of the embedded server")
	cmd.Flags().BoolVar(&exit, "exit", false, "exit after printing the result (for scripts and tests)")
	cmd.Flags().StringVar(&kek, "kek", g.getenv(config.EnvKEK), "where the key-encryption key lives: file://PATH, env://NAME or a pkcs11: URI (default file://DATA_DIR/kek)")
	cmd.Flags().StringVar(&keyStore, "key-store", "", "generate the demo identity's key in this PKCS#11 token (pkcs11:token=T;object=O?module-path=...&pin-source=file:PATH) instead of sealing it")
	return cmd
}
