//! E-mail delivery over SMTP with lettre (tokio, rustls on aws-lc-rs, the system's root
//! certificates plus any the caller adds).
//!
//! Three ways to connect: STARTTLS (port 587 unless set; TLS is required, a server that
//! does not offer it is refused), implicit TLS (port 465) and plain (port 25), which is
//! only for a loopback SMTP catcher in tests unless [`SmtpSettings::allow_plain_to_remote`]
//! says otherwise. Credentials are sent only as the server asks (AUTH PLAIN or LOGIN).

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{
    Channel, ConfigError, Delivery, DeliveryError, FailureKind, LinkUrl, Recipient, chain, is_loopback_host, message,
    scrub,
};

/// How the connection to the SMTP server is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    StartTls,
    /// TLS from the first byte ("SMTPS", port 465).
    ImplicitTls,
    /// No TLS at all (port 25): a loopback test catcher only, unless allowed explicitly.
    Plain,
}

impl SmtpSecurity {
    /// The usual port of this kind of connection.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpSecurity::StartTls => 587,
            SmtpSecurity::ImplicitTls => 465,
            SmtpSecurity::Plain => 25,
        }
    }
}

/// A user name and password for SMTP AUTH. The password prints as `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpCredentials {
    pub username: String,
    password: String,
}

impl SmtpCredentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self { username: username.into(), password: password.into() }
    }
}

impl fmt::Debug for SmtpCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpCredentials").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

/// Everything SMTP delivery needs from its caller (who reads it from a Secret).
#[derive(Clone, Debug)]
pub struct SmtpSettings {
    /// Host name or IP address of the server; also the name its certificate must carry.
    pub host: String,
    /// The port; [`SmtpSecurity::default_port`] when `None`.
    pub port: Option<u16>,
    pub security: SmtpSecurity,
    pub credentials: Option<SmtpCredentials>,
    /// The sender, e.g. `"MFA enrollment" <mfa@example.com>`.
    pub from: Mailbox,
    /// Allow [`SmtpSecurity::Plain`] to a host that is not loopback (a relay on the same
    /// trusted network, say). Off: such settings are refused.
    pub allow_plain_to_remote: bool,
    /// Bound on each SMTP command and on the whole delivery.
    pub timeout: Duration,
    /// Extra trusted root certificates (PEM), e.g. a company CA; the system's roots are
    /// trusted too.
    pub root_certificates_pem: Vec<Vec<u8>>,
    /// The name this side gives in EHLO; `[127.0.0.1]` when `None`.
    pub hello_name: Option<String>,
}

impl SmtpSettings {
    /// Settings with the defaults: the usual port, no credentials, plain refused to
    /// remote hosts, 30 s timeout, the system's roots only.
    pub fn new(host: impl Into<String>, security: SmtpSecurity, from: Mailbox) -> Self {
        Self {
            host: host.into(),
            port: None,
            security,
            credentials: None,
            from,
            allow_plain_to_remote: false,
            timeout: Duration::from_secs(30),
            root_certificates_pem: Vec::new(),
            hello_name: None,
        }
    }

    /// The refusals of [`SmtpDelivery::new`] that need no I/O.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.host.trim().is_empty() {
            return Err(ConfigError::EmptyHost);
        }
        if self.security == SmtpSecurity::Plain && !self.allow_plain_to_remote && !is_loopback_host(&self.host) {
            return Err(ConfigError::PlainToRemote { host: self.host.clone() });
        }
        Ok(())
    }
}

/// Sends links by e-mail to [`Recipient::address`].
pub struct SmtpDelivery {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    timeout: Duration,
    password: Option<String>,
}

