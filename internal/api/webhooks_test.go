package api_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/api"
	"github.com/trustflow/trustflow/internal/apiclient"
	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/engine"
	"github.com/trustflow/trustflow/internal/seal"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

const (
	hmacHookFlow = `apiVersion: trustflow/v1
kind: Flow
name: inbound
trigger: {webhook: {auth: hmac}}
steps:
  - id: greet
    set: {hello: "${input.user}"}
output: ${steps.greet}
`
	tokenHookFlow = `apiVersion: trustflow/v1
kind: Flow
name: tokened
trigger: {webhook: {}}
steps:
  - id: greet
    set: {hello: "${input.user}"}
output: ${steps.greet}
`
	manualHookFlow = `apiVersion: trustflow/v1
kind: Flow
name: manual
trigger: {manual: {}}
steps:
  - id: greet
    set: {hello: "${input.user}"}
`
)

// countingAEAD is a key-encryption key "in a device": it counts the data
// keys it unwraps and takes delay for each, as a token does.
type countingAEAD struct {
	cipher.AEAD
	opens atomic.Int64
	delay atomic.Int64 // nanoseconds
}

func (c *countingAEAD) Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error) {
	c.opens.Add(1)
	if d := time.Duration(c.delay.Load()); d > 0 {
		time.Sleep(d) // the device's latency, not a wait for anything
	}
	return c.AEAD.Open(dst, nonce, ciphertext, additionalData)
}

// hookEnv is an API over st with an hmac webhook flow (inbound), a token
// webhook flow (tokened) and a manual flow, every secret sealed under a
// counting KEK.
type hookEnv struct {
	*env
	kek      *countingAEAD
	secret   string // inbound's webhook secret
	operator string
	sources  atomic.Int64
}

func newHookEnv(t *testing.T, st *store.Store) *hookEnv {
	t.Helper()
	ctx := context.Background()
	h := &hookEnv{env: newEnv(t, st, api.Config{})}
	block, err := aes.NewCipher(bytes.Repeat([]byte{7}, 32))
	require.NoError(t, err)
	gcm, err := cipher.NewGCMWithRandomNonce(block)
	require.NoError(t, err)
	h.kek = &countingAEAD{AEAD: gcm}
	kek, err := seal.NewExternalKEK("0123456789abcdef", h.kek)
	require.NoError(t, err)
	h.trust.UseKeyring(seal.NewKeyring(kek))
	_, err = h.eng.Apply(ctx, audit.System, []engine.Source{{Filename: "inbound.yaml", Source: hmacHookFlow},
		{Filename: "tokened.yaml", Source: tokenHookFlow}, {Filename: "manual.yaml", Source: manualHookFlow}})
	require.NoError(t, err)
	h.secret, err = h.eng.WebhookSecret(ctx, audit.System, "inbound")
	require.NoError(t, err)
	_, h.operator = h.createToken(t, "ops", auth.RoleOperator, "")
	return h
}

// startEngine runs the engine's workers until the test ends.
func (h *hookEnv) startEngine(t *testing.T) {
	t.Helper()
	require.NoError(t, h.eng.Start(context.Background()))
	t.Cleanup(func() { h.eng.Stop(context.Background()) }) //nolint:errcheck // the test is over
}

// signed returns the headers that sign body at at with secrets.
func signed(at time.Time, body string, secrets ...string) http.Header {
	ts, sig := apiclient.SignWebhook(at, []byte(body), secrets...)
	return http.Header{"X-Trustflow-Timestamp": {ts}, "X-Trustflow-Signature": {sig}}
}

// with returns hdr plus the key-value pairs kv.
func with(hdr http.Header, kv ...string) http.Header {
	out := hdr.Clone()
	if out == nil {
		out = http.Header{}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out.Set(kv[i], kv[i+1])
	}
	return out
}

// post sends a webhook request, each from a source of its own (so that no
// source's refusals reach the per-source limit).
func (h *hookEnv) post(path, body string, hdr http.Header) *httptest.ResponseRecorder {
	r := newRequest(http.MethodPost, path, "", body)
	for k, vs := range hdr {
		r.Header[k] = vs
	}
	n := h.sources.Add(1)
	r.RemoteAddr = fmt.Sprintf("198.51.%d.%d:4321", n/256, n%256)
	return h.serve(r)
}

