//! `journeyctl preview`: every message rendered with sample data into a directory, so copy
//! and layout can be reviewed in a browser before anything reaches a patient.
//!
//! Writes files and nothing else; the command wiring (flags, default directory, printing the
//! paths) lives with the other commands.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use handlebars::html_escape;

use crate::domain::{BookingKind, MessageKind};
use crate::templates::{sample_context, sample_context_for, MessageContext, Templates};

/// One rendered example: a message kind with one variant of the sample data.
struct Variant {
    /// File stem: `{template_name}-{variant}`.
    stem: String,
    label: String,
    kind: MessageKind,
    ctx: MessageContext,
}

/// Every message kind, in each variant its templates branch on: booking kind where both
/// kinds can receive the message, rescheduled confirmations, the 24 h reminder for a session
/// that is not tomorrow, and a cancellation by the therapist.
fn variants() -> Vec<Variant> {
    let mut out = Vec::new();
    for kind in MessageKind::ALL {
        let name = kind.template_name();
        let booking_kinds: &[BookingKind] = match kind {
            MessageKind::IntroFollowup => &[BookingKind::Intro],
            MessageKind::SessionFollowup => &[BookingKind::FullSession],
            MessageKind::ClientConfirmation
            | MessageKind::TherapistNotification
            | MessageKind::Reminder24h
            | MessageKind::Reminder1h
            | MessageKind::CancellationRecovery
            | MessageKind::CancellationNotice => &[BookingKind::Intro, BookingKind::FullSession],
        };
        for &booking_kind in booking_kinds {
            out.push(Variant {
                stem: format!("{name}-{}", booking_kind.as_str()),
                label: booking_kind_label(booking_kind).to_string(),
                kind,
                ctx: sample_context_for(kind, booking_kind),
            });
        }
        let extra: Option<(&str, &str, MessageContext)> = match kind {
            MessageKind::ClientConfirmation | MessageKind::TherapistNotification => Some((
                "rescheduled",
                "verschoben",
                MessageContext {
                    rescheduled: true,
                    ..sample_context(kind)
                },
            )),
            MessageKind::Reminder24h => Some((
                "not_tomorrow",
                "nicht morgen",
                MessageContext {
                    is_tomorrow: false,
                    ..sample_context(kind)
                },
            )),
            MessageKind::Reminder1h => Some((
                "in_person",
                "vor Ort",
                MessageContext {
                    video_url: None,
                    location: Some("Praxis Brandt, Lindenstraße 12, 10969 Berlin".to_string()),
                    ..sample_context(kind)
                },
            )),
            MessageKind::CancellationRecovery => Some((
                "by_therapist",
                "von der Therapeutin abgesagt",
                MessageContext {
                    cancelled_by_therapist: true,
                    ..sample_context(kind)
                },
            )),
            MessageKind::CancellationNotice => None,
            MessageKind::IntroFollowup | MessageKind::SessionFollowup => Some((
                "no_slot",
                "ohne freien Termin",
                MessageContext {
                    next_slot: None,
                    ..sample_context(kind)
                },
            )),
        };
        if let Some((suffix, label, ctx)) = extra {
            out.push(Variant {
                stem: format!("{name}-{suffix}"),
                label: label.to_string(),
                kind,
                ctx,
            });
        }
    }
    out
}

fn booking_kind_label(kind: BookingKind) -> &'static str {
    match kind {
        BookingKind::Intro => "Kennenlerngespräch",
        BookingKind::FullSession => "Therapiesitzung",
    }
}

