-- Trust anchors: named bundles of CA certificates, kept as PEM.
CREATE TABLE cas (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    pem         TEXT NOT NULL,
    allow_leaf  BOOLEAN NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    revision    BIGINT NOT NULL
);

-- Client identities; each has versions, at most one active.
CREATE TABLE identities (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    description    TEXT NOT NULL,
    active_version INTEGER,
    last_version   INTEGER NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    revision       BIGINT NOT NULL
);

-- One version of an identity: the sealed private key, and once installed
-- its certificate and chain. status: pending (no certificate yet), staged
-- (ready, inactive), active, retired.
CREATE TABLE identity_versions (
    identity_id  TEXT NOT NULL REFERENCES identities (id) ON DELETE CASCADE,
    version      INTEGER NOT NULL,
    status       TEXT NOT NULL,
    source       TEXT NOT NULL,
    key_type     TEXT NOT NULL,
    sealed_key   BYTEA NOT NULL,
    kek_id       TEXT NOT NULL,
    csr_pem      TEXT NOT NULL,
    cert_pem     TEXT NOT NULL,
    chain_pem    TEXT NOT NULL,
    serial       TEXT NOT NULL,
    subject      TEXT NOT NULL,
    issuer       TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    not_before   BIGINT,
    not_after    BIGINT,
    activate_on_install BOOLEAN NOT NULL,
    created_at   BIGINT NOT NULL,
    activated_at BIGINT,
    PRIMARY KEY (identity_id, version)
);
CREATE INDEX identity_versions_not_after ON identity_versions (not_after);
