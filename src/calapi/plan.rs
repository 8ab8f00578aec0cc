//! What reconcile applies for the bookings the API returned, given what the database holds:
//! for each booking that differs, the webhook event(s) Cal.com would have sent (as bodies, see
//! `as_webhook`). A booking the database already shows as the API does gets nothing, so a
//! webhook that did arrive is never applied a second time in another form.
//!
//! The rules, per API booking `b` (bookings in the order Cal.com created them, so a booking is
//! moved before its successor is):
//! - accepted or pending, moved here from `X` (`rescheduledFromUid`): BOOKING_RESCHEDULED from
//!   `X`, when `X` is not yet retired to `b` or `b` differs. This retires `X` and books `b`.
//! - accepted: BOOKING_CREATED; pending: BOOKING_REQUESTED, when `b` differs (status, or start
//!   or end time).
//! - cancelled or rejected, but moved here from `X` that is not yet retired: first
//!   BOOKING_RESCHEDULED from `X` with status PENDING (so `b` is never active in between, and
//!   nobody is confirmed or reminded of it), then its own event.
//! - cancelled and moved away to `Y` (`rescheduledToUid`): nothing of its own; `Y`'s
//!   BOOKING_RESCHEDULED retires it (the caller fetches `Y` when the sweeps missed it).
//!   Applying a cancellation here would withdraw the invite that the reschedule moved.
//! - cancelled: BOOKING_CANCELLED; rejected: BOOKING_REJECTED, when the database does not
//!   already show it. Their times are not compared: a cancellation re-applied would write its
//!   own time and reason over the webhook's.
//!
//! Event times (the lifecycle table's ordering): `updatedAt`, else `createdAt`, for bookings
//! that are on; `updatedAt` or none for cancellations and rejections (a `createdAt` would be
//! older than the CREATED the webhook may have applied, and the cancellation would be ignored
//! as stale).
//!
//! Pure: no I/O, no clock.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::as_webhook;
use super::booking::{ApiBooking, ApiStatus};
use crate::domain::BookingStatus;
use crate::webhook::Trigger;

/// What the database holds of one `cal_uid` (a row of `db::reconcile`, read there).
pub(crate) use crate::db::reconcile::Stored;

/// Why a step is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Change {
    /// The database does not know the booking.
    New,
    /// Its status differs.
    Status,
    /// Its start or end time differs.
    Times,
    /// The booking it replaced is not yet retired.
    Moved,
}

/// One webhook body to apply.
#[derive(Clone, Debug)]
pub(crate) struct Step {
    pub cal_uid: String,
    pub trigger: Trigger,
    pub change: Change,
    /// When Cal.com made the change (for the audit: how late it was caught).
    pub changed_at: Option<DateTime<Utc>>,
    pub body: Vec<u8>,
}

/// The steps for `bookings`, in the order to apply them.
pub(crate) fn plan(bookings: &[ApiBooking], stored: &HashMap<String, Stored>) -> Vec<Step> {
    let mut ordered: Vec<&ApiBooking> = bookings.iter().collect();
    ordered.sort_by(|a, b| {
        (a.created_at.is_none(), a.created_at, &a.uid).cmp(&(
            b.created_at.is_none(),
            b.created_at,
            &b.uid,
        ))
    });
    let mut steps = Vec::new();
    for b in ordered {
        steps.extend(steps_for(b, stored));
    }
    steps
}

fn steps_for(b: &ApiBooking, stored: &HashMap<String, Stored>) -> Vec<Step> {
    let mine = stored.get(&b.uid);
    let own = difference(b, mine);
    let from = b
        .rescheduled_from_uid
        .as_deref()
        .filter(|x| *x != b.uid.as_str());
    let retire = from.is_some_and(|x| !retired_to(stored.get(x), &b.uid));
    let step = |trigger: Trigger, change: Change, status, from: Option<&str>, at| Step {
        cal_uid: b.uid.clone(),
        body: as_webhook::body(b, &trigger, status, from, at),
        trigger,
        change,
        changed_at: b.changed_at(),
    };
    let mut out = Vec::new();
    match b.status {
        ApiStatus::Accepted | ApiStatus::Pending => {
            let at = b.changed_at();
            if let Some(x) = from {
                if retire || own.is_some() {
                    let change = if retire {
                        Change::Moved
                    } else {
                        own.unwrap_or(Change::Moved)
                    };
                    out.push(step(
                        Trigger::BookingRescheduled,
                        change,
                        b.status,
                        Some(x),
                        at,
                    ));
                }
            } else if let Some(change) = own {
                let trigger = if b.status == ApiStatus::Accepted {
                    Trigger::BookingCreated
                } else {
                    Trigger::BookingRequested
                };
                out.push(step(trigger, change, b.status, None, at));
            }
        }
        ApiStatus::Cancelled | ApiStatus::Rejected => {
            if let (true, Some(x)) = (retire, from) {
                out.push(step(
                    Trigger::BookingRescheduled,
                    Change::Moved,
                    ApiStatus::Pending,
                    Some(x),
                    b.created_at,
                ));
            }
            if b.rescheduled_to_uid.is_none() {
                if let Some(change) = own {
                    let trigger = if b.status == ApiStatus::Cancelled {
                        Trigger::BookingCancelled
                    } else {
                        Trigger::BookingRejected
                    };
                    out.push(step(trigger, change, b.status, None, b.updated_at));
                }
            }
        }
    }
    out
}

