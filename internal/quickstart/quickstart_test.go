package quickstart_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/config"
	"github.com/trustflow/trustflow/internal/quickstart"
)

// TestQuickstartMakesARealMTLSCall runs the quickstart twice on one data
// dir: the first run creates everything, the second rotates the identity
// and reuses the rest; both make a mutual-TLS call whose evidence names the
// identity version the demo endpoint saw.
func TestQuickstartMakesARealMTLSCall(t *testing.T) {
	dir := t.TempDir()
	for run, wantVersion := range []int{1, 2} {
		var out, errb bytes.Buffer
		res, err := quickstart.Run(context.Background(), quickstart.Options{
			Config: config.Config{DataDir: dir, Listen: "127.0.0.1:0"}, Stdout: &out, Stderr: &errb, Exit: true,
		})
		require.NoError(t, err, "run %d: %s", run, errb.String())
		require.True(t, res.Test.OK)
		require.Equal(t, 200, res.Call.Status)
		body := res.Call.Body.(map[string]any)
		require.Equal(t, "trustflow-quickstart", body["seen_client"])
		ev := res.Call.Evidence
		require.NotNil(t, ev)
		require.True(t, ev.ServerRequestedClientCert)
		require.Equal(t, []string{"CN=trustflow quickstart demo CA,O=trustflow quickstart"}, ev.AcceptableCAs)
		require.NotNil(t, ev.ClientCertificate)
		require.Equal(t, quickstart.IdentityName, ev.ClientCertificate.Identity)
		require.Equal(t, wantVersion, ev.ClientCertificate.Version)
		active, ok := res.Identity.Active()
		require.True(t, ok)
		require.Equal(t, active.Serial, ev.ClientCertificate.Serial)
		require.Contains(t, out.String(), "over mutual TLS: status 200")
		require.Equal(t, "succeeded", res.Run.Status)
		require.Equal(t, map[string]any{"login": "jdoe", "disabled": true, "presented_serial": active.Serial}, res.Run.Output)
		require.Contains(t, res.IdempotKeys, res.Run.ID+"/lookup")
		require.Contains(t, res.IdempotKeys, res.Run.ID+"/groups[1].remove")
		require.NotContains(t, out.String()+errb.String(), "PRIVATE KEY")
		if run == 0 {
			require.Contains(t, errb.String(), "created the first admin token")
		} else {
			require.False(t, strings.Contains(errb.String(), "created the first admin token"), "a second run creates no token")
		}
	}
}