// hookError is the error wire form, every field.
type hookError struct {
	Error struct {
		Code      string `json:"code"`
		Message   string `json:"message"`
		Hint      string `json:"hint"`
		Field     string `json:"field"`
		RequestID string `json:"request_id"`
	} `json:"error"`
}

func requireHookError(t *testing.T, rec *httptest.ResponseRecorder, status int, code, field, msg string) hookError {
	t.Helper()
	require.Equal(t, status, rec.Code, "body: %s", rec.Body)
	var e hookError
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &e), "body: %s", rec.Body)
	require.Equal(t, code, e.Error.Code, "body: %s", rec.Body)
	require.Equal(t, field, e.Error.Field, "body: %s", rec.Body)
	if msg != "" {
		require.Equal(t, msg, e.Error.Message)
	}
	require.NotEmpty(t, e.Error.Hint, "every error says how to fix it")
	if status == http.StatusUnauthorized {
		require.Equal(t, `Bearer realm="trustflow"`, rec.Header().Get("WWW-Authenticate"))
	}
	return e
}

func requireRun(t *testing.T, rec *httptest.ResponseRecorder, status int) engine.RunView {
	t.Helper()
	require.Equal(t, status, rec.Code, "body: %s", rec.Body)
	var run engine.RunView
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &run))
	require.NotEmpty(t, run.ID)
	return run
}

func (h *hookEnv) runs(t *testing.T, flow string) []engine.RunView {
	t.Helper()
	runs, err := h.eng.ListRuns(context.Background(), engine.RunFilter{Flow: flow})
	require.NoError(t, err)
	return runs
}

// denials counts the auth.denied records after seq whose reason is reason.
func (h *hookEnv) denials(t *testing.T, seq int64, reason string) int {
	t.Helper()
	n := 0
	for _, r := range h.recordsAfter(t, seq) {
		var d struct {
			Reason string `json:"reason"`
			Count  int    `json:"count"`
		}
		require.NoError(t, json.Unmarshal(r.Details, &d))
		if r.Action == "auth.denied" && d.Reason == reason {
			n += max(d.Count, 1)
		}
	}
	return n
}

func TestWebhookReplaysStartNothing(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		h := newHookEnv(t, st)
		body := `{"user":"ann"}`
		hdr := signed(h.clock.Now(), body, h.secret)
		run := requireRun(t, h.post("/hooks/inbound", body, hdr), http.StatusAccepted)
		require.Equal(t, "webhook", run.Trigger)

		before := h.head(t).Seq
		began := time.Now()
		const replays = 100
		for range replays {
			requireHookError(t, h.post("/hooks/inbound", body, hdr), http.StatusConflict, "webhook_replayed", "",
				"this signed request was accepted before; a replay starts nothing")
		}
		perReplay := time.Since(began) / replays
		// The same signed content under another header still is a replay.
		sig := hdr.Get("X-Trustflow-Signature")
		for _, variant := range []string{sig + "," + sig, "v0=ignored, " + sig, sig + ",v2=" + strings.Repeat("0", 64)} {
			requireHookError(t, h.post("/hooks/inbound", body, with(hdr, "X-Trustflow-Signature", variant)), http.StatusConflict, "webhook_replayed", "", "")
		}
		require.Equal(t, []string{run.ID}, runIDs(h.runs(t, "inbound")), "%d replays started nothing", replays+3)
		// Refusals are audited as auth.denied, one by one up to a cap per
		// interval and aggregated beyond it (see refusals.go).
		require.NotZero(t, h.denials(t, before, "webhook replayed"), "replays are audited")
		t.Logf("%s: a refused replay took %s on average", st.Dialect(), perReplay)
	})
}

func runIDs(runs []engine.RunView) []string {
	var out []string
	for _, r := range runs {
		out = append(out, r.ID)
	}
	sort.Strings(out)
	return out
}

