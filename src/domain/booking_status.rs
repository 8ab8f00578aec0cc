//! The booking lifecycle (README, "How a booking's status is decided"): [`BookingStatus`], its database text, the SQL that
//! selects by it, and the one transition table [`next_status`] that decides what an incoming
//! webhook event does to a booking's status.
//!
//! Everything that writes or reads `cal_bookings.status` goes through here: the webhook's apply
//! step decides with [`next_status`], the stages select with [`BookingStatus::sql_is_active`]
//! and [`BookingStatus::sql_fell_through`]. No I/O, no clock.

use std::fmt;

use chrono::{DateTime, Utc};

/// `cal_bookings.status`. Stored in upper case; other programs write lower case, so reading is
/// case-insensitive. NULL (a row the booking site pre-inserted before the webhook came) is not
/// a variant: it is `Option::None` wherever a status is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BookingStatus {
    Accepted,
    /// Requested; the host has not accepted yet. Not active: nothing is confirmed or reminded.
    Pending,
    Cancelled,
    Rejected,
    /// This uid was moved to another one (`rescheduled_to_uid`).
    Rescheduled,
    Completed,
    NoShowGuest,
    NoShowHost,
}

/// Status text that is none of [`BookingStatus`]'s names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown booking status {0:?}")]
pub struct UnknownStatus(pub String);

/// Older names found in existing databases, read as the status they meant.
const LEGACY_NAMES: [(&str, BookingStatus); 1] = [("NO_SHOW", BookingStatus::NoShowGuest)];

impl BookingStatus {
    pub const ALL: [BookingStatus; 8] = [
        BookingStatus::Accepted,
        BookingStatus::Pending,
        BookingStatus::Cancelled,
        BookingStatus::Rejected,
        BookingStatus::Rescheduled,
        BookingStatus::Completed,
        BookingStatus::NoShowGuest,
        BookingStatus::NoShowHost,
    ];

    /// The database text (upper case).
    pub fn as_str(self) -> &'static str {
        match self {
            BookingStatus::Accepted => "ACCEPTED",
            BookingStatus::Pending => "PENDING",
            BookingStatus::Cancelled => "CANCELLED",
            BookingStatus::Rejected => "REJECTED",
            BookingStatus::Rescheduled => "RESCHEDULED",
            BookingStatus::Completed => "COMPLETED",
            BookingStatus::NoShowGuest => "NO_SHOW_GUEST",
            BookingStatus::NoShowHost => "NO_SHOW_HOST",
        }
    }

    /// Reads database text, ignoring case and surrounding whitespace. The legacy `NO_SHOW` is
    /// read as [`BookingStatus::NoShowGuest`]. Anything else is an [`UnknownStatus`]; the
    /// caller decides what an unknown status means (it is never silently "active").
    pub fn parse(text: &str) -> Result<BookingStatus, UnknownStatus> {
        let wanted = text.trim();
        BookingStatus::ALL
            .into_iter()
            .map(|s| (s.as_str(), s))
            .chain(LEGACY_NAMES)
            .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
            .map(|(_, s)| s)
            .ok_or_else(|| UnknownStatus(text.to_string()))
    }

    /// Whether a booking with this status can still take place and is confirmed and reminded:
    /// ACCEPTED, or NULL (pre-inserted by the booking site). PENDING is not active (the host has not accepted).
    pub fn is_active(status: Option<BookingStatus>) -> bool {
        matches!(status, None | Some(BookingStatus::Accepted))
    }

    /// Whether the session will not take place as booked: cancelled, rejected, moved to another
    /// uid, or nobody (guest or host) came. Followups skip these.
    pub fn fell_through(self) -> bool {
        match self {
            BookingStatus::Cancelled
            | BookingStatus::Rejected
            | BookingStatus::Rescheduled
            | BookingStatus::NoShowGuest
            | BookingStatus::NoShowHost => true,
            BookingStatus::Accepted | BookingStatus::Pending | BookingStatus::Completed => false,
        }
    }

    /// SQL: the booking `alias` is active, e.g. for `"b"`:
    /// `(b.status IS NULL OR upper(b.status) = 'ACCEPTED')`.
    pub fn sql_is_active(alias: &str) -> String {
        let names = Self::names_where(|s| Self::is_active(Some(s)));
        let test = match names.as_slice() {
            [one] => format!("= {one}"),
            _ => format!("IN ({})", names.join(", ")),
        };
        format!("({alias}.status IS NULL OR upper({alias}.status) {test})")
    }

    /// SQL: the booking `alias` fell through (see [`BookingStatus::fell_through`]); NULL did not.
    pub fn sql_fell_through(alias: &str) -> String {
        let names = Self::names_where(BookingStatus::fell_through).join(", ");
        format!("({alias}.status IS NOT NULL AND upper({alias}.status) IN ({names}))")
    }

    /// SQL: the booking `alias` did not fall through (NULL included), for followups, where
    /// COMPLETED counts.
    pub fn sql_not_fell_through(alias: &str) -> String {
        let names = Self::names_where(BookingStatus::fell_through).join(", ");
        format!("({alias}.status IS NULL OR upper({alias}.status) NOT IN ({names}))")
    }

    /// SQL: the booking `alias` has exactly this status (any case).
    pub fn sql_is(self, alias: &str) -> String {
        format!("upper({alias}.status) = '{}'", self.as_str())
    }

    /// The quoted database names (legacy ones included) of the statuses `keep` selects.
    fn names_where(keep: impl Fn(BookingStatus) -> bool) -> Vec<String> {
        BookingStatus::ALL
            .into_iter()
            .map(|s| (s.as_str(), s))
            .chain(LEGACY_NAMES)
            .filter(|(_, s)| keep(*s))
            .map(|(name, _)| format!("'{name}'"))
            .collect()
    }
}

