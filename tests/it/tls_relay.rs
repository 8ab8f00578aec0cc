//! A TLS-capable SMTP relay for the tests, the way providers and company relays run one:
//! STARTTLS or implicit TLS (`smtps://`), AUTH PLAIN/LOGIN, a certificate from a private CA.
//!
//! The SMTP side is the `mailin` crate's session (the state machine under mailin-embedded,
//! which we did not write): it offers STARTTLS and AUTH, refuses AUTH before TLS, and checks
//! the command sequence. What this file adds is what mailin-embedded lacks: implicit TLS,
//! a relay that offers AUTH without any TLS (to prove we never use it), and a record of who
//! authenticated. TLS is rustls's server side; the certificates are made per test with
//! rcgen: a throwaway CA and a relay certificate it signs for the names a test asks for.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use mailin::response::{AUTH_OK, INVALID_CREDENTIALS, OK, START_DATA};
use mailin::{Action, AuthMechanism, Handler, Response, SessionBuilder};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::support::{envelope_handler_methods, Envelope};

/// The account the relay accepts.
pub const USER: &str = "praxis@example.de";
/// Its password: characters that must be percent-encoded in a URL, two (`&`, `+`) that a
/// URL may carry as they are, and recognisable in any output it leaks into.
pub const PASSWORD: &str = "Sch/üssel 7:k@9%Q&x+y";

/// `USER:PASSWORD` as the user part of an SMTP URL.
pub fn userinfo(password: &str) -> String {
    let enc = |s: &str| {
        url::form_urlencoded::byte_serialize(s.as_bytes())
            .collect::<String>()
            .replace('+', "%20")
    };
    format!("{}:{}", enc(USER), enc(password))
}

/// A throwaway certificate authority, its PEM file on disk for `SMTP_CA_FILE`.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} Test CA"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, issuer.pem()).unwrap();
        Ca {
            issuer,
            file,
            _dir: dir,
        }
    }

    /// A relay certificate for `names` (DNS names), signed by this CA.
    pub fn relay_cert(&self, names: &[&str]) -> RelayCert {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("relay"),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        RelayCert {
            chain: vec![cert.der().clone()],
            key: key.serialize_der(),
        }
    }
}

/// A relay's certificate and private key.
pub struct RelayCert {
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
}

impl RelayCert {
    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(self.chain.clone(), key)
        .unwrap();
        Arc::new(config)
    }
}

/// How the relay protects the session.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// Plain greeting, STARTTLS offered; AUTH only after it.
    StartTls,
    /// TLS from the first byte (port 465 style); AUTH right away.
    Implicit,
    /// No TLS at all, and still offering AUTH (a relay we must not give the password to
    /// unless told `tls=none`).
    PlainWithAuth,
    /// No TLS and no AUTH: a local relay.
    Plain,
}

/// One message as the relay received it.
#[derive(Clone, Debug)]
pub struct Mail {
    pub to: Vec<String>,
    pub raw: Vec<u8>,
    /// Whether the session was encrypted when the message arrived.
    pub over_tls: bool,
}

/// One AUTH attempt: the user as the relay decoded it and whether the password matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthAttempt {
    pub mechanism: &'static str,
    pub user: String,
    pub accepted: bool,
    pub over_tls: bool,
}

#[derive(Default)]
struct State {
    mails: Mutex<Vec<Mail>>,
    auth: Mutex<Vec<AuthAttempt>>,
    sessions: Mutex<usize>,
}

#[derive(Clone)]
struct Recorder {
    state: Arc<State>,
    /// This session's TLS state, set by the connection loop.
    tls: Arc<AtomicBool>,
    envelope: Envelope,
}

impl Recorder {
    fn check(&mut self, mechanism: &'static str, user: &str, password: &str) -> Response {
        let accepted = user == USER && password == PASSWORD;
        self.state.auth.lock().unwrap().push(AuthAttempt {
            mechanism,
            user: user.to_string(),
            accepted,
            over_tls: self.tls.load(Ordering::SeqCst),
        });
        if accepted {
            AUTH_OK
        } else {
            INVALID_CREDENTIALS
        }
    }
}