func TestWebhookTimestampMustBeInsideTheWindow(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		h := newHookEnv(t, st)
		now := h.clock.Now()
		for i, tc := range []struct {
			skew time.Duration
			msg  string
		}{
			{skew: -5 * time.Minute},
			{skew: 5 * time.Minute},
			{skew: -5*time.Minute - time.Second, msg: "%d is 5m1s behind this server's clock (limit webhook_window: 5m0s either way)"},
			{skew: 5*time.Minute + time.Second, msg: "%d is 5m1s ahead of this server's clock (limit webhook_window: 5m0s either way)"},
			{skew: -24 * time.Hour, msg: "%d is 24h0m0s behind this server's clock (limit webhook_window: 5m0s either way)"},
		} {
			body := fmt.Sprintf(`{"user":"u%d"}`, i)
			at := now.Add(tc.skew)
			rec := h.post("/hooks/inbound", body, signed(at, body, h.secret))
			if tc.msg == "" {
				requireRun(t, rec, http.StatusAccepted)
				continue
			}
			requireHookError(t, rec, http.StatusUnauthorized, "webhook_timestamp_outside_window", "X-Trustflow-Timestamp",
				"X-Trustflow-Timestamp: "+fmt.Sprintf(tc.msg, at.Unix()))
			// An unknown flow answers the same.
			other := h.post("/hooks/ghost", body, signed(at, body, h.secret))
			require.Equal(t, stripRequestID(t, rec.Body.Bytes()), stripRequestID(t, other.Body.Bytes()))
		}
		require.Len(t, h.runs(t, "inbound"), 2, "only the two inside the window started runs")

		body := `{"user":"x"}`
		good := signed(now, body, h.secret)
		for _, tc := range []struct {
			hdr          http.Header
			field, msg   string
			code, reason string
		}{
			{hdr: with(good, "X-Trustflow-Timestamp", "17e8"), field: "X-Trustflow-Timestamp", code: "invalid_timestamp",
				msg: `X-Trustflow-Timestamp: "17e8" is not Unix seconds`},
			{hdr: with(good, "X-Trustflow-Timestamp", "-5"), field: "X-Trustflow-Timestamp", code: "invalid_timestamp",
				msg: `X-Trustflow-Timestamp: "-5" is not Unix seconds`},
			{hdr: http.Header{"X-Trustflow-Signature": good["X-Trustflow-Signature"]}, field: "X-Trustflow-Timestamp", code: "invalid_timestamp",
				msg: "X-Trustflow-Timestamp: required: the signature covers it"},
			{hdr: http.Header{"X-Trustflow-Timestamp": good["X-Trustflow-Timestamp"]}, field: "X-Trustflow-Signature", code: "invalid_signature",
				msg: "X-Trustflow-Signature: required with X-Trustflow-Timestamp"},
			{hdr: with(good, "X-Trustflow-Signature", "sha256="+strings.Repeat("ab", 32)), field: "X-Trustflow-Signature", code: "invalid_signature",
				msg: "X-Trustflow-Signature: sha256= signatures of the body alone are no longer accepted: the signature must cover the timestamp"},
		} {
			requireHookError(t, h.post("/hooks/inbound", body, tc.hdr), http.StatusBadRequest, tc.code, tc.field, tc.msg)
		}
		require.Len(t, h.runs(t, "inbound"), 2)
	})
}

func TestWebhookSignatureCoversTimestampAndBody(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		h := newHookEnv(t, st)
		now := h.clock.Now()
		body := `{"user":"bea"}`
		hdr := signed(now, body, h.secret)
		const msg = "X-Trustflow-Signature: no v1= value matches the timestamp and body under this webhook's secret"
		before := h.head(t).Seq
		for name, tc := range map[string]struct {
			body string
			hdr  http.Header
		}{
			"a changed body":          {body: `{"user":"eve"}`, hdr: hdr},
			"a body with a space":     {body: `{"user": "bea"}`, hdr: hdr},
			"a changed timestamp":     {body: body, hdr: with(hdr, "X-Trustflow-Timestamp", fmt.Sprint(now.Unix()+1))},
			"another flow's secret":   {body: body, hdr: signed(now, body, strings.Repeat("0", 64))},
			"the secret as signature": {body: body, hdr: with(hdr, "X-Trustflow-Signature", "v1="+h.secret)},
		} {
			t.Run(name, func(t *testing.T) {
				requireHookError(t, h.post("/hooks/inbound", tc.body, tc.hdr), http.StatusUnauthorized, "bad_signature", "X-Trustflow-Signature", msg)
			})
		}
		require.Empty(t, h.runs(t, "inbound"))
		require.Equal(t, 5, h.denials(t, before, "bad signature"))

		// One matching value among several is enough.
		other := signed(now, body, strings.Repeat("1", 64)).Get("X-Trustflow-Signature")
		requireRun(t, h.post("/hooks/inbound", body, with(hdr, "X-Trustflow-Signature", other+", "+hdr.Get("X-Trustflow-Signature"))), http.StatusAccepted)
	})
}

