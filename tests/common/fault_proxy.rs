//! A fault-injecting, request-counting HTTP/1.1 proxy in front of moto.
//!
//! The operator is pointed at it through `AWS_ENDPOINT_URL`. Every request is counted by
//! IAM operation (the `Action=` of the form-encoded body) and by what the proxy did to it;
//! faults are drawn per request from a seeded xorshift generator, so a run injects the
//! same sequence of faults for the same sequence of requests.
//!
//! Client connections are kept alive (the SDK pools them); each forwarded request goes to
//! moto over a fresh connection with `Connection: close`, and the whole answer is relayed
//! with a correct `Content-Length`.
//!
//! Besides the counts, the proxy keeps a record of every request ([`Seen`]: when it
//! arrived, the SDK call and attempt it belongs to, what was done to it) and of every
//! request it held ([`Hold`]: who closed the connection, and when), so tests assert on
//! what happened on the wire rather than on how fast it happened.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Per-request fault probabilities, each in `0.0..=1.0`, drawn in this order.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// HTTP 400 `Throttling` (IAM's "Rate exceeded").
    pub throttle: f64,
    /// HTTP 500 `ServiceFailure`.
    pub server_error: f64,
    /// Hold the request without answering for [`FaultProxy::HOLD`], then close.
    pub timeout: f64,
    /// Close the TCP connection without a response: half of these before forwarding, half
    /// after moto has acted on the request (the response is lost).
    pub reset: f64,
}

/// What the proxy did to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Forwarded,
    Throttled,
    ServerError,
    TimedOut,
    Reset,
    /// Forwarded to moto (which acted on it), then the connection was closed before the
    /// answer: the lost-response case, where a retried create can duplicate work.
    ResetAfterUpstream,
    /// moto did not answer (the proxy closed the client connection).
    UpstreamFailed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Forwarded => "forwarded",
            Self::Throttled => "throttled",
            Self::ServerError => "server_error",
            Self::TimedOut => "timeout",
            Self::Reset => "reset",
            Self::ResetAfterUpstream => "reset_after_upstream",
            Self::UpstreamFailed => "upstream_failed",
        }
    }
}

/// One request as the proxy saw it. Parameters are kept only as a fingerprint (a body
/// may carry authentication codes), and nothing here is secret.
#[derive(Clone, Debug)]
pub struct Seen {
    /// When the whole request had arrived.
    pub at: Instant,
    /// The IAM operation (`Action=`).
    pub op: String,
    /// Whether it asks for a page after the first (it carries a `Marker`).
    pub continuation: bool,
    /// Fingerprint of the operation and its parameters: equal for the same request,
    /// whichever attempt or call sent it.
    pub fingerprint: u64,
    /// The SDK's `amz-sdk-invocation-id`: one per SDK call, the same on each of its attempts.
    pub invocation: Option<String>,
    /// The attempt of that call (`amz-sdk-request: attempt=N; max=M`), from 1.
    pub attempt: Option<u32>,
    /// The most attempts the SDK will make for that call.
    pub max_attempts: Option<u32>,
    pub outcome: Outcome,
}

/// How a held request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldEnd {
    /// The client closed the connection while the proxy still held the request.
    ClosedByClient,
    /// The proxy let go after [`FaultProxy::HOLD`] without the client having closed.
    LetGoByProxy,
}

/// A request the proxy held unanswered (a "timeout" fault).
#[derive(Clone, Debug)]
pub struct Hold {
    pub op: String,
    pub invocation: Option<String>,
    pub attempt: Option<u32>,
    /// When the request arrived and the hold began.
    pub since: Instant,
    /// When and how the hold ended; `None` while it lasts.
    pub end: Option<(Instant, HoldEnd)>,
}

struct State {
    upstream: String,
    faults: Mutex<Faults>,
    rng: Mutex<u64>,
    counts: Mutex<BTreeMap<(String, Outcome), u64>>,
    seen: Mutex<Vec<Seen>>,
    holds: Mutex<Vec<Hold>>,
    total: AtomicU64,
    request_ids: AtomicU64,
}

