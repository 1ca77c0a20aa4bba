-- One row per chunk of an entity and model. `span_start`/`span_end` are byte
-- offsets of the chunk in the content, for snippets.
CREATE TABLE entity_vectors (
    entity_type  TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    model_id     TEXT    NOT NULL,
    chunk        INTEGER NOT NULL,
    dimensions   INTEGER NOT NULL,
    content_hash TEXT    NOT NULL,
    span_start   INTEGER NOT NULL,
    span_end     INTEGER NOT NULL,
    vector       BLOB    NOT NULL,
    PRIMARY KEY (entity_type, id, model_id, chunk)
);
CREATE INDEX entity_vectors_model ON entity_vectors (model_id);
