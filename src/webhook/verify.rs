//! Authenticity of a Cal.com webhook body: the `X-Cal-Signature-256` header must be the hex
//! HMAC-SHA256 of the raw body under `CAL_WEBHOOK_SECRET` (README, install step 5).
//!
//! This runs on the raw bytes, before anything is parsed, so an unsigned body never reaches the
//! JSON parser. It does no I/O and never logs: the caller decides what a failure means (401).
//! The comparison is constant-time (`hmac`'s `verify_slice`), so response timing does not leak
//! how much of a forged signature was right.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::Secret;

/// The header Cal.com puts the signature in. HTTP header names are case-insensitive; this is
/// the lower-case form `http::HeaderName` uses.
pub const SIGNATURE_HEADER: &str = "x-cal-signature-256";

/// What Cal.com sends in the signature header when the webhook has no secret configured on its
/// side. Such deliveries are unauthenticated and must be refused like any other bad signature.
const NO_SECRET_PROVIDED: &str = "no-secret-provided";

type HmacSha256 = Hmac<Sha256>;

/// Why a body was not accepted as coming from Cal.com. Every variant means 401, nothing stored;
/// the variants exist so the log line can say which one without printing the header.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("CAL_WEBHOOK_SECRET is not configured; refusing every webhook")]
    SecretNotConfigured,
    #[error("the X-Cal-Signature-256 header is missing")]
    MissingSignature,
    #[error("the webhook is unsigned (no-secret-provided): set the secret in Cal.com's webhook settings")]
    NoSecretProvided,
    #[error("the X-Cal-Signature-256 header is not a hex SHA-256 digest")]
    Malformed,
    #[error("the X-Cal-Signature-256 header does not match the body")]
    Mismatch,
}

/// Checks `signature` (the header value, if any) against the HMAC of `body` under `secret`.
///
/// An empty secret counts as not configured: with an empty key anyone can sign. Hex is accepted
/// in lower or upper case, with surrounding whitespace trimmed.
pub fn verify_signature(
    secret: Option<&Secret>,
    body: &[u8],
    signature: Option<&str>,
) -> Result<(), VerifyError> {
    let secret = match secret {
        Some(s) if !s.expose().is_empty() => s,
        _ => return Err(VerifyError::SecretNotConfigured),
    };
    let signature = match signature.map(str::trim) {
        Some(s) if !s.is_empty() => s,
        _ => return Err(VerifyError::MissingSignature),
    };
    if signature.eq_ignore_ascii_case(NO_SECRET_PROVIDED) {
        return Err(VerifyError::NoSecretProvided);
    }
    // A SHA-256 digest is 32 bytes; anything else cannot match and is not worth hashing.
    if signature.len() != 64 {
        return Err(VerifyError::Malformed);
    }
    let expected = hex::decode(signature).map_err(|_| VerifyError::Malformed)?;
    mac_of(secret, body)
        .verify_slice(&expected)
        .map_err(|_| VerifyError::Mismatch)
}

/// The lower-case hex signature Cal.com would send for `body`: for tests, the demo and replays
/// (`journeyctl webhook --signature`).
pub fn sign(secret: &Secret, body: &[u8]) -> String {
    hex::encode(mac_of(secret, body).finalize().into_bytes())
}

