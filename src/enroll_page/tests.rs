//! The page driven through its router, as a browser would, against the in-memory IAM
//! account and the in-memory link store.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use jiff::{SignedDuration, Timestamp};
use tower::ServiceExt;

use super::*;
use crate::aws::fake::{self, ACCOUNT_ID, Account};
use crate::aws::{IamError, IamUser, MfaDevice, VirtualDevice};
use crate::link::{DEFAULT_TTL, LINK_ID_BYTES, TOKEN_BYTES, Token};

/// 10 seconds into a 30-second step.
const NOW: Timestamp = Timestamp::constant(1_750_000_000, 0);
const PATH: &str = "/mfa-operator/";
const PUBLIC: &str = "https://mfa.example.com";
const LABEL: &str = "dev-account";

fn user(name: &str) -> IamUser {
    IamUser {
        name: name.into(),
        path: "/".into(),
        arn: format!("arn:aws:iam::{ACCOUNT_ID}:user/{name}"),
        ..IamUser::default()
    }
}

fn serial(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT_ID}:mfa{PATH}{name}")
}

fn tags(purpose: &Purpose) -> DeviceTags {
    DeviceTags::from([
        ("iam.mfa-operator.dev/enrollment".to_owned(), format!("team/{}", purpose.enrollment_uid)),
        ("iam.mfa-operator.dev/user".to_owned(), purpose.user.clone()),
    ])
}

struct TestAccounts {
    iam: Arc<Account>,
    label: String,
    revoked: AtomicBool,
}

impl Accounts for TestAccounts {
    type Iam = Account;

    fn reach(&self, purpose: &Purpose) -> impl Future<Output = Result<Reached<Account>, ReachError>> + Send {
        let answer = if self.revoked.load(Ordering::SeqCst) {
            Err(ReachError::Revoked)
        } else {
            Ok(Reached {
                iam: self.iam.clone(),
                account_label: self.label.clone(),
                device: DeviceSpec { path: PATH.into(), name: purpose.user.clone(), tags: tags(purpose) },
                identity: Some(format!("{}@example.com", purpose.user)),
            })
        };
        std::future::ready(answer)
    }
}

type Page = EnrollPage<TestAccounts, MemoryLinkStore>;

/// A page, its account and one link for alice.
struct Bed {
    page: Arc<Page>,
    iam: Arc<Account>,
    link: LinkId,
    token: Token,
}

fn purpose(name: &str) -> Purpose {
    Purpose { account: ACCOUNT_ID.into(), user: name.into(), enrollment_uid: "uid-1".into() }
}

/// What a response said.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn between(&self, open: &str, close: &str) -> Option<String> {
        let start = self.body.find(open)? + open.len();
        Some(self.body[start..].split(close).next()?.to_owned())
    }

    /// The CSRF field of the page's (first) form.
    fn csrf(&self) -> Option<String> {
        self.between("name=\"csrf\" value=\"", "\"")
    }

    /// The secret key the page shows, without spaces.
    fn key(&self) -> Option<String> {
        self.between("id=\"secret-key\">", "</code>").map(|key| key.replace(' ', ""))
    }

    fn qr_png(&self) -> Option<Vec<u8>> {
        let base64 = self.between("src=\"data:image/png;base64,", "\"")?;
        data_encoding::BASE64.decode(base64.as_bytes()).ok()
    }
}

/// A browser: its cookie and the CSRF field of the last page with a form.
#[derive(Clone, Default)]
struct Browser {
    cookie: Option<String>,
    csrf: Option<String>,
    /// `X-Forwarded-For`, for the rate limit tests.
    address: Option<&'static str>,
    /// `X-Auth-Request-Email`, as an authenticating proxy sets it.
    identity: Option<&'static str>,
}

impl Bed {
    fn new() -> Self {
        Self::with(Account::new().at(NOW).with_users([user("alice"), user("bob")]), PageConfig::new(PUBLIC))
    }

    fn with(account: Account, config: PageConfig) -> Self {
        let iam = Arc::new(account);
        let accounts = TestAccounts { iam: iam.clone(), label: LABEL.into(), revoked: AtomicBool::new(false) };
        let clock_of = iam.clone();
        let page = EnrollPage::new(accounts, MemoryLinkStore::new(), config)
            .expect("page")
            .with_clock(Arc::new(move || clock_of.now()));
        let (link, token) = mint_into(&page.store, "alice", 1, NOW);
        Self { page: Arc::new(page), iam, link, token }
    }

    fn path(&self, step: &str) -> String {
        let base = link::path(&self.link, &self.token);
        if step.is_empty() { base } else { format!("{base}/{step}") }
    }

