-- The sync state of each folder (see src/state.rs). IF NOT EXISTS: databases
-- made before this migration existed already hold these tables.
CREATE TABLE IF NOT EXISTS sync_files (
    root TEXT NOT NULL,
    path TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    size BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    file_hash TEXT NOT NULL,
    entity_hash TEXT NOT NULL,
    frontmatter TEXT,
    PRIMARY KEY (root, path)
);
CREATE TABLE IF NOT EXISTS sync_roots (
    root TEXT PRIMARY KEY,
    export_revision BIGINT NOT NULL DEFAULT 0,
    last_sync TEXT,
    last_summary TEXT
);
CREATE TABLE IF NOT EXISTS sync_conflicts (
    root TEXT NOT NULL,
    conflict_path TEXT NOT NULL,
    path TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    detected_at TEXT NOT NULL,
    PRIMARY KEY (root, conflict_path)
);
-- One holder at a time per folder: whoever syncs, imports or exports it
-- (any thread, process or machine) holds the row until it releases it or
-- its lease (milliseconds since the Unix epoch) runs out.
CREATE TABLE sync_locks (
    root TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