/// Whether the stored booking `x` is already retired in favour of `to`.
fn retired_to(x: Option<&Stored>, to: &str) -> bool {
    x.is_some_and(|s| {
        stored_status(s) == Some(BookingStatus::Rescheduled)
            && s.rescheduled_to_uid.as_deref() == Some(to)
    })
}

fn stored_status(s: &Stored) -> Option<BookingStatus> {
    s.status
        .as_deref()
        .and_then(|t| BookingStatus::parse(t).ok())
}

/// How the database differs from the API for `b` itself; `None`: it shows the booking as the
/// API does (a moved-away booking: retired to its successor).
pub(crate) fn difference(b: &ApiBooking, stored: Option<&Stored>) -> Option<Change> {
    let Some(s) = stored else {
        return Some(Change::New);
    };
    if let (ApiStatus::Cancelled | ApiStatus::Rejected, Some(to)) =
        (b.status, b.rescheduled_to_uid.as_deref())
    {
        return (!retired_to(Some(s), to)).then_some(Change::Moved);
    }
    use BookingStatus as S;
    let status_ok = matches!(
        (b.status, stored_status(s)),
        (
            ApiStatus::Accepted,
            Some(S::Accepted | S::Completed | S::NoShowGuest | S::NoShowHost)
        ) | (ApiStatus::Pending, Some(S::Pending))
            | (ApiStatus::Cancelled, Some(S::Cancelled))
            | (ApiStatus::Rejected, Some(S::Rejected))
    );
    if !status_ok {
        return Some(Change::Status);
    }
    let on = matches!(b.status, ApiStatus::Accepted | ApiStatus::Pending);
    let moved = |api: Option<DateTime<Utc>>, db: Option<DateTime<Utc>>| api.is_some() && api != db;
    if on && (moved(b.start, s.start) || moved(b.end, s.end)) {
        return Some(Change::Times);
    }
    None
}

