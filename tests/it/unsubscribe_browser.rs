//! The unsubscribe page in a real browser: headless Chromium driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`; `.ci/test` installs them), against the compiled
//! `serve`, with the link taken from an email the SMTP server received.

use chrono::Duration;
use serde_json::{json, Value};

use crate::optout::{by_stage, every_kind_sent_with_links_to_serve};
use crate::seed::{self, at, Booking};

/// `chromedriver` on a free port, and one headless Chromium session. Both end when dropped:
/// chromedriver runs in a process group of its own, and the whole group (the browser it
/// started included) is killed, also when the test fails half-way.
struct Browser {
    http: reqwest::Client,
    session: String,
    driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
    }
}

/// The JSON body of the answer to `request`.
async fn json_of(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    async fn start() -> Browser {
        let port = crate::support::free_port();
        let driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .expect("chromedriver is installed (apt-get install -y chromium chromium-driver)");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let mut tries = 0;
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await {
                let v: Value = r.json().await.unwrap_or_default();
                if v["value"]["ready"] == true {
                    break;
                }
            }
            tries += 1;
            assert!(tries < 20_000, "chromedriver never became ready");
            tokio::task::yield_now().await;
        }
        let profile = tempfile::tempdir().unwrap();
        let created = json_of(http.post(format!("{base}/session")).json(
            &json!({"capabilities": {"alwaysMatch": {
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--no-first-run",
                             "--disable-background-networking", "--disable-sync",
                             format!("--user-data-dir={}", profile.path().display())]
                }
            }}}),
        ))
        .await;
        let id = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_string();
        let b = Browser {
            http,
            session: format!("{base}/session/{id}"),
            driver,
            _profile: profile,
        };
        // Element lookups wait for the next page up to this long (WebDriver's implicit wait).
        b.call("timeouts", json!({"implicit": 20_000})).await;
        b
    }

    async fn call(&self, path: &str, body: Value) -> Value {
        let v = json_of(
            self.http
                .post(format!("{}/{path}", self.session))
                .json(&body),
        )
        .await;
        assert!(v["value"]["error"].is_null(), "WebDriver {path}: {v}");
        v["value"].clone()
    }

    async fn open(&self, url: &str) {
        self.call("url", json!({ "url": url })).await;
    }

    async fn source(&self) -> String {
        let v = json_of(self.http.get(format!("{}/source", self.session))).await;
        v["value"].as_str().unwrap_or_default().to_string()
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .call("element", json!({"using": "css selector", "value": css}))
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.call(&format!("element/{id}/click"), json!({})).await;
    }
}

#[tokio::test]
async fn the_unsubscribe_page_changes_nothing_until_its_button_is_clicked_in_chromium() {
    let (db, c, tr, server) = every_kind_sent_with_links_to_serve().await;
    let mails = by_stage(&c, tr.emails()).await;
    let (_, intro) = mails
        .iter()
        .find(|(s, _)| s == "intro_followup/patient")
        .expect("the intro followup was sent");
    let link = intro
        .text()
        .split_whitespace()
        .find(|w| w.starts_with(&format!("{}/api/public/unsubscribe?t=", server.base)))
        .expect("the text shows the unsubscribe link")
        .to_string();
    let suppressed = || db.count("SELECT count(*) FROM suppressions");

    let browser = Browser::start().await;
    browser.open(&link).await;
    let page = browser.source().await;
    assert!(page.contains("Keine E-Mails mehr von uns?"), "{page}");
    assert!(page.contains("Ja, abmelden"), "{page}");
    assert_eq!(suppressed().await, 0, "showing the page unsubscribed");
    // Reloading (a second look, a scanner in the browser) changes nothing either.
    browser.open(&link).await;
    assert_eq!(suppressed().await, 0);

    browser.click("#abmelden").await;
    browser.find("#abgemeldet").await;
    assert!(browser.source().await.contains("Sie sind abgemeldet"));
    let row = c
        .query_one(
            "SELECT channel, address, reason, source FROM suppressions",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(2),
            row.get::<_, String>(3)
        ),
        (
            "email".into(),
            "patient3@example.de".into(),
            "unsubscribe_page".into(),
            "unsubscribe".into()
        )
    );

    // Honoured from the next run: the patient's next intro is not followed up by email.
    let id_of = |sql: &'static str| async {
        let id: uuid::Uuid = c.query_one(sql, &[]).await.unwrap().get(0);
        id
    };
    let patient = id_of("SELECT id FROM people WHERE email = 'patient3@example.de'").await;
    let therapist = id_of("SELECT id FROM therapists WHERE cal_username = 'lena-brandt'").await;
    let next = at("2026-03-10T15:00:00Z");
    Booking::new(therapist, patient, next - Duration::minutes(35))
        .intro()
        .status(Some("COMPLETED"))
        .insert(&c)
        .await;
    let before = tr.emails().len();
    let out = tr
        .apply(db.cmd())
        .args(["--now", &next.to_rfc3339(), "--json", "intro-followup"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let counters = &out.json()["stages"][0]["counters"];
    assert_eq!(counters["skipped_opted_out"], 1, "{counters}");
    assert_eq!(counters["sent_email"], 0, "{counters}");
    assert_eq!(tr.emails().len(), before);
    let events = seed::events(&c, "unsubscribed").await;
    assert_eq!(events.len(), 1);
    assert!(!events[0].to_string().contains("patient3"), "{}", events[0]);
}
