//! Message rendering: handlebars templates in strict mode, built once per process.
//!
//! The built-in templates in `templates/` are embedded in the binary; a file of the same name
//! in `JOURNEY_TEMPLATES_DIR` replaces its built-in one. HTML templates escape every value;
//! subjects, plain text and SMS are rendered without escaping. Dates and times are shown in
//! the configured zone with German names from chrono's locale data:
//! `{{datum_uhrzeit start}}` → "Dienstag, 3. März 2026, 14:00 Uhr", `{{datum start}}`,
//! `{{uhrzeit start}}` → "14:00 Uhr", `{{kurzdatum start}}` → "Di., 03.03.".
//!
//! This module does not decide who gets what; it turns a [`MessageContext`] into text.

use std::path::Path;

use anyhow::{anyhow, Context};
use chrono::{DateTime, Duration, Locale, Utc};
use chrono_tz::Tz;
use handlebars::{
    Context as HbContext, Handlebars, Helper, HelperResult, Output, RenderContext,
    RenderErrorReason,
};
use serde::Serialize;

use crate::domain::{display_name, gsm7, BookingKind, MessageKind};

/// Every value a message may show. Optional values are simply absent from the message.
#[derive(Serialize, Clone, Debug)]
pub struct MessageContext {
    pub patient_name: Option<String>,
    pub therapist_name: String,
    #[serde(serialize_with = "kind_str")]
    pub booking_kind: BookingKind,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub video_url: Option<String>,
    pub location: Option<String>,
    /// The session is on the next calendar day in the configured zone (see [`is_tomorrow`]).
    pub is_tomorrow: bool,
    pub booking_link: Option<String>,
    pub match_link: Option<String>,
    /// The therapist's next free full-session slot, only when the cache is fresh.
    pub next_slot: Option<DateTime<Utc>>,
    pub other_therapists_count: Option<i64>,
    pub cancelled_by_therapist: bool,
    pub rescheduled: bool,
    /// The recipient's unsubscribe link: set on advertising emails only (`stages::optout`).
    pub unsubscribe_url: Option<String>,
}

fn kind_str<S: serde::Serializer>(k: &BookingKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(k.as_str())
}

pub struct RenderedEmail {
    pub subject: String,
    pub html: String,
    pub text: String,
}

/// The built-in template files, embedded at compile time.
const BUILTIN: &[(&str, &str)] = &[
    (
        "_html_head.hbs",
        include_str!("../templates/_html_head.hbs"),
    ),
    (
        "_html_foot.hbs",
        include_str!("../templates/_html_foot.hbs"),
    ),
    ("_greeting.hbs", include_str!("../templates/_greeting.hbs")),
    ("_optout.hbs", include_str!("../templates/_optout.hbs")),
    (
        "client_confirmation.subject.hbs",
        include_str!("../templates/client_confirmation.subject.hbs"),
    ),
    (
        "client_confirmation.txt.hbs",
        include_str!("../templates/client_confirmation.txt.hbs"),
    ),
    (
        "client_confirmation.html.hbs",
        include_str!("../templates/client_confirmation.html.hbs"),
    ),
    (
        "therapist_notification.subject.hbs",
        include_str!("../templates/therapist_notification.subject.hbs"),
    ),
    (
        "therapist_notification.txt.hbs",
        include_str!("../templates/therapist_notification.txt.hbs"),
    ),
    (
        "therapist_notification.html.hbs",
        include_str!("../templates/therapist_notification.html.hbs"),
    ),
    (
        "reminder_24h.subject.hbs",
        include_str!("../templates/reminder_24h.subject.hbs"),
    ),
    (
        "reminder_24h.txt.hbs",
        include_str!("../templates/reminder_24h.txt.hbs"),
    ),
    (
        "reminder_24h.html.hbs",
        include_str!("../templates/reminder_24h.html.hbs"),
    ),
    (
        "reminder_24h.sms.hbs",
        include_str!("../templates/reminder_24h.sms.hbs"),
    ),
    (
        "reminder_1h.subject.hbs",
        include_str!("../templates/reminder_1h.subject.hbs"),
    ),
    (
        "reminder_1h.txt.hbs",
        include_str!("../templates/reminder_1h.txt.hbs"),
    ),
    (
        "reminder_1h.html.hbs",
        include_str!("../templates/reminder_1h.html.hbs"),
    ),
    (
        "reminder_1h.sms.hbs",
        include_str!("../templates/reminder_1h.sms.hbs"),
    ),
    (
        "intro_followup.subject.hbs",
        include_str!("../templates/intro_followup.subject.hbs"),
    ),
    (
        "intro_followup.txt.hbs",
        include_str!("../templates/intro_followup.txt.hbs"),
    ),
    (
        "intro_followup.html.hbs",
        include_str!("../templates/intro_followup.html.hbs"),
    ),
    (
        "session_followup.subject.hbs",
        include_str!("../templates/session_followup.subject.hbs"),
    ),
    (
        "session_followup.txt.hbs",
        include_str!("../templates/session_followup.txt.hbs"),
    ),
    (
        "session_followup.html.hbs",
        include_str!("../templates/session_followup.html.hbs"),
    ),
    (
        "cancellation_recovery.subject.hbs",
        include_str!("../templates/cancellation_recovery.subject.hbs"),
    ),
    (
        "cancellation_recovery.txt.hbs",
        include_str!("../templates/cancellation_recovery.txt.hbs"),
    ),
    (
        "cancellation_recovery.html.hbs",
        include_str!("../templates/cancellation_recovery.html.hbs"),
    ),
    (
        "cancellation_notice.subject.hbs",
        include_str!("../templates/cancellation_notice.subject.hbs"),
    ),
    (
        "cancellation_notice.txt.hbs",
        include_str!("../templates/cancellation_notice.txt.hbs"),
    ),
    (
        "cancellation_notice.html.hbs",
        include_str!("../templates/cancellation_notice.html.hbs"),
    ),
];