fn mac_of(secret: &Secret, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::fixtures;
    use proptest::prelude::*;

    fn secret() -> Secret {
        Secret::new(fixtures::SECRET)
    }

    #[test]
    fn every_fixture_verifies_with_its_recorded_signature() {
        let signatures = fixtures::signatures();
        assert_eq!(signatures.len(), fixtures::ALL.len());
        for (name, body) in fixtures::ALL {
            let sig = signatures
                .get(name)
                .unwrap_or_else(|| panic!("{name} has no line in signatures.txt"));
            assert_eq!(
                verify_signature(Some(&secret()), body, Some(sig)),
                Ok(()),
                "{name}"
            );
        }
    }

    #[test]
    fn sign_reproduces_the_signatures_cal_com_sent() {
        let signatures = fixtures::signatures();
        for (name, body) in fixtures::ALL {
            assert_eq!(&sign(&secret(), body), &signatures[name], "{name}");
        }
    }

    #[test]
    fn upper_case_hex_and_surrounding_whitespace_are_accepted() {
        let body = fixtures::BOOKING_CREATED_INTRO;
        let sig = format!("  {}\n", sign(&secret(), body).to_ascii_uppercase());
        assert_eq!(verify_signature(Some(&secret()), body, Some(&sig)), Ok(()));
    }

    #[test]
    fn one_changed_byte_in_any_fixture_is_a_mismatch() {
        let signatures = fixtures::signatures();
        for (name, body) in fixtures::ALL {
            for at in [0, body.len() / 2, body.len() - 1] {
                let mut changed = body.to_vec();
                changed[at] ^= 0x01;
                assert_eq!(
                    verify_signature(Some(&secret()), &changed, Some(&signatures[name])),
                    Err(VerifyError::Mismatch),
                    "{name} byte {at}"
                );
            }
        }
    }

    #[test]
    fn a_wrong_secret_is_a_mismatch() {
        let body = fixtures::BOOKING_CREATED_INTRO;
        let sig = sign(&secret(), body);
        assert_eq!(
            verify_signature(Some(&Secret::new("whsec_other")), body, Some(&sig)),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn the_literal_no_secret_provided_is_refused_as_unsigned() {
        assert_eq!(
            verify_signature(Some(&secret()), fixtures::PING, Some("no-secret-provided")),
            Err(VerifyError::NoSecretProvided)
        );
    }

    #[test]
    fn without_a_configured_secret_nothing_verifies() {
        let body = fixtures::BOOKING_CREATED_INTRO;
        let sig = sign(&secret(), body);
        assert_eq!(
            verify_signature(None, body, Some(&sig)),
            Err(VerifyError::SecretNotConfigured)
        );
        assert_eq!(
            verify_signature(Some(&Secret::new("")), body, Some(&sig)),
            Err(VerifyError::SecretNotConfigured)
        );
    }

    #[test]
    fn a_missing_or_empty_header_is_missing_signature() {
        let body = fixtures::BOOKING_CREATED_INTRO;
        assert_eq!(
            verify_signature(Some(&secret()), body, None),
            Err(VerifyError::MissingSignature)
        );
        assert_eq!(
            verify_signature(Some(&secret()), body, Some("  ")),
            Err(VerifyError::MissingSignature)
        );
    }

    #[test]
    fn a_header_that_is_not_a_hex_digest_is_malformed() {
        let body = fixtures::BOOKING_CREATED_INTRO;
        let good = sign(&secret(), body);
        let not_hex = format!("{}zz", &good[..62]);
        let short = &good[..63];
        let prefixed = format!("sha256={good}");
        for bad in [not_hex.as_str(), short, prefixed.as_str(), "ä"] {
            assert_eq!(
                verify_signature(Some(&secret()), body, Some(bad)),
                Err(VerifyError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn verify_errors_never_print_the_secret() {
        let all = [
            VerifyError::SecretNotConfigured,
            VerifyError::MissingSignature,
            VerifyError::NoSecretProvided,
            VerifyError::Malformed,
            VerifyError::Mismatch,
        ];
        for e in all {
            let text = format!("{e} {e:?}");
            assert!(!text.contains(fixtures::SECRET), "{text}");
        }
    }

    proptest! {
        #[test]
        fn verify_signature_never_panics_on_any_input(
            body in proptest::collection::vec(any::<u8>(), 0..512),
            signature in proptest::option::of(".{0,80}"),
            key in proptest::option::of(".{0,40}"),
        ) {
            let key = key.map(Secret::new);
            let _ = verify_signature(key.as_ref(), &body, signature.as_deref());
        }

        #[test]
        fn a_signature_made_by_sign_always_verifies(
            body in proptest::collection::vec(any::<u8>(), 0..512),
            key in "[ -~]{1,40}",
        ) {
            let key = Secret::new(key);
            let sig = sign(&key, &body);
            prop_assert_eq!(verify_signature(Some(&key), &body, Some(&sig)), Ok(()));
        }
    }
}