    async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.page.clone().router().oneshot(request).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
        Answer { status, headers, body: String::from_utf8(bytes.to_vec()).expect("utf-8") }
    }

    async fn get(&self, browser: &mut Browser, path: &str) -> Answer {
        let mut request = Request::get(path);
        if let Some(cookie) = &browser.cookie {
            request = request.header(header::COOKIE, cookie);
        }
        if let Some(address) = browser.address {
            request = request.header("x-forwarded-for", address);
        }
        if let Some(identity) = browser.identity {
            request = request.header("x-auth-request-email", identity);
        }
        let answer = self.send(request.body(Body::empty()).expect("request")).await;
        if let Some(set) = answer.headers.get(header::SET_COOKIE) {
            let pair = set.to_str().expect("ascii").split(';').next().expect("pair");
            browser.cookie = Some(pair.to_owned());
        }
        if let Some(csrf) = answer.csrf() {
            browser.csrf = Some(csrf);
        }
        answer
    }

    async fn post(&self, browser: &mut Browser, path: &str, fields: &[(&str, &str)]) -> Answer {
        let csrf = browser.csrf.clone().unwrap_or_default();
        let mut form: Vec<(&str, &str)> = vec![("csrf", &csrf)];
        form.extend_from_slice(fields);
        let body: Vec<String> = form.iter().map(|(k, v)| format!("{k}={}", v.replace(' ', "+"))).collect();
        let mut request = Request::post(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ORIGIN, PUBLIC);
        if let Some(cookie) = &browser.cookie {
            request = request.header(header::COOKIE, cookie);
        }
        if let Some(address) = browser.address {
            request = request.header("x-forwarded-for", address);
        }
        if let Some(identity) = browser.identity {
            request = request.header("x-auth-request-email", identity);
        }
        let answer = self.send(request.body(Body::from(body.join("&"))).expect("request")).await;
        if let Some(csrf) = answer.csrf() {
            browser.csrf = Some(csrf);
        }
        answer
    }

    /// Opens the link and presses Start in `browser`.
    async fn start(&self, browser: &mut Browser) -> Answer {
        let opened = self.get(browser, &self.path("")).await;
        assert_eq!(opened.status, StatusCode::OK, "{}", opened.body);
        self.post(browser, &self.path("start"), &[]).await
    }

    async fn codes(&self, browser: &mut Browser, (code1, code2): (&str, &str)) -> Answer {
        self.post(browser, &self.path("codes"), &[("code1", code1), ("code2", code2)]).await
    }

    fn now(&self) -> Timestamp {
        self.iam.now()
    }

    fn devices(&self) -> Vec<VirtualDevice> {
        self.iam.virtual_devices()
    }
}

fn mint_into(store: &MemoryLinkStore, name: &str, seed: u8, now: Timestamp) -> (LinkId, Token) {
    let (token, record) = link::mint(purpose(name), [seed; TOKEN_BYTES], now, DEFAULT_TTL);
    let id = LinkId::new([seed; LINK_ID_BYTES]);
    store.insert(id.clone(), record);
    (id, token)
}

/// Two consecutive codes of `key`, the second of the step `steps_ago` before `now`'s.
fn codes_of(key: &str, now: Timestamp, steps_ago: u64) -> (String, String) {
    let secret = totp::decode_seed(key).expect("base32");
    let step = totp::step_of(now.as_second()) - steps_ago;
    (totp::code_at(&secret, step - 1), totp::code_at(&secret, step))
}

/// The text of every QR code in a PNG, read by an independent decoder (rqrr).
fn decode_qr(png: &[u8]) -> Vec<String> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buffer = vec![0; reader.output_buffer_size().expect("size")];
    let frame = reader.next_frame(&mut buffer).expect("a frame");
    assert_eq!(frame.color_type, png::ColorType::Grayscale);
    let (width, height, line) = (frame.width as usize, frame.height as usize, frame.line_size);
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(width, height, |x, y| buffer[y * line + x]);
    image.detect_grids().iter().filter_map(|grid| grid.decode().ok().map(|(_, text)| text)).collect()
}

fn pair(codes: &(String, String)) -> (&str, &str) {
    (&codes.0, &codes.1)
}

#[tokio::test]
async fn opening_a_link_shows_who_is_enrolling_and_creates_nothing() {
    let bed = Bed::new();
    let mut browser = Browser::default();
    let opened = bed.get(&mut browser, &bed.path("")).await;
    assert_eq!(opened.status, StatusCode::OK);
    assert!(opened.body.contains("<strong>alice</strong>") && opened.body.contains(LABEL), "{}", opened.body);
    assert!(opened.body.contains("within 10 minutes"), "{}", opened.body);
    let action = format!("action=\"{}\"", bed.path("start"));
    assert!(opened.body.contains(&action) && opened.body.contains(">Start</button>"), "{}", opened.body);
    let cookie = opened.headers.get(header::SET_COOKIE).and_then(|v| v.to_str().ok()).expect("cookie");
    assert!(cookie.starts_with("__Host-mfa-enroll=") && cookie.contains("HttpOnly; SameSite=Strict"), "{cookie}");
    assert!(cookie.contains("; Secure"), "{cookie}");
    // A link previewer may fetch it any number of times.
    bed.get(&mut Browser::default(), &bed.path("")).await;
    assert_eq!(bed.iam.calls(), Vec::<String>::new(), "no IAM call at all");
    assert_eq!(bed.page.open_sessions(), 0);
    assert_eq!(bed.page.metrics().links_opened.get(), 2);
    // The browser keeps its key: no new cookie once it has one.
    let again = bed.get(&mut browser, &bed.path("")).await;
    assert!(again.headers.get(header::SET_COOKIE).is_none());
}

#[tokio::test]
async fn start_creates_one_device_and_shows_its_qr_code_and_key() {
    let bed = Bed::new();
    let mut browser = Browser::default();
    let started = bed.start(&mut browser).await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    assert_eq!(bed.iam.writes(), [format!("CreateVirtualMFADevice {PATH}alice")]);
    let serial = serial("alice");
    assert_eq!(bed.iam.tags(&serial), Some(tags(&purpose("alice"))));
    let seed = bed.iam.seed(&serial).expect("seeded");
    assert_eq!(started.key().as_deref(), Some(seed.expose()), "the page shows the device's own secret key");
    // The QR code is exactly the PNG of the device's otpauth URI.
    let uri = qr::otpauth_uri(ISSUER, &format!("alice@{LABEL}"), seed.expose());
    let png = started.qr_png().expect("a data: image");
    assert_eq!(png, qr::qr_png(&uri).expect("png"));
    assert_eq!(decode_qr(&png), [uri], "what a phone reads off the page");
    assert_eq!(bed.page.pending_devices(), std::slice::from_ref(&serial));
    assert_eq!(bed.page.metrics().devices_created.get(), 1);

    // A reload (or a second tab) in the same browser shows the same setup: no new device.
    let reloaded = bed.post(&mut browser, &bed.path("start"), &[]).await;
    assert_eq!(reloaded.status, StatusCode::OK);
    assert_eq!(reloaded.key(), started.key());
    assert_eq!(bed.iam.writes().len(), 1);
    assert_eq!(bed.devices(), [VirtualDevice { serial, user: None, enabled_at: None }]);
}

