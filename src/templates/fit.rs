//! Fitting an SMS into one GSM-7 segment: the text is transliterated to GSM-7, and a text
//! that is still too long gives up, in this order, the video link, the therapist's first names,
//! and finally its tail.

use super::MessageContext;
use crate::domain::gsm7;

/// The longest therapist name (in characters) kept when a name has to be shortened to fit.
const SHORT_NAME_CHARS: usize = 30;

/// A rendered SMS in GSM-7 with single spaces. Transliterate first: a dropped emoji must not
/// leave a double space behind.
pub(super) fn normalize(rendered: &str) -> String {
    gsm7::transliterate(rendered)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Renders `ctx` with `render` until the text fits one segment: as it is, then without the
/// video link, then with the therapist's last name only; the last attempt is cut to size.
pub(super) fn fit_one_segment(
    ctx: &MessageContext,
    render: impl Fn(&MessageContext) -> anyhow::Result<String>,
) -> anyhow::Result<String> {
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
        .take(SHORT_NAME_CHARS)
        .collect();
    let third = render(&c)?;
    Ok(cut_to_septets(&third, gsm7::SEGMENT))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MessageKind;
    use crate::templates::{sample_context, Templates};

    fn t() -> Templates {
        Templates::load(None, chrono_tz::Europe::Berlin).unwrap()
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
    fn sms_spell_names_in_gsm7_and_keep_one_segment() {
        let templates = t();
        let mut c = sample_context(MessageKind::Reminder24h);
        c.therapist_name = "Şebnem Yıldız-Öğüt 🌿".into();
        let s = templates.render_sms(MessageKind::Reminder24h, &c).unwrap();
        assert!(s.contains("mit Sebnem Yildiz-Ögüt ist"), "{s}");
        assert!(!s.contains('?'), "{s}");
        assert!(gsm7::fits_one_segment(&s), "{s}");
    }
}
