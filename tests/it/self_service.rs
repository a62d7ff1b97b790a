//! Self-service enrollment (issue 11, `delivery: Link`) end to end, as a person goes
//! through it: the real `mfa-operator` binary with its enrollment page on a loopback
//! port and its mail going to the test bed's mailpit, the real apiserver, moto behind the
//! strict IAM layer, and a real headless Chromium. The test reads the link from the mail,
//! opens it, presses Start, decodes the QR code from a screenshot of the page, computes
//! two codes from the decoded seed, types them into the fields by their labels and reads
//! the answer, as a person reads it. IAM and the enrollment's status are then checked,
//! and a watch on every Secret of the cluster proves no seed was ever at rest.
//!
//! Not here, and why (covered by the unit tests of `src/enroll_page/tests.rs`, which run
//! the page's router on an injected clock):
//! - an expired link (`an_expired_link_is_refused_and_creates_nothing`): the operator's
//!   clock cannot be shifted from outside, and the shortest `spec.link.ttl` is 1m; waiting
//!   it out would make this module a minute slower for nothing the unit test misses.
//! - an abandoned page (`an_abandoned_setup_loses_its_device_after_the_timeout`): the
//!   page's setup timeout is not an operator flag (10 minutes, at least 2).
//!
//! `MFA_SAVE_SCREENSHOT=1` makes the first test write the setup page (QR code, secret key
//! of a test-bed device) to `docs/images/enrollment-page.png`, the README's picture.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use mfa_operator::crd::{MfaEnrollment, UserState};

use crate::common;
use common::bed::{Bed, state, user_status};
use common::browser::{Browser, decode_qr, free_port};
use common::iam;
use common::mail::{Mail, Mailpit, unique_address};
use common::operator::Operator;

/// Bound on a link mail reaching mailpit after the enrollment is applied.
const MAIL_WAIT: Duration = Duration::from_secs(60);
/// Bound on a page answering in the browser.
const PAGE_WAIT: Duration = Duration::from_secs(30);

/// The page's words (src/enroll_page/html.rs, outcome.rs), as a person reads them.
const START_TITLE: &str = "Set up multi-factor authentication";
const SETUP_TITLE: &str = "Scan the QR code";
const DONE_TITLE: &str = "MFA is set up";
const FIRST_CODE: &str = "First code";
const SECOND_CODE: &str = "Second code (the next one)";
const CODES_REFUSED: &str = "The codes were not accepted";
const OTHER_WINDOW: &str = "This link is open in another window";
const LINK_USED: &str = "This link was used already";
const LINK_REVOKED: &str = "This link does not work";

/// An operator serving the enrollment page on a free loopback port, sending link mails to
/// the test bed's mailpit over plain SMTP (loopback only), watching `bed`'s namespace.
struct LinkOperator {
    operator: Operator,
    /// The page's public URL, where the links point.
    public_url: String,
}

impl LinkOperator {
    fn start(bed: &Bed, mailpit: &Mailpit) -> Self {
        let port = free_port();
        let address = format!("127.0.0.1:{port}");
        let public_url = format!("http://127.0.0.1:{port}");
        let smtp_port = mailpit.smtp_port.to_string();
        // The SMTP settings through their environment variables (the flags' twins) keep
        // the log's file name, which is made of the arguments, short.
        let operator = Operator::start_args(
            &bed.ns,
            &["--metrics-address", "127.0.0.1:0", "--enrollment-address", &address, "--public-url", &public_url],
            &[
                ("MFA_OPERATOR_SMTP_HOST", mailpit.smtp_host.as_str()),
                ("MFA_OPERATOR_SMTP_PORT", smtp_port.as_str()),
                ("MFA_OPERATOR_SMTP_SECURITY", "plain"),
                ("MFA_OPERATOR_SMTP_FROM", "MFA enrollment <mfa-operator@mfa-tests.example.com>"),
            ],
        );
        Self { operator, public_url }
    }
}

/// A test's IAM user with an `email` tag of their own, and the enrollment in Link mode.
async fn person(bed: &Bed, name: &str) -> (String, String) {
    let user = bed.users(&[name]).await.remove(0);
    let address = unique_address(&bed.tag);
    iam::tag_user(&bed.iam, &user, "email", &address).await;
    (user, address)
}