/// Renders every variant into `dir` (created if needed) as `{stem}.html`, `{stem}.txt` and,
/// for kinds with SMS, `{stem}.sms.txt`, plus `index.html` linking them with their subjects.
/// Returns the written paths, index last. A template that fails stops the preview.
pub(crate) fn write_preview(templates: &Templates, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir)
        .with_context(|| format!("Failed to create preview directory {}", dir.display()))?;
    let mut written = Vec::new();
    let mut rows = String::new();
    for v in variants() {
        let mail = templates
            .render_email(v.kind, &v.ctx)
            .with_context(|| format!("Failed to render the {} preview", v.stem))?;
        let html = dir.join(format!("{}.html", v.stem));
        let text = dir.join(format!("{}.txt", v.stem));
        write(&html, &mail.html)?;
        write(&text, &mail.text)?;
        written.push(html);
        written.push(text);
        let mut sms_cell = String::new();
        if v.kind.has_sms() {
            let sms = templates
                .render_sms(v.kind, &v.ctx)
                .with_context(|| format!("Failed to render the {} SMS preview", v.stem))?;
            let path = dir.join(format!("{}.sms.txt", v.stem));
            write(&path, &sms)?;
            written.push(path);
            let septets = crate::templates::gsm7_septets(&sms);
            sms_cell = format!(
                "<a href=\"{}.sms.txt\">SMS</a> ({septets}/{})",
                html_escape(&v.stem),
                crate::domain::gsm7::SEGMENT
            );
        }
        let stem = html_escape(&v.stem);
        rows.push_str(&format!(
            "<tr><td><code>{}</code><br><small>{}</small></td><td>{}</td>\
             <td><a href=\"{stem}.html\">HTML</a></td><td><a href=\"{stem}.txt\">Text</a></td>\
             <td>{sms_cell}</td></tr>\n",
            html_escape(v.kind.template_name()),
            html_escape(&v.label),
            html_escape(&mail.subject),
        ));
    }
    let index = dir.join("index.html");
    write(
        &index,
        &format!(
            "<!DOCTYPE html>\n<html lang=\"de\">\n<head>\n<meta charset=\"utf-8\">\n\
             <title>journeyctl: Vorschau aller Nachrichten</title>\n\
             <style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.4em .8em;\
             text-align:left;vertical-align:top;border-bottom:1px solid #ddd}}</style>\n\
             </head>\n<body>\n<h1>Vorschau aller Nachrichten</h1>\n\
             <p>Gerendert mit Beispieldaten (fiktive Personen).</p>\n<table>\n\
             <tr><th>Vorlage</th><th>Betreff</th><th></th><th></th><th></th></tr>\n\
             {rows}</table>\n</body>\n</html>\n"
        ),
    )?;
    written.push(index);
    Ok(written)
}

fn write(path: &Path, contents: &str) -> anyhow::Result<()> {
    fs::write(path, contents).with_context(|| format!("Failed to write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_writes_every_kind_and_an_index_linking_them() {
        let templates = Templates::load(None, chrono_tz::Europe::Berlin).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("preview");
        let written = write_preview(&templates, &out).unwrap();
        assert_eq!(written.last().unwrap(), &out.join("index.html"));
        for path in &written {
            assert!(path.is_file(), "{}", path.display());
        }
        let index = fs::read_to_string(out.join("index.html")).unwrap();
        for kind in MessageKind::ALL {
            let name = kind.template_name();
            assert!(
                written
                    .iter()
                    .any(|p| p.file_name().unwrap().to_string_lossy().starts_with(name)),
                "{name}"
            );
            assert!(index.contains(&format!("<code>{name}</code>")), "{name}");
        }
        assert!(out.join("client_confirmation-intro.html").is_file());
        assert!(out.join("client_confirmation-full_session.txt").is_file());
        assert!(out.join("reminder_1h-full_session.sms.txt").is_file());
        assert!(out.join("cancellation_notice-intro.html").is_file());
        assert!(index.contains("Termin abgesagt"), "{index}");
        assert!(!out.join("intro_followup-intro.sms.txt").exists());
        assert!(index.contains("Erinnerung: Ihr Termin morgen"));
        assert!(index.contains("Gleich geht&#x27;s los!"), "{index}");
        // Every file the index links to was written.
        for href in index.split("href=\"").skip(1) {
            let target = href.split('"').next().unwrap();
            assert!(out.join(target).is_file(), "{target}");
        }
    }
}