impl fmt::Debug for SmtpDelivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpDelivery").field("from", &self.from).field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl SmtpDelivery {
    /// Checks `settings` and builds the transport; connects to nothing yet.
    pub fn new(settings: SmtpSettings) -> Result<Self, ConfigError> {
        settings.check()?;
        let host = settings.host.trim().to_owned();
        let tls_parameters = || -> Result<TlsParameters, ConfigError> {
            let mut builder = TlsParameters::builder(host.clone());
            for pem in &settings.root_certificates_pem {
                let certificate = Certificate::from_pem(pem).map_err(|e| ConfigError::Tls(e.to_string()))?;
                builder = builder.add_root_certificate(certificate);
            }
            builder.build_rustls().map_err(|e| ConfigError::Tls(e.to_string()))
        };
        let tls = match settings.security {
            SmtpSecurity::StartTls => Tls::Required(tls_parameters()?),
            SmtpSecurity::ImplicitTls => Tls::Wrapper(tls_parameters()?),
            SmtpSecurity::Plain => Tls::None,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(settings.port.unwrap_or(settings.security.default_port()))
            .tls(tls)
            .timeout(Some(settings.timeout));
        if let Some(name) = settings.hello_name.filter(|n| !n.is_empty()) {
            builder = builder.hello_name(ClientId::Domain(name));
        }
        let password = settings.credentials.as_ref().map(|c| c.password.clone());
        if let Some(credentials) = settings.credentials {
            builder = builder.credentials(Credentials::new(credentials.username, credentials.password));
        }
        Ok(Self { transport: builder.build(), from: settings.from, timeout: settings.timeout, password })
    }

    /// The e-mail for `recipient` (who must have an address), as it would be sent: a
    /// Message-ID in the sender's domain (relays mark mail without one as spam) and
    /// `Auto-Submitted: auto-generated` (RFC 3834: no vacation replies to the operator).
    pub fn message(&self, link: &LinkUrl, recipient: &Recipient) -> Result<Message, DeliveryError> {
        let address = recipient.address.clone().ok_or(DeliveryError::AddressNotGiven)?;
        let words = message::compose(link, recipient);
        let mut unique = [0u8; 16];
        getrandom::fill(&mut unique).map_err(|e| DeliveryError::Message(format!("no random bytes: {e}")))?;
        let message_id = format!("<{}@{}>", data_encoding::HEXLOWER.encode(&unique), self.from.email.domain());
        Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, address))
            .message_id(Some(message_id))
            .header(AutoSubmitted)
            .subject(words.subject)
            .multipart(MultiPart::alternative_plain_html(words.text, words.html))
            .map_err(|e| DeliveryError::Message(scrub(&e.to_string(), &[link.expose()])))
    }

    async fn send(&self, link: &LinkUrl, recipient: &Recipient) -> Result<(), DeliveryError> {
        let email = self.message(link, recipient)?;
        let secrets: Vec<&str> = [Some(link.expose()), self.password.as_deref()].into_iter().flatten().collect();
        match tokio::time::timeout(self.timeout, self.transport.send(email)).await {
            Ok(Ok(_response)) => Ok(()),
            Ok(Err(e)) => Err(DeliveryError::Smtp { kind: kind_of(&e), detail: scrub(&chain(&e), &secrets) }),
            Err(_) => Err(DeliveryError::Smtp {
                kind: FailureKind::Timeout,
                detail: format!("no answer within {:?}", self.timeout),
            }),
        }
    }
}

/// `Auto-Submitted: auto-generated` (RFC 3834).
#[derive(Clone)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_owned())
    }
}

fn kind_of(e: &lettre::transport::smtp::Error) -> FailureKind {
    if e.is_timeout() {
        FailureKind::Timeout
    } else if e.is_tls() || super::caused_by_tls(e) {
        FailureKind::Tls
    } else if e.is_transient() {
        FailureKind::Transient
    } else if e.is_permanent() {
        FailureKind::Rejected
    } else if e.is_response() || e.is_client() {
        FailureKind::Other
    } else {
        // Connection refused or reset, name resolution, an unexpected end of stream.
        FailureKind::Connect
    }
}

impl Delivery for SmtpDelivery {
    fn channel(&self) -> Channel {
        Channel::Smtp
    }

