-- The key-encryption keys this database's sealed values are wrapped by: ids
-- only, never a key. state: active (new seals use it; exactly one row),
-- retiring (active before an unfinished rotation: blobs may still name it),
-- retired (no blob names it any more).
CREATE TABLE keks (
    id           TEXT PRIMARY KEY,
    state        TEXT NOT NULL,
    source       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    activated_at BIGINT,
    retired_at   BIGINT
);

-- A sealed step state names its KEK like every other sealed column, so the
-- startup check and a rotation find it without parsing every state.
ALTER TABLE run_steps ADD COLUMN state_kek_id TEXT NOT NULL DEFAULT '';
