//! Cal.com's public API v2, as far as reconcile needs it: `GET /v2/bookings` (or, with
//! `CAL_ORG_ID`, `GET /v2/organizations/{orgId}/bookings`), paged, paced and bounded.
//!
//! Every request sends `Authorization: Bearer <CAL_API_KEY>` and `cal-api-version:
//! 2024-08-13` (without the version Cal.com silently answers in an older shape, which
//! [`booking::parse_page`] refuses), has a timeout (`CAL_API_TIMEOUT`), goes out only when the
//! [`ratelimit::RateLimiter`] allows (120 per 60 s), and after a 429 waits for the reset the
//! answer names before it is sent again. No wait ever ends after the caller's deadline: a
//! reset beyond it is an error, and the next run continues. The key never appears in an error,
//! a log line or `Debug` output.
//!
//! ureq is blocking: each request runs on tokio's blocking pool. Waiting happens on the async
//! side, in short slices, so a stop request (deadline, SIGTERM) ends it promptly.
//!
//! Submodules: [`booking`] (the page shape), [`ratelimit`], [`as_webhook`] (an API booking as
//! the webhook body Cal.com would have sent), [`plan`] (what to apply, given the database).

pub(crate) mod as_webhook;
pub(crate) mod booking;
pub(crate) mod plan;
pub(crate) mod ratelimit;

use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};

pub(crate) use booking::{ApiBooking, Page};
use ratelimit::RateLimiter;

pub(crate) use crate::config::CalApiSettings as ApiSettings;

/// The response shape reconcile reads; sent on every request.
pub(crate) const API_VERSION: &str = "2024-08-13";
/// Cal.com's largest page.
pub(crate) const MAX_TAKE: u32 = 250;
/// 429s answered for one page before the run gives up on it.
const MAX_RATE_LIMITED: u32 = 5;
/// The largest answer read (250 bookings are a few hundred KiB).
const MAX_BODY: u64 = 32 * 1024 * 1024;
/// Pages one sweep may take before it is called a runaway (2.5 million bookings).
const MAX_PAGES: u32 = 10_000;

/// Why a run could not read the API.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("Cal.com API at {base} cannot be reached: {reason}")]
    Unreachable { base: String, reason: String },
    #[error("Cal.com API at {base} did not answer within {timeout:?} (CAL_API_TIMEOUT)")]
    Timeout { base: String, timeout: Duration },
    #[error(
        "Cal.com API refused CAL_API_KEY (HTTP {status}): check that the key is valid and not \
         expired{hint}"
    )]
    Refused { status: u16, hint: &'static str },
    #[error("Cal.com API answered HTTP {status} for {what}{detail}")]
    Status {
        status: u16,
        what: String,
        detail: String,
    },
    #[error("Cal.com API answer for {what} is unusable: {why}")]
    Shape {
        what: String,
        why: booking::ShapeError,
    },
    #[error(
        "Cal.com API rate limit: told to wait {wait:?}, which ends after this run's deadline; \
         the next run continues from the same point"
    )]
    PastDeadline { wait: Duration },
    #[error("Cal.com API answered 429 (rate limited) {0} times in a row for one page; giving up")]
    RateLimited(u32),
    #[error("the run was told to stop while reading the Cal.com API")]
    Stopped,
    #[error("Cal.com API paging did not end: {0}")]
    Runaway(String),
}

impl ApiError {
    /// Our own setting is wrong (exit 2), not the API unavailable (exit 1).
    pub(crate) fn is_config(&self) -> bool {
        matches!(self, ApiError::Refused { .. })
    }
}

/// The two sweeps of a run: `updatedAt` may be null, so bookings never changed are only found
/// by their creation time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sweep {
    Created,
    Updated,
}

impl Sweep {
    pub(crate) const BOTH: [Sweep; 2] = [Sweep::Created, Sweep::Updated];

    /// Filter and order of the sweep. Newest first: a booking created or changed while the
    /// sweep pages moves to the front, so later pages repeat an item instead of skipping one;
    /// the moved booking itself is newer than this run and is read by the next.
    fn params(self) -> (&'static str, &'static str) {
        match self {
            Sweep::Created => ("afterCreatedAt", "sortCreated"),
            Sweep::Updated => ("afterUpdatedAt", "sortUpdatedAt"),
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Sweep::Created => "created",
            Sweep::Updated => "updated",
        }
    }
}

