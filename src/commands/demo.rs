//! `journeyctl demo`: the whole journey on a database it creates, over a simulated week.
//!
//! It starts a throwaway PostgreSQL (or, with DATABASE_URL, creates a fresh database of its own
//! on that server: it never touches a database it did not create), migrates, seeds a realistic
//! week, feeds the bookings in through the real webhook path (signed bodies), runs the shipped
//! schedule (5-minute and 30-minute stages, as in crontab.example) on a simulated clock with
//! outbox transports, and prints who got what when. Emails (.eml) and SMS (sms.jsonl) stay in
//! the output directory it names.

use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Duration, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::json;
use uuid::Uuid;

use super::stage::{execute, journey, StageRun};
use super::webhook::AfterCommit;
use crate::cli::{GlobalArgs, SettingsArgs};
use crate::clock::Clock;
use crate::config::{ConfigError, Settings};
use crate::db::{self, Db};
use crate::domain::{mask_email, mask_phone, Counter, Counters, Stage};
use crate::pgtemp::{Options, TempCluster};
use crate::secret::Secret;
use crate::stages::{Journey, StageOptions};
use crate::webhook::apply::{handle, Verification};
use crate::ExitStatus;

const SECRET: &str = "whsec_demo_only";

/// Monday 2 March 2026, 00:00 in Berlin.
fn week_start() -> DateTime<Utc> {
    chrono_tz::Europe::Berlin
        .with_ymd_and_hms(2026, 3, 2, 0, 0, 0)
        .single()
        .expect("valid local time")
        .with_timezone(&Utc)
}

/// Berlin local time → UTC, for readable seed data.
fn local(day: u32, h: u32, m: u32) -> DateTime<Utc> {
    chrono_tz::Europe::Berlin
        .with_ymd_and_hms(2026, 3, day, h, m, 0)
        .single()
        .expect("valid local time")
        .with_timezone(&Utc)
}

struct Person {
    id: Uuid,
    name: &'static str,
    email: Option<&'static str>,
    phone: Option<&'static str>,
}

struct Therapist {
    id: Uuid,
    first: &'static str,
    last: &'static str,
    username: &'static str,
    intro_type: i32,
    full_type: i32,
}

/// A booking webhook that Cal.com sends at `at` (its envelope's `createdAt` too).
#[allow(clippy::too_many_arguments)]
fn hook(
    trigger: &str,
    at: DateTime<Utc>,
    uid: &str,
    t: &Therapist,
    p: &Person,
    start: DateTime<Utc>,
    minutes: i64,
    intro: bool,
    extra: serde_json::Value,
) -> Delivery {
    Delivery {
        at,
        body: booking_body(trigger, at, uid, t, p, start, minutes, intro, extra),
    }
}

/// One webhook delivery in the simulated week.
struct Delivery {
    at: DateTime<Utc>,
    body: serde_json::Value,
}

#[allow(clippy::too_many_arguments)]
fn booking_body(
    trigger: &str,
    at: DateTime<Utc>,
    uid: &str,
    t: &Therapist,
    p: &Person,
    start: DateTime<Utc>,
    minutes: i64,
    intro: bool,
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut payload = json!({
        "type": if intro { "intro" } else { "full-session" },
        "title": format!("{} zwischen {} {} und {}", if intro { "Kennenlerngespräch" } else { "Therapiesitzung" }, t.first, t.last, p.name),
        "startTime": start.to_rfc3339(),
        "endTime": (start + Duration::minutes(minutes)).to_rfc3339(),
        "organizer": {"name": format!("{} {}", t.first, t.last), "email": format!("{}@praxis.example", t.username), "username": t.username, "timeZone": "Europe/Berlin"},
        "attendees": [{"email": p.email.unwrap_or(""), "name": p.name, "timeZone": "Europe/Berlin", "phoneNumber": p.phone}],
        "location": "integrations:daily",
        "eventTypeId": if intro { t.intro_type } else { t.full_type },
        "uid": uid,
        "iCalSequence": 0,
        "metadata": {
            "videoCallUrl": format!("https://app.cal.com/video/{uid}"),
            "kh_patient_id": p.id.to_string(),
            "kh_therapist_id": t.id.to_string(),
            "kh_booking_kind": if intro { "intro" } else { "full_session" },
            "kh_source": "directory"
        },
        "status": "ACCEPTED"
    });
    if let (Some(obj), Some(more)) = (payload.as_object_mut(), extra.as_object()) {
        obj.extend(more.clone());
    }
    json!({"triggerEvent": trigger, "createdAt": at.to_rfc3339(), "payload": payload})
}

