//! The channels against a real SMTP server, a raw TCP peer, and a Twilio stub.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

use journeyctl::config::{
    EmailSettings, EmailTransport, SmsTransport, TwilioSender, TwilioSettings,
};
use journeyctl::domain::{EmailAddress, PhoneNumber};
use journeyctl::notify::email::{Attachment, Mailer, OutgoingEmail};
use journeyctl::notify::sms::SmsSender;
use journeyctl::notify::SendOutcome;
use journeyctl::secret::Secret;
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::transports::SmtpServer;

fn mailer(url: &str) -> Mailer {
    Mailer::from_settings(&EmailSettings {
        transport: Some(EmailTransport::Smtp {
            url: Secret::new(url),
            ca_file: None,
        }),
        from: "Praxisteam <termine@praxis.example>".into(),
        reply_to: Some("antwort@praxis.example".into()),
    })
    .unwrap()
}

fn email() -> OutgoingEmail {
    OutgoingEmail {
        to: EmailAddress::parse("jonas.weber@example.de").unwrap(),
        to_name: Some("Jonas Weber".into()),
        subject: "Ihr Termin bei Dr. Lena Brandt: Grüße aus Köln".into(),
        text: "Schöne Grüße, Ihre Praxis. Straße: Müllerstraße 5".into(),
        html: "<p>Schöne Grüße, Ihre Praxis.</p>".into(),
        attachments: vec![Attachment {
            filename: "termin.ics".into(),
            content_type: "text/calendar; charset=utf-8; method=REQUEST".into(),
            body: b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n".to_vec(),
        }],
        message_id: "<0b8f5c52-2f4e-4c8e-9d7a-1a2b3c4d5e6f@praxis.example>".into(),
        list_unsubscribe: None,
    }
}

#[tokio::test]
async fn an_email_arrives_with_both_parts_its_message_id_an_invite_and_intact_umlauts() {
    let server = SmtpServer::start();
    let outcome = mailer(&server.url()).send(&email()).await;
    assert!(matches!(outcome, SendOutcome::Sent { .. }), "{outcome:?}");
    let mails = server.mails();
    assert_eq!(mails.len(), 1);
    let m = &mails[0];
    assert_eq!(m.to, vec!["jonas.weber@example.de".to_string()]);
    assert_eq!(
        m.subject(),
        "Ihr Termin bei Dr. Lena Brandt: Grüße aus Köln"
    );
    assert!(m.text().contains("Müllerstraße"), "{}", m.text());
    assert!(m.html().contains("<p>Schöne Grüße"), "{}", m.html());
    assert_eq!(
        m.header("Message-ID").as_deref(),
        Some("<0b8f5c52-2f4e-4c8e-9d7a-1a2b3c4d5e6f@praxis.example>")
    );
    let raw = String::from_utf8_lossy(&m.raw);
    assert!(raw.contains("text/calendar"), "{raw}");
    assert!(raw.contains("termin.ics"));
    assert!(raw.contains("Reply-To: antwort@praxis.example"), "{raw}");
}

#[tokio::test]
async fn connections_are_reused_across_sends() {
    let server = SmtpServer::start();
    let m = mailer(&server.url());
    for _ in 0..5 {
        assert!(matches!(m.send(&email()).await, SendOutcome::Sent { .. }));
    }
    assert_eq!(server.mails().len(), 5);
    assert_eq!(server.sessions(), 1, "one SMTP session for five messages");
}

#[tokio::test]
async fn smtp_451_is_transient_and_550_is_permanent() {
    let server = SmtpServer::start();
    server.reply_451(true);
    let outcome = mailer(&server.url()).send(&email()).await;
    match outcome {
        SendOutcome::Transient { reason } => {
            assert!(reason.contains("451"), "{reason}");
            assert!(!reason.contains("jonas.weber"), "{reason}");
        }
        other => panic!("expected transient, got {other:?}"),
    }
    server.reply_451(false);
    server.reply_550(true);
    let outcome = mailer(&server.url()).send(&email()).await;
    assert!(
        matches!(outcome, SendOutcome::Permanent { .. }),
        "{outcome:?}"
    );
    assert!(server.mails().is_empty());
}

