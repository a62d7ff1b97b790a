//! Crash consistency (issue 5, fault matrix items 1 and 6): the real `mfa-operator` binary
//! is stopped by a failpoint (`MFA_OPERATOR_FAILPOINT`, an `abort()` as sudden as SIGKILL)
//! at each step of an enrollment where two writes must go together, then restarted
//! without it. Every user must end with exactly one device, no enabled device may be
//! touched, no orphan may remain and the status must be right; seeds and codes must never
//! reach logs, Events or status. Each test prints what it injected and what it checked.

use crate::common;

use std::time::Duration;

use common::bed::{data, is_true, state, user_status};
use common::iam;
use common::operator::Operator;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use mfa_operator::crd::{MfaEnrollment, UserState};

/// How long a failpoint may take to be reached.
const CRASH_WAIT: Duration = Duration::from_secs(60);
/// How long a restarted operator may take to converge.
const CONVERGE_WAIT: Duration = Duration::from_secs(60);
const ENROLLMENT: &str = "faults";

/// The shared harness plus what the leak scan needs. Its methods below stand in for the
/// shared ones of the same name: this test has one enrollment and records every seed and
/// code it sees.
struct Bed {
    base: common::bed::Bed,
    /// Logs of every operator process this test ran, in order.
    logs: Vec<String>,
    /// Every seed and code this test saw or submitted.
    secret_texts: Vec<String>,
}

impl std::ops::Deref for Bed {
    type Target = common::bed::Bed;

    fn deref(&self) -> &Self::Target {
        &self.base
    }
}

impl Bed {
    async fn new(test: &str) -> Self {
        let mut base = common::bed::Bed::new(test).await;
        base.device_path = format!("/{}-dev/", base.tag);
        Self { base, logs: Vec::new(), secret_texts: Vec::new() }
    }

    /// Creates `alice` and `bob` without MFA and `carol` with her own enabled device
    /// outside the operator's path; returns the three names and carol's serial.
    async fn users(&self) -> ([String; 3], String) {
        let users = ["alice", "bob", "carol"].map(|n| format!("{}-{n}", self.tag));
        for user in &users {
            iam::create_user(&self.iam, user, &format!("/{}/", self.tag)).await;
        }
        let own = iam::enable_own_device(&self.iam, &users[2]).await;
        (users, own)
    }

    async fn apply_enrollment(&self) {
        let spec = serde_json::json!({
            "mode": "Enroll",
            "users": { "pathPrefix": format!("/{}/", self.tag) },
            "device": { "path": self.device_path },
        });
        common::apply_enrollment(&self.enrollments, ENROLLMENT, spec).await;
    }

    fn start(&self, failpoint: Option<&str>) -> Operator {
        match failpoint {
            Some(point) => Operator::start_with(&self.ns, &[(mfa_operator::failpoint::ENV, point)]),
            None => Operator::start(&self.ns),
        }
    }

    /// Waits until the operator logged that it aborted at `point`, then reaps it.
    async fn wait_crash(&mut self, operator: Operator, point: &str) {
        let took = operator.wait_for_log(&format!("failpoint {point}: aborting"), CRASH_WAIT).await;
        println!("injected: operator aborted at failpoint {point} after {took:?}");
        self.stop(operator);
    }

    /// Kills `operator` (a no-op for one that already died) and keeps its logs.
    fn stop(&mut self, operator: Operator) {
        self.logs.push(operator.kill());
    }

    async fn wait(&self, what: &str, check: impl Fn(&MfaEnrollment) -> bool) -> MfaEnrollment {
        common::wait_until(&self.enrollments, ENROLLMENT, CONVERGE_WAIT, what, move |o: Option<&MfaEnrollment>| {
            o.is_some_and(&check)
        })
        .await
    }

