//! Link delivery (`mfa_operator::delivery`, issue 11) against real servers: e-mail to the
//! test bed's mailpit over plain SMTP and STARTTLS, read back through mailpit's API; a
//! chat webhook posted to an axum receiver started here. The token must reach the person
//! and nothing else: not the process's logs (every tracing event and `log` record at
//! TRACE is captured), not an error.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use mfa_operator::delivery::{
    Delivery, DeliveryError, FailureKind, LinkUrl, Mailbox, Recipient, SmtpCredentials, SmtpDelivery, SmtpSecurity,
    SmtpSettings, WebhookDelivery, WebhookSettings, WebhookUrl,
};

use crate::common::mail::{Mailpit, PrivateMailpit, unique_address};

/// A link as the page server mints them: `/enroll/<id>/<token>`, 128-bit id and 256-bit
/// token in URL-safe base64. Returns the link and its token.
fn fresh_link(base: &str) -> (LinkUrl, String) {
    let mut id = [0u8; 16];
    let mut token = [0u8; 32];
    getrandom::fill(&mut id).expect("random");
    getrandom::fill(&mut token).expect("random");
    let token = data_encoding::BASE64URL_NOPAD.encode(&token);
    let id = data_encoding::BASE64URL_NOPAD.encode(&id);
    (LinkUrl::new(format!("{base}/enroll/{id}/{token}")), token)
}

fn recipient(user: &str, address: Option<&str>) -> Recipient {
    Recipient {
        user: user.to_owned(),
        account_id: "123456789012".into(),
        account_alias: Some("payments-prod".into()),
        expires_at: "2026-12-10T15:30:00Z".parse().expect("timestamp"),
        address: address.map(|a| a.parse().expect("address")),
    }
}

fn from() -> Mailbox {
    "MFA enrollment <mfa-operator@mfa-tests.example.com>".parse().expect("mailbox")
}

/// Everything this thread logs, at TRACE, from tracing and from the `log` crate (rustls,
/// hyper's dependencies): what an operator with debug logs would print. The tests run on
/// tokio's current-thread runtime, so every task of the delivery logs here.
struct Logs {
    text: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Logs {
    fn capture() -> Self {
        // `log` records become tracing events (once per process; a second call is refused).
        let _ = tracing_log::LogTracer::init();
        let text = Arc::new(Mutex::new(Vec::new()));
        let sink = text.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        Self { text, _guard: tracing::subscriber::set_default(subscriber) }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.text.lock().expect("log buffer")).into_owned()
    }
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn assert_secret_absent(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "{what} contains a secret ({secret}):\n{text}");
    }
}

fn assert_error_clean(error: &DeliveryError, secrets: &[&str]) {
    assert_secret_absent("the error's Display", &error.to_string(), secrets);
    assert_secret_absent("the error's Debug", &format!("{error:?}"), secrets);
    assert_secret_absent("the error's alternate Debug", &format!("{error:#?}"), secrets);
}

// ---------------------------------------------------------------------------- SMTP

