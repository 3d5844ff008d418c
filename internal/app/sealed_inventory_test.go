package app

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/apiclient"
	"github.com/trustflow/trustflow/internal/custody"
	"github.com/trustflow/trustflow/internal/engine"
	"github.com/trustflow/trustflow/internal/seal"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
	"github.com/trustflow/trustflow/internal/truststore/truststoretest"
)

// sealMagic starts every sealed blob: "TFS" and the format version, 1 (the
// layout is documented at seal.Overhead). The test seals a sample to check
// that it still does.
const sealMagic = "TFS\x01"

// sealHeaderSize is the magic, the version and the raw 8-byte KEK id.
const sealHeaderSize = len(sealMagic) + 8

// The workload's secrets, each distinct so that the partner API can tell
// which one reached it.
const (
	bearerToken   = "bearer-7d1f0c2a9e"
	apiKey        = "apikey-4b8e61d3f0"
	basicPassword = "basic-pw-93c5a7e1"
	clientSecret  = "client-secret-0f6b2d84"
	accessToken   = "access-token-5e9a3c17"
	fanoutToken   = "fanout-token-c2e84b19"
	queuedToken   = "queued-token-8a1d5f36"
	rollCallCode  = "rollcall-code-61f0a9d2"
	recheckPin    = "4242424242"
)

// fanOutFlow sleeps inside a foreach whose items carry a secret input:
// while it sleeps, the foreach's state (its items) is stored sealed, and
// the run needs it whole to go on. One run at a time, so a second run
// waits queued with its secret input.
const fanOutFlow = `apiVersion: trustflow/v1
kind: Flow
name: fan-out
trigger: {manual: {}}
settings: {concurrency: 1}
input:
  token: {type: string, secret: true, required: true}
  users: {type: array, required: true}
steps:
  - id: targets
    foreach: '${input.users.map(u, {"user": u, "token": input.token})}'
    as: target
    concurrency: 4
    steps:
      - id: nap
        sleep: 4s
      - id: notify
        call: {connector: partner-bearer, method: POST, path: "/notify/${target.user}", headers: {X-Target-Token: "${target.token}"}}
  - id: report
    call: {connector: partner-apikey, method: POST, path: /report, headers: {X-Run-Token: "${input.token}"}}
`

// rollCallFlow is a foreach run that finishes: its checkpoint keeps the
// sealed items.
const rollCallFlow = `apiVersion: trustflow/v1
kind: Flow
name: roll-call
trigger: {manual: {}}
input:
  code: {type: string, secret: true, required: true}
steps:
  - id: each
    foreach: '${["red", "blue"].map(c, {"team": c, "code": input.code})}'
    steps:
      - id: ping
        call: {connector: partner-basic, method: GET, path: "/roll-call/${item.team}", headers: {X-Code: "${item.code}"}}
`

// recheckFlow's foreach, guarded and with continue_on_error, is
// checkpointed sealed and sleeps; on resume its guard is evaluated again.
// Where the guard then fails (an engine that reads the call's stored,
// redacted answer: int("[redacted]")), the checkpoint read back sealed is
// stored again in clear, and must no longer name a KEK; the registry reads
// before the rotation and after the restart fail on a row that does.
const recheckFlow = `apiVersion: trustflow/v1
kind: Flow
name: recheck
trigger: {manual: {}}
input:
  pin: {type: string, secret: true, required: true}
steps:
  - id: fetch
    call: {connector: partner-bearer, method: GET, path: /echo, headers: {X-Code: "${input.pin}"}}
  - id: loop
    if: ${int(steps.fetch.body.code) > 0}
    continue_on_error: true
    foreach: '${[input.pin]}'
    steps:
      - id: nap
        sleep: 200ms
`

// inboundFlow is started by webhooks signed with its sealed HMAC secret.
const inboundFlow = `apiVersion: trustflow/v1
kind: Flow
name: inbound
trigger: {webhook: {auth: hmac}}
input:
  user: {type: string, required: true}
steps:
  - id: greet
    set: {hello: "${input.user}"}
output: ${steps.greet}
`