    /// Waits until the enrollment's current generation is Ready with `compliant` and
    /// `pending` users, and every pending user's status names a seed Secret.
    async fn converged(&self, compliant: u32, pending: u32) -> MfaEnrollment {
        self.wait(&format!("Ready with {compliant} compliant and {pending} pending"), |e| {
            let Some(status) = e.status.as_ref() else { return false };
            let Some(summary) = status.summary.as_ref() else { return false };
            is_true(e, "Ready")
                && (summary.selected, summary.compliant, summary.pending, summary.missing, summary.failed)
                    == (compliant + pending, compliant, pending, 0, 0)
                && status.users.iter().all(|u| u.state != UserState::Pending || u.seed_secret.is_some())
        })
        .await
    }

    async fn secret_of(&mut self, enrollment: &MfaEnrollment, user: &str) -> (Secret, String) {
        let secret = self.seed_secret(enrollment, user).await;
        let seed = data(&secret, "seed").unwrap_or_else(|| panic!("Secret {} has no seed", secret.name_any()));
        self.secret_texts.push(seed.clone());
        (secret, seed)
    }

    /// Writes two fresh codes from `seed` into the Secret `name`.
    async fn submit(&mut self, name: &str, seed: &str) {
        let (code1, code2) = iam::codes_now(seed);
        self.base.submit(name, &code1, &code2).await;
        self.secret_texts.extend([code1, code2]);
    }

    async fn secret_names(&self) -> Vec<String> {
        let mut names: Vec<_> = self
            .secrets
            .list(&ListParams::default())
            .await
            .expect("list Secrets")
            .items
            .iter()
            .map(|s| s.name_any())
            .collect();
        names.sort();
        names
    }

    /// Every seed Secret's seed, so the leak scan knows them even when no status named
    /// the Secret (a crash before status was written).
    async fn remember_seeds(&mut self) {
        for secret in self.secrets.list(&ListParams::default()).await.expect("list Secrets").items {
            if let Some(seed) = data(&secret, "seed") {
                self.secret_texts.push(seed);
            }
        }
    }

    /// The users that have a device under the operator's path, with its assignment.
    async fn devices(&self) -> Vec<(String, Option<String>)> {
        let mut devices = iam::devices_under(&self.iam, &self.device_path).await;
        devices.sort();
        devices
    }

    /// The invariants that hold after any crash, once the restarted operator converged:
    /// exactly one device per non-compliant user (none orphaned), the enabled devices
    /// (`enabled`: serial and user) untouched, every pending user holding a seed Secret
    /// that names its device, and no Secret for anyone else.
    async fn check_invariants(&self, done: &MfaEnrollment, users: &[String], enabled: &[(String, String)]) {
        let devices = self.devices().await;
        let all = iam::virtual_devices(&self.iam).await;
        for (serial, user) in enabled {
            assert!(all.contains(&(serial.clone(), Some(user.clone()))), "enabled device {serial} of {user} untouched");
        }
        let mut expected_secrets = Vec::new();
        for user in users {
            let status = user_status(done, user).unwrap_or_else(|| panic!("{user} listed in status"));
            let mine: Vec<_> = devices.iter().filter(|(serial, _)| serial.ends_with(&format!("/{user}"))).collect();
            let owns_enabled = enabled.iter().any(|(_, u)| u == user);
            match status.state {
                UserState::Compliant => {
                    assert!(owns_enabled, "{user} is Compliant without an enabled device");
                    assert!(
                        mine.iter().all(|(_, u)| u.as_ref() == Some(user)),
                        "no pending device for {user}: {mine:?}"
                    );
                    assert!(status.seed_secret.is_none(), "{user} is Compliant but names a seed Secret");
                }
                UserState::Pending => {
                    assert_eq!(mine.len(), 1, "exactly one device for pending {user}: {devices:?}");
                    assert_eq!(mine[0].1, None, "{user}'s pending device is not enabled");
                    assert_eq!(status.serial_number.as_ref(), Some(&mine[0].0), "{user}'s status names its device");
                    let name = status.seed_secret.clone().expect("seed Secret in status");
                    let secret =
                        self.secrets.get(&name).await.unwrap_or_else(|e| panic!("{user}'s Secret {name}: {e}"));
                    assert_eq!(
                        secret.annotations().get("iam.mfa-operator.dev/serial-number"),
                        Some(&mine[0].0),
                        "{user}'s Secret names its device"
                    );
                    assert!(data(&secret, "seed").is_some(), "{user}'s Secret holds a seed");
                    expected_secrets.push(name);
                }
                other => panic!("{user} is {other:?}: {:?}", status.message),
            }
        }
        let orphans: Vec<_> =
            devices.iter().filter(|(serial, _)| !users.iter().any(|u| serial.ends_with(&format!("/{u}")))).collect();
        assert!(orphans.is_empty(), "orphaned devices under the path: {orphans:?}");
        expected_secrets.sort();
        assert_eq!(self.secret_names().await, expected_secrets, "exactly the pending users' seed Secrets remain");
        println!(
            "checked: {} device(s) under {} ({devices:?}), one per pending user, no orphan; enabled devices {enabled:?} \
             untouched; Secrets {expected_secrets:?}; summary {:?}",
            devices.len(),
            self.device_path,
            done.status.as_ref().and_then(|s| s.summary.as_ref())
        );
    }