#[tokio::test]
async fn smtp_delivers_the_link_to_the_tagged_address_and_logs_no_token() {
    let mailpit = Mailpit::from_env();
    let logs = Logs::capture();
    let address = unique_address("plain");
    let (link, token) = fresh_link("https://mfa.example.com");
    let user = "alice.smith";

    let mut settings = SmtpSettings::new(&mailpit.smtp_host, SmtpSecurity::Plain, from());
    settings.port = Some(mailpit.smtp_port);
    settings.credentials = Some(SmtpCredentials::new("mfa-mailer", "mailer-password-not-logged"));
    let delivery = SmtpDelivery::new(settings).expect("plain SMTP to loopback is allowed");
    tracing::info!(target: "test", ?link, "delivering (this line proves the capture works)");
    delivery.deliver(&link, &recipient(user, Some(&address))).await.expect("delivered to mailpit");

    let mail = mailpit.wait_for_mail_to(&address, Duration::from_secs(30)).await;
    assert_eq!(mail.to.iter().map(|t| t.address.as_str()).collect::<Vec<_>>(), [address.as_str()]);
    let sender = mail.from.as_ref().expect("a From");
    assert_eq!(
        (sender.name.as_str(), sender.address.as_str()),
        ("MFA enrollment", "mfa-operator@mfa-tests.example.com")
    );
    assert_eq!(mail.subject, "Set up MFA for AWS user alice.smith in account payments-prod (123456789012)");
    assert_eq!(mail.username, "mfa-mailer", "the SMTP login is the one given");
    // The link, whole, in both parts; the expiry and the once-only warning in the text.
    assert!(mail.text.contains(link.expose()), "no link in the text part:\n{}", mail.text);
    assert_eq!(
        mail.link("https://mfa.example.com/enroll/").as_deref(),
        Some(link.expose()),
        "the link as a reader finds it"
    );
    assert!(mail.html.contains(&format!("href=\"{}\"", link.expose())), "no link in the HTML part:\n{}", mail.html);
    assert!(mail.text.contains("works once and only until 2026-12-10 15:30 UTC"), "{}", mail.text);
    assert!(mail.text.contains("If you did not expect this message"), "{}", mail.text);
    let raw = mailpit.raw(&mail.id).await;
    let head = raw.split("\r\n\r\n").next().unwrap_or_default();
    assert!(head.contains("\r\nAuto-Submitted: auto-generated\r\n"), "{head}");
    assert!(head.contains("@mfa-tests.example.com>\r\n"), "a Message-ID in the sender's domain: {head}");

    let logged = logs.text();
    assert!(logged.contains("this line proves the capture works"), "the capture saw nothing:\n{logged}");
    assert!(logged.contains("LinkUrl(<redacted>)"), "{logged}");
    assert_secret_absent("the process's logs", &logged, &[&token, link.expose(), "mailer-password-not-logged"]);
    mailpit.delete_to(&address).await;
}

/// mailpit offers STARTTLS with a certificate from the test bed's CA (`MFA_TESTBED_CA`):
/// with that CA added the mail goes through TLS; without it the certificate is refused,
/// nothing is sent, and the error says TLS without naming the link.
#[tokio::test]
async fn smtp_starttls_checks_the_certificate() {
    let mailpit = Mailpit::from_env();
    let ca_path = std::env::var("MFA_TESTBED_CA").expect("MFA_TESTBED_CA (the test bed's CA)");
    let ca = std::fs::read(&ca_path).unwrap_or_else(|e| panic!("read {ca_path}: {e}"));
    let logs = Logs::capture();

    // Unknown CA: refused before any mail is sent.
    let refused_address = unique_address("tls-refused");
    let (link, token) = fresh_link("https://mfa.example.com");
    let mut settings = SmtpSettings::new(&mailpit.smtp_host, SmtpSecurity::StartTls, from());
    settings.port = Some(mailpit.smtp_port);
    settings.timeout = Duration::from_secs(15);
    let failed = SmtpDelivery::new(settings.clone())
        .expect("settings")
        .deliver(&link, &recipient("bob", Some(&refused_address)))
        .await
        .expect_err("a certificate from an unknown CA is refused");
    assert!(matches!(failed, DeliveryError::Smtp { kind: FailureKind::Tls, .. }), "{failed:?}");
    assert!(!failed.is_transient(), "{failed:?}");
    assert_error_clean(&failed, &[&token, link.expose()]);

    // With the CA: delivered. STARTTLS is required (lettre's `Tls::Required` never falls
    // back to plain), and the refusal above shows the handshake happened; mailpit's
    // Received header says "with SMTP" either way, so it cannot tell.
    let address = unique_address("tls");
    settings.root_certificates_pem = vec![ca];
    settings.credentials = Some(SmtpCredentials::new("tls-mailer", "tls-password-not-logged"));
    SmtpDelivery::new(settings)
        .expect("settings")
        .deliver(&link, &recipient("bob", Some(&address)))
        .await
        .expect("delivered over STARTTLS");
    let mail = mailpit.wait_for_mail_to(&address, Duration::from_secs(30)).await;
    assert!(mail.text.contains(link.expose()), "{}", mail.text);
    assert_eq!(mail.username, "tls-mailer");
    assert!(mailpit.list_to(&refused_address).await.is_empty(), "a mail went out over a refused certificate");

    assert_secret_absent("the process's logs", &logs.text(), &[&token, link.expose(), "tls-password-not-logged"]);
    mailpit.delete_to(&address).await;
}

