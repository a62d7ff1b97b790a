//! Delivery of one-time enrollment links (issue 11) to the person they are for, never to
//! an admin: e-mail over SMTP ([`smtp`]) to the address in an IAM user tag
//! ([`address_from_tags`]), or a JSON POST to a chat webhook ([`webhook`]). The words
//! are in [`message`].
//!
//! A link holds a token that is the person's credential until it is used, so:
//! - [`LinkUrl`] and [`WebhookUrl`] (a chat webhook's URL is a credential too) print as
//!   `<redacted>` in `Debug` and `Display`; only [`LinkUrl::expose`] gives the text;
//! - nothing here logs;
//! - no error carries the link or the webhook URL: what a transport says goes through
//!   [`scrub`] first, and [`DeliveryError`]s say what failed and whether a retry may help.
//!
//! The caller (the controller) resolves everything that comes from Kubernetes or IAM:
//! SMTP and webhook settings from Secrets, the recipient's address from the user's tags,
//! and the link itself from [`crate::link`].

pub mod message;
pub mod smtp;
pub mod webhook;

use std::collections::BTreeMap;
use std::fmt;

use futures::future::BoxFuture;
use jiff::Timestamp;

pub use lettre::Address;
pub use lettre::message::Mailbox;
pub use smtp::{SmtpCredentials, SmtpDelivery, SmtpSecurity, SmtpSettings};
pub use webhook::{WebhookDelivery, WebhookSettings, WebhookUrl};

/// The IAM user tag that holds a person's e-mail address unless configured otherwise.
pub const DEFAULT_ADDRESS_TAG: &str = "email";

/// A one-time enrollment link: the page's URL with the token in it. Prints as
/// `<redacted>`; [`LinkUrl::expose`] is the only way to the text.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkUrl(String);

impl LinkUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The link as the person must receive it (for the message body only).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for LinkUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkUrl(<redacted>)")
    }
}

impl fmt::Display for LinkUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Who a link is for, as the message names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The IAM user name.
    pub user: String,
    /// The 12-digit account id.
    pub account_id: String,
    /// The account alias, when the account has one.
    pub account_alias: Option<String>,
    /// When the link stops working.
    pub expires_at: Timestamp,
    /// Where e-mail goes ([`address_from_tags`]); `None` for a webhook-only setup. SMTP
    /// delivery without one fails with [`DeliveryError::NoAddress`].
    pub address: Option<Address>,
}

impl Recipient {
    /// The account as people know it: `alias (123456789012)`, or the id alone.
    pub fn account_label(&self) -> String {
        match &self.account_alias {
            Some(alias) if !alias.is_empty() => format!("{alias} ({})", self.account_id),
            _ => self.account_id.clone(),
        }
    }
}

/// How a link reaches its person.
pub trait Delivery: Send + Sync {
    /// Which channel this is (for logs and metrics labels).
    fn channel(&self) -> Channel;

    /// Sends `link` to `recipient`. Sends nothing else, logs nothing, and returns no
    /// error that contains the link.
    fn deliver<'a>(&'a self, link: &'a LinkUrl, recipient: &'a Recipient) -> BoxFuture<'a, Result<(), DeliveryError>>;
}

/// A delivery channel: a bounded label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    Smtp,
    Webhook,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Smtp => "smtp",
            Channel::Webhook => "webhook",
        }
    }
}

/// Why a user has no usable e-mail address: the words of the `NoDeliveryAddress` status.
/// Never contains the tag's value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoAddress {
    #[error("the user has no `{key}` tag")]
    Missing { key: String },
    #[error("the user's `{key}` tag is empty")]
    Empty { key: String },
    #[error("the user's `{key}` tag is not an e-mail address ({reason})")]
    Invalid { key: String, reason: String },
}

/// The e-mail address in the tag `key` of an IAM user's `tags`.
///
/// The key matches without regard to case (IAM keeps one tag per key whatever its case);
/// an exact match wins. Spaces around the value are ignored. The value must be a bare
/// address (`alice@example.com`, no display name), as lettre's parser accepts it.
pub fn address_from_tags(tags: &BTreeMap<String, String>, key: &str) -> Result<Address, NoAddress> {
    let key = key.to_owned();
    let value = tags.get(&key).or_else(|| tags.iter().find(|(k, _)| k.eq_ignore_ascii_case(&key)).map(|(_, v)| v));
    let Some(value) = value else { return Err(NoAddress::Missing { key }) };
    let value = value.trim();
    if value.is_empty() {
        return Err(NoAddress::Empty { key });
    }
    value.parse::<Address>().map_err(|e| NoAddress::Invalid { key, reason: e.to_string() })
}

