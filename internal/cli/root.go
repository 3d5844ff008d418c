// Package cli owns trustflow's command line: the cobra command tree, global
// flags, how answers are printed (table, json, yaml) and how errors become
// messages and exit codes.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/trustflow/trustflow/internal/apiclient"
	"github.com/trustflow/trustflow/internal/config"
	"github.com/trustflow/trustflow/internal/errs"
)

// Build describes the binary; main fills it from link-time values.
type Build struct {
	Version string
	Commit  string
}

// globals are the flags every command shares.
type globals struct {
	dataDir string
	server  string
	token   string
	output  string
	stdout  io.Writer
	stderr  io.Writer
	stdin   io.Reader
	build   Build
	getenv  func(string) string
}

// exitError carries a specific exit code without another message.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// Execute runs the CLI with args and returns the process exit code.
func Execute(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string, build Build) int {
	g := &globals{stdout: stdout, stderr: stderr, stdin: stdin, build: build, getenv: getenv}
	root := newRoot(g)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetIn(stdin)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(stderr, "Error: "+ee.msg)
		}
		return ee.code
	}
	var apiErr *apiclient.Error
	if errors.As(err, &apiErr) {
		if len(apiErr.Problems) > 1 {
			fmt.Fprintf(stderr, "Error: %d problems; nothing was changed:\n", len(apiErr.Problems))
			for _, p := range apiErr.Problems {
				fmt.Fprintf(stderr, "  %s:%d:%d: %s: %s\n", p.File, p.Line, p.Column, p.Path, p.Message)
				if p.Hint != "" {
					fmt.Fprintf(stderr, "      hint: %s\n", p.Hint)
				}
			}
			return 1
		}
		fmt.Fprintf(stderr, "Error: %s\n", apiErr.Message)
		if apiErr.Hint != "" {
			fmt.Fprintf(stderr, "Hint: %s\n", apiErr.Hint)
		}
		if apiErr.Status >= 500 && apiErr.RequestID != "" {
			fmt.Fprintf(stderr, "Request id: %s\n", apiErr.RequestID)
		}
		return 1
	}
	if e, ok := errs.As(err); ok && e.Kind != errs.Internal {
		// A document checked here, before anything was sent.
		if len(e.Problems) > 1 {
			fmt.Fprintf(stderr, "Error: %d problems; nothing was changed:\n", len(e.Problems))
			for _, p := range e.Problems {
				fmt.Fprintf(stderr, "  %s\n", p.String())
			}
			return 1
		}
		fmt.Fprintf(stderr, "Error: %s\n", e.Public())
		if e.Hint != "" {
			fmt.Fprintf(stderr, "Hint: %s\n", e.Hint)
		}
		return 1
	}
	fmt.Fprintln(stderr, "Error: "+err.Error())
	return 1
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:           "trustflow",
		Short:         "Workflow automation whose every outbound call authenticates with mutual TLS",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			switch g.output {
			case "table", "json", "yaml":
				return nil
			}
			return fmt.Errorf("-o %q: want table, json or yaml", g.output)
		},
	}
	root.CompletionOptions.HiddenDefaultCmd = true
	pf := root.PersistentFlags()
	pf.StringVar(&g.dataDir, "data-dir", envOr(g.getenv, config.EnvDataDir, config.DefaultDataDir), "data directory (env "+config.EnvDataDir+")")
	pf.StringVar(&g.server, "server", envOr(g.getenv, config.EnvServer, config.DefaultServer), "trustflow server address (env "+config.EnvServer+")")
	pf.StringVar(&g.token, "token", g.getenv(config.EnvToken), "API token (env "+config.EnvToken+"; default: the admin token file in --data-dir when the server is local)")
	pf.StringVarP(&g.output, "output", "o", "table", "output format: table, json or yaml")
	root.AddCommand(newServeCmd(g), newTokenCmd(g), newAuditCmd(g), newVersionCmd(g))
	root.AddCommand(newCACmd(g), newIdentityCmd(g), newKEKCmd(g), newPolicyCmd(g))
	root.AddCommand(newProbeCmd(g))
	root.AddCommand(newConnectorCmd(g), newQuickstartCmd(g))
	root.AddCommand(newFlowCmd(g), newRunCmd(g), newLoadCmd(g))
	root.AddCommand(newBackupCmd(g), newRestoreCmd(g))
	return root
}

func envOr(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

// client returns an API client with the resolved token.
func (g *globals) client() (*apiclient.Client, error) {
	tok := g.token
	if tok == "" && isLocal(g.server) {
		b, err := os.ReadFile(filepath.Join(g.dataDir, config.AdminTokenFile))
		if err == nil {
			tok = strings.TrimSpace(string(b))
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("read admin token: %w", err)
		}
	}
	return apiclient.New(g.server, tok, nil)
}

// isLocal reports whether the server address is on this machine.
func isLocal(server string) bool {
	u, err := url.Parse(server)
	if err != nil {
		return false
	}
	host := u.Hostname()
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
