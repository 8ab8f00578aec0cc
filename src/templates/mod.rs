//! Message rendering: handlebars templates in strict mode, built once per process.
//!
//! The built-in templates in `templates/` are embedded in the binary; a file of the same name
//! in `JOURNEY_TEMPLATES_DIR` replaces its built-in one. HTML templates escape every value;
//! subjects, plain text and SMS are rendered without escaping. Dates and times are shown in
//! the configured zone with German names from chrono's locale data:
//! `{{datum_uhrzeit start}}` → "Dienstag, 3. März 2026, 14:00 Uhr", `{{datum start}}`,
//! `{{uhrzeit start}}` → "14:00 Uhr", `{{kurzdatum start}}` → "Di., 03.03.".
//!
//! This module does not decide who gets what; it turns a [`MessageContext`] into text. It holds
//! the registry and rendering; `dates` the German date and count helpers the templates call,
//! `fit` the GSM-7 fitting of an SMS into one segment, `samples` the sample data of previews.

use std::path::Path;

use anyhow::{anyhow, Context};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use handlebars::Handlebars;
use serde::Serialize;

use crate::domain::{display_name, BookingKind, MessageKind};

mod dates;
mod fit;
mod samples;

pub use fit::gsm7_septets;
pub use samples::{sample_context, sample_context_for, SAMPLE_UNSUBSCRIBE_URL};

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
    /// The session is on the next calendar day in the configured zone
    /// (see [`crate::domain::dates::is_tomorrow`]).
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

/// `builtin!["name", …]`: each `templates/name.hbs` as (file name, source), embedded at compile
/// time.
macro_rules! builtin {
    ($($name:literal),* $(,)?) => {
        &[$((
            concat!($name, ".hbs"),
            include_str!(concat!("../../templates/", $name, ".hbs")),
        )),*]
    };
}

/// The built-in template files: the shared partials, then each message kind's subject, plain
/// text, HTML and (where it has one) SMS form.
const BUILTIN: &[(&str, &str)] = builtin![
    "_html_head",
    "_html_foot",
    "_greeting",
    "_optout",
    "client_confirmation.subject",
    "client_confirmation.txt",
    "client_confirmation.html",
    "therapist_notification.subject",
    "therapist_notification.txt",
    "therapist_notification.html",
    "reminder_24h.subject",
    "reminder_24h.txt",
    "reminder_24h.html",
    "reminder_24h.sms",
    "reminder_1h.subject",
    "reminder_1h.txt",
    "reminder_1h.html",
    "reminder_1h.sms",
    "intro_followup.subject",
    "intro_followup.txt",
    "intro_followup.html",
    "session_followup.subject",
    "session_followup.txt",
    "session_followup.html",
    "cancellation_recovery.subject",
    "cancellation_recovery.txt",
    "cancellation_recovery.html",
    "cancellation_notice.subject",
    "cancellation_notice.txt",
    "cancellation_notice.html",
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
            dates::register_helpers(reg, tz);
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

    /// One SMS segment at most (see [`fit`] for what a too-long text gives up first).
    pub fn render_sms(&self, kind: MessageKind, ctx: &MessageContext) -> anyhow::Result<String> {
        if !kind.has_sms() {
            anyhow::bail!("{} has no SMS form", kind.template_name());
        }
        let name = format!("{}.sms", kind.template_name());
        let compiled = self.compiled()?;
        fit::fit_one_segment(ctx, |c| {
            let out = compiled
                .text
                .render(&name, &Self::data(c, None)?)
                .map_err(|e| anyhow!("template {name}.hbs failed to render: {e}"))?;
            Ok(fit::normalize(&out))
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Templates {
        Templates::load(None, chrono_tz::Europe::Berlin).unwrap()
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
