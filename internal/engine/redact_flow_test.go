package engine_test

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/api"
	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/connector"
	"github.com/trustflow/trustflow/internal/engine"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

// echoServer is a loopback mTLS upstream that sends back what it got.
//   - /echo/all: the request's headers, raw query and body, and the X-Token
//     header's value raw, URL-encoded, base64, JSON-escaped inside JSON
//     text, upper-cased and hex-encoded, in a JSON body and in headers;
//   - /echo/fail: 502 with a text body quoting the token and its base64;
//   - /echo/fields/{v}: each value it got (path segment, header, query,
//     body) as a JSON value of its own, and the header back.
type echoServer struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []string // the X-Token headers received
}

func newEchoServer(t *testing.T, e *env) *echoServer {
	es := &echoServer{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /echo/all", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body) // echoed as far as it came
		tok := es.saw(r)
		inner, _ := json.Marshal(map[string]string{"t": tok}) // a map of strings always encodes
		w.Header().Set("X-Echo", tok)
		w.Header().Set("X-Echo-B64", base64.StdEncoding.EncodeToString([]byte(tok)))
		w.Header().Set("X-Echo-Url", url.QueryEscape(tok))
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{ //nolint:errcheck // the client may have gone
			"headers": r.Header, "query": r.URL.RawQuery, "body": string(body),
			"raw": tok, "url": url.QueryEscape(tok), "path": url.PathEscape(tok),
			"base64": base64.StdEncoding.EncodeToString([]byte(tok)), "base64url": base64.RawURLEncoding.EncodeToString([]byte(tok)),
			"json": string(inner), "upper": strings.ToUpper(tok), "hex": hex.EncodeToString([]byte(tok)),
			"basic": r.Header.Get("Authorization"),
		})
	})
	mux.HandleFunc("POST /echo/fail", func(w http.ResponseWriter, r *http.Request) {
		tok := es.saw(r)
		w.WriteHeader(http.StatusBadGateway)
		fmt.Fprintf(w, "upstream refused token=%s (%s)", tok, base64.StdEncoding.EncodeToString([]byte(tok)))
	})
	mux.HandleFunc("POST /echo/fields/{v}", func(w http.ResponseWriter, r *http.Request) {
		var body any
		_ = json.NewDecoder(r.Body).Decode(&body) // echoed as far as it decodes
		tok := es.saw(r)
		w.Header().Set("X-Echo", tok)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"segment": r.PathValue("v"), "header": tok, "query": r.URL.Query().Get("token"), "body": body}) //nolint:errcheck // the client may have gone
	})
	leaf := e.ca.IssueServer(t, "127.0.0.1")
	es.srv = httptest.NewUnstartedServer(mux)
	es.srv.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLSCertificate()}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: e.ca.Pool()}
	es.srv.StartTLS()
	t.Cleanup(es.srv.Close)
	_, err := e.conns.Create(context.Background(), admin, connector.Spec{Name: "echo", URL: es.srv.URL, Identity: "svc", CAs: []string{"demo"}})
	require.NoError(t, err)
	return es
}

func (es *echoServer) saw(r *http.Request) string {
	tok := r.Header.Get("X-Token")
	es.mu.Lock()
	es.seen = append(es.seen, tok)
	es.mu.Unlock()
	return tok
}

func (es *echoServer) tokens() []string {
	es.mu.Lock()
	defer es.mu.Unlock()
	return append([]string(nil), es.seen...)
}

