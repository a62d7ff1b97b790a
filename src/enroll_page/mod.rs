//! The self-service enrollment page (issue 11, `Link` delivery): a person opens a one-time
//! link, presses Start, the operator creates their virtual MFA device just in time and
//! shows its QR code and secret key once, the person enters two codes, the operator
//! enables the device and marks the link used. The seed never leaves this process's
//! memory, and only for the minutes of one setup.
//!
//! Self-contained: the caller supplies the links ([`LinkStore`]), IAM for a link's account
//! and how to name and tag its device ([`Accounts`]), and a [`PageConfig`]; it mounts
//! [`EnrollPage::router`] on a listener of its own and runs [`EnrollPage::run_sweeper`]
//! beside it.
//!
//! Routes (`{id}` is the non-secret link id, `{token}` the secret token):
//! - `GET /enroll/{id}/{token}`: who is enrolling, and a Start button. Creates nothing
//!   (link previewers in mail and chat clients fetch links).
//! - `POST /enroll/{id}/{token}/start`: creates the device, shows the QR code and key.
//! - `POST /enroll/{id}/{token}/codes`: checks two codes locally, then enables.
//! - `POST /enroll/{id}/{token}/cancel`: deletes the pending device.
//!
//! A second browser on a link whose setup is open is refused (a reload or a second tab
//! in the same browser shows the same setup, with no new device): taking over would
//! delete a device whose QR code the first window may have scanned already, and would let
//! anyone else holding the link cut a setup short. A closed window costs at most the
//! setup's timeout, which the refusal states; the first window can cancel.
//!
//! Every response carries a strict Content Security Policy and the other security
//! headers; every POST passes the CSRF check of [`csrf`]; requests are rate limited per
//! client address and per link id; the request log names the route with the token
//! replaced by `<token>`.

mod csrf;
mod html;
mod limits;
mod metrics;
mod outcome;
mod session;
mod store;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jiff::{SignedDuration, Timestamp};

use crate::aws::{DeviceTags, IamApi};
use crate::link::{self, LinkId, Purpose, Record};
use crate::{qr, totp};
use csrf::{BrowserKey, CsrfKey};
use limits::Limiter;
use session::{Begin, Pending, Session, Sessions, Shared};

pub use limits::Rate;
pub use metrics::PageMetrics;
pub use outcome::Refusal;
pub use session::MAX_GUESSES;
pub use store::{LinkStore, MarkError, MemoryLinkStore, StoreError};

/// How long a setup stays open after Start unless [`PageConfig::session_timeout`] says
/// otherwise.
pub const DEFAULT_SESSION_TIMEOUT: SignedDuration = SignedDuration::from_mins(10);
/// Bounds of a setup's timeout.
pub const MIN_SESSION_TIMEOUT: SignedDuration = SignedDuration::from_mins(2);
pub const MAX_SESSION_TIMEOUT: SignedDuration = SignedDuration::from_hours(1);
/// Issuer shown by authenticator apps, as AWS's own QR codes (and the seed Secrets) name it.
pub const ISSUER: &str = "Amazon Web Services";
/// How often [`EnrollPage::serve`] sweeps abandoned setups.
pub const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(30);
/// Largest form body accepted.
const MAX_BODY_BYTES: usize = 4096;

/// How to create a link's device: what the binding says for the account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSpec {
    /// The device path (`/mfa-operator/`, the binding's `device.path`).
    pub path: String,
    /// The device name: the IAM user's name, as the Secret flow names devices.
    pub name: String,
    /// Tags for the device (`iam.mfa-operator.dev/enrollment`, `iam.mfa-operator.dev/user`).
    pub tags: DeviceTags,
}

/// A link's account, reached.
pub struct Reached<I> {
    pub iam: Arc<I>,
    /// Shown to the person: the account alias, or the account id.
    pub account_label: String,
    pub device: DeviceSpec,
    /// Who the link is for, as an authenticating proxy names people (the user's address
    /// tag): checked against `--trusted-identity-header` when that is set.
    pub identity: Option<String>,
}

/// Why a link's account cannot be used now.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReachError {
    /// The link no longer grants anything (enrollment deleted, user deselected, binding
    /// gone): the page answers as for an unknown link.
    #[error("the link no longer grants an enrollment")]
    Revoked,
    /// The account cannot be reached now (credentials, STS): try again later. The
    /// message is logged.
    #[error("the account cannot be reached: {0}")]
    Unavailable(String),
}

