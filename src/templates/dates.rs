//! The helpers templates call to word dates and counts in German: `{{datum_uhrzeit start}}`,
//! `{{datum …}}`, `{{uhrzeit …}}`, `{{kurzdatum …}}`, `{{wochentag …}}` in the configured zone with
//! chrono's `de_DE` names, and `{{anzahl n "one" "# many"}}`. Which day is "tomorrow" is a
//! domain rule (`domain::dates`), not wording.

use chrono::{DateTime, Locale};
use chrono_tz::Tz;
use handlebars::{
    Context as HbContext, Handlebars, Helper, HelperResult, Output, RenderContext,
    RenderErrorReason,
};

pub(super) fn register_helpers(reg: &mut Handlebars<'static>, tz: Tz) {
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

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration, Utc};

    use crate::domain::MessageKind;
    use crate::templates::{sample_context, Templates};

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
    fn dates_on_dst_change_days_show_local_time() {
        let mut c = sample_context(MessageKind::Reminder1h);
        c.start = at("2026-03-29T08:00:00Z");
        let e = t().render_email(MessageKind::Reminder1h, &c).unwrap();
        assert!(e.text.contains("10:00 Uhr"), "{}", e.text);
        c.start = at("2026-10-25T09:00:00Z");
        let e = t().render_email(MessageKind::Reminder1h, &c).unwrap();
        assert!(e.text.contains("10:00 Uhr"), "{}", e.text);
    }
}