// TestEverySealedBlobOpensAfterRotation builds a workload that puts a value
// in every sealed column, rotates the key-encryption key, restarts, and
// then reads every value of every column of every table of the database:
// a sealed blob anywhere store.SealedColumns does not list fails the test,
// and every listed one must open under the new KEK alone. The workload then
// goes on: the sleeping run wakes and finishes, the webhook's signature is
// accepted, and every connector's credential reaches the partner API.
func TestEverySealedBlobOpensAfterRotation(t *testing.T) {
	t.Parallel()
	for _, d := range storetest.Dialects(t) {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			began := time.Now()
			cfg := kekConfig(t, d)
			var logs kekLog
			a := newKEKApp(t, cfg, &logs)
			require.NoError(t, a.Start(ctx))
			oldID := loadKEKID(t, cfg.KEKFile)
			w := buildWorkload(t, a)

			// Every registered column holds a value, else the scan below
			// proves nothing about it.
			before := sealedCounts(t, a.Store)
			total := 0
			wantColumns := map[string]int{}
			for _, c := range store.SealedColumns() {
				n := before[c.String()][oldID]
				require.Positive(t, n, "the workload seals no %s (%s): extend it", c.Name, c)
				require.Len(t, before[c.String()], 1, "%s: every value is under the first KEK", c)
				// A row that names a KEK without holding a sealed value
				// stops a rotation: the read says which.
				require.Len(t, readRegistered(t, a.Store, c), n, "%s", c)
				wantColumns[c.Name] = n
				total += n
			}

			resp, body := postRotate(t, a, "")
			require.Equal(t, http.StatusOK, resp.StatusCode, "%s\nserver log:\n%s", body, logs.String())
			var res custody.Result
			require.NoError(t, json.Unmarshal(body, &res))
			newID := loadKEKID(t, cfg.KEKFile)
			require.NotEqual(t, oldID, newID)
			require.Equal(t, custody.Result{FromKEKs: []string{oldID}, ToKEK: newID, Keys: total, Total: total, Verified: total, Columns: wantColumns}, res)
			requireStatus(t, a, w.sleeper, engine.StatusSleeping)
			requireStatus(t, a, w.queued, engine.StatusQueued)
			require.NoError(t, a.Stop())
			require.Empty(t, w.partner.hitsUnder("/api/notify/"), "the sleeping run did not wake before the restart")
			rotated := time.Now()

			// The restart: a new node on the same data dir and database,
			// not serving yet, so that nothing changes while it is read.
			b := newKEKApp(t, cfg, &logs)
			require.Equal(t, []string{newID}, b.Trust.Keyring().IDs())
			requireStatus(t, b, w.sleeper, engine.StatusSleeping)
			recs, err := b.Store.KEKs(ctx)
			require.NoError(t, err)
			known := map[string]bool{}
			for _, r := range recs {
				known[r.ID] = true
			}
			require.Equal(t, map[string]bool{oldID: true, newID: true}, known)
			next, err := seal.LoadKEKFile(cfg.KEKFile)
			require.NoError(t, err)
			only := seal.NewKeyring(next)
			requireScanSees(t, only, known)

			inv := scanDatabase(t, b.Store, known)
			requireOnlyRegistered(t, inv)
			require.Equal(t, total, inv.total())
			require.Equal(t, total, requireRegisteredOpen(t, b.Store, only, inv))
			t.Logf("workload and rotation %v; scanned %d tables, %d columns, %d values: %d sealed %v, every one listed and opened, in %v",
				rotated.Sub(began).Round(time.Millisecond), len(inv.tables), inv.nColumns, inv.values, inv.total(), wantColumns, time.Since(rotated).Round(time.Millisecond))

			require.NoError(t, b.Start(ctx))
			w.requireGoesOn(t, b)
			t.Logf("whole test: %v", time.Since(began).Round(time.Millisecond))
		})
	}
}

// workload is what buildWorkload left running.
type workload struct {
	partner *partner
	token   string // the admin token
	// hookSecret is the inbound flow's webhook secret, and hookPrevious
	// the one it replaced, still valid for an hour.
	hookSecret, hookPrevious string
	// sleeper sleeps inside its foreach; queued waits behind it.
	sleeper, queued string
	archive         *truststoretest.Leaf
}

