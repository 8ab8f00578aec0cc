//! A wrapper for values that must never be printed: passwords inside URLs, API tokens, the
//! webhook key. `Debug` and `Display` show `[redacted]`; only `expose` gives the value, and
//! only code that hands it to a library calls it.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Removes the password from a URL-like string for messages: `postgres://u:pw@h/db` →
/// `postgres://u:***@h/db`. Used when a URL has to be named in an error.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            let mut s = u.to_string();
            // Query strings may carry passwords too (`?password=`); drop them.
            if let Some(i) = s.find('?') {
                s.truncate(i);
                s.push_str("?…");
            }
            s
        }
        Err(_) => "<unparsable URL>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
    }

    #[test]
    fn url_passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:hunter2@db.example:5432/main?sslmode=require"),
            "postgres://app:***@db.example:5432/main?…"
        );
        assert_eq!(redact_url("not a url"), "<unparsable URL>");
    }
}
