-- Outbound API connectors. Non-secret auth settings are JSON in auth;
-- secrets (passwords, tokens, client secrets) are sealed in sealed_secret.
CREATE TABLE connectors (
    id                           TEXT PRIMARY KEY,
    name                         TEXT NOT NULL UNIQUE,
    description                  TEXT NOT NULL,
    url                          TEXT NOT NULL,
    auth_type                    TEXT NOT NULL,
    identity                     TEXT NOT NULL,
    system_roots                 BOOLEAN NOT NULL,
    server_name                  TEXT NOT NULL,
    pins                         TEXT NOT NULL,
    min_tls                      TEXT NOT NULL,
    timeout_ms                   BIGINT NOT NULL,
    headers                      TEXT NOT NULL,
    auth                         TEXT NOT NULL,
    sealed_secret                BLOB,
    kek_id                       TEXT NOT NULL,
    allow_plaintext              BOOLEAN NOT NULL,
    allow_no_client_auth_request BOOLEAN NOT NULL,
    created_at                   BIGINT NOT NULL,
    updated_at                   BIGINT NOT NULL,
    revision                     BIGINT NOT NULL,
    last_test_at                 BIGINT,
    last_test_ok                 BOOLEAN,
    last_error                   TEXT NOT NULL
);
CREATE INDEX connectors_identity ON connectors (identity);

-- Which CA bundles a connector trusts, in order.
CREATE TABLE connector_cas (
    connector_id TEXT NOT NULL REFERENCES connectors (id) ON DELETE CASCADE,
    position     INTEGER NOT NULL,
    ca_name      TEXT NOT NULL,
    PRIMARY KEY (connector_id, position)
);
CREATE INDEX connector_cas_ca ON connector_cas (ca_name);