/// A running proxy; its tasks end with the test's runtime.
pub struct FaultProxy {
    url: String,
    state: Arc<State>,
}

impl FaultProxy {
    /// How long a "timeout" holds a request before closing the connection. The SDK sets
    /// no read or operation timeout by default (only a 3.1 s connect timeout), so the
    /// operator waits as long as the proxy holds.
    pub const HOLD: Duration = Duration::from_secs(35);

    /// Starts a proxy on 127.0.0.1 in front of `upstream` (`http://host:port`, as in
    /// `AWS_ENDPOINT_URL`), with no faults.
    pub async fn start(upstream: &str) -> Self {
        let upstream = upstream.trim_end_matches('/');
        let authority = upstream.strip_prefix("http://").unwrap_or_else(|| panic!("plain http upstream: {upstream}"));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fault proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let state = Arc::new(State {
            upstream: authority.to_owned(),
            faults: Mutex::new(Faults::default()),
            rng: Mutex::new(0x9E37_79B9_7F4A_7C15),
            counts: Mutex::new(BTreeMap::new()),
            seen: Mutex::new(Vec::new()),
            holds: Mutex::new(Vec::new()),
            total: AtomicU64::new(0),
            request_ids: AtomicU64::new(0),
        });
        let accepting = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, accepting.clone()));
            }
        });
        Self { url, state }
    }

    /// The endpoint to hand to the operator as `AWS_ENDPOINT_URL`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.state.faults.lock().expect("faults lock") = faults;
    }

    /// Requests by (IAM operation, outcome).
    pub fn counts(&self) -> BTreeMap<(String, String), u64> {
        let counts = self.state.counts.lock().expect("counts lock");
        counts.iter().map(|((op, outcome), n)| ((op.clone(), outcome.as_str().to_owned()), *n)).collect()
    }

    /// Requests per IAM operation, whatever was done to them.
    pub fn calls_per_op(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for ((op, _), n) in self.state.counts.lock().expect("counts lock").iter() {
            *out.entry(op.clone()).or_default() += n;
        }
        out
    }

    /// Every request the proxy has seen.
    pub fn total(&self) -> u64 {
        self.state.total.load(Ordering::SeqCst)
    }

    /// Requests of `op` that ended with `outcome`.
    pub fn count(&self, op: &str, outcome: Outcome) -> u64 {
        self.state.counts.lock().expect("counts lock").get(&(op.to_owned(), outcome)).copied().unwrap_or(0)
    }

    /// Every request so far, in the order the proxy decided what to do with them.
    pub fn requests(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("seen lock").clone()
    }

    /// First pages (requests without a `Marker`) per IAM operation: one per sweep of a
    /// paged listing, however many pages the account needs.
    pub fn first_pages(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for seen in self.state.seen.lock().expect("seen lock").iter().filter(|s| !s.continuation) {
            *out.entry(seen.op.clone()).or_default() += 1;
        }
        out
    }

    /// Every request the proxy held (or holds) unanswered.
    pub fn holds(&self) -> Vec<Hold> {
        self.state.holds.lock().expect("holds lock").clone()
    }
}

impl State {
    /// xorshift64*: a uniform draw in `0.0..1.0`.
    fn draw(&self) -> f64 {
        let mut x = self.rng.lock().expect("rng lock");
        *x ^= *x >> 12;
        *x ^= *x << 25;
        *x ^= *x >> 27;
        let out = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (out >> 11) as f64 / (1u64 << 53) as f64
    }

    fn choose(&self) -> Outcome {
        let faults = *self.faults.lock().expect("faults lock");
        for (p, outcome) in [
            (faults.throttle, Outcome::Throttled),
            (faults.server_error, Outcome::ServerError),
            (faults.timeout, Outcome::TimedOut),
            (faults.reset, Outcome::Reset),
        ] {
            if p > 0.0 && self.draw() < p {
                if outcome == Outcome::Reset && self.draw() < 0.5 {
                    return Outcome::ResetAfterUpstream;
                }
                return outcome;
            }
        }
        Outcome::Forwarded
    }

