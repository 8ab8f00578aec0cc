//! Command-line surface: clap derive only. Nothing here decides anything; `config.rs` turns
//! these raw values into typed options before any logic sees them.
//!
//! Every environment variable the README lists is also a flag. Flags that carry secrets use
//! `hide_env_values` so `--help` never prints them.

use std::path::PathBuf;

use clap::builder::{PossibleValue, TypedValueParser};
use clap::{Args, Parser, Subcommand};

use crate::domain::Stage;

const ENV_HEADING: &str =
    "Delivery and site settings (each also read from its environment variable)";

#[derive(Parser, Debug)]
#[command(
    name = "journeyctl",
    version,
    about = "Sends the post-booking journey of Cal.com therapy sessions: confirmations, reminders \
             and followups, each exactly once, recorded in PostgreSQL.",
    long_about = None,
    after_help = "Exit status: 0 all good (also: nothing due, or another run held the stage's lock); \
                  1 a delivery failed or an error was counted; 2 usage or configuration error, or \
                  the database could not be reached.\n\
                  Typical cron line: */5 * * * * journeyctl followups"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// PostgreSQL URL, e.g. postgres://user:pass@host:5432/db?sslmode=require
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,

    /// Pretend the current time is this instant (RFC 3339, e.g. 2026-03-10T14:00:00Z).
    /// Every rule of the run is judged against it.
    #[arg(long, global = true, value_name = "RFC3339")]
    pub now: Option<String>,

    /// Print one JSON report on stdout (logs stay on stderr).
    #[arg(long, global = true)]
    pub json: bool,

    /// More log output (-v info per booking, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Only warnings and errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(flatten)]
    pub settings: SettingsArgs,
}

#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = ENV_HEADING)]
pub struct SettingsArgs {
    /// SMTP relay: smtps://user:pass@host:465, smtp://user:pass@host:587?tls=required, or
    /// smtp://host:port (no TLS, local only). Add timeout=DUR (default 30s) to bound each SMTP
    /// step (connect, greeting, EHLO, TLS, AUTH, each command, the body, the final reply)
    #[arg(long, env = "SMTP_URL", hide_env_values = true, global = true)]
    pub smtp_url: Option<String>,

    /// PEM bundle with the CA that signed the SMTP relay's certificate (a company or
    /// self-hosted relay); trusted in addition to the public roots and the system's store
    #[arg(long, env = "SMTP_CA_FILE", global = true, value_name = "FILE")]
    pub smtp_ca_file: Option<PathBuf>,

    /// Instead of SMTP, write each email as an .eml file into this directory
    #[arg(long, env = "EMAIL_OUTBOX_DIR", global = true, value_name = "DIR")]
    pub email_outbox_dir: Option<PathBuf>,

    /// Sender mailbox, e.g. "Praxisteam <termine@example.de>"
    #[arg(long, env = "EMAIL_FROM", global = true)]
    pub email_from: Option<String>,

    /// Optional Reply-To mailbox
    #[arg(long, env = "EMAIL_REPLY_TO", global = true)]
    pub email_reply_to: Option<String>,

    /// Twilio account SID (SMS)
    #[arg(long, env = "TWILIO_ACCOUNT_SID", global = true)]
    pub twilio_account_sid: Option<String>,

