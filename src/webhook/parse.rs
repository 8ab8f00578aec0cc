//! Turns a verified Cal.com webhook body into a [`CalEvent`].
//!
//! Two body shapes arrive (samples in `tests/fixtures/cal/`): the `{triggerEvent, createdAt, payload}` envelope of the
//! booking triggers, and the flat `MEETING_STARTED`/`MEETING_ENDED` body whose booking fields sit
//! at the top level next to `triggerEvent`. Both are read into the same struct.
//!
//! The parser is deliberately liberal: Cal.com adds fields, and the booking site writes the
//! `kh_*` metadata by hand. Only a body that is not a JSON object, or has no `triggerEvent`, is an
//! error. Every other field that is present but unusable (wrong type, bad UUID, bad date) is left
//! out and named in [`CalEvent::warnings`]: losing a booking over a malformed optional field would
//! be worse than storing it without that field. Warnings name the field and the problem, never
//! the value, so they can be logged as they are.
//!
//! No I/O, no clock, no logging, no decisions about what an event means for the database.

use std::fmt;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::domain::{mask_email, mask_phone, BookingKind};

/// `triggerEvent`: what happened to the booking. Triggers this program does not know are kept
/// by name in [`Trigger::Unknown`], so they can be logged and acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    BookingCreated,
    BookingRescheduled,
    BookingCancelled,
    BookingRejected,
    BookingRequested,
    MeetingStarted,
    MeetingEnded,
    BookingNoShowUpdated,
    /// `AFTER_HOSTS_CAL_VIDEO_NO_SHOW`: the host did not join the Cal Video call.
    AfterHostsNoShow,
    /// `AFTER_GUESTS_CAL_VIDEO_NO_SHOW`: no guest joined the Cal Video call.
    AfterGuestsNoShow,
    /// The test button in Cal.com's webhook settings.
    Ping,
    Unknown(String),
}

impl Trigger {
    const KNOWN: [Trigger; 11] = [
        Trigger::BookingCreated,
        Trigger::BookingRescheduled,
        Trigger::BookingCancelled,
        Trigger::BookingRejected,
        Trigger::BookingRequested,
        Trigger::MeetingStarted,
        Trigger::MeetingEnded,
        Trigger::BookingNoShowUpdated,
        Trigger::AfterHostsNoShow,
        Trigger::AfterGuestsNoShow,
        Trigger::Ping,
    ];

    /// Cal.com's name of the trigger (`BOOKING_CREATED`, …), as stored in
    /// `cal_bookings.last_trigger_event`; an unknown trigger gives the name it arrived with.
    pub fn as_str(&self) -> &str {
        match self {
            Trigger::BookingCreated => "BOOKING_CREATED",
            Trigger::BookingRescheduled => "BOOKING_RESCHEDULED",
            Trigger::BookingCancelled => "BOOKING_CANCELLED",
            Trigger::BookingRejected => "BOOKING_REJECTED",
            Trigger::BookingRequested => "BOOKING_REQUESTED",
            Trigger::MeetingStarted => "MEETING_STARTED",
            Trigger::MeetingEnded => "MEETING_ENDED",
            Trigger::BookingNoShowUpdated => "BOOKING_NO_SHOW_UPDATED",
            Trigger::AfterHostsNoShow => "AFTER_HOSTS_CAL_VIDEO_NO_SHOW",
            Trigger::AfterGuestsNoShow => "AFTER_GUESTS_CAL_VIDEO_NO_SHOW",
            Trigger::Ping => "PING",
            Trigger::Unknown(name) => name,
        }
    }

    /// Reads a trigger name. Matching ignores case and surrounding whitespace; anything not
    /// known becomes [`Trigger::Unknown`] with the name as given.
    pub fn from_name(name: &str) -> Trigger {
        let wanted = name.trim();
        Trigger::KNOWN
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(wanted))
            .unwrap_or_else(|| Trigger::Unknown(name.to_string()))
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The marketplace's own booking metadata (`metadata.kh_*`), set through the booking link.
/// Each field is `None` when absent or unusable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KhMetadata {
    pub patient_id: Option<Uuid>,
    pub therapist_id: Option<Uuid>,
    pub match_id: Option<Uuid>,
    pub booking_kind: Option<BookingKind>,
    pub test: Option<bool>,
    pub source: Option<String>,
}

/// One attendee as Cal.com sent it. The contact fields are raw text: parse them with
/// `EmailAddress::parse` / `PhoneNumber::parse` before sending anything. `Debug` masks them.
#[derive(Clone, PartialEq, Eq)]
pub struct Attendee {
    pub email: Option<String>,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub no_show: Option<bool>,
}

impl fmt::Debug for Attendee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attendee")
            .field("email", &self.email.as_deref().map(mask_email))
            .field("name", &self.name.as_ref().map(|_| Redacted))
            .field("phone", &self.phone.as_deref().map(mask_phone))
            .field("no_show", &self.no_show)
            .finish()
    }
}