/// What the API answered to one request, read on the blocking pool.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A client for one run: paces its requests and counts them.
pub(crate) struct CalApi {
    settings: ApiSettings,
    agent: ureq::Agent,
    limiter: RateLimiter,
    /// No wait may end after this.
    deadline: Instant,
    stop: Box<dyn Fn() -> bool + Send + Sync>,
    /// Requests sent (each 429 included).
    pub requests: u32,
    /// Times a 429 was answered.
    pub rate_limited: u32,
}

/// Longest TCP/TLS connect to the API (the whole request has `CAL_API_TIMEOUT`): a host that
/// does not answer a connect in this long is down, and the time is better left to a retry.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a rate-limit wait asks whether the run was told to stop: a SIGTERM is honoured
/// within this, far inside any drain bound.
const STOP_POLL: Duration = Duration::from_millis(200);

impl CalApi {
    /// `stop` is asked while waiting: true ends the wait with [`ApiError::Stopped`].
    pub(crate) fn new(
        settings: ApiSettings,
        deadline: Instant,
        stop: impl Fn() -> bool + Send + Sync + 'static,
    ) -> CalApi {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(settings.timeout.min(MAX_CONNECT_TIMEOUT)))
            .timeout_global(Some(settings.timeout))
            .http_status_as_error(false)
            .user_agent(concat!("journeyctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        CalApi {
            settings,
            agent,
            limiter: RateLimiter::default(),
            deadline,
            stop: Box::new(stop),
            requests: 0,
            rate_limited: 0,
        }
    }

    /// The bookings path: the key owner's, or the organisation's.
    fn bookings_url(&self) -> String {
        match self.settings.org_id {
            Some(org) => format!("{}/v2/organizations/{org}/bookings", self.settings.base),
            None => format!("{}/v2/bookings", self.settings.base),
        }
    }

    /// Every booking created (or updated) after `since`, all pages. Items that cannot be read
    /// are returned as lines for the caller to count and log.
    pub(crate) async fn sweep(
        &mut self,
        sweep: Sweep,
        since: DateTime<Utc>,
        take: u32,
    ) -> Result<(Vec<ApiBooking>, Vec<String>), ApiError> {
        let (filter, sort) = sweep.params();
        let since = since.to_rfc3339_opts(SecondsFormat::Millis, true);
        let take = take.clamp(1, MAX_TAKE);
        let mut bookings = Vec::new();
        let mut unusable = Vec::new();
        let mut skip: u32 = 0;
        for page_no in 1..=MAX_PAGES {
            let query = vec![
                (filter.to_string(), since.clone()),
                (sort.to_string(), "desc".to_string()),
                ("take".to_string(), take.to_string()),
                ("skip".to_string(), skip.to_string()),
            ];
            let what = format!("the {} sweep, page {page_no}", sweep.as_str());
            let page = self.page(query, &what).await?;
            bookings.extend(page.bookings);
            unusable.extend(page.unusable);
            if !page.has_next_page {
                return Ok((bookings, unusable));
            }
            if page.returned == 0 {
                return Err(ApiError::Runaway(format!(
                    "{what} was empty but said hasNextPage"
                )));
            }
            skip = skip.saturating_add(page.returned as u32);
        }
        Err(ApiError::Runaway(format!(
            "the {} sweep passed {MAX_PAGES} pages",
            sweep.as_str()
        )))
    }

    /// One booking by its uid (a successor the sweeps did not return); `None` when the API
    /// does not show it to this key.
    pub(crate) async fn booking(&mut self, uid: &str) -> Result<Option<ApiBooking>, ApiError> {
        let query = vec![
            ("bookingUid".to_string(), uid.to_string()),
            ("take".to_string(), "1".to_string()),
        ];
        let page = self.page(query, &format!("booking {uid}")).await?;
        Ok(page.bookings.into_iter().find(|b| b.uid == uid))
    }

