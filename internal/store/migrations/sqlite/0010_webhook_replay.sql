-- Webhooks without replay.
--
-- webhook_replays remembers each signed webhook request accepted: mac is the
-- hex HMAC-SHA256 of its "timestamp.body" under each secret the flow had
-- then, so the same request (signed with any of them) is refused while its
-- timestamp is still inside the signing window; expires_at is that
-- timestamp plus the window.
CREATE TABLE webhook_replays (
    flow_name  TEXT NOT NULL,
    mac        TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (flow_name, mac)
);
CREATE INDEX webhook_replays_expires ON webhook_replays (expires_at);

-- webhook_deliveries maps an X-Trustflow-Delivery id to the run its first
-- delivery started, so that a retried delivery returns that run. The primary
-- key makes two concurrent deliveries of one id start one run.
CREATE TABLE webhook_deliveries (
    flow_name   TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (flow_name, delivery_id)
);
CREATE INDEX webhook_deliveries_expires ON webhook_deliveries (expires_at);

-- The secret a rotation replaced, sealed (bound to
-- trustflow/flow/<name>/webhook/previous), still valid until
-- webhook_secret_previous_until (Unix microseconds); 0 and NULL when none.
ALTER TABLE flows ADD COLUMN webhook_secret_previous BLOB;
ALTER TABLE flows ADD COLUMN webhook_secret_previous_kek_id TEXT NOT NULL DEFAULT '';
ALTER TABLE flows ADD COLUMN webhook_secret_previous_until BIGINT NOT NULL DEFAULT 0;
