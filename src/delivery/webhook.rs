//! Delivery to a chat tool through an incoming webhook: one JSON POST with a
//! Slack-compatible `text` (Slack, Mattermost, Rocket.Chat and Teams' incoming webhooks
//! show it) and the same facts as fields of their own for tools that build their own
//! message (`user`, `account`, `accountAlias`, `expiresAt`, `url`).
//!
//! The URL must be https, checked against the system's root certificates and any the
//! caller adds; plain http only to a loopback host (a local relay or a test).
//! Redirects are never followed (a 3xx is a failure), every request is bounded by a
//! timeout, and the answer's body is never read: only its status counts.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::http::{Method, Request, Uri, header};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::{
    Channel, ConfigError, Delivery, DeliveryError, FailureKind, LinkUrl, Recipient, chain, is_loopback_host, message,
    scrub,
};

/// A chat webhook's URL. It is a credential (whoever has it can post), so it prints as
/// `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(Uri);

impl WebhookUrl {
    /// Parses and checks `url`: absolute, https, or http to a loopback host.
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        let uri: Uri = url.trim().parse().map_err(|_| ConfigError::InvalidUrl)?;
        let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else { return Err(ConfigError::InvalidUrl) };
        if host.is_empty() {
            return Err(ConfigError::InvalidUrl);
        }
        match scheme.to_ascii_lowercase().as_str() {
            "https" => Ok(Self(uri)),
            "http" if is_loopback_host(host) => Ok(Self(uri)),
            other => Err(ConfigError::InsecureUrl { scheme: other.to_owned() }),
        }
    }

    /// The URL, to read it back into a Secret or compare it.
    pub fn expose(&self) -> String {
        self.0.to_string()
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookUrl(<redacted>)")
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Everything webhook delivery needs from its caller (who reads the URL from a Secret).
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    pub url: WebhookUrl,
    /// Bound on connecting and on the whole request.
    pub timeout: Duration,
    /// Extra trusted root certificates (PEM), e.g. a company CA for a self-hosted chat
    /// server; the system's roots are trusted too.
    pub root_certificates_pem: Vec<Vec<u8>>,
}

impl WebhookSettings {
    /// Settings with a 10 s timeout and the system's roots only.
    pub fn new(url: WebhookUrl) -> Self {
        Self { url, timeout: Duration::from_secs(10), root_certificates_pem: Vec::new() }
    }
}