    /// Twilio auth token (SMS)
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true, global = true)]
    pub twilio_auth_token: Option<String>,

    /// Sender number for SMS (E.164)
    #[arg(long, env = "TWILIO_FROM", global = true)]
    pub twilio_from: Option<String>,

    /// Twilio messaging service, used instead of --twilio-from
    #[arg(long, env = "TWILIO_MESSAGING_SERVICE_SID", global = true)]
    pub twilio_messaging_service_sid: Option<String>,

    /// Base URL of Twilio's API [default: https://api.twilio.com]
    #[arg(long, env = "TWILIO_API_BASE", global = true)]
    pub twilio_api_base: Option<String>,

    /// Deadline of one request to Twilio, e.g. 30s [default: 30s]
    #[arg(long, env = "TWILIO_TIMEOUT", global = true, value_name = "DURATION")]
    pub twilio_timeout: Option<String>,

    /// Instead of Twilio, append each SMS as a JSON line to sms.jsonl in this directory
    #[arg(long, env = "SMS_OUTBOX_DIR", global = true, value_name = "DIR")]
    pub sms_outbox_dir: Option<PathBuf>,

    /// HMAC key of the Cal.com webhook
    #[arg(
        long,
        env = "CAL_WEBHOOK_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub cal_webhook_secret: Option<String>,

    /// Cal.com origin for booking links [default: https://cal.com]
    #[arg(long, env = "CAL_ORIGIN", global = true)]
    pub cal_origin: Option<String>,

    /// The marketplace's site, for match links
    #[arg(long, env = "PUBLIC_BASE_URL", global = true)]
    pub public_base_url: Option<String>,

    /// Where webhook confirmations of test bookings go (unset: not sent)
    #[arg(long, env = "QA_NOTIFY_EMAIL", global = true)]
    pub qa_notify_email: Option<String>,

    /// Time zone of all rendered dates [default: Europe/Berlin]
    #[arg(
        long = "timezone",
        env = "JOURNEY_TIMEZONE",
        global = true,
        value_name = "TZ"
    )]
    pub timezone: Option<String>,

    /// Directory whose files override the built-in templates, file by file
    #[arg(long, env = "JOURNEY_TEMPLATES_DIR", global = true, value_name = "DIR")]
    pub templates_dir: Option<PathBuf>,

    /// Cal.com API key for `reconcile` (Settings → Developer → API keys); reconcile is off
    /// without it
    #[arg(long, env = "CAL_API_KEY", hide_env_values = true, global = true)]
    pub cal_api_key: Option<String>,

    /// Base URL of Cal.com's API [default: https://api.cal.com]
    #[arg(long, env = "CAL_API_BASE", global = true)]
    pub cal_api_base: Option<String>,

    /// Cal.com organisation id: reconcile reads the bookings of all its members (the key must
    /// belong to an organisation admin)
    #[arg(long, env = "CAL_ORG_ID", global = true, value_name = "ID")]
    pub cal_org_id: Option<String>,

    /// Deadline of one request to Cal.com's API, e.g. 30s [default: 30s]
    #[arg(long, env = "CAL_API_TIMEOUT", global = true, value_name = "DURATION")]
    pub cal_api_timeout: Option<String>,
    /// Public https base of `serve` behind the TLS proxy (e.g. https://journey.example.de), for
    /// unsubscribe links and Twilio status callbacks. Unset: advertising emails carry an
    /// opt-out by reply instead of a one-click link, and SMS get no status callbacks
    #[arg(long, env = "PUBLIC_CALLBACK_BASE", global = true, value_name = "URL")]
    pub public_callback_base: Option<String>,

    /// Key that signs unsubscribe links (at least 32 random characters, e.g. `openssl rand
    /// -hex 32`). Keep it: links in emails already sent stop working when it changes
    #[arg(
        long,
        env = "UNSUBSCRIBE_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub unsubscribe_secret: Option<String>,

    /// Start of the nightly SMS quiet hours (HH:MM, JOURNEY_TIMEZONE) [default: 21:00]
    #[arg(long, env = "SMS_QUIET_START", global = true, value_name = "HH:MM")]
    pub sms_quiet_start: Option<String>,

    /// End of the SMS quiet hours; reminders held overnight go out then [default: 08:00]
    #[arg(long, env = "SMS_QUIET_END", global = true, value_name = "HH:MM")]
    pub sms_quiet_end: Option<String>,
}

/// One stage command per [`Stage`], flattened into [`Command`] so each is a subcommand of its
/// own (`journeyctl reminder-1h`), named and described by the stage's facts
/// (`StageFacts::command`, `StageFacts::help`): a new stage gets its command from its file.
#[derive(Debug, Clone)]
pub struct StageCommand {
    pub stage: Stage,
    pub args: StageArgs,
}

impl StageCommand {
    /// The stage this command runs, with its flags.
    pub fn stage(&self) -> (Stage, &StageArgs) {
        (self.stage, &self.args)
    }
}

