-- Runs are dispatched from their own table: due_at is when a run should be
-- advanced next (NULL: nothing to do, it has ended), and a node advances a
-- due run only under its lease (lease_owner, lease_until), which it
-- heartbeats while it holds it. wakes counts the wake-ups (a cancel, a
-- finished sub-run, a retry): an owner that yields compares it with the
-- count it read, so that a wake-up during an advance is never lost.
ALTER TABLE runs ADD COLUMN due_at BIGINT;
ALTER TABLE runs ADD COLUMN wakes BIGINT NOT NULL DEFAULT 0;
UPDATE runs SET due_at = updated_at WHERE status IN ('queued', 'running', 'sleeping');
CREATE INDEX runs_due ON runs (due_at) WHERE due_at IS NOT NULL;
-- Counting a flow's runs in flight (settings.concurrency, --max-runs-in-flight)
-- reads only those runs.
CREATE INDEX runs_flow_status ON runs (flow_name, status);
