package engine_test

import (
	"context"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/apiclient"
	"github.com/trustflow/trustflow/internal/clock"
	"github.com/trustflow/trustflow/internal/engine"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/store/storetest"
)

func TestParseWebhookSignature(t *testing.T) {
	t.Parallel()
	a, b := strings.Repeat("ab", 32), strings.Repeat("0F", 32)
	raw := func(h string) []byte { v, _ := hex.DecodeString(h); return v }
	for h, want := range map[string][][]byte{
		"v1=" + a:                     {raw(a)},
		"v1=" + a + ",v1=" + b:        {raw(a), raw(b)},
		" v1=" + a + " ,\tv1=" + b:    {raw(a), raw(b)},
		"v0=old,v1=" + a + ",v2=next": {raw(a)},
	} {
		got, err := engine.ParseWebhookSignature(h)
		require.NoError(t, err, h)
		require.Equal(t, want, got, h)
	}
	for h, msg := range map[string]string{
		"":                               "empty",
		"   ":                            "empty",
		"v1=" + a + ",":                  "element 2 is empty",
		a:                                "element 1 has no scheme: want v1=<hex>",
		"v2=" + a:                        "no v1= value",
		"v1=" + a[:62]:                   "v1= value 1 has 62 characters: want 64 hex digits",
		"v1=" + a + ",v1=" + a + "":      "",
		"v1=" + strings.Repeat("zz", 32): "v1= value 1 is not hex",
		"sha256=" + a:                    "sha256= signatures of the body alone are no longer accepted: the signature must cover the timestamp",
		strings.TrimSuffix(strings.Repeat("v1="+a+",", 9), ","): "more than 8 v1= values (limit webhook_signatures: 8)",
		strings.Repeat("x", 1025):                               "the header is 1025 bytes long (limit webhook_signature_header: 1024 bytes)",
	} {
		got, err := engine.ParseWebhookSignature(h)
		if msg == "" {
			require.NoError(t, err)
			require.Len(t, got, 2)
			continue
		}
		e, ok := errs.As(err)
		require.True(t, ok, "%q: %v", h, err)
		require.Equal(t, errs.Invalid, e.Kind)
		require.Equal(t, "X-Trustflow-Signature", e.Field)
		require.Equal(t, msg, e.Message, h)
		require.NotEmpty(t, e.Hint)
	}
}

// FuzzParseWebhookSignature: no header crashes the parser; what it
// accepts is 1 to 8 MACs, and writing them back parses to the same.
func FuzzParseWebhookSignature(f *testing.F) {
	f.Add("v1=" + strings.Repeat("ab", 32))
	f.Add("v1=" + strings.Repeat("ab", 32) + ", v1=" + strings.Repeat("cd", 32))
	f.Add("sha256=" + strings.Repeat("ab", 32))
	f.Add("v1=,v1=")
	f.Fuzz(func(t *testing.T, h string) {
		sigs, err := engine.ParseWebhookSignature(h)
		if err != nil {
			e, ok := errs.As(err)
			require.True(t, ok, "%T", err)
			require.Equal(t, errs.Invalid, e.Kind)
			require.Nil(t, sigs)
			return
		}
		require.NotEmpty(t, sigs)
		require.LessOrEqual(t, len(sigs), engine.MaxWebhookSignatures)
		var parts []string
		for _, s := range sigs {
			require.Len(t, s, 32)
			parts = append(parts, "v1="+hex.EncodeToString(s))
		}
		again, err := engine.ParseWebhookSignature(strings.Join(parts, ","))
		require.NoError(t, err)
		require.Equal(t, sigs, again)
	})
}

// FuzzParseWebhookTimestamp: only decimal Unix seconds are accepted, and
// they mean what they say.
func FuzzParseWebhookTimestamp(f *testing.F) {
	for _, s := range []string{"1772355600", "0", "007", "-1", "1e9", " 17", "999999999999", "9999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		ts, err := engine.ParseWebhookTimestamp(h)
		if err != nil {
			e, ok := errs.As(err)
			require.True(t, ok, "%T", err)
			require.Equal(t, "X-Trustflow-Timestamp", e.Field)
			return
		}
		want := strings.TrimLeft(h, "0")
		if want == "" {
			want = "0"
		}
		require.Equal(t, want, strconv.FormatInt(ts.Unix(), 10))
	})
}

