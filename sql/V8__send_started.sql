-- journeyctl schema, version 8: the send-started stamp (issue 12). A run claims messages in
-- batches, ahead of their sends; `send_started_at` tells a claimed row whose send had begun
-- (the provider may have it) from one that was only claimed (the provider never saw it).
--
-- NULL: claimed, no send begun. A row left `sending` by a dead run is given back when NULL
-- and declared `in_doubt` only when stamped. The stamp is committed right before the message
-- is handed to the provider.
--
-- Like the earlier versions, this only adds what is missing. Rows claimed before this version
-- had no stamp and may have been handed to a provider: they are stamped here, so they keep
-- their meaning (a `sending` row of an older run still ends `in_doubt`, never resent).
ALTER TABLE journey_deliveries ADD COLUMN IF NOT EXISTS send_started_at timestamptz;

UPDATE journey_deliveries
   SET send_started_at = coalesce(updated_at, now())
 WHERE status IN ('sending', 'in_doubt') AND send_started_at IS NULL;
