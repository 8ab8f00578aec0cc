//! Twilio's message status callbacks: checking `X-Twilio-Signature` and reading the form.
//!
//! Pure: no I/O, no database, no clock. The signature is Twilio's documented scheme: the full
//! URL Twilio requested (as we configured it in `StatusCallback`), followed by every POST
//! parameter sorted by name, each name directly followed by its value; HMAC-SHA1 of that with
//! the account's auth token, base64. The comparison is constant-time (`Mac::verify_slice`).
//!
//! The statuses themselves, and their order, are `domain::SmsStatus`.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

pub(crate) use crate::domain::SmsStatus;

/// The header Twilio signs its requests with.
pub(crate) const SIGNATURE_HEADER: &str = "x-twilio-signature";

/// Why a callback was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StatusError {
    #[error("no X-Twilio-Signature header")]
    MissingSignature,
    #[error("the X-Twilio-Signature does not match")]
    BadSignature,
    #[error("the callback URL has no delivery id (?d=...)")]
    MissingDelivery,
    #[error("the delivery id is not a UUID")]
    BadDelivery,
    #[error("the body has no MessageStatus")]
    MissingStatus,
}

/// The form parameters of a callback, in the order they came.
pub(crate) type Params = Vec<(String, String)>;

/// Decodes an `application/x-www-form-urlencoded` body.
pub(crate) fn parse_form(body: &[u8]) -> Params {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// The base64 HMAC-SHA1 signature Twilio sends for `url` and `params`.
#[cfg(test)]
pub(crate) fn sign(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mac = mac_over(auth_token, url, params);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn mac_over(auth_token: &str, url: &str, params: &[(String, String)]) -> Hmac<Sha1> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac =
        Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes keys of any size");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

/// Checks `signature` (the header's value) for `url` and `params`, in constant time.
pub(crate) fn verify(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    signature: Option<&str>,
) -> Result<(), StatusError> {
    let sig = signature
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(StatusError::MissingSignature)?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(sig)
        .map_err(|_| StatusError::BadSignature)?;
    mac_over(auth_token, url, params)
        .verify_slice(&raw)
        .map_err(|_| StatusError::BadSignature)
}

/// One verified callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StatusCallback {
    pub delivery_id: uuid::Uuid,
    /// `MessageSid`.
    pub message_sid: Option<String>,
    /// `None` for a status this program does not know (it is logged and not recorded).
    pub status: Option<SmsStatus>,
    pub raw_status: String,
    /// `ErrorCode` (e.g. 30003 unreachable handset), when Twilio gives one.
    pub error_code: Option<String>,
}

/// Reads a callback whose signature was verified: the delivery id from the query, the
/// status from the form.
pub(crate) fn read(
    query: Option<&str>,
    params: &[(String, String)],
) -> Result<StatusCallback, StatusError> {
    let d = query
        .map(|q| url::form_urlencoded::parse(q.as_bytes()))
        .and_then(|mut q| q.find(|(k, _)| k == "d").map(|(_, v)| v.into_owned()))
        .ok_or(StatusError::MissingDelivery)?;
    let delivery_id = uuid::Uuid::parse_str(d.trim()).map_err(|_| StatusError::BadDelivery)?;
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let raw_status = get("MessageStatus").ok_or(StatusError::MissingStatus)?;
    Ok(StatusCallback {
        delivery_id,
        message_sid: get("MessageSid"),
        status: SmsStatus::parse(&raw_status.to_ascii_lowercase()),
        raw_status,
        error_code: get("ErrorCode")
            .filter(|c| c.len() <= 10 && c.bytes().all(|b| b.is_ascii_digit())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn twilios_documented_example_signature_is_reproduced() {
        // The worked example of Twilio's request validation (auth token 12345).
        let params = p(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]);
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(sign("12345", url, &params), "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
        assert!(verify("12345", url, &params, Some("RSOYDt4T1cUTdK1PDd93/VVr8B8=")).is_ok());
    }

    #[test]
    fn a_changed_url_param_token_or_missing_header_fails() {
        let params = p(&[("MessageStatus", "delivered"), ("MessageSid", "SM1")]);
        let url = "https://j.example/api/public/twilio/status?d=x";
        let good = sign("tok", url, &params);
        assert!(verify("tok", url, &params, Some(&good)).is_ok());
        assert_eq!(
            verify("tok", &format!("{url}y"), &params, Some(&good)),
            Err(StatusError::BadSignature)
        );
        let tampered = p(&[("MessageStatus", "failed"), ("MessageSid", "SM1")]);
        assert_eq!(
            verify("tok", url, &tampered, Some(&good)),
            Err(StatusError::BadSignature)
        );
        assert_eq!(
            verify("other", url, &params, Some(&good)),
            Err(StatusError::BadSignature)
        );
        assert_eq!(
            verify("tok", url, &params, Some("not base64!")),
            Err(StatusError::BadSignature)
        );
        assert_eq!(
            verify("tok", url, &params, None),
            Err(StatusError::MissingSignature)
        );
    }

    #[test]
    fn a_callback_is_read_from_query_and_form() {
        let id = uuid::Uuid::new_v4();
        let cb = read(
            Some(&format!("d={id}")),
            &p(&[
                ("MessageStatus", "undelivered"),
                ("ErrorCode", "30003"),
                ("MessageSid", "SM9"),
            ]),
        )
        .unwrap();
        assert_eq!(cb.delivery_id, id);
        assert_eq!(cb.status, Some(SmsStatus::Undelivered));
        assert_eq!(cb.error_code.as_deref(), Some("30003"));
        assert_eq!(
            read(None, &p(&[("MessageStatus", "sent")])),
            Err(StatusError::MissingDelivery)
        );
        assert_eq!(
            read(Some("d=nope"), &p(&[("MessageStatus", "sent")])),
            Err(StatusError::BadDelivery)
        );
        assert_eq!(
            read(Some(&format!("d={id}")), &[]),
            Err(StatusError::MissingStatus)
        );
    }
}
