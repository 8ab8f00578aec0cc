//! One page of `GET /v2/bookings` in the `cal-api-version: 2024-08-13` shape, read into
//! [`ApiBooking`]s.
//!
//! The page itself is checked strictly: `status` "success", `data` an array, `pagination` an
//! object with a boolean `hasNextPage`. Anything else is a [`ShapeError`], because a page we
//! misread would make the run believe bookings do not exist. Without (or with a wrong)
//! `cal-api-version` header Cal.com silently answers in the older shape
//! (`data: {bookings: [...], nextCursor}`); that shape is named in the error.
//!
//! Each booking is read liberally, like a webhook body: only a missing `uid` or an unknown
//! `status` makes it unusable (counted by the caller, the rest of the page is kept). The raw
//! object is kept for the webhook adapter (`as_webhook`), which passes its fields on to the
//! webhook parser and its warnings.
//!
//! No I/O. `Debug` never prints attendee data.

use std::fmt;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// A booking's status as API v2 names it (lower case).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ApiStatus {
    Accepted,
    Pending,
    Cancelled,
    Rejected,
}

impl ApiStatus {
    fn parse(raw: &str) -> Option<ApiStatus> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "accepted" => Some(ApiStatus::Accepted),
            "pending" => Some(ApiStatus::Pending),
            "cancelled" => Some(ApiStatus::Cancelled),
            "rejected" => Some(ApiStatus::Rejected),
            _ => None,
        }
    }

    /// The status text Cal.com's webhooks carry for it (`payload.status`).
    pub(crate) fn webhook_name(self) -> &'static str {
        match self {
            ApiStatus::Accepted => "ACCEPTED",
            ApiStatus::Pending => "PENDING",
            ApiStatus::Cancelled => "CANCELLED",
            ApiStatus::Rejected => "REJECTED",
        }
    }
}

/// One booking of the API, with the facts reconcile decides on read out and the whole object
/// kept for the adapter.
#[derive(Clone)]
pub(crate) struct ApiBooking {
    pub uid: String,
    pub status: ApiStatus,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
    /// May be null at Cal.com (a booking never changed after it was made).
    pub updated_at: Option<DateTime<Utc>>,
    /// The booking this one replaced (it was moved here).
    pub rescheduled_from_uid: Option<String>,
    /// The booking that replaced this one (this one was moved away).
    pub rescheduled_to_uid: Option<String>,
    pub raw: Map<String, Value>,
}

impl fmt::Debug for ApiBooking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiBooking")
            .field("uid", &self.uid)
            .field("status", &self.status)
            .field("start", &self.start)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field("rescheduled_from_uid", &self.rescheduled_from_uid)
            .field("rescheduled_to_uid", &self.rescheduled_to_uid)
            .finish_non_exhaustive()
    }
}

impl ApiBooking {
    /// When Cal.com last changed the booking: `updatedAt`, else `createdAt`.
    pub(crate) fn changed_at(&self) -> Option<DateTime<Utc>> {
        self.updated_at.or(self.created_at)
    }
}

/// A page whose shape is not the documented 2024-08-13 one. The text names the problem, never
/// a value from the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ShapeError(pub String);

/// One page: its usable bookings, the items that were not (one line each, no personal data),
/// and whether another page follows.
#[derive(Debug)]
pub(crate) struct Page {
    pub bookings: Vec<ApiBooking>,
    pub unusable: Vec<String>,
    pub has_next_page: bool,
    /// How many items `data` held (usable or not).
    pub returned: usize,
}

/// Reads one page body. A body that is not JSON, or not in the 2024-08-13 shape, is an error.
pub(crate) fn parse_page(body: &[u8]) -> Result<Page, ShapeError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ShapeError(format!("the answer is not valid JSON ({e})")))?;
    let Value::Object(root) = value else {
        return Err(ShapeError("the answer is JSON but not an object".into()));
    };
    match root.get("status").and_then(Value::as_str) {
        Some("success") => {}
        Some(other) => {
            return Err(ShapeError(format!(
                "the answer's status is {:?}, not \"success\"",
                other.chars().take(40).collect::<String>()
            )))
        }
        None => return Err(ShapeError("the answer has no status field".into())),
    }
    let data = match root.get("data") {
        Some(Value::Array(items)) => items,
        Some(Value::Object(old)) if old.contains_key("bookings") => {
            return Err(ShapeError(
                "the answer is in Cal.com's older shape (data.bookings): the header \
                 cal-api-version: 2024-08-13 was not honoured (a proxy dropping headers, or an \
                 API that does not know this version)"
                    .into(),
            ))
        }
        Some(_) => return Err(ShapeError("the answer's data is not an array".into())),
        None => return Err(ShapeError("the answer has no data field".into())),
    };
    let has_next_page = match root.get("pagination") {
        Some(Value::Object(p)) => match p.get("hasNextPage") {
            Some(Value::Bool(b)) => *b,
            _ => {
                return Err(ShapeError(
                    "the answer's pagination has no boolean hasNextPage".into(),
                ))
            }
        },
        _ => {
            return Err(ShapeError(
                "the answer has no pagination object (expected with cal-api-version \
                 2024-08-13)"
                    .into(),
            ))
        }
    };
    let mut page = Page {
        bookings: Vec::with_capacity(data.len()),
        unusable: Vec::new(),
        has_next_page,
        returned: data.len(),
    };
    for (i, item) in data.iter().enumerate() {
        match read_booking(item) {
            Ok(b) => page.bookings.push(b),
            Err(why) => page.unusable.push(format!("data[{i}]: {why}")),
        }
    }
    Ok(page)
}