// buildWorkload fills every sealed column over a's API: identities
// (imported and generated), a connector for every kind of secret, a flow
// with an HMAC webhook secret, finished runs with sealed foreach states, a
// webhook run, a run sleeping with sealed state and one queued, all with
// secret inputs.
func buildWorkload(t *testing.T, a *App) workload {
	t.Helper()
	ctx := context.Background()
	w := workload{token: a.AdminToken}
	api := newAPIClient(t, a.URL(), w.token)
	ca := truststoretest.NewCA(t)
	w.partner = newPartner(t, ca)
	// The partner listens on loopback, which the egress policy opens only
	// by a rule.
	pu, err := url.Parse(w.partner.srv.URL)
	require.NoError(t, err)
	require.NoError(t, api.Do(ctx, http.MethodPost, "/api/v1/policy/allow", nil, map[string]string{"host": pu.Hostname(), "ports": pu.Port()}, nil))
	client := ca.IssueClient(t, "trustflow")
	_, err = api.AddCA(ctx, apiclient.CARequest{Name: "partner-ca", Data: ca.CertPEM()})
	require.NoError(t, err)
	_, err = api.ImportIdentity(ctx, apiclient.ImportIdentityRequest{Name: "partner-client",
		Material: apiclient.Material{Cert: client.CertPEM(), Key: client.KeyPEM()}})
	require.NoError(t, err)
	w.archive = importIdentity(t, a, "archive")
	_, err = api.CreateIdentity(ctx, apiclient.CreateIdentityRequest{Name: "pending",
		GenerateRequest: apiclient.GenerateRequest{Subject: "CN=pending", DNSNames: []string{"pending.example"}}})
	require.NoError(t, err)

	for _, spec := range partnerConnectors(w.partner.srv.URL) {
		_, err := api.CreateConnector(ctx, spec)
		require.NoError(t, err, "connector %s", spec.Name)
	}
	_, err = api.ApplyFlows(ctx, []apiclient.FlowSource{{Filename: "fan-out.yaml", Source: fanOutFlow},
		{Filename: "roll-call.yaml", Source: rollCallFlow}, {Filename: "recheck.yaml", Source: recheckFlow},
		{Filename: "inbound.yaml", Source: inboundFlow}})
	require.NoError(t, err)

	done, err := api.StartRun(ctx, "roll-call", map[string]any{"code": rollCallCode}, 20*time.Second)
	require.NoError(t, err)
	require.Equal(t, engine.StatusSucceeded, done.Status, "%+v", done.Error)
	done, err = api.StartRun(ctx, "recheck", map[string]any{"pin": recheckPin}, 20*time.Second)
	require.NoError(t, err)
	require.Equal(t, engine.StatusSucceeded, done.Status, "%+v", done.Error)
	w.hookPrevious = webhookSecret(t, api, "inbound")
	var rotated struct {
		Secret string `json:"secret"`
	}
	require.NoError(t, api.Do(ctx, http.MethodPost, "/api/v1/flows/inbound/webhook-secret/rotate", nil, map[string]string{"overlap": "1h"}, &rotated))
	w.hookSecret = rotated.Secret
	require.NotEqual(t, w.hookPrevious, w.hookSecret)
	code, hooked := postWebhook(t, a.URL(), "inbound", `{"user":"ann"}`, w.hookSecret)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, engine.StatusSucceeded, hooked.Status, "%+v", hooked.Error)

	sleeper, err := api.StartRun(ctx, "fan-out", map[string]any{"token": fanoutToken, "users": []string{"ann", "bob"}}, 0)
	require.NoError(t, err)
	waitStatus(t, a, sleeper.ID, engine.StatusSleeping)
	queued, err := api.StartRun(ctx, "fan-out", map[string]any{"token": queuedToken, "users": []string{}}, 0)
	require.NoError(t, err)
	w.sleeper, w.queued = sleeper.ID, queued.ID
	return w
}

