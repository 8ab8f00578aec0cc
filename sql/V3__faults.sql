-- journeyctl schema, version 3: faults (issue 10). A run's lifetime and the `expired` state.
--
-- Like V1 and V2, this only adds what is missing and never drops or rewrites data.

-- `expired`: a `retry` delivery whose window closed before it could be sent. Every CHECK
-- constraint that restricts journey_deliveries.status is replaced by one that also allows it.
-- Dropping a CHECK constraint changes no row.
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT con.conname
        FROM pg_constraint con
        JOIN pg_class rel ON rel.oid = con.conrelid
        JOIN pg_namespace ns ON ns.oid = rel.relnamespace
        WHERE rel.relname = 'journey_deliveries'
          AND ns.nspname = current_schema()
          AND con.contype = 'c'
          AND pg_get_constraintdef(con.oid) ILIKE '%status%'
          AND pg_get_constraintdef(con.oid) NOT ILIKE '%provider_status%'
          AND con.conname <> 'journey_deliveries_status_known'
    LOOP
        EXECUTE format('ALTER TABLE journey_deliveries DROP CONSTRAINT %I', c.conname);
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint con JOIN pg_class rel ON rel.oid = con.conrelid
                   WHERE rel.relname = 'journey_deliveries'
                     AND con.conname = 'journey_deliveries_status_known') THEN
        ALTER TABLE journey_deliveries ADD CONSTRAINT journey_deliveries_status_known
            CHECK (status IN ('sending', 'sent', 'retry', 'failed', 'skipped', 'in_doubt',
                              'expired'));
    END IF;
END $$;

-- journey_runs: how a run ended, and what lets a later run or `status` judge an unfinished one.
--   outcome: completed | skipped (every stage's lock was held by another run) | deadline |
--            terminated | interrupted | database_lost | abandoned (closed by a later run)
--   application_name: the run's connection name (`journeyctl:<id>`, see the ledger); no
--            connection of that name left means the run is dead.
--   deadline_at: when the run must have ended (its deadline plus the drain bound).
ALTER TABLE journey_runs
    ADD COLUMN IF NOT EXISTS outcome text,
    ADD COLUMN IF NOT EXISTS application_name text,
    ADD COLUMN IF NOT EXISTS deadline_at timestamptz;
CREATE INDEX IF NOT EXISTS journey_runs_unfinished_idx
    ON journey_runs (started_at) WHERE finished_at IS NULL;