/// Hands out IAM for a link's account, and the device to create there.
pub trait Accounts: Send + Sync + 'static {
    type Iam: IamApi + 'static;

    /// IAM of `purpose.account`, with the label to show and the device to create for
    /// `purpose.user`. Called when a link is opened and when Start is pressed.
    fn reach(&self, purpose: &Purpose) -> impl Future<Output = Result<Reached<Self::Iam>, ReachError>> + Send;
}

/// The page's settings.
#[derive(Clone, Debug)]
pub struct PageConfig {
    /// Where people reach the page (`https://mfa.example.com`, with any path prefix an
    /// Ingress adds): POSTs must come from its origin, and over HTTPS the cookie is
    /// `Secure` with the `__Host-` prefix.
    pub public_url: String,
    /// How long a setup stays open after Start (bounded by [`MIN_SESSION_TIMEOUT`] and
    /// [`MAX_SESSION_TIMEOUT`]); then its device is deleted.
    pub session_timeout: SignedDuration,
    /// Setups open at once, across links (each holds a pending device).
    pub max_sessions: usize,
    /// Requests per link id.
    pub per_link: Rate,
    /// Requests per client address.
    pub per_client: Rate,
    /// Keys each rate limiter remembers at most.
    pub limiter_capacity: usize,
    /// A header whose last address is the client's, set by a trusted proxy in front
    /// (`X-Forwarded-For` behind an Ingress); else the peer address.
    pub client_address_header: Option<HeaderName>,
    /// A header an authenticating proxy in front sets to the signed-in person's address:
    /// when set, a link opens only for the person it is for (see [`Reached::identity`]).
    pub trusted_identity_header: Option<HeaderName>,
    /// The issuer authenticator apps show.
    pub issuer: String,
}

impl PageConfig {
    /// The defaults, for the page at `public_url`.
    pub fn new(public_url: impl Into<String>) -> Self {
        Self {
            public_url: public_url.into(),
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            max_sessions: 256,
            per_link: Rate { burst: 20, per_minute: 10 },
            per_client: Rate { burst: 60, per_minute: 30 },
            limiter_capacity: 4096,
            client_address_header: None,
            trusted_identity_header: None,
            issuer: ISSUER.to_owned(),
        }
    }
}

/// The page cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("the public URL {0:?} is not an absolute http:// or https:// URL")]
    PublicUrl(String),
    #[error(
        "the public URL {0:?} is plain HTTP to another machine: use https:// (plain HTTP only to 127.0.0.1, localhost or [::1])"
    )]
    PlainHttp(String),
    #[error("no randomness from the operating system: {0}")]
    Random(getrandom::Error),
}

/// The clock (injectable for tests).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;
/// Random bytes (injectable for tests); the default is the OS's.
pub type Random = Arc<dyn Fn(&mut [u8]) -> Result<(), getrandom::Error> + Send + Sync>;

/// The page: its state and its router.
pub struct EnrollPage<A: Accounts, S: LinkStore> {
    accounts: A,
    store: S,
    config: PageConfig,
    /// `scheme://host[:port]` of the public URL.
    origin: String,
    /// The path of the public URL without its last `/` (forms post to it).
    base_path: String,
    /// Served over HTTPS.
    secure: bool,
    clock: Clock,
    random: Random,
    csrf: CsrfKey,
    sessions: Sessions<A::Iam>,
    per_link: Limiter<LinkId>,
    per_client: Limiter<IpAddr>,
    metrics: PageMetrics,
}

impl<A: Accounts, S: LinkStore> std::fmt::Debug for EnrollPage<A, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollPage")
            .field("config", &self.config)
            .field("sessions", &self.sessions)
            .field("csrf", &self.csrf)
            .finish_non_exhaustive()
    }
}

/// A record to check presented tokens against when there is none, so an unknown link
/// costs the same digest as a known one.
static DECOY: LazyLock<Record> = LazyLock::new(|| {
    let purpose = Purpose { account: String::new(), user: String::new(), enrollment_uid: String::new() };
    link::mint(purpose, [0; link::TOKEN_BYTES], Timestamp::UNIX_EPOCH, SignedDuration::ZERO).1
});

