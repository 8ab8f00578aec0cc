//! The one place that reads configuration. clap has already merged flags and environment
//! variables (`cli::SettingsArgs`, listed in the README); this module validates them into typed settings, wraps secrets, and
//! names the variable in every error. Nothing below this module calls `std::env::var`.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::cli::{GlobalArgs, SettingsArgs};
use crate::clock::Clock;
use crate::domain::quiet_hours::QuietHours;
use crate::domain::{EmailAddress, PhoneNumber};
use crate::secret::{redact_url, Secret};

/// A configuration or usage problem: the run stops with exit status 2 and this message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    pub fn new(msg: impl Into<String>) -> ConfigError {
        ConfigError(msg.into())
    }
}

/// Where email goes.
#[derive(Clone, Debug)]
pub enum EmailTransport {
    /// `SMTP_URL`; the URL may carry a password, so it is kept as a secret. `ca_file`:
    /// `SMTP_CA_FILE`, a PEM bundle trusted for the relay's certificate besides the public
    /// and the system roots.
    Smtp {
        url: Secret,
        ca_file: Option<PathBuf>,
    },
    /// `EMAIL_OUTBOX_DIR`: one `.eml` file per message.
    Outbox { dir: PathBuf },
}

#[derive(Clone, Debug)]
pub struct EmailSettings {
    pub transport: Option<EmailTransport>,
    /// Sender mailbox as given (`Name <addr>` or `addr`), validated at start-up.
    pub from: String,
    pub reply_to: Option<String>,
}

impl EmailSettings {
    /// The transport, or the exit-2 error a real run that must send email gets without one.
    pub fn require_transport(&self) -> Result<&EmailTransport, ConfigError> {
        self.transport.as_ref().ok_or_else(|| {
            ConfigError::new(
                "no email transport configured: set SMTP_URL (or --smtp-url) to send through a \
                 relay, or EMAIL_OUTBOX_DIR (or --email-outbox-dir) to write .eml files",
            )
        })
    }
}

#[derive(Clone, Debug)]
pub enum TwilioSender {
    From(PhoneNumber),
    MessagingService(String),
}

#[derive(Clone, Debug)]
pub struct TwilioSettings {
    pub account_sid: String,
    pub auth_token: Secret,
    pub sender: TwilioSender,
    /// Without trailing slash, e.g. `https://api.twilio.com`.
    pub api_base: String,
    /// Deadline of one request to Twilio (`TWILIO_TIMEOUT`, default 30 s).
    pub timeout: std::time::Duration,
}

/// Where SMS goes. `None` in [`Settings::sms`] means SMS is off.
#[derive(Clone, Debug)]
pub enum SmsTransport {
    Twilio(TwilioSettings),
    Outbox { dir: PathBuf },
}

/// Cal.com's API v2, for `reconcile` (`CAL_API_KEY`, `CAL_API_BASE`, `CAL_ORG_ID`,
/// `CAL_API_TIMEOUT`).
#[derive(Clone, Debug)]
pub struct CalApiSettings {
    pub key: Secret,
    /// Without trailing slash, e.g. `https://api.cal.com`.
    pub base: String,
    /// Read the organisation's bookings (all members) instead of the key owner's.
    pub org_id: Option<u64>,
    /// Deadline of one request.
    pub timeout: std::time::Duration,
}

/// Everything a run needs besides the database.
#[derive(Clone, Debug)]
pub struct Settings {
    pub email: EmailSettings,
    pub sms: Option<SmsTransport>,
    pub cal_webhook_secret: Option<Secret>,
    /// Without trailing slash.
    pub cal_origin: String,
    /// Without trailing slash.
    pub public_base_url: Option<String>,
    pub qa_notify_email: Option<EmailAddress>,
    pub timezone: Tz,
    pub templates_dir: Option<PathBuf>,
    /// `None`: CAL_API_KEY is not set, reconcile is off.
    pub cal_api: Option<CalApiSettings>,
    /// `PUBLIC_CALLBACK_BASE`: where `serve` is reachable from outside (unsubscribe links,
    /// Twilio status callbacks).
    pub public_callback_base: Option<url::Url>,
    /// `UNSUBSCRIBE_SECRET`: the key of unsubscribe tokens (`stages::optout`).
    pub unsubscribe_secret: Option<Secret>,
    /// `SMS_QUIET_START`..`SMS_QUIET_END` in [`Settings::timezone`].
    pub sms_quiet_hours: QuietHours,
}

