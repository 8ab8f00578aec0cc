-- journeyctl schema, version 6: speed (issue 11). Indexes only; no row is changed.
--
-- A stage selects, in keyset-ordered pages, the bookings it has not done yet (its mark column
-- is NULL) and those with a `retry` row of the stage. These partial indexes hold exactly the
-- first kind, in the stage's order (order column, id), so a window full of bookings already
-- handled is not read at all, and a page is one ordered index range.
CREATE INDEX IF NOT EXISTS cal_bookings_reminder_24h_due_idx
    ON cal_bookings (start_time, id) WHERE reminder_24h_sent_at IS NULL;
CREATE INDEX IF NOT EXISTS cal_bookings_reminder_1h_due_idx
    ON cal_bookings (start_time, id) WHERE reminder_1h_sent_at IS NULL;
CREATE INDEX IF NOT EXISTS cal_bookings_intro_followup_due_idx
    ON cal_bookings (end_time, id) WHERE followup_sent_at IS NULL AND booking_kind = 'intro';
CREATE INDEX IF NOT EXISTS cal_bookings_session_followup_due_idx
    ON cal_bookings (end_time, id)
    WHERE session_followup_sent_at IS NULL AND booking_kind = 'full_session';
CREATE INDEX IF NOT EXISTS cal_bookings_cancellation_recovery_due_idx
    ON cal_bookings (cancelled_at, id)
    WHERE cancellation_recovery_sent_at IS NULL AND cancelled_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS cal_bookings_unconfirmed_due_idx
    ON cal_bookings (created_at, id)
    WHERE client_confirmation_sent_at IS NULL OR therapist_notification_sent_at IS NULL;

-- `retry` rows of a stage, by booking: the second arm of every stage's selection.
CREATE INDEX IF NOT EXISTS journey_deliveries_retry_idx
    ON journey_deliveries (stage, booking_id) WHERE status = 'retry';