fn os_random(bytes: &mut [u8]) -> Result<(), getrandom::Error> {
    getrandom::fill(bytes)
}

impl<A: Accounts, S: LinkStore> EnrollPage<A, S> {
    /// The page over `accounts` and `store`, with the system clock, the OS's randomness,
    /// a CSRF key drawn now and its own [`PageMetrics`].
    pub fn new(accounts: A, store: S, config: PageConfig) -> Result<Self, PageError> {
        let origin = csrf::origin_of(&config.public_url)
            .filter(|o| o.starts_with("https://") || o.starts_with("http://"))
            .ok_or_else(|| PageError::PublicUrl(config.public_url.clone()))?;
        // Over plain HTTP the browser cookie can be neither `Secure` nor `__Host-`: a link
        // holder on the network could plant one and resume the person's setup. Only for a
        // page on this machine (tests, a port-forward).
        let host = origin.strip_prefix("http://").map(|h| h.rsplit_once(':').map_or(h, |(host, _)| host));
        if host.is_some_and(|h| !matches!(h, "127.0.0.1" | "localhost" | "[::1]")) {
            return Err(PageError::PlainHttp(config.public_url.clone()));
        }
        let mut key = [0; csrf::KEY_BYTES];
        getrandom::fill(&mut key).map_err(PageError::Random)?;
        let metrics = PageMetrics::default();
        let after_origin = config.public_url.split_once("://").map_or("", |(_, rest)| rest);
        let base_path = after_origin.find('/').map_or("", |slash| &after_origin[slash..]);
        let base_path = base_path.split(['?', '#']).next().unwrap_or_default().trim_end_matches('/').to_owned();
        Ok(Self {
            base_path,
            accounts,
            store,
            secure: origin.starts_with("https://"),
            origin,
            clock: Arc::new(Timestamp::now),
            random: Arc::new(os_random),
            csrf: CsrfKey::new(key),
            sessions: Sessions::new(config.max_sessions, metrics.devices_deleted.clone()),
            per_link: Limiter::new(config.per_link, config.limiter_capacity),
            per_client: Limiter::new(config.per_client, config.limiter_capacity),
            metrics,
            config: PageConfig {
                session_timeout: config.session_timeout.clamp(MIN_SESSION_TIMEOUT, MAX_SESSION_TIMEOUT),
                ..config
            },
        })
    }

    pub fn with_clock(self, clock: Clock) -> Self {
        Self { clock, ..self }
    }

    pub fn with_random(self, random: Random) -> Self {
        Self { random, ..self }
    }

    /// Counts into `metrics` (for example counters already registered with the
    /// operator's registry) instead of the page's own. Call before serving.
    pub fn with_metrics(self, metrics: PageMetrics) -> Self {
        let sessions = Sessions::new(self.config.max_sessions, metrics.devices_deleted.clone());
        Self { metrics, sessions, ..self }
    }

    /// The page's counters, to register with the operator's registry.
    pub fn metrics(&self) -> &PageMetrics {
        &self.metrics
    }

    /// Serials of the pending devices the page holds right now: a sweep of unassigned
    /// devices under the device path must leave these alone.
    pub fn pending_devices(&self) -> Vec<String> {
        self.sessions.pending_devices()
    }

    /// Setups open now.
    pub fn open_sessions(&self) -> usize {
        self.sessions.open()
    }

    /// Deletes the devices of setups past their timeout (and retries deletions that
    /// failed). Returns how many devices were deleted.
    pub async fn sweep(&self) -> usize {
        self.sessions.sweep(self.now()).await
    }

