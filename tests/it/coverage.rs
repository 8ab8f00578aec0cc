//! Coverage of the shipped schedule: a month of bookings on real slot grids, the schedule of
//! `crontab.example` on a simulated clock, the real stages in process. Every booking must get
//! every due message exactly once — across the DST change — and a schedule slower than a
//! window must be seen to lose bookings.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use journeyctl::cli::SettingsArgs;
use journeyctl::clock::Clock;
use journeyctl::config::Settings;
use journeyctl::domain::quiet_hours::QuietHours;
use journeyctl::domain::{Counter, Counters, Stage};
use journeyctl::notify::Senders;
use journeyctl::stages::{run_stage, Journey, StageOptions};
use journeyctl::templates::Templates;

use crate::harness::TestDb;
use crate::support::berlin;

/// Minutes between runs of each stage, read from crontab.example (`*/N * * * * … <stage>`).
fn shipped_cadences() -> BTreeMap<Stage, i64> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crontab.example")).unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(step) = fields.first().and_then(|f| f.strip_prefix("*/")) else {
            continue;
        };
        let Some(stage) = fields.last().and_then(|s| Stage::parse(s)) else {
            continue;
        };
        out.insert(stage, step.parse::<i64>().unwrap());
    }
    out
}

#[test]
fn the_shipped_schedules_agree_and_no_cadence_is_wider_than_its_window() {
    let cron = shipped_cadences();
    assert_eq!(
        cron.len(),
        6,
        "every stage is scheduled in crontab.example: {cron:?}"
    );
    for (stage, minutes) in &cron {
        let (a, b) = stage.default_window();
        assert!(
            Duration::minutes(*minutes) <= b - a,
            "{stage} runs every {minutes} min but its window is {} min",
            (b - a).num_minutes()
        );
        assert_eq!(
            stage.cadence().num_minutes(),
            *minutes,
            "`status` must expect the shipped cadence of {stage}"
        );
    }
    // systemd: each service lists its stages, each timer its calendar step.
    for (unit, minutes) in [("journeyctl-5min", 5), ("journeyctl-30min", 30)] {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/");
        let service = std::fs::read_to_string(format!("{dir}{unit}.service")).unwrap();
        let timer = std::fs::read_to_string(format!("{dir}{unit}.timer")).unwrap();
        assert!(
            timer.contains(&format!("OnCalendar=*:0/{minutes}")),
            "{unit}.timer"
        );
        let stages = service
            .split("--stages ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        for s in stages.split(',') {
            assert_eq!(
                cron[&Stage::parse(s).unwrap()],
                minutes,
                "{s} in {unit} vs crontab.example"
            );
        }
    }
}

struct Sim {
    db: TestDb,
    journey: Journey,
    outbox: tempfile::TempDir,
}

async fn sim() -> Sim {
    let _ = env_logger::builder()
        .is_test(true)
        .filter_level(log::LevelFilter::Error)
        .try_init();
    let db = TestDb::migrated().await;
    let outbox = tempfile::tempdir().unwrap();
    let settings = Settings::from_args(&SettingsArgs {
        email_outbox_dir: Some(outbox.path().to_path_buf()),
        sms_outbox_dir: Some(outbox.path().to_path_buf()),
        email_from: Some("Praxisteam <termine@praxis.example>".into()),
        public_base_url: Some("https://therapie.example".into()),
        public_callback_base: Some("https://journey.therapie.example".into()),
        unsubscribe_secret: Some(crate::transports::UNSUBSCRIBE_SECRET.into()),
        ..Default::default()
    })
    .unwrap();
    let app = journeyctl::db::ledger::process_application_name();
    let journey = Journey {
        db: journeyctl::db::connect_as(&journeyctl::secret::Secret::new(&db.url), 16, &app)
            .await
            .unwrap(),
        senders: Senders::from_settings(&settings, false).unwrap(),
        templates: Arc::new(Templates::load(None, settings.timezone).unwrap()),
        settings: Arc::new(settings),
        clock: Clock::fixed(Utc::now()),
        run_id: uuid::Uuid::new_v4(),
        application_name: app,
        message_id_domain: "praxis.example".into(),
        control: Default::default(),
    };
    Sim {
        db,
        journey,
        outbox,
    }
}