// apiServer serves the API over the env's engine on loopback and returns
// its URL and an admin token.
func apiServer(t *testing.T, e *env, logs io.Writer) (string, string) {
	t.Helper()
	authn := auth.NewService(e.st, e.audit, nil)
	token, _, err := authn.Bootstrap(context.Background())
	require.NoError(t, err)
	srv := api.New(api.Config{Store: e.st, Auth: authn, Audit: e.audit, Trust: e.trust, Connectors: e.conns, Engine: e.eng,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return hs.URL, token
}

func apiCall(t *testing.T, base, token, method, path, body string) []byte {
	t.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Less(t, resp.StatusCode, 300, "%s %s: %s", method, path, out)
	return out
}

// storedTexts returns every stored text of runs, steps and audit records
// (sealed states, which are ciphertext, left out), each named.
func storedTexts(t *testing.T, st *store.Store) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, q := range []string{
		"SELECT 'run ' || id, input || ' ' || output || ' ' || error FROM runs",
		"SELECT 'step ' || run_id || '/' || path, CASE WHEN substr(state, 1, 7) = 'sealed:' THEN '' ELSE state END || ' ' || output || ' ' || evidence || ' ' || error FROM run_steps",
		"SELECT 'audit ' || action || ' ' || target, details FROM audit_records",
	} {
		rows, err := st.DB().QueryContext(context.Background(), q)
		require.NoError(t, err)
		for rows.Next() {
			var name, text string
			require.NoError(t, rows.Scan(&name, &text))
			out[fmt.Sprintf("%s #%d", name, len(out))] = text
		}
		require.NoError(t, rows.Err())
		require.NoError(t, rows.Close())
	}
	return out
}

// requireNoSecret fails when text holds secret in any of its encodings.
func requireNoSecret(t *testing.T, secret, where, text string) {
	t.Helper()
	for name, enc := range engine.SecretEncodings(secret) {
		if strings.HasPrefix(name, "base64") || strings.HasPrefix(name, "basic") {
			require.NotContains(t, text, enc, "%s holds the %s form of the secret: %s", where, name, text)
		} else {
			require.NotContains(t, strings.ToLower(text), strings.ToLower(enc), "%s holds the %s form of the secret: %s", where, name, text)
		}
	}
	require.False(t, engine.MentionsSecret(text, secret), "%s holds the secret: %s", where, text)
}

const echoSecretFlow = `apiVersion: trustflow/v1
kind: Flow
name: echo-secret
trigger: {manual: {}}
input:
  token: {type: string, secret: true, required: true}
steps:
  - id: send
    call:
      connector: echo
      method: POST
      path: /echo/all
      headers: {X-Token: "${input.token}", Authorization: "Basic ${base64.encode('user:' + input.token)}"}
      query: {token: "${input.token}"}
      body: {token: "${input.token}"}
  - id: refused
    continue_on_error: true
    call: {connector: echo, method: POST, path: /echo/fail, headers: {X-Token: "${input.token}"}}
  - id: keep
    set: {echoed: "${steps.send.body.raw}", b64: "${steps.send.body.base64}", copy: "${input.token}", line: "token=${input.token}"}
  - id: down
    flow: {name: relay-20, input: {value: "${input.token}", echoed: "${steps.send.body.upper}"}}
  - id: carried
    flow: {name: relay-20, input: {value: "plain-value", echoed: "${steps.send.body.upper}"}}
output: {send: "${steps.send.body}", down: "${steps.down}", carried: "${steps.carried}", keep: "${steps.keep}"}
`

// relayFlows returns the flows relay-1 to relay-n: relay-k runs relay-k-1
// (a flow may not run itself, even through others), and relay-1 sends
// value to the echo server and returns the answer, which every relay
// returns to its caller. value reaches each run marked secret by its
// caller; echoed (a call's result) only through the secrets each run
// carries down.
func relayFlows(n int) []string {
	var out []string
	for k := 1; k <= n; k++ {
		step := fmt.Sprintf(`  - id: deeper
    flow: {name: relay-%d, input: {value: "${input.value}", echoed: "${input.echoed}"}}
`, k-1)
		output := "${steps.deeper}"
		if k == 1 {
			step = `  - id: echo
    call:
      connector: echo
      method: POST
      path: /echo/all
      headers: {X-Token: "${input.value}"}
      query: {token: "${input.value}"}
      body: {token: "${input.value}", echoed: "${input.echoed}"}
`
			output = "${steps.echo.body}"
		}
		out = append(out, fmt.Sprintf(`apiVersion: trustflow/v1
kind: Flow
name: relay-%d
trigger: {manual: {}}
input:
  value: {type: string, required: true}
  echoed: {type: string}
steps:
%s  - id: keep
    set: {value: "${input.value}", echoed: "${input.echoed}"}
output: %s
`, k, step, output))
	}
	return out
}

// TestSecretNeverStoredThroughEchoesAndDeepSubflows sends a secret to an
// upstream that echoes it back in every encoding, and 20 sub-flow levels
// down; the run works (the upstream got the real value at every step), and
// neither the API's view of any run nor any stored row, audit record or
// log line holds the secret in any encoding.
func TestSecretNeverStoredThroughEchoesAndDeepSubflows(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnvWith(t, st, func(c *engine.Config) { c.Limits.SubflowDepth = 32 })
		es := newEchoServer(t, e)
		apiLogs := &syncBuffer{}
		base, token := apiServer(t, e, apiLogs)
		const secret = `Sk-Ünï/"q" \+&=z9`
		e.apply(t, append(relayFlows(20), echoSecretFlow)...)

		body, err := json.Marshal(map[string]any{"input": map[string]any{"token": secret}})
		require.NoError(t, err)
		var started engine.RunView
		require.NoError(t, json.Unmarshal(apiCall(t, base, token, "POST", "/api/v1/flows/echo-secret/runs", string(body)), &started))
		run := e.wait(t, started.ID)
		require.Equal(t, engine.StatusSucceeded, run.Status, "%+v", run.Error)

		// The upstream got the secret itself: twice from the top run, once
		// from the innermost run of the first chain; the second chain sends
		// a plain value and only carries the secret (a call's echo of it).
		require.Equal(t, []string{secret, secret, secret, "plain-value"}, es.tokens())

		// What is kept says where the secret was.
		got := steps(run)
		require.Equal(t, map[string]any{"echoed": "[redacted]", "b64": "[redacted]", "copy": "[redacted]", "line": "token=[redacted]"}, got["keep"].Output)
		require.Equal(t, "http_status", got["refused"].Error.Code)
		require.Equal(t, "[redacted]", run.Output.(map[string]any)["send"].(map[string]any)["raw"])

		// Twenty levels down, twice.
		var relays []engine.RunView
		for k := 20; k >= 1; k-- {
			rs, err := e.eng.ListRuns(context.Background(), engine.RunFilter{Flow: fmt.Sprintf("relay-%d", k)})
			require.NoError(t, err)
			require.Len(t, rs, 2, "relay-%d ran in both chains", k)
			for _, r := range rs {
				require.Equal(t, engine.StatusSucceeded, r.Status)
			}
			relays = append(relays, rs...)
		}
		innermost := map[string]map[string]any{}
		for _, r := range relays[38:] {
			inner, err := e.eng.GetRun(context.Background(), r.ID)
			require.NoError(t, err)
			innermost[fmt.Sprint(r.Input["value"])] = steps(inner)["keep"].Output.(map[string]any)
			require.Equal(t, "[redacted]", r.Input["echoed"],
				"the innermost run's stored input: echoed is caught by the secrets carried down 20 levels")
		}
		require.Equal(t, map[string]map[string]any{
			"[redacted]":  {"value": "[redacted]", "echoed": "[redacted]"}, // value marked secret by each caller
			"plain-value": {"value": "plain-value", "echoed": "[redacted]"},
		}, innermost)
		require.Equal(t, `{"echoed":"[redacted]","token":"plain-value"}`, run.Output.(map[string]any)["carried"].(map[string]any)["body"],
			"the echo of the request that came back up 20 levels")

		// Every run as the API shows it, every stored text, every log line.
		ids := []string{run.ID}
		for _, r := range relays {
			ids = append(ids, r.ID)
		}
		for _, id := range ids {
			requireNoSecret(t, secret, "GET /api/v1/runs/"+id, string(apiCall(t, base, token, "GET", "/api/v1/runs/"+id, "")))
		}
		requireNoSecret(t, secret, "GET /api/v1/runs", string(apiCall(t, base, token, "GET", "/api/v1/runs?limit=100", "")))
		requireNoSecret(t, secret, "GET /api/v1/audit", string(apiCall(t, base, token, "GET", "/api/v1/audit?limit=1000", "")))
		texts := storedTexts(t, st)
		require.Greater(t, len(texts), 60, "the scan reads the runs, steps and audit records")
		for name, text := range texts {
			requireNoSecret(t, secret, name, text)
		}
		requireNoSecret(t, secret, "the engine's log", e.log.String())
		requireNoSecret(t, secret, "the API's log", apiLogs.String())
	})
}