impl fmt::Display for BookingStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an incoming webhook event says happened to one booking (one `cal_uid`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusEvent {
    /// BOOKING_CREATED, or BOOKING_RESCHEDULED for its new uid. `accepted` is false when the
    /// payload's status is PENDING (the host still has to accept).
    Booked { accepted: bool },
    /// BOOKING_REQUESTED.
    Requested,
    /// BOOKING_CANCELLED.
    Cancelled,
    /// BOOKING_REJECTED.
    Rejected,
    /// BOOKING_RESCHEDULED, for the uid it replaces (`rescheduleUid`).
    RescheduledAway,
    /// Flat MEETING_STARTED: no event time, says nothing about the outcome.
    MeetingStarted,
    /// Flat MEETING_ENDED: no event time; fired at the scheduled end, whatever happened.
    MeetingEnded,
    /// BOOKING_NO_SHOW_UPDATED with an attendee marked, AFTER_GUESTS_CAL_VIDEO_NO_SHOW.
    NoShowGuest,
    /// AFTER_HOSTS_CAL_VIDEO_NO_SHOW.
    NoShowHost,
}

/// How an event's time compares with the newest one already applied to the booking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventOrder {
    /// Newer, equal, or unknown (either time missing): the event may change the status.
    Current,
    /// Older than an event already applied: it must not override that event's status.
    Stale,
}

impl EventOrder {
    /// `event_at`: the envelope's `createdAt` (None for flat bodies); `last_applied`: the
    /// newest `createdAt` applied to the booking so far (`cal_bookings.last_event_at`).
    pub fn of(event_at: Option<DateTime<Utc>>, last_applied: Option<DateTime<Utc>>) -> EventOrder {
        match (event_at, last_applied) {
            (Some(event), Some(last)) if event < last => EventOrder::Stale,
            _ => EventOrder::Current,
        }
    }
}

/// The booking's status after `event`, given its status now (`None`: NULL or a new row). The
/// whole lifecycle is this one table; arms are tried top to bottom.
pub fn next_status(
    current: Option<BookingStatus>,
    event: StatusEvent,
    order: EventOrder,
) -> Option<BookingStatus> {
    use BookingStatus as S;
    use EventOrder::{Current, Stale};
    use StatusEvent as E;
    match (current, event, order) {
        // Flat meeting events carry no event time, so ordering cannot apply: the meeting ended
        // completes only a booking that is still on, never one that fell through.
        (None | Some(S::Accepted), E::MeetingEnded, _) => Some(S::Completed),
        (_, E::MeetingEnded | E::MeetingStarted, _) => current,
        // The host's acceptance is one-way and always follows the request.
        (Some(S::Pending), E::Booked { accepted: true }, _) => Some(S::Accepted),
        // A cancelled booking that is then moved to a new time (the therapist asked for it) is
        // rescheduled, not lost.
        (Some(S::Cancelled), E::RescheduledAway, Current) => Some(S::Rescheduled),
        // Cancelled, rejected and moved bookings are final: a late CREATED or REQUESTED (a
        // CANCELLED that overtook its CREATED) never revives them.
        (Some(S::Cancelled | S::Rejected | S::Rescheduled), _, _) => current,
        // An older event never overrides the status a newer one set.
        (_, _, Stale) => current,
        // Nothing un-accepts a booking or undoes how its session went.
        (
            Some(S::Accepted | S::Completed | S::NoShowGuest | S::NoShowHost),
            E::Booked { .. } | E::Requested,
            Current,
        ) => current,
        (None, E::Booked { accepted: true }, Current) => Some(S::Accepted),
        (None | Some(S::Pending), E::Booked { accepted: false } | E::Requested, Current) => {
            Some(S::Pending)
        }
        (_, E::Cancelled, Current) => Some(S::Cancelled),
        (_, E::Rejected, Current) => Some(S::Rejected),
        (_, E::RescheduledAway, Current) => Some(S::Rescheduled),
        (_, E::NoShowGuest, Current) => Some(S::NoShowGuest),
        (_, E::NoShowHost, Current) => Some(S::NoShowHost),
    }
}