// requireGoesOn checks, on the restarted node b, that the workload goes on
// where it was: the sleeping run wakes with its items whole and finishes,
// the queued run follows, the webhook's secret still signs, and every
// connector's credential reaches the partner.
func (w workload) requireGoesOn(t *testing.T, b *App) {
	t.Helper()
	ctx := context.Background()
	api := newAPIClient(t, b.URL(), w.token)
	for _, id := range []string{w.sleeper, w.queued} {
		run := waitEnd(t, b, id)
		require.Equal(t, engine.StatusSucceeded, run.Status, "run %s: %+v", id, run.Error)
	}
	for _, user := range []string{"ann", "bob"} {
		h, ok := w.partner.last("/api/notify/" + user)
		require.True(t, ok, "the woken run notified %s", user)
		require.Equal(t, fanoutToken, h.Header.Get("X-Target-Token"), "the foreach items came out of their sealed state whole")
		require.Equal(t, "Bearer "+bearerToken, h.Header.Get("Authorization"))
	}
	reports := w.partner.hitsUnder("/api/report")
	require.Len(t, reports, 2)
	require.ElementsMatch(t, []string{fanoutToken, queuedToken}, []string{reports[0].Header.Get("X-Run-Token"), reports[1].Header.Get("X-Run-Token")},
		"each run's sealed input opened")
	for _, h := range reports {
		require.Equal(t, apiKey, h.Header.Get("X-API-Key"))
	}

	require.Equal(t, w.hookSecret, webhookSecret(t, api, "inbound"))
	for user, secret := range map[string]string{"bea": w.hookSecret, "cid": w.hookPrevious} {
		code, hooked := postWebhook(t, b.URL(), "inbound", `{"user":"`+user+`"}`, secret)
		require.Equal(t, http.StatusOK, code, "signed by %s with the current secret, or the previous one in its overlap", user)
		require.Equal(t, engine.StatusSucceeded, hooked.Status, "%+v", hooked.Error)
		require.Equal(t, map[string]any{"hello": user}, hooked.Output)
	}
	code, _ := postWebhook(t, b.URL(), "inbound", `{"user":"eve"}`, "not-the-secret")
	require.Equal(t, http.StatusUnauthorized, code, "a signature made with another secret is refused")

	for _, spec := range partnerConnectors(w.partner.srv.URL) {
		out, err := api.CallConnector(ctx, spec.Name, apiclient.CallRequest{Method: "GET", Path: "/after-restart/" + spec.Name})
		require.NoError(t, err, "connector %s", spec.Name)
		require.Equal(t, http.StatusOK, out.Status, "connector %s", spec.Name)
		h, ok := w.partner.last("/api/after-restart/" + spec.Name)
		require.True(t, ok, "connector %s", spec.Name)
		switch spec.Auth {
		case "bearer":
			require.Equal(t, "Bearer "+bearerToken, h.Header.Get("Authorization"))
		case "api-key":
			require.Equal(t, apiKey, h.Header.Get("X-API-Key"))
		case "basic":
			require.Equal(t, "Basic "+base64.StdEncoding.EncodeToString([]byte("svc-user:"+basicPassword)), h.Header.Get("Authorization"))
		case "oauth2-client-credentials":
			require.Equal(t, "Bearer "+accessToken, h.Header.Get("Authorization"))
			require.Equal(t, []string{clientSecret}, w.partner.secretsSeen(), "the token endpoint got the client secret")
		default:
			t.Fatalf("connector %s: no check for auth %s", spec.Name, spec.Auth)
		}
	}
	requireActiveOpens(t, b, "archive", w.archive)
}

// requireOnlyRegistered fails for every column holding sealed values that
// the registry does not list, or in another form than it says, and for
// every blob inside other data.
func requireOnlyRegistered(t *testing.T, inv *inventory) {
	t.Helper()
	registry := map[string]store.SealedColumn{}
	for _, c := range store.SealedColumns() {
		registry[c.String()] = c
	}
	for _, table := range append([]string{"river_job"}, registryTables()...) {
		require.Contains(t, inv.tables, table, "the scan reads every table")
	}
	for _, col := range inv.columns() {
		s := inv.found[col]
		c, listed := registry[col]
		switch {
		case !listed && s.count() > 0:
			t.Errorf("%s holds %d sealed value(s), but store.SealedColumns does not list it: add it there (internal/store/sealed.go), or a KEK rotation leaves its values under the old key", col, s.count())
		case listed && c.Text && s.binary > 0:
			t.Errorf("%s holds %d raw sealed blob(s), but store.SealedColumns says it keeps them as %q text", col, s.binary, store.TextPrefix)
		case listed && !c.Text && s.text > 0:
			t.Errorf("%s holds %d %q value(s), but store.SealedColumns says it keeps raw blobs", col, s.text, store.TextPrefix)
		}
		if s.embedded > 0 {
			t.Errorf("%s holds %d value(s) with a sealed blob inside other data: no rotation can re-wrap it; keep the blob in a column of its own and add that to store.SealedColumns", col, s.embedded)
		}
		if s.broken > 0 {
			t.Errorf("%s holds %d value(s) that start like a sealed blob but are none", col, s.broken)
		}
	}
}