    fn record(&self, request: &Request, arrived: Instant, outcome: Outcome) {
        let op = request.operation();
        self.seen.lock().expect("seen lock").push(request.seen(arrived, outcome));
        self.total.fetch_add(1, Ordering::SeqCst);
        *self.counts.lock().expect("counts lock").entry((op, outcome)).or_default() += 1;
    }

    /// Records the start of a hold; returns its index for [`State::hold_ended`].
    fn hold_started(&self, request: &Request, since: Instant) -> usize {
        let (invocation, attempt, _) = request.sdk_attempt();
        let mut holds = self.holds.lock().expect("holds lock");
        holds.push(Hold { op: request.operation(), invocation, attempt, since, end: None });
        holds.len() - 1
    }

    fn hold_ended(&self, index: usize, how: HoldEnd) {
        self.holds.lock().expect("holds lock")[index].end = Some((Instant::now(), how));
    }

    fn request_id(&self) -> String {
        format!("fault-proxy-{:08}", self.request_ids.fetch_add(1, Ordering::SeqCst))
    }
}

/// One parsed request: the head as received (lines without CRLF) and the body.
struct Request {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn operation(&self) -> String {
        let body = String::from_utf8_lossy(&self.body);
        let from_body = body.split('&').find_map(|pair| pair.strip_prefix("Action=")).map(str::to_owned);
        let from_query =
            self.request_line.split(['?', '&', ' ']).find_map(|p| p.strip_prefix("Action=")).map(str::to_owned);
        from_body.or(from_query).unwrap_or_else(|| "(none)".to_owned())
    }

    /// The SDK's invocation id, attempt number and most attempts, when it sent them.
    fn sdk_attempt(&self) -> (Option<String>, Option<u32>, Option<u32>) {
        let invocation = header(&self.headers, "amz-sdk-invocation-id").map(str::to_owned);
        let info = header(&self.headers, "amz-sdk-request").unwrap_or_default();
        let field = |name: &str| {
            info.split(';').find_map(|part| part.trim().strip_prefix(name)?.strip_prefix('=')?.trim().parse().ok())
        };
        (invocation, field("attempt"), field("max"))
    }

    fn seen(&self, at: Instant, outcome: Outcome) -> Seen {
        let body = String::from_utf8_lossy(&self.body);
        let continuation = body.split('&').any(|pair| pair.starts_with("Marker="));
        let mut hasher = DefaultHasher::new();
        body.hash(&mut hasher);
        self.request_line.hash(&mut hasher);
        let (invocation, attempt, max_attempts) = self.sdk_attempt();
        Seen {
            at,
            op: self.operation(),
            continuation,
            fingerprint: hasher.finish(),
            invocation,
            attempt,
            max_attempts,
            outcome,
        }
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

async fn read_head<R: AsyncBufReadExt + Unpin>(reader: &mut R) -> Option<(String, Vec<(String, String)>)> {
    let mut first = String::new();
    loop {
        first.clear();
        if reader.read_line(&mut first).await.ok()? == 0 {
            return None;
        }
        if !first.trim().is_empty() {
            break;
        }
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    Some((first.trim_end_matches(['\r', '\n']).to_owned(), headers))
}

/// Reads a body framed by Content-Length or chunked encoding (`None` on a broken stream).
async fn read_body<R: AsyncBufReadExt + Unpin>(reader: &mut R, headers: &[(String, String)]) -> Option<Vec<u8>> {
    if header(headers, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).await.ok()?;
            let size = usize::from_str_radix(size.trim().split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).await.ok()? == 0 || line.trim().is_empty() {
                        return Some(body);
                    }
                }
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..]).await.ok()?;
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf).await.ok()?;
        }
    }
    let length: usize = header(headers, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.ok()?;
    Some(body)
}