/// Bookings on the slot grids of four therapists whose availability starts at :00, :05, :10
/// and :15: intros every 20 minutes in the morning, full sessions hourly in the afternoon,
/// every third slot booked, each created at an arbitrary minute 2 to 4 days ahead.
async fn seed_month(c: &tokio_postgres::Client, days: &[(i32, u32, u32)]) -> usize {
    let mut n = 0usize;
    for (i, offset) in [0u32, 5, 10, 15].into_iter().enumerate() {
        let t = crate::seed::therapist(c, &format!("therapist-{i}")).await;
        crate::seed::slots(c, t, 3, None, berlin(2026, 1, 1, 0, 0)).await;
        for &(y, m, d) in days {
            let mut slots = Vec::new();
            for k in 0..12 {
                let minute = offset + 20 * k;
                slots.push((berlin(y, m, d, 8 + minute / 60, minute % 60), true));
            }
            for h in 14..20 {
                slots.push((berlin(y, m, d, h, offset), false));
            }
            for (start, intro) in slots {
                n += 1;
                if n % 3 != 0 {
                    continue;
                }
                let phone = format!("+49151{n:08}");
                let email = format!("p{n}@example.de");
                let p = crate::seed::patient(c, "P", Some(&email), Some(&phone)).await;
                let created = start
                    - Duration::days(2)
                    - Duration::minutes(((n * 7919) % (2 * 24 * 60)) as i64);
                let mut b = crate::seed::Booking::new(t, p, start).unconfirmed(created);
                if intro {
                    b = b.intro();
                }
                b.insert(c).await;
            }
        }
    }
    n / 3
}

/// Full sessions at the edges of SMS quiet hours (21:00–08:00): at 07:30 and 08:00 (the 1 h
/// SMS would fall inside them and come too late after them: skipped), 08:20 (held until
/// 08:00), 21:30 (sent before they start) and 22:15 (1 h SMS skipped, 24 h SMS held until the
/// morning). Returns how many.
async fn seed_quiet_hour_edges(c: &tokio_postgres::Client, days: &[(i32, u32, u32)]) -> usize {
    let t = crate::seed::therapist(c, "therapist-edges").await;
    crate::seed::slots(c, t, 3, None, berlin(2026, 1, 1, 0, 0)).await;
    let mut n = 0;
    for &(y, m, d) in days {
        for (h, min) in [(7, 30), (8, 0), (8, 20), (21, 30), (22, 15)] {
            n += 1;
            let email = format!("edge{n}@example.de");
            let phone = format!("+49160{n:08}");
            let p = crate::seed::patient(c, "P", Some(&email), Some(&phone)).await;
            let start = berlin(y, m, d, h, min);
            let created = start - Duration::days(2) - Duration::minutes(n as i64 * 7);
            crate::seed::Booking::new(t, p, start)
                .unconfirmed(created)
                .insert(c)
                .await;
        }
    }
    n
}