pub const DEFAULT_EMAIL_FROM: &str = "journeyctl <journeyctl@localhost>";

/// Deadline of one request to Twilio or Cal.com when none is configured: long enough for a
/// slow API answer, short enough that a hung connection does not hold a run for minutes.
const DEFAULT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The longest request deadline accepted: beyond five minutes a run would outlast its cron slot.
const MAX_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// The shortest `UNSUBSCRIBE_SECRET` accepted: 32 characters, e.g. 128 bits as hex.
const MIN_UNSUBSCRIBE_SECRET_CHARS: usize = 32;

impl Settings {
    /// Validates every setting, in a fixed order (the first problem found is the one named).
    pub fn from_args(a: &SettingsArgs) -> Result<Settings, ConfigError> {
        let email = email_settings(a)?;
        let sms = sms_transport(a)?;
        let cal_origin = match nonempty(&a.cal_origin) {
            Some(o) => check_base_url("CAL_ORIGIN", o)?,
            None => "https://cal.com".to_string(),
        };
        let public_base_url = match nonempty(&a.public_base_url) {
            Some(o) => Some(check_base_url("PUBLIC_BASE_URL", o)?),
            None => None,
        };
        let qa_notify_email = qa_notify_email(a)?;
        let timezone = timezone(a)?;
        let templates_dir = templates_dir(a)?;
        Ok(Settings {
            email,
            sms,
            cal_webhook_secret: nonempty(&a.cal_webhook_secret).map(Secret::new),
            cal_origin,
            public_base_url,
            qa_notify_email,
            timezone,
            templates_dir,
            cal_api: cal_api(a)?,
            public_callback_base: callback_base(a)?,
            sms_quiet_hours: quiet_hours(a)?,
            unsubscribe_secret: unsubscribe_secret(a)?,
        })
    }
}

/// `SMTP_URL` or `EMAIL_OUTBOX_DIR`, `EMAIL_FROM` (required with a relay), `EMAIL_REPLY_TO`.
fn email_settings(a: &SettingsArgs) -> Result<EmailSettings, ConfigError> {
    let transport = match (nonempty(&a.smtp_url), &a.email_outbox_dir) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                "both SMTP_URL and EMAIL_OUTBOX_DIR are set: choose one email transport",
            ))
        }
        (Some(url), None) => {
            check_smtp_url(url)?;
            Some(EmailTransport::Smtp {
                url: Secret::new(url),
                ca_file: a.smtp_ca_file.clone(),
            })
        }
        (None, Some(dir)) => Some(EmailTransport::Outbox { dir: dir.clone() }),
        (None, None) => None,
    };
    let from = match nonempty(&a.email_from) {
        Some(f) => {
            check_mailbox("EMAIL_FROM", f)?;
            f.to_string()
        }
        None if matches!(transport, Some(EmailTransport::Smtp { .. })) => {
            return Err(ConfigError::new(
                "EMAIL_FROM is not set: a relay needs a real sender mailbox, e.g. \
                 EMAIL_FROM='Praxisteam <termine@example.de>'",
            ))
        }
        None => DEFAULT_EMAIL_FROM.to_string(),
    };
    let reply_to = match nonempty(&a.email_reply_to) {
        Some(r) => {
            check_mailbox("EMAIL_REPLY_TO", r)?;
            Some(r.to_string())
        }
        None => None,
    };
    Ok(EmailSettings {
        transport,
        from,
        reply_to,
    })
}

fn qa_notify_email(a: &SettingsArgs) -> Result<Option<EmailAddress>, ConfigError> {
    nonempty(&a.qa_notify_email)
        .map(|e| {
            EmailAddress::parse(e)
                .map_err(|why| ConfigError::new(format!("QA_NOTIFY_EMAIL is not usable: {why}")))
        })
        .transpose()
}

