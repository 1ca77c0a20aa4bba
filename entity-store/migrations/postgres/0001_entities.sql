CREATE SEQUENCE entity_revision;

CREATE TABLE entities (
    entity_type  TEXT        NOT NULL,
    id           TEXT        NOT NULL,
    content      TEXT        NOT NULL,
    metadata     JSONB       NOT NULL,
    content_hash TEXT        NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    version      BIGINT      NOT NULL,
    revision     BIGINT      NOT NULL,
    deleted      BOOLEAN     NOT NULL DEFAULT FALSE,
    PRIMARY KEY (entity_type, id)
);
CREATE INDEX entities_revision ON entities (revision);

-- Full-text index, maintained in bulk: `to_tsvector` costs far more than the
-- row write, so writes only queue the key and `refresh_search_index` (and
-- every search) indexes the queue in one statement.
CREATE TABLE entity_search (
    entity_type TEXT     NOT NULL,
    id          TEXT     NOT NULL,
    search      TSVECTOR NOT NULL,
    PRIMARY KEY (entity_type, id)
);
CREATE INDEX entity_search_gin ON entity_search USING GIN (search);
CREATE TABLE search_queue (
    entity_type TEXT NOT NULL,
    id          TEXT NOT NULL,
    PRIMARY KEY (entity_type, id)
);