    /// Sweeps every `every` until the task is dropped.
    pub async fn run_sweeper(self: Arc<Self>, every: std::time::Duration) {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            interval.tick().await;
            let deleted = self.sweep().await;
            if deleted > 0 {
                tracing::info!(deleted, "deleted the devices of abandoned enrollment page setups");
            }
        }
    }

    /// Serves the page on `listener` (limits per peer address) and sweeps abandoned
    /// setups every [`SWEEP_EVERY`], until the process ends.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        let sweeper = tokio::spawn(self.clone().run_sweeper(SWEEP_EVERY));
        let app = self.router().into_make_service_with_connect_info::<SocketAddr>();
        let served = axum::serve(listener, app).await;
        sweeper.abort();
        served
    }

    /// The page's routes, with security headers, rate limits and request logs. Serve it
    /// with `into_make_service_with_connect_info::<SocketAddr>()` so limits apply per
    /// client address. Routes start at `/enroll/`: when the public URL has a path prefix,
    /// the proxy strips it (or the caller nests this router under it); the forms post to
    /// the prefixed paths.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/enroll/{id}/{token}", get(open::<A, S>))
            .route("/enroll/{id}/{token}/start", post(start::<A, S>))
            .route("/enroll/{id}/{token}/codes", post(codes::<A, S>))
            .route("/enroll/{id}/{token}/cancel", post(cancel::<A, S>))
            .fallback(not_found::<A, S>)
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .layer(middleware::from_fn_with_state(self.clone(), guard::<A, S>))
            .with_state(self)
    }

    fn now(&self) -> Timestamp {
        (self.clock)()
    }

    fn random<const N: usize>(&self) -> Result<[u8; N], Refusal> {
        let mut bytes = [0; N];
        (self.random)(&mut bytes).map_err(|e| {
            tracing::warn!(error = %e, "no randomness for the enrollment page");
            Refusal::TryLater
        })?;
        Ok(bytes)
    }

    /// The link `id` opened by `token`, or why not. Unknown ids and wrong tokens get the
    /// same answer, after the same work.
    async fn open_link(&self, id: &str, token: &str, now: Timestamp) -> Result<(LinkId, Record), Refusal> {
        let found = match LinkId::parse(id) {
            Some(link) => match self.store.get(&link).await {
                Ok(record) => record.map(|record| (link, record)),
                Err(e) => {
                    tracing::warn!(link = %link, error = %e, "cannot read the link");
                    return Err(Refusal::TryLater);
                }
            },
            None => None,
        };
        let Some((link, record)) = found else {
            let _ = link::check(&DECOY, token, now);
            return Err(Refusal::UnknownLink);
        };
        match link::check(&record, token, now) {
            Ok(()) => Ok((link, record)),
            Err(link::Refusal::Unknown) => Err(Refusal::UnknownLink),
            Err(link::Refusal::Expired) => Err(Refusal::LinkExpired),
            Err(link::Refusal::Used) => Err(Refusal::LinkUsed),
        }
    }

    async fn reach(&self, purpose: &Purpose, headers: &HeaderMap) -> Result<Reached<A::Iam>, Refusal> {
        let reached = self.accounts.reach(purpose).await.map_err(|e| match e {
            ReachError::Revoked => Refusal::UnknownLink,
            ReachError::Unavailable(message) => {
                tracing::warn!(account = %purpose.account, error = %message, "cannot reach the link's account");
                Refusal::TryLater
            }
        })?;
        if let Some(header) = &self.config.trusted_identity_header {
            // The proxy's word is trusted only because the page is reachable through it
            // alone (see docs/operations.md); a missing header is a mismatch.
            // Exactly one value: a proxy that appends would let the client's own through.
            let mut values = headers.get_all(header).iter();
            let signed_in = match (values.next(), values.next()) {
                (Some(value), None) => value.to_str().ok().map(str::trim),
                _ => None,
            };
            let matches = match (signed_in, reached.identity.as_deref()) {
                (Some(signed_in), Some(identity)) => signed_in.eq_ignore_ascii_case(identity.trim()),
                _ => false,
            };
            if !matches {
                tracing::info!(user = %purpose.user, "the signed-in person is not the one the link is for");
                return Err(Refusal::NotYourLink);
            }
        }
        Ok(reached)
    }

    /// The browser behind a POST, if the form is this page's in this browser.
    fn check_form(&self, link: &LinkId, headers: &HeaderMap, form: &Form) -> Result<BrowserKey, Refusal> {
        if !csrf::same_origin(headers, &self.origin) {
            return Err(Refusal::Forbidden);
        }
        let browser = BrowserKey::from_headers(headers, self.secure).ok_or(Refusal::Forbidden)?;
        let presented = form.get("csrf").unwrap_or_default();
        if self.csrf.verify(link, &browser, presented) { Ok(browser) } else { Err(Refusal::Forbidden) }
    }

    fn refuse(&self, refusal: &Refusal) -> Response {
        self.metrics.count_refusal(refusal.cause());
        let mut response = (refusal.status(), html_body(html::refused(refusal))).into_response();
        if let Refusal::RateLimited { retry_after_secs } = refusal {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        response
    }

    fn client_address(&self, request: &Request) -> IpAddr {
        let forwarded = self.config.client_address_header.as_ref().and_then(|name| {
            let values = request.headers().get_all(name).iter().filter_map(|v| v.to_str().ok());
            values.flat_map(|v| v.split(',')).filter_map(|v| v.trim().parse::<IpAddr>().ok()).next_back()
        });
        let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(peer)| peer.ip());
        forwarded.or(peer).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    /// The setup page of `session` (which has its device).
    fn setup_page(
        &self,
        route: &LinkRoute<'_>,
        browser: &BrowserKey,
        session: &Session<A::Iam>,
        refusal: Option<&Refusal>,
    ) -> Result<Response, Refusal> {
        let device = session.device.as_ref().ok_or(Refusal::NoSession)?;
        let label = format!("{}@{}", session.purpose.user, session.account_label);
        let uri = qr::otpauth_uri(&self.config.issuer, &label, device.seed.expose());
        let qr_data_uri = match qr::qr_png(&uri) {
            Ok(png) => Some(format!("data:image/png;base64,{}", data_encoding::BASE64.encode(&png))),
            Err(e) => {
                tracing::warn!(error = %e, "cannot render the QR code; the page shows the secret key only");
                None
            }
        };
        let secret_key = html::grouped(device.seed.expose());
        let page = html::setup(
            &html::Who { user: &session.purpose.user, account: &session.account_label },
            &html::Setup {
                qr_data_uri: qr_data_uri.as_deref(),
                secret_key: &secret_key,
                codes_action: &route.action("codes"),
                cancel_action: &route.action("cancel"),
                csrf: &self.csrf.form_token(route.link, browser),
                expires: &clock_time(session.expires_at),
            },
            refusal,
        );
        let status = match refusal {
            Some(refusal) => {
                self.metrics.count_refusal(refusal.cause());
                refusal.status()
            }
            None => StatusCode::OK,
        };
        Ok((status, html_body(page)).into_response())
    }
}