/// One webhook delivery, read from either body shape. Every booking field is optional: what the
/// body lacks stays `None`, and the apply step must not overwrite a known value with it.
#[derive(Clone)]
pub struct CalEvent {
    pub trigger: Trigger,
    /// When Cal.com emitted the event: the envelope's `createdAt`. Flat bodies have no envelope;
    /// there it is the booking's `updatedAt`, else its `createdAt`.
    pub created_at: Option<DateTime<Utc>>,
    /// `uid`, or `bookingUid` (no-show payloads).
    pub uid: Option<String>,
    /// `rescheduleUid` (BOOKING_RESCHEDULED: the booking this one replaces), else
    /// `fromReschedule`, which flat bodies use for the same thing.
    pub reschedule_uid: Option<String>,
    pub ical_sequence: Option<i32>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    /// From `organizer`, or from `user` (flat bodies). Absent there: `None`, never guessed from
    /// other fields such as `userPrimaryEmail`.
    pub organizer_username: Option<String>,
    pub organizer_email: Option<String>,
    pub organizer_name: Option<String>,
    pub attendees: Vec<Attendee>,
    /// `eventTypeId`, else `eventType.id` (no-show payloads).
    pub event_type_id: Option<i32>,
    /// Cal.com's booking status as sent (`ACCEPTED`, `CANCELLED`, …).
    pub status: Option<String>,
    /// `metadata.videoCallUrl`, else `videoCallData.url`.
    pub video_url: Option<String>,
    pub location: Option<String>,
    pub cancellation_reason: Option<String>,
    pub request_reschedule: Option<bool>,
    pub kh: KhMetadata,
    /// Fields that were present but unusable and were ignored, one line each, e.g.
    /// `payload.metadata.kh_patient_id: not a UUID, ignored`. Never holds a field's value.
    pub warnings: Vec<String>,
}

impl CalEvent {
    /// A test booking (never sent to; see `stages::plan::check_patient`): `metadata.kh_test` is `true`, `"true"`, `1` or `"1"`, or
    /// the first attendee's email has `+test` in its local part (case ignored).
    pub fn is_test(&self) -> bool {
        if self.kh.test == Some(true) {
            return true;
        }
        self.attendees
            .first()
            .and_then(|a| a.email.as_deref())
            .and_then(|e| e.trim().rsplit_once('@'))
            .is_some_and(|(local, _)| local.to_ascii_lowercase().contains("+test"))
    }

    /// The first attendee: the patient, for this marketplace's one-to-one sessions.
    pub fn patient(&self) -> Option<&Attendee> {
        self.attendees.first()
    }
}

/// Stands in for a value that must not reach a log.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Debug for CalEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CalEvent")
            .field("trigger", &self.trigger)
            .field("created_at", &self.created_at)
            .field("uid", &self.uid)
            .field("reschedule_uid", &self.reschedule_uid)
            .field("ical_sequence", &self.ical_sequence)
            .field("start_time", &self.start_time)
            .field("end_time", &self.end_time)
            .field("organizer_username", &self.organizer_username)
            .field(
                "organizer_email",
                &self.organizer_email.as_deref().map(mask_email),
            )
            .field("organizer_name", &self.organizer_name)
            .field("attendees", &self.attendees)
            .field("event_type_id", &self.event_type_id)
            .field("status", &self.status)
            .field("video_url", &self.video_url)
            .field("location", &self.location)
            .field(
                "cancellation_reason",
                &self.cancellation_reason.as_ref().map(|_| Redacted),
            )
            .field("request_reschedule", &self.request_reschedule)
            .field("kh", &self.kh)
            .field("warnings", &self.warnings)
            .finish()
    }
}

/// A body that cannot be read as a webhook at all (answered 400 by `serve`). Messages never quote the body.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("webhook body is not valid JSON: {0}")]
    InvalidJson(#[source] serde_json::Error),
    #[error("webhook body is JSON but not an object")]
    NotAnObject,
    #[error("webhook body has no triggerEvent string")]
    MissingTrigger,
}

/// Reads one webhook body. See the module documentation for what is an error and what is only a
/// warning.
pub fn parse(body: &[u8]) -> Result<CalEvent, ParseError> {
    // serde_json limits nesting depth, so hostile bodies fail here instead of overflowing the
    // stack.
    let mut value: Value = serde_json::from_slice(body).map_err(ParseError::InvalidJson)?;
    strip_nul(&mut value);
    let Value::Object(root) = value else {
        return Err(ParseError::NotAnObject);
    };
    let trigger = match root.get("triggerEvent") {
        Some(Value::String(name)) if !name.trim().is_empty() => Trigger::from_name(name),
        _ => return Err(ParseError::MissingTrigger),
    };

    let mut w = Warnings::default();
    let (booking, created_at) = booking_of(&root, &mut w);
    let uid = booking
        .text("uid", &mut w)
        .or_else(|| booking.text("bookingUid", &mut w));
    let reschedule_uid = booking
        .text("rescheduleUid", &mut w)
        .or_else(|| booking.text("fromReschedule", &mut w));
    let (organizer_username, organizer_email, organizer_name) = organizer_of(&booking, &mut w);
    let attendees = booking
        .array("attendees", &mut w)
        .map(|list| attendees(list, &booking.path_of("attendees"), &mut w))
        .unwrap_or_default();
    let event_type_id = booking.int("eventTypeId", &mut w).or_else(|| {
        booking
            .object("eventType", &mut w)
            .and_then(|et| et.int("id", &mut w))
    });
    let metadata = booking.object("metadata", &mut w);
    let video_url = metadata
        .as_ref()
        .and_then(|m| m.text("videoCallUrl", &mut w))
        .or_else(|| {
            booking
                .object("videoCallData", &mut w)
                .and_then(|v| v.text("url", &mut w))
        });
    let kh = metadata
        .as_ref()
        .map(|m| kh_metadata(m, &mut w))
        .unwrap_or_default();

    Ok(CalEvent {
        trigger,
        created_at,
        uid,
        reschedule_uid,
        ical_sequence: booking.int("iCalSequence", &mut w),
        start_time: booking.time("startTime", &mut w),
        end_time: booking.time("endTime", &mut w),
        organizer_username,
        organizer_email,
        organizer_name,
        attendees,
        event_type_id,
        status: booking.text("status", &mut w),
        video_url,
        location: booking.text("location", &mut w),
        cancellation_reason: booking.text("cancellationReason", &mut w),
        request_reschedule: booking.boolean("requestReschedule", &mut w),
        kh,
        warnings: w.0,
    })
}