impl clap::FromArgMatches for StageCommand {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let (name, sub) = matches
            .subcommand()
            .ok_or_else(|| clap::Error::new(clap::error::ErrorKind::MissingSubcommand))?;
        let stage = Stage::ALL
            .into_iter()
            .find(|s| s.command() == name)
            .ok_or_else(|| clap::Error::new(clap::error::ErrorKind::InvalidSubcommand))?;
        Ok(StageCommand {
            stage,
            args: StageArgs::from_arg_matches(sub)?,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = StageCommand::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Subcommand for StageCommand {
    fn augment_subcommands(cmd: clap::Command) -> clap::Command {
        Stage::ALL.into_iter().fold(cmd, |cmd, stage| {
            let sub = StageArgs::augment_args(clap::Command::new(stage.command()));
            cmd.subcommand(sub.about(stage.facts().help))
        })
    }

    fn augment_subcommands_for_update(cmd: clap::Command) -> clap::Command {
        StageCommand::augment_subcommands(cmd)
    }

    fn has_subcommand(name: &str) -> bool {
        Stage::ALL.into_iter().any(|s| s.command() == name)
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Apply the sql/ migrations (creates what is missing, never drops data; safe to repeat)
    Migrate,

    /// One stage of the journey (a subcommand each)
    #[command(flatten)]
    Stage(StageCommand),
    /// Process one Cal.com webhook body (stdin, or --file) as the listener would: verify,
    /// store, send the confirmations. For replays and for wiring into another web server
    Webhook(WebhookArgs),
    /// Listen for Cal.com webhooks (POST /api/public/cal/webhook), Twilio's SMS status callbacks
    /// (POST /api/public/twilio/status), unsubscribe links (GET/POST /api/public/unsubscribe)
    /// and GET /healthz
    Serve(ServeArgs),
    /// Health at a glance: last run per stage, counters, red flags. Exit 0 OK, 1 warning,
    /// 2 critical (usable as a Nagios/Icinga check or systemd OnFailure=)
    Status(StatusArgs),
    /// Bookings whose window passed without the message going out, and why. Exit 1 when
    /// something was missed for no recorded reason
    Audit(AuditArgs),
    /// Settle a delivery left in_doubt: --as sent (it did go out) or --as retry (send again
    /// while the window is open)
    Resolve(ResolveArgs),
    /// Render every email (HTML and text) and SMS with sample data into a directory, with an
    /// index.html to review them in a browser
    Preview(PreviewArgs),
    /// The whole journey on a throwaway database over a simulated week, with outbox
    /// transports; prints who got what when. Never touches an existing database
    Demo(DemoArgs),
    /// Remove raw webhook bodies (they hold patients' names, emails and phones) older than
    /// the retention period; their hashes stay for duplicate detection. Run it daily
    Prune(PruneArgs),
    /// Run every stage in order, in one process: confirmation-recovery, reminder-24h,
    /// reminder-1h, intro-followup, session-followup, cancellation-recovery; with CAL_API_KEY
    /// set, `reconcile` runs first
    Followups(FollowupsArgs),
    /// Read the bookings created or changed at Cal.com since the last successful reconcile
    /// (API v2) and apply each one the database does not show yet exactly as its lost webhook
    /// would have been: bookings, cancellations and reschedules whose webhook never arrived.
    /// Needs CAL_API_KEY. Exit 1 when the API cannot be read (nothing is applied then)
    Reconcile(ReconcileArgs),
    /// Stop (or with --remove, allow again) every message to one address on one channel, e.g.
    /// when a patient asks by phone to get nothing more. Honoured from the next run; the
    /// address is only printed masked
    Suppress(SuppressArgs),
}

/// Options of `reconcile`.
#[derive(Args, Debug, Clone, Default)]
pub struct ReconcileArgs {
    /// Read the API and list what would be applied; apply, send and write nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Look back this far (e.g. 2h, 7d) instead of since the last successful reconcile
    /// (minus 10 minutes; 7 days on the first run)
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,

    /// Bookings per API page (at most 250)
    #[arg(long, default_value_t = 250, value_name = "N", hide = true)]
    pub page_size: u32,

    /// Deadline of the whole run (e.g. 3m): rate-limit waits never end after it, and what is
    /// not read by then is read by the next run
    #[arg(long, value_name = "DURATION", default_value = "3m")]
    pub run_deadline: String,
}

#[derive(Args, Debug, Clone)]
pub struct SuppressArgs {
    /// The email address or the phone number (E.164, e.g. +4915112345678)
    pub address: String,

    /// Which channel the address belongs to
    #[arg(long, value_name = "email|sms")]
    pub channel: SuppressChannel,

    /// Lift the suppression instead: messages may go to the address again
    #[arg(long)]
    pub remove: bool,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuppressChannel {
    Email,
    Sms,
}

/// Options of `followups` (each stage uses its default window).
#[derive(Args, Debug, Clone, Default)]
pub struct FollowupsArgs {
    /// Select and render as a real run, print what would be sent; send and write nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Process at most N due bookings per stage
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,

    /// Only these stages (comma-separated, in the usual order), e.g.
    /// --stages reminder-1h,intro-followup
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "STAGE,...",
        value_parser = StageParser
    )]
    pub stages: Vec<Stage>,

    #[arg(long, hide = true)]
    pub no_lock: bool,

    #[arg(long, default_value_t = 8, value_name = "N", hide = true)]
    pub concurrency: usize,

    /// Also write this run's counters in Prometheus text format to PATH (atomically), for
    /// node_exporter's textfile collector
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// Deadline of the whole run (e.g. 3m, 90s). At the deadline no further message is
    /// claimed, sends already in flight get up to 20 s to finish and are recorded, the run's
    /// record is closed and the command exits 1; what was not claimed stays due for the next
    /// run. The default keeps a run (deadline plus drain) inside the 5-minute cadence and the
    /// 5-minute unit's TimeoutStartSec=4min. SIGTERM/SIGINT stop a run the same way (exit
    /// 143/130)
    #[arg(long, value_name = "DURATION", default_value = "3m")]
    pub run_deadline: String,

    /// Do not run `reconcile` first (it runs whenever CAL_API_KEY is set, so no stage sends
    /// on a booking whose cancellation or reschedule webhook was lost)
    #[arg(long)]
    pub no_reconcile: bool,
}

/// Options shared by every stage command.
#[derive(Args, Debug, Clone, Default)]
pub struct StageArgs {
    /// Select and render as a real run, print what would be sent; send and write nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Process at most N due bookings (the rest wait for the next run)
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,

    /// Near edge of the selection window, as a duration from now (e.g. 50m, 23h, 3d).
    /// Reminders look ahead, followups and recoveries look back.
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub window_start: Option<String>,

    /// Far edge of the selection window (see --window-start)
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub window_end: Option<String>,

    /// Do not take the stage's advisory lock (for tests proving the ledger alone prevents
    /// double sends)
    #[arg(long, hide = true)]
    pub no_lock: bool,

    /// Sends in flight at once
    #[arg(long, default_value_t = 8, value_name = "N", hide = true)]
    pub concurrency: usize,

    /// Also write this run's counters in Prometheus text format to PATH (atomically), for
    /// node_exporter's textfile collector
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// Deadline of the whole run (e.g. 3m, 90s). At the deadline no further message is
    /// claimed, sends already in flight get up to 20 s to finish and are recorded, the run's
    /// record is closed and the command exits 1; what was not claimed stays due for the next
    /// run. The default keeps a run (deadline plus drain) inside the 5-minute cadence and the
    /// 5-minute unit's TimeoutStartSec=4min. SIGTERM/SIGINT stop a run the same way (exit
    /// 143/130)
    #[arg(long, value_name = "DURATION", default_value = "3m")]
    pub run_deadline: String,
}

#[derive(Args, Debug, Clone)]
pub struct WebhookArgs {
    /// Read the body from this file instead of stdin
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// Value of the X-Cal-Signature-256 header (hex HMAC-SHA256 of the body)
    #[arg(long, value_name = "HEX")]
    pub signature: Option<String>,

    /// Do not check the signature (replaying a body recorded in cal_webhook_receipts); logged
    #[arg(long)]
    pub no_verify: bool,

    /// Re-apply the body stored in cal_webhook_receipts under this id (e.g. one whose apply
    /// failed with 500; the log names the id). Its signature was checked when it arrived.
    /// Safe to repeat: a body already applied is reported as duplicate and sends nothing
    #[arg(
        long,
        value_name = "RECEIPT_ID",
        conflicts_with_all = ["file", "signature", "no_verify"]
    )]
    pub replay: Option<uuid::Uuid>,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8787", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,

    /// On SIGTERM/SIGINT: how long to finish requests in flight and queued confirmations
    /// before exiting. Keep it below the unit's TimeoutStopSec (30s); what is left is sent by
    /// confirmation-recovery (the bookings are stored)
    #[arg(
        long,
        env = "SERVE_DRAIN_TIMEOUT",
        default_value = "20s",
        value_name = "DURATION"
    )]
    pub drain_timeout: String,
}