    /// One page, after as many waits as the rate limit asks for.
    async fn page(&mut self, query: Vec<(String, String)>, what: &str) -> Result<Page, ApiError> {
        let mut limited = 0;
        loop {
            let delay = self.limiter.delay(Instant::now());
            self.wait(delay).await?;
            self.limiter.record(Instant::now());
            self.requests += 1;
            let answer = self.get(query.clone()).await?;
            let now_unix = Utc::now().timestamp();
            let headers = answer.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            let rate_limited = answer.status == 429;
            if let Some(wait) = ratelimit::wait_from_headers(headers, now_unix, rate_limited) {
                self.limiter.block_until(Instant::now() + wait);
                if rate_limited {
                    log::warn!(
                        "Cal.com API: 429 rate limited on {what}; waiting {wait:?} as it asks"
                    );
                } else {
                    log::info!("Cal.com API: no requests left in this window; next in {wait:?}");
                }
            }
            if rate_limited {
                self.rate_limited += 1;
                limited += 1;
                if limited > MAX_RATE_LIMITED {
                    return Err(ApiError::RateLimited(limited));
                }
                continue;
            }
            return self.read(answer, what);
        }
    }

    fn read(&self, answer: Answer, what: &str) -> Result<Page, ApiError> {
        match answer.status {
            200..=299 => booking::parse_page(&answer.body).map_err(|why| ApiError::Shape {
                what: what.to_string(),
                why,
            }),
            401 | 403 => Err(ApiError::Refused {
                status: answer.status,
                hint: if self.settings.org_id.is_some() {
                    "; with CAL_ORG_ID the key must belong to an admin or owner of that \
                     organisation, and the organisation needs Cal.com's admin API"
                } else {
                    ""
                },
            }),
            404 if self.settings.org_id.is_some() => Err(ApiError::Status {
                status: 404,
                what: what.to_string(),
                detail: ": is CAL_ORG_ID the id of an organisation this key belongs to?".into(),
            }),
            status => Err(ApiError::Status {
                status,
                what: what.to_string(),
                detail: error_detail(&answer.body),
            }),
        }
    }

    /// Sleeps `d` in short slices, asking `stop` between them; never past the deadline.
    async fn wait(&self, d: Duration) -> Result<(), ApiError> {
        if d.is_zero() {
            return Ok(());
        }
        let until = Instant::now() + d;
        if until > self.deadline {
            return Err(ApiError::PastDeadline { wait: d });
        }
        loop {
            if (self.stop)() {
                return Err(ApiError::Stopped);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            tokio::time::sleep(left.min(STOP_POLL)).await;
        }
    }

    /// One GET on the blocking pool.
    async fn get(&self, query: Vec<(String, String)>) -> Result<Answer, ApiError> {
        let agent = self.agent.clone();
        let url = self.bookings_url();
        let auth = format!("Bearer {}", self.settings.key.expose());
        let base = self.settings.base.clone();
        let timeout = self.settings.timeout;
        let joined = tokio::task::spawn_blocking(move || {
            let mut req = agent
                .get(&url)
                .header("Authorization", &auth)
                .header("cal-api-version", API_VERSION)
                .header("Accept", "application/json");
            for (k, v) in &query {
                req = req.query(k, v);
            }
            let mut response = req.call()?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect();
            let body = response
                .body_mut()
                .with_config()
                .limit(MAX_BODY)
                .read_to_vec()?;
            Ok::<_, ureq::Error>(Answer {
                status,
                headers,
                body,
            })
        })
        .await;
        match joined {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(ureq::Error::Timeout(_))) => Err(ApiError::Timeout { base, timeout }),
            Ok(Err(e)) => Err(ApiError::Unreachable {
                base,
                reason: transport_reason(&e),
            }),
            Err(e) => Err(ApiError::Unreachable {
                base,
                reason: format!("the request task failed: {e}"),
            }),
        }
    }
}

/// A transport error's text. ureq's errors name the host, never headers, so the key cannot be
/// in it.
fn transport_reason(e: &ureq::Error) -> String {
    match e {
        ureq::Error::HostNotFound => "host not found (check CAL_API_BASE)".into(),
        ureq::Error::ConnectionFailed => "connection refused or failed".into(),
        other => other.to_string(),
    }
}

/// Cal.com's error answer `{"status":"error","error":{"code","message"}}`, shortened. Error
/// messages name the request's problem, not booking data.
fn error_detail(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return String::new();
    };
    let err = &v["error"];
    let text = [&err["code"], &err["message"], &v["message"]]
        .into_iter()
        .filter_map(|x| x.as_str())
        .collect::<Vec<_>>()
        .join(": ");
    if text.is_empty() {
        String::new()
    } else {
        format!(" ({})", text.chars().take(200).collect::<String>())
    }
}