#[tokio::test]
async fn two_starts_at_once_in_one_browser_create_one_device() {
    let bed = Bed::new();
    let mut browser = Browser::default();
    bed.get(&mut browser, &bed.path("")).await;
    let (mut first, mut second) = (browser.clone(), browser.clone());
    let start = bed.path("start");
    let (a, b) = tokio::join!(bed.post(&mut first, &start, &[]), bed.post(&mut second, &start, &[]));
    assert_eq!((a.status, b.status), (StatusCode::OK, StatusCode::OK), "{}\n{}", a.body, b.body);
    assert_eq!(a.key(), b.key());
    assert_eq!(bed.iam.writes().len(), 1, "{:?}", bed.iam.writes());
}

#[tokio::test]
async fn two_correct_codes_enable_the_device_and_use_up_the_link() {
    let bed = Bed::new();
    let mut browser = Browser::default();
    let started = bed.start(&mut browser).await;
    let key = started.key().expect("key");
    let done = bed.codes(&mut browser, pair(&codes_of(&key, bed.now(), 0))).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body.contains("MFA is set up"), "{}", done.body);
    assert!(!done.body.contains(&key), "the seed is not shown again");
    let serial = serial("alice");
    assert_eq!(
        bed.devices(),
        [VirtualDevice { serial: serial.clone(), user: Some("alice".into()), enabled_at: Some(NOW) }]
    );
    assert_eq!(bed.page.store.record(&bed.link).and_then(|r| r.used_at), Some(NOW));
    assert!(bed.page.pending_devices().is_empty());
    assert_eq!(bed.page.open_sessions(), 0);
    assert_eq!(bed.page.metrics().enrolled.get(), 1);
    // Codes typed with spaces around them are normalised, as in the Secret flow: shown by
    // a second user whose codes carry spaces.
    let (bob, bob_token) = mint_into(&bed.page.store, "bob", 2, NOW);
    let bob_bed = Bed { page: bed.page.clone(), iam: bed.iam.clone(), link: bob, token: bob_token };
    let mut bobs = Browser::default();
    let key = bob_bed.start(&mut bobs).await.key().expect("key");
    let (code1, code2) = codes_of(&key, bed.now(), 0);
    let done = bob_bed.codes(&mut bobs, (&format!(" {code1} "), &format!("{code2} "))).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);

    // The link is used: every step refuses it now.
    for answer in [
        bed.get(&mut browser, &bed.path("")).await,
        bed.post(&mut browser, &bed.path("start"), &[]).await,
        bed.codes(&mut browser, ("123456", "654321")).await,
    ] {
        assert_eq!(answer.status, StatusCode::GONE);
        assert!(answer.body.contains("This link was used already"), "{}", answer.body);
    }
    assert_eq!(bed.iam.writes().iter().filter(|w| w.starts_with("Create")).count(), 2, "one device each");
}

#[tokio::test]
async fn an_expired_link_is_refused_and_creates_nothing() {
    let bed = Bed::new();
    let mut browser = Browser::default();
    bed.get(&mut browser, &bed.path("")).await;
    bed.iam.advance(DEFAULT_TTL);
    let answer = bed.get(&mut browser, &bed.path("")).await;
    assert_eq!(answer.status, StatusCode::GONE);
    assert!(answer.body.contains("This link has expired"), "{}", answer.body);
    let answer = bed.post(&mut browser, &bed.path("start"), &[]).await;
    assert_eq!(answer.status, StatusCode::GONE);
    assert!(bed.iam.writes().is_empty());
    assert_eq!(bed.page.metrics().refusals("link_expired"), 2);
}

#[tokio::test]
async fn unknown_ids_wrong_tokens_and_revoked_links_get_one_same_answer() {
    let bed = Bed::new();
    let other_id = LinkId::new([9; LINK_ID_BYTES]);
    let (wrong_token, _) = link::mint(purpose("alice"), [8; TOKEN_BYTES], NOW, DEFAULT_TTL);
    let paths = [
        link::path(&other_id, &bed.token),
        link::path(&bed.link, &wrong_token),
        format!("/enroll/not-an-id/{}", bed.token.expose()),
        format!("/enroll/{}/", bed.link),
        format!("/enroll/{}/%FF%FE", bed.link),
        "/somewhere/else".to_owned(),
    ];
    let mut bodies = Vec::new();
    for path in &paths {
        let answer = bed.get(&mut Browser::default(), path).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        bodies.push(answer.body);
    }
    bed.page.accounts.revoked.store(true, Ordering::SeqCst);
    let revoked = bed.get(&mut Browser::default(), &bed.path("")).await;
    assert_eq!(revoked.status, StatusCode::NOT_FOUND);
    bodies.push(revoked.body);
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "one answer for all: {bodies:#?}");
    assert!(bodies[0].contains("This link does not work"));
    assert!(!bodies[0].contains("alice"));
    // A POST with a wrong token creates nothing either.
    let mut browser = Browser::default();
    bed.page.accounts.revoked.store(false, Ordering::SeqCst);
    bed.get(&mut browser, &bed.path("")).await;
    let answer = bed.post(&mut browser, &format!("{}/start", link::path(&bed.link, &wrong_token)), &[]).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(bed.iam.writes().is_empty());
}

