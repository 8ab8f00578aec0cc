//! The demo's simulated week as data: who the therapists and people are, what is seeded, and
//! which booking webhooks Cal.com sends when. Nothing here runs anything.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::db::demo::{NewPerson, NewTherapist, Seed};
use crate::domain::{BookingKind, BookingStatus};
use crate::webhook::Trigger;

/// Length of an intro call, in minutes.
const INTRO_MINUTES: i64 = 15;

/// Length of a full session, in minutes.
const FULL_SESSION_MINUTES: i64 = 50;

/// Monday 2 March 2026, 00:00 in Berlin.
pub(super) fn week_start() -> DateTime<Utc> {
    local(2, 0, 0)
}

/// Berlin local time in March 2026 → UTC, for readable seed data.
fn local(day: u32, h: u32, m: u32) -> DateTime<Utc> {
    chrono_tz::Europe::Berlin
        .with_ymd_and_hms(2026, 3, day, h, m, 0)
        .single()
        .expect("valid local time")
        .with_timezone(&Utc)
}

struct Person {
    id: Uuid,
    name: &'static str,
    email: Option<&'static str>,
    phone: Option<&'static str>,
}

impl Person {
    fn new(name: &'static str, email: Option<&'static str>, phone: Option<&'static str>) -> Self {
        Person {
            id: Uuid::new_v4(),
            name,
            email,
            phone,
        }
    }
}

struct Therapist {
    id: Uuid,
    first: &'static str,
    last: &'static str,
    username: &'static str,
    intro_type: i32,
    full_type: i32,
    /// Free full-session slots on the booking site.
    free_slots: i32,
}

impl Therapist {
    fn new(first: &'static str, last: &'static str, username: &'static str, event: i32) -> Self {
        Therapist {
            id: Uuid::new_v4(),
            first,
            last,
            username,
            intro_type: event,
            full_type: event + 1,
            free_slots: 5,
        }
    }

    fn email(&self) -> String {
        format!("{}@praxis.example", self.username)
    }
}

/// One webhook delivery in the simulated week.
pub(super) struct Delivery {
    /// When Cal.com sends it (its envelope's `createdAt` too).
    pub at: DateTime<Utc>,
    pub body: serde_json::Value,
}

/// One booking as Cal.com describes it in its webhooks.
struct Booking<'a> {
    uid: &'static str,
    therapist: &'a Therapist,
    person: &'a Person,
    kind: BookingKind,
    start: DateTime<Utc>,
}

impl<'a> Booking<'a> {
    fn intro(uid: &'static str, t: &'a Therapist, p: &'a Person, start: DateTime<Utc>) -> Self {
        Booking {
            uid,
            therapist: t,
            person: p,
            kind: BookingKind::Intro,
            start,
        }
    }

    fn full(uid: &'static str, t: &'a Therapist, p: &'a Person, start: DateTime<Utc>) -> Self {
        Booking {
            kind: BookingKind::FullSession,
            ..Booking::intro(uid, t, p, start)
        }
    }

    fn created(&self, at: DateTime<Utc>) -> Delivery {
        self.hook(Trigger::BookingCreated, at, json!({}))
    }

    fn rescheduled_from(&self, at: DateTime<Utc>, old: &Booking<'_>) -> Delivery {
        let extra = json!({"rescheduleUid": old.uid});
        self.hook(Trigger::BookingRescheduled, at, extra)
    }

    /// Cancelled with Cal.com's `cancellationReason` (when given) and `requestReschedule`.
    fn cancelled(&self, at: DateTime<Utc>, reason: Option<&str>, reschedule: bool) -> Delivery {
        let mut extra = json!({
            "status": BookingStatus::Cancelled.as_str(),
            "requestReschedule": reschedule,
        });
        if let (Some(reason), Some(obj)) = (reason, extra.as_object_mut()) {
            obj.insert("cancellationReason".into(), reason.into());
        }
        self.hook(Trigger::BookingCancelled, at, extra)
    }

