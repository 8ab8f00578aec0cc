//! Realistic sample data (fictional people) for `preview` and tests: one [`MessageContext`]
//! per message kind and kind of booking.

use chrono::{DateTime, Duration, Utc};

use super::MessageContext;
use crate::domain::{BookingKind, MessageKind};

/// Realistic sample data (fictional people) for previews and tests.
pub fn sample_context(kind: MessageKind) -> MessageContext {
    let kind_of_booking = if matches!(kind, MessageKind::IntroFollowup) {
        BookingKind::Intro
    } else {
        BookingKind::FullSession
    };
    sample_context_for(kind, kind_of_booking)
}

/// Sample data for one kind of booking.
pub fn sample_context_for(kind: MessageKind, booking_kind: BookingKind) -> MessageContext {
    let followup = matches!(
        kind,
        MessageKind::IntroFollowup | MessageKind::SessionFollowup
    );
    let start = DateTime::parse_from_rfc3339("2026-03-03T13:00:00Z")
        .expect("valid instant")
        .with_timezone(&Utc);
    let intro = booking_kind == BookingKind::Intro;
    MessageContext {
        patient_name: Some("Jonas Weber".into()),
        therapist_name: "Dr. Lena Brandt".into(),
        booking_kind: if intro {
            BookingKind::Intro
        } else {
            BookingKind::FullSession
        },
        start,
        end: start
            + if intro {
                Duration::minutes(15)
            } else {
                Duration::minutes(50)
            },
        video_url: Some("https://app.cal.com/video/Kx7pR2mWq9TzLc4VbN8sYd".into()),
        location: None,
        is_tomorrow: true,
        booking_link: followup.then(|| {
            crate::links::booking_link(&crate::links::BookingLink {
                cal_origin: "https://cal.com",
                cal_username: "lena-brandt",
                therapist_id: uuid::Uuid::nil(),
                patient_id: uuid::Uuid::nil(),
                match_id: None,
                source: "intro_followup_email",
                name: Some("Jonas Weber"),
                email: Some("jonas.weber@example.de"),
            })
        }),
        match_link: Some(
            "https://therapie.example/matches/5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9".into(),
        ),
        next_slot: Some(start + Duration::days(7)),
        other_therapists_count: (kind == MessageKind::CancellationRecovery).then_some(2),
        cancelled_by_therapist: false,
        rescheduled: false,
        unsubscribe_url: kind
            .advertises()
            .then(|| SAMPLE_UNSUBSCRIBE_URL.to_string()),
    }
}

/// The unsubscribe link of the sample data (`preview`, tests): a made-up token.
pub const SAMPLE_UNSUBSCRIBE_URL: &str =
    "https://journey.example.de/api/public/unsubscribe?t=AQAAAAAAAAAAAAAAAAAAAAD8bXo1VQyXcHk0Rz9iS2Ep";