/// The successors (`rescheduledToUid`) named by moved-away bookings that are not retired yet
/// and that the sweeps did not return: the caller fetches them, so their reschedule can retire
/// the old uid.
pub(crate) fn missing_successors(
    bookings: &[ApiBooking],
    stored: &HashMap<String, Stored>,
) -> Vec<String> {
    let seen: std::collections::HashSet<&str> = bookings.iter().map(|b| b.uid.as_str()).collect();
    let mut out: Vec<String> = bookings
        .iter()
        .filter(|b| matches!(b.status, ApiStatus::Cancelled | ApiStatus::Rejected))
        .filter_map(|b| {
            let to = b.rescheduled_to_uid.as_deref()?;
            let pending = difference(b, stored.get(&b.uid)).is_some();
            (pending && !seen.contains(to)).then(|| to.to_string())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calapi::booking::one_booking;
    use serde_json::{json, Value};

    fn api(uid: &str, status: &str, created: &str, extra: Value) -> ApiBooking {
        let b = json!({"uid": uid, "status": status, "start": "2026-03-11T16:00:00.000Z",
                       "end": "2026-03-11T16:50:00.000Z", "createdAt": created,
                       "updatedAt": null});
        one_booking(b, extra)
    }

    fn stored(status: &str) -> Stored {
        Stored {
            status: Some(status.into()),
            start: Some("2026-03-11T16:00:00Z".parse().unwrap()),
            end: Some("2026-03-11T16:50:00Z".parse().unwrap()),
            rescheduled_to_uid: None,
        }
    }

    fn triggers(steps: &[Step]) -> Vec<(String, &'static str, Change)> {
        steps
            .iter()
            .map(|s| {
                let t: &'static str = match s.trigger {
                    Trigger::BookingCreated => "CREATED",
                    Trigger::BookingRequested => "REQUESTED",
                    Trigger::BookingRescheduled => "RESCHEDULED",
                    Trigger::BookingCancelled => "CANCELLED",
                    Trigger::BookingRejected => "REJECTED",
                    _ => "other",
                };
                (s.cal_uid.clone(), t, s.change)
            })
            .collect()
    }

    const T0: &str = "2026-03-01T10:00:00.000Z";
    const T1: &str = "2026-03-02T10:00:00.000Z";

    #[test]
    fn a_booking_the_database_already_shows_gets_nothing() {
        let db = HashMap::from([("a".to_string(), stored("accepted"))]);
        assert!(plan(&[api("a", "accepted", T0, json!({}))], &db).is_empty());
        let db = HashMap::from([("a".to_string(), stored("COMPLETED"))]);
        assert!(plan(&[api("a", "accepted", T0, json!({}))], &db).is_empty());
        let db = HashMap::from([("c".to_string(), stored("CANCELLED"))]);
        assert!(plan(
            &[api(
                "c",
                "cancelled",
                T0,
                json!({"start": "2026-04-01T00:00:00Z"})
            )],
            &db
        )
        .is_empty());
    }

    #[test]
    fn unknown_differing_and_pre_inserted_bookings_are_applied() {
        let mut pre = stored("x");
        pre.status = None;
        let db = HashMap::from([
            ("moved".to_string(), stored("ACCEPTED")),
            ("pre".to_string(), pre),
            ("cancel".to_string(), stored("ACCEPTED")),
        ]);
        let steps = plan(
            &[
                api("new", "accepted", T0, json!({})),
                api(
                    "moved",
                    "accepted",
                    T0,
                    json!({"start": "2026-03-12T16:00:00Z"}),
                ),
                api("pre", "accepted", T0, json!({})),
                api("cancel", "cancelled", T0, json!({"updatedAt": T1})),
                api("req", "pending", T0, json!({})),
            ],
            &db,
        );
        assert_eq!(
            triggers(&steps),
            vec![
                ("cancel".into(), "CANCELLED", Change::Status),
                ("moved".into(), "CREATED", Change::Times),
                ("new".into(), "CREATED", Change::New),
                ("pre".into(), "CREATED", Change::Status),
                ("req".into(), "REQUESTED", Change::New),
            ]
        );
        let cancel = crate::webhook::parse(&steps[0].body).unwrap();
        assert_eq!(cancel.created_at, Some(T1.parse().unwrap()));
    }

    #[test]
    fn a_reschedule_retires_the_old_uid_through_the_new_ones_event_only() {
        let old = api(
            "old",
            "cancelled",
            T0,
            json!({"rescheduledToUid": "new", "updatedAt": T1}),
        );
        let new = api("new", "accepted", T1, json!({"rescheduledFromUid": "old"}));
        let db = HashMap::from([("old".to_string(), stored("ACCEPTED"))]);
        let steps = plan(&[new.clone(), old.clone()], &db);
        assert_eq!(
            triggers(&steps),
            vec![("new".into(), "RESCHEDULED", Change::Moved)]
        );
        let e = crate::webhook::parse(&steps[0].body).unwrap();
        assert_eq!(e.reschedule_uid.as_deref(), Some("old"));
        assert_eq!(e.status.as_deref(), Some("ACCEPTED"));

        // Once both show it, nothing.
        let mut retired = stored("RESCHEDULED");
        retired.rescheduled_to_uid = Some("new".into());
        let db = HashMap::from([
            ("old".to_string(), retired),
            ("new".to_string(), stored("ACCEPTED")),
        ]);
        assert!(plan(&[new, old], &db).is_empty());
    }

    #[test]
    fn a_moved_then_cancelled_booking_retires_its_origin_without_ever_being_active() {
        let b = api(
            "b",
            "cancelled",
            T1,
            json!({"rescheduledFromUid": "a", "updatedAt": T1}),
        );
        let db = HashMap::from([("a".to_string(), stored("ACCEPTED"))]);
        let steps = plan(&[b], &db);
        assert_eq!(
            triggers(&steps),
            vec![
                ("b".into(), "RESCHEDULED", Change::Moved),
                ("b".into(), "CANCELLED", Change::New),
            ]
        );
        let first = crate::webhook::parse(&steps[0].body).unwrap();
        assert_eq!(first.status.as_deref(), Some("PENDING"));
    }

    #[test]
    fn a_chain_is_applied_in_creation_order() {
        let a = api("a", "cancelled", T0, json!({"rescheduledToUid": "b"}));
        let b = api(
            "b",
            "cancelled",
            T1,
            json!({"rescheduledFromUid": "a", "rescheduledToUid": "c"}),
        );
        let c = api(
            "c",
            "accepted",
            "2026-03-03T10:00:00Z",
            json!({"rescheduledFromUid": "b"}),
        );
        let steps = plan(&[c, a, b], &HashMap::new());
        assert_eq!(
            triggers(&steps),
            vec![
                ("b".into(), "RESCHEDULED", Change::Moved),
                ("c".into(), "RESCHEDULED", Change::Moved),
            ]
        );
    }

    #[test]
    fn successors_missing_from_the_sweeps_are_named_for_fetching() {
        let old = api("old", "cancelled", T0, json!({"rescheduledToUid": "new"}));
        assert_eq!(
            missing_successors(std::slice::from_ref(&old), &HashMap::new()),
            vec!["new"]
        );
        let new = api("new", "accepted", T1, json!({"rescheduledFromUid": "old"}));
        assert!(missing_successors(&[old.clone(), new], &HashMap::new()).is_empty());
        let mut retired = stored("RESCHEDULED");
        retired.rescheduled_to_uid = Some("new".into());
        let db = HashMap::from([("old".to_string(), retired)]);
        assert!(missing_successors(&[old], &db).is_empty());
    }
}