/// `JOURNEY_TIMEZONE`, Europe/Berlin by default.
fn timezone(a: &SettingsArgs) -> Result<Tz, ConfigError> {
    match nonempty(&a.timezone) {
        Some(tz) => tz.parse::<Tz>().map_err(|_| {
            ConfigError::new(format!(
                "JOURNEY_TIMEZONE={tz:?} is not an IANA time zone name (e.g. Europe/Berlin)"
            ))
        }),
        None => Ok(chrono_tz::Europe::Berlin),
    }
}

fn templates_dir(a: &SettingsArgs) -> Result<Option<PathBuf>, ConfigError> {
    if let Some(dir) = &a.templates_dir {
        if !dir.is_dir() {
            return Err(ConfigError::new(format!(
                "JOURNEY_TEMPLATES_DIR={} is not a directory",
                dir.display()
            )));
        }
    }
    Ok(a.templates_dir.clone())
}

fn unsubscribe_secret(a: &SettingsArgs) -> Result<Option<Secret>, ConfigError> {
    match nonempty(&a.unsubscribe_secret) {
        Some(s) if s.len() < MIN_UNSUBSCRIBE_SECRET_CHARS => Err(ConfigError::new(
            "UNSUBSCRIBE_SECRET is too short: use at least 32 random characters, \
             e.g. the output of `openssl rand -hex 32`",
        )),
        Some(s) => Ok(Some(Secret::new(s))),
        None => Ok(None),
    }
}

/// A request deadline (`TWILIO_TIMEOUT`, `CAL_API_TIMEOUT`): more than 0, at most
/// [`MAX_REQUEST_TIMEOUT`], [`DEFAULT_REQUEST_TIMEOUT`] when unset.
fn request_timeout(var: &str, raw: Option<&str>) -> Result<std::time::Duration, ConfigError> {
    let Some(t) = raw else {
        return Ok(DEFAULT_REQUEST_TIMEOUT);
    };
    let d = humantime::parse_duration(t).map_err(|e| {
        ConfigError::new(format!("{var} {t:?} is not a duration ({e}); use e.g. 30s"))
    })?;
    if d.is_zero() || d > MAX_REQUEST_TIMEOUT {
        return Err(ConfigError::new(format!(
            "{var} {t:?} is out of range: more than 0, at most 5m"
        )));
    }
    Ok(d)
}

fn cal_api(a: &SettingsArgs) -> Result<Option<CalApiSettings>, ConfigError> {
    let base = match nonempty(&a.cal_api_base) {
        Some(b) => check_base_url("CAL_API_BASE", b)?,
        None => "https://api.cal.com".to_string(),
    };
    let org_id = match nonempty(&a.cal_org_id) {
        Some(raw) => Some(raw.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
            ConfigError::new(format!(
                "CAL_ORG_ID={raw:?} is not an organisation id (a positive number, as in \
                 Cal.com's organisation settings)"
            ))
        })?),
        None => None,
    };
    let timeout = request_timeout("CAL_API_TIMEOUT", nonempty(&a.cal_api_timeout))?;
    Ok(nonempty(&a.cal_api_key).map(|key| CalApiSettings {
        key: Secret::new(key),
        base,
        org_id,
        timeout,
    }))
}

fn sms_transport(a: &SettingsArgs) -> Result<Option<SmsTransport>, ConfigError> {
    let sid = nonempty(&a.twilio_account_sid);
    let token = nonempty(&a.twilio_auth_token);
    let from = nonempty(&a.twilio_from);
    let service = nonempty(&a.twilio_messaging_service_sid);
    let any_twilio = sid.is_some() || token.is_some() || from.is_some() || service.is_some();
    if any_twilio && a.sms_outbox_dir.is_some() {
        return Err(ConfigError::new(
            "both Twilio settings and SMS_OUTBOX_DIR are set: choose one SMS transport",
        ));
    }
    if let Some(dir) = &a.sms_outbox_dir {
        return Ok(Some(SmsTransport::Outbox { dir: dir.clone() }));
    }
    if !any_twilio {
        return Ok(None);
    }
    let sid = sid.ok_or_else(|| {
        ConfigError::new("TWILIO_ACCOUNT_SID is not set, but other TWILIO_* settings are")
    })?;
    let token = token.ok_or_else(|| {
        ConfigError::new("TWILIO_AUTH_TOKEN is not set, but other TWILIO_* settings are")
    })?;
    let sender = match (from, service) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                "both TWILIO_FROM and TWILIO_MESSAGING_SERVICE_SID are set: choose one sender",
            ))
        }
        (Some(f), None) => TwilioSender::From(PhoneNumber::parse(f).map_err(|why| {
            ConfigError::new(format!("TWILIO_FROM is not an E.164 number: {why}"))
        })?),
        (None, Some(s)) => TwilioSender::MessagingService(s.to_string()),
        (None, None) => {
            return Err(ConfigError::new(
                "Twilio needs a sender: set TWILIO_FROM or TWILIO_MESSAGING_SERVICE_SID",
            ))
        }
    };
    let api_base = match nonempty(&a.twilio_api_base) {
        Some(b) => check_base_url("TWILIO_API_BASE", b)?,
        None => "https://api.twilio.com".to_string(),
    };
    let timeout = request_timeout("TWILIO_TIMEOUT", nonempty(&a.twilio_timeout))?;
    Ok(Some(SmsTransport::Twilio(TwilioSettings {
        account_sid: sid.to_string(),
        auth_token: Secret::new(token),
        sender,
        api_base,
        timeout,
    })))
}

