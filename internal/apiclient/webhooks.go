package apiclient

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"strconv"
	"time"
)

// The headers of a signed webhook request (POST /hooks/{flow}).
const (
	HeaderWebhookTimestamp = "X-Trustflow-Timestamp"
	HeaderWebhookSignature = "X-Trustflow-Signature"
	HeaderWebhookDelivery  = "X-Trustflow-Delivery"
)

// SignWebhook returns the X-Trustflow-Timestamp and X-Trustflow-Signature
// values that sign body at time at with each of secrets (several while a
// rotation overlaps): v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>.
func SignWebhook(at time.Time, body []byte, secrets ...string) (timestamp, signature string) {
	timestamp = strconv.FormatInt(at.Unix(), 10)
	for i, s := range secrets {
		m := hmac.New(sha256.New, []byte(s))
		m.Write([]byte(timestamp + "."))
		m.Write(body)
		if i > 0 {
			signature += ","
		}
		signature += "v1=" + hex.EncodeToString(m.Sum(nil))
	}
	return timestamp, signature
}

// WebhookRotation is a rotated webhook secret.
type WebhookRotation struct {
	// Secret is the new secret, shown once.
	Secret string `json:"secret"`
	// PreviousValidUntil is when the replaced secret stops verifying; nil
	// when the rotation had no overlap.
	PreviousValidUntil *time.Time `json:"previous_valid_until,omitempty"`
}

// WebhookSecret reads a flow's webhook HMAC secret (audited).
func (c *Client) WebhookSecret(ctx context.Context, flow string) (string, error) {
	var out struct {
		Secret string `json:"secret"`
	}
	err := c.Do(ctx, "GET", "/api/v1/flows/"+url.PathEscape(flow)+"/webhook-secret", nil, nil, &out)
	return out.Secret, err
}

// RotateWebhookSecret gives a flow's webhook a new secret; the old one keeps
// verifying for overlap (0 forgets it at once).
func (c *Client) RotateWebhookSecret(ctx context.Context, flow string, overlap time.Duration) (WebhookRotation, error) {
	var out WebhookRotation
	err := c.Do(ctx, "POST", "/api/v1/flows/"+url.PathEscape(flow)+"/webhook-secret/rotate", nil, map[string]string{"overlap": overlap.String()}, &out)
	return out, err
}