async fn enroll_by_link(bed: &Bed, enrollment: &str, users: &[&str]) -> MfaEnrollment {
    bed.apply(enrollment, serde_json::json!({ "mode": "Enroll", "delivery": "Link", "users": { "names": users } }))
        .await
}

/// The one link mail to `address`, and the link in it (under the page's public URL).
async fn link_mail(mailpit: &Mailpit, address: &str, public_url: &str) -> (Mail, String) {
    let mail = mailpit.wait_for_mail_to(address, MAIL_WAIT).await;
    let prefix = format!("{public_url}/enroll/");
    let link = mail.link(&prefix).unwrap_or_else(|| panic!("the mail to {address} has no link under {prefix}"));
    // /enroll/{id}/{token}: a link id and a 256-bit token.
    let rest = &link[prefix.len()..];
    let parts: Vec<&str> = rest.split('/').collect();
    assert!(
        parts.len() == 2 && parts.iter().all(|p| !p.is_empty()) && parts[1].len() >= 43,
        "the mailed link is not /enroll/ID/TOKEN with a 256-bit token ({} parts, token of {} characters)",
        parts.len(),
        parts.get(1).map_or(0, |t| t.len())
    );
    (mail, link)
}

/// The token of a link (its last segment), to search for where it must not be.
fn token_of(link: &str) -> &str {
    link.rsplit('/').next().expect("a segment")
}

/// What the setup page gave the person: the otpauth URI off the QR code, and its seed.
struct Scanned {
    uri: String,
    seed: String,
    screenshot: Vec<u8>,
}

/// Opens `link`, checks the start page names `user`, presses Start and waits for the
/// setup page.
async fn open_and_start(browser: &Browser, link: &str, user: &str) {
    browser.open(link).await;
    browser.wait_for_text("h1", START_TITLE, PAGE_WAIT).await;
    let main = browser.text("main").await;
    assert!(main.contains(user), "the start page does not say who is enrolling: {main:?}");
    browser.click_button("Start").await;
    browser.wait_for_text("h1", SETUP_TITLE, PAGE_WAIT).await;
}