#[tokio::test]
async fn wrong_and_stale_codes_are_refused_in_plain_words_and_the_device_stays_pending() {
    let bed = Bed::new();
    let mut browser = Browser::default();
    let key = bed.start(&mut browser).await.key().expect("key");
    let (code1, code2) = codes_of(&key, bed.now(), 0);
    let stale = codes_of(&key, bed.now(), 10);
    let cases = [
        ((code2.as_str(), code2.as_str()), "The two codes are the same", "wrong_codes"),
        ((code2.as_str(), code1.as_str()), "must be consecutive", "wrong_codes"),
        (pair(&stale), "the codes are about 5 minutes old", "stale_codes"),
        (("12a456", code2.as_str()), "The first code must be exactly 6 digits", "wrong_codes"),
    ];
    for ((first, second), message, cause) in cases {
        let answer = bed.codes(&mut browser, (first, second)).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{message}");
        assert!(answer.body.to_lowercase().contains(&message.to_lowercase()), "{message}: {}", answer.body);
        assert!(answer.body.contains("role=\"alert\""));
        assert_eq!(answer.key().as_deref(), Some(key.as_str()), "the setup stays open: {message}");
        assert!(bed.page.metrics().refusals(cause) > 0, "{cause}");
    }
    assert_eq!(bed.iam.writes(), [format!("CreateVirtualMFADevice {PATH}alice")], "IAM never saw a refused pair");
    assert_eq!(bed.devices()[0].user, None);

    // AWS refusing a pair the local check accepted: said plainly, the setup stays open.
    bed.iam.fail_next(1, IamError::InvalidAuthenticationCode { operation: fake::ENABLE_MFA_DEVICE });
    let answer = bed.codes(&mut browser, (&code1, &code2)).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(answer.body.contains("AWS refused the codes"), "{}", answer.body);
    assert_eq!(bed.devices()[0].user, None);
    // IAM not answering: try again later, nothing lost.
    bed.iam.fail_next(1, fake::throttled(fake::ENABLE_MFA_DEVICE));
    let answer = bed.codes(&mut browser, (&code1, &code2)).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.body.contains("try again in a few minutes"), "{}", answer.body);
    assert!(!answer.body.contains("Throttl"), "no IAM wording: {}", answer.body);

    let done = bed.codes(&mut browser, (&code1, &code2)).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
}

#[tokio::test]
async fn too_many_wrong_codes_end_the_setup_and_delete_its_device() {
    let bed = Bed::new();
    let mut browser = Browser::default();
    bed.start(&mut browser).await;
    for attempt in 1..=MAX_GUESSES {
        let answer = bed.codes(&mut browser, ("111111", "222222")).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
        let last = attempt == MAX_GUESSES;
        assert_eq!(answer.body.contains("Too many wrong codes"), last, "{attempt}: {}", answer.body);
        assert_eq!(answer.key().is_some(), !last, "{attempt}");
    }
    assert!(bed.devices().is_empty(), "the device was deleted");
    assert_eq!(bed.page.open_sessions(), 0);
    assert!(bed.page.pending_devices().is_empty());
    assert_eq!(bed.page.store.record(&bed.link).and_then(|r| r.used_at), None, "the link still works");
    let again = bed.post(&mut browser, &bed.path("start"), &[]).await;
    assert_eq!(again.status, StatusCode::OK, "a new setup, with a new device");
    assert_eq!(bed.devices().len(), 1);
}

#[tokio::test]
async fn an_abandoned_setup_loses_its_device_after_the_timeout() {
    let registered = PageMetrics::default();
    let mut bed = Bed::new();
    let page = Arc::try_unwrap(bed.page).expect("sole owner").with_metrics(registered.clone());
    bed.page = Arc::new(page);
    let mut browser = Browser::default();
    bed.start(&mut browser).await;
    bed.iam.advance(SignedDuration::from_mins(9));
    assert_eq!(bed.page.sweep().await, 0);
    assert_eq!(bed.devices().len(), 1, "still within its time");
    bed.iam.advance(SignedDuration::from_mins(1));
    assert_eq!(bed.page.sweep().await, 1);
    assert!(bed.devices().is_empty());
    assert!(bed.page.pending_devices().is_empty());
    assert_eq!(registered.devices_deleted.get(), 1, "counted where the caller registered it");
    assert_eq!(registered.devices_created.get(), 1);
    let late = bed.codes(&mut browser, ("123456", "654321")).await;
    assert_eq!(late.status, StatusCode::CONFLICT);
    assert!(late.body.contains("This setup is not open"), "{}", late.body);
}