const shortSecretFlow = `apiVersion: trustflow/v1
kind: Flow
name: short-secret
trigger: {manual: {}}
input:
  pin: {type: string, secret: true, required: true}
steps:
  - id: keep
    set: {pin: "${input.pin}", line: "pin=${input.pin}", twice: "${input.pin + input.pin}", size: "${input.pin.size()}"}
  - id: send
    call:
      connector: echo
      method: POST
      path: /echo/fields/${input.pin}
      headers: {X-Token: "${input.pin}"}
      query: {token: "${input.pin}"}
      body: {token: "${input.pin}"}
  - id: strict
    continue_on_error: true
    call: {connector: echo, method: POST, path: "/echo/fields/${input.pin}", headers: {X-Token: "${input.pin}"}, expect: [201]}
  - id: refuse
    continue_on_error: true
    fail: "wrong pin ${input.pin}"
  - id: down
    flow: {name: short-child, input: {value: "${input.pin}"}}
  - id: after
    call: {connector: echo, method: POST, path: /echo/fields/after, headers: {X-Token: "${steps.keep.pin}"}}
output: {pin: "${input.pin}", line: "your pin is ${input.pin}", echoed: "${steps.send.body}", down: "${steps.down}"}
`

const shortChildFlow = `apiVersion: trustflow/v1
kind: Flow
name: short-child
trigger: {manual: {}}
input:
  value: {type: string}
steps:
  - id: copy
    set: {v: "${input.value}", line: "got ${input.value}"}
output: ${steps.copy}
`

