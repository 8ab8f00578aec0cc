-- journeyctl schema, version 1.
--
-- Written to run against the marketplace's existing database as well as an empty one:
-- every table is created only when missing and every column is added only when missing, so
-- existing rows and columns are never dropped or rewritten. Defaults and indexes are added
-- alongside. gen_random_uuid() is built into PostgreSQL 13 and later.

-- people ---------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS people (id uuid PRIMARY KEY DEFAULT gen_random_uuid());
ALTER TABLE people
    ADD COLUMN IF NOT EXISTS name text,
    ADD COLUMN IF NOT EXISTS email text,
    ADD COLUMN IF NOT EXISTS phone_number text,
    ADD COLUMN IF NOT EXISTS metadata jsonb DEFAULT '{}'::jsonb,
    ADD COLUMN IF NOT EXISTS created_at timestamptz DEFAULT now();
CREATE INDEX IF NOT EXISTS people_email_lower_idx ON people (lower(email), created_at DESC);

-- therapists -----------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS therapists (id uuid PRIMARY KEY DEFAULT gen_random_uuid());
ALTER TABLE therapists
    ADD COLUMN IF NOT EXISTS first_name text,
    ADD COLUMN IF NOT EXISTS last_name text,
    ADD COLUMN IF NOT EXISTS email text,
    ADD COLUMN IF NOT EXISTS cal_username text,
    ADD COLUMN IF NOT EXISTS typical_rate int,
    ADD COLUMN IF NOT EXISTS cal_intro_event_type_id int,
    ADD COLUMN IF NOT EXISTS cal_full_session_event_type_id int,
    ADD COLUMN IF NOT EXISTS metadata jsonb DEFAULT '{}'::jsonb,
    ADD COLUMN IF NOT EXISTS created_at timestamptz DEFAULT now();
CREATE UNIQUE INDEX IF NOT EXISTS therapists_cal_username_key ON therapists (cal_username);

-- matches --------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS matches (id uuid PRIMARY KEY DEFAULT gen_random_uuid());
ALTER TABLE matches
    ADD COLUMN IF NOT EXISTS patient_id uuid,
    ADD COLUMN IF NOT EXISTS therapist_id uuid,
    ADD COLUMN IF NOT EXISTS secure_uuid uuid DEFAULT gen_random_uuid(),
    ADD COLUMN IF NOT EXISTS status text,
    ADD COLUMN IF NOT EXISTS created_at timestamptz DEFAULT now();
CREATE UNIQUE INDEX IF NOT EXISTS matches_secure_uuid_key ON matches (secure_uuid);
CREATE INDEX IF NOT EXISTS matches_patient_idx ON matches (patient_id, therapist_id);

-- cal_slots_cache ------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS cal_slots_cache (therapist_id uuid PRIMARY KEY);
ALTER TABLE cal_slots_cache
    ADD COLUMN IF NOT EXISTS next_full_time_utc timestamptz,
    ADD COLUMN IF NOT EXISTS full_slots_count int DEFAULT 0,
    ADD COLUMN IF NOT EXISTS next_intro_time_utc timestamptz,
    ADD COLUMN IF NOT EXISTS slots_count int DEFAULT 0,
    ADD COLUMN IF NOT EXISTS cached_at timestamptz;

-- cal_bookings ---------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS cal_bookings (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    cal_uid text NOT NULL
);
ALTER TABLE cal_bookings
    ADD COLUMN IF NOT EXISTS cal_uid text,
    ADD COLUMN IF NOT EXISTS last_trigger_event text,
    ADD COLUMN IF NOT EXISTS organizer_username text,
    ADD COLUMN IF NOT EXISTS event_type_id int,
    ADD COLUMN IF NOT EXISTS start_time timestamptz,
    ADD COLUMN IF NOT EXISTS end_time timestamptz,
    ADD COLUMN IF NOT EXISTS therapist_id uuid,
    ADD COLUMN IF NOT EXISTS patient_id uuid,
    ADD COLUMN IF NOT EXISTS match_id uuid,
    ADD COLUMN IF NOT EXISTS booking_kind text,
    ADD COLUMN IF NOT EXISTS status text,
    ADD COLUMN IF NOT EXISTS is_test boolean DEFAULT false,
    ADD COLUMN IF NOT EXISTS metadata jsonb DEFAULT '{}'::jsonb,
    ADD COLUMN IF NOT EXISTS video_url text,
    ADD COLUMN IF NOT EXISTS location text,
    ADD COLUMN IF NOT EXISTS cancelled_at timestamptz,
    ADD COLUMN IF NOT EXISTS cancellation_reason text,
    ADD COLUMN IF NOT EXISTS request_reschedule boolean DEFAULT false,
    ADD COLUMN IF NOT EXISTS rescheduled_from_uid text,
    ADD COLUMN IF NOT EXISTS rescheduled_to_uid text,
    ADD COLUMN IF NOT EXISTS created_at timestamptz DEFAULT now(),
    ADD COLUMN IF NOT EXISTS updated_at timestamptz DEFAULT now(),
    ADD COLUMN IF NOT EXISTS client_confirmation_sent_at timestamptz,
    ADD COLUMN IF NOT EXISTS therapist_notification_sent_at timestamptz,
    ADD COLUMN IF NOT EXISTS reminder_24h_sent_at timestamptz,
    ADD COLUMN IF NOT EXISTS reminder_1h_sent_at timestamptz,
    ADD COLUMN IF NOT EXISTS followup_sent_at timestamptz,
    ADD COLUMN IF NOT EXISTS session_followup_sent_at timestamptz,
    ADD COLUMN IF NOT EXISTS cancellation_recovery_sent_at timestamptz,
    -- Ordering of webhook events: the newest applied envelope createdAt and iCalSequence, so a
    -- late or repeated event cannot undo a newer one.
    ADD COLUMN IF NOT EXISTS last_event_at timestamptz,
    ADD COLUMN IF NOT EXISTS ical_sequence int;
