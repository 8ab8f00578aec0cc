-- journeyctl schema, version 4: reconcile (issue 13). Bookings whose webhook never arrived are
-- read from Cal.com's API and applied through the webhook's own code.
--
-- Like V1 to V3, this only adds what is missing and never drops or rewrites data.

-- Where a receipt's body came from: 'webhook' (Cal.com posted it) or 'api' (reconcile wrote it
-- from an API booking, because the webhook never came). Every existing receipt is a webhook's.
ALTER TABLE cal_webhook_receipts
    ADD COLUMN IF NOT EXISTS source text NOT NULL DEFAULT 'webhook';
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint con JOIN pg_class rel ON rel.oid = con.conrelid
                   WHERE rel.relname = 'cal_webhook_receipts'
                     AND con.conname = 'cal_webhook_receipts_source_known') THEN
        ALTER TABLE cal_webhook_receipts ADD CONSTRAINT cal_webhook_receipts_source_known
            CHECK (source IN ('webhook', 'api'));
    END IF;
END $$;

-- One row per reconcile run. `now` is the run's instant (--now); the next run reads the API
-- from the `now` of the last `succeeded` run, minus an overlap. `status` raises reconcile
-- when no run has succeeded for two cadences.
CREATE TABLE IF NOT EXISTS cal_reconcile_runs (
    id            uuid PRIMARY KEY,
    run_id        uuid NOT NULL,            -- journey_runs.id of the run it was part of
    now           timestamptz NOT NULL,
    since         timestamptz NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    outcome       text CHECK (outcome IN ('succeeded', 'failed')),
    requests      integer NOT NULL DEFAULT 0,
    fetched       integer NOT NULL DEFAULT 0,
    applied       integer NOT NULL DEFAULT 0,
    errors        integer NOT NULL DEFAULT 0,
    error         text                      -- why it failed; never patient data or the key
);
CREATE INDEX IF NOT EXISTS cal_reconcile_runs_succeeded_idx
    ON cal_reconcile_runs (now DESC) WHERE outcome = 'succeeded';

-- Each change reconcile applied: the database did not show what Cal.com did, i.e. a webhook
-- was lost (or had not arrived yet). `audit` lists them, so an operator sees how often
-- webhooks are lost.
CREATE TABLE IF NOT EXISTS cal_reconcile_changes (
    id            bigserial PRIMARY KEY,
    reconcile_id  uuid NOT NULL REFERENCES cal_reconcile_runs (id),
    cal_uid       text NOT NULL,
    booking_id    uuid,
    receipt_id    uuid,
    trigger_event text NOT NULL,
    change        text NOT NULL,            -- new | status | times | moved
    changed_at    timestamptz,              -- when Cal.com made the change (API updatedAt/createdAt)
    found_at      timestamptz NOT NULL      -- the run's instant
);
CREATE INDEX IF NOT EXISTS cal_reconcile_changes_found_idx
    ON cal_reconcile_changes (found_at);
CREATE INDEX IF NOT EXISTS cal_reconcile_changes_booking_idx
    ON cal_reconcile_changes (booking_id);