// TestShortSecretIsRedactedByField runs a flow with a 2-character secret:
// every place it is stored from a value computed from it (set fields, the
// output, a fail message, a sub-flow's input and what that run computes,
// the call's path in the audit record) and every whole value an upstream
// echoes back (a JSON field, a header) is redacted, while the text around
// it is kept.
func TestShortSecretIsRedactedByField(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		es := newEchoServer(t, e)
		const pin = "q7"
		e.apply(t, shortChildFlow, shortSecretFlow)
		run := e.run(t, "short-secret", map[string]any{"pin": pin})
		require.Equal(t, engine.StatusSucceeded, run.Status, "%+v", run.Error)
		require.Equal(t, []string{pin, pin, pin}, es.tokens(),
			"the upstream got the pin, and after the run resumed (its sub-flow ended) the value its set step computed, not its redaction")

		got := steps(run)
		require.Equal(t, map[string]any{"pin": "[redacted]", "line": "pin=[redacted]", "twice": "[redacted]", "size": "[redacted]"}, got["keep"].Output)
		require.Equal(t, "wrong pin [redacted]", got["refuse"].Error.Message)
		require.Equal(t, "POST /echo/fields/[redacted] answered 200, which is not an expected status", got["strict"].Error.Message)
		body := got["send"].Output.(map[string]any)["body"]
		require.Equal(t, map[string]any{"segment": "[redacted]", "header": "[redacted]", "query": "[redacted]", "body": map[string]any{"token": "[redacted]"}}, body)
		require.Equal(t, "[redacted]", got["send"].Output.(map[string]any)["headers"].(map[string]any)["x-echo"])
		out := run.Output.(map[string]any)
		require.Equal(t, "[redacted]", out["pin"])
		require.Equal(t, "your pin is [redacted]", out["line"])
		require.Equal(t, "[redacted]", out["down"], "the child's output reads its secret input")

		children, err := e.eng.ListRuns(context.Background(), engine.RunFilter{Flow: "short-child"})
		require.NoError(t, err)
		require.Len(t, children, 1)
		child, err := e.eng.GetRun(context.Background(), children[0].ID)
		require.NoError(t, err)
		require.Equal(t, map[string]any{"value": "[redacted]"}, child.Input)
		require.Equal(t, map[string]any{"v": "[redacted]", "line": "got [redacted]"}, steps(child)["copy"].Output)

		rows, err := st.DB().QueryContext(context.Background(), "SELECT target, details FROM audit_records WHERE action = 'connector.call'")
		require.NoError(t, err)
		var call string
		for rows.Next() {
			var target, details string
			require.NoError(t, rows.Scan(&target, &details))
			if target == "run/"+run.ID+"/send" {
				call = details
			}
		}
		require.NoError(t, rows.Close())
		require.Contains(t, call, `"path":"/echo/fields/[redacted]"`, "the call's audit record")

		for name, text := range storedTexts(t, st) {
			require.NotContains(t, strings.ToLower(text), pin, name)
			require.NotContains(t, text, base64.StdEncoding.EncodeToString([]byte(pin)), name)
		}
		require.NotContains(t, e.log.String(), pin)
	})
}

