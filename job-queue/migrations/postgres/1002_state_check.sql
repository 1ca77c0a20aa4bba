-- The queue's states, as `JobState` names them: a row in any other state is
-- refused by the database itself, whatever writes it.
ALTER TABLE jobs ADD CONSTRAINT jobs_state_known
    CHECK (state IN ('queued', 'running', 'completed', 'failed', 'cancelled', 'dead'));