func TestWebhookDeliveryRetryReturnsTheSameRun(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		h := newHookEnv(t, st)
		h.startEngine(t)
		body := `{"user":"cy"}`
		first := with(signed(h.clock.Now(), body, h.secret), "X-Trustflow-Delivery", "evt-1")
		rec := h.post("/hooks/inbound?wait=20s", body, first)
		run := requireRun(t, rec, http.StatusOK)
		require.Equal(t, engine.StatusSucceeded, run.Status, "%+v", run.Error)
		require.Empty(t, rec.Header().Get(api.HeaderDuplicate))

		// The sender retries (it lost the answer): signed again, later.
		h.clock.Advance(30 * time.Second)
		retry := with(signed(h.clock.Now(), body, h.secret), "X-Trustflow-Delivery", "evt-1")
		rec = h.post("/hooks/inbound", body, retry)
		again := requireRun(t, rec, http.StatusOK)
		require.Equal(t, "true", rec.Header().Get(api.HeaderDuplicate))
		require.Equal(t, run.ID, again.ID)
		require.Equal(t, engine.StatusSucceeded, again.Status)
		require.Equal(t, map[string]any{"hello": "cy"}, again.Output)
		require.Len(t, again.Steps, 1, "the run as GET /api/v1/runs/{id} shows it")

		h.clock.Advance(time.Second)
		rec = h.post("/hooks/inbound?wait=20s", body, with(signed(h.clock.Now(), body, h.secret), "X-Trustflow-Delivery", "evt-1"))
		require.Equal(t, run.ID, requireRun(t, rec, http.StatusOK).ID, "with ?wait too")

		// A byte-identical resend of the retry is a replay: it could be
		// anybody's, and would hand them the run's output.
		requireHookError(t, h.post("/hooks/inbound", body, retry), http.StatusConflict, "webhook_replayed", "", "")
		require.Equal(t, []string{run.ID}, runIDs(h.runs(t, "inbound")))

		// Another id, or none, is another delivery (signed at another
		// second: the same timestamp and body would be a replay).
		h.clock.Advance(time.Second)
		other := requireRun(t, h.post("/hooks/inbound", body, with(signed(h.clock.Now(), body, h.secret), "X-Trustflow-Delivery", "evt-2")), http.StatusAccepted)
		none := requireRun(t, h.post("/hooks/inbound", `{"user":"dee"}`, signed(h.clock.Now(), `{"user":"dee"}`, h.secret)), http.StatusAccepted)
		require.ElementsMatch(t, []string{run.ID, other.ID, none.ID}, runIDs(h.runs(t, "inbound")))

		// Ids are per flow, and work with a bearer token.
		bearer := http.Header{"Authorization": {"Bearer " + h.operator}, "X-Trustflow-Delivery": {"evt-1"}}
		tok := requireRun(t, h.post("/hooks/tokened", body, bearer), http.StatusAccepted)
		require.NotEqual(t, run.ID, tok.ID)
		rec = h.post("/hooks/tokened", body, bearer)
		require.Equal(t, tok.ID, requireRun(t, rec, http.StatusOK).ID)
		require.Equal(t, "true", rec.Header().Get(api.HeaderDuplicate))
		dups := 0
		for _, r := range h.recordsAfter(t, 0) {
			if r.Action == "webhook.duplicate" {
				dups++
			}
		}
		require.Equal(t, 3, dups, "every duplicate delivery is audited")

		// 24 hours later the id is forgotten.
		h.clock.Advance(24 * time.Hour)
		require.NoError(t, h.eng.PurgeWebhooks(context.Background()))
		later := requireRun(t, h.post("/hooks/tokened", body, bearer), http.StatusAccepted)
		require.NotEqual(t, tok.ID, later.ID)

		for _, tc := range []struct{ id, msg string }{
			{strings.Repeat("d", 201), "X-Trustflow-Delivery: 201 characters long (limit webhook_delivery_id: 200)"},
			{"evt 3", "X-Trustflow-Delivery: character 4 is not visible ASCII"},
		} {
			requireHookError(t, h.post("/hooks/inbound", body, with(signed(h.clock.Now(), body, h.secret), "X-Trustflow-Delivery", tc.id)),
				http.StatusBadRequest, "invalid_delivery", "X-Trustflow-Delivery", tc.msg)
		}
	})
}

