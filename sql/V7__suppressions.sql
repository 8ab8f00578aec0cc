-- journeyctl schema, version 7: opt-outs (issue 14). A recipient in `suppressions` is never
-- sent to again on that channel, by any stage.
--
-- Like the earlier versions, this only adds what is missing and never drops or rewrites data.
--
-- `address` holds the normalised address itself, not a hash: an email address trimmed and
-- lower-cased, a phone number in E.164. A keyed hash would tie every opt-out to a secret whose
-- rotation would silently lift them all, and an unkeyed hash of a phone number is reversed by
-- trying the numbers. The opt-out must outlive the erasure of a patient's other data (it is
-- what honours their wish); this table keeps nothing but the address, why and since when.
CREATE TABLE IF NOT EXISTS suppressions (
    channel    text        NOT NULL CHECK (channel IN ('email', 'sms')),
    address    text        NOT NULL CHECK (address <> ''),
    -- Why: 'twilio_stop' (21610), 'twilio_invalid_number' (21211),
    -- 'twilio_not_mobile' (21614), 'unsubscribe_link', 'operator'.
    reason     text        NOT NULL,
    -- Who: 'twilio', 'unsubscribe', 'operator'.
    source     text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, address)
);
