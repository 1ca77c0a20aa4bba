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

CREATE VIRTUAL TABLE entities_fts USING fts5(
    title, content, content = 'entities', content_rowid = 'rowid', tokenize = 'unicode61'
);
CREATE TRIGGER entities_fts_insert AFTER INSERT ON entities WHEN NOT new.deleted BEGIN
    INSERT INTO entities_fts (rowid, title, content) VALUES (new.rowid, new.title, new.content);
END;
CREATE TRIGGER entities_fts_update AFTER UPDATE OF content, metadata, deleted ON entities BEGIN
    INSERT INTO entities_fts (entities_fts, rowid, title, content)
        SELECT 'delete', old.rowid, old.title, old.content WHERE NOT old.deleted;
    INSERT INTO entities_fts (rowid, title, content)
        SELECT new.rowid, new.title, new.content WHERE NOT new.deleted;
END;