func TestConcurrentDeliveriesOfOneIDStartOneRun(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		h := newHookEnv(t, st)
		srv := httptest.NewServer(h.server.Handler())
		t.Cleanup(srv.Close)
		const n = 8
		body := `{"user":"race"}`
		type answer struct {
			status    int
			duplicate string
			run       engine.RunView
		}
		answers := make([]answer, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			// Each sender signed at its own second: n distinct signatures.
			hdr := with(signed(h.clock.Now().Add(-time.Duration(i)*time.Second), body, h.secret), "X-Trustflow-Delivery", "evt-race")
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, err := http.NewRequest(http.MethodPost, srv.URL+"/hooks/inbound", strings.NewReader(body))
				if err != nil {
					t.Error(err)
					return
				}
				req.Header = hdr
				req.Header.Set("Content-Type", "application/json")
				<-start
				resp, err := srv.Client().Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				defer resp.Body.Close()
				answers[i].status, answers[i].duplicate = resp.StatusCode, resp.Header.Get(api.HeaderDuplicate)
				if err := json.NewDecoder(resp.Body).Decode(&answers[i].run); err != nil {
					t.Error(err)
				}
			}()
		}
		close(start)
		wg.Wait()
		var statuses []int
		for _, a := range answers {
			statuses = append(statuses, a.status)
			require.Equal(t, answers[0].run.ID, a.run.ID, "every delivery answers with the one run")
			require.Equal(t, a.status == http.StatusOK, a.duplicate == "true")
		}
		slices.Sort(statuses)
		require.Equal(t, []int{200, 200, 200, 200, 200, 200, 200, 202}, statuses, "one delivery started the run")
		require.Len(t, h.runs(t, "inbound"), 1)
	})
}