    fn hook(&self, trigger: Trigger, at: DateTime<Utc>, extra: serde_json::Value) -> Delivery {
        let mut payload = self.payload();
        if let (Some(obj), Some(more)) = (payload.as_object_mut(), extra.as_object()) {
            obj.extend(more.clone());
        }
        let body = json!({"triggerEvent": trigger.as_str(), "createdAt": at.to_rfc3339(), "payload": payload});
        Delivery { at, body }
    }

    /// The booking's payload as Cal.com sends it, with the marketplace's metadata.
    fn payload(&self) -> serde_json::Value {
        let (t, p, uid) = (self.therapist, self.person, self.uid);
        let intro = self.kind == BookingKind::Intro;
        let minutes = if intro {
            INTRO_MINUTES
        } else {
            FULL_SESSION_MINUTES
        };
        json!({
            "type": if intro { "intro" } else { "full-session" },
            "title": format!("{} zwischen {} {} und {}", if intro { "Kennenlerngespräch" } else { "Therapiesitzung" }, t.first, t.last, p.name),
            "startTime": self.start.to_rfc3339(),
            "endTime": (self.start + Duration::minutes(minutes)).to_rfc3339(),
            "organizer": {"name": format!("{} {}", t.first, t.last), "email": t.email(), "username": t.username, "timeZone": "Europe/Berlin"},
            "attendees": [{"email": p.email.unwrap_or(""), "name": p.name, "timeZone": "Europe/Berlin", "phoneNumber": p.phone}],
            "location": "integrations:daily",
            "eventTypeId": if intro { t.intro_type } else { t.full_type },
            "uid": uid,
            "iCalSequence": 0,
            "metadata": {
                "videoCallUrl": format!("https://app.cal.com/video/{uid}"),
                "kh_patient_id": p.id.to_string(),
                "kh_therapist_id": t.id.to_string(),
                "kh_booking_kind": self.kind.as_str(),
                "kh_source": "directory"
            },
            "status": BookingStatus::Accepted.as_str()
        })
    }
}

/// The week's cast: three therapists and seven people, with fresh ids each run.
pub(super) struct Scenario {
    therapists: [Therapist; 3],
    people: [Person; 7],
}

impl Scenario {
    pub(super) fn new() -> Scenario {
        // Miriam has no free slots; the others have some, refreshed hourly by the booking site.
        let miriam = Therapist {
            free_slots: 0,
            ..Therapist::new("Miriam", "Yılmaz", "miriam-yilmaz", 3187)
        };
        Scenario {
            therapists: [
                Therapist::new("Dr. Lena", "Brandt", "lena-brandt", 1187),
                Therapist::new("Jan", "Koch", "jan-koch", 2187),
                miriam,
            ],
            people: [
                Person::new(
                    "Jonas Weber",
                    Some("jonas.weber@example.de"),
                    Some("+4915112345678"),
                ),
                Person::new(
                    "Sophie Schäfer",
                    Some("sophie.schaefer@example.de"),
                    Some("+4917098765432"),
                ),
                Person::new("Emir Demir", Some("emir.demir@example.de"), None),
                Person::new("Clara Neumann", None, Some("+4916055512345")),
                Person::new("Tom Becker", Some("tom.becker@example.de"), None),
                Person::new(
                    "Lea Wolf",
                    Some("lea.wolf@example.de"),
                    Some("+4915255577788"),
                ),
                Person::new("QA Testperson", Some("qa+test@therapie.example"), None),
            ],
        }
    }

