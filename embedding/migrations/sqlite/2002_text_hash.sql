-- The hash of the exact text embedded (content and chunk settings), so an
-- entity whose metadata alone changed keeps its vectors: `content_hash` then
-- moves on to the entity's new hash without embedding anything. NULL for
-- vectors made before this column or imported from a file: the next change
-- of their entity embeds them once.
ALTER TABLE entity_vectors ADD COLUMN text_hash TEXT;