/// A form body (`application/x-www-form-urlencoded`), first value of each name.
struct Form(HashMap<String, String>);

impl Form {
    fn parse(body: &[u8]) -> Self {
        let mut fields = HashMap::new();
        for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
            let mut parts = pair.splitn(2, |b| *b == b'=');
            let name = percent_decode(parts.next().unwrap_or_default());
            let value = percent_decode(parts.next().unwrap_or_default());
            fields.entry(name).or_insert(value);
        }
        Self(fields)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// Decodes `+` and `%XX`; a broken escape is kept as written.
fn percent_decode(text: &[u8]) -> String {
    let hex = |b: u8| char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok());
    let mut bytes = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'+' => bytes.push(b' '),
            b'%' if i + 2 < text.len() => match (hex(text[i + 1]), hex(text[i + 2])) {
                (Some(high), Some(low)) => {
                    bytes.push(high << 4 | low);
                    i += 2;
                }
                _ => bytes.push(b'%'),
            },
            other => bytes.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A time for people: `14:05 UTC`.
fn clock_time(at: Timestamp) -> String {
    at.strftime("%H:%M UTC").to_string()
}

fn html_body(page: String) -> ([(HeaderName, HeaderValue); 1], String) {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))], page)
}

/// A request's path as the log and the rate limits see it: the link id, never the token.
struct LoggedRoute {
    /// `/enroll/{id}/<token>[/start|/codes|/cancel]`, or `<other>`.
    redacted: String,
    link: Option<LinkId>,
}

impl LoggedRoute {
    fn of(path: &str) -> Self {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let step = match segments.as_slice() {
            ["enroll", _, _] => Some(""),
            ["enroll", _, _, step @ ("start" | "codes" | "cancel")] => Some(*step),
            _ => None,
        };
        match step {
            Some(step) => {
                let link = LinkId::parse(segments[1]);
                let id = link.as_ref().map_or("<invalid-id>", LinkId::as_str);
                let suffix = if step.is_empty() { String::new() } else { format!("/{step}") };
                Self { redacted: format!("{}{id}/<token>{suffix}", link::PATH_PREFIX), link }
            }
            None => Self { redacted: "<other>".into(), link: None },
        }
    }
}