CREATE UNIQUE INDEX IF NOT EXISTS cal_bookings_cal_uid_key ON cal_bookings (cal_uid);

-- Each stage finds its due rows through one of these range indexes (SPEC §1 windows).
-- Reminders: start_time ahead of now.
CREATE INDEX IF NOT EXISTS cal_bookings_start_time_idx ON cal_bookings (start_time);
-- Intro and session followups: end_time behind now, one index per kind.
CREATE INDEX IF NOT EXISTS cal_bookings_intro_end_idx
    ON cal_bookings (end_time) WHERE booking_kind = 'intro';
CREATE INDEX IF NOT EXISTS cal_bookings_full_end_idx
    ON cal_bookings (end_time) WHERE booking_kind = 'full_session';
-- Cancellation recovery: cancelled_at behind now.
CREATE INDEX IF NOT EXISTS cal_bookings_cancelled_at_idx
    ON cal_bookings (cancelled_at) WHERE cancelled_at IS NOT NULL;
-- Confirmation recovery: only rows still missing a confirmation or a notice.
CREATE INDEX IF NOT EXISTS cal_bookings_unconfirmed_idx
    ON cal_bookings (created_at)
    WHERE client_confirmation_sent_at IS NULL OR therapist_notification_sent_at IS NULL;
-- Patient-level rules (already booked, recovered on their own).
CREATE INDEX IF NOT EXISTS cal_bookings_patient_idx ON cal_bookings (patient_id, start_time);

-- events ---------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS events (id uuid PRIMARY KEY DEFAULT gen_random_uuid());
ALTER TABLE events
    ADD COLUMN IF NOT EXISTS type text,
    ADD COLUMN IF NOT EXISTS level text DEFAULT 'info',
    ADD COLUMN IF NOT EXISTS properties jsonb DEFAULT '{}'::jsonb,
    ADD COLUMN IF NOT EXISTS created_at timestamptz DEFAULT now();
CREATE INDEX IF NOT EXISTS events_type_created_idx ON events (type, created_at);

-- journey_deliveries: the delivery ledger (SPEC §5) ----------------------------------------
CREATE TABLE IF NOT EXISTS journey_deliveries (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    booking_id uuid NOT NULL,
    patient_id uuid,
    stage text NOT NULL,
    channel text NOT NULL CHECK (channel IN ('email', 'sms')),
    recipient_role text NOT NULL CHECK (recipient_role IN ('patient', 'therapist', 'qa')),
    status text NOT NULL CHECK (status IN ('sending', 'sent', 'retry', 'failed', 'skipped', 'in_doubt')),
    attempts int NOT NULL DEFAULT 0,
    provider_message_id text,
    last_error text,
    run_id uuid,
    -- Masked recipient (a***@example.de), for operators reading the ledger.
    recipient_masked text,
    -- RFC 5322 Message-ID given to the email, stable per delivery row.
    message_id text,
    -- A row in 'sending' whose lease has passed, or whose claiming process (by its connections'
    -- application_name) is gone, belongs to a run that died.
    lease_until timestamptz,
    claimed_by text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,
    CONSTRAINT journey_deliveries_once UNIQUE (booking_id, stage, channel, recipient_role)
);
CREATE INDEX IF NOT EXISTS journey_deliveries_open_idx
    ON journey_deliveries (status, lease_until) WHERE status IN ('sending', 'in_doubt', 'retry');
CREATE INDEX IF NOT EXISTS journey_deliveries_patient_stage_idx
    ON journey_deliveries (patient_id, stage, sent_at);

-- journey_runs: one row per run --------------------------------------------------------------
CREATE TABLE IF NOT EXISTS journey_runs (
    id uuid PRIMARY KEY,
    command text NOT NULL,
    now timestamptz NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    dry_run boolean NOT NULL DEFAULT false,
    stages jsonb NOT NULL DEFAULT '[]'::jsonb,
    totals jsonb NOT NULL DEFAULT '{}'::jsonb,
    exit_status int,
    host text
);
CREATE INDEX IF NOT EXISTS journey_runs_command_idx ON journey_runs (command, started_at DESC);

-- cal_webhook_receipts: every webhook body received ------------------------------------------
CREATE TABLE IF NOT EXISTS cal_webhook_receipts (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    received_at timestamptz NOT NULL DEFAULT now(),
    trigger_event text,
    cal_uid text,
    body_sha256 text NOT NULL,
    signature_ok boolean NOT NULL,
    outcome text NOT NULL,
    error text,
    body text
);
CREATE INDEX IF NOT EXISTS cal_webhook_receipts_hash_idx ON cal_webhook_receipts (body_sha256);
CREATE INDEX IF NOT EXISTS cal_webhook_receipts_uid_idx ON cal_webhook_receipts (cal_uid, received_at);
