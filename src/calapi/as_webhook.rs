//! An API booking written as the webhook body Cal.com would have sent for it, so that
//! reconcile applies it through the webhook's own code (`webhook::apply::handle`: the parser,
//! the lifecycle table, the upsert that never writes NULL over a known value, the patient,
//! therapist and match resolution). Nothing here decides a status; it only chooses the trigger
//! that says what happened, as Cal.com would have.
//!
//! The body carries the API's own field values unchanged (times, attendees, metadata), so a
//! malformed field gets the webhook parser's warning and never loses the booking. The same
//! booking state always gives the same bytes: a second reconcile of an unchanged booking is a
//! duplicate body, with one effect.
//!
//! Field mapping (API v2 `2024-08-13` → webhook payload): `start`/`end` → `startTime`/`endTime`,
//! `hosts[0]` → `organizer`, `attendees[].{email,name,phoneNumber}` → `attendees`,
//! `eventTypeId`/`eventType` as they are, `status` upper case, `location`, `metadata` (the
//! marketplace's `kh_*`), `metadata.videoCallUrl` else `meetingUrl` else an http(s)
//! `location` → `metadata.videoCallUrl`, `cancellationReason`.
//!
//! No I/O.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use super::booking::{ApiBooking, ApiStatus};
use crate::webhook::Trigger;

/// The webhook body for `b` under `trigger`. `status` overrides the booking's own status (the
/// intermediate step of a cancelled booking that was moved here first, see `plan`);
/// `reschedule_uid` is the booking it replaces; `event_at` becomes the envelope's `createdAt`,
/// the time the lifecycle table orders events by (`None`: unknown, never stale).
pub(crate) fn body(
    b: &ApiBooking,
    trigger: &Trigger,
    status: ApiStatus,
    reschedule_uid: Option<&str>,
    event_at: Option<DateTime<Utc>>,
) -> Vec<u8> {
    let raw = &b.raw;
    let mut p = Map::new();
    p.insert("uid".into(), b.uid.clone().into());
    if let Some(old) = reschedule_uid {
        p.insert("rescheduleUid".into(), old.into());
    }
    copy(raw, "start", &mut p, "startTime");
    copy(raw, "end", &mut p, "endTime");
    if let Some(host) = raw
        .get("hosts")
        .and_then(Value::as_array)
        .and_then(|h| h.first())
    {
        p.insert("organizer".into(), host.clone());
    }
    if let Some(list) = raw.get("attendees") {
        p.insert("attendees".into(), attendees(list));
    }
    copy(raw, "eventTypeId", &mut p, "eventTypeId");
    copy(raw, "eventType", &mut p, "eventType");
    p.insert("status".into(), status.webhook_name().into());
    copy(raw, "location", &mut p, "location");
    p.insert("metadata".into(), metadata(raw));
    if *trigger == Trigger::BookingCancelled {
        copy(raw, "cancellationReason", &mut p, "cancellationReason");
    }
    let mut envelope = Map::new();
    envelope.insert("triggerEvent".into(), trigger.as_str().into());
    if let Some(at) = event_at {
        envelope.insert(
            "createdAt".into(),
            at.to_rfc3339_opts(SecondsFormat::Millis, true).into(),
        );
    }
    envelope.insert("payload".into(), Value::Object(p));
    serde_json::to_vec(&Value::Object(envelope)).unwrap_or_default()
}

fn copy(from: &Map<String, Value>, key: &str, to: &mut Map<String, Value>, as_key: &str) {
    if let Some(v) = from.get(key).filter(|v| !v.is_null()) {
        to.insert(as_key.into(), v.clone());
    }
}

/// The attendees' contact fields as the webhook names them; anything that is not an object is
/// passed on for the parser to warn about.
fn attendees(list: &Value) -> Value {
    let Value::Array(items) = list else {
        return list.clone();
    };
    Value::Array(
        items
            .iter()
            .map(|a| match a {
                Value::Object(m) => {
                    let mut out = Map::new();
                    for key in ["email", "name", "phoneNumber"] {
                        copy(m, key, &mut out, key);
                    }
                    Value::Object(out)
                }
                other => other.clone(),
            })
            .collect(),
    )
}

