//! The unsubscribe token of a patient and the opt-out links an advertising email carries
//! (see `stages::optout` for the format and why it names no address).

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::config::Settings;
use crate::domain::MessageKind;
use crate::secret::Secret;

/// The path `serve` answers unsubscribe links on (README, "Opt-outs").
pub(crate) const UNSUBSCRIBE_PATH: &str = "/api/public/unsubscribe";

const TOKEN_VERSION: u8 = 1;
const TOKEN_DOMAIN: &[u8] = b"journeyctl/unsubscribe";
const MAC_LEN: usize = 16;
const TOKEN_LEN: usize = 1 + 16 + MAC_LEN;

/// The messages that advertise (a new booking) and so carry an opt-out.
pub(crate) fn is_marketing(kind: MessageKind) -> bool {
    kind.advertises()
}

fn mac(secret: &Secret, patient: &Uuid) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(TOKEN_DOMAIN);
    mac.update(&[0, TOKEN_VERSION]);
    mac.update(patient.as_bytes());
    mac
}

/// The unsubscribe token of a patient.
pub(crate) fn token(secret: &Secret, patient: Uuid) -> String {
    let tag = mac(secret, &patient).finalize().into_bytes();
    let mut raw = Vec::with_capacity(TOKEN_LEN);
    raw.push(TOKEN_VERSION);
    raw.extend_from_slice(patient.as_bytes());
    raw.extend_from_slice(&tag[..MAC_LEN]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// The patient a token names, when it is one of ours (checked in constant time).
pub(crate) fn verify(secret: &Secret, token: &str) -> Option<Uuid> {
    if token.len() > 64 {
        return None;
    }
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim())
        .ok()?;
    if raw.len() != TOKEN_LEN || raw[0] != TOKEN_VERSION {
        return None;
    }
    let patient = Uuid::from_slice(&raw[1..17]).ok()?;
    mac(secret, &patient)
        .verify_truncated_left(&raw[17..])
        .ok()
        .map(|()| patient)
}

/// The unsubscribe link of a patient, or the setting that is missing to make one.
pub(crate) fn unsubscribe_url(settings: &Settings, patient: Uuid) -> Result<String, &'static str> {
    let base = settings
        .public_callback_base
        .as_ref()
        .ok_or("PUBLIC_CALLBACK_BASE")?;
    let secret = settings
        .unsubscribe_secret
        .as_ref()
        .ok_or("UNSUBSCRIBE_SECRET")?;
    Ok(format!(
        "{}{UNSUBSCRIBE_PATH}?t={}",
        base.as_str().trim_end_matches('/'),
        token(secret, patient)
    ))
}

/// The opt-out of an advertising email when no one-click link can be made: a reply to the
/// practice's mailbox (`EMAIL_REPLY_TO`, else `EMAIL_FROM`), which RFC 2369 allows in
/// `List-Unsubscribe` and every mail client opens.
pub(crate) fn reply_unsubscribe(settings: &Settings) -> String {
    let mailbox = settings
        .email
        .reply_to
        .as_deref()
        .unwrap_or(&settings.email.from);
    let address = mailbox
        .rsplit_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map_or(mailbox, |(inner, _)| inner)
        .trim();
    format!("mailto:{address}?subject=Abmelden")
}
