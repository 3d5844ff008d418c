package store

import (
	"context"
	"fmt"
	"time"
)

// WebhookKeys is what verifying a flow's signed webhook needs: its trigger
// and its sealed secrets.
type WebhookKeys struct {
	Flow        string
	TriggerKind string
	// Secret is the current secret, sealed (bound to WebhookSecretAAD).
	Secret []byte
	// Previous is the secret a rotation replaced, sealed (bound to
	// WebhookPreviousSecretAAD), valid until PreviousUntil; nil when none.
	Previous      []byte
	PreviousKEKID string
	PreviousUntil time.Time
}

const webhookKeyColumns = "name, trigger_kind, webhook_secret, webhook_secret_previous, webhook_secret_previous_kek_id, webhook_secret_previous_until"

func scanWebhookKeys(row interface{ Scan(...any) error }) (WebhookKeys, error) {
	var k WebhookKeys
	var until int64
	if err := row.Scan(&k.Flow, &k.TriggerKind, &k.Secret, &k.Previous, &k.PreviousKEKID, &until); err != nil {
		return WebhookKeys{}, err
	}
	if until > 0 {
		k.PreviousUntil = fromMicros(until)
	}
	return k, nil
}

// WebhookKeys reads a flow's webhook secrets.
func (s *Store) WebhookKeys(ctx context.Context, flow string) (WebhookKeys, error) {
	k, err := scanWebhookKeys(s.read.QueryRowContext(ctx, "SELECT "+webhookKeyColumns+" FROM flows WHERE name = $1", flow))
	if err != nil {
		return WebhookKeys{}, fmt.Errorf("store: webhook secrets of flow %q: %w", flow, mapErr(err))
	}
	return k, nil
}

// WebhookKeys reads a flow's webhook secrets inside the transaction
// (locking the flow on PostgreSQL).
func (t *Tx) WebhookKeys(ctx context.Context, flow string) (WebhookKeys, error) {
	q := "SELECT " + webhookKeyColumns + " FROM flows WHERE name = $1"
	if t.dialect == Postgres {
		q += " FOR UPDATE"
	}
	k, err := scanWebhookKeys(t.tx.QueryRowContext(ctx, q, flow))
	if err != nil {
		return WebhookKeys{}, fmt.Errorf("store: webhook secrets of flow %q: %w", flow, mapErr(err))
	}
	return k, nil
}

// SetWebhookSecrets replaces a flow's current webhook secret (sealed under
// kekID) and its previous one (nil Previous clears it).
func (t *Tx) SetWebhookSecrets(ctx context.Context, k WebhookKeys, kekID string, at time.Time) error {
	var prev any
	var until int64
	if len(k.Previous) > 0 {
		prev, until = k.Previous, micros(k.PreviousUntil)
	} else {
		k.PreviousKEKID = ""
	}
	res, err := t.tx.ExecContext(ctx, `UPDATE flows SET webhook_secret = $1, kek_id = $2, webhook_secret_previous = $3, webhook_secret_previous_kek_id = $4,
		webhook_secret_previous_until = $5, updated_at = $6 WHERE name = $7`,
		k.Secret, kekID, prev, k.PreviousKEKID, until, micros(at), k.Flow)
	if err != nil {
		return fmt.Errorf("store: set webhook secrets of flow %q: %w", k.Flow, mapErr(err))
	}
	return expectOne(res, "set webhook secrets of flow "+k.Flow)
}