/// The templates. With overrides they are compiled when loaded (a broken override is an error
/// before anything is sent); the built-in ones alone are compiled on first use, so a run with
/// nothing to send never compiles them.
pub struct Templates {
    compiled: std::sync::OnceLock<Result<Compiled, String>>,
    tz: Tz,
}

/// The compiled templates: one registry escaping HTML, one for text, subjects and SMS.
struct Compiled {
    html: Handlebars<'static>,
    text: Handlebars<'static>,
}

impl Templates {
    /// The built-in templates, each replaced by the file of the same name in `override_dir`
    /// when there is one. A template that does not parse is an error naming it.
    pub fn load(override_dir: Option<&Path>, tz: Tz) -> anyhow::Result<Templates> {
        let compiled = std::sync::OnceLock::new();
        if override_dir.is_some() {
            let _ = compiled.set(Ok(Self::compile(override_dir, tz)?));
        }
        Ok(Templates { compiled, tz })
    }

    fn compiled(&self) -> anyhow::Result<&Compiled> {
        self.compiled
            .get_or_init(|| Self::compile(None, self.tz).map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow!("the built-in templates cannot be compiled: {e}"))
    }

    fn compile(override_dir: Option<&Path>, tz: Tz) -> anyhow::Result<Compiled> {
        let mut html = Handlebars::new();
        let mut text = Handlebars::new();
        html.set_strict_mode(true);
        text.set_strict_mode(true);
        text.register_escape_fn(handlebars::no_escape);
        for reg in [&mut html, &mut text] {
            register_helpers(reg, tz);
        }
        for (file, builtin) in BUILTIN {
            let source = match override_dir.map(|d| d.join(file)) {
                Some(path) if path.is_file() => std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read template override {}", path.display()))?,
                _ => (*builtin).to_string(),
            };
            let name = file.trim_end_matches(".hbs");
            let is_html = name.ends_with(".html") || name.starts_with("_html");
            let registry = if is_html { &mut html } else { &mut text };
            if name.starts_with('_') {
                registry
                    .register_partial(name, &source)
                    .with_context(|| format!("template {file} does not parse"))?;
                // The greeting is used by both kinds of templates.
                if name == "_greeting" {
                    html.register_partial(name, &source)
                        .with_context(|| format!("template {file} does not parse"))?;
                    text.register_partial(name, &source)
                        .with_context(|| format!("template {file} does not parse"))?;
                }
            } else {
                registry
                    .register_template_string(name, &source)
                    .with_context(|| format!("template {file} does not parse"))?;
            }
        }
        Ok(Compiled { html, text })
    }

