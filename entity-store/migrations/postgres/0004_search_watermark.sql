-- The search index follows the revision counter, as on SQLite: every write
-- already gives its rows new revisions, in commit order (writers take turns
-- on an advisory lock before drawing them), so the rows to index are those
-- above the last revision indexed. Writes no longer insert each key into a
-- queue table, which cost a heap row and an index entry per entity written.
CREATE TABLE search_indexed (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    revision BIGINT  NOT NULL
);
-- Rows still queued are indexed again from the start (0); otherwise the
-- index is complete up to the current revision.
INSERT INTO search_indexed (only_row, revision)
SELECT TRUE, CASE WHEN EXISTS (SELECT 1 FROM search_queue) THEN 0
                  ELSE (SELECT COALESCE(MAX(revision), 0) FROM entities) END;
DROP TABLE search_queue;