func TestWebhookSecretRotationOverlaps(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		ctx := context.Background()
		h := newHookEnv(t, st)
		old := h.secret
		send := func(user string, secrets ...string) *httptest.ResponseRecorder {
			body := fmt.Sprintf(`{"user":%q}`, user)
			return h.post("/hooks/inbound", body, signed(h.clock.Now(), body, secrets...))
		}
		before := h.head(t).Seq
		rec := h.do(http.MethodPost, "/api/v1/flows/inbound/webhook-secret/rotate", h.admin, `{"overlap":"1h"}`)
		require.Equal(t, http.StatusOK, rec.Code, "body: %s", rec.Body)
		var rot engine.WebhookRotation
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &rot))
		require.Len(t, rot.Secret, 64)
		require.NotEqual(t, old, rot.Secret)
		until := h.clock.Now().Add(time.Hour)
		require.Equal(t, &until, rot.PreviousValidUntil)

		recs := h.recordsAfter(t, before)
		require.Len(t, recs, 1)
		require.Equal(t, "flow.webhook_secret.rotate", recs[0].Action)
		require.Equal(t, "flow/inbound", recs[0].Target)
		require.JSONEq(t, `{"overlap":"1h0m0s","previous_valid_until":"`+until.Format(time.RFC3339)+`","earlier_previous_forgotten":false}`, string(recs[0].Details))
		current, err := h.eng.WebhookSecret(ctx, audit.System, "inbound")
		require.NoError(t, err)
		require.Equal(t, rot.Secret, current)
		counts, err := st.SealedKEKCounts(ctx)
		require.NoError(t, err)
		require.Equal(t, map[string]int{"0123456789abcdef": 1}, counts["flows.webhook_secret_previous"], "the old secret is kept sealed")

		// During the overlap: old, new, and both.
		requireRun(t, send("old", old), http.StatusAccepted)
		requireRun(t, send("new", rot.Secret), http.StatusAccepted)
		requireRun(t, send("both", old, rot.Secret), http.StatusAccepted)
		h.clock.Advance(time.Hour - time.Second)
		requireRun(t, send("old-late", old), http.StatusAccepted)

		// After it: only the new one, and the old one is forgotten.
		h.clock.Advance(time.Second)
		requireHookError(t, send("old-after", old), http.StatusUnauthorized, "bad_signature", "X-Trustflow-Signature", "")
		requireRun(t, send("new-after", rot.Secret), http.StatusAccepted)
		requireRun(t, send("both-after", old, rot.Secret), http.StatusAccepted)
		before = h.head(t).Seq
		require.NoError(t, h.eng.PurgeWebhooks(ctx))
		keys, err := st.WebhookKeys(ctx, "inbound")
		require.NoError(t, err)
		require.Empty(t, keys.Previous)
		require.Empty(t, keys.PreviousKEKID)
		recs = h.recordsAfter(t, before)
		require.Len(t, recs, 1)
		require.Equal(t, "flow.webhook_secret.forget", recs[0].Action)
		require.Equal(t, audit.System, recs[0].Actor)
		require.NoError(t, h.eng.PurgeWebhooks(ctx))
		require.Len(t, h.recordsAfter(t, before), 1, "forgotten once")

		// Without an overlap the old secret stops at once; a rotation
		// during an overlap ends the earlier one.
		second, err := h.eng.RotateWebhookSecret(ctx, audit.System, "inbound", time.Hour)
		require.NoError(t, err)
		third, err := h.eng.RotateWebhookSecret(ctx, audit.System, "inbound", 0)
		require.NoError(t, err)
		require.Nil(t, third.PreviousValidUntil)
		requireHookError(t, send("second", second.Secret), http.StatusUnauthorized, "bad_signature", "X-Trustflow-Signature", "")
		requireRun(t, send("third", third.Secret), http.StatusAccepted)

		// Neither secret is in the audit log or the server log.
		var all bytes.Buffer
		for _, r := range h.recordsAfter(t, 0) {
			b, err := json.Marshal(r)
			require.NoError(t, err)
			all.Write(b)
		}
		for _, s := range []string{old, rot.Secret, second.Secret, third.Secret} {
			require.NotContains(t, all.String(), s)
			require.NotContains(t, h.logs.String(), s)
		}

		for _, tc := range []struct {
			path, body string
			status     int
			code, msg  string
		}{
			{"/api/v1/flows/inbound/webhook-secret/rotate", `{"overlap":"721h"}`, http.StatusBadRequest, "invalid_input",
				"overlap: 721h0m0s is not from 0s to 720h0m0s (limit webhook_overlap: 720h0m0s)"},
			{"/api/v1/flows/inbound/webhook-secret/rotate", `{"overlap":"-1s"}`, http.StatusBadRequest, "invalid_input",
				"overlap: -1s is not from 0s to 720h0m0s (limit webhook_overlap: 720h0m0s)"},
			{"/api/v1/flows/inbound/webhook-secret/rotate", `{"overlap":"a day"}`, http.StatusBadRequest, "invalid_input", `overlap: "a day" is not a duration`},
			{"/api/v1/flows/tokened/webhook-secret/rotate", ``, http.StatusConflict, "no_webhook_secret", `flow "tokened" has no HMAC webhook trigger`},
			{"/api/v1/flows/ghost/webhook-secret/rotate", ``, http.StatusNotFound, "not_found", `flow "ghost" does not exist`},
		} {
			before := h.head(t).Seq
			rec := h.do(http.MethodPost, tc.path, h.admin, tc.body)
			requireHookError(t, rec, tc.status, tc.code, map[bool]string{true: "overlap"}[tc.code == "invalid_input"], tc.msg)
			require.Empty(t, h.recordsAfter(t, before), "a refused rotation changes nothing")
		}
		requireRun(t, send("still", third.Secret), http.StatusAccepted)
	})
}

// stripRequestID returns an error body without its request id, which
// differs on every answer.
func stripRequestID(t *testing.T, body []byte) string {
	t.Helper()
	var v map[string]map[string]any
	require.NoError(t, json.Unmarshal(body, &v), "body: %s", body)
	delete(v["error"], "request_id")
	out, err := json.Marshal(v)
	require.NoError(t, err)
	return string(out)
}

