-- The full-text index follows the revision counter instead of a queue that
-- triggers fill: every write already gives its rows a new revision, so the
-- rows to index are those above the last revision indexed. Writes no longer
-- pay a trigger and a queue insert per row.
DROP TRIGGER entities_search_insert;
DROP TRIGGER entities_search_update;
CREATE TABLE search_indexed (
    only_row INTEGER PRIMARY KEY CHECK (only_row = 1),
    revision INTEGER NOT NULL
);
-- Rows still queued are indexed again from the start (0); otherwise the
-- index is complete up to the current revision.
INSERT INTO search_indexed (only_row, revision)
SELECT 1, CASE WHEN EXISTS (SELECT 1 FROM search_queue) THEN 0
               ELSE (SELECT COALESCE(MAX(revision), 0) FROM entities) END;
DROP TABLE search_queue;