// requireRegisteredOpen reads every registered column as a rotation does
// and opens each value with kr (the new KEK alone) and the registry's
// additional data; the values read must be exactly the blobs the scan
// found there. It returns how many it opened.
func requireRegisteredOpen(t *testing.T, st *store.Store, kr *seal.Keyring, inv *inventory) int {
	t.Helper()
	opened := 0
	for _, c := range store.SealedColumns() {
		blobs := readRegistered(t, st, c)
		require.NotEmpty(t, blobs, "%s holds a value after the restart", c)
		got := map[string]int{}
		for _, sb := range blobs {
			require.Equal(t, kr.CurrentID(), sb.KEKID, "%s %v names the new KEK", c, sb.Key)
			require.Equal(t, kr.CurrentID(), blobKEKID(sb.Blob), "%s %v is wrapped by the new KEK", c, sb.Key)
			plain, err := kr.Open(sb.Blob, c.AAD(sb.Key))
			require.NoError(t, err, "%s %v opens under the new KEK alone", c, sb.Key)
			require.NotEmpty(t, plain)
			got[string(sb.Blob)]++
			opened++
		}
		found := inv.found[c.String()].wholeCounts()
		require.True(t, maps.Equal(found, got),
			"%s: the scan found %d sealed values, the registry reads %d; a rotation skips a sealed value whose %s is empty", c, len(found), len(got), c.KEKColumn)
	}
	return opened
}

// partnerConnectors are the connectors of the workload, one per kind of
// secret, all to the partner API over mutual TLS.
func partnerConnectors(base string) []apiclient.ConnectorSpec {
	spec := func(name, authType string) apiclient.ConnectorSpec {
		return apiclient.ConnectorSpec{Name: name, URL: base + "/api", Auth: authType, Identity: "partner-client", CAs: []string{"partner-ca"}}
	}
	bearer := spec("partner-bearer", "bearer")
	bearer.Secrets.Token = bearerToken
	key := spec("partner-apikey", "api-key")
	key.AuthSettings.HeaderName = "X-API-Key"
	key.Secrets.APIKey = apiKey
	basic := spec("partner-basic", "basic")
	basic.AuthSettings.Username = "svc-user"
	basic.Secrets.Password = basicPassword
	oauth := spec("partner-oauth", "oauth2-client-credentials")
	oauth.AuthSettings.TokenURL = base + "/oauth/token"
	oauth.AuthSettings.ClientID = "trustflow"
	oauth.Secrets.ClientSecret = clientSecret
	return []apiclient.ConnectorSpec{bearer, key, basic, oauth}
}

func newAPIClient(t *testing.T, base, token string) *apiclient.Client {
	t.Helper()
	c, err := apiclient.New(base, token, nil)
	require.NoError(t, err)
	return c
}

func webhookSecret(t *testing.T, c *apiclient.Client, flow string) string {
	t.Helper()
	var out struct {
		Secret string `json:"secret"`
	}
	require.NoError(t, c.Do(context.Background(), http.MethodGet, "/api/v1/flows/"+flow+"/webhook-secret", nil, nil, &out))
	require.NotEmpty(t, out.Secret)
	return out.Secret
}

// postWebhook posts body to the flow's webhook, signed now with secret
// (X-Trustflow-Signature: v1=<hex HMAC-SHA256 of timestamp "." body>), and
// waits for the run.
func postWebhook(t *testing.T, base, flow, body, secret string) (int, apiclient.Run) {
	t.Helper()
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "." + body))
	req, err := http.NewRequest(http.MethodPost, base+"/hooks/"+flow+"?wait=20s", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Trustflow-Timestamp", ts)
	req.Header.Set("X-Trustflow-Signature", "v1="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var run apiclient.Run
	if resp.StatusCode < 300 {
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&run))
	}
	return resp.StatusCode, run
}

