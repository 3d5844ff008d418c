-- Lifecycle events already emitted (expiry warnings fire once per threshold).
CREATE TABLE events_emitted (
    key        TEXT PRIMARY KEY,
    emitted_at BIGINT NOT NULL
);