/// Security headers, rate limits and the request log, around every route.
async fn guard<A: Accounts, S: LinkStore>(
    State(page): State<Arc<EnrollPage<A, S>>>,
    request: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let route = LoggedRoute::of(request.uri().path());
    let method = request.method().clone();
    let client = page.client_address(&request);
    let now = page.now();
    let limited = page
        .per_client
        .take(&client, now)
        .and_then(|()| route.link.as_ref().map_or(Ok(()), |link| page.per_link.take(link, now)));
    let mut response = match limited {
        Ok(()) => next.run(request).await,
        Err(retry_after_secs) => page.refuse(&Refusal::RateLimited { retry_after_secs }),
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_str(&html::CSP).ok()),
        (header::REFERRER_POLICY, Some(HeaderValue::from_static("no-referrer"))),
        (header::CACHE_CONTROL, Some(HeaderValue::from_static("no-store"))),
        (header::X_FRAME_OPTIONS, Some(HeaderValue::from_static("DENY"))),
        (header::X_CONTENT_TYPE_OPTIONS, Some(HeaderValue::from_static("nosniff"))),
        (HeaderName::from_static("cross-origin-opener-policy"), Some(HeaderValue::from_static("same-origin"))),
    ] {
        if let Some(value) = value {
            headers.insert(name, value);
        }
    }
    tracing::info!(
        method = %method,
        route = %route.redacted,
        status = response.status().as_u16(),
        elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "enrollment page request"
    );
    response
}

/// The link a request is for.
struct LinkRoute<'a> {
    /// The path of the public URL (`""`, or a prefix such as `/mfa`).
    base: &'a str,
    link: &'a LinkId,
    token: &'a str,
}

impl LinkRoute<'_> {
    /// The path of a form's action.
    fn action(&self, step: &str) -> String {
        format!("{}{}{}/{}/{step}", self.base, link::PATH_PREFIX, self.link, self.token)
    }
}

fn respond(result: Result<Response, Response>) -> Response {
    result.unwrap_or_else(|response| response)
}

async fn not_found<A: Accounts, S: LinkStore>(State(page): State<Arc<EnrollPage<A, S>>>) -> Response {
    page.refuse(&Refusal::UnknownLink)
}

/// `GET /enroll/{id}/{token}`.
async fn open<A: Accounts, S: LinkStore>(
    State(page): State<Arc<EnrollPage<A, S>>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let Ok(Path((id, token))) = path else { return page.refuse(&Refusal::UnknownLink) };
    respond(page.show_start(&id, &token, &headers).await.map_err(|refusal| page.refuse(&refusal)))
}

/// `POST /enroll/{id}/{token}/start`.
async fn start<A: Accounts, S: LinkStore>(
    State(page): State<Arc<EnrollPage<A, S>>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(Path((id, token))) = path else { return page.refuse(&Refusal::UnknownLink) };
    respond(page.start(&id, &token, &headers, &Form::parse(&body)).await.map_err(|refusal| page.refuse(&refusal)))
}

/// `POST /enroll/{id}/{token}/codes`.
async fn codes<A: Accounts, S: LinkStore>(
    State(page): State<Arc<EnrollPage<A, S>>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(Path((id, token))) = path else { return page.refuse(&Refusal::UnknownLink) };
    respond(page.submit(&id, &token, &headers, &Form::parse(&body)).await.map_err(|refusal| page.refuse(&refusal)))
}

/// `POST /enroll/{id}/{token}/cancel`.
async fn cancel<A: Accounts, S: LinkStore>(
    State(page): State<Arc<EnrollPage<A, S>>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(Path((id, token))) = path else { return page.refuse(&Refusal::UnknownLink) };
    respond(page.cancel(&id, &token, &headers, &Form::parse(&body)).await.map_err(|refusal| page.refuse(&refusal)))
}

