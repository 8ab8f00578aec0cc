//! journeyctl: the post-booking journey of Cal.com therapy sessions.
//!
//! `run` dispatches one parsed command line to its command; each command returns an
//! [`ExitStatus`]. Modules depend inward: cli/config → stages/webhook → db/notify/templates →
//! domain.

pub mod cli;
pub mod clock;
mod commands;
pub mod config;
pub mod db;
pub mod domain;
pub mod secret;
pub mod webhook;

use std::io::Write;

use cli::{Cli, Command, GlobalArgs};

/// Exit status of a command (SPEC §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitStatus {
    /// All good, nothing due, or another run held the lock.
    Ok = 0,
    /// A delivery failed or an error was counted.
    Failed = 1,
    /// Usage or configuration error, or the database could not be reached.
    Config = 2,
}

impl ExitStatus {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// Sets up env_logger on stderr: warnings by default, `-v` info, `-vv` debug, `-q` errors;
/// `RUST_LOG` overrides.
pub fn init_logging(g: &GlobalArgs) {
    let level = if g.quiet {
        "error"
    } else {
        match g.verbose {
            0 => "warn,journeyctl=info",
            1 => "info",
            _ => "debug,tokio_postgres=info,hyper=info",
        }
    };
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format(|buf, record| {
            writeln!(
                buf,
                "{} {:<5} {}",
                chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
                record.level(),
                record.args()
            )
        })
        .target(env_logger::Target::Stderr)
        .try_init();
}

/// Runs one command line to completion and maps every failure to its exit status.
pub async fn run(cli: Cli) -> ExitStatus {
    match dispatch(cli).await {
        Ok(status) => status,
        Err(err) => {
            let status = status_of(&err);
            log::error!("{err:#}");
            status
        }
    }
}

/// Configuration errors and an unreachable database exit 2; everything else 1.
pub fn status_of(err: &anyhow::Error) -> ExitStatus {
    if err
        .chain()
        .any(|c| c.is::<config::ConfigError>() || c.is::<db::Unreachable>())
    {
        ExitStatus::Config
    } else {
        ExitStatus::Failed
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitStatus> {
    let _clock = config::clock_from(cli.global.now.as_deref())?;
    let _settings = config::Settings::from_args(&cli.global.settings)?;
    match cli.command {
        Command::Migrate => commands::migrate(&cli.global).await,
        Command::ConfirmationRecovery(_) | Command::Reminder24h(_) | Command::Reminder1h(_) => {
            anyhow::bail!("not yet")
        }
    }
}

/// Installs ring as the process-wide rustls crypto provider, once. Test builds also link
/// aws-lc (through the test SMTP server), and with two providers rustls refuses to pick one.
pub fn ensure_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