// FlowsWithExpiredPreviousSecret names the flows whose previous webhook
// secret's overlap ended at or before now.
func (s *Store) FlowsWithExpiredPreviousSecret(ctx context.Context, now time.Time) ([]string, error) {
	rows, err := s.read.QueryContext(ctx, "SELECT name FROM flows WHERE webhook_secret_previous_until > 0 AND webhook_secret_previous_until <= $1 ORDER BY name", micros(now))
	if err != nil {
		return nil, fmt.Errorf("store: flows with an expired previous webhook secret: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("store: flows with an expired previous webhook secret: %w", err)
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// ForgetPreviousWebhookSecret clears a flow's previous webhook secret if
// its overlap ended at or before now, and reports whether it did (another
// node may have done it first).
func (t *Tx) ForgetPreviousWebhookSecret(ctx context.Context, flow string, now time.Time) (bool, error) {
	res, err := t.tx.ExecContext(ctx, `UPDATE flows SET webhook_secret_previous = NULL, webhook_secret_previous_kek_id = '', webhook_secret_previous_until = 0
		WHERE name = $1 AND webhook_secret_previous_until > 0 AND webhook_secret_previous_until <= $2`, flow, micros(now))
	if err != nil {
		return false, fmt.Errorf("store: forget the previous webhook secret of flow %q: %w", flow, mapErr(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("store: forget the previous webhook secret of flow %q: %w", flow, err)
	}
	return n == 1, nil
}

// MarkWebhookSignatures records the MACs of one accepted signed request,
// kept until expires, and reports whether all of them are new; false means
// the request was accepted before (a replay), and the caller must roll the
// transaction back.
func (t *Tx) MarkWebhookSignatures(ctx context.Context, flow string, macs []string, expires time.Time) (bool, error) {
	fresh := len(macs) > 0
	for _, m := range macs {
		res, err := t.tx.ExecContext(ctx, "INSERT INTO webhook_replays (flow_name, mac, expires_at) VALUES ($1, $2, $3) ON CONFLICT (flow_name, mac) DO NOTHING",
			flow, m, micros(expires))
		if err != nil {
			return false, fmt.Errorf("store: mark webhook signature of flow %q: %w", flow, mapErr(err))
		}
		n, err := res.RowsAffected()
		if err != nil {
			return false, fmt.Errorf("store: mark webhook signature of flow %q: %w", flow, err)
		}
		fresh = fresh && n == 1
	}
	return fresh, nil
}

// ClaimWebhookDelivery claims a delivery id of a flow for the transaction,
// kept until expires. It returns claimed true when the id is new (or its
// earlier claim expired before now): the caller starts the run and records
// it with SetWebhookDeliveryRun. Otherwise it returns the run the id's
// first delivery started. On PostgreSQL a concurrent claim of the same id
// waits for this transaction and then sees its run: the primary key makes
// two deliveries of one id start one run.
func (t *Tx) ClaimWebhookDelivery(ctx context.Context, flow, id string, now, expires time.Time) (claimed bool, runID string, err error) {
	res, err := t.tx.ExecContext(ctx, `INSERT INTO webhook_deliveries (flow_name, delivery_id, run_id, created_at, expires_at) VALUES ($1, $2, '', $3, $4)
		ON CONFLICT (flow_name, delivery_id) DO UPDATE SET run_id = '', created_at = excluded.created_at, expires_at = excluded.expires_at
		WHERE webhook_deliveries.expires_at <= $3`, flow, id, micros(now), micros(expires))
	if err != nil {
		return false, "", fmt.Errorf("store: claim webhook delivery %q of flow %q: %w", id, flow, mapErr(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, "", fmt.Errorf("store: claim webhook delivery %q of flow %q: %w", id, flow, err)
	}
	if n == 1 {
		return true, "", nil
	}
	if err := t.tx.QueryRowContext(ctx, "SELECT run_id FROM webhook_deliveries WHERE flow_name = $1 AND delivery_id = $2", flow, id).Scan(&runID); err != nil {
		return false, "", fmt.Errorf("store: read webhook delivery %q of flow %q: %w", id, flow, mapErr(err))
	}
	return false, runID, nil
}

// SetWebhookDeliveryRun records the run a claimed delivery started.
func (t *Tx) SetWebhookDeliveryRun(ctx context.Context, flow, id, runID string) error {
	res, err := t.tx.ExecContext(ctx, "UPDATE webhook_deliveries SET run_id = $1 WHERE flow_name = $2 AND delivery_id = $3", runID, flow, id)
	if err != nil {
		return fmt.Errorf("store: record the run of webhook delivery %q of flow %q: %w", id, flow, mapErr(err))
	}
	return expectOne(res, "record the run of webhook delivery "+id)
}

// WebhookPurge counts what PurgeWebhookState deleted.
type WebhookPurge struct {
	Replays, Deliveries int64
}

// PurgeWebhookState deletes remembered signatures and delivery ids that
// expired before now.
func (s *Store) PurgeWebhookState(ctx context.Context, now time.Time) (WebhookPurge, error) {
	var out WebhookPurge
	for _, p := range []struct {
		table string
		n     *int64
	}{{"webhook_replays", &out.Replays}, {"webhook_deliveries", &out.Deliveries}} {
		res, err := s.write.ExecContext(ctx, "DELETE FROM "+p.table+" WHERE expires_at < $1", micros(now))
		if err != nil {
			return out, fmt.Errorf("store: purge %s: %w", p.table, mapErr(err))
		}
		if *p.n, err = res.RowsAffected(); err != nil {
			return out, fmt.Errorf("store: purge %s: %w", p.table, err)
		}
	}
	return out, nil
}
