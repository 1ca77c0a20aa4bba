CREATE TABLE entities (
    entity_type  TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    content      TEXT    NOT NULL,
    metadata     TEXT    NOT NULL,
    content_hash TEXT    NOT NULL,
    created_at   TEXT    NOT NULL,
    updated_at   TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    revision     INTEGER NOT NULL,
    deleted      INTEGER NOT NULL DEFAULT 0,
    title        TEXT GENERATED ALWAYS AS (json_extract(metadata, '$.title')) VIRTUAL,
    PRIMARY KEY (entity_type, id)
);
CREATE INDEX entities_revision ON entities (revision);

-- Full-text index, maintained in bulk: writes only queue the row (cheap),
-- `refresh_search_index` (and every search) indexes the queue in one pass.
CREATE VIRTUAL TABLE entities_fts USING fts5(title, content, tokenize = 'unicode61');
CREATE TABLE search_queue (entity_rowid INTEGER PRIMARY KEY);
CREATE TRIGGER entities_search_insert AFTER INSERT ON entities BEGIN
    -- Not INSERT OR IGNORE: an outer upsert's conflict clause would override it.
    INSERT INTO search_queue (entity_rowid)
        SELECT new.rowid WHERE NOT EXISTS (SELECT 1 FROM search_queue WHERE entity_rowid = new.rowid);
END;
CREATE TRIGGER entities_search_update AFTER UPDATE OF content, metadata, deleted ON entities BEGIN
    -- Not INSERT OR IGNORE: an outer upsert's conflict clause would override it.
    INSERT INTO search_queue (entity_rowid)
        SELECT new.rowid WHERE NOT EXISTS (SELECT 1 FROM search_queue WHERE entity_rowid = new.rowid);
END;
