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
    search       TSVECTOR GENERATED ALWAYS AS (
        setweight(to_tsvector('simple', coalesce(metadata ->> 'title', '')), 'A')
        || setweight(to_tsvector('simple', content), 'B')
    ) STORED,
    PRIMARY KEY (entity_type, id)
);
CREATE INDEX entities_revision ON entities (revision);
CREATE INDEX entities_search ON entities USING GIN (search);