#[cfg(test)]
mod tests {
    use super::BookingStatus as S;
    use super::EventOrder::{Current, Stale};
    use super::StatusEvent as E;
    use super::*;

    const ACCEPT: E = E::Booked { accepted: true };
    const PENDING: E = E::Booked { accepted: false };

    const EVENTS: [StatusEvent; 10] = [
        ACCEPT,
        PENDING,
        E::Requested,
        E::Cancelled,
        E::Rejected,
        E::RescheduledAway,
        E::MeetingStarted,
        E::MeetingEnded,
        E::NoShowGuest,
        E::NoShowHost,
    ];

    /// NULL and every status.
    fn currents() -> Vec<Option<BookingStatus>> {
        std::iter::once(None)
            .chain(BookingStatus::ALL.into_iter().map(Some))
            .collect()
    }

    #[test]
    fn parse_reads_lower_case_and_round_trips_every_status() {
        for s in BookingStatus::ALL {
            assert_eq!(BookingStatus::parse(s.as_str()), Ok(s));
            assert_eq!(BookingStatus::parse(&s.as_str().to_lowercase()), Ok(s));
            assert_eq!(BookingStatus::parse(&format!(" {s} ")), Ok(s));
        }
        assert_eq!(BookingStatus::parse("no_show"), Ok(S::NoShowGuest));
        assert_eq!(
            BookingStatus::parse("confirmed"),
            Err(UnknownStatus("confirmed".into()))
        );
        assert!(BookingStatus::parse("").is_err());
    }

    #[test]
    fn only_null_and_accepted_are_active() {
        assert!(BookingStatus::is_active(None));
        for s in BookingStatus::ALL {
            assert_eq!(
                BookingStatus::is_active(Some(s)),
                s == S::Accepted,
                "{s} active?"
            );
        }
    }

    #[test]
    fn sql_helpers_name_the_statuses_of_the_enum() {
        assert_eq!(
            BookingStatus::sql_is_active("b"),
            "(b.status IS NULL OR upper(b.status) = 'ACCEPTED')"
        );
        assert_eq!(
            BookingStatus::sql_fell_through("o"),
            "(o.status IS NOT NULL AND upper(o.status) IN ('CANCELLED', 'REJECTED', \
             'RESCHEDULED', 'NO_SHOW_GUEST', 'NO_SHOW_HOST', 'NO_SHOW'))"
        );
        assert_eq!(
            BookingStatus::sql_not_fell_through("b"),
            "(b.status IS NULL OR upper(b.status) NOT IN ('CANCELLED', 'REJECTED', \
             'RESCHEDULED', 'NO_SHOW_GUEST', 'NO_SHOW_HOST', 'NO_SHOW'))"
        );
        assert_eq!(S::Cancelled.sql_is("b"), "upper(b.status) = 'CANCELLED'");
    }

    #[test]
    fn event_order_is_stale_only_when_both_times_are_known_and_the_event_is_older() {
        let t = |s: &str| Some(s.parse::<DateTime<Utc>>().unwrap());
        assert_eq!(
            EventOrder::of(t("2026-03-01T00:00:00Z"), t("2026-03-02T00:00:00Z")),
            Stale
        );
        assert_eq!(
            EventOrder::of(t("2026-03-02T00:00:00Z"), t("2026-03-02T00:00:00Z")),
            Current
        );
        assert_eq!(
            EventOrder::of(t("2026-03-03T00:00:00Z"), t("2026-03-02T00:00:00Z")),
            Current
        );
        assert_eq!(EventOrder::of(None, t("2026-03-02T00:00:00Z")), Current);
        assert_eq!(EventOrder::of(t("2026-03-02T00:00:00Z"), None), Current);
    }

    // One test per row of the table, in its order.

    #[test]
    fn row_meeting_ended_completes_null_and_accepted_in_any_order() {
        for order in [Current, Stale] {
            assert_eq!(
                next_status(None, E::MeetingEnded, order),
                Some(S::Completed)
            );
            assert_eq!(
                next_status(Some(S::Accepted), E::MeetingEnded, order),
                Some(S::Completed)
            );
        }
    }

    #[test]
    fn row_meeting_events_never_overwrite_any_other_status() {
        for s in BookingStatus::ALL {
            for order in [Current, Stale] {
                assert_eq!(next_status(Some(s), E::MeetingStarted, order), Some(s));
                if s != S::Accepted {
                    assert_eq!(next_status(Some(s), E::MeetingEnded, order), Some(s), "{s}");
                }
            }
        }
        assert_eq!(next_status(None, E::MeetingStarted, Current), None);
    }