func requireStatus(t *testing.T, a *App, id, status string) {
	t.Helper()
	run, err := a.Engine.GetRun(context.Background(), id)
	require.NoError(t, err)
	require.Equal(t, status, run.Status, "run %s", id)
}

// waitStatus polls the run (every 10ms, at most 20s) until it has status.
func waitStatus(t *testing.T, a *App, id, status string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		run, err := a.Engine.GetRun(context.Background(), id)
		require.NoError(t, err)
		if run.Status == status {
			return
		}
		require.True(t, time.Now().Before(deadline), "run %s is %s, not %s, after 20s: %+v", id, run.Status, status, run.Error)
		<-tick.C
	}
}

// waitEnd waits (at most 20s) for the run to end.
func waitEnd(t *testing.T, a *App, id string) engine.RunView {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	run, err := a.Engine.Wait(ctx, id)
	require.NoError(t, err, "run %s did not end in 20s", id)
	return run
}

func sealedCounts(t *testing.T, st *store.Store) map[string]map[string]int {
	t.Helper()
	counts, err := st.SealedKEKCounts(context.Background())
	require.NoError(t, err)
	return counts
}

func registryTables() []string {
	var out []string
	for _, c := range store.SealedColumns() {
		if !slices.Contains(out, c.Table) {
			out = append(out, c.Table)
		}
	}
	return out
}

// readRegistered reads every sealed value of c, as a rotation does.
func readRegistered(t *testing.T, st *store.Store, c store.SealedColumn) []store.SealedBlob {
	t.Helper()
	var out []store.SealedBlob
	var after []any
	for {
		page, err := st.SealedPage(context.Background(), nil, c, "", after, 50)
		require.NoError(t, err)
		out = append(out, page...)
		if len(page) < 50 {
			return out
		}
		after = page[len(page)-1].Key
	}
}

// blobKEKID is the id of the KEK that wrapped a blob, from its header.
func blobKEKID(blob []byte) string {
	if len(blob) < sealHeaderSize || !bytes.HasPrefix(blob, []byte(sealMagic)) {
		return ""
	}
	return hex.EncodeToString(blob[len(sealMagic):sealHeaderSize])
}

// requireScanSees checks the scan's idea of a sealed blob against one
// sealed now: it finds it whole, raw and as text, and inside other data in
// every encoding it looks for.
func requireScanSees(t *testing.T, kr *seal.Keyring, known map[string]bool) {
	t.Helper()
	blob, err := kr.Seal([]byte("sample"), []byte("trustflow/test/sample"))
	require.NoError(t, err)
	require.True(t, bytes.HasPrefix(blob, []byte(sealMagic)), "seal's blob format changed: update sealMagic")
	require.Equal(t, kr.CurrentID(), blobKEKID(blob), "seal's blob header changed: update blobKEKID")
	inJSON, err := json.Marshal(map[string]any{"run_id": "run_x", "extra": blob})
	require.NoError(t, err)
	inURL := []byte(`{"b":"` + base64.URLEncoding.EncodeToString(blob) + `"}`)
	cases := map[string]any{
		"raw": blob, "text": store.EncodeSealedText(blob),
		"json": string(inJSON), "url": inURL, "hex": "x=" + strings.ToUpper(hex.EncodeToString(blob)),
		"prefixed": `{"state":"` + store.EncodeSealedText(blob) + `"}`, "inside": append([]byte("head:"), blob...),
		"broken": store.TextPrefix + "not base64", "clear": `{"items":["sealed: no"],"key":"VEZTAQ"}`,
	}
	inv := &inventory{found: map[string]*sightings{}}
	for name, v := range cases {
		inv.classify(name, v, known)
	}
	require.Equal(t, 1, inv.found["raw"].binary)
	require.Equal(t, 1, inv.found["text"].text)
	require.Equal(t, map[string]int{string(blob): 1}, inv.found["text"].whole)
	for _, name := range []string{"json", "url", "hex", "prefixed", "inside"} {
		require.Equal(t, 1, inv.found[name].embedded, name)
	}
	require.Equal(t, 1, inv.found["broken"].broken)
	require.Nil(t, inv.found["clear"], "text that only mentions the markers is not a blob")
}

// inventory is what scanDatabase found.
type inventory struct {
	tables   []string
	nColumns int
	values   int
	found    map[string]*sightings // by table.column
}

