-- The text that preceded the content in the entity's file, exactly as
-- written (byte-order mark, frontmatter block), so a file written anywhere
-- from the entity is the original. NULL: nothing preceded it, or not known
-- (written before this column; directory-sync fills it from its sync state).
ALTER TABLE entities ADD COLUMN frontmatter TEXT;
