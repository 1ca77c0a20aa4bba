-- The search index is tokenised by the store itself now, as queries are
-- (`terms::tsvector_literal`), no longer by PostgreSQL's parser: every live
-- entity is queued once, so the next refresh rebuilds it that way.
INSERT INTO search_queue (entity_type, id)
SELECT entity_type, id FROM entities WHERE NOT deleted
ON CONFLICT DO NOTHING;
