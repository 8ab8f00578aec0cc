//! What the demo prints at the end: who got what, when (one line per ledger row, contacts
//! masked), then the ledger's totals and where the messages were written.

use std::path::Path;

use chrono_tz::Tz;

use crate::db::demo::{count_runs, ledger_counts, timeline, TimelineRow};
use crate::db::Db;
use crate::domain::{mask_email, mask_phone, Channel, Counter, Counters, RecipientRole};

/// Prints one line per ledger row, in the order it happened, times in `tz`.
pub(super) async fn print_timeline(db: &Db, tz: Tz) -> anyhow::Result<()> {
    let rows = timeline(db).await?;
    crate::outln!("\nWho got what, when (times in {tz}):");
    for r in rows {
        let when = r
            .sent_at
            .map(|t| t.with_timezone(&tz).format("%a %d.%m. %H:%M").to_string())
            .unwrap_or_else(|| "—".to_string());
        let session = r
            .start
            .map(|s| {
                s.with_timezone(&tz)
                    .format("session %a %d.%m. %H:%M")
                    .to_string()
            })
            .unwrap_or_default();
        let to = recipient(&r);
        let (stage, channel, status) = (&r.stage, r.channel.as_str(), r.status.as_str());
        crate::outln!(
            "  {when:<16} {stage:<22} {channel:<5} {status:<8} → {to:<40} {session} [{}]{}",
            r.cal_uid,
            r.last_error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// Who a row went to: the therapist, the QA inbox, or the patient with the masked contact of
/// the row's channel.
fn recipient(r: &TimelineRow) -> String {
    let name = r.name.as_deref().unwrap_or_default();
    match (r.role, r.channel) {
        (RecipientRole::Therapist, _) => {
            format!("therapist {}", r.therapist.as_deref().unwrap_or_default())
        }
        (RecipientRole::Qa, _) => "QA inbox".to_string(),
        (RecipientRole::Patient, Channel::Sms) => {
            let phone = r.phone.as_deref().map(mask_phone).unwrap_or_default();
            format!("{name} {phone}")
        }
        (RecipientRole::Patient, Channel::Email) => {
            let email = r.email.as_deref().map(mask_email).unwrap_or_default();
            format!("{name} {email}")
        }
    }
}

/// What the closing summary needs besides the database.
pub(super) struct Summary<'a> {
    pub totals: &'a Counters,
    /// The output directory (emails and SMS).
    pub dir: &'a Path,
    /// The demo database's URL, printed (redacted) when it is on the operator's server.
    pub database_url: Option<&'a str>,
}

/// Prints the ledger's totals, the number of runs, and where the messages are.
pub(super) async fn print_summary(db: &Db, s: &Summary<'_>) -> anyhow::Result<()> {
    let ledger = ledger_counts(db).await?;
    let runs = count_runs(db, super::simulate::RUN_COMMAND).await?;
    crate::outln!();
    crate::outln!(
        "ledger: {}",
        ledger
            .iter()
            .map(|(channel, status, n)| format!("{n} {channel} {status}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    crate::outln!(
        "{runs} scheduled runs; errors counted: {}; bookings skipped per run for a counted reason \
         (test data, no contact, no free slots) are in `journeyctl status`",
        s.totals.get(Counter::Errors)
    );
    crate::outln!(
        "emails: {}/email/*.eml   SMS: {}/sms/sms.jsonl",
        s.dir.display(),
        s.dir.display()
    );
    if let Some(url) = s.database_url {
        crate::outln!("database: {}", crate::secret::redact_url(url));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DeliveryStatus;

    fn row(role: RecipientRole, channel: Channel) -> TimelineRow {
        TimelineRow {
            sent_at: None,
            stage: "reminder_24h".into(),
            channel,
            role,
            status: DeliveryStatus::Sent,
            last_error: None,
            cal_uid: "demo".into(),
            start: None,
            name: Some("Jonas Weber".into()),
            email: Some("jonas.weber@example.de".into()),
            phone: Some("+4915112345678".into()),
            therapist: Some("Jan Koch".into()),
        }
    }

    #[test]
    fn a_row_names_its_recipient_with_the_masked_contact_of_its_channel() {
        let email = recipient(&row(RecipientRole::Patient, Channel::Email));
        assert!(email.starts_with("Jonas Weber ") && !email.contains("jonas.weber@"));
        let sms = recipient(&row(RecipientRole::Patient, Channel::Sms));
        assert!(sms.starts_with("Jonas Weber ") && !sms.contains("12345678"));
        let therapist = recipient(&row(RecipientRole::Therapist, Channel::Email));
        assert_eq!(therapist, "therapist Jan Koch");
        assert_eq!(
            recipient(&row(RecipientRole::Qa, Channel::Email)),
            "QA inbox"
        );
    }
}
