-- The keyed audit chain. A record with a key_id is chained with
-- HMAC-SHA256 under that audit key (which lives outside the database, like
-- the KEK); a record without one (written before the database had an audit
-- key) keeps its SHA-256 link. The head remembers the key of its record, so
-- a writer without the audit key cannot append unkeyed records after keyed
-- ones.
ALTER TABLE audit_records ADD COLUMN key_id TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_head ADD COLUMN key_id TEXT NOT NULL DEFAULT '';

-- The audit key this database's chain is keyed under: its id (a fingerprint
-- of its Ed25519 checkpoint public key) and that public key, never the key
-- itself; keyed_from is the first record chained under it.
CREATE TABLE audit_keys (
    key_id     TEXT PRIMARY KEY,
    public_key TEXT NOT NULL,
    keyed_from BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Signed checkpoints of the chain: the head at seq, signed with the audit
-- key's Ed25519 key. Copies live outside the database too (the node's data
-- dir, the log stream); the rows here let any node and `audit verify` check
-- the chain against every checkpoint ever made.
CREATE TABLE audit_checkpoints (
    seq        BIGINT PRIMARY KEY,
    head_hash  TEXT NOT NULL,
    keyed_from BIGINT NOT NULL,
    time       BIGINT NOT NULL,
    key_id     TEXT NOT NULL,
    signature  TEXT NOT NULL
);