/// `PUBLIC_CALLBACK_BASE`: an http(s) URL without query or fragment (a path prefix is kept,
/// for a proxy that mounts `serve` below one).
fn callback_base(a: &SettingsArgs) -> Result<Option<url::Url>, ConfigError> {
    let Some(raw) = nonempty(&a.public_callback_base) else {
        return Ok(None);
    };
    let base = check_base_url("PUBLIC_CALLBACK_BASE", raw)?;
    let u = url::Url::parse(&base)
        .map_err(|e| ConfigError::new(format!("PUBLIC_CALLBACK_BASE={raw:?} is not a URL: {e}")))?;
    if u.query().is_some() || u.fragment().is_some() || u.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::new(format!(
            "PUBLIC_CALLBACK_BASE={raw:?} must be the public base of `serve`, with a host and \
             no query or fragment, e.g. https://journey.example.de"
        )));
    }
    if u.host_str().is_some_and(|h| h.contains('_')) {
        return Err(ConfigError::new(format!(
            "PUBLIC_CALLBACK_BASE={raw:?}: Twilio refuses callback hosts with an underscore; \
             use a host name without one"
        )));
    }
    Ok(Some(u))
}

/// `SMS_QUIET_START` / `SMS_QUIET_END` (`HH:MM`, default 21:00 and 08:00).
fn quiet_hours(a: &SettingsArgs) -> Result<QuietHours, ConfigError> {
    let default = QuietHours::default();
    let time = |var: &str, raw: Option<&str>, default| match raw {
        None => Ok(default),
        Some(r) => QuietHours::parse_time(r).ok_or_else(|| {
            ConfigError::new(format!(
                "{var}={r:?} is not a time of day; use HH:MM, e.g. 21:00 (equal start and end: \
                 no quiet hours)"
            ))
        }),
    };
    Ok(QuietHours {
        start: time(
            "SMS_QUIET_START",
            nonempty(&a.sms_quiet_start),
            default.start,
        )?,
        end: time("SMS_QUIET_END", nonempty(&a.sms_quiet_end), default.end)?,
    })
}

/// The URL Twilio posts a delivery's status to: `{PUBLIC_CALLBACK_BASE}/api/public/twilio/status?d=<id>`.
pub fn status_callback_url(base: &url::Url, delivery_id: uuid::Uuid) -> String {
    format!(
        "{}{}?d={delivery_id}",
        base.as_str().trim_end_matches('/'),
        TWILIO_STATUS_PATH
    )
}

/// The route of Twilio's status callbacks on `serve`.
pub const TWILIO_STATUS_PATH: &str = "/api/public/twilio/status";

fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn check_smtp_url(raw: &str) -> Result<(), ConfigError> {
    let u = url::Url::parse(raw).map_err(|e| {
        ConfigError::new(format!(
            "SMTP_URL ({}) is not a URL: {e}; expected smtps://user:pass@host:465 or \
             smtp://host:port",
            redact_url(raw)
        ))
    })?;
    if u.scheme() != "smtp" && u.scheme() != "smtps" {
        return Err(ConfigError::new(format!(
            "SMTP_URL must start with smtp:// or smtps://, not {}://",
            u.scheme()
        )));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::new("SMTP_URL has no host"));
    }
    Ok(())
}

