//! journeyctl: the post-booking journey of Cal.com therapy sessions.
//!
//! `run` dispatches one parsed command line to its command; each command returns an
//! [`ExitStatus`]. Modules depend inward: cli/config → stages/webhook → db/notify/templates →
//! domain.

pub(crate) mod calapi;
pub mod cli;
pub mod clock;
mod commands;
pub mod config;
pub mod db;
pub mod domain;
pub(crate) mod exit;
pub(crate) mod ics;
pub(crate) mod links;
pub(crate) mod metrics;
pub mod notify;
pub(crate) mod output;
pub mod pgtemp;
pub(crate) mod preview;
pub mod secret;
pub mod stages;
pub mod templates;
pub(crate) mod tls;
pub mod webhook;

use std::io::Write;

use cli::{Cli, Command, GlobalArgs};
pub use exit::ExitStatus;
pub use tls::ensure_tls_provider;

/// Sets up env_logger on stderr: warnings by default, `-v` info, `-vv` debug, `-q` errors;
/// `RUST_LOG` overrides.
///
/// Debug and trace lines of other crates are dropped at every setting: they print what they
/// handle (handlebars its render context, tokio-postgres its query parameters, HTTP clients
/// their request bodies), which holds patients' names, emails and phone numbers. Our own
/// debug lines name bookings by id and recipients masked.
pub fn init_logging(g: &GlobalArgs) {
    let level = if g.quiet {
        "error"
    } else {
        match g.verbose {
            0 => "warn,journeyctl=info",
            1 => "info",
            _ => "debug",
        }
    };
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format(|buf, record| {
            if record.level() > log::Level::Info && !is_ours(record.target()) {
                return Ok(());
            }
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

/// Whether a log target is this crate's own code.
fn is_ours(target: &str) -> bool {
    target == "journeyctl" || target.starts_with("journeyctl::")
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
    let clock = config::clock_from(cli.global.now.as_deref())?;
    let settings = config::Settings::from_args(&cli.global.settings)?;
    let g = &cli.global;
    match &cli.command {
        Command::Migrate => commands::migrate(g).await,
        Command::Stage(c) => {
            let (stage, a) = c.stage();
            let window =
                stages::resolve_window(stage, a.window_start.as_deref(), a.window_end.as_deref())?;
            let runs = vec![commands::StageRun {
                stage,
                opts: stage_options(a.dry_run, a.limit, window, a.no_lock, a.concurrency),
            }];
            let deadline = run_deadline(&a.run_deadline)?;
            let metrics = a.metrics_file.as_deref();
            let cmd = commands::StageCommand {
                name: stage.command(),
                stages: runs,
                metrics_file: metrics,
                deadline,
                reconcile: None,
            };
            commands::run_stages(g, settings, clock, cmd).await
        }
        Command::Webhook(a) => match a.replay {
            Some(receipt) => commands::replay(g, settings, clock, receipt).await,
            None => {
                let (file, signature) = (a.file.clone(), a.signature.clone());
                commands::webhook(g, settings, clock, file, signature, a.no_verify).await
            }
        },
        Command::Serve(a) => {
            let fixed = g.now.is_some();
            commands::serve(g, settings, clock, fixed, a.listen, &a.drain_timeout).await
        }
        Command::Preview(a) => commands::preview(&settings, &a.out),
        Command::Demo(a) => commands::demo(g, a.out.clone()).await,
        Command::Status(a) => commands::status(g, clock, &a.since).await,
        Command::Audit(a) => commands::audit(g, clock, a.days).await,
        Command::Prune(a) => commands::prune(g, clock, &a.retention).await,
        Command::Resolve(a) => {
            commands::resolve(g, clock, a.id, a.resolution == cli::Resolution::Sent).await
        }
        Command::Suppress(a) => {
            let channel = match a.channel {
                cli::SuppressChannel::Email => domain::Channel::Email,
                cli::SuppressChannel::Sms => domain::Channel::Sms,
            };
            commands::suppress(g, &a.address, channel, a.remove).await
        }
        Command::Followups(a) => followups(g, settings, clock, a).await,
        Command::Reconcile(a) => {
            let opts = commands::ReconcileOptions::new(a.dry_run, a.since.as_deref(), a.page_size)?;
            let deadline = run_deadline(&a.run_deadline)?;
            commands::reconcile(g, settings, clock, opts, deadline).await
        }
    }
}

/// The options of one stage run from its flags.
fn stage_options(
    dry_run: bool,
    limit: Option<u32>,
    window: (chrono::Duration, chrono::Duration),
    no_lock: bool,
    concurrency: usize,
) -> stages::StageOptions {
    stages::StageOptions {
        dry_run,
        limit,
        window,
        lock: !no_lock,
        concurrency,
    }
}

/// `journeyctl followups`: every selected stage in order with its default window, after
/// reconcile when CAL_API_KEY is set (see `commands::reconcile`).
async fn followups(
    g: &GlobalArgs,
    settings: config::Settings,
    clock: clock::Clock,
    a: &cli::FollowupsArgs,
) -> anyhow::Result<ExitStatus> {
    let selected = &a.stages;
    let runs = domain::Stage::ALL
        .into_iter()
        .filter(|s| selected.is_empty() || selected.contains(s))
        .map(|stage| commands::StageRun {
            stage,
            opts: stage_options(
                a.dry_run,
                a.limit,
                stage.default_window(),
                a.no_lock,
                a.concurrency,
            ),
        })
        .collect();
    let reconcile = match (&settings.cal_api, a.no_reconcile) {
        (Some(_), false) => Some(commands::ReconcileOptions::new(
            a.dry_run,
            None,
            calapi::MAX_TAKE,
        )?),
        _ => None,
    };
    let cmd = commands::StageCommand {
        name: "followups",
        stages: runs,
        metrics_file: a.metrics_file.as_deref(),
        deadline: run_deadline(&a.run_deadline)?,
        reconcile,
    };
    commands::run_stages(g, settings, clock, cmd).await
}

/// `--run-deadline`: a positive duration.
fn run_deadline(raw: &str) -> anyhow::Result<std::time::Duration> {
    let d = config::parse_offset("--run-deadline", raw)?;
    d.to_std().ok().filter(|d| !d.is_zero()).ok_or_else(|| {
        config::ConfigError::new(format!(
            "--run-deadline {raw:?} must be a positive duration (e.g. 3m)"
        ))
        .into()
    })
}