/// Takes a screenshot of the setup page as shown and reads its QR code, as a phone would.
async fn scan(browser: &Browser) -> Scanned {
    // Tall enough for the QR code, the secret key and the form in one picture.
    browser.client().set_window_size(900, 1600).await.expect("resize the window");
    let deadline = tokio::time::Instant::now() + PAGE_WAIT;
    loop {
        let loaded = browser
            .client()
            .execute(
                "const i = document.querySelector('img.qr'); return !!i && i.complete && i.naturalWidth > 0;",
                vec![],
            )
            .await
            .expect("run a script");
        if loaded == serde_json::json!(true) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the QR code image did not load within {PAGE_WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let screenshot = browser.screenshot().await;
    let found = decode_qr(&screenshot);
    assert_eq!(found.len(), 1, "expected one QR code in the screenshot of the setup page, found {}", found.len());
    let uri = found.into_iter().next().expect("one");
    assert!(uri.starts_with("otpauth://totp/"), "the QR code is not an otpauth://totp/ URI");
    let seed = uri
        .split_once('?')
        .map(|(_, query)| query)
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("secret="))
        .unwrap_or_else(|| panic!("the QR code's URI has no secret"))
        .to_owned();
    let shown = browser.text("#secret-key").await.split_whitespace().collect::<String>();
    assert!(shown == seed, "the secret key on the page is not the seed in the QR code");
    Scanned { uri, seed, screenshot }
}

/// Two consecutive codes of `seed` as an authenticator app shows them now (the previous
/// window's and the current one's), by the crate's own RFC 6238.
fn codes_now(seed: &str) -> (String, String) {
    let secret = mfa_operator::totp::decode_seed(seed).unwrap_or_else(|_| panic!("the decoded seed is not base32"));
    let now = i64::try_from(iam::now_secs()).expect("time fits");
    let step = mfa_operator::totp::step_of(now);
    (mfa_operator::totp::code_at(&secret, step - 1), mfa_operator::totp::code_at(&secret, step))
}

/// Types two codes into the fields a person finds by their labels and submits them.
async fn submit_codes(browser: &Browser, (code1, code2): (&str, &str)) {
    browser.fill_label(FIRST_CODE, code1).await;
    browser.fill_label(SECOND_CODE, code2).await;
    browser.click_button("Enable MFA").await;
}

/// Submits the right codes and waits for the success page.
async fn enable(browser: &Browser, seed: &str) {
    let (code1, code2) = codes_now(seed);
    submit_codes(browser, (&code1, &code2)).await;
    browser.wait_for_text("h1", DONE_TITLE, PAGE_WAIT).await;
    let status = browser.text("[role=status]").await;
    assert!(status.contains("Your MFA device is enabled"), "the success page says {status:?}");
}

/// A used link reopened: refused in plain words, with nothing to start. The page says
/// "used already" while the link's record is kept, and "does not work" once the
/// controller revoked it (it does as soon as it sees the user compliant, often before
/// the person can reload), so either is accepted here.
async fn assert_used_link_refused(browser: &Browser) {
    let title = browser.text("h1").await;
    let alert = browser.text("[role=alert]").await;
    match title.as_str() {
        LINK_USED => assert!(alert.contains("works once"), "the refusal does not say why: {alert:?}"),
        LINK_REVOKED => assert!(alert.contains("Ask your administrator"), "the refusal says no more: {alert:?}"),
        other => panic!("a used link reopened shows {other:?}: {alert:?}"),
    }
    assert!(!browser.source().await.contains(">Start</button>"), "a used link offers Start again");
}

/// The devices under this test's device path, with their users.
async fn devices(bed: &Bed) -> Vec<(String, Option<String>)> {
    iam::devices_under(&bed.iam, &bed.device_path).await
}

/// One version of a Secret: `namespace/name`, and its data, string data and annotations.
type SeenSecret = (String, BTreeMap<String, Vec<u8>>);

/// Every version of every Secret in the cluster while it runs: a watch started before
/// the operator, so a seed written anywhere at any time, even for a moment, is seen.
struct SecretRecorder {
    seen: Arc<Mutex<Vec<SeenSecret>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SecretRecorder {
    async fn start(client: &kube::Client) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (listed, ready) = tokio::sync::oneshot::channel();
        let api: Api<Secret> = Api::all(client.clone());
        let record = seen.clone();
        let task = tokio::spawn(async move {
            let mut listed = Some(listed);
            let mut events = std::pin::pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
            while let Some(event) = events.next().await {
                match event {
                    Ok(Event::Apply(secret) | Event::InitApply(secret) | Event::Delete(secret)) => {
                        let name = format!(
                            "{}/{}",
                            secret.metadata.namespace.as_deref().unwrap_or_default(),
                            secret.metadata.name.as_deref().unwrap_or_default()
                        );
                        let mut data: BTreeMap<String, Vec<u8>> =
                            secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
                        for (k, v) in secret.string_data.unwrap_or_default() {
                            data.insert(k, v.into_bytes());
                        }
                        // Annotations and labels are text at rest too.
                        for (k, v) in secret.metadata.annotations.unwrap_or_default() {
                            data.insert(format!("annotation:{k}"), v.into_bytes());
                        }
                        record.lock().expect("lock").push((name, data));
                    }
                    Ok(Event::InitDone) => {
                        if let Some(listed) = listed.take() {
                            let _ = listed.send(());
                        }
                    }
                    Ok(Event::Init) => {}
                    Err(e) => eprintln!("watching Secrets: {e}; the watch goes on"),
                }
            }
        });
        tokio::time::timeout(common::WAIT, ready)
            .await
            .unwrap_or_else(|_| panic!("the Secret watch did not list within {:?}", common::WAIT))
            .expect("the Secret watch ended");
        Self { seen, task }
    }

    /// Fails if any version of any Secret seen so far held `seed` (as text, in any case
    /// and grouping, or as the bytes it encodes), or if one in `namespaces` had a `seed`
    /// key at all. Fails too unless the watch saw a Secret named in `must_have_seen`
    /// (a prefix of `namespace/name`), so a dead watch cannot pass.
    fn assert_no_seed(&self, seed: &str, namespaces: &[&str], must_have_seen: &str) {
        let text = seed.to_ascii_uppercase();
        let bytes = mfa_operator::totp::decode_seed(seed).unwrap_or_else(|_| panic!("the seed is not base32"));
        let holds = |value: &[u8]| {
            let squeezed: String = String::from_utf8_lossy(value)
                .chars()
                .filter(|c| !c.is_whitespace() && *c != '-')
                .map(|c| c.to_ascii_uppercase())
                .collect();
            squeezed.contains(&text) || value.windows(bytes.len()).any(|w| w == bytes.as_slice())
        };
        let seen = self.seen.lock().expect("lock");
        assert!(
            seen.iter().any(|(name, _)| name.starts_with(must_have_seen)),
            "the Secret watch never saw {must_have_seen}*: it cannot vouch for anything ({} versions seen)",
            seen.len()
        );
        for (name, data) in seen.iter() {
            for (key, value) in data {
                assert!(!holds(value), "Secret {name} held the seed (in {key})");
                let namespace = name.split('/').next().unwrap_or_default();
                assert!(
                    !(key == "seed" && namespaces.contains(&namespace)),
                    "Secret {name} has a `seed` key in Link mode"
                );
            }
        }
    }
}

impl Drop for SecretRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where the README's picture of the setup page lives.
fn readme_screenshot() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/images/enrollment-page.png")
}