async fn seed(db: &Db, therapists: &[Therapist], people: &[Person]) -> anyhow::Result<()> {
    let c = db.client().await?;
    for t in therapists {
        c.execute(
            "INSERT INTO therapists (id, first_name, last_name, email, cal_username,
                                     cal_intro_event_type_id, cal_full_session_event_type_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &t.id,
                &t.first,
                &t.last,
                &format!("{}@praxis.example", t.username),
                &t.username,
                &t.intro_type,
                &t.full_type,
            ],
        )
        .await?;
    }
    for p in people {
        c.execute(
            "INSERT INTO people (id, name, email, phone_number, created_at) VALUES ($1, $2, $3, $4, $5)",
            &[&p.id, &p.name, &p.email, &p.phone, &(week_start() - Duration::days(10))],
        )
        .await?;
        // Everyone is matched with the first two therapists.
        for t in &therapists[..2] {
            c.execute(
                "INSERT INTO matches (patient_id, therapist_id, status, created_at) VALUES ($1, $2, 'proposed', $3)",
                &[&p.id, &t.id, &(week_start() - Duration::days(10))],
            )
            .await?;
        }
    }
    Ok(())
}

/// `journeyctl demo [--out DIR]`
pub async fn demo(g: &GlobalArgs, out: Option<PathBuf>) -> anyhow::Result<ExitStatus> {
    let dir = out.unwrap_or_else(|| {
        PathBuf::from(format!(
            "journeyctl-demo-{}",
            Utc::now().format("%Y%m%d-%H%M%S")
        ))
    });
    std::fs::create_dir_all(&dir)
        .map_err(|e| ConfigError::new(format!("cannot create {}: {e}", dir.display())))?;
    let dir = dir.canonicalize()?;
    eprintln!("demo: output in {}", dir.display());
    // Thousands of simulated runs: keep their per-run lines out of the way of the progress.
    if !g.quiet && g.verbose == 0 {
        log::set_max_level(log::LevelFilter::Warn);
    }

    // A database of our own.
    let (_cluster, url) = match &g.database_url {
        Some(server) if !server.trim().is_empty() => {
            let name = format!("journeyctl_demo_{}", Uuid::new_v4().simple());
            let admin = db::connect(&Secret::new(server.trim()), 1).await?;
            admin
                .client()
                .await?
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .with_context(|| format!("Failed to create the demo database {name}"))?;
            let base = server.trim().split('?').next().unwrap_or_default();
            let base = &base[..base.rfind('/').map(|i| i + 1).unwrap_or(base.len())];
            eprintln!("demo: created database {name} on the server of DATABASE_URL");
            (None, format!("{base}{name}"))
        }
        _ => {
            // Named before it exists: whatever stops the demo, the cluster's watchdog stops
            // the server and removes this directory (see `pgtemp`).
            let cluster_dir = crate::pgtemp::new_dir();
            eprintln!(
                "demo: starting a throwaway PostgreSQL in {} (initdb/pg_ctl; removed when the \
                 demo ends, however it ends)",
                cluster_dir.display()
            );
            let cluster = TempCluster::start_in(
                cluster_dir,
                Options {
                    tls: false,
                    stat_statements: false,
                },
            )?;
            eprintln!("demo: PostgreSQL is up");
            let admin =
                db::connect(&Secret::new(format!("{}postgres", cluster.base_url)), 1).await?;
            admin
                .client()
                .await?
                .batch_execute("CREATE DATABASE journey_demo")
                .await?;
            let url = format!("{}journey_demo", cluster.base_url);
            (Some(cluster), url)
        }
    };
    let migrate_db = db::connect(&Secret::new(&url), 1).await?;
    db::migrate::run(&migrate_db).await?;

    let settings = Settings::from_args(&SettingsArgs {
        email_outbox_dir: Some(dir.join("email")),
        sms_outbox_dir: Some(dir.join("sms")),
        email_from: Some("Praxisteam <termine@therapie.example>".into()),
        cal_webhook_secret: Some(SECRET.into()),
        public_base_url: Some("https://therapie.example".into()),
        qa_notify_email: Some("qa@therapie.example".into()),
        // Advertising emails carry an unsubscribe link; the demo's key is thrown away with it.
        public_callback_base: Some("https://journey.therapie.example".into()),
        unsubscribe_secret: Some(Uuid::new_v4().simple().to_string()),
        ..Default::default()
    })?;
    let tz: Tz = settings.timezone;
    let mut g2 = g.clone();
    g2.database_url = Some(url.clone());
    let base = journey(&g2, settings, Clock::fixed(week_start()), false, 10).await?;

    let therapists = [
        Therapist {
            id: Uuid::new_v4(),
            first: "Dr. Lena",
            last: "Brandt",
            username: "lena-brandt",
            intro_type: 1187,
            full_type: 1188,
        },
        Therapist {
            id: Uuid::new_v4(),
            first: "Jan",
            last: "Koch",
            username: "jan-koch",
            intro_type: 2187,
            full_type: 2188,
        },
        Therapist {
            id: Uuid::new_v4(),
            first: "Miriam",
            last: "Yılmaz",
            username: "miriam-yilmaz",
            intro_type: 3187,
            full_type: 3188,
        },
    ];
    let people = [
        Person {
            id: Uuid::new_v4(),
            name: "Jonas Weber",
            email: Some("jonas.weber@example.de"),
            phone: Some("+4915112345678"),
        },
        Person {
            id: Uuid::new_v4(),
            name: "Sophie Schäfer",
            email: Some("sophie.schaefer@example.de"),
            phone: Some("+4917098765432"),
        },
        Person {
            id: Uuid::new_v4(),
            name: "Emir Demir",
            email: Some("emir.demir@example.de"),
            phone: None,
        },
        Person {
            id: Uuid::new_v4(),
            name: "Clara Neumann",
            email: None,
            phone: Some("+4916055512345"),
        },
        Person {
            id: Uuid::new_v4(),
            name: "Tom Becker",
            email: Some("tom.becker@example.de"),
            phone: None,
        },
        Person {
            id: Uuid::new_v4(),
            name: "Lea Wolf",
            email: Some("lea.wolf@example.de"),
            phone: Some("+4915255577788"),
        },
        Person {
            id: Uuid::new_v4(),
            name: "QA Testperson",
            email: Some("qa+test@therapie.example"),
            phone: None,
        },
    ];
    seed(&base.db, &therapists, &people).await?;
    // Miriam has no free slots; the others have some, refreshed hourly by the booking site.
    {
        let c = base.db.client().await?;
        for (i, t) in therapists.iter().enumerate() {
            let count: i32 = if i == 2 { 0 } else { 5 };
            c.execute(
                "INSERT INTO cal_slots_cache (therapist_id, full_slots_count, next_full_time_utc, cached_at)
                 VALUES ($1, $2, $3, $4)",
                &[&t.id, &count, &(count > 0).then(|| local(10, 9, 0)), &week_start()],
            )
            .await?;
        }
    }

    let [lena, jan, miriam] = &therapists;
    let [jonas, sophie, emir, clara, tom, lea, qa] = &people;
    let mut hooks = vec![
        // Jonas: intro Tuesday 10:20, then books a full session right after it.
        hook(
            "BOOKING_CREATED",
            local(2, 9, 12),
            "demo-jonas-intro",
            lena,
            jonas,
            local(3, 10, 20),
            15,
            true,
            json!({}),
        ),
        hook(
            "BOOKING_CREATED",
            local(3, 11, 5),
            "demo-jonas-full",
            lena,
            jonas,
            local(4, 16, 0),
            50,
            false,
            json!({}),
        ),
        // Sophie: full session Wednesday, moved to Friday.
        hook(
            "BOOKING_CREATED",
            local(2, 14, 0),
            "demo-sophie-1",
            jan,
            sophie,
            local(4, 10, 0),
            50,
            false,
            json!({}),
        ),
        hook(
            "BOOKING_RESCHEDULED",
            local(3, 8, 30),
            "demo-sophie-2",
            jan,
            sophie,
            local(6, 11, 0),
            50,
            false,
            json!({"rescheduleUid": "demo-sophie-1"}),
        ),
        // Emir: intro on Thursday, cancelled on Tuesday evening: recovery points to Jan.
        hook(
            "BOOKING_CREATED",
            local(2, 18, 40),
            "demo-emir-intro",
            lena,
            emir,
            local(5, 18, 40),
            15,
            true,
            json!({}),
        ),
        hook(
            "BOOKING_CANCELLED",
            local(3, 20, 0),
            "demo-emir-intro",
            lena,
            emir,
            local(5, 18, 40),
            15,
            true,
            json!({"status": "CANCELLED", "cancellationReason": "Terminkonflikt", "requestReschedule": false}),
        ),
        // Clara has only a phone: SMS reminders only.
        hook(
            "BOOKING_CREATED",
            local(2, 7, 45),
            "demo-clara-full",
            jan,
            clara,
            local(5, 8, 0),
            50,
            false,
            json!({}),
        ),
        // Tom's therapist has no free slots: no session followup.
        hook(
            "BOOKING_CREATED",
            local(2, 6, 0),
            "demo-tom-full",
            miriam,
            tom,
            local(2, 12, 0),
            50,
            false,
            json!({}),
        ),
        // Lea's session is cancelled by the therapist, who asks to reschedule: no recovery.
        hook(
            "BOOKING_CREATED",
            local(2, 10, 0),
            "demo-lea-full",
            lena,
            lea,
            local(6, 9, 0),
            50,
            false,
            json!({}),
        ),
        hook(
            "BOOKING_CANCELLED",
            local(4, 12, 0),
            "demo-lea-full",
            lena,
            lea,
            local(6, 9, 0),
            50,
            false,
            json!({"status": "CANCELLED", "requestReschedule": true}),
        ),
        // A test booking from QA: confirmation goes to QA_NOTIFY_EMAIL only.
        hook(
            "BOOKING_CREATED",
            local(2, 11, 0),
            "demo-qa",
            lena,
            qa,
            local(4, 9, 0),
            50,
            false,
            json!({}),
        ),
    ];
    hooks.sort_by_key(|h| h.at);

    let secret = Secret::new(SECRET);
    let end = week_start() + Duration::days(7);
    let mut t = week_start();
    let mut next_hook = 0;
    let mut failures = 0u64;
    let mut totals = Counters::default();
    let mut day_reported = None;
    while t <= end {
        // Webhooks that arrived since the last tick, at their own instant.
        while next_hook < hooks.len() && hooks[next_hook].at <= t {
            let h = &hooks[next_hook];
            let body = serde_json::to_vec(&h.body)?;
            let sig = crate::webhook::sign(&secret, &body);
            let handled = handle(
                &base.db,
                Verification::Required(Some(&secret)),
                &body,
                Some(&sig),
                h.at,
            )
            .await;
            if handled.http_status != 200 {
                anyhow::bail!(
                    "demo webhook was refused: {} {}",
                    handled.http_status,
                    handled.message
                );
            }
            // What `serve` does after the commit, at the webhook's own instant.
            let mut j = base.clone();
            j.clock = Clock::fixed(h.at);
            for job in AfterCommit::of(&handled) {
                totals.merge(&job.send(&j).await?.counters);
            }
            next_hook += 1;
        }
        // The booking site refreshes the slot cache hourly.
        if (t - week_start()).num_minutes() % 60 == 0 {
            base.db
                .client()
                .await?
                .execute(
                    "UPDATE cal_slots_cache SET cached_at = $1,
                            next_full_time_utc = date_trunc('day', $1::timestamptz) + interval '2 days 9 hours'
                      WHERE full_slots_count > 0",
                    &[&t],
                )
                .await
                .context("Failed to refresh the demo's slot cache")?;
        }
        // The shipped schedule: 5-minute stages every tick, 30-minute stages on :00 and :30.
        let stages: Vec<StageRun> = Stage::ALL
            .into_iter()
            .filter(|s| {
                let cadence = s.cadence().num_minutes();
                (t - week_start()).num_minutes() % cadence == 0
            })
            .map(|stage| StageRun {
                stage,
                opts: StageOptions {
                    dry_run: false,
                    limit: None,
                    window: stage.default_window(),
                    lock: true,
                    concurrency: 4,
                },
            })
            .collect();
        let mut j: Journey = base.clone();
        j.clock = Clock::fixed(t);
        j.run_id = Uuid::new_v4();
        let (status, _reports, run_totals) = execute(&j, "demo", &stages).await?;
        if status != ExitStatus::Ok {
            failures += 1;
        }
        totals.merge(&run_totals);
        let day = t.with_timezone(&tz).format("%A %d.%m.").to_string();
        if day_reported.as_ref() != Some(&day) && t < end {
            eprintln!("demo: simulating {day} …");
            day_reported = Some(day);
        }
        t += Duration::minutes(5);
    }

    print_timeline(&base.db, tz).await?;
    let c = base.db.client().await?;
    let ledger = c
        .query(
            "SELECT channel, status, count(*) FROM journey_deliveries GROUP BY 1, 2 ORDER BY 1, 2",
            &[],
        )
        .await?;
    let runs: i64 = c
        .query_one(
            "SELECT count(*) FROM journey_runs WHERE command = 'demo'",
            &[],
        )
        .await?
        .get(0);
    crate::outln!();
    crate::outln!(
        "ledger: {}",
        ledger
            .iter()
            .map(|r| format!(
                "{} {} {}",
                r.get::<_, i64>(2),
                r.get::<_, String>(0),
                r.get::<_, String>(1)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    crate::outln!(
        "{runs} scheduled runs; errors counted: {}; bookings skipped per run for a counted reason \
         (test data, no contact, no free slots) are in `journeyctl status`",
        totals.get(Counter::Errors)
    );
    crate::outln!(
        "emails: {}/email/*.eml   SMS: {}/sms/sms.jsonl",
        dir.display(),
        dir.display()
    );
    if g.database_url.is_some() {
        crate::outln!("database: {}", crate::secret::redact_url(&url));
    }
    Ok(if failures > 0 {
        ExitStatus::Failed
    } else {
        ExitStatus::Ok
    })
}

async fn print_timeline(db: &Db, tz: Tz) -> anyhow::Result<()> {
    let rows = db
        .client()
        .await?
        .query(
            "SELECT d.sent_at, d.stage, d.channel, d.recipient_role, d.status, d.last_error,
                    b.cal_uid, b.start_time, p.name, p.email, p.phone_number,
                    t.first_name || ' ' || t.last_name
             FROM journey_deliveries d
             JOIN cal_bookings b ON b.id = d.booking_id
             LEFT JOIN people p ON p.id = b.patient_id
             LEFT JOIN therapists t ON t.id = b.therapist_id
             ORDER BY coalesce(d.sent_at, d.created_at), d.stage, d.channel",
            &[],
        )
        .await
        .context("Failed to read the timeline")?;
    crate::outln!("\nWho got what, when (times in {tz}):");
    for r in rows {
        let sent_at: Option<DateTime<Utc>> = r.get(0);
        let stage: String = r.get(1);
        let channel: String = r.get(2);
        let role: String = r.get(3);
        let status: String = r.get(4);
        let error: Option<String> = r.get(5);
        let uid: String = r.get(6);
        let start: Option<DateTime<Utc>> = r.get(7);
        let name: Option<String> = r.get(8);
        let email: Option<String> = r.get(9);
        let phone: Option<String> = r.get(10);
        let therapist: Option<String> = r.get(11);
        let when = sent_at
            .map(|t| t.with_timezone(&tz).format("%a %d.%m. %H:%M").to_string())
            .unwrap_or_else(|| "—".to_string());
        let to = match (role.as_str(), channel.as_str()) {
            ("therapist", _) => format!("therapist {}", therapist.clone().unwrap_or_default()),
            ("qa", _) => "QA inbox".to_string(),
            (_, "sms") => format!(
                "{} {}",
                name.unwrap_or_default(),
                phone.as_deref().map(mask_phone).unwrap_or_default()
            ),
            _ => format!(
                "{} {}",
                name.unwrap_or_default(),
                email.as_deref().map(mask_email).unwrap_or_default()
            ),
        };
        let session = start
            .map(|s| {
                s.with_timezone(&tz)
                    .format("session %a %d.%m. %H:%M")
                    .to_string()
            })
            .unwrap_or_default();
        crate::outln!(
            "  {when:<16} {stage:<22} {channel:<5} {status:<8} → {to:<40} {session} [{uid}]{}",
            error.map(|e| format!(" ({e})")).unwrap_or_default()
        );
    }
    Ok(())
}