/// rustls on aws-lc-rs (the provider kube and the AWS SDK use) trusting the system's roots
/// and `extra` (PEM).
fn tls_config(extra: &[Vec<u8>]) -> Result<rustls::ClientConfig, ConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system certificates are skipped; the extra ones must all be good.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    for pem in extra {
        let mut found = false;
        for certificate in CertificateDer::pem_slice_iter(pem) {
            let certificate = certificate.map_err(|e| ConfigError::Tls(format!("a root certificate: {e}")))?;
            roots.add(certificate).map_err(|e| ConfigError::Tls(format!("a root certificate: {e}")))?;
            found = true;
        }
        if !found {
            return Err(ConfigError::Tls("a root certificate PEM holds no certificate".into()));
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// Posts links to a chat webhook.
pub struct WebhookDelivery {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: WebhookUrl,
    timeout: Duration,
}

impl fmt::Debug for WebhookDelivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookDelivery")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What is posted: `text` for chat tools, and the same facts as fields.
pub fn payload(link: &LinkUrl, recipient: &Recipient) -> serde_json::Value {
    serde_json::json!({
        "text": message::chat_text(link, recipient),
        "user": recipient.user,
        "account": recipient.account_id,
        "accountAlias": recipient.account_alias,
        "expiresAt": recipient.expires_at.to_string(),
        "url": link.expose(),
    })
}

impl WebhookDelivery {
    /// Builds the client (HTTP/1.1, no connection kept between deliveries). Connects to
    /// nothing yet.
    pub fn new(settings: WebhookSettings) -> Result<Self, ConfigError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(settings.timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(&settings.root_certificates_pem)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(https);
        Ok(Self { client, url: settings.url, timeout: settings.timeout })
    }

    async fn post(&self, link: &LinkUrl, recipient: &Recipient) -> Result<(), DeliveryError> {
        let url = self.url.expose();
        let secrets = [link.expose(), url.as_str()];
        let failed = |kind, detail: String| DeliveryError::Webhook { kind, detail: scrub(&detail, &secrets) };
        let body = serde_json::to_vec(&payload(link, recipient)).map_err(|e| DeliveryError::Message(e.to_string()))?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.url.0.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, concat!("mfa-operator/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| failed(FailureKind::Other, e.to_string()))?;
        let response = match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Err(_) => return Err(failed(FailureKind::Timeout, format!("no answer within {:?}", self.timeout))),
            Ok(Err(e)) => {
                let kind = if super::caused_by_tls(&e) {
                    FailureKind::Tls
                } else if e.is_connect() {
                    FailureKind::Connect
                } else {
                    FailureKind::Other
                };
                return Err(failed(kind, chain(&e)));
            }
            Ok(Ok(response)) => response,
        };
        // The body is dropped unread: chat tools answer with text of their own that has
        // no business in our logs or errors.
        let status = response.status();
        drop(response);
        let kind = if status.is_success() {
            return Ok(());
        } else if status.is_redirection() {
            FailureKind::Redirect
        } else if status.is_server_error() || status == hyper::http::StatusCode::TOO_MANY_REQUESTS {
            FailureKind::Transient
        } else {
            FailureKind::Rejected
        };
        Err(failed(kind, format!("HTTP {}", status.as_u16())))
    }
}

impl Delivery for WebhookDelivery {
    fn channel(&self) -> Channel {
        Channel::Webhook
    }

    fn deliver<'a>(&'a self, link: &'a LinkUrl, recipient: &'a Recipient) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(self.post(link, recipient))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "q8Zr4kXH2n0mYb7VwT1sLp9cDf3GjE5uAi6oRt8yWzQ";

    fn recipient() -> Recipient {
        Recipient {
            user: "alice".into(),
            account_id: "123456789012".into(),
            account_alias: Some("payments-prod".into()),
            expires_at: "2026-12-10T15:30:00Z".parse().unwrap(),
            address: None,
        }
    }

    #[test]
    fn https_only_except_loopback() {
        for ok in [
            "https://hooks.slack.com/services/T0/B0/XXXXXXXXXXXXXXXXXXXXXXXX",
            "https://chat.example.com:8443/hooks/abc",
            "http://127.0.0.1:8080/hook",
            "http://localhost/hook",
            "http://[::1]:9000/hook",
            "  https://chat.example.com/hook\n",
        ] {
            assert!(WebhookUrl::parse(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("http://chat.example.com/hook", ConfigError::InsecureUrl { scheme: "http".into() }),
            ("http://10.0.0.8/hook", ConfigError::InsecureUrl { scheme: "http".into() }),
            ("ftp://chat.example.com/hook", ConfigError::InsecureUrl { scheme: "ftp".into() }),
            ("chat.example.com/hook", ConfigError::InvalidUrl),
            ("/hook", ConfigError::InvalidUrl),
            ("", ConfigError::InvalidUrl),
            ("https://exa mple.com/", ConfigError::InvalidUrl),
        ] {
            assert_eq!(WebhookUrl::parse(bad), Err(why), "{bad}");
        }
    }

    #[test]
    fn the_url_never_prints() {
        let url = WebhookUrl::parse("https://hooks.slack.com/services/T0/B0/XXXXXXXXXXXXXXXXXXXXXXXX").unwrap();
        assert_eq!(format!("{url:?} {url}"), "WebhookUrl(<redacted>) <redacted>");
        let delivery = WebhookDelivery::new(WebhookSettings::new(url.clone())).unwrap();
        assert!(!format!("{delivery:?}").contains("XXXX"), "{delivery:?}");
        assert_eq!(url.expose(), "https://hooks.slack.com/services/T0/B0/XXXXXXXXXXXXXXXXXXXXXXXX");
    }

    #[test]
    fn payload_has_text_and_fields() {
        let link = LinkUrl::new(format!("https://mfa.example.com/enroll/{TOKEN}"));
        let body = payload(&link, &recipient());
        assert!(body["text"].as_str().unwrap().contains(&format!("https://mfa.example.com/enroll/{TOKEN}")));
        assert_eq!(body["user"], "alice");
        assert_eq!(body["account"], "123456789012");
        assert_eq!(body["accountAlias"], "payments-prod");
        assert_eq!(body["expiresAt"], "2026-12-10T15:30:00Z");
        assert_eq!(body["url"], format!("https://mfa.example.com/enroll/{TOKEN}"));
    }

    #[test]
    fn root_certificates_must_be_certificates() {
        let url = WebhookUrl::parse("https://chat.example.com/hook").unwrap();
        for bad in [&b"not a PEM"[..], b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"] {
            let mut settings = WebhookSettings::new(url.clone());
            settings.root_certificates_pem = vec![bad.to_vec()];
            assert!(matches!(WebhookDelivery::new(settings), Err(ConfigError::Tls(_))), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_failure_names_neither_token_nor_webhook() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let hook = format!("http://127.0.0.1:{port}/services/T0/B0/SECRETSECRETSECRETSECRET");
        let delivery = WebhookDelivery::new(WebhookSettings::new(WebhookUrl::parse(&hook).unwrap())).unwrap();
        let link = LinkUrl::new(format!("https://mfa.example.com/enroll/{TOKEN}"));
        let failed = delivery.deliver(&link, &recipient()).await.unwrap_err();
        assert!(matches!(failed, DeliveryError::Webhook { kind: FailureKind::Connect, .. }), "{failed:?}");
        assert!(failed.is_transient());
        for printed in [failed.to_string(), format!("{failed:?}")] {
            assert!(!printed.contains(TOKEN) && !printed.contains("SECRETSECRET"), "{printed}");
        }
    }
}
