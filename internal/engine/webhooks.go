package engine

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/errs"
	"github.com/trustflow/trustflow/internal/store"
)

// Signed webhooks. A sender of a flow with trigger {webhook: {auth: hmac}}
// sends
//
//	X-Trustflow-Timestamp: <unix seconds>
//	X-Trustflow-Signature: v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>
//
// (several comma-separated v1= values are accepted, so that a sender can
// sign with the old and the new secret while a rotation overlaps). A
// timestamp more than the window away from this node's clock is refused; a
// request accepted once is refused for as long as its timestamp is inside
// the window (its MACs are kept in the database, for every node); and an
// optional X-Trustflow-Delivery id makes a retried delivery return the run
// its first delivery started.
const (
	HeaderTimestamp = "X-Trustflow-Timestamp"
	HeaderSignature = "X-Trustflow-Signature"
	HeaderDelivery  = "X-Trustflow-Delivery"

	// MaxWebhookSignatures bounds the v1= values of one signature header.
	MaxWebhookSignatures = 8
	// MaxSignatureHeader bounds the signature header's length in bytes.
	MaxSignatureHeader = 1024
	// MaxDeliveryID bounds an X-Trustflow-Delivery id's length.
	MaxDeliveryID = 200
	// DefaultWebhookWindow is Config.WebhookWindow's default.
	DefaultWebhookWindow = 5 * time.Minute
	// DefaultWebhookDeliveryTTL is Config.WebhookDeliveryTTL's default.
	DefaultWebhookDeliveryTTL = 24 * time.Hour
	// DefaultWebhookOverlap is how long a rotated-out secret stays valid
	// unless the rotation says otherwise.
	DefaultWebhookOverlap = 24 * time.Hour
	// MaxWebhookOverlap bounds a rotation's overlap.
	MaxWebhookOverlap = 30 * 24 * time.Hour
)

// signatureHint says how to sign; every signature error carries it.
const signatureHint = `send ` + HeaderTimestamp + `: <unix seconds> and ` + HeaderSignature +
	`: v1=<hex HMAC-SHA256 of timestamp + "." + body under the flow's webhook secret>; see docs/flows.md, "Signing webhooks"`

// ParseWebhookSignature parses an X-Trustflow-Signature header: one or more
// comma-separated scheme=value elements, of which the v1= ones (64 hex
// digits each, at most MaxWebhookSignatures) are returned; elements of
// other schemes are skipped so that a sender may add future ones. The
// body-only sha256= form of earlier releases is refused with a hint.
func ParseWebhookSignature(h string) ([][]byte, error) {
	bad := func(msg string) error {
		return &errs.Error{Kind: errs.Invalid, Code: "invalid_signature", Field: HeaderSignature, Message: msg, Hint: signatureHint}
	}
	if len(h) > MaxSignatureHeader {
		return nil, bad(fmt.Sprintf("the header is %d bytes long (limit webhook_signature_header: %d bytes)", len(h), MaxSignatureHeader))
	}
	if strings.TrimSpace(h) == "" {
		return nil, bad("empty")
	}
	var out [][]byte
	for i, el := range strings.Split(h, ",") {
		el = strings.Trim(el, " \t")
		scheme, value, ok := strings.Cut(el, "=")
		switch {
		case el == "":
			return nil, bad(fmt.Sprintf("element %d is empty", i+1))
		case !ok:
			return nil, bad(fmt.Sprintf("element %d has no scheme: want v1=<hex>", i+1))
		case scheme == "sha256":
			return nil, bad("sha256= signatures of the body alone are no longer accepted: the signature must cover the timestamp")
		case scheme != "v1":
			continue
		}
		if len(out) == MaxWebhookSignatures {
			return nil, bad(fmt.Sprintf("more than %d v1= values (limit webhook_signatures: %d)", MaxWebhookSignatures, MaxWebhookSignatures))
		}
		if len(value) != 2*sha256.Size {
			return nil, bad(fmt.Sprintf("v1= value %d has %d characters: want %d hex digits", len(out)+1, len(value), 2*sha256.Size))
		}
		sig, err := hex.DecodeString(value)
		if err != nil {
			return nil, bad(fmt.Sprintf("v1= value %d is not hex", len(out)+1))
		}
		out = append(out, sig)
	}
	if len(out) == 0 {
		return nil, bad("no v1= value")
	}
	return out, nil
}