impl Handler for Recorder {
    envelope_handler_methods!();
    fn rcpt(&mut self, to: &str) -> Response {
        self.envelope.rcpt(to);
        OK
    }
    fn data_end(&mut self) -> Response {
        let (to, raw) = self.envelope.take();
        self.state.mails.lock().unwrap().push(Mail {
            to,
            raw,
            over_tls: self.tls.load(Ordering::SeqCst),
        });
        OK
    }
    fn auth_plain(&mut self, _authz: &str, user: &str, password: &str) -> Response {
        self.check("PLAIN", user, password)
    }
    fn auth_login(&mut self, user: &str, password: &str) -> Response {
        self.check("LOGIN", user, password)
    }
}

/// The relay: listening on a loopback port until the test process ends.
pub struct TlsRelay {
    pub port: u16,
    state: Arc<State>,
}

impl TlsRelay {
    /// A relay in `mode` offering `mechanisms`, presenting `cert` (ignored without TLS).
    pub fn start(mode: Mode, cert: Option<&RelayCert>, mechanisms: &[AuthMechanism]) -> TlsRelay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the TLS relay");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State::default());
        let tls = cert.map(RelayCert::server_config);
        let mut builder = SessionBuilder::new("relay.test");
        match mode {
            Mode::StartTls => {
                builder.enable_start_tls();
            }
            Mode::PlainWithAuth => {
                builder.insecure_enable_plaintext_auth();
            }
            Mode::Implicit | Mode::Plain => {}
        }
        if mode != Mode::Plain {
            for m in mechanisms {
                builder.enable_auth(m.clone());
            }
        }
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (builder, tls, state) = (builder.clone(), tls.clone(), shared.clone());
                std::thread::spawn(move || {
                    // A client that gives up mid-session (a refused certificate) is normal.
                    let _ = serve(stream, mode, &builder, tls, state);
                });
            }
        });
        TlsRelay { port, state }
    }

    /// `scheme://USER:password@localhost:port?query` with only what the URL syntax demands
    /// percent-encoded (as `url` writes it): `&` and `+` stay as they are.
    pub fn url_as_written(&self, scheme: &str, password: &str, query: &str) -> String {
        let mut u = url::Url::parse(&self.url(scheme, None, query)).unwrap();
        u.set_username(USER).unwrap();
        u.set_password(Some(password)).unwrap();
        u.to_string()
    }

    /// `scheme://userinfo@localhost:port?query`
    pub fn url(&self, scheme: &str, userinfo: Option<&str>, query: &str) -> String {
        let user = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!("{scheme}://{user}localhost:{}{query}", self.port)
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.state.mails.lock().unwrap().clone()
    }

    pub fn auth_attempts(&self) -> Vec<AuthAttempt> {
        self.state.auth.lock().unwrap().clone()
    }

    /// TCP connections accepted so far.
    pub fn sessions(&self) -> usize {
        *self.state.sessions.lock().unwrap()
    }
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

fn serve(
    tcp: TcpStream,
    mode: Mode,
    builder: &SessionBuilder,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: Arc<State>,
) -> std::io::Result<()> {
    *state.sessions.lock().unwrap() += 1;
    let on_tls = Arc::new(AtomicBool::new(false));
    let handler = Recorder {
        state,
        tls: on_tls.clone(),
        envelope: Envelope::default(),
    };
    let mut session = builder.build(tcp.peer_addr()?.ip(), handler);
    let accept = |tcp: TcpStream| -> std::io::Result<Box<dyn Stream>> {
        let config = tls.clone().expect("a TLS relay needs a certificate");
        let conn = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        // Finish the handshake now, so a client refusing the certificate ends it here.
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(Box::new(stream))
    };
    let mut io = BufReader::new(if mode == Mode::Implicit {
        let s = accept(tcp.try_clone()?)?;
        session.tls_active();
        on_tls.store(true, Ordering::SeqCst);
        s
    } else {
        Box::new(tcp.try_clone()?) as Box<dyn Stream>
    });
    reply(io.get_mut(), &session.greeting())?;
    let mut line = Vec::new();
    loop {
        line.clear();
        if io.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let res = session.process(&line);
        match res.action {
            Action::Reply => reply(io.get_mut(), &res)?,
            Action::Close => return reply(io.get_mut(), &res),
            Action::NoReply => {}
            Action::UpgradeTls => {
                reply(io.get_mut(), &res)?;
                // The client sends nothing before its handshake: nothing is buffered.
                io = BufReader::new(accept(tcp.try_clone()?)?);
                session.tls_active();
                on_tls.store(true, Ordering::SeqCst);
            }
        }
    }
}

fn reply(out: &mut dyn Stream, res: &Response) -> std::io::Result<()> {
    out.write_all(&res.buffer()?)?;
    out.flush()
}
