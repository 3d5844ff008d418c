-- Web console sessions, shared by every node. id_hash is the SHA-256 (hex) of
-- the random session id in the browser's cookie; the id itself is never
-- stored, and the form (CSRF) token is derived from it, so a copy of this
-- table signs nobody in. token_id is the API token the session signed in
-- with: it is checked on every request, and revoking it deletes its rows.
-- flash is a one-time UI message for the next page.
CREATE TABLE console_sessions (
    id_hash    TEXT PRIMARY KEY,
    token_id   TEXT NOT NULL REFERENCES tokens (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    last_seen  BIGINT NOT NULL,
    flash      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX console_sessions_token ON console_sessions (token_id);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);