/// Implicit TLS ("SMTPS"): a mailpit of this test's own that speaks only TLS
/// (`--smtp-require-tls`). With the bed's CA the mail arrives; plain SMTP to the same
/// port gets no greeting it understands, and the error names no token.
#[tokio::test]
async fn smtp_implicit_tls() {
    let private = PrivateMailpit::start(&["--smtp-require-tls"]).await;
    let mailpit = &private.mailpit;
    let ca_path = std::env::var("MFA_TESTBED_CA").expect("MFA_TESTBED_CA (the test bed's CA)");
    let ca = std::fs::read(&ca_path).unwrap_or_else(|e| panic!("read {ca_path}: {e}"));
    let logs = Logs::capture();
    let (link, token) = fresh_link("https://mfa.example.com");

    let address = unique_address("implicit-tls");
    let mut settings = SmtpSettings::new(&mailpit.smtp_host, SmtpSecurity::ImplicitTls, from());
    settings.port = Some(mailpit.smtp_port);
    settings.root_certificates_pem = vec![ca];
    settings.credentials = Some(SmtpCredentials::new("tls-mailer", "implicit-password-not-logged"));
    settings.timeout = Duration::from_secs(15);
    SmtpDelivery::new(settings.clone())
        .expect("settings")
        .deliver(&link, &recipient("erin", Some(&address)))
        .await
        .expect("delivered over implicit TLS");
    let mail = mailpit.wait_for_mail_to(&address, Duration::from_secs(30)).await;
    assert!(mail.text.contains(link.expose()), "{}", mail.text);
    assert_eq!(mail.username, "tls-mailer");

    // Plain to a TLS-only port: the server waits for a TLS handshake, the client for a
    // greeting, and the timeout ends it; nothing is delivered.
    let plain_address = unique_address("plain-to-tls");
    settings.security = SmtpSecurity::Plain;
    settings.timeout = Duration::from_secs(2);
    let failed = SmtpDelivery::new(settings)
        .expect("settings")
        .deliver(&link, &recipient("erin", Some(&plain_address)))
        .await
        .expect_err("plain SMTP to a TLS-only port");
    assert!(matches!(failed, DeliveryError::Smtp { kind: FailureKind::Timeout, .. }), "{failed:?}");
    assert_error_clean(&failed, &[&token, link.expose()]);
    assert!(mailpit.list_to(&plain_address).await.is_empty());

    assert_secret_absent("the process's logs", &logs.text(), &[&token, link.expose(), "implicit-password-not-logged"]);
}

// ------------------------------------------------------------------------- webhook

#[derive(Clone, Default)]
struct Receiver {
    posts: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    /// Requests that reached the redirect's target (must stay empty).
    followed: Arc<Mutex<u32>>,
}

async fn hook(
    State(receiver): State<Receiver>,
    Path(_key): Path<String>,
    headers: HeaderMap,
    body: String,
) -> &'static str {
    receiver.posts.lock().expect("posts").push((headers, body));
    "ok"
}

async fn moved() -> impl IntoResponse {
    (StatusCode::FOUND, [(header::LOCATION, "/followed")])
}

async fn followed(State(receiver): State<Receiver>) -> &'static str {
    *receiver.followed.lock().expect("followed") += 1;
    "followed"
}

/// Answers 500 with a body that must never reach an error or a log.
async fn broken() -> impl IntoResponse {
    (StatusCode::INTERNAL_SERVER_ERROR, "ANSWER-BODY-NEVER-READ")
}

