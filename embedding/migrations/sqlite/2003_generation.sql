-- A counter every change of `entity_vectors` moves, in the same
-- transaction: a process keeps an in-memory copy of the vectors for search
-- and reads this one row to know whether the copy is still current.
CREATE TABLE entity_vectors_generation (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL
);
INSERT INTO entity_vectors_generation (id, generation) VALUES (1, 0);
CREATE TRIGGER entity_vectors_inserted AFTER INSERT ON entity_vectors
BEGIN UPDATE entity_vectors_generation SET generation = generation + 1; END;
CREATE TRIGGER entity_vectors_updated AFTER UPDATE ON entity_vectors
BEGIN UPDATE entity_vectors_generation SET generation = generation + 1; END;
CREATE TRIGGER entity_vectors_deleted AFTER DELETE ON entity_vectors
BEGIN UPDATE entity_vectors_generation SET generation = generation + 1; END;