fn check_mailbox(var: &str, raw: &str) -> Result<(), ConfigError> {
    raw.parse::<lettre::message::Mailbox>()
        .map(|_| ())
        .map_err(|e| {
            ConfigError::new(format!(
                "{var}={raw:?} is not a mailbox ({e}); use addr@example.de or \"Name <addr@example.de>\""
            ))
        })
}

fn check_base_url(var: &str, raw: &str) -> Result<String, ConfigError> {
    let u = url::Url::parse(raw)
        .map_err(|e| ConfigError::new(format!("{var}={raw:?} is not a URL: {e}")))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(ConfigError::new(format!(
            "{var} must be an http(s) URL, got {raw:?}"
        )));
    }
    Ok(raw.trim_end_matches('/').to_string())
}

/// Parses `--now` (RFC 3339) into the run's clock; without it, the system time read once.
pub fn clock_from(now: Option<&str>) -> Result<Clock, ConfigError> {
    match now {
        None => Ok(Clock::system()),
        Some(s) => DateTime::parse_from_rfc3339(s.trim())
            .map(|t| Clock::fixed(t.with_timezone(&Utc)))
            .map_err(|e| {
                ConfigError::new(format!(
                    "--now {s:?} is not an RFC 3339 instant ({e}); e.g. 2026-03-10T14:00:00Z"
                ))
            }),
    }
}

/// The database URL, required by every command that touches PostgreSQL.
pub fn database_url(g: &GlobalArgs) -> Result<Secret, ConfigError> {
    nonempty(&g.database_url).map(Secret::new).ok_or_else(|| {
        ConfigError::new(
            "DATABASE_URL is not set: give the PostgreSQL URL in DATABASE_URL or --database-url \
                 (e.g. postgres://postgres@127.0.0.1:5432/journey)",
        )
    })
}

/// Parses a window edge: `50m`, `23h`, `3d`, optionally signed (`-30m`).
pub fn parse_offset(flag: &str, raw: &str) -> Result<chrono::Duration, ConfigError> {
    let s = raw.trim();
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let d = humantime::parse_duration(body).map_err(|e| {
        ConfigError::new(format!(
            "{flag} {raw:?} is not a duration ({e}); use e.g. 50m, 23h or 3d"
        ))
    })?;
    let too_large = || {
        ConfigError::new(format!(
            "{flag} {raw:?} is too large: at most {MAX_OFFSET_DAYS}d (100 years)"
        ))
    };
    let d = chrono::Duration::from_std(d).map_err(|_| too_large())?;
    if d > chrono::Duration::days(MAX_OFFSET_DAYS) {
        return Err(too_large());
    }
    Ok(if neg { -d } else { d })
}

