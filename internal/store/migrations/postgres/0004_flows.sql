-- Flows: every applied version is kept, even after the flow is removed, so
-- that a run always finds the version it pinned and a version number, once
-- used, always means one document.
CREATE TABLE flows (
    name            TEXT PRIMARY KEY,
    current_version INTEGER NOT NULL,
    trigger_kind    TEXT NOT NULL,
    webhook_secret  BYTEA,
    kek_id          TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE flow_versions (
    flow_name  TEXT NOT NULL,
    version    INTEGER NOT NULL,
    digest     TEXT NOT NULL,
    filename   TEXT NOT NULL,
    source     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (flow_name, version)
);

-- Runs. input holds the input with secret inputs redacted; input_sealed
-- the whole input, sealed, for the executor.
CREATE TABLE runs (
    id            TEXT PRIMARY KEY,
    flow_name     TEXT NOT NULL,
    flow_version  INTEGER NOT NULL,
    status        TEXT NOT NULL,
    trigger_kind  TEXT NOT NULL,
    input         TEXT NOT NULL,
    input_sealed  BYTEA NOT NULL,
    kek_id        TEXT NOT NULL,
    output        TEXT NOT NULL,
    error         TEXT NOT NULL,
    parent_run_id TEXT NOT NULL,
    parent_step   TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    started_at    BIGINT,
    finished_at   BIGINT,
    updated_at    BIGINT NOT NULL,
    lease_owner   TEXT NOT NULL,
    lease_until   BIGINT NOT NULL,
    cancel_requested BOOLEAN NOT NULL
);
CREATE INDEX runs_flow ON runs (flow_name, created_at);
CREATE INDEX runs_status ON runs (status, created_at);
CREATE INDEX runs_parent ON runs (parent_run_id);

-- One checkpoint per step execution; path names loop iterations
-- (groups[3].remove).
CREATE TABLE run_steps (
    run_id          TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    path            TEXT NOT NULL,
    step_id         TEXT NOT NULL,
    kind            TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    state           TEXT NOT NULL,
    output          TEXT NOT NULL,
    evidence        TEXT NOT NULL,
    error           TEXT NOT NULL,
    started_at      BIGINT,
    finished_at     BIGINT,
    next_attempt_at BIGINT,
    duration_ms     BIGINT NOT NULL,
    seq             BIGINT NOT NULL,
    PRIMARY KEY (run_id, path)
);