/// Why a delivery failed. Never contains the link or the webhook URL.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("no usable delivery address: {0}")]
    NoAddress(#[from] NoAddress),
    /// The caller gave no address ([`Recipient::address`] is `None`) to a channel that
    /// needs one.
    #[error("no e-mail address was given for the user")]
    AddressNotGiven,
    #[error("cannot build the message: {0}")]
    Message(String),
    #[error("SMTP delivery failed ({}): {detail}", .kind.as_str())]
    Smtp { kind: FailureKind, detail: String },
    #[error("webhook delivery failed ({}): {detail}", .kind.as_str())]
    Webhook { kind: FailureKind, detail: String },
}

impl DeliveryError {
    /// A bounded label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            DeliveryError::NoAddress(_) | DeliveryError::AddressNotGiven => "no-address",
            DeliveryError::Message(_) => "message",
            DeliveryError::Smtp { kind, .. } | DeliveryError::Webhook { kind, .. } => kind.as_str(),
        }
    }

    /// Whether trying again later may succeed (a timeout, a refused connection, a 4xx
    /// SMTP reply, an HTTP 5xx or 429). A wrong address or a 4xx webhook answer is not.
    pub fn is_transient(&self) -> bool {
        match self {
            DeliveryError::NoAddress(_) | DeliveryError::AddressNotGiven | DeliveryError::Message(_) => false,
            DeliveryError::Smtp { kind, .. } | DeliveryError::Webhook { kind, .. } => kind.is_transient(),
        }
    }
}

/// What kind of failure a transport had.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// No answer in time.
    Timeout,
    /// The server could not be reached, or the connection broke.
    Connect,
    /// The TLS handshake failed (certificate, name, protocol).
    Tls,
    /// The server refused for now (SMTP 4xx, HTTP 5xx or 429).
    Transient,
    /// The server refused for good (SMTP 5xx, HTTP 4xx).
    Rejected,
    /// The webhook answered with a redirect, which is never followed.
    Redirect,
    /// Anything else.
    Other,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Connect => "connect",
            FailureKind::Tls => "tls",
            FailureKind::Transient => "transient",
            FailureKind::Rejected => "rejected",
            FailureKind::Redirect => "redirect",
            FailureKind::Other => "other",
        }
    }

    pub fn is_transient(self) -> bool {
        matches!(self, FailureKind::Timeout | FailureKind::Connect | FailureKind::Transient)
    }
}

/// Settings a delivery refuses before anything is sent.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "plain SMTP (no TLS) to {host} refused: only a loopback host may be reached without TLS unless allowed explicitly"
    )]
    PlainToRemote { host: String },
    #[error("the webhook URL is not a valid absolute URL")]
    InvalidUrl,
    #[error("the webhook URL must use https (plain http only to a loopback host), not {scheme}")]
    InsecureUrl { scheme: String },
    #[error("the SMTP host is empty")]
    EmptyHost,
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

/// `text` with every secret, and every long piece of one (a token, a key in a webhook's
/// path), replaced by `<redacted>`. Applied to everything a transport says before it goes
/// into an error. Pieces with a dot (host names) stay: they help find the failure, and
/// tokens and webhook keys have none.
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    /// Pieces this long are treated as secret on their own (tokens are 43 characters;
    /// Slack's webhook keys 24).
    const LONG_PIECE: usize = 12;
    let mut out = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret, "<redacted>");
        for piece in
            secret.split(['/', '?', '&', '=', '#', ':', ';', '@']).filter(|p| p.len() >= LONG_PIECE && !p.contains('.'))
        {
            out = out.replace(piece, "<redacted>");
        }
    }
    out
}

/// The Display of `error` followed by those of its sources, `: `-separated.
fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// Whether a rustls error is among the causes of `e`: lettre and hyper report a failed
/// handshake (an unknown CA, a wrong name) as a connection error around an I/O error
/// around it (hyper-rustls wraps that I/O error in another). An I/O error hides what it
/// wraps from `source()`, so it is opened here.
fn caused_by_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    if e.is::<rustls::Error>() {
        return true;
    }
    if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref())
        && caused_by_tls(inner)
    {
        return true;
    }
    e.source().is_some_and(caused_by_tls)
}

