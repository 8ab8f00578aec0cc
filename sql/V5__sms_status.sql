-- journeyctl schema, version 5: SMS delivery status and quiet hours (issue 14).
--
-- Like the earlier versions, this only adds what is missing and never drops or rewrites data.

-- What Twilio reported about an SMS after accepting it (status callbacks), monotonic:
--   provider_status: Twilio's latest MessageStatus (queued, sent, delivered, undelivered,
--                    failed, ...); delivered/undelivered/failed/canceled are final.
--   provider_error_code: Twilio's ErrorCode of an undelivered or failed message (e.g. 30003).
--   provider_status_at: when the latest callback was recorded.
-- not_before: a `retry` SMS held back by quiet hours is not sent before this instant.
ALTER TABLE journey_deliveries
    ADD COLUMN IF NOT EXISTS provider_status text,
    ADD COLUMN IF NOT EXISTS provider_error_code text,
    ADD COLUMN IF NOT EXISTS provider_status_at timestamptz,
    ADD COLUMN IF NOT EXISTS not_before timestamptz;

-- Held SMS whose time has come are found without scanning the ledger.
CREATE INDEX IF NOT EXISTS journey_deliveries_held_idx
    ON journey_deliveries (stage, not_before) WHERE status = 'retry' AND not_before IS NOT NULL;

-- `status` counts SMS by delivery status per stage over a period.
CREATE INDEX IF NOT EXISTS journey_deliveries_sms_sent_idx
    ON journey_deliveries (sent_at) WHERE channel = 'sms' AND status = 'sent';
