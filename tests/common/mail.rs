//! The test bed's mail catcher, mailpit: every message sent to `MFA_TESTBED_SMTP` is kept
//! and read back through its HTTP API at `MFA_TESTBED_MAILPIT_API` (`/api/v1/...`).
//!
//! mailpit is shared by every test running at the same time: a test sends to addresses of
//! its own ([`unique_address`]) and reads and deletes only those ([`Mailpit::wait_for_mail_to`],
//! [`Mailpit::delete_to`]).

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

const NOT_RUNNING: &str = "mailpit, the test bed's mail catcher, is not in this environment \
    (MFA_TESTBED_SMTP / MFA_TESTBED_MAILPIT_API unset). A test bed started by an older \
    tests/testbed/testbed has none: `tests/testbed/testbed up` adds it to a running bed \
    (it builds mailpit into the cache first), then `eval \"$(tests/testbed/testbed env)\"` \
    and run `cargo test` again in that shell. `tests/run` does all of it.";

/// A mailbox address no other test uses: `<prefix>-<nanos>@<domain>`.
pub fn unique_address(prefix: &str) -> String {
    format!("{}@mfa-tests.example.com", super::unique(prefix))
}

/// One mailbox in mailpit's answers.
#[derive(Clone, Debug, Deserialize)]
pub struct Mailbox {
    #[serde(rename = "Name", default)]
    pub name: String,
    #[serde(rename = "Address")]
    pub address: String,
}

/// A message as mailpit lists it.
#[derive(Clone, Debug, Deserialize)]
pub struct Summary {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "From")]
    pub from: Option<Mailbox>,
    #[serde(rename = "To", default)]
    pub to: Vec<Mailbox>,
    #[serde(rename = "Subject", default)]
    pub subject: String,
}

/// A whole message: headers mailpit parsed, both bodies, and the SMTP login used.
#[derive(Clone, Debug, Deserialize)]
pub struct Mail {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "From")]
    pub from: Option<Mailbox>,
    #[serde(rename = "To", default)]
    pub to: Vec<Mailbox>,
    #[serde(rename = "Subject", default)]
    pub subject: String,
    /// The text/plain part.
    #[serde(rename = "Text", default)]
    pub text: String,
    /// The text/html part.
    #[serde(rename = "HTML", default)]
    pub html: String,
    /// The SMTP AUTH user name, when the sender logged in.
    #[serde(rename = "Username", default)]
    pub username: String,
}

impl Mail {
    /// The first URL in the text part that starts with `prefix` (e.g. the page's public
    /// URL): the link a person would click. It ends at whitespace or `>`.
    pub fn link(&self, prefix: &str) -> Option<String> {
        let start = self.text.find(prefix)?;
        let rest = &self.text[start..];
        let end = rest.find(|c: char| c.is_whitespace() || c == '>').unwrap_or(rest.len());
        Some(rest[..end].to_owned())
    }
}

#[derive(Deserialize)]
struct List {
    #[serde(default)]
    messages: Vec<Summary>,
}