    /// The reasons of the namespace's Events, in order.
    async fn event_reasons(&self) -> Vec<String> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let mut items = events.list(&ListParams::default()).await.expect("list Events").items;
        items.sort_by(|a, b| a.metadata.creation_timestamp.cmp(&b.metadata.creation_timestamp));
        items.into_iter().filter_map(|e| e.reason).collect()
    }

    /// Seeds and codes never reach the operator's logs, the namespace's Events or status.
    async fn assert_no_leaks(&self, done: &MfaEnrollment) {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let events = serde_json::to_string(&events.list(&ListParams::default()).await.expect("list Events").items)
            .expect("json");
        let status = serde_json::to_string(&done.status).expect("json");
        let logs = strip_timestamps(&self.logs.join("\n"));
        assert!(logs.contains("DEBUG"), "the logs were captured at debug level");
        assert!(!self.secret_texts.is_empty());
        for (what, text) in [("status", &status), ("Events", &events), ("operator logs", &logs)] {
            for secret in &self.secret_texts {
                assert!(!contains_token(text, secret), "a seed or code appeared in {what}");
            }
        }
        println!(
            "checked: none of {} seeds and codes appear in {} bytes of debug logs from {} operator runs, {} bytes of \
             Events or the status",
            self.secret_texts.len(),
            logs.len(),
            self.logs.len(),
            events.len()
        );
    }
}

/// Log timestamps carry six-digit microseconds that a code may equal by chance.
fn strip_timestamps(logs: &str) -> String {
    let timestamp = regex::Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z").expect("regex");
    timestamp.replace_all(logs, "<time>").into_owned()
}

/// Whether `needle` occurs in `text` not as part of a longer run of letters or digits
/// (a six-digit code inside a longer number is not a leak).
fn contains_token(text: &str, needle: &str) -> bool {
    text.match_indices(needle).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + needle.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric()) && !after.is_some_and(|c| c.is_ascii_alphanumeric())
    })
}

