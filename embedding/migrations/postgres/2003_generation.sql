-- A counter every change of `entity_vectors` moves, in the same
-- transaction (once per statement): a process keeps an in-memory copy of the
-- vectors for search and reads this one row to know whether the copy is
-- still current. A row, not a sequence: a sequence moves before the writer
-- commits, and a reader could label its copy new while the change is unseen.
CREATE TABLE entity_vectors_generation (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    generation BIGINT  NOT NULL
);
INSERT INTO entity_vectors_generation (id, generation) VALUES (1, 0);
CREATE FUNCTION entity_vectors_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE entity_vectors_generation SET generation = generation + 1;
    RETURN NULL;
END
$$;
CREATE TRIGGER entity_vectors_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON entity_vectors
    FOR EACH STATEMENT EXECUTE FUNCTION entity_vectors_changed();