const legacyParentFlow = `apiVersion: trustflow/v1
kind: Flow
name: legacy-parent
trigger: {manual: {}}
input:
  token: {type: string, secret: true, required: true}
steps:
  - id: send
    call: {connector: echo, method: POST, path: /echo/all, headers: {X-Token: "${input.token}"}}
  - id: down
    flow: {name: legacy-child, input: {echoed: "${steps.send.body.upper}"}}
output: ${steps.down}
`

const legacyChildFlow = `apiVersion: trustflow/v1
kind: Flow
name: legacy-child
trigger: {manual: {}}
input:
  echoed: {type: string}
steps:
  - id: wait
    sleep: 1s
  - id: echo
    call: {connector: echo, method: POST, path: /echo/all, headers: {X-Token: plain}, body: {echoed: "${input.echoed}"}}
output: ${steps.echo.body.body}
`

// TestSubflowRunStartedBeforeCarryingSecrets: a sub-flow's run whose sealed
// input carries nothing (sealed before runs carried their callers'
// secrets) finds them through its parent chain.
func TestSubflowRunStartedBeforeCarryingSecrets(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newEnv(t, st)
		newEchoServer(t, e)
		const secret = "legacy-7f3a9c2e"
		e.apply(t, legacyChildFlow, legacyParentFlow)
		parent := e.start(t, "legacy-parent", map[string]any{"token": secret})
		var child engine.RunView
		e.until(t, parent.ID, "its sub-flow's run sleeps", func(engine.RunView) bool {
			rs, err := e.eng.ListRuns(ctx, engine.RunFilter{Flow: "legacy-child"})
			require.NoError(t, err)
			if len(rs) == 1 && rs[0].Status == engine.StatusSleeping {
				child = rs[0]
				return true
			}
			return false
		})
		// Seal the child's input again as runs did before: the input alone.
		var blob []byte
		require.NoError(t, st.DB().QueryRowContext(ctx, "SELECT input_sealed FROM runs WHERE id = $1", child.ID).Scan(&blob))
		raw, err := e.trust.OpenSecret(blob, store.RunInputAAD(child.ID))
		require.NoError(t, err)
		var parts []json.RawMessage
		require.NoError(t, json.Unmarshal(raw, &parts), "a sub-flow's run carries its callers' secrets: %s", raw)
		require.Len(t, parts, 2)
		legacy, _, err := e.trust.SealSecret(parts[0], store.RunInputAAD(child.ID))
		require.NoError(t, err)
		_, err = st.DB().ExecContext(ctx, "UPDATE runs SET input_sealed = $1 WHERE id = $2", legacy, child.ID)
		require.NoError(t, err)

		done := e.wait(t, parent.ID)
		require.Equal(t, engine.StatusSucceeded, done.Status, "%+v", done.Error)
		require.Equal(t, `{"echoed":"[redacted]"}`, done.Output, "the echo of the upper-cased secret, found through the parent")
		for name, text := range storedTexts(t, st) {
			requireNoSecret(t, secret, name, text)
		}
	})
}
