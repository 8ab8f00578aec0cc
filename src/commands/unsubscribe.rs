//! `serve`'s unsubscribe endpoint (README, "Opt-outs"): `/api/public/unsubscribe?t=TOKEN`, the link that
//! advertising emails carry in their text, their HTML and their `List-Unsubscribe` header.
//!
//! - `GET` (and `HEAD`): a small German page with one button. It changes nothing: mail
//!   scanners and link previews fetch every link, and must not unsubscribe anyone.
//! - `POST`: suppresses the patient's email address (`suppressions`, source `unsubscribe`),
//!   honoured from the next run. A mail client's RFC 8058 one-click POST gets 200 with an
//!   empty body; the page's button gets a confirmation page.
//!
//! A token that is not ours (garbled, forged, made with another secret) is answered 400 and
//! nothing is written. Answers never name the address; logs name the patient by id only.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use uuid::Uuid;

use crate::db::{bookings, runs, suppressions, Db};
use crate::domain::{Channel, EventKind, EventLevel};
use crate::secret::Secret;
use crate::stages::optout::{self, UNSUBSCRIBE_PATH};
use crate::stages::Journey;

struct Unsubscribe {
    db: Db,
    secret: Option<Secret>,
}

/// The endpoint's routes, with their own state, for `serve` to merge into its router.
pub(super) fn router<S: Clone + Send + Sync + 'static>(j: &Journey) -> Router<S> {
    let secret = j.settings.unsubscribe_secret.clone();
    if secret.is_none() {
        log::warn!(
            "serve: UNSUBSCRIBE_SECRET is not set: {UNSUBSCRIBE_PATH} answers 503 and no \
             advertising email can be sent; set it (see README, \"Opt-outs\")"
        );
    }
    let state = Arc::new(Unsubscribe {
        db: j.db.clone(),
        secret,
    });
    Router::new()
        .route(UNSUBSCRIBE_PATH, get(page).post(unsubscribe))
        .with_state(state)
}

/// The form field the page's button sends, to tell it from a mail client's one-click POST.
const FROM_PAGE: &str = "seite";

enum Checked {
    Patient(Uuid),
    NotConfigured,
    Invalid,
}

fn check(state: &Unsubscribe, query: Option<&str>) -> (Checked, String) {
    let token = query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "t")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let Some(secret) = &state.secret else {
        return (Checked::NotConfigured, token);
    };
    match optout::verify(secret, &token) {
        Some(patient) => (Checked::Patient(patient), token),
        None => (Checked::Invalid, token),
    }
}

/// `GET`/`HEAD`: the confirmation page. Reads nothing from the database, writes nothing.
async fn page(State(state): State<Arc<Unsubscribe>>, RawQuery(query): RawQuery) -> Response {
    match check(&state, query.as_deref()) {
        (Checked::Patient(_), token) => html(StatusCode::OK, &confirm_page(&token)),
        (Checked::NotConfigured, _) => not_configured(),
        (Checked::Invalid, _) => html(StatusCode::BAD_REQUEST, INVALID_PAGE),
    }
}

/// `POST`: suppresses the patient's email address.
async fn unsubscribe(
    State(state): State<Arc<Unsubscribe>>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let from_page = url::form_urlencoded::parse(&body).any(|(k, _)| k == FROM_PAGE);
    let patient = match check(&state, query.as_deref()) {
        (Checked::Patient(p), _) => p,
        (Checked::NotConfigured, _) => return not_configured(),
        (Checked::Invalid, _) if from_page => return html(StatusCode::BAD_REQUEST, INVALID_PAGE),
        (Checked::Invalid, _) => return StatusCode::BAD_REQUEST.into_response(),
    };
    let reason = if from_page {
        "unsubscribe_page"
    } else {
        "one_click"
    };
    if let Err(e) = suppress_patient(&state.db, patient, reason).await {
        log::error!("unsubscribe of patient {patient} failed: {e:#}");
        return if from_page {
            html(StatusCode::SERVICE_UNAVAILABLE, FAILED_PAGE)
        } else {
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        };
    }
    if from_page {
        html(StatusCode::OK, DONE_PAGE)
    } else {
        let mut r = StatusCode::OK.into_response();
        no_store(&mut r);
        r
    }
}