#[tokio::test]
async fn a_connection_lost_after_the_body_is_ambiguous() {
    // A peer that speaks SMTP until the end of the body, then hangs up without answering.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut w = stream.try_clone().unwrap();
        let mut r = BufReader::new(stream);
        w.write_all(b"220 peer.test ESMTP\r\n").unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let cmd = line.to_ascii_uppercase();
            if cmd.starts_with("EHLO") {
                w.write_all(b"250-peer.test\r\n250 8BITMIME\r\n").unwrap();
            } else if cmd.starts_with("DATA") {
                w.write_all(b"354 go ahead\r\n").unwrap();
                loop {
                    line.clear();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == ".\r\n" {
                        break;
                    }
                }
                return; // the body arrived; no answer
            } else {
                w.write_all(b"250 ok\r\n").unwrap();
            }
        }
    });
    let outcome = mailer(&format!("smtp://127.0.0.1:{port}"))
        .send(&email())
        .await;
    assert!(
        matches!(outcome, SendOutcome::Ambiguous { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let port = crate::support::free_port();
    let outcome = mailer(&format!("smtp://127.0.0.1:{port}"))
        .send(&email())
        .await;
    assert!(
        matches!(outcome, SendOutcome::Transient { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn the_outbox_writes_a_parseable_eml_file() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mailer::from_settings(&EmailSettings {
        transport: Some(EmailTransport::Outbox {
            dir: dir.path().to_path_buf(),
        }),
        from: "Praxisteam <termine@praxis.example>".into(),
        reply_to: None,
    })
    .unwrap();
    let outcome = m.send(&email()).await;
    let SendOutcome::Sent {
        provider_id: Some(file),
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    let bytes = std::fs::read(dir.path().join(&file)).unwrap();
    let parsed = mail_parser::MessageParser::default().parse(&bytes).unwrap();
    assert_eq!(
        parsed.subject(),
        Some("Ihr Termin bei Dr. Lena Brandt: Grüße aus Köln")
    );
}

#[tokio::test]
async fn debug_output_never_shows_the_smtp_password_or_the_twilio_token() {
    let m = mailer("smtps://mailer:sup3r-secret@smtp.example:465");
    assert!(!format!("{m:?}").contains("sup3r-secret"));
    let s = SmsSender::from_settings(&twilio_settings("https://api.twilio.example"));
    assert!(!format!("{s:?}").contains("tok-123"));
}

fn twilio_settings(base: &str) -> SmsTransport {
    SmsTransport::Twilio(TwilioSettings {
        account_sid: "AC123".into(),
        auth_token: Secret::new("tok-123"),
        sender: TwilioSender::From(PhoneNumber::parse("+4930123456").unwrap()),
        api_base: base.into(),
        timeout: std::time::Duration::from_secs(30),
    })
}

async fn sms_with(status: u16, body: serde_json::Value) -> (SendOutcome, MockServer) {
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/2010-04-01/Accounts/AC123/Messages.json"))
        .respond_with(ResponseTemplate::new(status).set_body_json(body))
        .mount(&stub)
        .await;
    let sender = SmsSender::from_settings(&twilio_settings(&stub.uri()));
    let outcome = sender
        .send(
            &PhoneNumber::parse("+4915112345678").unwrap(),
            "Erinnerung: morgen 14:00 Uhr",
        )
        .await;
    (outcome, stub)
}

#[tokio::test]
async fn twilio_receives_the_form_fields_and_basic_auth() {
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/2010-04-01/Accounts/AC123/Messages.json"))
        .and(header("authorization", "Basic QUMxMjM6dG9rLTEyMw=="))
        .and(body_string_contains("To=%2B4915112345678"))
        .and(body_string_contains("From=%2B4930123456"))
        .and(body_string_contains("Body=Erinnerung%3A+morgen"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({"sid": "SM42"})))
        .expect(1)
        .mount(&stub)
        .await;
    let sender = SmsSender::from_settings(&twilio_settings(&stub.uri()));
    let outcome = sender
        .send(
            &PhoneNumber::parse("+4915112345678").unwrap(),
            "Erinnerung: morgen 14:00 Uhr",
        )
        .await;
    assert_eq!(
        outcome,
        SendOutcome::Sent {
            provider_id: Some("SM42".into())
        }
    );
    stub.verify().await;
}

#[tokio::test]
async fn twilio_answers_are_classified() {
    let (o, _s) = sms_with(
        429,
        serde_json::json!({"code": 20429, "message": "Too Many Requests"}),
    )
    .await;
    assert!(matches!(o, SendOutcome::Transient { .. }), "{o:?}");
    let (o, _s) = sms_with(400, serde_json::json!({"code": 21211, "message": "The 'To' number +4915112345678 is not a valid phone number."})).await;
    match o {
        SendOutcome::Unreachable {
            code: 21211,
            reason,
        } => assert!(!reason.contains("12345678"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let (o, _s) = sms_with(
        400,
        serde_json::json!({"code": 21610, "message": "Attempt to send to unsubscribed recipient"}),
    )
    .await;
    assert!(matches!(o, SendOutcome::OptedOut { .. }), "{o:?}");
    let (o, _s) = sms_with(
        401,
        serde_json::json!({"code": 20003, "message": "Authenticate"}),
    )
    .await;
    assert!(
        matches!(
            o,
            SendOutcome::Misconfigured {
                setting: "TWILIO_AUTH_TOKEN",
                ..
            }
        ),
        "{o:?}"
    );
    // A 500 whose lookup fails too (the stub has no Messages list): in doubt.
    let (o, _s) = sms_with(500, serde_json::json!({"message": "oops"})).await;
    assert!(matches!(o, SendOutcome::Ambiguous { .. }), "{o:?}");
    let (o, _s) = sms_with(201, serde_json::json!({"status": "queued"})).await;
    assert!(matches!(o, SendOutcome::Ambiguous { .. }), "{o:?}");
}

#[tokio::test]
async fn the_sms_outbox_appends_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let sender = SmsSender::from_settings(&SmsTransport::Outbox {
        dir: dir.path().to_path_buf(),
    });
    for _ in 0..2 {
        let o = sender
            .send(&PhoneNumber::parse("+4915112345678").unwrap(), "Hallo")
            .await;
        assert!(matches!(o, SendOutcome::Sent { .. }));
    }
    let text = std::fs::read_to_string(dir.path().join("sms.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["to"], "+4915112345678");
    assert_eq!(lines[0]["body"], "Hallo");
}