    fn deliver<'a>(&'a self, link: &'a LinkUrl, recipient: &'a Recipient) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(self.send(link, recipient))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "q8Zr4kXH2n0mYb7VwT1sLp9cDf3GjE5uAi6oRt8yWzQ";

    fn from() -> Mailbox {
        "MFA enrollment <mfa@example.com>".parse().unwrap()
    }

    fn recipient(address: Option<&str>) -> Recipient {
        Recipient {
            user: "alice".into(),
            account_id: "123456789012".into(),
            account_alias: None,
            expires_at: "2026-12-10T15:30:00Z".parse().unwrap(),
            address: address.map(|a| a.parse().unwrap()),
        }
    }

    #[test]
    fn plain_only_to_loopback_unless_allowed() {
        for host in ["127.0.0.1", "localhost", "::1"] {
            assert_eq!(SmtpSettings::new(host, SmtpSecurity::Plain, from()).check(), Ok(()), "{host}");
        }
        let mut remote = SmtpSettings::new("smtp.example.com", SmtpSecurity::Plain, from());
        let refused = SmtpDelivery::new(remote.clone()).unwrap_err();
        assert_eq!(refused, ConfigError::PlainToRemote { host: "smtp.example.com".into() });
        assert!(refused.to_string().starts_with("plain SMTP (no TLS) to smtp.example.com refused"), "{refused}");
        remote.allow_plain_to_remote = true;
        assert!(SmtpDelivery::new(remote).is_ok());
        for security in [SmtpSecurity::StartTls, SmtpSecurity::ImplicitTls] {
            assert!(SmtpDelivery::new(SmtpSettings::new("smtp.example.com", security, from())).is_ok());
        }
        assert_eq!(SmtpSettings::new(" ", SmtpSecurity::StartTls, from()).check(), Err(ConfigError::EmptyHost));
    }

    #[test]
    fn a_bad_root_certificate_is_refused() {
        let mut settings = SmtpSettings::new("smtp.example.com", SmtpSecurity::StartTls, from());
        settings.root_certificates_pem =
            vec![b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".to_vec()];
        assert!(matches!(SmtpDelivery::new(settings), Err(ConfigError::Tls(_))));
    }

    #[test]
    fn credentials_print_without_the_password() {
        let credentials = SmtpCredentials::new("mailer", "hunter2-very-secret");
        let printed = format!("{credentials:?}");
        assert!(printed.contains("mailer") && !printed.contains("hunter2"), "{printed}");
        let mut settings = SmtpSettings::new("127.0.0.1", SmtpSecurity::Plain, from());
        settings.credentials = Some(credentials);
        assert!(!format!("{settings:?}").contains("hunter2"));
        assert!(!format!("{:?}", SmtpDelivery::new(settings).unwrap()).contains("hunter2"));
    }

    #[test]
    fn the_mail_goes_to_the_address_with_both_parts() {
        let delivery = SmtpDelivery::new(SmtpSettings::new("127.0.0.1", SmtpSecurity::Plain, from())).unwrap();
        let link = LinkUrl::new(format!("https://mfa.example.com/enroll/{TOKEN}"));
        let email = delivery.message(&link, &recipient(Some("alice@example.com"))).unwrap();
        let envelope = email.envelope();
        assert_eq!(envelope.to().iter().map(|a| a.to_string()).collect::<Vec<_>>(), ["alice@example.com"]);
        assert_eq!(envelope.from().map(|a| a.to_string()).as_deref(), Some("mfa@example.com"));
        let raw = String::from_utf8(email.formatted()).unwrap();
        assert!(raw.contains("Subject: Set up MFA for AWS user alice in account 123456789012"), "{raw}");
        assert!(raw.contains("multipart/alternative") && raw.contains("text/html"), "{raw}");
        assert!(raw.contains("\r\nAuto-Submitted: auto-generated\r\n"), "{raw}");
        let id =
            raw.lines().find_map(|l| l.strip_prefix("Message-ID: ")).unwrap_or_else(|| panic!("no Message-ID: {raw}"));
        assert!(id.starts_with('<') && id.ends_with("@example.com>") && id.len() == 46, "{id}");
    }

    #[tokio::test]
    async fn no_address_is_refused_before_connecting() {
        // Port 9 on loopback: nothing is sent anyway.
        let mut settings = SmtpSettings::new("127.0.0.1", SmtpSecurity::Plain, from());
        settings.port = Some(9);
        let delivery = SmtpDelivery::new(settings).unwrap();
        let link = LinkUrl::new(format!("https://mfa.example.com/enroll/{TOKEN}"));
        let refused = delivery.deliver(&link, &recipient(None)).await.unwrap_err();
        assert!(matches!(refused, DeliveryError::AddressNotGiven), "{refused:?}");
        assert!(!refused.is_transient());
    }

    #[tokio::test]
    async fn a_failure_names_no_token() {
        // A port nothing listens on: the connection is refused.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let mut settings = SmtpSettings::new("127.0.0.1", SmtpSecurity::Plain, from());
        settings.port = Some(port);
        settings.timeout = Duration::from_secs(5);
        let delivery = SmtpDelivery::new(settings).unwrap();
        let link = LinkUrl::new(format!("http://127.0.0.1:{port}/enroll/{TOKEN}"));
        let failed = delivery.deliver(&link, &recipient(Some("alice@example.com"))).await.unwrap_err();
        assert!(matches!(failed, DeliveryError::Smtp { kind: FailureKind::Connect, .. }), "{failed:?}");
        assert!(failed.is_transient());
        for printed in [failed.to_string(), format!("{failed:?}"), format!("{failed:#?}")] {
            assert!(!printed.contains(TOKEN), "{printed}");
        }
    }
}