/// mailpit's addresses, from the test bed's environment.
#[derive(Clone, Debug)]
pub struct Mailpit {
    /// `host:port` of its SMTP server (plain, STARTTLS offered, any login accepted).
    pub smtp_host: String,
    pub smtp_port: u16,
    /// Base URL of its HTTP API, e.g. `http://127.0.0.1:8025`.
    pub api: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Mailpit {
    /// Panics with instructions unless the test bed's mailpit is in the environment.
    pub fn from_env() -> Self {
        super::require_testbed();
        let (Ok(smtp), Ok(api)) = (std::env::var("MFA_TESTBED_SMTP"), std::env::var("MFA_TESTBED_MAILPIT_API")) else {
            panic!("{NOT_RUNNING}")
        };
        let (host, port) = smtp.rsplit_once(':').unwrap_or_else(|| panic!("MFA_TESTBED_SMTP is not host:port: {smtp}"));
        Self {
            smtp_host: host.to_owned(),
            smtp_port: port.parse().unwrap_or_else(|_| panic!("MFA_TESTBED_SMTP has no port: {smtp}")),
            api: api.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// One request to the API: status and body. Panics (saying how to start mailpit) when
    /// it does not answer within 10 s.
    async fn call(&self, method: hyper::Method, path: &str) -> (u16, String) {
        let url = format!("{}{path}", self.api);
        let request = hyper::Request::builder()
            .method(method.clone())
            .uri(&url)
            .body(Full::new(Bytes::new()))
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| format!("{e:?}"))?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok::<_, String>((status, String::from_utf8_lossy(&body).into_owned()))
        };
        match tokio::time::timeout(Duration::from_secs(10), exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => panic!("{method} {url}: {e}\nIs mailpit running? {NOT_RUNNING}"),
            Err(_) => panic!("{method} {url}: no answer within 10 s"),
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let (status, body) = self.call(hyper::Method::GET, path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not the JSON expected ({e}): {body}"))
    }

    /// The newest messages (up to 500), newest first.
    pub async fn list(&self) -> Vec<Summary> {
        self.json::<List>("/api/v1/messages?limit=500").await.messages
    }

    /// The messages with `address` among their recipients, newest first.
    pub async fn list_to(&self, address: &str) -> Vec<Summary> {
        let query = format!("to:\"{address}\"");
        let path = format!("/api/v1/search?limit=500&query={}", percent(&query));
        let found = self.json::<List>(&path).await.messages;
        // mailpit's search matches parts of addresses: keep exact recipients only.
        found.into_iter().filter(|m| m.to.iter().any(|t| t.address.eq_ignore_ascii_case(address))).collect()
    }

    /// One whole message.
    pub async fn get(&self, id: &str) -> Mail {
        self.json(&format!("/api/v1/message/{id}")).await
    }

    /// The message's source as it arrived (headers and MIME parts).
    pub async fn raw(&self, id: &str) -> String {
        let (status, body) = self.call(hyper::Method::GET, &format!("/api/v1/message/{id}/raw")).await;
        assert_eq!(status, 200, "GET raw {id}: {body}");
        body
    }

    /// Waits until exactly one message to `address` is there and returns it; panics after
    /// `timeout` with what arrived meanwhile (to that address and the latest overall), or
    /// at once when more than one came.
    pub async fn wait_for_mail_to(&self, address: &str, timeout: Duration) -> Mail {
        let mut mails = self.wait_for_mails_to(address, 1, timeout).await;
        mails.pop().expect("one mail")
    }

    /// Waits until exactly `count` messages to `address` are there and returns them,
    /// newest first; panics after `timeout` with what arrived meanwhile, or at once when
    /// more than `count` came.
    pub async fn wait_for_mails_to(&self, address: &str, count: usize, timeout: Duration) -> Vec<Mail> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let found = self.list_to(address).await;
            match found.len() {
                n if n == count => {
                    let mut mails = Vec::with_capacity(n);
                    for summary in &found {
                        mails.push(self.get(&summary.id).await);
                    }
                    return mails;
                }
                n if n < count && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                n if n < count => {
                    let latest: Vec<String> = self
                        .list()
                        .await
                        .iter()
                        .take(10)
                        .map(|m| {
                            let to: Vec<&str> = m.to.iter().map(|t| t.address.as_str()).collect();
                            format!("{to:?} {:?}", m.subject)
                        })
                        .collect();
                    panic!(
                        "{n} of {count} mails to {address} within {timeout:?}: {found:#?}; the latest in mailpit: {latest:#?}"
                    )
                }
                n => panic!("{n} messages to {address}, expected {count}: {found:#?}"),
            }
        }
    }

    /// Deletes the messages to `address` (and only those).
    pub async fn delete_to(&self, address: &str) {
        let ids: Vec<String> = self.list_to(address).await.into_iter().map(|m| m.id).collect();
        if ids.is_empty() {
            return;
        }
        self.delete(serde_json::json!({ "IDs": ids })).await;
    }

    /// Deletes every message. Other tests running at the same time lose theirs: only for
    /// a test bed of one's own.
    pub async fn delete_all(&self) {
        self.delete(serde_json::json!({})).await;
    }

    async fn delete(&self, body: serde_json::Value) {
        let url = format!("{}/api/v1/messages", self.api);
        let request = hyper::Request::builder()
            .method(hyper::Method::DELETE)
            .uri(&url)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("DELETE request");
        let response = tokio::time::timeout(Duration::from_secs(10), self.client.request(request))
            .await
            .unwrap_or_else(|_| panic!("DELETE {url}: no answer within 10 s"))
            .unwrap_or_else(|e| panic!("DELETE {url}: {e:?}"));
        assert_eq!(response.status().as_u16(), 200, "DELETE {url} {body}");
    }
}

/// A mailpit of one test's own, started from the test bed's binary (`MFA_TESTBED_MAILPIT`)
/// on free loopback ports with the bed's certificate, for what the shared one cannot do
/// (e.g. `--smtp-require-tls`: implicit TLS only). Killed and its files removed on drop.
pub struct PrivateMailpit {
    pub mailpit: Mailpit,
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl PrivateMailpit {
    /// Starts mailpit with `args` added to the usual flags (those of `start_mailpit` in
    /// tests/testbed/testbed but `--smtp-auth-allow-insecure`, which mailpit refuses next
    /// to `--smtp-require-tls`) and waits until it listens.
    pub async fn start(args: &[&str]) -> Self {
        super::require_testbed();
        let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: {NOT_RUNNING}"));
        let (binary, cert, key) =
            (var("MFA_TESTBED_MAILPIT"), var("MFA_TESTBED_MAILPIT_CERT"), var("MFA_TESTBED_MAILPIT_KEY"));
        let dir = std::env::temp_dir().join(super::unique(&format!("mfa-mailpit-{}", std::process::id())));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let (smtp_port, api_port) = (super::browser::free_port(), super::browser::free_port());
        let child = std::process::Command::new(&binary)
            .args(["--smtp", &format!("127.0.0.1:{smtp_port}"), "--listen", &format!("127.0.0.1:{api_port}")])
            .args(["--database", &dir.join("mailpit.db").display().to_string()])
            .args(["--smtp-tls-cert", &cert, "--smtp-tls-key", &key])
            .args(["--smtp-auth-accept-any", "--smtp-disable-rdns"])
            .args(["--disable-version-check", "--disable-http-compression"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(dir.join("mailpit.log")).expect("log file"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {binary}: {e}"));
        let mut private = Self {
            mailpit: Mailpit {
                smtp_host: "127.0.0.1".into(),
                smtp_port,
                api: format!("http://127.0.0.1:{api_port}"),
                client: Client::builder(TokioExecutor::new()).build_http(),
            },
            child,
            dir,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", api_port)).await.is_err()
            || tokio::net::TcpStream::connect(("127.0.0.1", smtp_port)).await.is_err()
        {
            let log = || std::fs::read_to_string(private.dir.join("mailpit.log")).unwrap_or_default();
            if let Ok(Some(status)) = private.child.try_wait() {
                panic!("mailpit {args:?} exited ({status}); its log:\n{}", log());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "mailpit {args:?} not listening after 30 s; its log:\n{}",
                log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        private
    }
}

impl Drop for PrivateMailpit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
