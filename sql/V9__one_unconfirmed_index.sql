-- journeyctl schema, version 9 (issue 11): one index, not two, on the bookings still missing a
-- confirmation or a notice. `cal_bookings_unconfirmed_due_idx` (V6: created_at, id) answers
-- every query the older `cal_bookings_unconfirmed_idx` (V1: created_at) did, with the same
-- predicate. The older one only cost: every new booking and every confirmation mark wrote to
-- both, and every query on `cal_bookings` was planned against both. An index holds no data:
-- dropping it loses nothing.
DROP INDEX IF EXISTS cal_bookings_unconfirmed_idx;
