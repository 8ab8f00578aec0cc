//! URL builders for the links our messages carry: the pre-filled Cal.com booking page of a
//! therapist's full session, and the marketplace's match page.
//!
//! Pure string functions: no I/O, no configuration reading. Callers pass origins that
//! `config` has already validated and stripped of their trailing slash; a trailing slash is
//! tolerated anyway so a link never gets a `//`.

use url::form_urlencoded::byte_serialize;
use uuid::Uuid;

/// What a booking link carries: the therapist's booking page and what it is pre-filled with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BookingLink<'a> {
    /// Cal.com's origin (`CAL_ORIGIN`), e.g. `https://cal.com`.
    pub cal_origin: &'a str,
    /// The therapist's Cal.com user name: the first path segment of the page.
    pub cal_username: &'a str,
    pub therapist_id: Uuid,
    pub patient_id: Uuid,
    pub match_id: Option<Uuid>,
    /// Where the patient came from (`kh_source`), e.g. `intro_followup_email`.
    pub source: &'a str,
    /// The patient's name and email, pre-filled on the form when known.
    pub name: Option<&'a str>,
    pub email: Option<&'a str>,
}

/// The pre-filled Cal.com booking page for a therapist's full session:
///
/// `{cal_origin}/{cal_username}/full-session?metadata[kh_therapist_id]=…&metadata[kh_patient_id]=…`
/// `&metadata[kh_match_id]=…&metadata[kh_booking_kind]=full_session&metadata[kh_source]=…&name=…&email=…`
///
/// Every value is form-URL-encoded (a space becomes `+`, a `+` becomes `%2B`); the metadata
/// keys keep their literal brackets, which is how Cal.com reads booking metadata from the
/// query. Absent or empty optional values leave their parameter out, so Cal.com does not
/// pre-fill an empty name.
pub(crate) fn booking_link(link: &BookingLink<'_>) -> String {
    let BookingLink {
        cal_origin,
        cal_username,
        therapist_id,
        patient_id,
        match_id,
        source,
        name,
        email,
    } = *link;
    let therapist_id = therapist_id.to_string();
    let patient_id = patient_id.to_string();
    let match_id = match_id.map(|m| m.to_string());
    let params: [(&str, Option<&str>); 7] = [
        ("metadata[kh_therapist_id]", Some(&therapist_id)),
        ("metadata[kh_patient_id]", Some(&patient_id)),
        ("metadata[kh_match_id]", match_id.as_deref()),
        ("metadata[kh_booking_kind]", Some("full_session")),
        ("metadata[kh_source]", Some(source)),
        ("name", name.map(str::trim)),
        ("email", email.map(str::trim)),
    ];
    let query = params
        .iter()
        .filter_map(|(key, value)| {
            value
                .filter(|v| !v.is_empty())
                .map(|v| format!("{key}={}", encode(v)))
        })
        .collect::<Vec<_>>()
        .join("&");
    format!(
        "{}/{}/full-session?{query}",
        cal_origin.trim_end_matches('/'),
        encode(cal_username.trim().trim_matches('/')),
    )
}

/// The patient's match page: `{public_base_url}/matches/{secure_uuid}`.
pub(crate) fn match_link(public_base_url: &str, secure_uuid: Uuid) -> String {
    format!(
        "{}/matches/{secure_uuid}",
        public_base_url.trim_end_matches('/')
    )
}

fn encode(value: &str) -> String {
    byte_serialize(value.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn booking_link_carries_every_parameter_in_the_documented_order() {
        let link = booking_link(&BookingLink {
            cal_origin: "https://cal.com",
            cal_username: "lena-brandt",
            therapist_id: id(1),
            patient_id: id(2),
            match_id: Some(id(3)),
            source: "intro_followup_email",
            name: Some("Anna"),
            email: Some("anna@example.de"),
        });
        assert_eq!(
            link,
            "https://cal.com/lena-brandt/full-session?\
             metadata[kh_therapist_id]=00000000-0000-0000-0000-000000000001&\
             metadata[kh_patient_id]=00000000-0000-0000-0000-000000000002&\
             metadata[kh_match_id]=00000000-0000-0000-0000-000000000003&\
             metadata[kh_booking_kind]=full_session&\
             metadata[kh_source]=intro_followup_email&\
             name=Anna&email=anna%40example.de"
        );
    }

    #[test]
    fn booking_link_encodes_brackets_spaces_plus_at_and_umlauts_in_values() {
        let link = booking_link(&BookingLink {
            cal_origin: "https://cal.example.de/",
            cal_username: "lena",
            therapist_id: id(1),
            patient_id: id(2),
            match_id: None,
            source: "session_followup_email",
            name: Some("Jörg [Müller] Straße"),
            email: Some("jörg+test@example.de"),
        });
        let query = link.split_once('?').unwrap().1;
        assert!(
            query.contains("name=J%C3%B6rg+%5BM%C3%BCller%5D+Stra%C3%9Fe"),
            "{query}"
        );
        assert!(
            query.contains("email=j%C3%B6rg%2Btest%40example.de"),
            "{query}"
        );
        assert!(link.starts_with("https://cal.example.de/lena/full-session?"));
        // Round trip: what Cal.com decodes is what we meant.
        let decoded: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        assert!(decoded.contains(&("name".into(), "Jörg [Müller] Straße".into())));
        assert!(decoded.contains(&("email".into(), "jörg+test@example.de".into())));
    }

    #[test]
    fn booking_link_leaves_out_absent_parameters() {
        let link = booking_link(&BookingLink {
            cal_origin: "https://cal.com",
            cal_username: "lena",
            therapist_id: id(1),
            patient_id: id(2),
            match_id: None,
            source: "session_followup_email",
            name: None,
            email: Some("  "),
        });
        assert!(!link.contains("kh_match_id"), "{link}");
        assert!(!link.contains("name="), "{link}");
        assert!(!link.contains("email="), "{link}");
        assert!(link.ends_with("metadata[kh_source]=session_followup_email"));
    }

    #[test]
    fn match_link_points_at_the_match_page() {
        let u = Uuid::parse_str("6f1c2a8e-3b4d-4e5f-8a9b-0c1d2e3f4a5b").unwrap();
        assert_eq!(
            match_link("https://example.de/", u),
            "https://example.de/matches/6f1c2a8e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
        );
        assert_eq!(
            match_link("https://example.de", u),
            "https://example.de/matches/6f1c2a8e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
        );
    }
}