/// Runs each stage on its cadence over [from, to], on cron's wall-clock grid. The stages
/// run side by side (as separate cron jobs do); each keeps its own simulated clock. Returns
/// the counters of all runs.
async fn run_schedule(
    s: &Sim,
    cadences: &BTreeMap<Stage, i64>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Counters {
    let mut tasks = tokio::task::JoinSet::new();
    for (&stage, &every) in cadences {
        let mut journey = s.journey.clone();
        tasks.spawn(async move {
            let mut total = Counters::default();
            let mut t = from;
            while t <= to {
                if (t.timestamp() / 60) % every == 0 {
                    journey.clock = Clock::fixed(t);
                    let opts = StageOptions {
                        dry_run: false,
                        limit: None,
                        window: stage.default_window(),
                        lock: false,
                        concurrency: 4,
                    };
                    let report = run_stage(&journey, stage, &opts).await.unwrap();
                    assert!(!report.failed(), "{stage} at {t}: {:?}", report.counters);
                    total.merge(&report.counters);
                }
                t += Duration::minutes(5);
            }
            total
        });
    }
    let mut total = Counters::default();
    while let Some(r) = tasks.join_next().await {
        total.merge(&r.unwrap());
    }
    total
}

/// (stage, role) → bookings that got it; every due message must be there exactly once.
async fn coverage(s: &Sim) -> (usize, HashMap<(String, String), usize>) {
    let c = s.db.client().await;
    let bookings: i64 = c
        .query_one("SELECT count(*) FROM cal_bookings", &[])
        .await
        .unwrap()
        .get(0);
    let rows = c
        .query(
            "SELECT stage, recipient_role, count(*) FROM journey_deliveries
             WHERE status = 'sent' AND channel = 'email' GROUP BY 1, 2",
            &[],
        )
        .await
        .unwrap();
    let sent = rows
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get::<_, i64>(2) as usize))
        .collect();
    (bookings as usize, sent)
}

