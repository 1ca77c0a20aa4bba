-- The queue's states, as `JobState` names them: a row in any other state is
-- refused by the database itself, whatever writes it. SQLite adds a CHECK
-- constraint only with the table, so the table is rebuilt with it (a CHECK
-- costs about a microsecond a write; the triggers that could do the same
-- cost five).
CREATE TABLE jobs_checked (
    id               TEXT PRIMARY KEY,
    job_type         TEXT    NOT NULL,
    input            TEXT    NOT NULL,
    priority         INTEGER NOT NULL,
    state            TEXT    NOT NULL
        CONSTRAINT jobs_state_known CHECK (state IN ('queued', 'running', 'completed', 'failed', 'cancelled', 'dead')),
    run_at           INTEGER NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    progress_current INTEGER NOT NULL DEFAULT 0,
    progress_total   INTEGER NOT NULL DEFAULT 0,
    progress_message TEXT    NOT NULL DEFAULT '',
    output           TEXT,
    last_error       TEXT,
    source           TEXT,
    metadata         TEXT    NOT NULL DEFAULT '{}',
    dedup_key        TEXT,
    batch_id         TEXT,
    worker_id        TEXT,
    lease_expires_at INTEGER,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    heartbeat_at     INTEGER
);
INSERT INTO jobs_checked SELECT * FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_checked RENAME TO jobs;
CREATE UNIQUE INDEX jobs_dedup ON jobs (dedup_key)
    WHERE dedup_key IS NOT NULL AND state IN ('queued', 'running', 'failed');
CREATE INDEX jobs_runnable ON jobs (priority DESC, run_at, id) WHERE state IN ('queued', 'failed');
CREATE INDEX jobs_running ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_batch ON jobs (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