/// Suppresses the patient's current email address. A patient without a row or a usable
/// address gets nothing more anyway: nothing is written then.
async fn suppress_patient(db: &Db, patient: Uuid, reason: &str) -> anyhow::Result<()> {
    let rows = bookings::load_patients(db, &[patient]).await?;
    let address = rows
        .get(&patient)
        .and_then(|p| p.email.as_deref())
        .and_then(|e| optout::normalise(Channel::Email, e).ok());
    let Some(address) = address else {
        log::info!("unsubscribe: patient {patient} has no usable email address; nothing to do");
        return Ok(());
    };
    let new = suppressions::add(db, Channel::Email, &address, reason, "unsubscribe").await?;
    log::info!("unsubscribe: patient {patient} suppressed on email ({reason})");
    if new {
        let props = serde_json::json!({"patient_id": patient, "channel": "email",
                                       "reason": reason, "source": "unsubscribe"});
        if let Err(e) = runs::event(db, EventKind::Unsubscribed, EventLevel::Info, &props).await {
            log::error!("failed to write the unsubscribed event: {e:#}");
        }
    }
    Ok(())
}

fn no_store(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The token is in the URL: no other site learns it from a Referer.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

fn html(status: StatusCode, body: &str) -> Response {
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body.to_string(),
    )
        .into_response();
    no_store(&mut r);
    r
}

fn not_configured() -> Response {
    log::error!("unsubscribe: UNSUBSCRIBE_SECRET is not set; the link cannot be checked");
    html(StatusCode::SERVICE_UNAVAILABLE, FAILED_PAGE)
}

const HEAD: &str = "<!DOCTYPE html>\n<html lang=\"de\">\n<head>\n<meta charset=\"utf-8\">\n\
    <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
    <meta name=\"robots\" content=\"noindex\">\n<title>E-Mails abbestellen</title>\n\
    <style>body{font-family:sans-serif;max-width:34em;margin:3em auto;padding:0 1em;\
    color:#2b2b2b;line-height:1.5}button{background:#3c6e5a;color:#fff;border:0;\
    padding:.7em 1.2em;border-radius:6px;font-size:1em;cursor:pointer}</style>\n</head>\n<body>\n";
const FOOT: &str = "</body>\n</html>\n";

fn confirm_page(token: &str) -> String {
    // The token is base64url; escaped all the same, it goes into an attribute.
    let action = handlebars::html_escape(&format!("{UNSUBSCRIBE_PATH}?t={token}"));
    format!(
        "{HEAD}<h1>Keine E-Mails mehr von uns?</h1>\n\
         <p>Wenn Sie bestätigen, senden wir Ihnen keine E-Mails mehr: keine Terminvorschläge, \
         aber auch keine Bestätigungen oder Erinnerungen zu Terminen. Möchten Sie später wieder \
         von uns hören, antworten Sie einfach auf eine unserer E-Mails.</p>\n\
         <form method=\"post\" action=\"{action}\">\n\
         <input type=\"hidden\" name=\"{FROM_PAGE}\" value=\"1\">\n\
         <button type=\"submit\" id=\"abmelden\">Ja, abmelden</button>\n</form>\n\
         <p><small>Sie haben es sich anders überlegt? Dann schließen Sie diese Seite einfach; \
         es ändert sich nichts.</small></p>\n{FOOT}"
    )
}

const DONE_PAGE: &str = "<!DOCTYPE html>\n<html lang=\"de\">\n<head>\n<meta charset=\"utf-8\">\n\
    <meta name=\"robots\" content=\"noindex\">\n<title>Abgemeldet</title>\n</head>\n<body>\n\
    <h1 id=\"abgemeldet\">Sie sind abgemeldet</h1>\n<p>Wir senden Ihnen keine E-Mails mehr. \
    Es kann einige Minuten dauern, bis das für alle Nachrichten gilt.</p>\n\
    </body>\n</html>\n";

const INVALID_PAGE: &str =
    "<!DOCTYPE html>\n<html lang=\"de\">\n<head>\n<meta charset=\"utf-8\">\n\
    <meta name=\"robots\" content=\"noindex\">\n<title>Link ungültig</title>\n</head>\n<body>\n\
    <h1>Dieser Link ist ungültig</h1>\n<p>Bitte verwenden Sie den vollständigen Link aus Ihrer \
    E-Mail, oder antworten Sie auf die E-Mail: wir melden Sie dann von Hand ab.</p>\n\
    </body>\n</html>\n";

const FAILED_PAGE: &str = "<!DOCTYPE html>\n<html lang=\"de\">\n<head>\n<meta charset=\"utf-8\">\n\
    <meta name=\"robots\" content=\"noindex\">\n<title>Bitte später erneut versuchen</title>\n\
    </head>\n<body>\n<h1>Das hat gerade nicht geklappt</h1>\n<p>Bitte versuchen Sie es in \
    einigen Minuten noch einmal, oder antworten Sie auf die E-Mail: wir melden Sie dann von \
    Hand ab.</p>\n</body>\n</html>\n";
