//! `POST /api/public/twilio/status` on `serve`: Twilio's delivery status of each SMS, recorded
//! on its ledger row (`provider_status`, `provider_error_code`).
//!
//! The request must carry a valid `X-Twilio-Signature` over the URL as configured
//! (`PUBLIC_CALLBACK_BASE` + path + query) and the form; otherwise 403 and nothing is
//! written. Without `PUBLIC_CALLBACK_BASE` or a Twilio auth token nothing can be verified,
//! so every request is refused. Logs name deliveries by id, never a number or a body.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use axum::Router;

use crate::config::{SmsTransport, TWILIO_STATUS_PATH};
use crate::db::sms::{record_status, Recorded};
use crate::db::Db;
use crate::domain::SmsStatus;
use crate::secret::Secret;
use crate::stages::Journey;
use crate::webhook::twilio_status::{
    parse_form, read, verify, Params, StatusCallback, SIGNATURE_HEADER,
};

/// Twilio's callbacks are a few hundred bytes.
const MAX_BODY: usize = 64 * 1024;

struct StatusState {
    db: Db,
    auth_token: Option<Secret>,
    base: Option<url::Url>,
}

/// The route with its own state, to be merged into `serve`'s router.
pub(super) fn router(j: &Journey) -> Router {
    let auth_token = match &j.settings.sms {
        Some(SmsTransport::Twilio(t)) => Some(t.auth_token.clone()),
        _ => None,
    };
    match (&auth_token, &j.settings.public_callback_base) {
        (Some(_), Some(base)) => log::info!(
            "serve: Twilio status callbacks accepted at {}{TWILIO_STATUS_PATH}",
            base.as_str().trim_end_matches('/')
        ),
        _ => log::info!(
            "serve: Twilio status callbacks are off (they need Twilio and PUBLIC_CALLBACK_BASE)"
        ),
    }
    let state = Arc::new(StatusState {
        db: j.db.clone(),
        auth_token,
        base: j.settings.public_callback_base.clone(),
    });
    Router::new()
        .route(TWILIO_STATUS_PATH, post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            super::webhook::REQUEST_TIMEOUT,
        ))
        .with_state(state)
}

async fn receive(
    State(s): State<Arc<StatusState>>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, &'static str) {
    let params = match verified(&s, &uri, &headers, &body) {
        Ok(params) => params,
        Err(refused) => return refused,
    };
    let cb = match read(uri.query(), &params) {
        Ok(cb) => cb,
        Err(e) => {
            log::warn!("twilio status callback not usable: {e}");
            return (StatusCode::BAD_REQUEST, "malformed status callback\n");
        }
    };
    let Some(status) = cb.status else {
        log::info!(
            "twilio status callback for delivery {}: status {:?} is not tracked",
            cb.delivery_id,
            cb.raw_status.chars().take(20).collect::<String>()
        );
        return (StatusCode::OK, "");
    };
    let recorded = record_status(
        &s.db,
        cb.delivery_id,
        status,
        cb.error_code.as_deref(),
        cb.message_sid.as_deref(),
    )
    .await;
    answer(&cb, status, recorded)
}

/// The form of a callback whose `X-Twilio-Signature` verifies over the URL as configured
/// (`PUBLIC_CALLBACK_BASE` + path + query); otherwise the 403 to answer.
fn verified(
    s: &StatusState,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Params, (StatusCode, &'static str)> {
    let (Some(token), Some(base)) = (&s.auth_token, &s.base) else {
        log::warn!(
            "twilio status callback refused: PUBLIC_CALLBACK_BASE and the Twilio auth token \
             are needed to verify it"
        );
        return Err((
            StatusCode::FORBIDDEN,
            "status callbacks are not configured\n",
        ));
    };
    let base = base.as_str().trim_end_matches('/');
    let url = match uri.query() {
        Some(q) => format!("{base}{TWILIO_STATUS_PATH}?{q}"),
        None => format!("{base}{TWILIO_STATUS_PATH}"),
    };
    let params = parse_form(body);
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    if let Err(e) = verify(token.expose(), &url, &params, signature) {
        log::warn!("twilio status callback refused: {e}");
        return Err((StatusCode::FORBIDDEN, "signature check failed\n"));
    }
    Ok(params)
}

/// Logs what recording a status did, and the answer to Twilio: 200 unless the database failed
/// (then Twilio tries again).
fn answer(
    cb: &StatusCallback,
    status: SmsStatus,
    recorded: anyhow::Result<Recorded>,
) -> (StatusCode, &'static str) {
    match recorded {
        Ok(Recorded::Updated) => {
            log::info!(
                "sms delivery {}: {}{}",
                cb.delivery_id,
                status.as_str(),
                cb.error_code
                    .as_deref()
                    .map(|c| format!(" (error {c})"))
                    .unwrap_or_default()
            );
            (StatusCode::OK, "")
        }
        Ok(Recorded::Kept) => {
            log::debug!(
                "sms delivery {}: {} is not newer than the recorded status; kept",
                cb.delivery_id,
                status.as_str()
            );
            (StatusCode::OK, "")
        }
        Ok(Recorded::Unknown) => {
            log::warn!(
                "twilio status callback for delivery {}: no such SMS delivery (or another \
                 message sid); ignored",
                cb.delivery_id
            );
            (StatusCode::OK, "")
        }
        Err(e) => {
            log::error!("sms delivery {}: {e:#}", cb.delivery_id);
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not record the status\n",
            )
        }
    }
}