#[tokio::test]
async fn a_person_enrolls_from_the_mailed_link_and_no_seed_is_ever_at_rest() {
    let bed = Bed::new("selfsvc-happy").await;
    let mailpit = Mailpit::from_env();
    let (user, address) = person(&bed, "dana.smith").await;
    let recorder = SecretRecorder::start(&bed.client).await;
    let page = LinkOperator::start(&bed, &mailpit);

    let applied = enroll_by_link(&bed, "self", &[&user]).await;
    let uid = applied.metadata.uid.clone().expect("uid");
    let (mail, link) = link_mail(&mailpit, &address, &page.public_url).await;
    assert!(mail.subject.contains(&user), "the subject does not name the user: {:?}", mail.subject);
    let token = token_of(&link).to_owned();

    // Status says when the link went out and until when it works (72h by default), and
    // nothing was created in IAM yet: the device is made when the person starts.
    let waiting = bed
        .wait("self", "linkSentAt and linkExpiresAt", |e| {
            user_status(e, &user).is_some_and(|u| u.link_sent_at.is_some() && u.link_expires_at.is_some())
        })
        .await;
    let row = user_status(&waiting, &user).expect("row");
    let (sent, expires) = (row.link_sent_at.clone().expect("sent").0, row.link_expires_at.clone().expect("expires").0);
    assert_eq!(expires.duration_since(sent), jiff::SignedDuration::from_hours(72), "the default link ttl");
    assert_ne!(row.state, UserState::Compliant);
    assert!(row.seed_secret.is_none(), "Link mode names a seed Secret in status");
    assert!(devices(&bed).await.is_empty(), "a device exists before the person pressed Start");

    let browser = Browser::start().await;
    open_and_start(&browser, &link, &user).await;
    let scanned = scan(&browser).await;
    assert!(scanned.uri.contains(&user), "the QR code's label does not name the user");
    // Just in time: one device, created by Start, not yet assigned.
    let pending = devices(&bed).await;
    assert_eq!(pending.len(), 1, "one pending device after Start: {pending:?}");
    assert!(pending[0].0.ends_with(&format!(":mfa{}{user}", bed.device_path)), "{pending:?}");
    assert_eq!(pending[0].1, None, "the device is assigned before any code");
    if std::env::var("MFA_SAVE_SCREENSHOT").as_deref() == Ok("1") {
        let path = readme_screenshot();
        let dir = path.parent().expect("a directory");
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        std::fs::write(&path, &scanned.screenshot).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        eprintln!("saved the setup page to {}", path.display());
    }

    enable(&browser, &scanned.seed).await;
    let enabled = devices(&bed).await;
    assert_eq!(enabled, [(pending[0].0.clone(), Some(user.clone()))], "IAM shows the device assigned to the user");

    // The link works once: the same browser opening it again is refused in plain words,
    // and nothing is created.
    browser.open(&link).await;
    assert_used_link_refused(&browser).await;
    assert_eq!(devices(&bed).await, enabled, "reopening a used link changed IAM");

    let compliant = bed.wait("self", "user Compliant", |e| state(e, &user) == Some(UserState::Compliant)).await;

    // Still refused once the controller has seen the user compliant, in a fresh browser
    // (no cookie of the first), and still no second device.
    let second = Browser::start().await;
    second.open(&link).await;
    assert_used_link_refused(&second).await;
    assert_eq!(devices(&bed).await, enabled, "reopening a used link changed IAM");
    second.close().await;

    // No seed at rest at any moment: not in any Secret of the cluster, and no `seed` key
    // in this namespace or the operator's own (where the link records are).
    recorder.assert_no_seed(
        &scanned.seed,
        &[bed.ns.as_str(), common::KEY_NAMESPACE],
        &format!("{}/", common::KEY_NAMESPACE),
    );
    // ...and the link record of this enrollment was among what the watch saw.
    let records = recorder.seen.lock().expect("lock").iter().any(|(name, _)| name.contains(&uid));
    assert!(records, "the watch never saw the link record Secret of enrollment {uid}");

    // Neither the token, the seed nor a code is in status, Events or the operator's log.
    let status = serde_json::to_string(&compliant).expect("json");
    let events = bed.events_text().await;
    let logs = page.operator.logs_to_scan();
    for (what, text) in [("status", &status), ("Events", &events), ("the operator's log", &logs)] {
        assert!(!text.contains(&token), "the link's token is in {what}");
        assert!(!text.contains(&scanned.seed), "the seed is in {what}");
    }
    browser.close().await;
}