/// The booking's metadata with the video link where the webhook carries it.
fn metadata(raw: &Map<String, Value>) -> Value {
    let mut m = match raw.get("metadata") {
        Some(Value::Object(m)) => m.clone(),
        Some(Value::Null) | None => Map::new(),
        // Not an object: passed on, so the parser names it.
        Some(other) => return other.clone(),
    };
    let has_link = m
        .get("videoCallUrl")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.trim().is_empty());
    if !has_link {
        let link = ["meetingUrl", "location"]
            .into_iter()
            .filter_map(|k| raw.get(k).and_then(Value::as_str))
            .map(str::trim)
            .find(|s| s.starts_with("https://") || s.starts_with("http://"));
        if let Some(link) = link {
            m.insert("videoCallUrl".into(), json!(link));
        }
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calapi::booking::one_booking;
    use crate::webhook::parse;

    const PATIENT: &str = "7b1f3c2e-5a4d-4c8e-9f10-2a3b4c5d6e7f";

    fn api(status: &str, extra: Value) -> ApiBooking {
        let b = json!({
            "id": 90377, "uid": "Rz9mC4wPq7XnLb2VkT6sHf", "title": "Therapiesitzung",
            "status": status, "start": "2026-03-11T16:00:00.000Z", "end": "2026-03-11T16:50:00.000Z",
            "duration": 50, "eventTypeId": 1188, "eventType": {"id": 1188, "slug": "full-session"},
            "hosts": [{"id": 42, "name": "Dr. Lena Brandt", "email": "lena.brandt@praxis.example",
                       "username": "lena-brandt", "timeZone": "Europe/Berlin"}],
            "attendees": [{"name": "Jonas Weber", "email": "jonas.weber@example.de",
                           "timeZone": "Europe/Berlin", "phoneNumber": "+4915112345678",
                           "absent": false}],
            "location": "https://app.cal.com/video/Rz9mC4wPq7XnLb2VkT6sHf",
            "metadata": {"kh_patient_id": PATIENT, "kh_booking_kind": "full_session"},
            "absentHost": false, "createdAt": "2026-03-08T07:45:09.000Z", "updatedAt": null,
            "cancellationReason": "krank"
        });
        one_booking(b, extra)
    }

    /// The webhook parser's reading of [`body`] for `b` in its own status.
    fn event(
        b: &ApiBooking,
        trigger: Trigger,
        reschedule_uid: Option<&str>,
        at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> crate::webhook::CalEvent {
        parse(&body(b, &trigger, b.status, reschedule_uid, at)).unwrap()
    }

    #[test]
    fn an_accepted_booking_reads_back_as_the_webhook_event_cal_com_would_have_sent() {
        let b = api("accepted", json!({}));
        let at = b.changed_at();
        let e = event(&b, Trigger::BookingCreated, None, at);
        assert_eq!(e.trigger, Trigger::BookingCreated);
        assert_eq!(e.uid.as_deref(), Some("Rz9mC4wPq7XnLb2VkT6sHf"));
        assert_eq!(e.created_at, at);
        assert_eq!(e.start_time, Some("2026-03-11T16:00:00Z".parse().unwrap()));
        assert_eq!(e.end_time, Some("2026-03-11T16:50:00Z".parse().unwrap()));
        assert_eq!(e.organizer_username.as_deref(), Some("lena-brandt"));
        assert_eq!(e.status.as_deref(), Some("ACCEPTED"));
        assert_eq!(e.event_type_id, Some(1188));
        assert_eq!(e.kh.patient_id, Some(PATIENT.parse().unwrap()));
        let a = e.patient().unwrap();
        assert_eq!(a.email.as_deref(), Some("jonas.weber@example.de"));
        assert_eq!(a.phone.as_deref(), Some("+4915112345678"));
        assert_eq!(
            e.video_url.as_deref(),
            Some("https://app.cal.com/video/Rz9mC4wPq7XnLb2VkT6sHf")
        );
        // Only a cancellation carries the reason.
        assert_eq!(e.cancellation_reason, None);
        assert!(e.warnings.is_empty(), "{:?}", e.warnings);
    }

    #[test]
    fn a_moved_booking_names_the_one_it_replaces_and_a_cancellation_its_reason() {
        let b = api(
            "accepted",
            json!({"rescheduledFromUid": "Fs3nQ8vLx2WpHc7KdM5tRb"}),
        );
        let e = event(
            &b,
            Trigger::BookingRescheduled,
            b.rescheduled_from_uid.as_deref(),
            b.created_at,
        );
        assert_eq!(e.reschedule_uid.as_deref(), Some("Fs3nQ8vLx2WpHc7KdM5tRb"));

        let c = api(
            "cancelled",
            json!({"updatedAt": "2026-03-09T10:00:00.000Z"}),
        );
        let e = event(&c, Trigger::BookingCancelled, None, c.updated_at);
        assert_eq!(e.status.as_deref(), Some("CANCELLED"));
        assert_eq!(e.cancellation_reason.as_deref(), Some("krank"));
        assert_eq!(e.created_at, Some("2026-03-09T10:00:00Z".parse().unwrap()));
    }

    #[test]
    fn no_event_time_leaves_the_envelope_without_created_at() {
        let b = api("cancelled", json!({}));
        let e = event(&b, Trigger::BookingCancelled, None, None);
        assert_eq!(e.created_at, None);
    }

    #[test]
    fn the_same_state_gives_the_same_bytes() {
        let b = api("accepted", json!({}));
        let one = body(&b, &Trigger::BookingCreated, b.status, None, b.created_at);
        let two = body(
            &b.clone(),
            &Trigger::BookingCreated,
            b.status,
            None,
            b.created_at,
        );
        assert_eq!(one, two);
    }

    #[test]
    fn malformed_fields_become_parser_warnings_not_lost_bookings() {
        let b = api(
            "accepted",
            json!({"start": "next tuesday", "metadata": "oops", "attendees": ["x"]}),
        );
        let e = event(&b, Trigger::BookingCreated, None, None);
        assert_eq!(e.uid.as_deref(), Some("Rz9mC4wPq7XnLb2VkT6sHf"));
        assert_eq!(e.start_time, None);
        assert_eq!(e.warnings.len(), 3, "{:?}", e.warnings);
    }
}