async fn serve(stream: TcpStream, state: Arc<State>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let Some((request_line, headers)) = read_head(&mut reader).await else { return };
        if header(&headers, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
            && write.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err()
        {
            return;
        }
        let Some(body) = read_body(&mut reader, &headers).await else { return };
        let arrived = Instant::now();
        let request = Request { request_line, headers, body };
        let outcome = state.choose();
        let response = match outcome {
            Outcome::Forwarded => match forward(&state.upstream, &request).await {
                Some(response) => response,
                None => {
                    state.record(&request, arrived, Outcome::UpstreamFailed);
                    return;
                }
            },
            Outcome::Throttled => error_response(400, "Bad Request", "Sender", "Throttling", "Rate exceeded", &state),
            Outcome::ServerError => error_response(
                500,
                "Internal Server Error",
                "Receiver",
                "ServiceFailure",
                "Request processing has failed due to some unknown error, exception or failure.",
                &state,
            ),
            Outcome::TimedOut => {
                state.record(&request, arrived, outcome);
                let hold = state.hold_started(&request, arrived);
                let how = tokio::select! {
                    () = tokio::time::sleep(FaultProxy::HOLD) => HoldEnd::LetGoByProxy,
                    () = closed_by_peer(&mut reader) => HoldEnd::ClosedByClient,
                };
                state.hold_ended(hold, how);
                return;
            }
            Outcome::Reset => {
                state.record(&request, arrived, outcome);
                // Drop both halves: the client sees the connection closed with no answer.
                return;
            }
            Outcome::ResetAfterUpstream => {
                let answered = forward(&state.upstream, &request).await.is_some();
                state.record(&request, arrived, if answered { outcome } else { Outcome::UpstreamFailed });
                return;
            }
            Outcome::UpstreamFailed => unreachable!("never drawn"),
        };
        state.record(&request, arrived, outcome);
        if write.write_all(&response).await.is_err() || write.flush().await.is_err() {
            return;
        }
        if header(&request.headers, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            return;
        }
    }
}

/// Resolves when the client closes (or breaks) its side of the connection. Anything it
/// sends meanwhile is read and dropped: the held request is never answered.
async fn closed_by_peer<R: AsyncReadExt + Unpin>(reader: &mut R) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = reader.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

fn error_response(status: u16, reason: &str, kind: &str, code: &str, message: &str, state: &State) -> Vec<u8> {
    let body = format!(
        "<ErrorResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><Error><Type>{kind}</Type>\
         <Code>{code}</Code><Message>{message}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
        state.request_id()
    );
    let mut out =
        format!("HTTP/1.1 {status} {reason}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n", body.len())
            .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// Sends `request` to moto over a fresh connection and returns the whole answer, re-framed
/// with a Content-Length for the kept-alive client connection.
async fn forward(upstream: &str, request: &Request) -> Option<Vec<u8>> {
    let mut conn = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(upstream)).await.ok()?.ok()?;
    let mut head = format!("{}\r\n", request.request_line);
    for (k, v) in &request.headers {
        if ["connection", "content-length", "transfer-encoding", "expect", "keep-alive"]
            .iter()
            .any(|h| k.eq_ignore_ascii_case(h))
        {
            continue;
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", request.body.len()));
    conn.write_all(head.as_bytes()).await.ok()?;
    conn.write_all(&request.body).await.ok()?;
    conn.flush().await.ok()?;

    let mut reader = BufReader::new(conn);
    let answer = async {
        // Skip interim 1xx answers.
        let (status_line, headers) = loop {
            let (line, headers) = read_head(&mut reader).await?;
            if !line.split_whitespace().nth(1).is_some_and(|code| code.starts_with('1')) {
                break (line, headers);
            }
        };
        let body = if header(&headers, "transfer-encoding").is_some() || header(&headers, "content-length").is_some() {
            read_body(&mut reader, &headers).await?
        } else {
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest).await.ok()?;
            rest
        };
        Some((status_line, headers, body))
    };
    let (status_line, headers, body) = tokio::time::timeout(Duration::from_secs(60), answer).await.ok()??;
    let mut out = format!("{status_line}\r\n");
    for (k, v) in &headers {
        if ["connection", "content-length", "transfer-encoding", "keep-alive"].iter().any(|h| k.eq_ignore_ascii_case(h))
        {
            continue;
        }
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\nConnection: keep-alive\r\n\r\n", body.len()));
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}