fn outbox_files(s: &Sim) -> usize {
    std::fs::read_dir(s.outbox.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "eml")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_on_the_shipped_schedule_reaches_every_booking_exactly_once_across_dst() {
    let s = sim().await;
    let c = s.db.client().await;
    // March 2026 (DST starts on the 29th) and the week DST ends (25 October).
    let mut days: Vec<(i32, u32, u32)> = (1..=31).map(|d| (2026, 3, d)).collect();
    days.extend((24..=26).map(|d| (2026, 10, d)));
    let mut booked = seed_month(&c, &days).await;
    // Around both DST changes and on an ordinary day.
    booked += seed_quiet_hour_edges(
        &c,
        &[
            (2026, 3, 10),
            (2026, 3, 28),
            (2026, 3, 29),
            (2026, 3, 30),
            (2026, 10, 24),
            (2026, 10, 25),
            (2026, 10, 26),
        ],
    )
    .await;
    let intros: i64 = c
        .query_one(
            "SELECT count(*) FROM cal_bookings WHERE booking_kind = 'intro'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let cadences = shipped_cadences();
    // From the first booking's creation until the last message can be due (session
    // followups end 5 days after the last session); only session-followup runs at the end.
    let followups_only: BTreeMap<Stage, i64> = cadences
        .iter()
        .filter(|(s, _)| **s == Stage::SessionFollowup)
        .map(|(s, c)| (*s, *c))
        .collect();
    let mut counters = run_schedule(
        &s,
        &cadences,
        berlin(2026, 2, 25, 0, 0),
        berlin(2026, 4, 1, 6, 0),
    )
    .await;
    run_schedule(
        &s,
        &followups_only,
        berlin(2026, 4, 1, 6, 5),
        berlin(2026, 4, 6, 0, 0),
    )
    .await;
    counters.merge(
        &run_schedule(
            &s,
            &cadences,
            berlin(2026, 10, 21, 0, 0),
            berlin(2026, 10, 27, 6, 0),
        )
        .await,
    );
    run_schedule(
        &s,
        &followups_only,
        berlin(2026, 10, 27, 6, 5),
        berlin(2026, 11, 1, 0, 0),
    )
    .await;

    let (bookings, sent) = coverage(&s).await;
    assert_eq!(bookings, booked);
    let full = bookings - intros as usize;
    let expect = [
        (("confirmation", "patient"), bookings),
        (("confirmation", "therapist"), bookings),
        (("reminder_24h", "patient"), bookings),
        (("reminder_1h", "patient"), bookings),
        (("intro_followup", "patient"), intros as usize),
        (("session_followup", "patient"), full),
    ];
    for ((stage, role), n) in expect {
        assert_eq!(
            sent.get(&(stage.to_string(), role.to_string()))
                .copied()
                .unwrap_or(0),
            n,
            "{stage} to {role}: 100 % coverage expected"
        );
    }
    let rows: usize = sent.values().sum();
    assert_eq!(
        outbox_files(&s),
        rows,
        "one email per sent delivery: no duplicates"
    );
    sms_respect_quiet_hours(&s, bookings, &counters).await;
}

/// Every reminder SMS was sent outside quiet hours or skipped for them, visibly: a ledger row
/// with the reason and a `skipped_quiet_hours` count each. Nothing expired, nothing vanished.
async fn sms_respect_quiet_hours(s: &Sim, bookings: usize, counters: &Counters) {
    let c = s.db.client().await;
    let quiet = QuietHours::default();
    let tz = chrono_tz::Europe::Berlin;
    let rows = c
        .query(
            "SELECT stage, status, sent_at, not_before, coalesce(last_error, '')
             FROM journey_deliveries WHERE channel = 'sms'",
            &[],
        )
        .await
        .unwrap();
    let mut per_stage: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let (mut held_then_sent, mut skipped) = (0usize, 0u64);
    for r in &rows {
        let (stage, status): (String, String) = (r.get(0), r.get(1));
        let sent_at: Option<DateTime<Utc>> = r.get(2);
        let not_before: Option<DateTime<Utc>> = r.get(3);
        let why: String = r.get(4);
        let entry = per_stage.entry(stage.clone()).or_default();
        match status.as_str() {
            "sent" => {
                let at = sent_at.unwrap();
                assert!(
                    !quiet.contains(at, tz),
                    "{stage} SMS sent inside quiet hours at {at}"
                );
                held_then_sent += usize::from(not_before.is_some());
                entry.0 += 1;
            }
            "skipped" if why.contains("quiet hours") => {
                skipped += 1;
                entry.1 += 1;
            }
            other => panic!("{stage} SMS left {other}: {why}"),
        }
    }
    for stage in ["reminder_24h", "reminder_1h"] {
        let (sent, skipped) = per_stage.get(stage).copied().unwrap_or_default();
        assert_eq!(
            sent + skipped,
            bookings,
            "{stage}: every booking's SMS sent or skipped for quiet hours"
        );
    }
    assert_eq!(
        counters.get(Counter::SkippedQuietHours),
        skipped,
        "every quiet-hours skip is counted once"
    );
    assert_eq!(counters.get(Counter::Expired), 0);
    // The schedule does meet quiet hours: early sessions' SMS are held, the earliest skipped.
    assert!(held_then_sent > 0 && skipped > 0, "{per_stage:?}");
    let sms_lines = std::fs::read_to_string(s.outbox.path().join("sms.jsonl"))
        .unwrap()
        .lines()
        .count();
    let sent: usize = per_stage.values().map(|(sent, _)| sent).sum();
    assert_eq!(sms_lines, sent, "one SMS per sent delivery: no duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_hour_reminder_every_30_minutes_would_miss_bookings() {
    let s = sim().await;
    let c = s.db.client().await;
    seed_month(&c, &[(2026, 3, 10)]).await;
    let mut cadences = shipped_cadences();
    cadences.retain(|stage, _| *stage == Stage::Reminder1h);
    cadences.insert(Stage::Reminder1h, 30);
    run_schedule(
        &s,
        &cadences,
        berlin(2026, 3, 10, 0, 0),
        berlin(2026, 3, 11, 0, 0),
    )
    .await;
    let (bookings, sent) = coverage(&s).await;
    let reminded = sent
        .get(&("reminder_1h".into(), "patient".into()))
        .copied()
        .unwrap_or(0);
    assert!(
        reminded < bookings,
        "a 30-minute cadence must lose some of {bookings} bookings, reminded {reminded}"
    );
    assert!(reminded > 0);
}