    /// The values a template sees. Names pass through [`display_name::sanitize`] here, so no
    /// subject, text, HTML part or SMS can carry a line break or control character from them.
    fn data(ctx: &MessageContext, subject: Option<&str>) -> anyhow::Result<serde_json::Value> {
        let mut v = serde_json::to_value(ctx)?;
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "patient_name".into(),
                display_name::sanitize_opt(ctx.patient_name.as_deref()).into(),
            );
            o.insert(
                "therapist_name".into(),
                display_name::sanitize(&ctx.therapist_name).into(),
            );
            o.insert(
                "is_intro".into(),
                (ctx.booking_kind == BookingKind::Intro).into(),
            );
            o.insert("subject".into(), subject.unwrap_or("").into());
        }
        Ok(v)
    }

    pub fn render_email(
        &self,
        kind: MessageKind,
        ctx: &MessageContext,
    ) -> anyhow::Result<RenderedEmail> {
        let name = kind.template_name();
        let compiled = self.compiled()?;
        let data = Self::data(ctx, None)?;
        let subject = compiled
            .text
            .render(&format!("{name}.subject"), &data)
            .map_err(|e| anyhow!("template {name}.subject.hbs failed to render: {e}"))?;
        let subject = display_name::single_line(&subject);
        let data = Self::data(ctx, Some(&subject))?;
        let text = compiled
            .text
            .render(&format!("{name}.txt"), &data)
            .map_err(|e| anyhow!("template {name}.txt.hbs failed to render: {e}"))?;
        let html = compiled
            .html
            .render(&format!("{name}.html"), &data)
            .map_err(|e| anyhow!("template {name}.html.hbs failed to render: {e}"))?;
        // An advertising email never goes out without its visible opt-out, whatever an
        // override in JOURNEY_TEMPLATES_DIR left out.
        if let Some(url) = &ctx.unsubscribe_url {
            for (part, shown) in [
                ("txt", text.contains(url.as_str())),
                ("html", html.contains(&handlebars::html_escape(url))),
            ] {
                if !shown {
                    anyhow::bail!(
                        "template {name}.{part}.hbs does not show the unsubscribe link; keep \
                         {{{{> _optout}}}} (text) and {{{{> _html_foot}}}} (HTML) in it"
                    );
                }
            }
        }
        Ok(RenderedEmail {
            subject,
            html,
            text: tidy_text(&text),
        })
    }

    /// One SMS segment at most: if the text is too long, the video link is dropped first,
    /// then the therapist's name is shortened, then the text is cut.
    pub fn render_sms(&self, kind: MessageKind, ctx: &MessageContext) -> anyhow::Result<String> {
        if !kind.has_sms() {
            anyhow::bail!("{} has no SMS form", kind.template_name());
        }
        let name = format!("{}.sms", kind.template_name());
        let compiled = self.compiled()?;
        let render = |c: &MessageContext| -> anyhow::Result<String> {
            let out = compiled
                .text
                .render(&name, &Self::data(c, None)?)
                .map_err(|e| anyhow!("template {name}.hbs failed to render: {e}"))?;
            // Transliterate first: a dropped emoji must not leave a double space behind.
            Ok(gsm7::transliterate(&out)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "))
        };
        let mut c = ctx.clone();
        let first = render(&c)?;
        if gsm7::fits_one_segment(&first) {
            return Ok(first);
        }
        c.video_url = None;
        let second = render(&c)?;
        if gsm7::fits_one_segment(&second) {
            return Ok(second);
        }
        c.therapist_name = c
            .therapist_name
            .split_whitespace()
            .last()
            .unwrap_or("")
            .chars()
            .take(30)
            .collect();
        let third = render(&c)?;
        Ok(cut_to_septets(&third, gsm7::SEGMENT))
    }
}

/// Removes runs of more than one blank line left by optional sections.
fn tidy_text(s: &str) -> String {
    let mut out = String::new();
    let mut blank = 0;
    for line in s.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim_start_matches('\n').to_string()
}

/// Septets a text takes in GSM-7 (see [`crate::domain::gsm7`]).
pub fn gsm7_septets(s: &str) -> usize {
    gsm7::septets(s)
}

fn cut_to_septets(s: &str, max: usize) -> String {
    let mut used = 0;
    let mut out = String::new();
    for c in s.chars() {
        let n = gsm7_septets(&c.to_string());
        if used + n > max {
            break;
        }
        used += n;
        out.push(c);
    }
    out
}

/// Whether `start` falls on the calendar day after `now`'s, both in `tz`.
pub fn is_tomorrow(now: DateTime<Utc>, start: DateTime<Utc>, tz: Tz) -> bool {
    let today = now.with_timezone(&tz).date_naive();
    let day = start.with_timezone(&tz).date_naive();
    today.succ_opt() == Some(day)
}