#[tokio::test]
async fn wrong_and_stale_codes_are_refused_and_the_right_ones_then_work() {
    let bed = Bed::new("selfsvc-codes").await;
    let mailpit = Mailpit::from_env();
    let (user, address) = person(&bed, "erin").await;
    let page = LinkOperator::start(&bed, &mailpit);
    enroll_by_link(&bed, "codes", &[&user]).await;
    let (_, link) = link_mail(&mailpit, &address, &page.public_url).await;

    let browser = Browser::start().await;
    open_and_start(&browser, &link, &user).await;
    let scanned = scan(&browser).await;
    let pending = devices(&bed).await;
    assert_eq!(pending.len(), 1, "one pending device after Start: {pending:?}");

    // The right codes in the wrong order: refused in plain words, the setup stays open.
    let (code1, code2) = codes_now(&scanned.seed);
    submit_codes(&browser, (&code2, &code1)).await;
    browser.wait_for_text("[role=alert]", CODES_REFUSED, PAGE_WAIT).await;
    let alert = browser.text("[role=alert]").await;
    assert!(alert.contains("consecutive"), "the refusal does not say what was wrong: {alert:?}");
    assert_eq!(browser.text("h1").await, SETUP_TITLE, "a refusal of codes ends the setup");

    // Codes from three minutes ago: refused as old.
    let secret = mfa_operator::totp::decode_seed(&scanned.seed).expect("base32");
    let step = mfa_operator::totp::step_of(i64::try_from(iam::now_secs()).expect("time fits"));
    let stale = (mfa_operator::totp::code_at(&secret, step - 7), mfa_operator::totp::code_at(&secret, step - 6));
    submit_codes(&browser, (&stale.0, &stale.1)).await;
    browser.wait_for_text("[role=alert]", "old", PAGE_WAIT).await;

    // The device stays pending, unassigned, and the user is not compliant.
    assert_eq!(devices(&bed).await, pending, "refused codes changed the pending device");
    let now = bed.enrollments.get("codes").await.expect("get enrollment");
    assert_ne!(state(&now, &user), Some(UserState::Compliant), "refused codes made the user compliant");
    // The same setup (same QR code) takes the right codes.
    let again = scan(&browser).await;
    assert!(again.seed == scanned.seed, "a refusal showed another device's QR code");
    enable(&browser, &scanned.seed).await;
    assert_eq!(devices(&bed).await, [(pending[0].0.clone(), Some(user.clone()))]);
    bed.wait("codes", "user Compliant", |e| state(e, &user) == Some(UserState::Compliant)).await;
    browser.close().await;
}

