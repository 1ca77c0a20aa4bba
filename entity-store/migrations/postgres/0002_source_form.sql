-- The text that preceded the content in the entity's file, exactly as
-- written (byte-order mark, frontmatter block), so a file written anywhere
-- from the entity is the original. NULL: nothing preceded it, or not known.
ALTER TABLE entities ADD COLUMN frontmatter TEXT;
-- JSON keeps the author's key order (JSONB sorts keys); filters cast to
-- JSONB where they compare. Orders already lost stay as JSONB left them.
ALTER TABLE entities ALTER COLUMN metadata TYPE JSON USING metadata::json;