/// Where the booking's fields are, and when the event happened: the envelope's `payload` and
/// `createdAt`, or (a flat MEETING_* body, or a payload that is not an object) the top level
/// and the booking's own timestamps.
fn booking_of<'a>(
    root: &'a serde_json::Map<String, Value>,
    w: &mut Warnings,
) -> (Fields<'a>, Option<DateTime<Utc>>) {
    let top = Fields::new(root, "");
    match root.get("payload") {
        Some(Value::Object(payload)) => (Fields::new(payload, "payload"), top.time("createdAt", w)),
        absent @ (None | Some(Value::Null)) => {
            if absent.is_some() {
                w.ignored("payload", "null; read as a flat body");
            }
            // Flat body: the top level is the booking, its timestamps are the booking's.
            let updated = top.time("updatedAt", w);
            let created = top.time("createdAt", w);
            (top.clone(), updated.or(created))
        }
        Some(other) => {
            w.ignored("payload", &format!("{}; read as a flat body", kind(other)));
            (top.clone(), top.time("createdAt", w))
        }
    }
}

/// The organizer's (or, in older bodies, the user's) username, email and name.
fn organizer_of(
    booking: &Fields<'_>,
    w: &mut Warnings,
) -> (Option<String>, Option<String>, Option<String>) {
    let organizer = booking
        .object("organizer", w)
        .or_else(|| booking.object("user", w));
    match &organizer {
        Some(o) => (o.text("username", w), o.text("email", w), o.text("name", w)),
        None => (None, None, None),
    }
}

/// Removes every NUL (`\u0000`) from the body's strings and keys. PostgreSQL's `text` and
/// `jsonb` cannot hold one: a single NUL in an attendee's name would fail the whole event, and
/// Cal.com does not send it again. A NUL carries no meaning in any field Cal.com sends.
fn strip_nul(value: &mut Value) {
    match value {
        Value::String(s) if s.contains('\0') => s.retain(|c| c != '\0'),
        Value::Array(items) => items.iter_mut().for_each(strip_nul),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                *map = std::mem::take(map)
                    .into_iter()
                    .map(|(k, v)| (k.replace('\0', ""), v))
                    .collect();
            }
            map.values_mut().for_each(strip_nul);
        }
        _ => {}
    }
}

fn attendees(list: &[Value], path: &str, w: &mut Warnings) -> Vec<Attendee> {
    list.iter()
        .enumerate()
        .filter_map(|(i, item)| {
            let path = format!("{path}[{i}]");
            let Value::Object(map) = item else {
                w.ignored(&path, &format!("{}, not an attendee object", kind(item)));
                return None;
            };
            let a = Fields::new(map, &path);
            Some(Attendee {
                email: a.text("email", w),
                name: a.text("name", w),
                phone: a.text("phoneNumber", w),
                no_show: a.boolean("noShow", w),
            })
        })
        .collect()
}

fn kh_metadata(m: &Fields<'_>, w: &mut Warnings) -> KhMetadata {
    let booking_kind =
        m.text("kh_booking_kind", w)
            .and_then(|raw| match BookingKind::parse(raw.trim()) {
                Some(kind) => Some(kind),
                None => {
                    w.ignored(
                        &m.path_of("kh_booking_kind"),
                        "neither intro nor full_session",
                    );
                    None
                }
            });
    KhMetadata {
        patient_id: m.uuid("kh_patient_id", w),
        therapist_id: m.uuid("kh_therapist_id", w),
        match_id: m.uuid("kh_match_id", w),
        booking_kind,
        // true, "true", 1 and "1" all mean test (see `CalEvent::is_test`).
        test: m.boolean("kh_test", w),
        source: m.text("kh_source", w),
    }
}

/// The warnings collected while reading one body.
#[derive(Default)]
struct Warnings(Vec<String>);

impl Warnings {
    fn ignored(&mut self, path: &str, problem: &str) {
        self.0.push(format!("{path}: {problem}, ignored"));
    }
}

