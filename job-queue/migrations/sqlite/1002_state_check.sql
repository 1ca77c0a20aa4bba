-- The queue's states, as `JobState` names them: a row in any other state is
-- refused by the database itself, whatever writes it. SQLite cannot add a
-- CHECK constraint to a table, so two triggers do its work.
CREATE TRIGGER jobs_state_known_insert BEFORE INSERT ON jobs
WHEN NEW.state NOT IN ('queued', 'running', 'completed', 'failed', 'cancelled', 'dead')
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: jobs_state_known');
END;

CREATE TRIGGER jobs_state_known_update BEFORE UPDATE OF state ON jobs
WHEN NEW.state NOT IN ('queued', 'running', 'completed', 'failed', 'cancelled', 'dead')
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: jobs_state_known');
END;
