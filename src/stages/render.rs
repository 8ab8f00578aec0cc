//! A message's content before it is sent: its templates rendered ([`render`]), the calendar
//! invite a confirmation carries ([`invite_for`]), and the two put together with the ledger's
//! Message-ID into what a provider takes ([`for_provider`]).

use uuid::Uuid;

use super::deliver::Delivery;
use super::journey::Journey;
use super::plan::{Message, Recipient};
use crate::db::bookings::DueBooking;
use crate::domain::{display_name, BookingKind, Channel, EmailAddress, MessageKind, RecipientRole};
use crate::notify::email::Attachment;
use crate::notify::Rendered;

/// A message's rendered templates: subject and HTML for email, the text of both channels,
/// and the HTML of the copy a QA message carries.
pub(crate) struct Content {
    pub subject: Option<String>,
    pub text: String,
    pub html: Option<String>,
    pub copy: Option<String>,
}

/// Subject, text, HTML of a message, and the HTML of the copy it carries (QA). A QA copy's
/// text follows the message's own text, headed by the copy's subject.
pub(crate) fn render(j: &Journey, message: &Message) -> anyhow::Result<Content> {
    match message.to.channel() {
        Channel::Email => {
            let r = j.templates.render_email(message.kind, &message.context)?;
            let mut text = r.text;
            let copy = match message.carries_copy_of {
                Some(kind) => {
                    let c = j.templates.render_email(kind, &message.context)?;
                    text.push_str(&format!(
                        "\n\n----- Kopie: {} -----\nBetreff: {}\n\n{}",
                        kind.event_kind(),
                        c.subject,
                        c.text
                    ));
                    Some(c.html)
                }
                None => None,
            };
            Ok(Content {
                subject: Some(r.subject),
                text,
                html: Some(r.html),
                copy,
            })
        }
        Channel::Sms => {
            let body = j.templates.render_sms(message.kind, &message.context)?;
            Ok(Content {
                subject: None,
                text: body,
                html: None,
                copy: None,
            })
        }
    }
}

/// The rendered delivery as the providers take it: the invite and the QA copy as
/// attachments, the ledger row's Message-ID, and what an SMS asks of Twilio.
pub(crate) fn for_provider(
    j: &Journey,
    d: &Delivery,
    content: Content,
    message_id: String,
    delivery_id: Uuid,
) -> Rendered {
    let m = &d.message;
    let method = if m.kind == MessageKind::CancellationNotice {
        "CANCEL"
    } else {
        "REQUEST"
    };
    let mut attachments: Vec<Attachment> = d
        .invite
        .as_ref()
        .map(|ics| Attachment {
            filename: "termin.ics".to_string(),
            content_type: format!("text/calendar; charset=utf-8; method={method}"),
            body: ics.clone().into_bytes(),
        })
        .into_iter()
        .collect();
    attachments.extend(content.copy.map(|html| Attachment {
        filename: "kopie-benachrichtigung.html".to_string(),
        content_type: "text/html; charset=utf-8".to_string(),
        body: html.into_bytes(),
    }));
    Rendered {
        to_name: m.to_name.clone(),
        subject: content.subject,
        text: content.text,
        html: content.html,
        attachments,
        message_id,
        list_unsubscribe: m.context.unsubscribe_url.clone(),
        sms: super::gate::sms_options(j, m, delivery_id),
    }
}

/// The calendar invite of one message (RFC 5545 / RFC 5546): the booking's calendar UID
/// (carried over from the first booking across reschedules), its SEQUENCE (one higher for the
/// cancellation), the therapist as ORGANIZER (the sender's mailbox when the therapist has no
/// address) and the recipient as ATTENDEE.
pub(crate) fn invite_for(j: &Journey, b: &DueBooking, m: &Message) -> String {
    let ctx = &m.context;
    let cancelled = m.kind == MessageKind::CancellationNotice;
    let therapist_name = display_name::sanitize(&ctx.therapist_name);
    let summary = invite_summary(m.role, ctx.booking_kind, &therapist_name, cancelled);
    let (uid, sequence) = invite_version(b, cancelled);
    let organizer_email = b
        .therapist
        .as_ref()
        .and_then(|t| t.email.as_deref())
        .and_then(|e| EmailAddress::parse(e).ok())
        .map(|e| e.as_str().to_string())
        .or_else(|| j.senders.email_sender_address());
    let attendee_email = match &m.to {
        Recipient::Email(e) => Some(e.as_str()),
        Recipient::Sms(_) => None,
    };
    let location = ctx.video_url.as_deref().or(ctx.location.as_deref());
    crate::ics::invite_at(
        &crate::ics::Invite {
            uid,
            sequence,
            start: ctx.start,
            end: ctx.end,
            summary: &summary,
            description: location.unwrap_or(""),
            organizer: organizer_email.as_deref().map(|email| crate::ics::Person {
                name: Some(&therapist_name),
                email,
            }),
            attendee: attendee_email.map(|email| crate::ics::Person {
                name: m.to_name.as_deref(),
                email,
            }),
            location,
            cancelled,
        },
        j.clock.now(),
    )
}

/// The invite's SUMMARY: what the appointment is, to whom, and whether it was cancelled.
fn invite_summary(
    role: RecipientRole,
    kind: BookingKind,
    therapist_name: &str,
    cancelled: bool,
) -> String {
    let what = match (role, kind) {
        (RecipientRole::Therapist, BookingKind::Intro) => "Kennenlerngespräch".to_string(),
        (RecipientRole::Therapist, _) => "Therapiesitzung".to_string(),
        (_, BookingKind::Intro) => format!("Kennenlerngespräch mit {therapist_name}"),
        (_, _) => format!("Therapiesitzung mit {therapist_name}"),
    };
    if cancelled {
        format!("Abgesagt: {what}")
    } else {
        what
    }
}

/// The invite's UID and SEQUENCE. A rescheduled booking carrying an earlier booking's UID is
/// at least the second version, even when no sequence was stored for it.
fn invite_version(b: &DueBooking, cancelled: bool) -> (&str, u32) {
    let uid = b
        .ical_uid
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .unwrap_or(&b.cal_uid);
    let stored = u32::try_from(b.ical_sequence.unwrap_or(0)).unwrap_or(0);
    let sequence = if uid != b.cal_uid {
        stored.max(1)
    } else {
        stored
    } + u32::from(cancelled);
    (uid, sequence)
}