#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// How far back to look at runs and counters
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    pub since: String,
}

#[derive(Args, Debug, Clone)]
pub struct PruneArgs {
    /// Keep raw webhook bodies this long (at least 1d), e.g. 30d
    #[arg(
        long,
        env = "JOURNEY_WEBHOOK_RETENTION",
        default_value = "30d",
        value_name = "DUR"
    )]
    pub retention: String,
}

#[derive(Args, Debug, Clone)]
pub struct AuditArgs {
    /// How many days back to look for closed windows
    #[arg(long, default_value_t = 7, value_name = "N")]
    pub days: u32,
}

#[derive(Args, Debug, Clone)]
pub struct ResolveArgs {
    /// The delivery's id (journey_deliveries.id, as `status` lists it)
    pub id: uuid::Uuid,

    /// What happened: `sent` (it reached the recipient) or `retry` (send it again)
    #[arg(long = "as", value_name = "sent|retry")]
    pub resolution: Resolution,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Sent,
    Retry,
}

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Directory for the emails (.eml) and SMS (sms.jsonl) it sends [default: ./journeyctl-demo-<time>]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct PreviewArgs {
    /// Directory to write into (created if missing)
    #[arg(long, default_value = "journeyctl-preview", value_name = "DIR")]
    pub out: PathBuf,
}