// TestWebhookAnswersAlikeForEveryFlow sends the requests an anonymous
// caller can make to a flow with an hmac webhook, one with a token
// webhook, one with no webhook and one that does not exist: each gets the
// same status, headers and body, after the same work (two sealed secrets
// opened by the KEK, in about the same time).
func TestWebhookAnswersAlikeForEveryFlow(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		h := newHookEnv(t, st)
		flows := []string{"inbound", "tokened", "manual", "ghost"}
		now := h.clock.Now()
		body := `{"user":"mallory"}`
		wrong := signed(now, body, strings.Repeat("f", 64))
		cases := map[string]http.Header{
			"no credential":     nil,
			"an unknown token":  {"Authorization": {"Bearer tf_" + strings.Repeat("A", 43)}},
			"a malformed token": {"Authorization": {"Bearer nope"}},
			"a wrong signature": wrong,
			"a stale signature": signed(now.Add(-time.Hour), body, strings.Repeat("f", 64)),
			"a malformed one":   with(wrong, "X-Trustflow-Signature", "v1=zz"),
		}
		for name, hdr := range cases {
			t.Run(name, func(t *testing.T) {
				var want string
				var wantStatus int
				var wantOpens int64 = -1
				for _, f := range flows {
					opens := h.kek.opens.Load()
					rec := h.post("/hooks/"+f, body, hdr)
					opened := h.kek.opens.Load() - opens
					got := stripRequestID(t, rec.Body.Bytes())
					for _, other := range flows {
						require.NotContains(t, got, other, "the answer names no flow")
					}
					require.NotContains(t, got, "hmac")
					if want == "" {
						want, wantStatus, wantOpens = got, rec.Code, opened
						require.GreaterOrEqual(t, rec.Code, 400)
						continue
					}
					require.Equal(t, wantStatus, rec.Code, "flow %s", f)
					require.Equal(t, want, got, "flow %s", f)
					require.Equal(t, wantOpens, opened, "flow %s: the same number of sealed secrets opened", f)
				}
				if name == "a wrong signature" {
					require.Equal(t, int64(2), wantOpens, "a signature is checked against two secrets, real or dummy")
				}
			})
		}
		for _, f := range flows[:3] {
			require.Empty(t, h.runs(t, f))
		}

		// The same during a rotation's overlap (two real secrets).
		_, err := h.eng.RotateWebhookSecret(context.Background(), audit.System, "inbound", time.Hour)
		require.NoError(t, err)
		opens := h.kek.opens.Load()
		requireHookError(t, h.post("/hooks/inbound", body, wrong), http.StatusUnauthorized, "bad_signature", "X-Trustflow-Signature", "")
		require.Equal(t, int64(2), h.kek.opens.Load()-opens)

		// Timing: with a KEK that takes 2ms to open a secret (a token's
		// order), the median answer to a wrong signature takes about as
		// long for every flow; skipping the dummy work would make the
		// others 2 opens (4ms) faster.
		h.kek.delay.Store(int64(2 * time.Millisecond))
		const rounds = 15
		took := map[string][]time.Duration{}
		for range rounds {
			for _, f := range flows {
				began := time.Now()
				rec := h.post("/hooks/"+f, body, wrong)
				took[f] = append(took[f], time.Since(began))
				require.Equal(t, http.StatusUnauthorized, rec.Code)
			}
		}
		medians := map[string]time.Duration{}
		for f, ds := range took {
			slices.Sort(ds)
			medians[f] = ds[len(ds)/2]
		}
		base := medians["inbound"]
		for _, f := range flows {
			ratio := float64(medians[f]) / float64(base)
			t.Logf("%s: median answer to a wrong signature for %s: %s (%.2f of inbound's)", st.Dialect(), f, medians[f], ratio)
			require.InDelta(t, 1.0, ratio, 0.5, "flow %s answers in %s, inbound in %s", f, medians[f], base)
		}
	})
}

