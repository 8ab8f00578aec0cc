-- journeyctl schema, version 2: real Cal.com event streams and walk-in attendees.
--
-- Like V1, this only adds what is missing and never drops or rewrites data.

-- The marketplace's original cal_bookings had a CHECK constraint on last_trigger_event that
-- allowed only the four triggers it knew (BOOKING_CREATED, BOOKING_RESCHEDULED,
-- BOOKING_CANCELLED, MEETING_ENDED). BOOKING_REQUESTED, BOOKING_REJECTED, the no-show
-- triggers and any trigger Cal.com adds later must store, so every CHECK constraint that
-- restricts last_trigger_event is replaced by one that only asks for a trigger-shaped name.
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
        WHERE rel.relname = 'cal_bookings'
          AND ns.nspname = current_schema()
          AND con.contype = 'c'
          AND pg_get_constraintdef(con.oid) ILIKE '%last_trigger_event%'
          AND con.conname <> 'cal_bookings_last_trigger_event_shape'
    LOOP
        EXECUTE format('ALTER TABLE cal_bookings DROP CONSTRAINT %I', c.conname);
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint con JOIN pg_class rel ON rel.oid = con.conrelid
                   WHERE rel.relname = 'cal_bookings'
                     AND con.conname = 'cal_bookings_last_trigger_event_shape') THEN
        -- NOT VALID: rows written before are not checked (they may hold anything).
        ALTER TABLE cal_bookings ADD CONSTRAINT cal_bookings_last_trigger_event_shape
            CHECK (last_trigger_event IS NULL OR last_trigger_event ~ '^[A-Za-z_]{1,64}$') NOT VALID;
    END IF;
END $$;

-- The marketplace's original cal_bookings may have an id without a default (its rows were
-- inserted with ids from the application). The webhook inserts rows itself, so the id gets
-- a default when it has none. Setting a default changes no row.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = 'cal_bookings'
                 AND column_name = 'id' AND column_default IS NULL
                 AND data_type = 'uuid') THEN
        ALTER TABLE cal_bookings ALTER COLUMN id SET DEFAULT gen_random_uuid();
    END IF;
END $$;

-- An attendee who booked on Cal.com directly has no people row and no kh_patient_id: the
-- booking keeps the payload's contact so the confirmation can reach them, and is linked to a
-- people row once one with that email exists.
ALTER TABLE cal_bookings
    ADD COLUMN IF NOT EXISTS attendee_email text,
    ADD COLUMN IF NOT EXISTS attendee_name text,
    ADD COLUMN IF NOT EXISTS attendee_phone text,
    -- The calendar UID of the invite: the first booking's uid, carried over to every
    -- rescheduled booking so calendars move the entry instead of adding a second one.
    ADD COLUMN IF NOT EXISTS ical_uid text;
CREATE INDEX IF NOT EXISTS cal_bookings_walk_in_idx
    ON cal_bookings (lower(attendee_email))
    WHERE patient_id IS NULL AND attendee_email IS NOT NULL;

-- Confirmation recovery selects by the session still ahead (no look-back on created_at).
CREATE INDEX IF NOT EXISTS cal_bookings_unconfirmed_start_idx
    ON cal_bookings (start_time)
    WHERE client_confirmation_sent_at IS NULL OR therapist_notification_sent_at IS NULL;

-- `journeyctl prune` finds the raw bodies past retention without reading the whole table.
CREATE INDEX IF NOT EXISTS cal_webhook_receipts_body_kept_idx
    ON cal_webhook_receipts (received_at) WHERE body IS NOT NULL;
