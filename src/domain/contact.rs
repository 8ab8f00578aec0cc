//! Contact newtypes that can only be built by parsing ([`EmailAddress`], [`PhoneNumber`] in
//! E.164) and the masking used wherever an address reaches a log, a report or an error.

use std::fmt;

/// An email address a message may be sent to. Built only by [`EmailAddress::parse`], which
/// rejects what the marketplace uses as "no email": empty strings and `temp_…` placeholders.
///
/// `Debug` and `Display` show the masked form, so an address cannot leak into a log by accident;
/// [`EmailAddress::as_str`] gives the full address to the code that sends.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(raw: &str) -> Result<EmailAddress, &'static str> {
        let s = raw.trim();
        if s.is_empty() {
            return Err("empty email address");
        }
        if s.to_ascii_lowercase().starts_with("temp_") {
            return Err("placeholder email address (temp_…)");
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return Err("email address without @");
        };
        if local.is_empty()
            || domain.is_empty()
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || s.chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
        {
            return Err("malformed email address");
        }
        Ok(EmailAddress(s.to_string()))
    }

    /// The full address, for the transport only.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn masked(&self) -> String {
        mask_email(&self.0)
    }
}

impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmailAddress({})", self.masked())
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// A phone number in E.164 form: `+` followed by 8 to 15 digits, the first not zero.
/// Numbers written with spaces, dashes, dots or parentheses are normalised; anything else is
/// rejected, and an unparsable number is never sent to.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub fn parse(raw: &str) -> Result<PhoneNumber, &'static str> {
        let compact: String = raw
            .trim()
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '/'))
            .collect();
        let Some(digits) = compact.strip_prefix('+') else {
            return Err("phone number does not start with +");
        };
        if !(8..=15).contains(&digits.len()) || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err("phone number is not + and 8-15 digits");
        }
        if digits.starts_with('0') {
            return Err("phone number has no country code");
        }
        Ok(PhoneNumber(compact))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn masked(&self) -> String {
        mask_phone(&self.0)
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.masked())
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// `jonas.weber@example.de` → `j***@example.de`. Works on any text, parsed or not, so that
/// logs can mask raw values too.
pub fn mask_email(raw: &str) -> String {
    match raw.trim().rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_string(),
    }
}

/// `+4915112345678` → `+49***5678`.
pub fn mask_phone(raw: &str) -> String {
    let chars: Vec<char> = raw.trim().chars().collect();
    if chars.len() < 8 {
        return "***".to_string();
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}***{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_and_empty_addresses_are_no_email() {
        assert!(EmailAddress::parse("").is_err());
        assert!(EmailAddress::parse("   ").is_err());
        assert!(EmailAddress::parse("temp_123@kaufmann.health").is_err());
        assert!(EmailAddress::parse("TEMP_x@example.de").is_err());
        assert!(EmailAddress::parse("no-at-sign").is_err());
        assert!(EmailAddress::parse("a@b").is_err());
        assert!(EmailAddress::parse("jonas.weber@example.de").is_ok());
    }

    #[test]
    fn email_debug_and_display_are_masked() {
        let e = EmailAddress::parse("jonas.weber@example.de").unwrap();
        assert_eq!(format!("{e}"), "j***@example.de");
        assert!(!format!("{e:?}").contains("jonas"));
    }

    #[test]
    fn phone_numbers_must_be_e164() {
        assert_eq!(
            PhoneNumber::parse("+49 151 1234-5678").unwrap().as_str(),
            "+4915112345678"
        );
        assert!(PhoneNumber::parse("015112345678").is_err());
        assert!(PhoneNumber::parse("+49").is_err());
        assert!(PhoneNumber::parse("+1234567890123456").is_err());
        assert!(PhoneNumber::parse("+49abc12345678").is_err());
        assert!(PhoneNumber::parse("+0049151123456").is_err());
    }

    #[test]
    fn phone_is_masked_to_prefix_and_last_four() {
        assert_eq!(mask_phone("+4915112344567"), "+49***4567");
        let p = PhoneNumber::parse("+4915112344567").unwrap();
        assert_eq!(format!("{p:?}"), "PhoneNumber(+49***4567)");
    }
}
