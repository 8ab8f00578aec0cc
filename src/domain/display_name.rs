//! Names of people as they may appear in a message: one line of printable text.
//!
//! Names come from forms and other programs and may hold anything: CR/LF (which would start a
//! new mail header or calendar property), NUL, tabs, Unicode line and paragraph separators,
//! bidi overrides that reorder what a reader sees, zero-width characters. [`sanitize`] is the
//! one function every name passes through before it reaches an email header (the To display
//! name, subjects built from names), a calendar invite or an SMS. It never fails: a name that
//! is nothing but control characters becomes empty, and the caller leaves it out.

/// Longest name kept, in characters. Longer names are cut (at a character boundary).
pub(crate) const MAX_CHARS: usize = 80;

/// Whether `c` must never appear in a name: control characters (Cc), format characters that
/// are invisible or reorder text (bidi embeddings, overrides and isolates, zero-width
/// characters, the byte-order mark, soft hyphen), and the line and paragraph separators.
pub(crate) fn is_forbidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
        )
}

/// One line of printable text: every forbidden character becomes a space, runs of whitespace
/// become one space, and the ends are trimmed. Not bounded in length (subjects use it as a
/// last line of defence; names go through [`sanitize`]).
pub(crate) fn single_line(raw: &str) -> String {
    raw.chars()
        .map(|c| if is_forbidden(c) { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A display name safe for headers, invites and SMS: [`single_line`], at most [`MAX_CHARS`]
/// characters.
pub(crate) fn sanitize(raw: &str) -> String {
    let line = single_line(raw);
    if line.chars().count() <= MAX_CHARS {
        return line;
    }
    line.chars()
        .take(MAX_CHARS)
        .collect::<String>()
        .trim_end()
        .to_string()
}

/// [`sanitize`] for an optional name; `None` when nothing printable is left.
pub(crate) fn sanitize_opt(raw: Option<&str>) -> Option<String> {
    raw.map(sanitize).filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn line_breaks_and_control_characters_never_survive() {
        assert_eq!(
            sanitize("Anna\r\nBcc: evil@example.org"),
            "Anna Bcc: evil@example.org"
        );
        assert_eq!(sanitize("Lena\nBrandt"), "Lena Brandt");
        assert_eq!(sanitize("Jo\0nas\tWeber"), "Jo nas Weber");
        assert_eq!(sanitize("Jonas\u{2028}Weber\u{2029}"), "Jonas Weber");
        assert_eq!(sanitize("\u{202E}rebeW sanoJ\u{202C}"), "rebeW sanoJ");
        assert_eq!(sanitize("Jo\u{200B}nas"), "Jo nas");
        assert_eq!(sanitize("  Jonas   Weber  "), "Jonas Weber");
        assert_eq!(sanitize("\r\n\u{0}"), "");
        assert_eq!(sanitize_opt(Some("\r\n")), None);
        assert_eq!(
            sanitize_opt(Some("Şebnem Yıldız")).as_deref(),
            Some("Şebnem Yıldız")
        );
    }

    #[test]
    fn long_names_are_cut_to_the_bound() {
        let long = "Maximiliane ".repeat(20);
        let s = sanitize(&long);
        assert!(s.chars().count() <= MAX_CHARS, "{s}");
        assert!(!s.ends_with(' '));
    }

    proptest! {
        #[test]
        fn no_output_character_is_forbidden_or_a_line_break(raw in any::<String>()) {
            let s = sanitize(&raw);
            prop_assert!(!s.chars().any(is_forbidden), "{s:?}");
            prop_assert!(!s.contains(['\r', '\n', '\0']));
            prop_assert!(s.chars().count() <= MAX_CHARS);
            prop_assert_eq!(s.trim(), s.as_str());
            prop_assert!(!s.contains("  "));
        }

        #[test]
        fn sanitizing_twice_changes_nothing(raw in any::<String>()) {
            let once = sanitize(&raw);
            prop_assert_eq!(sanitize(&once), once);
        }

        #[test]
        fn printable_names_are_kept(raw in "[A-Za-zÄÖÜäöüßŞşİıĞğ.-]{1,20}( [A-Za-zÄÖÜäöüß.-]{1,20}){0,2}") {
            prop_assert_eq!(sanitize(&raw), raw);
        }
    }
}
