//! The calendar invite (`.ics`) attached to booking confirmations and therapist notices, and
//! its cancellation (RFC 5545 / RFC 5546).
//!
//! One VCALENDAR with one VEVENT, all times in UTC so no VTIMEZONE is needed. The UID is
//! `{uid}@journeyctl`, where `uid` is the booking's calendar UID: the first booking's Cal.com
//! uid, carried over to every rescheduled booking, so a calendar moves the existing entry
//! instead of adding a second one. `sequence` must grow with every version (a reschedule, the
//! cancellation). A `METHOD:REQUEST` names its ORGANIZER and the ATTENDEE it is sent to; a
//! `METHOD:CANCEL` carries the same UID with STATUS:CANCELLED, so calendars remove the entry.
//!
//! Names are made one printable line here (`domain::display_name`), so no name can start a
//! property of its own. Builds text only; attaching and sending is `notify`'s job.

use chrono::{DateTime, Utc};
use icalendar::{Calendar, Component, EventLike, EventStatus, Property};

use crate::domain::display_name;

/// A person named in an invite: an address (already validated by the caller) and a name.
#[derive(Clone, Debug)]
pub(crate) struct Person<'a> {
    pub name: Option<&'a str>,
    pub email: &'a str,
}

/// What goes into one invite.
#[derive(Clone, Debug)]
pub(crate) struct Invite<'a> {
    /// The booking's calendar UID; the invite's UID is `{uid}@journeyctl`.
    pub uid: &'a str,
    /// RFC 5545 SEQUENCE: 0 for the first invite, higher for every later version.
    pub sequence: u32,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub summary: &'a str,
    pub description: &'a str,
    /// The therapist (or, without their address, the sender's mailbox in their name).
    /// Without any address there is no ORGANIZER line: RFC 5545 wants a mailbox there.
    pub organizer: Option<Person<'a>>,
    /// The recipient of this copy of the invite.
    pub attendee: Option<Person<'a>>,
    /// Video URL or street address.
    pub location: Option<&'a str>,
    /// A cancelled session: METHOD:CANCEL and STATUS:CANCELLED, so calendars remove the entry.
    pub cancelled: bool,
}

/// A CN parameter value: one printable line without double quotes (which cannot appear inside
/// a quoted parameter value, RFC 5545 §3.2).
fn common_name(name: Option<&str>) -> Option<String> {
    display_name::sanitize_opt(name.map(|n| n.replace('"', "")).as_deref())
}

fn cal_address(kind: &str, p: &Person<'_>) -> Option<Property> {
    let email = p.email.trim();
    if email.is_empty() || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let mut prop = Property::new(kind, format!("mailto:{email}"));
    if let Some(cn) = common_name(p.name) {
        prop.add_parameter("CN", &cn);
    }
    Some(prop)
}

/// The invite as iCalendar text, stamped with the current wall-clock time. Prefer
/// [`invite_at`] with the run's clock where one is at hand.
#[cfg(test)]
pub(crate) fn invite(i: &Invite) -> String {
    invite_at(i, Utc::now())
}

/// The invite as iCalendar text with DTSTAMP = `stamp` (the run's "now"), which makes the
/// output a pure function of its inputs.
pub(crate) fn invite_at(i: &Invite, stamp: DateTime<Utc>) -> String {
    // Every value from data is one line: the crate escapes LF in TEXT values but not CR, and
    // UID and URL values not at all.
    let uid: String = i
        .uid
        .chars()
        .filter(|c| !c.is_whitespace() && !display_name::is_forbidden(*c))
        .collect();
    let mut event = icalendar::Event::new();
    event
        .uid(&format!("{uid}@journeyctl"))
        .sequence(i.sequence)
        .timestamp(stamp)
        .starts(i.start)
        .ends(i.end)
        .summary(&display_name::single_line(i.summary))
        .description(&display_name::single_line(i.description))
        .status(if i.cancelled {
            EventStatus::Cancelled
        } else {
            EventStatus::Confirmed
        });
    let location = i.location.map(display_name::single_line);
    if let Some(location) = location.as_deref().filter(|l| !l.is_empty()) {
        event.location(location);
        let is_url = location.starts_with("https://") || location.starts_with("http://");
        if is_url && !location.contains(' ') {
            event.add_property("URL", location);
        }
    }
    if let Some(organizer) = i
        .organizer
        .as_ref()
        .and_then(|p| cal_address("ORGANIZER", p))
    {
        event.append_property(organizer);
    }
    if let Some(mut attendee) = i.attendee.as_ref().and_then(|p| cal_address("ATTENDEE", p)) {
        attendee
            .add_parameter("ROLE", "REQ-PARTICIPANT")
            .add_parameter("PARTSTAT", "ACCEPTED")
            // The booking is settled on Cal.com; calendars need not answer.
            .add_parameter("RSVP", "FALSE");
        event.append_property(attendee);
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
            organizer: Some(Person {
                name: Some("Dr. Lena Brandt"),
                email: "lena.brandt@example.de",
            }),
            attendee: Some(Person {
                name: Some("Jonas Weber"),
                email: "jonas.weber@example.de",
            }),
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
            "ATTENDEE;CN=Jonas Weber;PARTSTAT=ACCEPTED;ROLE=REQ-PARTICIPANT;RSVP=FALSE:mailto:jonas.weber@example.de",
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
        i.organizer = None;
        i.attendee = None;
        i.location = None;
        let ics = invite(&i);
        assert!(!ics.contains("ORGANIZER"), "{ics}");
        assert!(!ics.contains("ATTENDEE"), "{ics}");
        assert!(!ics.contains("LOCATION"), "{ics}");
        assert!(ics.contains("DTSTAMP:"), "{ics}");
    }

    #[test]
    fn names_with_line_breaks_or_quotes_stay_inside_their_property() {
        let mut i = sample(false);
        i.organizer = Some(Person {
            name: Some("Lena \"Dr\"\nBrandt\r\nX-EVIL:1"),
            email: "lena.brandt@example.de",
        });
        i.attendee = Some(Person {
            name: Some("Anna\r\nBcc: evil@example.org"),
            email: "anna@example.de",
        });
        i.summary = "Therapiesitzung mit Lena\nBrandt";
        let ics = unfolded(&invite(&i));
        for line in ics.split("\r\n") {
            assert!(!line.starts_with("X-EVIL"), "{ics}");
            assert!(!line.starts_with("Bcc"), "{ics}");
        }
        assert!(
            ics.contains("ORGANIZER;CN=\"Lena Dr Brandt X-EVIL:1\":mailto:lena.brandt@example.de"),
            "{ics}"
        );
        assert!(
            ics.contains("SUMMARY:Therapiesitzung mit Lena Brandt\r\n"),
            "{ics}"
        );
        // Values from the booking stay on their line too.
        i.uid = "uid-1\r\nX-EVIL:1";
        i.location = Some("https://video.example/r\r\nX-EVIL:1");
        i.description = "Raum 2\rX-EVIL:1";
        let ics = unfolded(&invite(&i));
        assert!(
            !ics.split(['\r', '\n']).any(|l| l.starts_with("X-EVIL")),
            "{ics}"
        );
        assert!(ics.contains("UID:uid-1X-EVIL:1@journeyctl\r\n"), "{ics}");
        // An address that is not one (a space or a line break) is left out, not written.
        i.attendee = Some(Person {
            name: None,
            email: "anna@example.de\r\nX-EVIL:1",
        });
        let ics = invite(&i);
        assert!(!ics.contains("ATTENDEE"), "{ics}");
    }
}
