package web_test

import (
	"context"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/app"
	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/config"
	"github.com/trustflow/trustflow/internal/policy"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

// chromiumPath is where Debian's chromium package installs the browser.
const chromiumPath = "/usr/bin/chromium"

// lookupFlow calls the directory connector over mutual TLS.
const lookupFlow = `apiVersion: trustflow/v1
kind: Flow
name: lookup-user
description: Look a user up in the directory over mutual TLS
trigger: {manual: {}}
input:
  user_id: {type: string, required: true, description: the directory's user id}
steps:
  - id: lookup
    call: {connector: directory, method: GET, path: "/users/${input.user_id}"}
output:
  path: ${steps.lookup.body.path}
  presented_serial: ${steps.lookup.tls.client_certificate.serial}
`

// TestBrowser drives headless chromium through the console of a real
// server: sign in, add a CA by upload, import an identity, create and test
// a connector against a loopback mTLS server, probe that server, apply and
// run a flow, read the run, edit the connector, and rotate the identity. Each page's screenshot is saved to the
// test's temp dir, and the main ones to docs/console when
// TRUSTFLOW_UPDATE_SCREENSHOTS=1.
func TestBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing: CI must run the browser tests (apt-get install -y chromium)", chromiumPath)
		}
		t.Skipf("browser test skipped: %s is missing; install it with `apt-get install -y chromium`", chromiumPath)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()

	cfg := config.Config{DataDir: filepath.Join(dir, "data"), Listen: "127.0.0.1:0"}
	a, err := app.New(ctx, cfg, app.Options{Stderr: io.Discard, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	t.Cleanup(func() { a.Stop() })
	require.NoError(t, a.Start(ctx))
	base := a.URL()

	ca := truststoretest.NewCA(t)
	server := newMTLSServer(t, ca)
	// The server listens on loopback, which the egress policy opens only
	// by an explicit rule.
	su, err := url.Parse(server.URL)
	require.NoError(t, err)
	_, err = a.Policy.Allow(ctx, audit.System, policy.Rule{Host: su.Hostname(), Ports: su.Port()})
	require.NoError(t, err)
	first, second := ca.IssueClient(t, "directory-client"), ca.IssueClient(t, "directory-client")
	files := map[string][]byte{"ca.pem": ca.CertPEM(), "v1.pem": first.CertPEM(), "v1.key": first.KeyPEM(), "v2.pem": second.CertPEM(), "v2.key": second.KeyPEM()}
	for name, b := range files {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), b, 0o600))
	}
	path := func(name string) []string { return []string{filepath.Join(dir, name)} }

	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromiumPath), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.NoFirstRun, chromedp.UserDataDir(filepath.Join(dir, "chromium")),
		chromedp.WindowSize(1280, 900))
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(allocCtx)
	defer cancelBrowser()

	shots := map[string][]byte{}
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			buf, err := chromedp.FullScreenshot(100)(ctx, tg)
			if err != nil {
				return err
			}
			shots[name] = buf
			return os.WriteFile(filepath.Join(dir, name+".png"), buf, 0o644)
		})
	}
	run := func(step string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		require.NoError(t, chromedp.Do(bctx, actions...), step)
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(sel)))
		require.NoError(t, err, "read %s", sel)
		return s
	}

	run("sign in",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#token`)),
		shot("signin"),
		chromedp.SendKeys(chromedp.CSS(`#token`), a.AdminToken),
		chromedp.Click(chromedp.CSS(`form[action="/ui/signin"] button`)),
		chromedp.WaitVisible(chromedp.CSS(`section.card`)),
	)
	require.Equal(t, "Dashboard", text("h1"))

	run("add a CA",
		chromedp.Navigate(base+"/ui/cas"),
		chromedp.SetValue(chromedp.CSS(`#ca-name`), "directory-ca"),
		chromedp.SetValue(chromedp.CSS(`#ca-description`), "Directory service CA"),
		chromedp.SetUploadFiles(chromedp.CSS(`#ca-file`), path("ca.pem")),
		chromedp.Click(chromedp.CSS(`form[action="/ui/cas"] button`)),
		chromedp.WaitVisible(chromedp.CSS(`.flash`)),
		shot("ca"),
	)
	require.Contains(t, text(".flash"), "CA directory-ca added.")
	require.Contains(t, text("main"), ca.Cert.Subject.String())

	run("import an identity",
		chromedp.Navigate(base+"/ui/identities"),
		chromedp.SetValue(chromedp.CSS(`#imp-name`), "directory-client"),
		chromedp.SetUploadFiles(chromedp.CSS(`#imp-cert`), path("v1.pem")),
		chromedp.SetUploadFiles(chromedp.CSS(`#imp-key`), path("v1.key")),
		chromedp.Click(chromedp.CSS(`form[action="/ui/identities/import"] button`)),
		chromedp.WaitVisible(chromedp.CSS(`.flash`)),
	)
	require.Contains(t, text(".flash"), "version 1 is active")

	run("create a connector and test it",
		chromedp.Navigate(base+"/ui/connectors"),
		chromedp.SetValue(chromedp.CSS(`#cn-name`), "directory"),
		chromedp.SetValue(chromedp.CSS(`#cn-url`), server.URL),
		chromedp.SetValue(chromedp.CSS(`#cn-identity`), "directory-client"),
		chromedp.Click(chromedp.CSS(`input[name="cas"][value="directory-ca"]`)),
		chromedp.Click(chromedp.CSS(`form[action="/ui/connectors"] button`)),
		chromedp.WaitVisible(chromedp.CSS(`.flash`)),
		chromedp.Click(chromedp.CSS(`form[action="/ui/connectors/directory/test"] button`)),
		chromedp.WaitVisible(chromedp.CSS(`section.result`)),
		shot("connector-test"),
	)
	result := text("section.result")
	require.Contains(t, result, "handshake succeeded")
	require.Contains(t, result, "TLS 1.3")
	require.Contains(t, result, "directory-client version 1")
	require.Contains(t, result, ca.Cert.Subject.String(), "the CAs the server named")

	run("probe the endpoint",
		chromedp.Navigate(base+"/ui/connectors"),
		chromedp.Click(chromedp.CSS(`a[href="/ui/probe"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#pr-url`)),
		chromedp.SetValue(chromedp.CSS(`#pr-url`), server.URL),
		chromedp.Click(chromedp.CSS(`input[name="cas"][value="directory-ca"]`)),
		chromedp.SetValue(chromedp.CSS(`#pr-identity`), "directory-client"),
		chromedp.Click(chromedp.CSS(`form[action="/ui/probe"] button`)),
		chromedp.WaitVisible(chromedp.CSS(`section.result`)),
		shot("probe"),
	)
	require.Equal(t, "enforced", text("section.result h2 .badge"))
	require.Contains(t, text("section.result table"), "anonymous_refused")

	var runURL string
	run("apply and run a flow",
		chromedp.Navigate(base+"/ui/editor"),
		chromedp.SetValue(chromedp.CSS(`#ed-source`), lookupFlow),
		chromedp.Click(chromedp.CSS(`form[action="/ui/editor"] button`)),
		chromedp.WaitVisible(chromedp.CSS(`#in-user_id`)),
		shot("flow"),
		chromedp.SendKeys(chromedp.CSS(`#in-user_id`), "42"),
		chromedp.Click(chromedp.CSS(`form[action="/ui/flows/lookup-user/runs"] button`)),
		chromedp.WaitVisible(chromedp.CSS(`h1 .badge`)),
	)
	runURL, err = chromedp.Run(bctx, chromedp.Location())
	require.NoError(t, err)
	runID := runURL[strings.LastIndex(runURL, "/")+1:]
	wctx, cancelWait := context.WithTimeout(ctx, 20*time.Second)
	defer cancelWait()
	done, err := a.Engine.Wait(wctx, runID)
	require.NoError(t, err)
	require.Equal(t, "succeeded", done.Status)
	run("open the run",
		chromedp.Navigate(runURL),
		chromedp.WaitVisible(chromedp.CSS(`ol.steps`)),
		shot("run"),
	)
	require.Equal(t, "succeeded", text("h1 .badge"))
	require.Contains(t, text("ol.steps"), "lookup")
	require.Contains(t, text("main"), "/users/42")

	run("edit the connector",
		chromedp.Navigate(base+"/ui/connectors/directory"),
		chromedp.SetValue(chromedp.CSS(`#ce-timeout`), "20s"),
		chromedp.SetValue(chromedp.CSS(`#ce-min-tls`), "1.3"),
		chromedp.Click(chromedp.CSS(`form[action="/ui/connectors/directory/update"] button`)),
		chromedp.WaitVisible(chromedp.CSS(`.flash`)),
		shot("connector-edit"),
	)
	require.Contains(t, text(".flash"), "Connector directory updated.")
	require.Contains(t, text("dl.facts"), "20s")
	require.Contains(t, text("dl.facts"), "1.3")

	run("rotate the identity",
		chromedp.Navigate(base+"/ui/identities/directory-client"),
		chromedp.SetUploadFiles(chromedp.CSS(`#rot-cert`), path("v2.pem")),
		chromedp.SetUploadFiles(chromedp.CSS(`#rot-key`), path("v2.key")),
		chromedp.Click(chromedp.CSS(`form[action="/ui/identities/directory-client/rotate"] button`)),
		chromedp.WaitVisible(chromedp.CSS(`.flash`)),
		shot("identity"),
	)
	require.Contains(t, text(".flash"), "Version 2 added and activated.")
	require.Contains(t, text("li.version.active h3"), "Version 2")
	require.Contains(t, text("li.version.retired h3"), "Version 1")

	run("dashboard and audit",
		chromedp.Navigate(base+"/ui/"),
		chromedp.WaitVisible(chromedp.CSS(`section.card`)),
		shot("dashboard"),
		chromedp.Navigate(base+"/ui/audit"),
		chromedp.Click(chromedp.CSS(`form[action="/ui/audit/verify"] button`)),
		chromedp.WaitVisible(chromedp.CSS(`section.result`)),
		shot("audit"),
	)
	require.Contains(t, text("section.result"), "chain intact")

	if os.Getenv("TRUSTFLOW_UPDATE_SCREENSHOTS") == "1" {
		out := filepath.Join("..", "..", "docs", "console")
		require.NoError(t, os.MkdirAll(out, 0o755))
		for _, name := range []string{"dashboard", "ca", "connector-test", "flow", "run", "identity", "audit"} {
			require.NoError(t, os.WriteFile(filepath.Join(out, name+".png"), shots[name], 0o644))
		}
	}
}