async fn start_receiver() -> (String, Receiver) {
    let receiver = Receiver::default();
    let app = Router::new()
        .route("/services/{key}", post(hook))
        .route("/moved", post(moved))
        .route("/followed", post(followed).get(followed))
        .route("/broken", post(broken))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (base, receiver)
}

#[tokio::test]
async fn webhook_posts_text_and_fields_and_logs_no_token() {
    let logs = Logs::capture();
    let (base, receiver) = start_receiver().await;
    let hook_key = "B0TESTKEYTESTKEYTESTKEY0";
    let url = WebhookUrl::parse(&format!("{base}/services/{hook_key}")).expect("http to loopback is allowed");
    let delivery = WebhookDelivery::new(WebhookSettings::new(url)).expect("client");
    let (link, token) = fresh_link("https://mfa.example.com");

    delivery.deliver(&link, &recipient("carol", None)).await.expect("posted");
    let posts = receiver.posts.lock().expect("posts").clone();
    let [(headers, body)] = posts.as_slice() else { panic!("expected one POST, got {posts:?}") };
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    let text = json["text"].as_str().unwrap_or_else(|| panic!("no `text`: {json}"));
    assert!(text.contains(link.expose()), "the url is not in `text`: {text}");
    assert!(text.contains("carol") && text.contains("payments-prod (123456789012)") && text.contains("once"), "{text}");
    assert_eq!(json["url"], link.expose());
    assert_eq!(json["user"], "carol");
    assert_eq!(json["account"], "123456789012");
    assert_eq!(json["accountAlias"], "payments-prod");
    assert_eq!(json["expiresAt"], "2026-12-10T15:30:00Z");

    assert_secret_absent("the process's logs", &logs.text(), &[&token, link.expose(), hook_key]);
}

#[tokio::test]
async fn webhook_failures_follow_no_redirect_and_name_no_secret() {
    let logs = Logs::capture();
    let (base, receiver) = start_receiver().await;
    let (link, token) = fresh_link("https://mfa.example.com");
    let deliver = |path: &str| {
        let url = WebhookUrl::parse(&format!("{base}{path}")).expect("url");
        WebhookDelivery::new(WebhookSettings::new(url)).expect("client")
    };

    let redirected = deliver("/moved").deliver(&link, &recipient("dave", None)).await.expect_err("3xx is a failure");
    assert!(matches!(redirected, DeliveryError::Webhook { kind: FailureKind::Redirect, .. }), "{redirected:?}");
    assert_eq!(*receiver.followed.lock().expect("followed"), 0, "the redirect was followed");
    assert_error_clean(&redirected, &[&token, link.expose()]);

    let broken = deliver("/broken").deliver(&link, &recipient("dave", None)).await.expect_err("500 is a failure");
    assert!(matches!(broken, DeliveryError::Webhook { kind: FailureKind::Transient, .. }), "{broken:?}");
    assert!(broken.is_transient());
    assert_eq!(broken.to_string(), "webhook delivery failed (transient): HTTP 500");
    assert_error_clean(&broken, &[&token, link.expose(), "ANSWER-BODY-NEVER-READ"]);

    let unknown = deliver("/nothing-here").deliver(&link, &recipient("dave", None)).await.expect_err("404");
    assert!(matches!(unknown, DeliveryError::Webhook { kind: FailureKind::Rejected, .. }), "{unknown:?}");
    assert!(!unknown.is_transient());

    // A server that accepts the connection and never answers: the timeout ends it.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let silent_url = format!("http://{}/services/SILENTSILENTSILENTSILENT", silent.local_addr().expect("address"));
    let held = tokio::spawn(async move {
        let (connection, _) = silent.accept().await.expect("accept");
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(connection);
    });
    let mut settings = WebhookSettings::new(WebhookUrl::parse(&silent_url).expect("url"));
    settings.timeout = Duration::from_millis(500);
    let started = tokio::time::Instant::now();
    let timed_out = WebhookDelivery::new(settings)
        .expect("client")
        .deliver(&link, &recipient("dave", None))
        .await
        .expect_err("no answer");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the timeout did not bound the request: {:?}",
        started.elapsed()
    );
    assert!(matches!(timed_out, DeliveryError::Webhook { kind: FailureKind::Timeout, .. }), "{timed_out:?}");
    assert_error_clean(&timed_out, &[&token, link.expose(), "SILENTSILENTSILENTSILENT"]);
    held.abort();

    assert_secret_absent("the process's logs", &logs.text(), &[&token, link.expose(), "ANSWER-BODY-NEVER-READ"]);
}