/// The longest duration any flag takes. Far beyond every real window or period, and far
/// inside what date arithmetic can hold, so `now ± offset` can never overflow.
pub const MAX_OFFSET_DAYS: i64 = 36_500;

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> SettingsArgs {
        SettingsArgs::default()
    }

    #[test]
    fn smtp_without_from_names_the_variable() {
        let mut a = args();
        a.smtp_url = Some("smtp://127.0.0.1:2525".into());
        let e = Settings::from_args(&a).unwrap_err();
        assert!(e.to_string().contains("EMAIL_FROM"), "{e}");
    }

    #[test]
    fn debug_of_settings_hides_tokens_and_passwords() {
        let mut a = args();
        a.smtp_url = Some("smtps://mailer:sup3rsecret@smtp.example:465".into());
        a.email_from = Some("Team <team@example.de>".into());
        a.twilio_account_sid = Some("AC123".into());
        a.twilio_auth_token = Some("tok3nvalue".into());
        a.twilio_from = Some("+4930123456".into());
        a.cal_webhook_secret = Some("whsec_abc".into());
        let s = Settings::from_args(&a).unwrap();
        let dbg = format!("{s:?}");
        for secret in ["sup3rsecret", "tok3nvalue", "whsec_abc"] {
            assert!(!dbg.contains(secret), "{secret} leaked in {dbg}");
        }
    }

    #[test]
    fn bad_timezone_is_named() {
        let mut a = args();
        a.timezone = Some("Mars/Olympus".into());
        let e = Settings::from_args(&a).unwrap_err();
        assert!(e.to_string().contains("JOURNEY_TIMEZONE"));
    }

    #[test]
    fn half_configured_twilio_is_an_error() {
        let mut a = args();
        a.twilio_account_sid = Some("AC1".into());
        let e = Settings::from_args(&a).unwrap_err();
        assert!(e.to_string().contains("TWILIO_AUTH_TOKEN"));
    }

    #[test]
    fn cal_api_settings_hide_the_key_and_check_the_org_id_and_timeout() {
        let mut a = args();
        assert!(Settings::from_args(&a).unwrap().cal_api.is_none());
        a.cal_api_key = Some("cal_live_s3cr3tkey".into());
        a.cal_api_base = Some("https://cal.example/".into());
        a.cal_org_id = Some("77".into());
        let s = Settings::from_args(&a).unwrap();
        let api = s.cal_api.as_ref().unwrap();
        assert_eq!(api.base, "https://cal.example");
        assert_eq!(api.org_id, Some(77));
        assert_eq!(api.timeout, std::time::Duration::from_secs(30));
        assert!(!format!("{s:?}").contains("s3cr3t"));
        a.cal_org_id = Some("acme".into());
        let e = Settings::from_args(&a).unwrap_err();
        assert!(e.to_string().contains("CAL_ORG_ID"), "{e}");
        a.cal_org_id = None;
        a.cal_api_timeout = Some("0s".into());
        let e = Settings::from_args(&a).unwrap_err();
        assert!(e.to_string().contains("CAL_API_TIMEOUT"), "{e}");
    }

    #[test]
    fn unsubscribe_settings_are_checked_and_the_secret_never_printed() {
        let mut a = args();
        a.unsubscribe_secret = Some("kurz1".into());
        let e = Settings::from_args(&a).unwrap_err().to_string();
        assert!(
            e.contains("UNSUBSCRIBE_SECRET") && !e.contains("kurz1"),
            "{e}"
        );
        a.unsubscribe_secret = Some("0123456789abcdef0123456789abcdef-geheim".into());
        for bad in [
            "journey.example.de",
            "https://journey.example.de/?x=1",
            "ftp://x.de",
        ] {
            a.public_callback_base = Some(bad.into());
            let e = Settings::from_args(&a).unwrap_err().to_string();
            assert!(e.contains("PUBLIC_CALLBACK_BASE"), "{bad}: {e}");
        }
        a.public_callback_base = Some("https://journey.example.de/".into());
        let s = Settings::from_args(&a).unwrap();
        assert!(!format!("{s:?}").contains("geheim"));
        assert_eq!(
            s.public_callback_base.unwrap().as_str(),
            "https://journey.example.de/"
        );
    }

    #[test]
    fn quiet_hours_and_callback_base_are_checked_and_named() {
        let s = Settings::from_args(&args()).unwrap();
        assert_eq!(s.sms_quiet_hours, QuietHours::default());
        assert!(s.public_callback_base.is_none());
        let mut a = args();
        a.sms_quiet_start = Some("9pm".into());
        let e = Settings::from_args(&a).unwrap_err();
        assert!(e.to_string().contains("SMS_QUIET_START"), "{e}");
        let mut a = args();
        a.public_callback_base = Some("ftp://x".into());
        let e = Settings::from_args(&a).unwrap_err();
        assert!(e.to_string().contains("PUBLIC_CALLBACK_BASE"), "{e}");
        let mut a = args();
        a.public_callback_base = Some("https://journey.example.de/hooks/".into());
        let s = Settings::from_args(&a).unwrap();
        let id = uuid::Uuid::nil();
        assert_eq!(
            status_callback_url(s.public_callback_base.as_ref().unwrap(), id),
            format!("https://journey.example.de/hooks/api/public/twilio/status?d={id}")
        );
    }

    #[test]
    fn offsets_parse_with_sign() {
        assert_eq!(
            parse_offset("--window-start", "50m").unwrap(),
            chrono::Duration::minutes(50)
        );
        assert_eq!(
            parse_offset("--window-start", "-3d").unwrap(),
            chrono::Duration::days(-3)
        );
        assert!(parse_offset("--window-end", "soon").is_err());
    }
}