#[tokio::test]
async fn a_second_browser_on_a_link_whose_setup_is_open_is_refused() {
    let bed = Bed::new("selfsvc-tabs").await;
    let mailpit = Mailpit::from_env();
    let (user, address) = person(&bed, "frank").await;
    let page = LinkOperator::start(&bed, &mailpit);
    enroll_by_link(&bed, "tabs", &[&user]).await;
    let (_, link) = link_mail(&mailpit, &address, &page.public_url).await;

    let first = Browser::start().await;
    open_and_start(&first, &link, &user).await;
    let scanned = scan(&first).await;
    let pending = devices(&bed).await;
    assert_eq!(pending.len(), 1, "one pending device after Start: {pending:?}");

    // Another browser (say, someone the mail was forwarded to) opens the same link: the
    // start page creates nothing, and its Start is refused, saying when it may try again.
    let second = Browser::start().await;
    second.open(&link).await;
    second.wait_for_text("h1", START_TITLE, PAGE_WAIT).await;
    second.click_button("Start").await;
    second.wait_for_text("h1", OTHER_WINDOW, PAGE_WAIT).await;
    let alert = second.text("[role=alert]").await;
    assert!(
        alert.contains("Finish it there") && alert.contains("UTC"),
        "the refusal does not say what to do: {alert:?}"
    );
    assert!(decode_qr(&second.screenshot().await).is_empty(), "the second browser was shown a QR code");
    assert_eq!(devices(&bed).await, pending, "the second browser changed the pending device");

    // The first browser's setup is untouched and completes.
    enable(&first, &scanned.seed).await;
    assert_eq!(devices(&bed).await, [(pending[0].0.clone(), Some(user.clone()))]);
    bed.wait("tabs", "user Compliant", |e| state(e, &user) == Some(UserState::Compliant)).await;
    second.close().await;
    first.close().await;
}

#[tokio::test]
async fn a_user_without_an_email_tag_is_failed_and_gets_no_mail() {
    let bed = Bed::new("selfsvc-noaddr").await;
    let mailpit = Mailpit::from_env();
    let (tagged, address) = person(&bed, "gina").await;
    let untagged = bed.users(&["hal"]).await.remove(0);
    let page = LinkOperator::start(&bed, &mailpit);
    enroll_by_link(&bed, "noaddr", &[&tagged, &untagged]).await;

    // The tagged user's mail proves this operator sends; the untagged user gets none.
    let (_, _link) = link_mail(&mailpit, &address, &page.public_url).await;
    let failed =
        bed.wait("noaddr", "the untagged user Failed", |e| state(e, &untagged) == Some(UserState::Failed)).await;
    let row = user_status(&failed, &untagged).expect("row");
    let message = row.message.clone().unwrap_or_default();
    assert!(message.starts_with("NoDeliveryAddress:"), "{message:?}");
    assert!(message.contains("email"), "the message does not name the tag: {message:?}");
    assert!(row.link_sent_at.is_none() && row.link_expires_at.is_none(), "status shows a link for {untagged}");
    assert!(user_status(&failed, &tagged).is_some_and(|u| u.link_sent_at.is_some()), "the tagged user got no link");
    let reasons = bed.event_reasons("noaddr").await;
    assert!(reasons.iter().any(|r| r == "NoDeliveryAddress"), "no NoDeliveryAddress Event: {reasons:?}");

    let about_untagged: Vec<String> =
        mailpit.list().await.into_iter().filter(|m| m.subject.contains(&untagged)).map(|m| m.subject).collect();
    assert!(about_untagged.is_empty(), "mail went out for the untagged user: {about_untagged:?}");
    assert!(devices(&bed).await.is_empty(), "Link mode created a device before anyone pressed Start");
}
