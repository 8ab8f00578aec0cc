//! Unit tests of `stages::optout` (no PostgreSQL).

use super::link::token;
use super::*;
use crate::domain::MessageKind;
use crate::secret::Secret;

fn secret() -> Secret {
    Secret::new("0123456789abcdef0123456789abcdef")
}

#[test]
fn a_token_names_its_patient_and_nothing_else_verifies() {
    let p = Uuid::new_v4();
    let t = token(&secret(), p);
    assert_eq!(t.len(), 44, "{t}");
    assert_eq!(verify(&secret(), &t), Some(p));
    let other = Secret::new("another secret of enough length, 32+");
    assert_eq!(verify(&other, &t), None);
    let mut forged = t.clone().into_bytes();
    forged[30] = if forged[30] == b'A' { b'B' } else { b'A' };
    assert_eq!(verify(&secret(), &String::from_utf8(forged).unwrap()), None);
    assert_eq!(verify(&secret(), "garbage!"), None);
    assert_eq!(verify(&secret(), ""), None);
    assert_eq!(verify(&secret(), &t[..40]), None);
}

#[test]
fn only_the_three_advertising_messages_carry_an_opt_out() {
    let marketing: Vec<_> = MessageKind::ALL
        .into_iter()
        .filter(|k| is_marketing(*k))
        .collect();
    assert_eq!(
        marketing,
        [
            MessageKind::IntroFollowup,
            MessageKind::SessionFollowup,
            MessageKind::CancellationRecovery
        ]
    );
}

#[test]
fn addresses_are_suppressed_in_one_form() {
    assert_eq!(
        normalise(Channel::Email, " Jonas.Weber@Example.DE ").unwrap(),
        "jonas.weber@example.de"
    );
    assert_eq!(
        normalise(Channel::Sms, "+49 151 1234-5678").unwrap(),
        "+4915112345678"
    );
    assert!(normalise(Channel::Sms, "0151 12345678").is_err());
    assert!(normalise(Channel::Email, "temp_123@x.de").is_err());
}