// sightings are the sealed values found in one column.
type sightings struct {
	whole    map[string]int // blob -> values that are that blob, raw or as text
	binary   int            // values that are raw blobs
	text     int            // values in store.TextPrefix form
	embedded int            // values holding a blob inside other data
	broken   int            // values that start like a blob but are none
}

func (s *sightings) count() int { return s.binary + s.text }

func (s *sightings) wholeCounts() map[string]int {
	if s == nil {
		return map[string]int{}
	}
	return s.whole
}

func (inv *inventory) total() int {
	n := 0
	for _, s := range inv.found {
		n += s.count()
	}
	return n
}

func (inv *inventory) columns() []string {
	var out []string
	for c := range inv.found {
		out = append(out, c)
	}
	slices.Sort(out)
	return out
}

func (inv *inventory) sighting(col string) *sightings {
	s := inv.found[col]
	if s == nil {
		s = &sightings{whole: map[string]int{}}
		inv.found[col] = s
	}
	return s
}

// scanDatabase reads every value of every column of every table of st's
// database, from the catalog, with nothing left out: trustflow's tables,
// River's (its job args are JSON: a sealed value put there would show as
// base64), and SQLite's own. known holds the ids of every KEK the database
// has had, which tell a blob inside other data from chance bytes.
func scanDatabase(t *testing.T, st *store.Store, known map[string]bool) *inventory {
	t.Helper()
	ctx := context.Background()
	db := st.DB()
	q := `SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p WHERE m.type = 'table' ORDER BY m.name, p.cid`
	if st.Dialect() == store.Postgres {
		q = `SELECT c.table_name, c.column_name FROM information_schema.columns c
			JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
			WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
			ORDER BY c.table_name, c.ordinal_position`
	}
	rows, err := db.QueryContext(ctx, q)
	require.NoError(t, err)
	cols := map[string][]string{}
	inv := &inventory{found: map[string]*sightings{}}
	for rows.Next() {
		var table, col string
		require.NoError(t, rows.Scan(&table, &col))
		if _, ok := cols[table]; !ok {
			inv.tables = append(inv.tables, table)
		}
		cols[table] = append(cols[table], col)
		inv.nColumns++
	}
	require.NoError(t, rows.Err())
	require.NoError(t, rows.Close())
	require.NotEmpty(t, inv.tables, "the catalog lists no table: the scan is broken")

	quote := func(name string) string { return `"` + strings.ReplaceAll(name, `"`, `""`) + `"` }
	for _, table := range inv.tables {
		names := make([]string, len(cols[table]))
		for i, c := range cols[table] {
			names[i] = quote(c)
		}
		rows, err := db.QueryContext(ctx, fmt.Sprintf("SELECT %s FROM %s", strings.Join(names, ", "), quote(table)))
		require.NoError(t, err, "read table %s", table)
		vals := make([]any, len(names))
		dest := make([]any, len(names))
		for i := range vals {
			dest[i] = &vals[i]
		}
		for rows.Next() {
			require.NoError(t, rows.Scan(dest...), "read table %s", table)
			for i, v := range vals {
				inv.values++
				inv.classify(table+"."+cols[table][i], v, known)
			}
		}
		require.NoError(t, rows.Err(), "read table %s", table)
		require.NoError(t, rows.Close())
	}
	return inv
}

// classify notes whether v is a sealed blob (raw, or text with
// store.TextPrefix), holds one inside other data (raw, after the text
// prefix, or in base64 or hex), or only starts like one.
func (inv *inventory) classify(col string, v any, known map[string]bool) {
	var b []byte
	switch x := v.(type) {
	case nil:
		return
	case []byte:
		b = x
	case string:
		b = []byte(x)
	default:
		// Numbers, booleans and times hold no blob; anything else (an
		// array, say) is looked into as JSON, where bytes are base64.
		enc, err := json.Marshal(x)
		if err != nil {
			enc = fmt.Appendf(nil, "%v", x)
		}
		b = enc
	}
	switch {
	case bytes.HasPrefix(b, []byte(sealMagic)):
		s := inv.sighting(col)
		s.binary++
		s.whole[string(b)]++
		return
	case bytes.HasPrefix(b, []byte(store.TextPrefix)):
		blob, _, err := store.DecodeSealedText(string(b))
		s := inv.sighting(col)
		if err != nil || blobKEKID(blob) == "" {
			s.broken++
			return
		}
		s.text++
		s.whole[string(blob)]++
		return
	}
	if embedsBlob(b, known) {
		inv.sighting(col).embedded++
	}
}