#[tokio::test]
async fn a_setup_found_past_its_time_is_ended_at_once_and_a_failed_deletion_is_retried() {
    let bed = Bed::new();
    let mut browser = Browser::default();
    bed.start(&mut browser).await;
    bed.iam.advance(DEFAULT_SESSION_TIMEOUT);
    bed.iam.fail_next(1, fake::service_failure(fake::DELETE_VIRTUAL_MFA_DEVICE));
    let late = bed.codes(&mut browser, ("123456", "654321")).await;
    assert_eq!(late.status, StatusCode::GONE);
    assert!(late.body.contains("This setup timed out"), "{}", late.body);
    assert_eq!(bed.devices().len(), 1, "the deletion failed once");
    assert_eq!(bed.page.pending_devices(), [serial("alice")], "still held, so no other sweep takes it");
    assert_eq!(bed.page.sweep().await, 1);
    assert!(bed.devices().is_empty());
    assert!(bed.page.pending_devices().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_runs_on_its_own() {
    let bed = Bed::new();
    bed.start(&mut Browser::default()).await;
    let sweeper = tokio::spawn(bed.page.clone().run_sweeper(std::time::Duration::from_secs(30)));
    bed.iam.advance(DEFAULT_SESSION_TIMEOUT);
    tokio::time::sleep(std::time::Duration::from_secs(31)).await;
    assert!(bed.devices().is_empty());
    sweeper.abort();
}

#[tokio::test]
async fn a_second_browser_is_refused_while_a_setup_is_open() {
    let bed = Bed::new();
    let mut first = Browser::default();
    let started = bed.start(&mut first).await;
    let mut second = Browser::default();
    let refused = bed.start(&mut second).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(refused.body.contains("open in another window"), "{}", refused.body);
    assert!(refused.body.contains("after 15:16 UTC"), "when it times out: {}", refused.body);
    assert!(refused.key().is_none() && refused.qr_png().is_none(), "the seed is shown to one browser only");
    assert_eq!(bed.iam.writes().len(), 1, "no second device");
    // Its codes are not accepted for the first browser's setup either.
    let key = started.key().expect("key");
    let answer = bed.codes(&mut second, pair(&codes_of(&key, bed.now(), 0))).await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert_eq!(bed.devices()[0].user, None);

    // The first browser cancels: its device goes, and the second may start.
    let cancelled = bed.post(&mut first, &bed.path("cancel"), &[]).await;
    assert_eq!(cancelled.status, StatusCode::OK);
    assert!(cancelled.body.contains("Setup cancelled"));
    assert!(bed.devices().is_empty());
    let started = bed.post(&mut second, &bed.path("start"), &[]).await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    assert_ne!(started.key().as_deref(), Some(key.as_str()), "a new device, a new seed");
}

#[tokio::test]
async fn forms_without_the_pages_csrf_token_are_forbidden_and_change_nothing() {
    let bed = Bed::new();
    let mut browser = Browser::default();
    bed.get(&mut browser, &bed.path("")).await;
    let mut other = Browser::default();
    bed.get(&mut other, &bed.path("")).await;
    let start = bed.path("start");
    let cases = [
        ("no cookie", Browser { cookie: None, ..browser.clone() }),
        ("no field", Browser { csrf: None, ..browser.clone() }),
        ("another browser's field", Browser { csrf: other.csrf.clone(), ..browser.clone() }),
        ("a forged field", Browser { csrf: Some("x".repeat(43)), ..browser.clone() }),
    ];
    for (why, mut forger) in cases {
        let answer = bed.post(&mut forger, &start, &[]).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{why}");
        assert!(answer.body.contains("This form cannot be accepted"), "{why}");
    }
    for (name, value) in [("origin", "https://evil.example"), ("sec-fetch-site", "cross-site")] {
        let request = Request::post(&start)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::COOKIE, browser.cookie.clone().expect("cookie"))
            .header(name, value)
            .body(Body::from(format!("csrf={}", browser.csrf.clone().expect("csrf"))))
            .expect("request");
        assert_eq!(bed.send(request).await.status, StatusCode::FORBIDDEN, "{name}: {value}");
    }
    assert!(bed.iam.writes().is_empty(), "nothing created");
    assert_eq!(bed.page.metrics().refusals("forbidden"), 6);

    // Codes and cancel are checked too: the device stays pending.
    let started = bed.post(&mut browser, &start, &[]).await;
    let key = started.key().expect("key");
    let mut forger = Browser { csrf: other.csrf.clone(), ..browser.clone() };
    let codes = codes_of(&key, bed.now(), 0);
    assert_eq!(bed.codes(&mut forger, pair(&codes)).await.status, StatusCode::FORBIDDEN);
    assert_eq!(bed.post(&mut forger, &bed.path("cancel"), &[]).await.status, StatusCode::FORBIDDEN);
    assert_eq!(bed.devices()[0].user, None);
    assert_eq!(bed.iam.writes().len(), 1);
}

#[tokio::test]
async fn rate_limits_apply_per_client_address_and_per_link() {
    let config = PageConfig {
        per_client: Rate { burst: 3, per_minute: 1 },
        per_link: Rate { burst: 5, per_minute: 1 },
        client_address_header: Some(HeaderName::from_static("x-forwarded-for")),
        ..PageConfig::new(PUBLIC)
    };
    let bed = Bed::with(Account::new().at(NOW).with_users([user("alice")]), config);
    let mut client = Browser { address: Some("10.0.0.1, 192.0.2.7"), ..Browser::default() };
    for _ in 0..3 {
        assert_eq!(bed.get(&mut client, "/enroll/x/y").await.status, StatusCode::NOT_FOUND);
    }
    let limited = bed.get(&mut client, &bed.path("")).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers.get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()), Some("60"));
    assert!(limited.body.contains("Too many attempts"));
    // The address is the last one the trusted proxy appended, not the first.
    let mut spoofing = Browser { address: Some("192.0.2.7, 10.0.0.2"), ..Browser::default() };
    assert_eq!(bed.get(&mut spoofing, &bed.path("")).await.status, StatusCode::OK);

    // Per link: many addresses, one link (which has had one request).
    for i in 3..=7 {
        let address: &'static str = Box::leak(format!("10.0.1.{i}").into_boxed_str());
        let answer = bed.get(&mut Browser { address: Some(address), ..Browser::default() }, &bed.path("")).await;
        assert_eq!(answer.status == StatusCode::TOO_MANY_REQUESTS, i == 7, "request {i} on the link");
    }
    assert_eq!(bed.page.metrics().refusals("rate_limited"), 2);
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let bed = Bed::with(
        Account::new().at(NOW).with_users([user("alice")]),
        PageConfig { per_client: Rate { burst: 8, per_minute: 1 }, ..PageConfig::new(PUBLIC) },
    );
    let mut browser = Browser::default();
    let mut answers = vec![bed.get(&mut browser, &bed.path("")).await];
    answers.push(bed.post(&mut browser, &bed.path("start"), &[]).await);
    answers.push(bed.codes(&mut browser, ("000000", "000000")).await);
    answers.push(bed.post(&mut Browser::default(), &bed.path("start"), &[]).await);
    answers.push(bed.get(&mut browser, "/nowhere").await);
    answers.push(bed.get(&mut browser, &bed.path("start")).await);
    answers.push(bed.post(&mut browser, &bed.path("cancel"), &[]).await);
    while answers.last().is_some_and(|a| a.status != StatusCode::TOO_MANY_REQUESTS) {
        answers.push(bed.get(&mut browser, &bed.path("")).await);
    }
    let statuses: Vec<u16> = answers.iter().map(|a| a.status.as_u16()).collect();
    assert_eq!(statuses, [200, 200, 422, 403, 404, 405, 200, 200, 429]);
    for answer in &answers {
        let header = |name: &str| answer.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let csp = header("content-security-policy");
        for directive in [
            "default-src 'none'",
            "img-src data:",
            "style-src 'sha256-",
            "script-src 'sha256-",
            "form-action 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(directive), "{} lacks {directive}: {csp}", answer.status);
        }
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(header("referrer-policy"), "no-referrer");
        assert_eq!(header("cache-control"), "no-store");
        assert_eq!(header("x-frame-options"), "DENY");
        assert_eq!(header("x-content-type-options"), "nosniff");
        if !answer.body.is_empty() {
            assert_eq!(header("content-type"), "text/html; charset=utf-8", "{}", answer.status);
        }
    }
}