/// A one-connection-at-a-time HTTPS server on loopback with the bed's mailpit certificate
/// (`MFA_TESTBED_MAILPIT_CERT`: IP 127.0.0.1, signed by `MFA_TESTBED_CA`): it records each
/// request's body and answers 200. Returns its base URL and the bodies.
async fn start_tls_receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    crate::common::require_testbed();
    let path =
        |var: &str| std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: start the test bed with mailpit"));
    let (cert, key) = (path("MFA_TESTBED_MAILPIT_CERT"), path("MFA_TESTBED_MAILPIT_KEY"));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .unwrap_or_else(|e| panic!("read {cert}: {e}"))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("parse {cert}: {e}"));
    let key = PrivateKeyDer::from_pem_file(&key).unwrap_or_else(|e| panic!("read {key}: {e}"));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let base = format!("https://{}", listener.local_addr().expect("address"));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let recorded = bodies.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            // A client that refuses the certificate ends the handshake: nothing to record.
            let Ok(mut tls) = acceptor.accept(tcp).await else { continue };
            let mut request = Vec::new();
            let mut chunk = [0u8; 4096];
            let body = loop {
                let Ok(n) = tls.read(&mut chunk).await else { break None };
                if n == 0 {
                    break None;
                }
                request.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&request).into_owned();
                let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
                let length = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if body.len() >= length {
                    break Some(body.to_owned());
                }
            };
            if let Some(body) = body {
                recorded.lock().expect("bodies").push(body);
                let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").await;
                let _ = tls.shutdown().await;
            }
        }
    });
    (base, bodies)
}

/// https with a company CA: without the CA the certificate is refused (typed as TLS,
/// nothing received, no secret in the error); with it the JSON arrives.
#[tokio::test]
async fn webhook_over_https_checks_the_certificate() {
    let logs = Logs::capture();
    let (base, bodies) = start_tls_receiver().await;
    let hook_key = "TLSKEYTLSKEYTLSKEYTLSKEY";
    let url = WebhookUrl::parse(&format!("{base}/services/{hook_key}")).expect("https URL");
    let (link, token) = fresh_link("https://mfa.example.com");

    let refused = WebhookDelivery::new(WebhookSettings::new(url.clone()))
        .expect("client")
        .deliver(&link, &recipient("frank", None))
        .await
        .expect_err("a certificate from an unknown CA is refused");
    assert!(matches!(refused, DeliveryError::Webhook { kind: FailureKind::Tls, .. }), "{refused:?}");
    assert_error_clean(&refused, &[&token, link.expose(), hook_key]);
    assert!(bodies.lock().expect("bodies").is_empty(), "a request went out over a refused certificate");

    let ca_path = std::env::var("MFA_TESTBED_CA").expect("MFA_TESTBED_CA (the test bed's CA)");
    let mut settings = WebhookSettings::new(url);
    settings.root_certificates_pem = vec![std::fs::read(&ca_path).unwrap_or_else(|e| panic!("read {ca_path}: {e}"))];
    WebhookDelivery::new(settings).expect("client").deliver(&link, &recipient("frank", None)).await.expect("posted");
    let received = bodies.lock().expect("bodies").clone();
    let [body] = received.as_slice() else { panic!("expected one request, got {received:?}") };
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    assert_eq!(json["url"], link.expose());
    assert!(json["text"].as_str().is_some_and(|t| t.contains(link.expose())), "{json}");

    assert_secret_absent("the process's logs", &logs.text(), &[&token, link.expose(), hook_key]);
}