/// Crash between two writes of device creation (`after-device-created`: the device
/// exists, its seed Secret does not; `after-secret-created`: both exist, status does
/// not), restart, converge, and prove a seed usable by enabling it.
async fn crash_during_creation(test: &str, point: &str) {
    let mut bed = Bed::new(test).await;
    let (users, own) = bed.users().await;
    println!("injecting: MFA_OPERATOR_FAILPOINT={point} while enrolling {users:?} ({} has own MFA)", users[2]);
    let operator = bed.start(Some(point));
    bed.apply_enrollment().await;
    bed.wait_crash(operator, point).await;

    let at_crash = bed.devices().await;
    let secrets_at_crash = bed.secret_names().await;
    bed.remember_seeds().await;
    let status_at_crash = bed.enrollments.get_status(ENROLLMENT).await.expect("get enrollment").status;
    println!(
        "state at crash: devices {at_crash:?}, Secrets {secrets_at_crash:?}, status users {:?}",
        status_at_crash.as_ref().map(|s| s.users.iter().map(|u| (&u.name, u.state)).collect::<Vec<_>>())
    );
    assert!(
        status_at_crash.is_none_or(|s| s.users.iter().all(|u| u.seed_secret.is_none())),
        "the crash came before any status named a seed Secret"
    );
    // Creations run concurrently: the crash came right after the first device (or its
    // Secret) was written, with the other user's creation possibly done too.
    let of_selected = |serial: &str| users[..2].iter().find(|u| serial.ends_with(&format!("/{u}"))).cloned();
    assert!(
        !at_crash.is_empty() && at_crash.len() <= 2 && at_crash.iter().all(|(serial, _)| of_selected(serial).is_some()),
        "the crash came right after a selected user's device was created: {at_crash:?}"
    );
    match point {
        "after-device-created" => assert!(secrets_at_crash.is_empty(), "no Secret before the crash"),
        _ => assert!(
            !secrets_at_crash.is_empty() && secrets_at_crash.len() <= at_crash.len(),
            "Secrets written before the crash: {secrets_at_crash:?}"
        ),
    }

    let operator = bed.start(None);
    let done = bed.converged(1, 2).await;
    let enabled = [(own.clone(), users[2].clone())];
    bed.check_invariants(&done, &users, &enabled).await;
    assert_eq!(state(&done, &users[2]), Some(UserState::Compliant));
    // The user whose device existed at the crash (whose Secret did, for the second point).
    let mut hit = None;
    for (serial, _) in &at_crash {
        let user = of_selected(serial).expect("checked above");
        let (secret, seed) = bed.secret_of(&done, &user).await;
        if point == "after-device-created" || secrets_at_crash.contains(&secret.name_any()) {
            hit = Some((user, serial.clone(), secret, seed));
            break;
        }
    }
    let (hit, hit_serial, secret, seed) =
        hit.unwrap_or_else(|| panic!("no Secret written before the crash survived: {secrets_at_crash:?}"));
    let reasons = bed.event_reasons().await;
    println!("Events after the restart: {reasons:?}");
    if point == "after-device-created" {
        assert!(reasons.iter().any(|r| r == "SeedRotated"), "the seedless device was replaced: {reasons:?}");
    }
    if point == "after-secret-created" {
        for name in &secrets_at_crash {
            assert!(
                bed.secrets.get_opt(name).await.expect("get").is_some(),
                "Secret {name} written before the crash was kept"
            );
        }
        println!("checked: {hit}'s Secret written before the crash was kept, not rotated");
    }

    // The seed the restarted operator delivers is the device's: codes from it enable it.
    bed.submit(&secret.name_any(), &seed).await;
    let done = bed.converged(2, 1).await;
    let enabled = [(own, users[2].clone()), (hit_serial, hit.clone())];
    bed.check_invariants(&done, &users, &enabled).await;
    println!("checked: codes from {hit}'s seed Secret made {hit} Compliant on the device created before the crash");
    bed.stop(operator);
    bed.assert_no_leaks(&done).await;
}

#[tokio::test]
async fn crash_after_device_created_leaves_one_device_per_user() {
    crash_during_creation("crash-device", "after-device-created").await;
}

#[tokio::test]
async fn crash_after_secret_created_keeps_the_seed_and_writes_status() {
    crash_during_creation("crash-secret", "after-secret-created").await;
}

