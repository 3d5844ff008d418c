-- The organisation-wide egress and TLS policy: one row (id 1), the document
-- as JSON, a revision that every change bumps (nodes reload when it moves),
-- and who changed it last. No row means the default policy.
CREATE TABLE policy (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    document   TEXT NOT NULL,
    revision   BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL
);