impl<A: Accounts, S: LinkStore> EnrollPage<A, S> {
    async fn show_start(&self, id: &str, token: &str, headers: &HeaderMap) -> Result<Response, Refusal> {
        let (link, record) = self.open_link(id, token, self.now()).await?;
        let reached = self.reach(&record.purpose, headers).await?;
        let known = BrowserKey::from_headers(headers, self.secure);
        let browser = match &known {
            Some(browser) => browser.clone(),
            None => BrowserKey::new(self.random()?),
        };
        let route = LinkRoute { base: &self.base_path, link: &link, token };
        let page = html::start(
            &html::Who { user: &record.purpose.user, account: &reached.account_label },
            &route.action("start"),
            &self.csrf.form_token(&link, &browser),
            self.config.session_timeout.as_mins(),
        );
        self.metrics.links_opened.inc();
        let mut response = (StatusCode::OK, html_body(page)).into_response();
        if known.is_none() {
            response.headers_mut().insert(header::SET_COOKIE, browser.set_cookie(self.secure));
        }
        Ok(response)
    }

    async fn start(
        self: &Arc<Self>,
        id: &str,
        token: &str,
        headers: &HeaderMap,
        form: &Form,
    ) -> Result<Response, Refusal> {
        let now = self.now();
        let (link, record) = self.open_link(id, token, now).await?;
        let browser = self.check_form(&link, headers, form)?;
        let route = LinkRoute { base: &self.base_path, link: &link, token };
        let reached = self.reach(&record.purpose, headers).await?;
        let Reached { iam, account_label, device: spec, .. } = reached;
        let begun = self.sessions.begin(&link, &browser, now, || Session {
            purpose: record.purpose.clone(),
            iam,
            account_label,
            device: None,
            guesses: 0,
            ended: false,
            expires_at: now.checked_add(self.config.session_timeout).unwrap_or(now),
        });
        match begun {
            Begin::Busy => Err(Refusal::Busy),
            Begin::Other { expires_at } => Err(Refusal::OtherWindow { until: clock_time(expires_at) }),
            Begin::Resume(shared) => {
                let session = shared.lock().await;
                if session.ended {
                    return Err(Refusal::NoSession);
                }
                self.setup_page(&route, &browser, &session, None)
            }
            Begin::Fresh(mut session) => {
                // The creation runs to its end even if the person's browser goes away:
                // the device then belongs to a setup the sweep will end.
                let page = Arc::clone(self);
                let for_task = link.clone();
                // Held before it exists: the controller's orphan sweep must never see it
                // unheld, and a second setup for the same user (a replaced link) must not
                // replace it.
                let serial = crate::inventory::device_serial(&record.purpose.account, &spec.path, &spec.name);
                if !self.sessions.hold_new(&serial) {
                    session.ended = true;
                    self.sessions.close(&link, tokio::sync::OwnedMutexGuard::mutex(&session));
                    return Err(Refusal::OtherWindow { until: clock_time(session.expires_at) });
                }
                let created = tokio::spawn(async move {
                    match session::create_device(&*session.iam, &session.purpose, &spec).await {
                        Ok(device) => {
                            page.sessions.hold(&device.serial);
                            page.metrics.devices_created.inc();
                            tracing::info!(link = %for_task, serial = %device.serial, "created a device for an enrollment page setup");
                            session.device = Some(Pending { serial: device.serial, seed: device.seed });
                            Ok(session)
                        }
                        Err(refusal) => {
                            page.sessions.release(&serial);
                            session.ended = true;
                            page.sessions.close(&for_task, tokio::sync::OwnedMutexGuard::mutex(&session));
                            Err(refusal)
                        }
                    }
                })
                .await;
                match created {
                    Ok(Ok(session)) => self.setup_page(&route, &browser, &session, None),
                    Ok(Err(refusal)) => Err(refusal),
                    Err(e) => {
                        tracing::warn!(error = %e, "the device creation task failed");
                        Err(Refusal::TryLater)
                    }
                }
            }
        }
    }

    /// The open setup of `link` for `browser`; a setup found past its time is ended now.
    async fn find(&self, link: &LinkId, browser: &BrowserKey, now: Timestamp) -> Result<Shared<A::Iam>, Refusal> {
        match self.sessions.find(link, browser, now) {
            Err(Refusal::SessionExpired) => {
                self.sessions.sweep(now).await;
                Err(Refusal::SessionExpired)
            }
            found => found,
        }
    }

