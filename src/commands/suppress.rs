//! `journeyctl suppress ADDRESS --channel email|sms [--remove]`: an operator's opt-out (a
//! patient asked by phone or mail to get nothing more), or lifting one (a patient who asks to
//! hear from us again, a number that was wrongly refused). Honoured from the next run.
//!
//! The address is never printed in full: output and logs show it masked.

use crate::cli::GlobalArgs;
use crate::config::{self, ConfigError};
use crate::db::{self, suppressions};
use crate::domain::{mask_email, mask_phone, Channel};
use crate::exit::ExitStatus;
use crate::stages::optout;

/// `journeyctl suppress ADDRESS --channel email|sms [--remove]`
pub(crate) async fn suppress(
    g: &GlobalArgs,
    address: &str,
    channel: Channel,
    remove: bool,
) -> anyhow::Result<ExitStatus> {
    let normalised = optout::normalise(channel, address).map_err(|why| {
        ConfigError::new(format!(
            "ADDRESS is not a usable {channel} address ({why}); give {}",
            match channel {
                Channel::Email => "an email address such as name@example.de",
                Channel::Sms => "a phone number in E.164 form such as +4915112345678",
            }
        ))
    })?;
    let masked = match channel {
        Channel::Email => mask_email(&normalised),
        Channel::Sms => mask_phone(&normalised),
    };
    let db = db::connect(&config::database_url(g)?, 1).await?;
    let (changed, what) = if remove {
        let removed = suppressions::remove(&db, channel, &normalised).await?;
        let what = if removed {
            "suppression removed: messages may go to it again from the next run"
        } else {
            "was not suppressed: nothing changed"
        };
        (removed, what)
    } else {
        let added = suppressions::add(&db, channel, &normalised, "operator", "operator").await?;
        let what = if added {
            "suppressed: nothing more is sent to it on this channel from the next run"
        } else {
            "was already suppressed: nothing changed"
        };
        (added, what)
    };
    if g.json {
        crate::outln!(
            "{}",
            serde_json::json!({
                "command": "suppress",
                "channel": channel.as_str(),
                "address": masked,
                "action": if remove { "remove" } else { "add" },
                "changed": changed,
            })
        );
    } else {
        crate::outln!("{channel} {masked}: {what}");
    }
    Ok(ExitStatus::Ok)
}