/// Log lines written while a test runs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_token_seed_or_code_reaches_a_log_line_or_debug_output() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    // A leftover device to replace, IAM faults, refusals, a success: every path that logs.
    let account = Account::new().at(NOW).with_users([user("alice")]).with_devices([VirtualDevice {
        serial: serial("alice"),
        user: None,
        enabled_at: None,
    }]);
    let bed = Bed::with(account, PageConfig::new(PUBLIC));
    let mut browser = Browser::default();
    let key = bed.start(&mut browser).await.key().expect("key");
    let codes = codes_of(&key, bed.now(), 0);
    bed.codes(&mut browser, (&codes.1, &codes.0)).await;
    bed.iam.fail_next(1, fake::service_failure(fake::ENABLE_MFA_DEVICE));
    bed.codes(&mut browser, pair(&codes)).await;
    let debug = format!("{:?}", bed.page);
    assert_eq!(bed.codes(&mut browser, pair(&codes)).await.status, StatusCode::OK);
    bed.get(&mut browser, &bed.path("")).await;

    let log = String::from_utf8(captured.0.lock().expect("log").clone()).expect("utf-8");
    assert!(log.contains(&format!("/enroll/{}/<token>/codes", bed.link)), "routes are logged, redacted:\n{log}");
    assert!(log.contains("deleted a leftover unassigned device"), "{log}");
    let cookie = browser.cookie.clone().expect("cookie");
    let cookie_value = cookie.split_once('=').expect("pair").1;
    for (what, secret) in [
        ("token", bed.token.expose()),
        ("seed", key.as_str()),
        ("first code", codes.0.as_str()),
        ("second code", codes.1.as_str()),
        ("browser key", cookie_value),
        ("csrf field", browser.csrf.as_deref().expect("csrf")),
    ] {
        assert!(!log.contains(secret), "the {what} is in the log:\n{log}");
        assert!(!debug.contains(secret), "the {what} is in Debug: {debug}");
    }
    assert!(debug.contains(&serial("alice")), "Debug still says something useful: {debug}");
}

