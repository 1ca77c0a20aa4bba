CREATE TABLE jobs (
    id               UUID PRIMARY KEY,
    job_type         TEXT    NOT NULL,
    input            JSONB   NOT NULL,
    priority         INTEGER NOT NULL,
    state            TEXT    NOT NULL,
    run_at           BIGINT  NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    progress_current BIGINT  NOT NULL DEFAULT 0,
    progress_total   BIGINT  NOT NULL DEFAULT 0,
    progress_message TEXT    NOT NULL DEFAULT '',
    output           JSONB,
    last_error       TEXT,
    source           TEXT,
    metadata         JSONB   NOT NULL DEFAULT '{}',
    dedup_key        TEXT,
    batch_id         UUID,
    worker_id        TEXT,
    lease_expires_at BIGINT,
    created_at       BIGINT  NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    heartbeat_at     BIGINT
);
-- Times are microseconds since the Unix epoch, the same on both backends.
CREATE UNIQUE INDEX jobs_dedup ON jobs (dedup_key)
    WHERE dedup_key IS NOT NULL AND state IN ('queued', 'running', 'failed');
CREATE INDEX jobs_runnable ON jobs (priority DESC, run_at, id) WHERE state IN ('queued', 'failed');
CREATE INDEX jobs_running ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_batch ON jobs (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