fn read_booking(item: &Value) -> Result<ApiBooking, String> {
    let Value::Object(map) = item else {
        return Err("not an object".into());
    };
    let uid = text(map, "uid").ok_or("no uid")?;
    let status = match map.get("status") {
        Some(Value::String(s)) => ApiStatus::parse(s).ok_or_else(|| {
            format!(
                "booking {uid}: unknown status (expected accepted, pending, cancelled, rejected)"
            )
        })?,
        _ => return Err(format!("booking {uid}: no status")),
    };
    Ok(ApiBooking {
        status,
        start: time(map, "start"),
        end: time(map, "end"),
        created_at: time(map, "createdAt"),
        updated_at: time(map, "updatedAt"),
        rescheduled_from_uid: text(map, "rescheduledFromUid"),
        rescheduled_to_uid: text(map, "rescheduledToUid"),
        raw: map.clone(),
        uid,
    })
}

/// A non-blank string.
fn text(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn time(map: &Map<String, Value>, key: &str) -> Option<DateTime<Utc>> {
    let raw = text(map, key)?;
    DateTime::parse_from_rfc3339(&raw)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The one booking of a last page holding `booking` with the fields of `extra` set over it:
/// how the tests of the webhook adapter and of the planner make an [`ApiBooking`].
#[cfg(test)]
pub(crate) fn one_booking(mut booking: Value, extra: Value) -> ApiBooking {
    for (k, v) in extra.as_object().unwrap() {
        booking[k] = v.clone();
    }
    let page = serde_json::json!({"status": "success", "data": [booking],
                                  "pagination": {"hasNextPage": false}});
    parse_page(&serde_json::to_vec(&page).unwrap())
        .unwrap()
        .bookings
        .remove(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn page(v: Value) -> Result<Page, ShapeError> {
        parse_page(&serde_json::to_vec(&v).unwrap())
    }

    fn booking(uid: &str, status: &str) -> Value {
        json!({"id": 1, "uid": uid, "status": status, "start": "2026-03-05T09:20:00.000Z",
               "end": "2026-03-05T09:35:00.000Z", "createdAt": "2026-03-01T10:00:00.000Z",
               "updatedAt": null, "attendees": [{"name": "Jonas Weber",
               "email": "jonas.weber@example.de"}]})
    }

    #[test]
    fn a_documented_page_is_read_with_its_bookings_and_paging() {
        let p = page(json!({"status": "success",
                            "data": [booking("a", "accepted"), booking("b", "CANCELLED")],
                            "pagination": {"totalItems": 3, "hasNextPage": true}}))
        .unwrap();
        assert!(p.has_next_page);
        assert_eq!(p.returned, 2);
        assert_eq!(p.bookings[0].uid, "a");
        assert_eq!(p.bookings[0].status, ApiStatus::Accepted);
        assert_eq!(p.bookings[1].status, ApiStatus::Cancelled);
        assert_eq!(p.bookings[0].updated_at, None);
        assert_eq!(
            p.bookings[0].changed_at(),
            Some("2026-03-01T10:00:00Z".parse().unwrap())
        );
    }

    #[test]
    fn the_older_shape_names_the_missing_version_header() {
        let e = page(json!({"status": "success",
                            "data": {"bookings": [booking("a", "accepted")], "nextCursor": null}}))
        .unwrap_err();
        assert!(e.0.contains("cal-api-version"), "{e}");
    }

    #[test]
    fn a_page_without_pagination_or_with_an_error_status_is_refused() {
        let e = page(json!({"status": "success", "data": []})).unwrap_err();
        assert!(e.0.contains("pagination"), "{e}");
        let e = page(json!({"status": "error", "error": {"code": "X"}})).unwrap_err();
        assert!(e.0.contains("\"error\""), "{e}");
        let e = parse_page(b"<html>bad gateway</html>").unwrap_err();
        assert!(e.0.contains("not valid JSON"), "{e}");
    }

    #[test]
    fn items_without_uid_or_with_unknown_status_are_unusable_and_never_quote_data() {
        let p = page(json!({"status": "success",
                            "data": [{"status": "accepted", "attendees": [{"email": "jonas.weber@example.de"}]},
                                     booking("b", "confirmed"), booking("c", "pending")],
                            "pagination": {"hasNextPage": false}}))
        .unwrap();
        assert_eq!(p.bookings.len(), 1);
        assert_eq!(p.unusable.len(), 2);
        for u in &p.unusable {
            assert!(!u.contains("jonas"), "{u}");
            assert!(!u.contains("confirmed"), "{u}");
        }
    }

    #[test]
    fn debug_never_prints_attendees() {
        let p = page(
            json!({"status": "success", "data": [booking("a", "accepted")],
                            "pagination": {"hasNextPage": false}}),
        )
        .unwrap();
        let text = format!("{:?}", p);
        assert!(!text.contains("jonas"), "{text}");
        assert!(!text.contains("Jonas"), "{text}");
    }
}