// embedsBlob reports whether b holds, anywhere, the header of a blob
// wrapped by a known KEK: raw, after store.TextPrefix, in base64 (standard
// or URL alphabet: encoding/json writes []byte as standard base64) or in
// hex. Only a header naming a known KEK counts, so chance bytes do not.
func embedsBlob(b []byte, known map[string]bool) bool {
	found := func(hay, needle []byte, decode func([]byte) []byte) bool {
		for i := 0; ; i++ {
			j := bytes.Index(hay[i:], needle)
			if j < 0 {
				return false
			}
			i += j
			if known[blobKEKID(decode(hay[i:]))] {
				return true
			}
		}
	}
	b64len := base64.StdEncoding.EncodedLen(sealHeaderSize)
	fromBase64 := func(p []byte) []byte {
		if len(p) < b64len {
			return nil
		}
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
			if h, err := enc.DecodeString(string(p[:b64len])); err == nil {
				return h
			}
		}
		return nil
	}
	fromHex := func(p []byte) []byte {
		if len(p) < hex.EncodedLen(sealHeaderSize) {
			return nil
		}
		h, err := hex.DecodeString(string(p[:hex.EncodedLen(sealHeaderSize)]))
		if err != nil {
			return nil
		}
		return h
	}
	// "TFS\x01" in base64 is "VEZTA" and 2 bits of the next character.
	magic64 := []byte(base64.StdEncoding.EncodeToString([]byte(sealMagic))[:5])
	return found(b, []byte(sealMagic), func(p []byte) []byte { return p }) ||
		found(b, []byte(store.TextPrefix), func(p []byte) []byte { return fromBase64(p[len(store.TextPrefix):]) }) ||
		found(b, magic64, fromBase64) ||
		found(bytes.ToLower(b), []byte(hex.EncodeToString([]byte(sealMagic))), fromHex)
}

// partner is a loopback API behind mutual TLS, the far end of every
// connector: an OAuth2 token endpoint that takes the client secret, and
// /api/ routes that record the credentials each request carried.
type partner struct {
	srv     *httptest.Server
	mu      sync.Mutex
	hits    []partnerHit
	secrets []string // client secrets the token endpoint accepted
}

type partnerHit struct {
	Path   string
	Header http.Header
}

func newPartner(t *testing.T, ca *truststoretest.CA) *partner {
	t.Helper()
	p := &partner{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /oauth/token", func(w http.ResponseWriter, r *http.Request) {
		id, secret, ok := r.BasicAuth()
		if !ok {
			id, secret = r.PostFormValue("client_id"), r.PostFormValue("client_secret")
		}
		if id != "trustflow" || secret != clientSecret {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":"invalid_client"}`) //nolint:errcheck // the client may have gone
			return
		}
		p.mu.Lock()
		p.secrets = append(p.secrets, secret)
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":3600}`, accessToken)
	})
	mux.HandleFunc("GET /api/echo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"code":%q}`, r.Header.Get("X-Code"))
	})
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.hits = append(p.hits, partnerHit{Path: r.URL.Path, Header: r.Header.Clone()})
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok":true}`) //nolint:errcheck // the client may have gone
	})
	p.srv = httptest.NewUnstartedServer(mux)
	p.srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{ca.IssueServer(t, "127.0.0.1").TLSCertificate()},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool()}
	p.srv.StartTLS()
	t.Cleanup(p.srv.Close)
	return p
}

// last returns the newest request to path.
func (p *partner) last(path string) (partnerHit, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.hits) - 1; i >= 0; i-- {
		if p.hits[i].Path == path {
			return p.hits[i], true
		}
	}
	return partnerHit{}, false
}

// hitsUnder returns the requests whose path starts with prefix.
func (p *partner) hitsUnder(prefix string) []partnerHit {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []partnerHit
	for _, h := range p.hits {
		if strings.HasPrefix(h.Path, prefix) {
			out = append(out, h)
		}
	}
	return out
}

func (p *partner) secretsSeen() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.secrets)
}