/// A JSON object with its path from the body's root, for warnings.
#[derive(Clone)]
struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Fields<'a> {
    fn new(map: &'a Map<String, Value>, path: &str) -> Fields<'a> {
        Fields {
            map,
            path: path.to_string(),
        }
    }

    fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value under `key`; JSON `null` counts as absent, which is how Cal.com says "none".
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// A string; empty or blank strings count as absent.
    fn text(&self, key: &str, w: &mut Warnings) -> Option<String> {
        match self.get(key)? {
            Value::String(s) if s.trim().is_empty() => None,
            Value::String(s) => Some(s.clone()),
            other => self.wrong(key, "a string", other, w),
        }
    }

    /// A boolean, also as `1`/`0` and as the strings "true"/"false"/"1"/"0": metadata set
    /// through booking-link query parameters (`metadata[kh_test]=1`) arrives as text, and
    /// other programs write numbers.
    fn boolean(&self, key: &str, w: &mut Warnings) -> Option<bool> {
        let value = self.get(key)?;
        let read = match value {
            Value::Bool(b) => Some(*b),
            Value::Number(n) => match n.as_u64() {
                Some(1) => Some(true),
                Some(0) => Some(false),
                _ => None,
            },
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => Some(true),
                "false" | "0" => Some(false),
                _ => None,
            },
            _ => None,
        };
        read.or_else(|| self.wrong(key, "a boolean", value, w))
    }

    fn int(&self, key: &str, w: &mut Warnings) -> Option<i32> {
        let value = self.get(key)?;
        match value.as_i64().map(i32::try_from) {
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                w.ignored(&self.path_of(key), "integer out of range");
                None
            }
            None => self.wrong(key, "an integer", value, w),
        }
    }

    /// An RFC 3339 instant: `…Z`, `….000Z` and `…+00:00` all occur.
    fn time(&self, key: &str, w: &mut Warnings) -> Option<DateTime<Utc>> {
        let raw = self.text(key, w)?;
        match DateTime::parse_from_rfc3339(raw.trim()) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                w.ignored(&self.path_of(key), "not an RFC 3339 date-time");
                None
            }
        }
    }

    fn uuid(&self, key: &str, w: &mut Warnings) -> Option<Uuid> {
        let raw = self.text(key, w)?;
        match Uuid::parse_str(raw.trim()) {
            Ok(id) => Some(id),
            Err(_) => {
                w.ignored(&self.path_of(key), "not a UUID");
                None
            }
        }
    }

    fn object(&self, key: &str, w: &mut Warnings) -> Option<Fields<'a>> {
        match self.get(key)? {
            Value::Object(map) => Some(Fields::new(map, &self.path_of(key))),
            other => self.wrong(key, "an object", other, w),
        }
    }

    fn array(&self, key: &str, w: &mut Warnings) -> Option<&'a [Value]> {
        match self.get(key)? {
            Value::Array(list) => Some(list),
            other => self.wrong(key, "an array", other, w),
        }
    }

    fn wrong<T>(&self, key: &str, wanted: &str, got: &Value, w: &mut Warnings) -> Option<T> {
        w.ignored(
            &self.path_of(key),
            &format!("expected {wanted}, got {}", kind(got)),
        );
        None
    }
}