// ParseWebhookTimestamp parses an X-Trustflow-Timestamp header: decimal
// Unix seconds.
func ParseWebhookTimestamp(h string) (time.Time, error) {
	bad := func(msg string) error {
		return &errs.Error{Kind: errs.Invalid, Code: "invalid_timestamp", Field: HeaderTimestamp, Message: msg, Hint: signatureHint}
	}
	if h == "" {
		return time.Time{}, bad("required: the signature covers it")
	}
	if len(h) > 12 || strings.Trim(h, "0123456789") != "" {
		return time.Time{}, bad(fmt.Sprintf("%q is not Unix seconds", h))
	}
	s, err := strconv.ParseInt(h, 10, 64)
	if err != nil {
		return time.Time{}, bad(fmt.Sprintf("%q is not Unix seconds", h))
	}
	return time.Unix(s, 0).UTC(), nil
}

// CheckDeliveryID checks an X-Trustflow-Delivery id: 1 to MaxDeliveryID
// visible ASCII characters.
func CheckDeliveryID(id string) error {
	bad := func(msg string) error {
		return &errs.Error{Kind: errs.Invalid, Code: "invalid_delivery", Field: HeaderDelivery, Message: msg,
			Hint: "send a unique id per event (a UUID, say), the same on every retry of that event"}
	}
	if len(id) > MaxDeliveryID {
		return bad(fmt.Sprintf("%d characters long (limit webhook_delivery_id: %d)", len(id), MaxDeliveryID))
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return bad(fmt.Sprintf("character %d is not visible ASCII", i+1))
		}
	}
	return nil
}

// SignedWebhook is a webhook request that carries a signature.
type SignedWebhook struct {
	Flow string
	// Timestamp and Signature are the X-Trustflow-Timestamp and
	// X-Trustflow-Signature headers, as sent.
	Timestamp, Signature string
	Body                 []byte
}

// WebhookProof is a verified signature; only VerifyWebhook makes one.
type WebhookProof struct {
	flow     string
	signedAt time.Time
	// macs are the request's MACs (hex) under each secret the flow has:
	// the keys that refuse its replay.
	macs []string
}

// webhookDummy is a sealed random secret, for verifying signatures sent to
// flows that have no HMAC secret: the work (opening two sealed secrets,
// two MACs, every comparison) is the same as for one that has, so neither
// the answer nor its timing says whether the flow exists.
type webhookDummy struct {
	mu   sync.Mutex
	blob []byte
}

var dummyAAD = store.WebhookSecretAAD("") // no flow has an empty name

// open opens the dummy, sealing a new one when there is none or the KEK
// that sealed it is gone (a rotation).
func (d *webhookDummy) open(e *Engine) ([]byte, error) {
	d.mu.Lock()
	blob := d.blob
	d.mu.Unlock()
	if blob != nil {
		if raw, err := e.trust.OpenSecret(blob, dummyAAD); err == nil {
			return raw, nil
		}
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("engine: webhook dummy secret: %w", err)
	}
	raw := []byte(hex.EncodeToString(secret))
	blob, _, err := e.trust.SealSecret(raw, dummyAAD)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.blob = blob
	d.mu.Unlock()
	return e.trust.OpenSecret(blob, dummyAAD)
}

func errBadSignature() *errs.Error {
	return &errs.Error{Kind: errs.Unauthenticated, Code: "bad_signature", Field: HeaderSignature,
		Message: "no v1= value matches the timestamp and body under this webhook's secret", Hint: signatureHint}
}

