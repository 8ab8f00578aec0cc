//! The calendar invite (`.ics`) attached to booking confirmations and therapist notices.
//!
//! One VCALENDAR with one VEVENT, all times in UTC so no VTIMEZONE is needed. The UID is
//! derived from the Cal.com uid and stays the same across sends, so a calendar updates the
//! existing entry on a reschedule confirmation instead of adding a second one; `sequence`
//! must grow with every change. Builds text only; attaching and sending is `notify`'s job.

use chrono::{DateTime, Utc};
use icalendar::{Calendar, Component, EventLike, EventStatus, Property};

/// What goes into one invite.
#[derive(Clone, Debug)]
pub struct Invite<'a> {
    /// The Cal.com booking uid; the invite's UID is `{uid}@journeyctl`.
    pub uid: &'a str,
    /// RFC 5545 SEQUENCE: 0 for the first invite, higher for every later version.
    pub sequence: u32,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub summary: &'a str,
    pub description: &'a str,
    pub organizer_name: &'a str,
    /// Without an address there is no ORGANIZER line: RFC 5545 wants a mailbox there, and a
    /// made-up one would collect the replies of every calendar that answers invites.
    pub organizer_email: Option<&'a str>,
    /// Video URL or street address.
    pub location: Option<&'a str>,
    /// A cancelled session: METHOD:CANCEL and STATUS:CANCELLED, so calendars remove the entry.
    pub cancelled: bool,
}

/// The invite as iCalendar text, stamped with the current wall-clock time. Prefer
/// [`invite_at`] with the run's clock where one is at hand.
pub fn invite(i: &Invite) -> String {
    invite_at(i, Utc::now())
}

/// The invite as iCalendar text with DTSTAMP = `stamp` (the run's "now"), which makes the
/// output a pure function of its inputs.
pub fn invite_at(i: &Invite, stamp: DateTime<Utc>) -> String {
    let mut event = icalendar::Event::new();
    event
        .uid(&format!("{}@journeyctl", i.uid))
        .sequence(i.sequence)
        .timestamp(stamp)
        .starts(i.start)
        .ends(i.end)
        .summary(i.summary)
        .description(i.description)
        .status(if i.cancelled {
            EventStatus::Cancelled
        } else {
            EventStatus::Confirmed
        });
    if let Some(location) = i.location.map(str::trim).filter(|l| !l.is_empty()) {
        event.location(location);
        if location.starts_with("https://") || location.starts_with("http://") {
            event.add_property("URL", location);
        }
    }
    if let Some(email) = i.organizer_email.map(str::trim).filter(|e| !e.is_empty()) {
        let mut organizer = Property::new("ORGANIZER", format!("mailto:{email}"));
        // A double quote cannot appear inside a quoted parameter value (RFC 5545 §3.2).
        let name = i.organizer_name.replace('"', "");
        if !name.trim().is_empty() {
            organizer.add_parameter("CN", name.trim());
        }
        event.append_property(organizer);
    }

    // `Calendar::new()` would add its own PRODID; we want exactly one, naming us.
    let mut calendar = Calendar::empty();
    calendar
        .append_property(("VERSION", "2.0"))
        .append_property(("PRODID", "-//journeyctl//DE"))
        .append_property(("CALSCALE", "GREGORIAN"))
        .append_property(("METHOD", if i.cancelled { "CANCEL" } else { "REQUEST" }))
        .push(event.done());
    calendar.done().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sample(cancelled: bool) -> Invite<'static> {
        Invite {
            uid: "cal-uid-42",
            sequence: 2,
            start: Utc.with_ymd_and_hms(2026, 3, 3, 13, 0, 0).unwrap(),
            end: Utc.with_ymd_and_hms(2026, 3, 3, 13, 50, 0).unwrap(),
            summary: "Therapiesitzung mit Dr. Lena Brandt",
            description: "Ihr Termin; bitte 5 Minuten vorher einwählen, danke",
            organizer_name: "Dr. Lena Brandt",
            organizer_email: Some("lena.brandt@example.de"),
            location: Some("https://video.example.de/r/abc"),
            cancelled,
        }
    }

    /// Unfolds RFC 5545 continuation lines so assertions see whole properties.
    fn unfolded(ics: &str) -> String {
        ics.replace("\r\n ", "")
    }

    #[test]
    fn invite_carries_uid_utc_times_organizer_and_location() {
        let stamp = Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap();
        let ics = unfolded(&invite_at(&sample(false), stamp));
        let lines: Vec<&str> = ics.split("\r\n").collect();
        for expected in [
            "BEGIN:VCALENDAR",
            "VERSION:2.0",
            "PRODID:-//journeyctl//DE",
            "METHOD:REQUEST",
            "BEGIN:VEVENT",
            "UID:cal-uid-42@journeyctl",
            "SEQUENCE:2",
            "DTSTAMP:20260301T080000Z",
            "DTSTART:20260303T130000Z",
            "DTEND:20260303T135000Z",
            "SUMMARY:Therapiesitzung mit Dr. Lena Brandt",
            "ORGANIZER;CN=Dr. Lena Brandt:mailto:lena.brandt@example.de",
            "LOCATION:https://video.example.de/r/abc",
            "STATUS:CONFIRMED",
            "END:VEVENT",
            "END:VCALENDAR",
        ] {
            assert!(lines.contains(&expected), "missing {expected:?} in\n{ics}");
        }
        assert_eq!(ics.matches("BEGIN:VEVENT").count(), 1);
        // Text values are escaped, not cut at the semicolon.
        assert!(ics.contains("DESCRIPTION:Ihr Termin\\; bitte 5 Minuten vorher einwählen\\, danke"));
    }

    #[test]
    fn invite_uid_is_stable_across_sends() {
        let a = invite_at(
            &sample(false),
            Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap(),
        );
        let b = invite_at(
            &sample(false),
            Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap(),
        );
        let uid = |s: &str| {
            s.split("\r\n")
                .find(|l| l.starts_with("UID:"))
                .map(str::to_owned)
        };
        assert_eq!(uid(&a), uid(&b));
        assert!(uid(&a).is_some());
    }

    #[test]
    fn cancelled_invite_uses_method_cancel() {
        let ics = invite_at(
            &sample(true),
            Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap(),
        );
        assert!(ics.contains("METHOD:CANCEL\r\n"), "{ics}");
        assert!(ics.contains("STATUS:CANCELLED\r\n"), "{ics}");
        assert!(!ics.contains("METHOD:REQUEST"));
    }

    #[test]
    fn invite_without_organizer_email_or_location_leaves_those_lines_out() {
        let mut i = sample(false);
        i.organizer_email = None;
        i.location = None;
        let ics = invite(&i);
        assert!(!ics.contains("ORGANIZER"), "{ics}");
        assert!(!ics.contains("LOCATION"), "{ics}");
        assert!(ics.contains("DTSTAMP:"), "{ics}");
    }
}