/// The JSON type of a value, for warnings that must not quote the value itself.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::fixtures;
    use proptest::prelude::*;

    const PATIENT: &str = "7b1f3c2e-5a4d-4c8e-9f10-2a3b4c5d6e7f";
    const THERAPIST: &str = "3c9d8e7f-6a5b-4c4d-8e2f-1a0b9c8d7e6f";
    const MATCH: &str = "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9";

    fn at(rfc3339: &str) -> Option<DateTime<Utc>> {
        Some(
            DateTime::parse_from_rfc3339(rfc3339)
                .unwrap()
                .with_timezone(&Utc),
        )
    }

    fn uuid(s: &str) -> Option<Uuid> {
        Some(Uuid::parse_str(s).unwrap())
    }

    #[test]
    fn nul_characters_are_stripped_from_every_string_and_key() {
        let body = br#"{"triggerEvent":"BOOKING_CREATED","payload":{"uid":"a\u0000b",
            "attendees":[{"name":"Jo\u0000nas","email":"j@example.de"}],
            "metadata":{"kh_\u0000source":"x\u0000y"}}}"#;
        let e = parse(body).unwrap();
        assert_eq!(e.uid.as_deref(), Some("ab"));
        assert_eq!(e.attendees[0].name.as_deref(), Some("Jonas"));
        assert_eq!(e.kh.source.as_deref(), Some("xy"));
    }

    fn parsed(body: &[u8]) -> CalEvent {
        parse(body).expect("fixture parses")
    }

    /// A fixture as JSON, edited by `edit`, back to bytes.
    fn edited(body: &[u8], edit: impl FnOnce(&mut Value)) -> Vec<u8> {
        let mut v: Value = serde_json::from_slice(body).unwrap();
        edit(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    fn full_kh(kind: BookingKind) -> KhMetadata {
        KhMetadata {
            patient_id: uuid(PATIENT),
            therapist_id: uuid(THERAPIST),
            match_id: uuid(MATCH),
            booking_kind: Some(kind),
            test: None,
            source: Some("directory".into()),
        }
    }

    #[test]
    fn every_fixture_parses_without_warnings() {
        for (name, body) in fixtures::ALL {
            let e = parse(body).unwrap_or_else(|err| panic!("{name}: {err}"));
            assert!(e.warnings.is_empty(), "{name}: {:?}", e.warnings);
        }
    }

    #[test]
    fn booking_created_intro_reads_every_field_the_journey_uses() {
        let e = parsed(fixtures::BOOKING_CREATED_INTRO);
        assert_eq!(e.trigger, Trigger::BookingCreated);
        assert_eq!(e.created_at, at("2026-03-02T09:12:03.418Z"));
        assert_eq!(e.uid.as_deref(), Some("Kx7pR2mWq9TzLc4VbN8sYd"));
        assert_eq!(e.reschedule_uid, None);
        assert_eq!(e.ical_sequence, Some(0));
        assert_eq!(e.start_time, at("2026-03-05T09:20:00Z"));
        assert_eq!(e.end_time, at("2026-03-05T09:35:00Z"));
        assert_eq!(e.organizer_username.as_deref(), Some("lena-brandt"));
        assert_eq!(
            e.organizer_email.as_deref(),
            Some("lena.brandt@praxis.example")
        );
        assert_eq!(e.organizer_name.as_deref(), Some("Dr. Lena Brandt"));
        assert_eq!(e.event_type_id, Some(1187));
        assert_eq!(e.status.as_deref(), Some("ACCEPTED"));
        assert_eq!(
            e.video_url.as_deref(),
            Some("https://app.cal.com/video/Kx7pR2mWq9TzLc4VbN8sYd")
        );
        assert_eq!(e.location.as_deref(), Some("integrations:daily"));
        assert_eq!(e.cancellation_reason, None);
        assert_eq!(e.request_reschedule, None);
        assert_eq!(e.kh, full_kh(BookingKind::Intro));
        assert_eq!(
            e.attendees,
            vec![Attendee {
                email: Some("jonas.weber@example.de".into()),
                name: Some("Jonas Weber".into()),
                phone: Some("+4915112345678".into()),
                no_show: None,
            }]
        );
        assert!(!e.is_test());
    }

    #[test]
    fn booking_created_full_reads_times_with_milliseconds() {
        let e = parsed(fixtures::BOOKING_CREATED_FULL);
        assert_eq!(e.trigger, Trigger::BookingCreated);
        assert_eq!(e.uid.as_deref(), Some("Fs3nQ8vLx2WpHc7KdM5tRb"));
        assert_eq!(e.created_at, at("2026-03-06T10:00:00Z"));
        assert_eq!(e.start_time, at("2026-03-10T15:00:00Z"));
        assert_eq!(e.end_time, at("2026-03-10T15:50:00Z"));
        assert_eq!(e.event_type_id, Some(1188));
        assert_eq!(e.organizer_username.as_deref(), Some("lena-brandt"));
        assert_eq!(e.kh, full_kh(BookingKind::FullSession));
    }

    #[test]
    fn booking_rescheduled_names_the_old_uid_and_reads_offset_times() {
        let e = parsed(fixtures::BOOKING_RESCHEDULED);
        assert_eq!(e.trigger, Trigger::BookingRescheduled);
        assert_eq!(e.uid.as_deref(), Some("Rz9mC4wPq7XnLb2VkT6sHf"));
        assert_eq!(e.reschedule_uid.as_deref(), Some("Fs3nQ8vLx2WpHc7KdM5tRb"));
        assert_eq!(e.ical_sequence, Some(1));
        assert_eq!(e.start_time, at("2026-03-11T16:00:00Z"));
        assert_eq!(e.end_time, at("2026-03-11T16:50:00Z"));
        assert_eq!(e.event_type_id, Some(1188));
        assert_eq!(e.organizer_username.as_deref(), Some("lena-brandt"));
        // The metadata object is there, but without kh_* keys: nothing known, nothing guessed.
        assert_eq!(e.kh, KhMetadata::default());
        assert!(e.video_url.is_some());
    }

    #[test]
    fn booking_cancelled_by_the_patient_carries_the_reason_and_no_reschedule_request() {
        let e = parsed(fixtures::BOOKING_CANCELLED);
        assert_eq!(e.trigger, Trigger::BookingCancelled);
        assert_eq!(e.uid.as_deref(), Some("Rz9mC4wPq7XnLb2VkT6sHf"));
        assert_eq!(e.status.as_deref(), Some("CANCELLED"));
        assert_eq!(
            e.cancellation_reason.as_deref(),
            Some("Ich bin leider krank.")
        );
        assert_eq!(e.request_reschedule, Some(false));
        assert_eq!(e.ical_sequence, Some(2));
        assert_eq!(e.event_type_id, Some(1188));
        assert_eq!(e.kh, full_kh(BookingKind::FullSession));
    }

    #[test]
    fn booking_cancelled_by_the_therapist_asks_for_a_reschedule() {
        let e = parsed(fixtures::BOOKING_CANCELLED_REQUEST_RESCHEDULE);
        assert_eq!(e.trigger, Trigger::BookingCancelled);
        assert_eq!(e.request_reschedule, Some(true));
        assert_eq!(
            e.cancellation_reason.as_deref(),
            Some("Bitte wählen Sie einen neuen Termin.")
        );
        assert_eq!(e.created_at, at("2026-03-09T18:05:00Z"));
    }

    #[test]
    fn the_flat_meeting_ended_body_is_read_from_the_top_level() {
        let e = parsed(fixtures::MEETING_ENDED_FLAT);
        assert_eq!(e.trigger, Trigger::MeetingEnded);
        assert_eq!(e.uid.as_deref(), Some("Kx7pR2mWq9TzLc4VbN8sYd"));
        assert_eq!(e.start_time, at("2026-03-05T09:20:00Z"));
        assert_eq!(e.end_time, at("2026-03-05T09:35:00Z"));
        assert_eq!(e.created_at, at("2026-03-02T09:12:02.100Z"));
        assert_eq!(e.event_type_id, Some(1187));
        assert_eq!(e.status.as_deref(), Some("ACCEPTED"));
        assert_eq!(e.cancellation_reason, None);
        assert_eq!(e.reschedule_uid, None);
        // No `organizer` in the flat body; the booking's `user` is the organizer.
        assert_eq!(e.organizer_username.as_deref(), Some("lena-brandt"));
        assert_eq!(e.kh, KhMetadata::default());
        assert_eq!(e.attendees.len(), 1);
        assert_eq!(e.attendees[0].no_show, Some(false));
        assert_eq!(e.attendees[0].phone.as_deref(), Some("+4915112345678"));
    }

    #[test]
    fn a_flat_body_without_user_has_no_organizer_rather_than_a_guessed_one() {
        let body = edited(fixtures::MEETING_ENDED_FLAT, |v| {
            v.as_object_mut().unwrap().remove("user");
        });
        let e = parsed(&body);
        assert_eq!(e.organizer_username, None);
        assert_eq!(e.organizer_email, None);
        assert_eq!(e.organizer_name, None);
        assert_eq!(e.uid.as_deref(), Some("Kx7pR2mWq9TzLc4VbN8sYd"));
    }

    #[test]
    fn a_flat_body_prefers_updated_at_as_the_event_time() {
        let body = edited(fixtures::MEETING_ENDED_FLAT, |v| {
            v["updatedAt"] = "2026-03-05T09:35:04Z".into();
        });
        assert_eq!(parsed(&body).created_at, at("2026-03-05T09:35:04Z"));
    }

    #[test]
    fn booking_no_show_updated_takes_the_uid_from_booking_uid_and_marks_the_attendee() {
        let e = parsed(fixtures::BOOKING_NO_SHOW_UPDATED);
        assert_eq!(e.trigger, Trigger::BookingNoShowUpdated);
        assert_eq!(e.uid.as_deref(), Some("Kx7pR2mWq9TzLc4VbN8sYd"));
        assert_eq!(e.created_at, at("2026-03-05T09:45:41.300Z"));
        assert_eq!(e.attendees.len(), 1);
        assert_eq!(
            e.attendees[0].email.as_deref(),
            Some("jonas.weber@example.de")
        );
        assert_eq!(e.attendees[0].no_show, Some(true));
        assert_eq!(e.start_time, None);
        assert_eq!(e.organizer_username, None);
    }

    #[test]
    fn cal_video_no_show_triggers_read_booking_uid_and_event_type() {
        let body = br#"{"triggerEvent":"AFTER_GUESTS_CAL_VIDEO_NO_SHOW","createdAt":"2026-03-05T09:35:00.000Z","payload":{"title":"x","bookingId":90211,"bookingUid":"Kx7pR2mWq9TzLc4VbN8sYd","startTime":"2026-03-05T09:20:00.000Z","endTime":"2026-03-05T09:35:00.000Z","attendees":[],"participants":[],"eventType":{"id":1187,"hosts":null},"webhook":{"id":"w"},"message":"Guest didn't join the call"}}"#;
        let e = parsed(body);
        assert_eq!(e.trigger, Trigger::AfterGuestsNoShow);
        assert_eq!(e.uid.as_deref(), Some("Kx7pR2mWq9TzLc4VbN8sYd"));
        assert_eq!(e.event_type_id, Some(1187));
        assert_eq!(e.start_time, at("2026-03-05T09:20:00Z"));
        assert!(e.warnings.is_empty(), "{:?}", e.warnings);
    }

    #[test]
    fn ping_and_unknown_triggers_parse_without_error() {
        let ping = parsed(fixtures::PING);
        assert_eq!(ping.trigger, Trigger::Ping);
        assert_eq!(ping.uid, None);

        let unknown = parsed(fixtures::UNKNOWN_TRIGGER);
        assert_eq!(
            unknown.trigger,
            Trigger::Unknown("BOOKING_REASSIGNED".into())
        );
        assert_eq!(unknown.trigger.as_str(), "BOOKING_REASSIGNED");
        assert_eq!(unknown.uid.as_deref(), Some("Kx7pR2mWq9TzLc4VbN8sYd"));
    }

    #[test]
    fn every_known_trigger_name_round_trips() {
        for t in Trigger::KNOWN {
            assert_eq!(Trigger::from_name(t.as_str()), t);
            assert_eq!(Trigger::from_name(&t.as_str().to_ascii_lowercase()), t);
        }
        assert_eq!(
            Trigger::from_name("AFTER_HOSTS_CAL_VIDEO_NO_SHOW"),
            Trigger::AfterHostsNoShow
        );
    }

    #[test]
    fn a_non_uuid_patient_id_is_a_warning_and_the_rest_of_the_event_survives() {
        let body = edited(fixtures::BOOKING_CREATED_INTRO, |v| {
            v["payload"]["metadata"]["kh_patient_id"] = "patient-42".into();
        });
        let e = parsed(&body);
        assert_eq!(e.kh.patient_id, None);
        assert_eq!(e.kh.therapist_id, uuid(THERAPIST));
        assert_eq!(e.kh.match_id, uuid(MATCH));
        assert_eq!(e.kh.booking_kind, Some(BookingKind::Intro));
        assert_eq!(e.uid.as_deref(), Some("Kx7pR2mWq9TzLc4VbN8sYd"));
        assert_eq!(e.start_time, at("2026-03-05T09:20:00Z"));
        assert_eq!(e.organizer_username.as_deref(), Some("lena-brandt"));
        assert_eq!(
            e.warnings,
            vec!["payload.metadata.kh_patient_id: not a UUID, ignored".to_string()]
        );
    }

    #[test]
    fn wrongly_typed_optional_fields_are_warnings_never_errors() {
        let body = edited(fixtures::BOOKING_CREATED_INTRO, |v| {
            let p = &mut v["payload"];
            p["status"] = 3.into();
            p["startTime"] = "next tuesday".into();
            p["eventTypeId"] = "1187".into();
            p["iCalSequence"] = 99_999_999_999_i64.into();
            p["metadata"]["kh_booking_kind"] = "full-session".into();
            p["metadata"]["kh_test"] = "maybe".into();
            p["metadata"]["kh_match_id"] = serde_json::json!({"id": MATCH});
            p["attendees"] = serde_json::json!(["jonas.weber@example.de", {"email": 5}]);
        });
        let e = parsed(&body);
        assert_eq!(e.trigger, Trigger::BookingCreated);
        assert_eq!(e.uid.as_deref(), Some("Kx7pR2mWq9TzLc4VbN8sYd"));
        assert_eq!(e.end_time, at("2026-03-05T09:35:00Z"));
        assert_eq!(e.status, None);
        assert_eq!(e.start_time, None);
        assert_eq!(e.event_type_id, None);
        assert_eq!(e.ical_sequence, None);
        assert_eq!(e.kh.booking_kind, None);
        assert_eq!(e.kh.test, None);
        assert_eq!(e.kh.match_id, None);
        assert_eq!(e.kh.patient_id, uuid(PATIENT));
        assert_eq!(e.attendees.len(), 1);
        assert_eq!(e.attendees[0].email, None);
        let mut warned: Vec<&str> = e
            .warnings
            .iter()
            .map(|w| w.split(':').next().unwrap())
            .collect();
        warned.sort_unstable();
        assert_eq!(
            warned,
            vec![
                "payload.attendees[0]",
                "payload.attendees[1].email",
                "payload.eventTypeId",
                "payload.iCalSequence",
                "payload.metadata.kh_booking_kind",
                "payload.metadata.kh_match_id",
                "payload.metadata.kh_test",
                "payload.startTime",
                "payload.status",
            ]
        );
    }

    #[test]
    fn warnings_never_quote_the_offending_value() {
        let body = edited(fixtures::BOOKING_CREATED_INTRO, |v| {
            let p = &mut v["payload"];
            p["metadata"]["kh_patient_id"] = "jonas.weber@example.de".into();
            p["startTime"] = "jonas.weber@example.de".into();
            p["attendees"] = serde_json::json!(["jonas.weber@example.de"]);
        });
        let e = parsed(&body);
        assert_eq!(e.warnings.len(), 3);
        for w in &e.warnings {
            assert!(!w.contains("jonas"), "{w}");
        }
    }

    #[test]
    fn null_and_empty_fields_count_as_absent_without_warnings() {
        let body = edited(fixtures::BOOKING_CREATED_INTRO, |v| {
            let p = &mut v["payload"];
            p["status"] = Value::Null;
            p["location"] = "".into();
            p["metadata"] = Value::Null;
            p["organizer"] = Value::Null;
        });
        let e = parsed(&body);
        assert_eq!(e.status, None);
        assert_eq!(e.location, None);
        assert_eq!(e.kh, KhMetadata::default());
        assert_eq!(e.organizer_username, None);
        assert!(e.warnings.is_empty(), "{:?}", e.warnings);
    }

    #[test]
    fn kh_test_true_makes_a_test_booking() {
        let body = edited(fixtures::BOOKING_CREATED_INTRO, |v| {
            v["payload"]["metadata"]["kh_test"] = true.into();
        });
        let e = parsed(&body);
        assert_eq!(e.kh.test, Some(true));
        assert!(e.is_test());
    }

    #[test]
    fn kh_test_as_the_string_true_from_a_booking_link_makes_a_test_booking() {
        let body = edited(fixtures::BOOKING_CREATED_INTRO, |v| {
            v["payload"]["metadata"]["kh_test"] = "true".into();
        });
        let e = parsed(&body);
        assert_eq!(e.kh.test, Some(true));
        assert!(e.is_test());
        assert!(e.warnings.is_empty(), "{:?}", e.warnings);
    }

    #[test]
    fn kh_test_as_1_or_true_in_string_or_json_makes_a_test_booking_and_0_or_false_does_not() {
        let with_flag = |flag: Value| {
            let body = edited(fixtures::BOOKING_CREATED_INTRO, |v| {
                v["payload"]["metadata"]["kh_test"] = flag;
            });
            parsed(&body)
        };
        for flag in [
            Value::from(true),
            "true".into(),
            " TRUE ".into(),
            1.into(),
            "1".into(),
        ] {
            let e = with_flag(flag.clone());
            assert_eq!(e.kh.test, Some(true), "{flag}");
            assert!(e.is_test(), "{flag}");
            assert!(e.warnings.is_empty(), "{flag}: {:?}", e.warnings);
        }
        for flag in [Value::from(false), "false".into(), 0.into(), "0".into()] {
            let e = with_flag(flag.clone());
            assert_eq!(e.kh.test, Some(false), "{flag}");
            assert!(!e.is_test(), "{flag}");
            assert!(e.warnings.is_empty(), "{flag}: {:?}", e.warnings);
        }
        for flag in [Value::from(2), "yes".into(), 1.5.into()] {
            let e = with_flag(flag.clone());
            assert_eq!(e.kh.test, None, "{flag}");
            assert_eq!(e.warnings.len(), 1, "{flag}: {:?}", e.warnings);
        }
    }

    #[test]
    fn plus_test_in_the_first_attendees_local_part_makes_a_test_booking() {
        let with_email = |email: &str| {
            let body = edited(fixtures::BOOKING_CREATED_INTRO, |v| {
                v["payload"]["attendees"][0]["email"] = email.into();
            });
            parsed(&body).is_test()
        };
        assert!(with_email("jonas+test@example.de"));
        assert!(with_email("Jonas+TEST7@example.de"));
        assert!(!with_email("jonas@test.example.de"));
        assert!(!with_email("jonas@example+test.de"));
        assert!(with_email("jonas+testing@example.de"));
        assert!(!with_email("jonas+test"));
        assert!(!with_email("jonas.weber@example.de"));
    }

    #[test]
    fn only_the_first_attendee_decides_the_test_flag() {
        let body = edited(fixtures::BOOKING_CREATED_INTRO, |v| {
            v["payload"]["attendees"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"email": "qa+test@example.de"}));
        });
        assert!(!parsed(&body).is_test());
    }

    #[test]
    fn debug_output_masks_personal_data() {
        for (name, body) in fixtures::ALL {
            let text = format!("{:?}", parsed(body));
            for secret in [
                "jonas.weber@example.de",
                "Jonas Weber",
                "+4915112345678",
                "lena.brandt@praxis.example",
                "krank",
                "neuen Termin",
                "jdoe@example.com",
                "John Doe",
            ] {
                assert!(!text.contains(secret), "{name} prints {secret}: {text}");
            }
        }
        let text = format!("{:?}", parsed(fixtures::BOOKING_CANCELLED));
        assert!(text.contains("j***@example.de"), "{text}");
        assert!(text.contains("+49***5678"), "{text}");
        assert!(text.contains("Rz9mC4wPq7XnLb2VkT6sHf"), "{text}");
    }

    #[test]
    fn invalid_json_is_an_error() {
        assert!(matches!(parse(b""), Err(ParseError::InvalidJson(_))));
        assert!(matches!(
            parse(&fixtures::BOOKING_CREATED_INTRO[..100]),
            Err(ParseError::InvalidJson(_))
        ));
        assert!(matches!(
            parse(b"{\"triggerEvent\":\"PING\"}\xff"),
            Err(ParseError::InvalidJson(_))
        ));
    }

    #[test]
    fn json_that_is_not_an_object_is_an_error() {
        for body in [&b"[]"[..], b"null", b"\"BOOKING_CREATED\"", b"42"] {
            assert!(matches!(parse(body), Err(ParseError::NotAnObject)));
        }
    }

    #[test]
    fn a_body_without_a_trigger_name_is_an_error() {
        for body in [
            &br#"{"payload":{"uid":"x"}}"#[..],
            br#"{"triggerEvent":null}"#,
            br#"{"triggerEvent":7}"#,
            br#"{"triggerEvent":"  "}"#,
        ] {
            assert!(matches!(parse(body), Err(ParseError::MissingTrigger)));
        }
    }

    #[test]
    fn a_payload_that_is_not_an_object_is_a_warning() {
        let e = parsed(br#"{"triggerEvent":"BOOKING_CREATED","createdAt":"2026-03-01T00:00:00Z","payload":"oops"}"#);
        assert_eq!(e.trigger, Trigger::BookingCreated);
        assert_eq!(e.created_at, at("2026-03-01T00:00:00Z"));
        assert_eq!(
            e.warnings,
            vec!["payload: a string; read as a flat body, ignored".to_string()]
        );
    }

    #[test]
    fn deeply_nested_json_is_refused_without_overflowing_the_stack() {
        let mut body = b"{\"triggerEvent\":\"PING\",\"x\":".to_vec();
        body.extend(std::iter::repeat_n(b'[', 100_000));
        assert!(matches!(parse(&body), Err(ParseError::InvalidJson(_))));
    }

    /// A fixture with a few bytes overwritten, and maybe cut short.
    fn mutated_fixture() -> impl Strategy<Value = Vec<u8>> {
        (
            0..fixtures::ALL.len(),
            proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            proptest::option::of(any::<prop::sample::Index>()),
        )
            .prop_map(|(which, changes, cut)| {
                let mut body = fixtures::ALL[which].1.to_vec();
                for (at, byte) in changes {
                    let i = at.index(body.len());
                    body[i] = byte;
                }
                if let Some(cut) = cut {
                    body.truncate(cut.index(body.len() + 1));
                }
                body
            })
    }

    /// Any JSON value, a few levels deep.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(Value::Null)),
            ".{0,20}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-zA-Z_]{1,12}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_arbitrary_bytes(
            body in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            let _ = parse(&body);
        }

        #[test]
        fn parse_never_panics_on_mutated_or_truncated_fixtures(body in mutated_fixture()) {
            if let Ok(e) = parse(&body) {
                let _ = format!("{e:?}");
                let _ = e.is_test();
            }
        }

        #[test]
        fn verify_signature_never_panics_on_mutated_fixtures(body in mutated_fixture()) {
            let secret = crate::secret::Secret::new(fixtures::SECRET);
            let sig = fixtures::signatures()["booking_created_intro.json"].clone();
            let _ = crate::webhook::verify_signature(Some(&secret), &body, Some(&sig));
        }

        #[test]
        fn any_value_in_any_booking_field_keeps_the_booking(
            which in 0..fixtures::ALL.len(),
            key in prop::sample::select(vec![
                "uid", "startTime", "endTime", "organizer", "user", "attendees", "metadata",
                "eventTypeId", "iCalSequence", "status", "location", "cancellationReason",
                "requestReschedule", "rescheduleUid", "createdAt", "bookingUid", "eventType",
            ]),
            in_metadata in any::<bool>(),
            value in any_json(),
        ) {
            let (name, original) = fixtures::ALL[which];
            let before = parse(original).unwrap();
            let mut uid_replaced = false;
            let body = edited(original, |v| {
                let booking = if v.get("payload").is_some() { &mut v["payload"] } else { v };
                if in_metadata && booking["metadata"].is_object() {
                    booking["metadata"]["kh_patient_id"] = value;
                } else {
                    uid_replaced = key == "uid" || key == "bookingUid";
                    booking[key] = value;
                }
            });
            let after = parse(&body);
            prop_assert!(after.is_ok(), "{}: {:?}", name, after.err());
            let after = after.unwrap();
            prop_assert_eq!(&after.trigger, &before.trigger);
            if !uid_replaced {
                prop_assert_eq!(&after.uid, &before.uid);
            }
        }
    }
}