// VerifyWebhook checks a signed webhook request: the timestamp within
// Config.WebhookWindow of this node's clock, and a v1= value that matches
// under the flow's secret or, during a rotation's overlap, its previous
// one. Unknown flows and flows without an HMAC secret are verified against
// a dummy secret and refused alike. The proof it returns is spent by
// StartWebhookRun, which refuses a replay.
func (e *Engine) VerifyWebhook(ctx context.Context, req SignedWebhook) (*WebhookProof, error) {
	ts, err := ParseWebhookTimestamp(req.Timestamp)
	if err != nil {
		return nil, err
	}
	if req.Signature == "" {
		return nil, &errs.Error{Kind: errs.Invalid, Code: "invalid_signature", Field: HeaderSignature, Message: "required with " + HeaderTimestamp, Hint: signatureHint}
	}
	sigs, err := ParseWebhookSignature(req.Signature)
	if err != nil {
		return nil, err
	}
	now := e.clock.Now()
	if skew := now.Sub(ts); skew > e.cfg.WebhookWindow || -skew > e.cfg.WebhookWindow {
		when := "behind"
		if skew < 0 {
			when, skew = "ahead of", -skew
		}
		return nil, &errs.Error{Kind: errs.Unauthenticated, Code: "webhook_timestamp_outside_window", Field: HeaderTimestamp,
			Message: fmt.Sprintf("%s is %s %s this server's clock (limit webhook_window: %s either way)", req.Timestamp, skew.Truncate(time.Second), when, e.cfg.WebhookWindow),
			Hint:    "sign each delivery when you send it, with the current time; check the sender's clock (NTP)"}
	}

	// Two candidate secrets, always: the current one and the previous one
	// in its overlap, each replaced by the dummy when the flow lacks it.
	keys, err := e.st.WebhookKeys(ctx, req.Flow)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	hmacFlow := err == nil && keys.TriggerKind == "webhook:hmac"
	type candidate struct {
		blob, aad []byte
		real      bool
	}
	cands := [2]candidate{{blob: nil, aad: dummyAAD}, {blob: nil, aad: dummyAAD}}
	if hmacFlow && len(keys.Secret) > 0 {
		cands[0] = candidate{blob: keys.Secret, aad: store.WebhookSecretAAD(req.Flow), real: true}
	}
	if hmacFlow && len(keys.Previous) > 0 && now.Before(keys.PreviousUntil) {
		cands[1] = candidate{blob: keys.Previous, aad: store.WebhookPreviousSecretAAD(req.Flow), real: true}
	}
	var macs [2][]byte
	for i, c := range cands {
		var secret []byte
		if c.real {
			secret, err = e.trust.OpenSecret(c.blob, c.aad)
		} else {
			secret, err = e.hookDummy.open(e)
		}
		if err != nil {
			return nil, fmt.Errorf("engine: open the webhook secret of flow %q: %w", req.Flow, err)
		}
		macs[i] = webhookMAC(secret, req.Timestamp, req.Body)
		clear(secret)
	}
	var match [2]bool
	for _, sig := range sigs {
		for i := range macs {
			match[i] = hmac.Equal(sig, macs[i]) || match[i]
		}
	}
	if !(match[0] && cands[0].real) && !(match[1] && cands[1].real) {
		return nil, errBadSignature()
	}
	p := &WebhookProof{flow: req.Flow, signedAt: ts}
	for i, c := range cands {
		if c.real {
			p.macs = append(p.macs, hex.EncodeToString(macs[i]))
		}
	}
	return p, nil
}

