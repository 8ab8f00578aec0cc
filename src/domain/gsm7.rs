//! The GSM-7 alphabet of SMS (3GPP TS 23.038): which characters fit a 7-bit segment and how
//! many septets they take. A text of at most 160 septets is one SMS.

/// Characters of the basic table: one septet each.
pub const BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// Characters of the extension table: an escape plus the character, two septets each.
pub const EXTENDED: &str = "^{}\\[~]|€\u{000C}";

/// Septets one segment holds.
pub const SEGMENT: usize = 160;

/// Septets `s` takes; a character outside GSM-7 counts as a whole segment and more, so such a
/// text never fits (it would be sent as UCS-2 with 70 characters a segment).
pub fn septets(s: &str) -> usize {
    s.chars()
        .map(|c| {
            if BASIC.contains(c) {
                1
            } else if EXTENDED.contains(c) {
                2
            } else {
                SEGMENT + 1
            }
        })
        .sum()
}

/// Whether `s` fits one GSM-7 segment.
pub fn fits_one_segment(s: &str) -> bool {
    septets(s) <= SEGMENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_characters_count_twice_and_others_never_fit() {
        assert!(fits_one_segment(
            "Erinnerung: Ihr Termin morgen um 14:00 Uhr bei Dr. Lena Brandt. Grüße!"
        ));
        assert!(fits_one_segment(&"a".repeat(160)));
        assert!(!fits_one_segment(&"a".repeat(161)));
        assert!(!fits_one_segment(&format!("{}€", "a".repeat(159))));
        assert!(!fits_one_segment("„Zitat“"));
    }
}
