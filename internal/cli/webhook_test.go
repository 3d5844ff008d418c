package cli_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/apiclient"
	"github.com/trustflow/trustflow/internal/store"
)

const inboundFlow = `apiVersion: trustflow/v1
kind: Flow
name: inbound
trigger: {webhook: {auth: hmac}}
steps:
  - id: hello
    set: {text: "hello ${input.who}"}
output: ${steps.hello.text}
`

var hexSecret = regexp.MustCompile(`^[0-9a-f]{64}$`)

// postSigned posts body to url's webhook of flow, signed at at with
// secrets, and returns the status and the error code, if any.
func postSigned(t *testing.T, url, flow, body string, at time.Time, secrets ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/hooks/"+flow, strings.NewReader(body))
	require.NoError(t, err)
	ts, sig := apiclient.SignWebhook(at, []byte(body), secrets...)
	req.Header.Set(apiclient.HeaderWebhookTimestamp, ts)
	req.Header.Set(apiclient.HeaderWebhookSignature, sig)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&e))
	return resp.StatusCode, e.Error.Code + map[bool]string{true: ": " + e.Error.Message}[e.Error.Message != ""]
}

// TestFlowWebhookSecretShowAndRotate shows a flow's webhook secret, rotates
// it with an overlap (both verify) and without one (only the new one does),
// and refuses bad overlaps naming the flag.
func TestFlowWebhookSecretShowAndRotate(t *testing.T) {
	t.Parallel()
	s := e2eStart(t, store.SQLite)
	path := filepath.Join(t.TempDir(), "inbound.yaml")
	require.NoError(t, os.WriteFile(path, []byte(inboundFlow), 0o600))
	s.ok(t, "flow", "apply", "-f", path)

	old := strings.TrimSuffix(s.ok(t, "flow", "webhook-secret", "show", "inbound"), "\n")
	require.Regexp(t, hexSecret, old)
	require.Equal(t, map[string]string{"secret": old}, e2eStrict[map[string]string](t, s.ok(t, "flow", "webhook-secret", "show", "inbound", "-o", "json")))

	rot := e2eStrict[apiclient.WebhookRotation](t, s.ok(t, "flow", "webhook-secret", "rotate", "inbound", "--overlap", "2h", "-o", "json"))
	require.Regexp(t, hexSecret, rot.Secret)
	require.NotEqual(t, old, rot.Secret)
	require.NotNil(t, rot.PreviousValidUntil)
	require.WithinDuration(t, time.Now().Add(2*time.Hour), *rot.PreviousValidUntil, time.Minute)
	require.Equal(t, rot.Secret+"\n", s.ok(t, "flow", "webhook-secret", "show", "inbound"))

	url := s.app.URL()
	now := time.Now()
	for i, secrets := range [][]string{{old}, {rot.Secret}, {old, rot.Secret}} {
		status, code := postSigned(t, url, "inbound", `{"who":"n`+string(rune('0'+i))+`"}`, now, secrets...)
		require.Equal(t, http.StatusAccepted, status, code)
	}

	out := s.ok(t, "flow", "webhook-secret", "rotate", "inbound", "--overlap", "0s")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	require.Equal(t, []string{"rotated the webhook secret of flow inbound; the previous one no longer verifies", "",
		"New secret (shown once, give it to the sender now):"}, lines[:3], out)
	third := lines[3]
	require.Regexp(t, hexSecret, third)
	status, code := postSigned(t, url, "inbound", `{"who":"late"}`, now, rot.Secret)
	require.Equal(t, http.StatusUnauthorized, status)
	require.Equal(t, "bad_signature: X-Trustflow-Signature: no v1= value matches the timestamp and body under this webhook's secret", code)
	status, _ = postSigned(t, url, "inbound", `{"who":"late"}`, now, third)
	require.Equal(t, http.StatusAccepted, status)

	r := s.cli(t, "flow", "webhook-secret", "rotate", "inbound", "--overlap", "-1s")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "--overlap")
	r = s.cli(t, "flow", "webhook-secret", "rotate", "inbound", "--overlap", "721h")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "overlap: 721h0m0s is not from 0s to 720h0m0s (limit webhook_overlap: 720h0m0s)")
	r = s.cli(t, "flow", "webhook-secret", "rotate", "missing")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, `flow "missing" does not exist`)
	require.Equal(t, third+"\n", s.ok(t, "flow", "webhook-secret", "show", "inbound"), "refused rotations change nothing")

	var page apiclient.AuditPage
	require.NoError(t, json.Unmarshal([]byte(s.ok(t, "audit", "list", "--action", "flow.webhook_secret.rotate", "-o", "json")), &page))
	require.Len(t, page.Records, 2)
	raw, err := json.Marshal(page)
	require.NoError(t, err)
	for _, secret := range []string{old, rot.Secret, third} {
		require.NotContains(t, string(raw), secret, "the audit log never holds a secret")
	}
}

// TestServeWebhookWindowFlag: `serve --webhook-window` sets the window, and
// a window out of range is refused at start naming the flag.
func TestServeWebhookWindowFlag(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	srv := e2eStartServe(t, "--data-dir", dir, "--webhook-window", "1m")
	path := filepath.Join(t.TempDir(), "inbound.yaml")
	require.NoError(t, os.WriteFile(path, []byte(inboundFlow), 0o600))
	r := e2eRun(t, "--server", srv.addr, "--data-dir", dir, "flow", "apply", "-f", path)
	require.Equal(t, 0, r.code, r.stderr)
	r = e2eRun(t, "--server", srv.addr, "--data-dir", dir, "flow", "webhook-secret", "show", "inbound")
	require.Equal(t, 0, r.code, r.stderr)
	secret := strings.TrimSpace(r.stdout)

	at := time.Now().Add(-90 * time.Second)
	status, code := postSigned(t, srv.addr, "inbound", `{"who":"x"}`, at, secret)
	require.Equal(t, http.StatusUnauthorized, status)
	require.Contains(t, code, "(limit webhook_window: 1m0s either way)")
	status, _ = postSigned(t, srv.addr, "inbound", `{"who":"x"}`, time.Now(), secret)
	require.Equal(t, http.StatusAccepted, status)
	require.Equal(t, 0, srv.stop())

	r = e2eRun(t, "serve", "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(t.TempDir(), "d2"), "--webhook-window", "2h")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "--webhook-window 2h0m0s: want 10s to 1h")
}