// webhookMAC is HMAC-SHA256(secret, timestamp + "." + body).
func webhookMAC(secret []byte, timestamp string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// WebhookStart starts a run from a webhook.
type WebhookStart struct {
	Flow  string
	Input map[string]any
	Actor audit.Actor
	// Proof is VerifyWebhook's, for a signed request; nil for a request
	// with a bearer token.
	Proof *WebhookProof
	// Delivery is the X-Trustflow-Delivery id, or "".
	Delivery string
}

// WebhookRun is what a webhook started.
type WebhookRun struct {
	Run RunView
	// Duplicate means Delivery names a delivery seen before: Run is the run
	// that one started, and nothing new was started.
	Duplicate bool
}

// errReplayed refuses a signed request accepted before.
func errReplayed() *errs.Error {
	return &errs.Error{Kind: errs.Conflict, Code: "webhook_replayed",
		Message: "this signed request was accepted before; a replay starts nothing",
		Hint:    "sign each delivery (and each retry) afresh with the current timestamp; to retry without a second run, send the same " + HeaderDelivery}
}

// StartWebhookRun starts a run of a flow with a webhook trigger, in one
// transaction with what makes it happen once: a signed request's MACs
// (a replay is refused, and changes nothing) and the delivery id's claim
// (a retried delivery gets the run the first one started).
func (e *Engine) StartWebhookRun(ctx context.Context, req WebhookStart) (WebhookRun, error) {
	if err := CheckDeliveryID(req.Delivery); err != nil {
		return WebhookRun{}, err
	}
	if req.Proof != nil && req.Proof.flow != req.Flow {
		return WebhookRun{}, fmt.Errorf("engine: a webhook proof for flow %q used for flow %q", req.Proof.flow, req.Flow)
	}
	var out WebhookRun
	var duplicate string
	sr := StartRequest{Flow: req.Flow, Input: req.Input, Trigger: "webhook", Actor: req.Actor}
	// With nothing to remember about the request, a flow with durability:
	// none runs it in memory. (A signed request's MACs and a delivery id
	// are committed before its run starts, so such a run is recorded at
	// once.)
	start := func(inMemoryOK bool) error {
		return e.startInline(func(l *lease) error {
			if l != nil {
				l.inMemoryOK = inMemoryOK
			}
			return e.st.InTxGrouped(ctx, func(tx *store.Tx) error {
				duplicate = ""
				head, err := tx.FlowByName(ctx, req.Flow)
				if errors.Is(err, store.ErrNotFound) {
					return errs.NotFoundNamed("flow", req.Flow, "see `trustflow flow list`")
				} else if err != nil {
					return err
				}
				if err := webhookTrigger(req)(head); err != nil {
					return err
				}
				now := e.clock.Now().UTC().Truncate(time.Microsecond)
				if req.Proof != nil {
					fresh, err := tx.MarkWebhookSignatures(ctx, req.Flow, req.Proof.macs, req.Proof.signedAt.Add(e.cfg.WebhookWindow))
					if err != nil {
						return err
					}
					if !fresh {
						return errReplayed()
					}
				}
				if req.Delivery != "" {
					claimed, runID, err := tx.ClaimWebhookDelivery(ctx, req.Flow, req.Delivery, now, now.Add(e.cfg.WebhookDeliveryTTL))
					if err != nil {
						return err
					}
					if !claimed {
						if runID == "" {
							return fmt.Errorf("engine: webhook delivery %q of flow %q has no run", req.Delivery, req.Flow)
						}
						duplicate = runID
						_, err := e.audit.Append(ctx, tx, audit.Entry{Actor: req.Actor, Action: "webhook.duplicate", Target: "run/" + runID,
							Details: map[string]any{"flow": req.Flow, "delivery": req.Delivery}})
						return err
					}
				}
				r, err := e.startRunTx(ctx, tx, sr, l)
				if err != nil {
					return err
				}
				if req.Delivery != "" {
					if err := tx.SetWebhookDeliveryRun(ctx, req.Flow, req.Delivery, r.ID); err != nil {
						return err
					}
				}
				out = WebhookRun{Run: runView(r, nil)}
				return nil
			})
		})
	}
	err := start(req.Proof == nil && req.Delivery == "")
	var im *inMemoryStart
	if errors.As(err, &im) {
		v, ok, err := e.startInMemory(ctx, sr, im.head, im.doc)
		if ok {
			return WebhookRun{Run: v}, err
		}
		// No worker free any more: the run starts durably.
		err = start(false)
	}
	if err != nil {
		return WebhookRun{}, err
	}
	if duplicate != "" {
		v, err := e.GetRun(ctx, duplicate)
		if err != nil {
			return WebhookRun{}, err
		}
		return WebhookRun{Run: v, Duplicate: true}, nil
	}
	return out, nil
}

// webhookTrigger refuses a flow without a webhook trigger (or, for a
// signed request, without an hmac one).
func webhookTrigger(req WebhookStart) func(store.Flow) error {
	return func(head store.Flow) error {
		kind, auth, _ := strings.Cut(head.TriggerKind, ":")
		if kind != "webhook" || (req.Proof != nil && auth != "hmac") {
			return &errs.Error{Kind: errs.NotFound, Code: "not_found", Message: fmt.Sprintf("flow %q has no webhook trigger", req.Flow),
				Hint: "set trigger: {webhook: {auth: token}} (or auth: hmac) in the flow"}
		}
		return nil
	}
}

// WebhookRotation is a rotated webhook secret.
type WebhookRotation struct {
	// Secret is the new secret; it is shown once.
	Secret string `json:"secret"`
	// PreviousValidUntil is when the replaced secret stops verifying;
	// absent when the rotation had no overlap.
	PreviousValidUntil *time.Time `json:"previous_valid_until,omitempty"`
}

// RotateWebhookSecret gives a flow's webhook a new secret. The replaced one
// keeps verifying for overlap (0 forgets it at once; at most
// MaxWebhookOverlap); a secret still in the overlap of an earlier rotation
// is forgotten now. The rotation is audited; the secrets are not.
func (e *Engine) RotateWebhookSecret(ctx context.Context, actor audit.Actor, name string, overlap time.Duration) (WebhookRotation, error) {
	if overlap < 0 || overlap > MaxWebhookOverlap {
		return WebhookRotation{}, errs.InvalidField("overlap", fmt.Sprintf("%s is not from 0s to %s (limit webhook_overlap: %s)", overlap, MaxWebhookOverlap, MaxWebhookOverlap),
			"give a duration such as 24h; 0s forgets the old secret at once")
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return WebhookRotation{}, fmt.Errorf("engine: generate webhook secret: %w", err)
	}
	secret := hex.EncodeToString(b)
	var out WebhookRotation
	err := e.st.InTx(ctx, func(tx *store.Tx) error {
		k, err := tx.WebhookKeys(ctx, name)
		if errors.Is(err, store.ErrNotFound) {
			return errs.NotFoundNamed("flow", name, "see `trustflow flow list`")
		} else if err != nil {
			return err
		}
		if len(k.Secret) == 0 {
			return errs.ConflictWith("no_webhook_secret", fmt.Sprintf("flow %q has no HMAC webhook trigger", name), "set trigger: {webhook: {auth: hmac}} and apply the flow")
		}
		now := e.clock.Now().UTC().Truncate(time.Microsecond)
		hadPrevious := len(k.Previous) > 0 && now.Before(k.PreviousUntil)
		k.Previous, k.PreviousKEKID, k.PreviousUntil = nil, "", time.Time{}
		out = WebhookRotation{Secret: secret}
		if overlap > 0 {
			old, err := e.trust.OpenSecret(k.Secret, store.WebhookSecretAAD(name))
			if err != nil {
				return err
			}
			k.Previous, k.PreviousKEKID, err = e.trust.SealSecret(old, store.WebhookPreviousSecretAAD(name))
			clear(old)
			if err != nil {
				return err
			}
			until := now.Add(overlap)
			k.PreviousUntil, out.PreviousValidUntil = until, &until
		}
		var kek string
		if k.Secret, kek, err = e.trust.SealSecret([]byte(secret), store.WebhookSecretAAD(name)); err != nil {
			return err
		}
		if err := tx.SetWebhookSecrets(ctx, k, kek, now); err != nil {
			return err
		}
		details := map[string]any{"overlap": overlap.String(), "earlier_previous_forgotten": hadPrevious}
		if out.PreviousValidUntil != nil {
			details["previous_valid_until"] = out.PreviousValidUntil.Format(time.RFC3339)
		}
		_, err = e.audit.Append(ctx, tx, audit.Entry{Actor: actor, Action: "flow.webhook_secret.rotate", Target: "flow/" + name, Details: details})
		return err
	})
	if err != nil {
		return WebhookRotation{}, err
	}
	return out, nil
}

// PurgeWebhooks deletes the signatures and delivery ids whose time is up,
// and forgets (audited) every previous webhook secret whose overlap ended.
// Every node runs it with its schedule sync.
func (e *Engine) PurgeWebhooks(ctx context.Context) error {
	now := e.clock.Now()
	if _, err := e.st.PurgeWebhookState(ctx, now); err != nil {
		return fmt.Errorf("engine: purge webhooks: %w", err)
	}
	names, err := e.st.FlowsWithExpiredPreviousSecret(ctx, now)
	if err != nil {
		return fmt.Errorf("engine: purge webhooks: %w", err)
	}
	for _, n := range names {
		err := e.st.InTx(ctx, func(tx *store.Tx) error {
			forgot, err := tx.ForgetPreviousWebhookSecret(ctx, n, now)
			if err != nil || !forgot {
				return err
			}
			_, err = e.audit.Append(ctx, tx, audit.Entry{Actor: audit.System, Action: "flow.webhook_secret.forget", Target: "flow/" + n,
				Details: map[string]any{"reason": "the rotation's overlap ended"}})
			return err
		})
		if err != nil {
			return fmt.Errorf("engine: purge webhooks: %w", err)
		}
	}
	return nil
}