    async fn submit(&self, id: &str, token: &str, headers: &HeaderMap, form: &Form) -> Result<Response, Refusal> {
        let (link, record) = self.open_link(id, token, self.now()).await?;
        let browser = self.check_form(&link, headers, form)?;
        if self.config.trusted_identity_header.is_some() {
            // The codes enable the device: the signed-in person must still be the one.
            self.reach(&record.purpose, headers).await?;
        }
        let route = LinkRoute { base: &self.base_path, link: &link, token };
        let shared = self.find(&link, &browser, self.now()).await?;
        let mut session = shared.lock().await;
        let (serial, secret) = match &session.device {
            Some(device) if !session.ended => (device.serial.clone(), totp::decode_seed(device.seed.expose())),
            _ => return Err(Refusal::NoSession),
        };
        let Ok(secret) = secret else {
            // AWS's seed always decodes; a setup that cannot check codes is of no use.
            self.sessions.discard(&mut session).await;
            self.sessions.close(&link, &shared);
            return Err(Refusal::TryLater);
        };
        let (code1, code2) = (form.get("code1").unwrap_or_default(), form.get("code2").unwrap_or_default());
        // The same local check and normalisation as the Secret flow.
        let checked = totp::verify_pair(&secret, code1, code2, self.now().as_second())
            .map(|_| (totp::normalize_code(code1), totp::normalize_code(code2)));
        let refusal = match checked {
            Ok((Some(code1), Some(code2))) => {
                match session::enable_device(&*session.iam, &session.purpose.user, &serial, (code1, code2)).await {
                    Ok(()) => return Ok(self.enrolled(&link, &shared, &mut session, &serial).await),
                    Err(refusal) => refusal,
                }
            }
            // verify_pair accepts only codes that normalise.
            Ok(_) => Refusal::Codes { message: totp::CodeRejection::Mismatch.to_string(), timing: false },
            Err(rejection) => Refusal::Codes {
                message: rejection.to_string(),
                timing: matches!(rejection, totp::CodeRejection::Stale { .. } | totp::CodeRejection::ClockAhead { .. }),
            },
        };
        // Guesses count, timing does not (as in the Secret flow); neither does an
        // unanswered call.
        if matches!(refusal, Refusal::Codes { timing: false, .. } | Refusal::AwsRefused) {
            session.guesses += 1;
        }
        if refusal.keeps_session() && session.guesses < MAX_GUESSES {
            return self.setup_page(&route, &browser, &session, Some(&refusal));
        }
        let refusal = if refusal.keeps_session() { Refusal::TooManyGuesses } else { refusal };
        if refusal == Refusal::DeviceInUse {
            // Assigned: not the page's to delete.
            self.sessions.release(&serial);
            session.device = None;
            session.ended = true;
        } else {
            self.sessions.discard(&mut session).await;
        }
        self.sessions.close(&link, &shared);
        Err(refusal)
    }

    /// The device is enabled: the link is used, the setup ends and its seed is dropped.
    async fn enrolled(
        &self,
        link: &LinkId,
        shared: &Shared<A::Iam>,
        session: &mut Session<A::Iam>,
        serial: &str,
    ) -> Response {
        session.device = None;
        session.ended = true;
        self.sessions.release(serial);
        self.sessions.close(link, shared);
        self.metrics.enrolled.inc();
        tracing::info!(link = %link, serial, "a device was enabled through the enrollment page");
        match self.store.mark_used(link, self.now()).await {
            Ok(()) => {}
            Err(e) => tracing::warn!(link = %link, error = %e, "could not mark the link used; the device is enabled"),
        }
        let who = html::Who { user: &session.purpose.user, account: &session.account_label };
        (StatusCode::OK, html_body(html::enrolled(&who))).into_response()
    }

    async fn cancel(&self, id: &str, token: &str, headers: &HeaderMap, form: &Form) -> Result<Response, Refusal> {
        // A setup may still be cancelled once its link expired.
        let link = match self.open_link(id, token, self.now()).await {
            Ok((link, _)) => link,
            Err(Refusal::LinkExpired) => LinkId::parse(id).ok_or(Refusal::UnknownLink)?,
            Err(refusal) => return Err(refusal),
        };
        let browser = self.check_form(&link, headers, form)?;
        let shared = self.find(&link, &browser, self.now()).await?;
        let mut session = shared.lock().await;
        if session.ended {
            return Err(Refusal::NoSession);
        }
        self.sessions.discard(&mut session).await;
        self.sessions.close(&link, &shared);
        Ok((StatusCode::OK, html_body(html::cancelled())).into_response())
    }
}