fn register_helpers(reg: &mut Handlebars<'static>, tz: Tz) {
    let formats: [(&'static str, &'static str); 5] = [
        ("datum_uhrzeit", "%A, %-d. %B %Y, %H:%M Uhr"),
        ("datum", "%A, %-d. %B %Y"),
        ("uhrzeit", "%H:%M Uhr"),
        ("kurzdatum", "%a, %d.%m."),
        ("wochentag", "%A"),
    ];
    for (name, format) in formats {
        reg.register_helper(
            name,
            Box::new(
                move |h: &Helper,
                      _: &Handlebars,
                      _: &HbContext,
                      _: &mut RenderContext,
                      out: &mut dyn Output|
                      -> HelperResult {
                    let raw = h
                        .param(0)
                        .and_then(|p| p.value().as_str())
                        .ok_or_else(|| RenderErrorReason::ParamNotFoundForIndex(name, 0))?;
                    let t = DateTime::parse_from_rfc3339(raw).map_err(|_| {
                        RenderErrorReason::Other(format!("{name}: {raw:?} is not an instant"))
                    })?;
                    let local = t.with_timezone(&tz);
                    out.write(&local.format_localized(format, Locale::de_DE).to_string())?;
                    Ok(())
                },
            ),
        );
    }
    // {{anzahl n "one form" "# many form"}}: picks the singular or plural wording; `#` in the
    // plural stands for the number.
    reg.register_helper(
        "anzahl",
        Box::new(
            |h: &Helper,
             _: &Handlebars,
             _: &HbContext,
             _: &mut RenderContext,
             out: &mut dyn Output|
             -> HelperResult {
                let n = h.param(0).and_then(|p| p.value().as_i64()).unwrap_or(0);
                let one = h.param(1).and_then(|p| p.value().as_str()).unwrap_or("");
                let many = h.param(2).and_then(|p| p.value().as_str()).unwrap_or("");
                let text = if n == 1 {
                    one.to_string()
                } else {
                    many.replace('#', &n.to_string())
                };
                out.write(&text)?;
                Ok(())
            },
        ),
    );
}

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
            crate::links::booking_link(
                "https://cal.com",
                "lena-brandt",
                uuid::Uuid::nil(),
                uuid::Uuid::nil(),
                None,
                "intro_followup_email",
                Some("Jonas Weber"),
                Some("jonas.weber@example.de"),
            )
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

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Templates {
        Templates::load(None, chrono_tz::Europe::Berlin).unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_session_at_half_past_midnight_shows_its_own_local_day() {
        let mut c = sample_context(MessageKind::Reminder24h);
        c.start = at("2026-03-04T23:30:00Z");
        c.end = c.start + Duration::minutes(50);
        let e = t().render_email(MessageKind::Reminder24h, &c).unwrap();
        assert!(
            e.text.contains("Donnerstag, 5. März 2026, 00:30 Uhr"),
            "{}",
            e.text
        );
    }

    #[test]
    fn tomorrow_is_the_next_local_calendar_day() {
        let tz = chrono_tz::Europe::Berlin;
        // 23 hours ahead, same local day: not "morgen".
        assert!(!is_tomorrow(
            at("2026-03-10T00:30:00Z"),
            at("2026-03-10T22:30:00Z"),
            tz
        ));
        // Across local midnight.
        assert!(is_tomorrow(
            at("2026-03-10T20:00:00Z"),
            at("2026-03-11T19:00:00Z"),
            tz
        ));
        // 23:30Z is already the next day in Berlin.
        assert!(is_tomorrow(
            at("2026-03-09T22:00:00Z"),
            at("2026-03-09T23:30:00Z"),
            tz
        ));
    }

    #[test]
    fn dates_on_dst_change_days_show_local_time() {
        let mut c = sample_context(MessageKind::Reminder1h);
        c.start = at("2026-03-29T08:00:00Z");
        let e = t().render_email(MessageKind::Reminder1h, &c).unwrap();
        assert!(e.text.contains("10:00 Uhr"), "{}", e.text);
        c.start = at("2026-10-25T09:00:00Z");
        let e = t().render_email(MessageKind::Reminder1h, &c).unwrap();
        assert!(e.text.contains("10:00 Uhr"), "{}", e.text);
    }

    #[test]
    fn subject_says_morgen_only_for_tomorrow() {
        let mut c = sample_context(MessageKind::Reminder24h);
        c.is_tomorrow = true;
        let e = t().render_email(MessageKind::Reminder24h, &c).unwrap();
        assert!(
            e.subject.starts_with("Erinnerung: Ihr Termin morgen"),
            "{}",
            e.subject
        );
        c.is_tomorrow = false;
        let e = t().render_email(MessageKind::Reminder24h, &c).unwrap();
        assert!(!e.subject.contains("morgen"), "{}", e.subject);
        assert!(
            e.subject.contains("Dienstag, 3. März 2026"),
            "{}",
            e.subject
        );
    }

    #[test]
    fn every_message_renders_for_both_kinds_of_booking() {
        let templates = t();
        for kind in MessageKind::ALL {
            for booking_kind in [BookingKind::Intro, BookingKind::FullSession] {
                let mut c = sample_context(kind);
                c.booking_kind = booking_kind;
                let e = templates.render_email(kind, &c).unwrap();
                assert!(!e.subject.is_empty() && !e.text.is_empty() && e.html.contains("<html"));
                assert!(!e.subject.contains('\n'));
                if kind.has_sms() {
                    let s = templates.render_sms(kind, &c).unwrap();
                    assert!(gsm7_septets(&s) <= 160, "{s}");
                }
            }
        }
    }

    #[test]
    fn html_escapes_values_and_text_does_not() {
        let mut c = sample_context(MessageKind::ClientConfirmation);
        c.patient_name = Some("<script>alert(1)</script> Müller & Söhne".into());
        let e = t()
            .render_email(MessageKind::ClientConfirmation, &c)
            .unwrap();
        assert!(!e.html.contains("<script>"), "{}", e.html);
        assert!(e.html.contains("&lt;script&gt;"));
        assert!(e.text.contains("Müller & Söhne"), "{}", e.text);
    }

    #[test]
    fn sms_always_fits_one_segment_and_keeps_the_video_link_when_it_can() {
        let templates = t();
        let mut c = sample_context(MessageKind::Reminder1h);
        let s = templates.render_sms(MessageKind::Reminder1h, &c).unwrap();
        assert!(s.contains("https://app.cal.com/video/"), "{s}");
        c.therapist_name = "Prof. Dr. med. Maximiliane Sophie von Hohenzollern-Sigmaringen".into();
        c.video_url = Some(format!("https://app.cal.com/video/{}", "x".repeat(80)));
        for kind in [MessageKind::Reminder1h, MessageKind::Reminder24h] {
            let s = templates.render_sms(kind, &c).unwrap();
            assert!(gsm7_septets(&s) <= 160, "{} septets: {s}", gsm7_septets(&s));
        }
    }

    #[test]
    fn an_override_replaces_one_template_and_a_broken_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("reminder_1h.subject.hbs"),
            "Bis gleich, {{therapist_name}}",
        )
        .unwrap();
        let t = Templates::load(Some(dir.path()), chrono_tz::Europe::Berlin).unwrap();
        let c = sample_context(MessageKind::Reminder1h);
        assert_eq!(
            t.render_email(MessageKind::Reminder1h, &c).unwrap().subject,
            "Bis gleich, Dr. Lena Brandt"
        );
        let other = t.render_email(MessageKind::Reminder24h, &c).unwrap();
        assert!(other.subject.starts_with("Erinnerung"));

        std::fs::write(dir.path().join("reminder_24h.txt.hbs"), "{{#if}}").unwrap();
        let err = Templates::load(Some(dir.path()), chrono_tz::Europe::Berlin)
            .err()
            .unwrap();
        assert!(
            format!("{err:#}").contains("reminder_24h.txt.hbs"),
            "{err:#}"
        );
    }

    #[test]
    fn strict_mode_names_the_template_that_uses_a_missing_field() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("session_followup.txt.hbs"),
            "{{no_such_field}}",
        )
        .unwrap();
        let t = Templates::load(Some(dir.path()), chrono_tz::Europe::Berlin).unwrap();
        let err = t
            .render_email(
                MessageKind::SessionFollowup,
                &sample_context(MessageKind::SessionFollowup),
            )
            .err()
            .unwrap();
        assert!(
            format!("{err:#}").contains("session_followup.txt.hbs"),
            "{err:#}"
        );
    }

    #[test]
    fn the_line_after_the_video_link_or_the_address_is_blank_in_plain_text() {
        let templates = t();
        for kind in [
            MessageKind::ClientConfirmation,
            MessageKind::TherapistNotification,
            MessageKind::Reminder24h,
            MessageKind::Reminder1h,
        ] {
            let mut c = sample_context(kind);
            let e = templates.render_email(kind, &c).unwrap();
            let lines: Vec<&str> = e.text.lines().collect();
            let i = lines
                .iter()
                .rposition(|l| l.contains("https://app.cal.com/video/"))
                .unwrap();
            assert_eq!(lines[i + 1], "", "{kind:?}:\n{}", e.text);

            c.video_url = None;
            c.location = Some("Lindenstraße 12, 10969 Berlin".into());
            let e = templates.render_email(kind, &c).unwrap();
            let lines: Vec<&str> = e.text.lines().collect();
            let i = lines
                .iter()
                .position(|l| l.contains("Lindenstraße 12"))
                .unwrap();
            assert_eq!(lines[i + 1], "", "{kind:?}:\n{}", e.text);
        }
    }

    #[test]
    fn names_reach_no_message_with_a_line_break_or_control_character() {
        let templates = t();
        let mut c = sample_context(MessageKind::ClientConfirmation);
        c.patient_name = Some("Anna\r\nBcc: evil@example.org".into());
        c.therapist_name = "Lena\u{2028}Brandt\u{202E}\0".into();
        for kind in MessageKind::ALL {
            let e = templates.render_email(kind, &c).unwrap();
            assert!(!e.subject.chars().any(char::is_control), "{:?}", e.subject);
            assert!(!e.text.contains("Anna\r") && !e.text.contains('\u{2028}'));
            if kind.has_sms() {
                let s = templates.render_sms(kind, &c).unwrap();
                assert!(!s.chars().any(char::is_control), "{s:?}");
            }
        }
        let e = templates
            .render_email(MessageKind::ClientConfirmation, &c)
            .unwrap();
        assert!(e.subject.contains("Lena Brandt"), "{}", e.subject);
        assert!(
            e.text.starts_with("Guten Tag Anna Bcc: evil@example.org,"),
            "{}",
            e.text
        );
    }

    #[test]
    fn sms_spell_names_in_gsm7_and_keep_one_segment() {
        let templates = t();
        let mut c = sample_context(MessageKind::Reminder24h);
        c.therapist_name = "Şebnem Yıldız-Öğüt 🌿".into();
        let s = templates.render_sms(MessageKind::Reminder24h, &c).unwrap();
        assert!(s.contains("mit Sebnem Yildiz-Ögüt ist"), "{s}");
        assert!(!s.contains('?'), "{s}");
        assert!(gsm7::fits_one_segment(&s), "{s}");
    }

    #[test]
    fn the_cancellation_notice_is_short_formal_and_escapes_html() {
        let mut c = sample_context(MessageKind::CancellationNotice);
        c.therapist_name = "Dr. <b>Lena</b> Brandt".into();
        let e = t()
            .render_email(MessageKind::CancellationNotice, &c)
            .unwrap();
        assert!(e.subject.starts_with("Termin abgesagt:"), "{}", e.subject);
        assert!(e.text.contains("wurde abgesagt"), "{}", e.text);
        assert!(e.text.contains("Sie"), "{}", e.text);
        assert!(!e.html.contains("<b>Lena</b>"), "{}", e.html);
        assert!(e.html.contains("&lt;b&gt;Lena&lt;/b&gt;"), "{}", e.html);
        assert!(e.text.lines().count() < 20, "{}", e.text);
    }

    #[test]
    fn cancellation_counts_the_other_therapists_in_words() {
        let templates = t();
        let mut c = sample_context(MessageKind::CancellationRecovery);
        c.other_therapists_count = Some(1);
        let e = templates
            .render_email(MessageKind::CancellationRecovery, &c)
            .unwrap();
        assert!(
            e.text
                .contains("liegt noch ein weiterer passender Vorschlag"),
            "{}",
            e.text
        );
        c.other_therapists_count = Some(3);
        let e = templates
            .render_email(MessageKind::CancellationRecovery, &c)
            .unwrap();
        assert!(
            e.text.contains("liegen noch 3 weitere passende Vorschläge"),
            "{}",
            e.text
        );
        assert!(
            !e.subject.to_lowercase().contains("therapeut"),
            "neutral subject: {}",
            e.subject
        );
    }
}