/// Brings alice and bob to Pending (carol has her own MFA), then crashes right after
/// `EnableMFADevice` for alice, before her Secret is deleted; restarts and converges.
async fn crash_after_enable(bed: &mut Bed, users: &[String; 3], own: &str) -> MfaEnrollment {
    let point = "after-mfa-enabled";
    let operator = bed.start(None);
    bed.apply_enrollment().await;
    let pending = bed.converged(1, 2).await;
    bed.stop(operator);
    let (secret, seed) = bed.secret_of(&pending, &users[0]).await;
    let serial = user_status(&pending, &users[0]).and_then(|u| u.serial_number.clone()).expect("serial");
    bed.secret_of(&pending, &users[1]).await;

    println!("injecting: MFA_OPERATOR_FAILPOINT={point}, then codes for {} in {}", users[0], secret.name_any());
    let operator = bed.start(Some(point));
    bed.submit(&secret.name_any(), &seed).await;
    bed.wait_crash(operator, point).await;
    let at_crash = bed.devices().await;
    println!("state at crash: devices {at_crash:?}, Secrets {:?}", bed.secret_names().await);
    assert!(at_crash.contains(&(serial.clone(), Some(users[0].clone()))), "enabled before the crash: {at_crash:?}");
    assert!(bed.secrets.get_opt(&secret.name_any()).await.expect("get").is_some(), "Secret still there at crash");

    let operator = bed.start(None);
    let done = bed.converged(2, 1).await;
    assert_eq!(state(&done, &users[0]), Some(UserState::Compliant));
    let enabled = [(own.to_owned(), users[2].clone()), (serial, users[0].clone())];
    bed.check_invariants(&done, users, &enabled).await;
    println!("checked: {}'s leftover Secret {} removed after the restart", users[0], secret.name_any());
    bed.stop(operator);
    done
}

#[tokio::test]
async fn crash_after_mfa_enabled_removes_the_leftover_secret_and_touches_no_device() {
    let mut bed = Bed::new("crash-enable").await;
    let (users, own) = bed.users().await;
    let done = crash_after_enable(&mut bed, &users, &own).await;
    bed.assert_no_leaks(&done).await;
}

/// Fault matrix item 6: one enrollment through every failpoint in turn, then a full
/// enrollment; the scan covers every seed and code seen on the way.
#[tokio::test]
async fn no_seed_or_code_leaks_through_a_run_with_every_fault() {
    let mut bed = Bed::new("crash-leaks").await;
    let (users, own) = bed.users().await;
    for point in ["after-device-created", "after-secret-created"] {
        println!("injecting: MFA_OPERATOR_FAILPOINT={point}");
        let operator = bed.start(Some(point));
        bed.apply_enrollment().await;
        bed.wait_crash(operator, point).await;
        bed.remember_seeds().await;
    }
    crash_after_enable(&mut bed, &users, &own).await;

    // Bob enrolls normally, after a refused submission.
    let operator = bed.start(None);
    let pending = bed.converged(2, 1).await;
    let (secret, seed) = bed.secret_of(&pending, &users[1]).await;
    let wrong = "000000";
    let patch = serde_json::json!({ "stringData": { "code1": wrong, "code2": wrong } });
    bed.secrets.patch(&secret.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await.expect("submit");
    bed.wait("the refusal", |e| {
        user_status(e, &users[1]).and_then(|u| u.message.as_deref()).is_some_and(|m| m.contains("refused"))
    })
    .await;
    bed.submit(&secret.name_any(), &seed).await;
    let done = bed.converged(3, 0).await;
    bed.stop(operator);
    bed.assert_no_leaks(&done).await;
}

#[test]
fn the_leak_scan_finds_whole_tokens_only() {
    assert!(contains_token("code \"123456\" seen", "123456"));
    assert!(contains_token("seed=JBSWY3DPEHPK3PXP&x", "JBSWY3DPEHPK3PXP"));
    assert!(!contains_token("resourceVersion 91234567", "123456"));
    assert!(!strip_timestamps("2026-11-27T22:13:54.123456Z DEBUG x").contains("123456"));
}
