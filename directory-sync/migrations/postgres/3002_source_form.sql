-- The folder's entity types at its last export: a folder that gains a type
-- reads every change again, so entities skipped for their type are written.
ALTER TABLE sync_roots ADD COLUMN export_types TEXT;
-- Entities written before they kept their file's source form take it from
-- the sync state of a folder that holds them (render checks that it still
-- says the entity's metadata, and edits it where it does not).
UPDATE entities SET frontmatter = (
    SELECT f.frontmatter FROM sync_files AS f
    WHERE f.entity_type = entities.entity_type AND f.entity_id = entities.id AND f.frontmatter IS NOT NULL
    ORDER BY f.root LIMIT 1
) WHERE frontmatter IS NULL AND NOT deleted;