impl Command {
    /// The stage a stage command runs, with its flags; `None` for every other command.
    pub fn stage_command(&self) -> Option<(Stage, &StageArgs)> {
        let Command::Stage(c) = self else {
            return None;
        };
        Some(c.stage())
    }

    /// The stage this command runs alone, if it is a stage command.
    pub fn as_stage(&self) -> Option<Stage> {
        self.stage_command().map(|(stage, _)| stage)
    }
}

/// A stage on the command line is named by its subcommand (`reminder-1h`) or by its id in
/// reports and `journey_runs` (`reminder_1h`); the help lists the subcommand names.
impl clap::ValueEnum for Stage {
    fn value_variants<'a>() -> &'a [Self] {
        &Stage::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.command()).alias(self.as_str()))
    }
}

/// `--stages`: [`Stage`] as a clap value enum, tolerating blanks around each name
/// (`--stages "reminder-1h, intro-followup"`). An unknown name is a usage error (exit 2)
/// listing the valid ones.
#[derive(Clone, Copy, Debug)]
struct StageParser;

impl TypedValueParser for StageParser {
    type Value = Stage;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Stage, clap::Error> {
        let trimmed = value
            .to_str()
            .map_or(value, |v| std::ffi::OsStr::new(v.trim()));
        clap::builder::EnumValueParser::<Stage>::new().parse_ref(cmd, arg, trimmed)
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        use clap::ValueEnum;
        Some(Box::new(
            Stage::value_variants()
                .iter()
                .filter_map(ValueEnum::to_possible_value),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("journeyctl").chain(args.iter().copied()))
    }

    #[test]
    fn every_stage_command_maps_to_its_stage() {
        for stage in Stage::ALL {
            let cli = parse(&[stage.command()]).unwrap();
            assert_eq!(cli.command.as_stage(), Some(stage), "{}", stage.command());
            assert!(cli.command.stage_command().is_some());
        }
    }

    #[test]
    fn commands_that_are_not_stages_map_to_none() {
        for args in [
            &["migrate"][..],
            &["followups"],
            &["status"],
            &["audit"],
            &["reconcile"],
            &["webhook"],
        ] {
            assert_eq!(parse(args).unwrap().command.as_stage(), None, "{args:?}");
        }
    }

    fn stages_of(raw: &str) -> Vec<Stage> {
        match parse(&["followups", "--stages", raw]).unwrap().command {
            Command::Followups(a) => a.stages,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stages_accepts_command_names_ids_and_blanks() {
        assert_eq!(
            stages_of("reminder-1h,intro-followup"),
            [Stage::Reminder1h, Stage::IntroFollowup]
        );
        assert_eq!(
            stages_of("reminder_24h, cancellation_recovery"),
            [Stage::Reminder24h, Stage::CancellationRecovery]
        );
        for stage in Stage::ALL {
            assert_eq!(stages_of(stage.command()), [stage]);
            assert_eq!(stages_of(stage.as_str()), [stage]);
        }
    }

    #[test]
    fn an_unknown_stage_is_a_usage_error_naming_the_valid_ones() {
        let err = parse(&["followups", "--stages", "reminder-2h"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
        assert_eq!(err.exit_code(), 2);
        let text = err.render().to_string();
        assert!(text.contains("reminder-2h"), "{text}");
        for stage in Stage::ALL {
            assert!(text.contains(stage.command()), "{text}");
        }
    }
}
