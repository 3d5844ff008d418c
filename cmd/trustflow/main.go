// Command trustflow is the trustflow server and its command line.
package main

import (
	"context"
	"os"
	"runtime/debug"

	"github.com/trustflow/trustflow/internal/cli"
)

// Set at link time: -ldflags "-X main.version=v1.2.3 -X main.commit=abc".
var (
	version = "dev"
	commit  = ""
)

func main() {
	b := cli.Build{Version: version, Commit: commit}
	if b.Commit == "" {
		b.Commit = vcsRevision()
	}
	os.Exit(cli.Execute(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv, b))
}

func vcsRevision() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}
