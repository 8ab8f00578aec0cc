//! The process-wide rustls crypto provider, installed once before the first TLS connection
//! (PostgreSQL, SMTP, Twilio, Cal.com). Depends on nothing else in the crate.

/// Installs ring as the process-wide rustls crypto provider, once. Test builds also link
/// aws-lc (through the test SMTP server), and with two providers rustls refuses to pick one.
pub fn ensure_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