    /// The rows seeded before the week starts. Everyone is matched with the first two
    /// therapists.
    pub(super) fn seed(&self) -> Seed<'_> {
        let therapists = self.therapists.iter().map(|t| NewTherapist {
            id: t.id,
            first_name: t.first,
            last_name: t.last,
            email: t.email(),
            cal_username: t.username,
            intro_event_type_id: t.intro_type,
            full_session_event_type_id: t.full_type,
            free_slots: t.free_slots,
            next_free_slot: (t.free_slots > 0).then(|| local(10, 9, 0)),
        });
        let people = self.people.iter().map(|p| NewPerson {
            id: p.id,
            name: p.name,
            email: p.email,
            phone: p.phone,
        });
        let matches = self
            .people
            .iter()
            .flat_map(|p| self.therapists[..2].iter().map(|t| (p.id, t.id)));
        Seed {
            therapists: therapists.collect(),
            people: people.collect(),
            matches: matches.collect(),
            created_at: week_start() - Duration::days(10),
            slots_cached_at: week_start(),
        }
    }

    /// Every booking webhook of the week, in the order Cal.com sends them.
    pub(super) fn deliveries(&self) -> Vec<Delivery> {
        let [lena, jan, miriam] = &self.therapists;
        let [jonas, sophie, emir, clara, tom, lea, qa] = &self.people;
        let jonas_intro = Booking::intro("demo-jonas-intro", lena, jonas, local(3, 10, 20));
        let jonas_full = Booking::full("demo-jonas-full", lena, jonas, local(4, 16, 0));
        let sophie_1 = Booking::full("demo-sophie-1", jan, sophie, local(4, 10, 0));
        let sophie_2 = Booking::full("demo-sophie-2", jan, sophie, local(6, 11, 0));
        let emir_intro = Booking::intro("demo-emir-intro", lena, emir, local(5, 18, 40));
        let clara_full = Booking::full("demo-clara-full", jan, clara, local(5, 8, 0));
        let tom_full = Booking::full("demo-tom-full", miriam, tom, local(2, 12, 0));
        let lea_full = Booking::full("demo-lea-full", lena, lea, local(6, 9, 0));
        let qa_full = Booking::full("demo-qa", lena, qa, local(4, 9, 0));
        let mut hooks = vec![
            // Jonas: intro Tuesday 10:20, then books a full session right after it.
            jonas_intro.created(local(2, 9, 12)),
            jonas_full.created(local(3, 11, 5)),
            // Sophie: full session Wednesday, moved to Friday.
            sophie_1.created(local(2, 14, 0)),
            sophie_2.rescheduled_from(local(3, 8, 30), &sophie_1),
            // Emir: intro on Thursday, cancelled on Tuesday evening: recovery points to Jan.
            emir_intro.created(local(2, 18, 40)),
            emir_intro.cancelled(local(3, 20, 0), Some("Terminkonflikt"), false),
            // Clara has only a phone: SMS reminders only.
            clara_full.created(local(2, 7, 45)),
            // Tom's therapist has no free slots: no session followup.
            tom_full.created(local(2, 6, 0)),
            // Lea's session is cancelled by the therapist, who asks to reschedule: no recovery.
            lea_full.created(local(2, 10, 0)),
            lea_full.cancelled(local(4, 12, 0), None, true),
            // A test booking from QA: confirmation goes to QA_NOTIFY_EMAIL only.
            qa_full.created(local(2, 11, 0)),
        ];
        hooks.sort_by_key(|h| h.at);
        hooks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_week_sends_its_webhooks_in_time_order_inside_the_week() {
        let hooks = Scenario::new().deliveries();
        assert_eq!(hooks.len(), 11);
        assert!(hooks.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(hooks.iter().all(|h| h.at >= week_start()));
        let cancelled: Vec<_> = hooks
            .iter()
            .filter(|h| h.body["triggerEvent"] == "BOOKING_CANCELLED")
            .collect();
        assert_eq!(cancelled.len(), 2);
        assert!(cancelled
            .iter()
            .all(|h| h.body["payload"]["status"] == "CANCELLED"));
    }

    #[test]
    fn everyone_is_matched_with_the_first_two_therapists_and_only_miriam_has_no_slots() {
        let scenario = Scenario::new();
        let seed = scenario.seed();
        assert_eq!(seed.matches.len(), 2 * seed.people.len());
        let no_slots: Vec<_> = seed
            .therapists
            .iter()
            .filter(|t| t.next_free_slot.is_none())
            .map(|t| t.first_name)
            .collect();
        assert_eq!(no_slots, ["Miriam"]);
    }
}
