//! The test bed's strict IAM layer (`tests/testbed/strict_iam.py`, in front of moto):
//! its control endpoints under `/strict-iam/`, reached over plain HTTP/1.1 at
//! `AWS_ENDPOINT_URL`, and IAM clients for accounts of their own.
//!
//! moto is shared by every test running at the same time, so a test that acts on a
//! whole account (console cleanup, exact listings) does it in an account no other test
//! uses: [`unique_account`] with [`client_in_account`].

use std::time::Duration;

use aws_sdk_iam::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_iam::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const NOT_RUNNING: &str = "the strict IAM layer does not answer on the test bed's moto port. \
    The test bed runs plain moto: it was started with MFA_TESTBED_STRICT_IAM=0, or by a \
    tests/testbed/testbed that predates tests/testbed/strict_iam.py. Start it with the \
    layer (`tests/testbed/testbed down && tests/testbed/testbed up`, if nobody else uses \
    it), or point AWS_ENDPOINT_URL at a moto started by `strict_iam.py -p PORT`.";

/// `host:port` of `AWS_ENDPOINT_URL` (plain http, as the test bed serves it).
fn authority() -> String {
    super::require_testbed();
    let url = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL");
    let rest = url.strip_prefix("http://").unwrap_or_else(|| panic!("AWS_ENDPOINT_URL is not plain http: {url}"));
    rest.split('/').next().unwrap_or(rest).to_owned()
}

/// One request over a fresh connection: the status code and the body.
async fn request(method: &str, path_and_query: &str) -> (u16, String) {
    let authority = authority();
    let exchange = async {
        let mut conn = TcpStream::connect(&authority).await.map_err(|e| format!("connect: {e}"))?;
        let head = format!(
            "{method} {path_and_query} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        conn.write_all(head.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).await.map_err(|e| format!("receive: {e}"))?;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let (head, body) = answer.split_once("\r\n\r\n").ok_or("no end of headers")?;
        let status = head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).ok_or("no status code")?;
        Ok::<_, String>((status, body.to_owned()))
    };
    match tokio::time::timeout(Duration::from_secs(30), exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => panic!("{method} http://{authority}{path_and_query}: {e}"),
        Err(_) => panic!("{method} http://{authority}{path_and_query}: no answer within 30 s"),
    }
}

/// Panics with instructions unless the strict layer answers (plain moto would take the
/// control endpoints for S3 requests).
pub async fn require() {
    let (status, body) = request("GET", "/strict-iam/").await;
    let strict = status == 200
        && serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|v| v["strict_iam"] == serde_json::json!(true));
    assert!(strict, "GET /strict-iam/ answered {status}: {NOT_RUNNING}");
}

async fn control(method: &str, path_and_query: &str) -> serde_json::Value {
    require().await;
    let (status, body) = request(method, path_and_query).await;
    assert_eq!(status, 200, "{method} {path_and_query}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{method} {path_and_query}: not JSON ({e}): {body}"))
}

/// Deletes every unassigned virtual MFA device in `account` (every account when
/// `None`), as AWS does when anyone adds a virtual device in the console. Returns the
/// serials deleted. `None` also wipes devices other tests are using: tests pass an
/// account of their own.
pub async fn console_cleanup(account: Option<&str>) -> Vec<String> {
    let path = match account {
        Some(account) => {
            assert!(account.bytes().all(|b| b.is_ascii_digit()), "account ids are digits: {account}");
            format!("/strict-iam/console-cleanup?account={account}")
        }
        None => "/strict-iam/console-cleanup".to_owned(),
    };
    let answer = control("POST", &path).await;
    let deleted = answer["deleted"].as_array().unwrap_or_else(|| panic!("no \"deleted\" list in {answer}"));
    deleted
        .iter()
        .map(|s| s.as_str().unwrap_or_else(|| panic!("a serial that is no string in {answer}")).to_owned())
        .collect()
}

/// Delays every IAM request by `delay_ms` plus up to `jitter_ms` of uniform jitter, for
/// everyone using this moto. `set_latency(0, 0)` restores the default.
pub async fn set_latency(delay_ms: u64, jitter_ms: u64) {
    let answer = control("POST", &format!("/strict-iam/latency?delay_ms={delay_ms}&jitter_ms={jitter_ms}")).await;
    assert_eq!(
        (answer["delay_ms"].as_u64(), answer["jitter_ms"].as_u64()),
        (Some(delay_ms), Some(jitter_ms)),
        "the layer did not take the latency: {answer}"
    );
}

/// Like [`set_latency`], for the requests of `account` only (other tests are not slowed).
pub async fn set_account_latency(account: &str, delay_ms: u64, jitter_ms: u64) {
    assert!(account.bytes().all(|b| b.is_ascii_digit()), "account ids are digits: {account}");
    let path = format!("/strict-iam/latency?delay_ms={delay_ms}&jitter_ms={jitter_ms}&account={account}");
    let answer = control("POST", &path).await;
    assert_eq!(
        (answer["delay_ms"].as_u64(), answer["jitter_ms"].as_u64()),
        (Some(delay_ms), Some(jitter_ms)),
        "the layer did not take the latency: {answer}"
    );
}

/// A twelve-digit account id no other test uses (moto makes accounts on first use).
pub fn unique_account() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_nanos();
    format!("9{:011}", nanos % 100_000_000_000)
}

/// Selects moto's account through the `x-moto-account-id` header.
#[derive(Debug)]
struct MotoAccount(String);

impl Intercept for MotoAccount {
    fn name(&self) -> &'static str {
        "MotoAccount"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        context.request_mut().headers_mut().insert("x-moto-account-id", self.0.clone());
        Ok(())
    }
}

/// A raw IAM client (as [`super::iam::client`]) whose requests moto serves from `account`.
pub async fn client_in_account(account: &str) -> aws_sdk_iam::Client {
    let base = super::iam::client().await;
    let config = base.config().to_builder().interceptor(MotoAccount(account.to_owned())).build();
    aws_sdk_iam::Client::from_conf(config)
}
