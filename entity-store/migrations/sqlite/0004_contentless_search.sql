-- The full-text index kept its own copy of every title and body (FTS5's
-- default "content" table): about a fifth of a real vault's database
-- (20.5 of 90.7 MB for the 2,889 windows-powershell-docs notes). Nothing
-- reads text back from it (search ranks with bm25() and joins `entities`),
-- so it becomes contentless; `contentless_delete` (SQLite 3.43+) keeps
-- DELETE by rowid working, which the refresh relies on. See
-- https://sqlite.org/fts5.html#contentless_delete_tables
DROP TABLE entities_fts;
CREATE VIRTUAL TABLE entities_fts USING fts5(
    title, content, tokenize = 'unicode61', content = '', contentless_delete = 1
);
-- Everything is indexed again by the next refresh.
UPDATE search_indexed SET revision = 0;