#[tokio::test]
async fn a_leftover_unassigned_device_is_replaced_but_an_assigned_one_is_never_touched() {
    // A crash left alice's device unassigned: deleted and created again.
    let leftover = Account::new().at(NOW).with_users([user("alice")]).with_devices([VirtualDevice {
        serial: serial("alice"),
        user: None,
        enabled_at: None,
    }]);
    let bed = Bed::with(leftover, PageConfig::new(PUBLIC));
    let started = bed.start(&mut Browser::default()).await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    let create = format!("CreateVirtualMFADevice {PATH}alice");
    assert_eq!(
        bed.iam.writes(),
        [create.clone(), format!("DeleteVirtualMFADevice {}", serial("alice")), create.clone()]
    );
    assert_eq!(started.key(), bed.iam.seed(&serial("alice")).map(|s| s.expose().to_owned()));

    // A device of that name assigned (to anyone): refused, nothing deleted.
    let assigned = Account::new().at(NOW).with_users([user("alice"), user("bob")]).with_devices([VirtualDevice {
        serial: serial("alice"),
        user: Some("bob".into()),
        enabled_at: Some(NOW),
    }]);
    let bed = Bed::with(assigned, PageConfig::new(PUBLIC));
    let refused = bed.start(&mut Browser::default()).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(refused.body.contains("already assigned"), "{}", refused.body);
    assert_eq!(bed.iam.writes(), std::slice::from_ref(&create));
    assert_eq!(bed.devices()[0].user.as_deref(), Some("bob"));
    assert_eq!(bed.page.open_sessions(), 0, "the failed setup is closed");

    // The user has MFA already (a hardware key): nothing is created.
    let has_mfa = Account::new()
        .at(NOW)
        .with_users([user("alice")])
        .with_listed("alice", vec![MfaDevice { serial: "GAHT12345678".into(), enabled_at: Some(NOW) }]);
    let bed = Bed::with(has_mfa, PageConfig::new(PUBLIC));
    let refused = bed.start(&mut Browser::default()).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(refused.body.contains("already has an MFA device"), "{}", refused.body);
    assert!(bed.iam.writes().is_empty());

    // IAM refusing the creation: try again later, and the link can start again.
    let bed = Bed::new();
    bed.iam.fail_next(1, fake::throttled(fake::CREATE_VIRTUAL_MFA_DEVICE));
    let mut browser = Browser::default();
    assert_eq!(bed.start(&mut browser).await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(bed.post(&mut browser, &bed.path("start"), &[]).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_device_removed_during_the_setup_is_reported_plainly() {
    let bed = Bed::new();
    let mut browser = Browser::default();
    let key = bed.start(&mut browser).await.key().expect("key");
    assert_eq!(bed.iam.console_cleanup(), [serial("alice")]);
    let answer = bed.codes(&mut browser, pair(&codes_of(&key, bed.now(), 0))).await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert!(answer.body.contains("The MFA device was removed"), "{}", answer.body);
    assert!(answer.body.contains("not your mistake"));
    assert_eq!(bed.page.open_sessions(), 0);
    assert!(bed.page.pending_devices().is_empty());
    assert_eq!(bed.post(&mut browser, &bed.path("start"), &[]).await.status, StatusCode::OK, "start over");
}

#[tokio::test]
async fn names_from_outside_are_escaped_in_the_page() {
    let bed = Bed::new();
    let hostile = "<img src=x onerror=alert(1)>\"'&";
    let accounts = TestAccounts { iam: bed.iam.clone(), label: hostile.into(), revoked: AtomicBool::new(false) };
    let clock_of = bed.iam.clone();
    let page = EnrollPage::new(accounts, MemoryLinkStore::new(), PageConfig::new(PUBLIC))
        .expect("page")
        .with_clock(Arc::new(move || clock_of.now()));
    let (link, token) = mint_into(&page.store, "alice", 1, NOW);
    let bed = Bed { page: Arc::new(page), iam: bed.iam.clone(), link, token };
    let mut browser = Browser::default();
    for answer in [bed.get(&mut browser, &bed.path("")).await, bed.post(&mut browser, &bed.path("start"), &[]).await] {
        assert_eq!(answer.status, StatusCode::OK);
        assert!(!answer.body.contains("<img src=x"), "{}", answer.body);
        assert!(answer.body.contains("&lt;img src=x onerror=alert(1)&gt;&quot;&#39;&amp;"), "{}", answer.body);
    }
}

#[tokio::test]
async fn setups_open_at_once_are_bounded() {
    let config = PageConfig { max_sessions: 1, ..PageConfig::new(PUBLIC) };
    let bed = Bed::with(Account::new().at(NOW).with_users([user("alice"), user("bob")]), config);
    assert_eq!(bed.start(&mut Browser::default()).await.status, StatusCode::OK);
    let (link, token) = mint_into(&bed.page.store, "bob", 2, NOW);
    let bob = Bed { page: bed.page.clone(), iam: bed.iam.clone(), link, token };
    let busy = bob.start(&mut Browser::default()).await;
    assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(busy.body.contains("Many setups are open"), "{}", busy.body);
    assert_eq!(bed.iam.writes().len(), 1, "no device for bob");
}

#[tokio::test]
async fn without_randomness_the_page_refuses_rather_than_guess() {
    let bed = Bed::new();
    let page = Arc::try_unwrap(bed.page).expect("sole owner");
    let page = page.with_random(Arc::new(|_: &mut [u8]| Err(getrandom::Error::UNSUPPORTED)));
    let bed = Bed { page: Arc::new(page), ..bed };
    let answer = bed.get(&mut Browser::default(), &bed.path("")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.headers.get(header::SET_COOKIE).is_none());
}

#[test]
fn the_log_route_never_holds_the_token() {
    let id = LinkId::new([1; LINK_ID_BYTES]);
    let token = "T".repeat(43);
    for (path, expected) in [
        (format!("/enroll/{id}/{token}"), format!("/enroll/{id}/<token>")),
        (format!("/enroll/{id}/{token}/codes"), format!("/enroll/{id}/<token>/codes")),
        (format!("/enroll/bad/{token}/start"), "/enroll/<invalid-id>/<token>/start".to_owned()),
        (format!("/enroll/{id}/{token}/other"), "<other>".to_owned()),
        (format!("/{token}"), "<other>".to_owned()),
    ] {
        let route = LoggedRoute::of(&path);
        assert_eq!(route.redacted, expected);
        assert!(!route.redacted.contains(&token));
    }
    assert_eq!(LoggedRoute::of(&format!("/enroll/{id}/x/start")).link, Some(id));
}

#[test]
fn form_bodies_are_decoded() {
    let form = Form::parse(b"csrf=a%2Bb&code1=+123+456&code2=%zz1&code1=ignored&empty");
    assert_eq!(form.get("csrf"), Some("a+b"));
    assert_eq!(form.get("code1"), Some(" 123 456"), "the first value wins");
    assert_eq!(form.get("code2"), Some("%zz1"), "a broken escape is kept");
    assert_eq!(form.get("empty"), Some(""));
    assert_eq!(form.get("missing"), None);
    assert_eq!(percent_decode(b"%4"), "%4");
}

#[test]
fn the_public_url_must_be_absolute() {
    let accounts =
        || TestAccounts { iam: Arc::new(Account::new()), label: String::new(), revoked: AtomicBool::new(false) };
    for bad in ["mfa.example.com", "/enroll", "ftp://x"] {
        assert!(EnrollPage::new(accounts(), MemoryLinkStore::new(), PageConfig::new(bad)).is_err(), "{bad}");
    }
    let page =
        EnrollPage::new(accounts(), MemoryLinkStore::new(), PageConfig::new("http://localhost:8081/")).expect("http");
    assert!(!page.secure, "plain HTTP (a test bed): no Secure cookie, which the browser would drop");
    let page = EnrollPage::new(
        accounts(),
        MemoryLinkStore::new(),
        PageConfig { session_timeout: SignedDuration::from_hours(5), ..PageConfig::new(PUBLIC) },
    )
    .expect("https");
    assert_eq!(page.config.session_timeout, MAX_SESSION_TIMEOUT);
}

#[tokio::test]
async fn served_on_a_socket_the_limits_apply_per_peer_address() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let config = PageConfig { per_client: Rate { burst: 1, per_minute: 1 }, ..PageConfig::new(PUBLIC) };
    let bed = Bed::with(Account::new().at(NOW).with_users([user("alice")]), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let server = tokio::spawn(bed.page.clone().serve(listener));
    let mut answers = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
        let request = format!("GET {} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", bed.path(""));
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        answers.push(response);
    }
    server.abort();
    assert!(answers[0].starts_with("HTTP/1.1 200"), "{}", answers[0]);
    assert!(answers[1].starts_with("HTTP/1.1 429"), "the same peer, limited: {}", answers[1]);
    assert!(answers[1].to_lowercase().contains("content-security-policy: default-src 'none'"));
}

#[tokio::test]
async fn behind_an_authenticating_proxy_a_link_opens_only_for_the_person_it_is_for() {
    let config = PageConfig {
        trusted_identity_header: Some(HeaderName::from_static("x-auth-request-email")),
        ..PageConfig::new(PUBLIC)
    };
    let bed = Bed::with(Account::new().at(NOW).with_users([user("alice")]), config);
    // Nobody signed in, or someone else: refused in plain words, nothing created.
    for identity in [None, Some("mallory@example.com"), Some("")] {
        let mut browser = Browser { identity, ..Browser::default() };
        let answer = bed.get(&mut browser, &bed.path("")).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{identity:?}");
        assert!(answer.body.contains("This link is for someone else"), "{identity:?}: {}", answer.body);
        // The form (with no page behind it) is refused too.
        let answer = bed.post(&mut browser, &bed.path("start"), &[]).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{identity:?}");
    }
    assert!(bed.iam.virtual_devices().is_empty(), "no device for a person the link is not for");
    assert_eq!(bed.page.metrics().refusals("not_your_link"), 3);
    // A form from a page alice opened, sent while someone else is signed in: refused.
    let mut alice = Browser { identity: Some("alice@example.com"), ..Browser::default() };
    assert_eq!(bed.get(&mut alice, &bed.path("")).await.status, StatusCode::OK);
    let mut switched = Browser { identity: Some("mallory@example.com"), ..alice.clone() };
    let answer = bed.post(&mut switched, &bed.path("start"), &[]).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(answer.body.contains("This link is for someone else"), "{}", answer.body);
    assert!(bed.iam.virtual_devices().is_empty());
    // alice, as the proxy spells her address: her setup starts.
    let mut alice = Browser { identity: Some(" Alice@Example.com "), ..Browser::default() };
    let started = bed.start(&mut alice).await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    assert_eq!(bed.iam.virtual_devices().len(), 1);
    // Her codes, sent while someone else is signed in in her browser: refused, nothing enabled.
    let key = started.key().expect("the secret key");
    let seed = crate::totp::decode_seed(&key).expect("base32");
    let step = crate::totp::step_of(bed.now().as_second());
    let (code1, code2) = (crate::totp::code_at(&seed, step - 1), crate::totp::code_at(&seed, step));
    let mut switched = Browser { identity: Some("mallory@example.com"), ..alice.clone() };
    let answer = bed.codes(&mut switched, (&code1, &code2)).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    assert!(bed.iam.virtual_devices().iter().all(|d| d.user.is_none()), "nothing enabled");
}

#[test]
fn the_page_refuses_a_public_url_it_cannot_protect() {
    let page = |url: &str| {
        let accounts =
            TestAccounts { iam: Arc::new(Account::new()), label: LABEL.into(), revoked: AtomicBool::new(false) };
        EnrollPage::new(accounts, MemoryLinkStore::new(), PageConfig::new(url)).map(|_| ())
    };
    assert!(matches!(page("mfa.example.com"), Err(PageError::PublicUrl(_))));
    // Plain HTTP to another machine: no Secure, no __Host- cookie.
    assert!(matches!(page("http://mfa.example.com"), Err(PageError::PlainHttp(_))));
    assert!(matches!(page("http://10.0.0.7:8443/mfa"), Err(PageError::PlainHttp(_))));
    for ok in ["https://mfa.example.com/mfa", "http://127.0.0.1:8443", "http://localhost:8443", "http://[::1]:8443"] {
        assert!(page(ok).is_ok(), "{ok}");
    }
}

#[tokio::test]
async fn a_replaced_link_cannot_take_the_device_of_the_setup_still_open_on_the_old_one() {
    let bed = Bed::new();
    let mut first = Browser::default();
    let started = bed.start(&mut first).await;
    let key = started.key().expect("key");
    // A new link for alice (an expired one re-sent, or `kubectl mfa link`), opened elsewhere.
    let (link, token) = mint_into(&bed.page.store, "alice", 2, bed.now());
    let path = link::path(&link, &token);
    let mut second = Browser::default();
    assert_eq!(bed.get(&mut second, &path).await.status, StatusCode::OK);
    let refused = bed.post(&mut second, &format!("{path}/start"), &[]).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert!(refused.key().is_none(), "no seed for the second setup");
    assert_eq!(bed.iam.writes().len(), 1, "the first setup's device was neither deleted nor replaced");
    // The person who scanned the first QR code still finishes.
    let done = bed.codes(&mut first, pair(&codes_of(&key, bed.now(), 0))).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(bed.devices()[0].user.as_deref(), Some("alice"));
}