    #[test]
    fn row_pending_is_accepted_by_booking_created_with_accepted_in_any_order() {
        assert_eq!(
            next_status(Some(S::Pending), ACCEPT, Current),
            Some(S::Accepted)
        );
        assert_eq!(
            next_status(Some(S::Pending), ACCEPT, Stale),
            Some(S::Accepted)
        );
    }

    #[test]
    fn row_a_newer_reschedule_moves_a_cancelled_booking() {
        assert_eq!(
            next_status(Some(S::Cancelled), E::RescheduledAway, Current),
            Some(S::Rescheduled)
        );
        assert_eq!(
            next_status(Some(S::Cancelled), E::RescheduledAway, Stale),
            Some(S::Cancelled)
        );
    }

    #[test]
    fn row_cancelled_rejected_and_rescheduled_are_never_revived_or_rewritten() {
        for s in [S::Cancelled, S::Rejected, S::Rescheduled] {
            for e in EVENTS {
                if (s, e) == (S::Cancelled, E::RescheduledAway) {
                    continue;
                }
                for order in [Current, Stale] {
                    assert_eq!(
                        next_status(Some(s), e, order),
                        Some(s),
                        "{s} {e:?} {order:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn row_a_stale_event_keeps_the_status_a_newer_one_set() {
        for current in [
            None,
            Some(S::Accepted),
            Some(S::Completed),
            Some(S::NoShowGuest),
        ] {
            for e in [
                E::Cancelled,
                E::Rejected,
                E::NoShowHost,
                E::Requested,
                PENDING,
            ] {
                assert_eq!(next_status(current, e, Stale), current, "{current:?} {e:?}");
            }
        }
        assert_eq!(
            next_status(Some(S::Pending), E::Cancelled, Stale),
            Some(S::Pending)
        );
        assert_eq!(next_status(None, ACCEPT, Stale), None);
    }

    #[test]
    fn row_nothing_unaccepts_a_booking_or_undoes_its_outcome() {
        for s in [S::Accepted, S::Completed, S::NoShowGuest, S::NoShowHost] {
            for e in [ACCEPT, PENDING, E::Requested] {
                assert_eq!(next_status(Some(s), e, Current), Some(s), "{s} {e:?}");
            }
        }
    }

    #[test]
    fn row_a_new_booking_created_as_accepted_is_accepted() {
        assert_eq!(next_status(None, ACCEPT, Current), Some(S::Accepted));
    }

    #[test]
    fn row_a_requested_or_pending_booking_is_pending() {
        for current in [None, Some(S::Pending)] {
            assert_eq!(
                next_status(current, E::Requested, Current),
                Some(S::Pending)
            );
            assert_eq!(next_status(current, PENDING, Current), Some(S::Pending));
        }
    }

    #[test]
    fn rows_cancel_reject_reschedule_and_no_show_set_their_status_on_open_bookings() {
        let open = [
            None,
            Some(S::Accepted),
            Some(S::Pending),
            Some(S::Completed),
            Some(S::NoShowGuest),
            Some(S::NoShowHost),
        ];
        for current in open {
            for (e, want) in [
                (E::Cancelled, S::Cancelled),
                (E::Rejected, S::Rejected),
                (E::RescheduledAway, S::Rescheduled),
                (E::NoShowGuest, S::NoShowGuest),
                (E::NoShowHost, S::NoShowHost),
            ] {
                assert_eq!(
                    next_status(current, e, Current),
                    Some(want),
                    "{current:?} {e:?}"
                );
            }
        }
    }

    #[test]
    fn a_cancellation_that_overtook_its_creation_ends_cancelled() {
        let after_cancel = next_status(None, E::Cancelled, Current);
        assert_eq!(after_cancel, Some(S::Cancelled));
        for late in [ACCEPT, PENDING, E::Requested, E::MeetingEnded] {
            for order in [Current, Stale] {
                assert_eq!(next_status(after_cancel, late, order), Some(S::Cancelled));
            }
        }
    }

    #[test]
    fn no_event_ever_makes_a_fallen_through_booking_active_again() {
        for current in currents() {
            for e in EVENTS {
                for order in [Current, Stale] {
                    let next = next_status(current, e, order);
                    if current.is_some_and(|s| s.fell_through()) {
                        assert!(
                            !BookingStatus::is_active(next),
                            "{current:?} {e:?} {order:?} -> {next:?}"
                        );
                    }
                    // The table never writes NULL over a known status.
                    if current.is_some() {
                        assert!(next.is_some(), "{current:?} {e:?} {order:?}");
                    }
                }
            }
        }
    }
}