func TestDeliveryIDs(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"", "evt_1", "3f2c1a9e-6b1d-4c1e-9a57-0d9e1c7a4b21", strings.Repeat("~", 200)} {
		require.NoError(t, engine.CheckDeliveryID(ok), ok)
	}
	for id, msg := range map[string]string{
		strings.Repeat("a", 201): "201 characters long (limit webhook_delivery_id: 200)",
		"a b":                    "character 2 is not visible ASCII",
		"é":                      "character 1 is not visible ASCII",
		"a\n":                    "character 2 is not visible ASCII",
	} {
		e, ok := errs.As(engine.CheckDeliveryID(id))
		require.True(t, ok)
		require.Equal(t, "X-Trustflow-Delivery", e.Field)
		require.Equal(t, msg, e.Message)
	}
}

// TestWebhookWindowIsConfigured: Config.WebhookWindow bounds the skew,
// and an accepted signature is remembered exactly that long.
func TestWebhookWindowIsConfigured(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		fake := clock.NewFake(time.Now().UTC().Truncate(time.Second))
		e := newEnvWith(t, st, func(c *engine.Config) { c.WebhookWindow = time.Minute; c.Clock = fake })
		e.apply(t, hookHMAC)
		secret, err := e.eng.WebhookSecret(ctx, admin, "hook-hmac")
		require.NoError(t, err)
		verify := func(at time.Time, body string) (*engine.WebhookProof, error) {
			ts, sig := apiclient.SignWebhook(at, []byte(body), secret)
			return e.eng.VerifyWebhook(ctx, engine.SignedWebhook{Flow: "hook-hmac", Timestamp: ts, Signature: sig, Body: []byte(body)})
		}
		_, err = verify(fake.Now().Add(-61*time.Second), `{"user":"a"}`)
		require.Equal(t, "webhook_timestamp_outside_window", errs.CodeOf(err))
		require.ErrorContains(t, err, "(limit webhook_window: 1m0s either way)")
		_, err = verify(fake.Now().Add(61*time.Second), `{"user":"a"}`)
		require.Equal(t, "webhook_timestamp_outside_window", errs.CodeOf(err))

		at := fake.Now().Add(-59 * time.Second)
		proof, err := verify(at, `{"user":"a"}`)
		require.NoError(t, err)
		res, err := e.eng.StartWebhookRun(ctx, engine.WebhookStart{Flow: "hook-hmac", Input: map[string]any{"user": "a"}, Actor: admin, Proof: proof})
		require.NoError(t, err)
		require.False(t, res.Duplicate)
		proof, err = verify(at, `{"user":"a"}`)
		require.NoError(t, err, "the signature itself still verifies")
		_, err = e.eng.StartWebhookRun(ctx, engine.WebhookStart{Flow: "hook-hmac", Input: map[string]any{"user": "a"}, Actor: admin, Proof: proof})
		require.Equal(t, "webhook_replayed", errs.CodeOf(err))

		// Remembered until its timestamp leaves the window, then purged.
		var n int
		count := func() int {
			require.NoError(t, st.DB().QueryRowContext(ctx, "SELECT COUNT(*) FROM webhook_replays").Scan(&n))
			return n
		}
		fake.Advance(time.Second)
		require.NoError(t, e.eng.PurgeWebhooks(ctx))
		require.Equal(t, 1, count())
		fake.Advance(time.Second)
		require.NoError(t, e.eng.PurgeWebhooks(ctx))
		require.Zero(t, count())
		_, err = verify(at, `{"user":"a"}`)
		require.Equal(t, "webhook_timestamp_outside_window", errs.CodeOf(err), "and by then the window refuses it")

		// A proof is for its flow only.
		proof, err = verify(fake.Now(), `{"user":"b"}`)
		require.NoError(t, err)
		_, err = e.eng.StartWebhookRun(ctx, engine.WebhookStart{Flow: "hook-token", Actor: admin, Proof: proof})
		require.ErrorContains(t, err, "a webhook proof for flow \"hook-hmac\" used for flow \"hook-token\"")
	})
}