/// Whether `host` (a name, an IPv4 address or a bracketed or bare IPv6 address) is this
/// machine: `localhost`, `*.localhost`, 127.0.0.0/8 or ::1.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return ip.is_loopback();
    }
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "q8Zr4kXH2n0mYb7VwT1sLp9cDf3GjE5uAi6oRt8yWzQ";

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn address_from_the_tag() {
        let address = address_from_tags(&tags(&[("email", "alice@example.com"), ("team", "x")]), "email");
        assert_eq!(address.unwrap().to_string(), "alice@example.com");
        // Spaces around the value, and another case of the key.
        let address = address_from_tags(&tags(&[("Email", "  bob+mfa@example.co.uk \n")]), "email");
        assert_eq!(address.unwrap().to_string(), "bob+mfa@example.co.uk");
        // An exact match wins over another case.
        let address = address_from_tags(&tags(&[("EMAIL", "a@example.com"), ("email", "b@example.com")]), "email");
        assert_eq!(address.unwrap().to_string(), "b@example.com");
        // Another key.
        let address =
            address_from_tags(&tags(&[("email", "a@example.com"), ("mfa-mail", "c@example.com")]), "mfa-mail");
        assert_eq!(address.unwrap().to_string(), "c@example.com");
    }

    #[test]
    fn unusable_addresses_say_why() {
        assert_eq!(
            address_from_tags(&tags(&[("team", "x")]), "email"),
            Err(NoAddress::Missing { key: "email".into() })
        );
        assert_eq!(
            address_from_tags(&tags(&[("email", "  ")]), "email"),
            Err(NoAddress::Empty { key: "email".into() })
        );
        for bad in [
            "alice",
            "alice@",
            "@example.com",
            "Alice <alice@example.com>",
            "alice@example.com, eve@example.com",
            "alice@exa mple.com",
            "alice@example.com\r\nBcc: eve@example.com",
            "a@b@c",
        ] {
            let refused = address_from_tags(&tags(&[("email", bad)]), "email").unwrap_err();
            assert!(matches!(&refused, NoAddress::Invalid { key, .. } if key == "email"), "{bad:?}: {refused:?}");
            let words = refused.to_string();
            assert!(words.starts_with("the user's `email` tag is not an e-mail address ("), "{words}");
            // The status says why, never what the tag holds.
            assert!(!words.contains("alice") && !words.contains("example"), "{words}");
        }
        assert_eq!(NoAddress::Missing { key: "email".into() }.to_string(), "the user has no `email` tag");
        assert_eq!(NoAddress::Empty { key: "email".into() }.to_string(), "the user's `email` tag is empty");
    }

    #[test]
    fn a_link_never_prints() {
        let link = LinkUrl::new(format!("https://mfa.example.com/enroll/{TOKEN}"));
        assert_eq!(format!("{link:?}"), "LinkUrl(<redacted>)");
        assert_eq!(format!("{link}"), "<redacted>");
        assert_eq!(format!("{:#?}", Some(&link)), "Some(\n    LinkUrl(<redacted>),\n)");
        assert!(link.expose().ends_with(TOKEN));
    }

    #[test]
    fn scrub_removes_secrets_and_their_long_pieces() {
        let link = format!("https://mfa.example.com/enroll/{TOKEN}");
        let text = format!("failed for {link}; token {TOKEN}; host mfa.example.com; path /enroll/");
        let scrubbed = scrub(&text, &[&link]);
        assert!(!scrubbed.contains(TOKEN), "{scrubbed}");
        assert_eq!(scrubbed, "failed for <redacted>; token <redacted>; host mfa.example.com; path /enroll/");
        let hook = "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX";
        assert_eq!(scrub("key XXXXXXXXXXXXXXXXXXXXXXXX at T000", &[hook]), "key <redacted> at T000");
        assert_eq!(scrub("nothing here", &["", "abc"]), "nothing here");
    }

    #[test]
    fn loopback_hosts() {
        for host in ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST.", "mail.localhost"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["10.0.0.1", "192.168.1.1", "example.com", "localhost.example.com", "0.0.0.0", "::", "", "[::2]"] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn tls_failures_are_found_inside_io_errors() {
        let handshake = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let once = std::io::Error::new(std::io::ErrorKind::InvalidData, handshake.clone());
        let twice = std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, handshake.clone()));
        assert!(caused_by_tls(&handshake));
        assert!(caused_by_tls(&once));
        assert!(caused_by_tls(&twice), "hyper-rustls wraps the handshake's I/O error once more");
        assert!(!caused_by_tls(&std::io::Error::from(std::io::ErrorKind::ConnectionRefused)));
        assert!(!caused_by_tls(&std::io::Error::other("tls handshake eof")));
    }

    #[test]
    fn account_label() {
        let mut recipient = Recipient {
            user: "alice".into(),
            account_id: "123456789012".into(),
            account_alias: Some("payments-prod".into()),
            expires_at: Timestamp::UNIX_EPOCH,
            address: None,
        };
        assert_eq!(recipient.account_label(), "payments-prod (123456789012)");
        recipient.account_alias = None;
        assert_eq!(recipient.account_label(), "123456789012");
        recipient.account_alias = Some(String::new());
        assert_eq!(recipient.account_label(), "123456789012");
    }

    #[test]
    fn error_categories_are_bounded_and_say_what_to_retry() {
        assert_eq!(DeliveryError::from(NoAddress::Missing { key: "email".into() }).category(), "no-address");
        let timeout = DeliveryError::Smtp { kind: FailureKind::Timeout, detail: "x".into() };
        assert!(timeout.is_transient());
        assert_eq!(timeout.category(), "timeout");
        assert_eq!(timeout.to_string(), "SMTP delivery failed (timeout): x");
        let rejected = DeliveryError::Webhook { kind: FailureKind::Rejected, detail: "HTTP 404".into() };
        assert!(!rejected.is_transient());
        assert_eq!(rejected.to_string(), "webhook delivery failed (rejected): HTTP 404");
    }
}