// TestWebhookAuthMatrix pins who gets what from POST /hooks/{flow}: an
// unauthenticated caller 401 (audited, never the token), a role without
// runs:write 403, an operator 404 for a flow without a webhook, and a run
// for one with either kind of webhook.
func TestWebhookAuthMatrix(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		t.Parallel()
		h := newHookEnv(t, st)
		_, auditor := h.createToken(t, "audit", auth.RoleAuditor, "")
		_, editor := h.createToken(t, "edit", auth.RoleEditor, "")
		for _, uc := range unauthenticatedCases[:6] { // revoked and expired tokens need the route scenarios' set-up
			t.Run(uc.name, func(t *testing.T) {
				before := h.head(t).Seq
				hdr := http.Header{}
				if a := uc.authorization(scenarioSecrets{}); a != "" {
					hdr.Set("Authorization", a)
				}
				rec := h.post("/hooks/inbound", `{}`, hdr)
				requireHookError(t, rec, http.StatusUnauthorized, "unauthenticated", "", "a webhook needs a valid bearer token or a valid signature")
				recs := h.recordsAfter(t, before)
				require.Len(t, recs, 1)
				require.Equal(t, "auth.denied", recs[0].Action)
				require.Equal(t, "POST /hooks/{flow}", recs[0].Target)
				var d map[string]any
				require.NoError(t, json.Unmarshal(recs[0].Details, &d))
				require.Equal(t, "unauthenticated", d["reason"])
				require.Equal(t, uc.cause, d["cause"])
				if a := hdr.Get("Authorization"); a != "" {
					require.NotContains(t, string(recs[0].Details), strings.TrimPrefix(strings.TrimPrefix(a, "Bearer "), "Basic "))
				}
			})
		}
		requireHookError(t, h.post("/hooks/inbound", `{}`, http.Header{"Authorization": {"Bearer " + auditor}}), http.StatusForbidden, "forbidden", "",
			"role auditor may not start runs")
		requireHookError(t, h.post("/hooks/manual", `{}`, http.Header{"Authorization": {"Bearer " + h.operator}}), http.StatusNotFound, "not_found", "",
			`flow "manual" has no webhook trigger`)
		requireHookError(t, h.post("/hooks/ghost", `{}`, http.Header{"Authorization": {"Bearer " + h.operator}}), http.StatusNotFound, "not_found", "",
			`flow "ghost" does not exist`)
		requireHookError(t, h.post("/hooks/tokened", `[1]`, http.Header{"Authorization": {"Bearer " + h.operator}}), http.StatusBadRequest, "invalid_json", "", "")
		for _, tok := range []string{h.operator, editor, h.admin} {
			for _, f := range []string{"inbound", "tokened"} {
				run := requireRun(t, h.post("/hooks/"+f, `{"user":"op"}`, http.Header{"Authorization": {"Bearer " + tok}}), http.StatusAccepted)
				require.Equal(t, f, run.Flow)
			}
		}
		// A signature does not open a token webhook.
		body := `{"user":"sig"}`
		requireHookError(t, h.post("/hooks/tokened", body, signed(h.clock.Now(), body, h.secret)), http.StatusUnauthorized, "bad_signature", "X-Trustflow-Signature", "")
	})
}

// recipe returns the shell commands between the webhook-recipe markers of
// docs/flows.md.
func recipe(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile("../../docs/flows.md")
	require.NoError(t, err)
	_, rest, ok := strings.Cut(string(doc), "<!-- webhook-recipe -->\n```sh\n")
	require.True(t, ok, "docs/flows.md has no webhook recipe")
	cmds, _, ok := strings.Cut(rest, "```")
	require.True(t, ok)
	return cmds
}

// TestWebhookRecipeInTheDocsWorks runs the signing recipe of docs/flows.md,
// exactly as written, with the real curl and openssl, against a running
// server.
func TestWebhookRecipeInTheDocsWorks(t *testing.T) {
	t.Parallel()
	for _, bin := range []string{"bash", "curl", "openssl", "date"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s is not installed", bin)
		}
	}
	st := storetest.Open(t, store.SQLite)
	h := newHookEnv(t, st)
	h.clock.Set(time.Now()) // date +%s is the wall clock
	srv := httptest.NewServer(h.server.Handler())
	t.Cleanup(srv.Close)
	cmds := recipe(t)
	env := []string{"TRUSTFLOW_SERVER=" + srv.URL, "FLOW=inbound", "SECRET=" + h.secret, `BODY={"user":"from the docs"}`, "DELIVERY=evt-docs"}

	out, err := runShell(t, cmds, env)
	require.NoError(t, err, "%s", out)
	var run engine.RunView
	require.NoError(t, json.Unmarshal(out, &run), "%s", out)
	require.Equal(t, "inbound", run.Flow)
	require.Equal(t, "webhook", run.Trigger)
	require.Equal(t, map[string]any{"user": "from the docs"}, run.Input)

	// The same recipe with another secret is refused, and starts nothing.
	env[2] = "SECRET=" + strings.Repeat("0", 64)
	out, err = runShell(t, cmds, env)
	require.Error(t, err, "curl --fail-with-body exits non-zero on a refusal")
	require.Contains(t, string(out), `"code": "bad_signature"`)
	require.Len(t, h.runs(t, "inbound"), 1)
}

// runShell runs script with bash -eu in an environment of PATH and env,
// and returns its standard output (and error output, on failure).
func runShell(t *testing.T, script string, env []string) ([]byte, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "recipe.sh")
	require.NoError(t, os.WriteFile(path, []byte(script), 0o600))
	cmd := exec.Command("bash", "-eu", path)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		out = append(out, stderr.Bytes()...)
	}
	return out, err
}
