//! Fault matrix items 2 and 4 (issue 5): IAM throttling, 500s and connection resets
//! injected by a proxy between the real operator and moto, with one replica and with two
//! replicas behind leader election. Each test prints what it injected and what it checked.
//!
//! Resets are injected half before the request reaches moto and half after moto acted on it
//! (the answer is lost), the case in which a retried `CreateVirtualMFADevice` could leave a
//! second device.

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::bed::state;
use common::fault_proxy::{FaultProxy, Faults, HoldEnd, Outcome, Seen};
use common::iam;
use common::operator::Operator;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use mfa_operator::crd::{MfaEnrollment, UserState};

/// Faults clear within the SDK's retries and the operator's backoff (1 s doubling, and
/// SDK backoffs up to 20 s): generous, watch-based bounds.
const CONVERGE: Duration = Duration::from_secs(180);

/// First step of the operator's per-enrollment backoff after a failed reconcile (doubling
/// on each further consecutive failure, up to [`MAX_BACKOFF`]; `error_policy` in
/// `src/controller/reconcile.rs`).
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

const FAULTS: Faults = Faults { throttle: 0.3, server_error: 0.2, timeout: 0.0, reset: 0.1 };
const NO_FAULTS: Faults = Faults { throttle: 0.0, server_error: 0.0, timeout: 0.0, reset: 0.0 };

struct Bed {
    ns: String,
    tag: String,
    path: String,
    iam: aws_sdk_iam::Client,
    enrollments: Api<MfaEnrollment>,
    secrets: Api<Secret>,
    leases: Api<Lease>,
    proxy: FaultProxy,
}

impl Bed {
    async fn new(test: &str, users: usize) -> (Self, Vec<String>) {
        let client = common::client().await;
        common::install_crd(&client).await;
        let ns = common::namespace(&client, test).await;
        let tag = common::unique(test);
        let path = format!("/{tag}/");
        let raw = iam::client().await;
        let mut names = Vec::new();
        for i in 0..users {
            let name = format!("{tag}-u{i:02}");
            iam::create_user(&raw, &name, &path).await;
            names.push(name);
        }
        let upstream = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL");
        let proxy = FaultProxy::start(&upstream).await;
        let bed = Self {
            enrollments: Api::namespaced(client.clone(), &ns),
            secrets: Api::namespaced(client.clone(), &ns),
            leases: Api::namespaced(client, &ns),
            ns,
            tag,
            path,
            iam: raw,
            proxy,
        };
        (bed, names)
    }

    async fn apply(&self, name: &str) {
        let spec = serde_json::json!({ "mode": "Enroll", "users": { "pathPrefix": self.path }, "device": { "path": self.path } });
        common::apply_enrollment(&self.enrollments, name, spec).await;
    }

    async fn wait(&self, name: &str, what: &str, check: impl Fn(&MfaEnrollment) -> bool) -> MfaEnrollment {
        common::wait_until(&self.enrollments, name, CONVERGE, what, move |o: Option<&MfaEnrollment>| {
            o.is_some_and(&check)
        })
        .await
    }

    fn set_faults(&self, faults: Faults) {
        println!("[{}] injecting {faults:?}", self.tag);
        self.proxy.set_faults(faults);
    }

    /// Devices under this test's path, and the check that no user ever has two: returns
    /// (devices, assigned, unassigned).
    async fn check_devices(&self, users: usize, when: &str) -> (usize, usize, usize) {
        let devices = iam::devices_under(&self.iam, &self.path).await;
        let mut per_user: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, user) in &devices {
            if let Some(user) = user {
                *per_user.entry(user).or_default() += 1;
            }
        }
        let doubled: Vec<_> = per_user.iter().filter(|(_, n)| **n > 1).collect();
        assert!(doubled.is_empty(), "{when}: users with two enabled devices: {doubled:?}");
        assert!(
            devices.len() <= users,
            "{when}: {} devices under {} for {users} users: {devices:#?}",
            devices.len(),
            self.path
        );
        let assigned = per_user.len();
        (devices.len(), assigned, devices.len() - assigned)
    }

    /// Asserts the converged state: exactly one device per user, every user Pending with
    /// its seed Secret present.
    async fn check_all_pending(&self, enrollment: &MfaEnrollment, users: &[String]) {
        let (devices, _, unassigned) = self.check_devices(users.len(), "after convergence").await;
        assert_eq!((devices, unassigned), (users.len(), users.len()), "exactly one pending device per user");
        let status = enrollment.status.as_ref().expect("status");
        let mut serials = std::collections::BTreeSet::new();
        for user in users {
            let entry = status.users.iter().find(|u| &u.name == user).unwrap_or_else(|| panic!("{user} not in status"));
            assert_eq!(entry.state, UserState::Pending, "{user}");
            let secret = entry.seed_secret.as_deref().unwrap_or_else(|| panic!("{user} has no seed Secret"));
            self.secrets.get(secret).await.unwrap_or_else(|e| panic!("seed Secret {secret} of {user}: {e}"));
            assert!(serials.insert(entry.serial_number.clone().expect("serial")), "{user} shares a serial");
        }
        println!(
            "[{}] checked: {devices} devices under {} for {} users, all Pending, all with a seed Secret, serials distinct",
            self.tag,
            self.path,
            users.len()
        );
    }

    /// Requests per second to the proxy over `window`, sampling devices every second.
    async fn measure(&self, window: Duration, users: usize, what: &str) -> f64 {
        let start = Instant::now();
        let before = self.proxy.total();
        while start.elapsed() < window {
            tokio::time::sleep(Duration::from_secs(1)).await;
            self.check_devices(users, what).await;
        }
        let requests = self.proxy.total() - before;
        let rate = requests as f64 / start.elapsed().as_secs_f64();
        println!("[{}] {what}: {requests} requests in {:?} = {rate:.1} requests/s", self.tag, start.elapsed());
        rate
    }

    fn print_counts(&self, what: &str) {
        println!("[{}] proxy counts {what} (operation, outcome) -> requests:", self.tag);
        for ((op, outcome), n) in self.proxy.counts() {
            println!("    {op:<32} {outcome:<22} {n}");
        }
    }
}

fn pending(e: &MfaEnrollment) -> u32 {
    e.status.as_ref().and_then(|s| s.summary.as_ref()).map_or(0, |s| s.pending)
}

/// Every user Pending in a status that is Ready (no work left, no issue).
fn all_pending_and_ready(e: &MfaEnrollment, users: usize) -> bool {
    let ready =
        e.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    ready && pending(e) == users as u32
}

/// One SDK call as the proxy saw it: its attempts, in order.
struct Call<'a> {
    attempts: Vec<&'a Seen>,
}

impl Call<'_> {
    fn first(&self) -> &Seen {
        self.attempts.first().expect("a call has an attempt")
    }

    fn last(&self) -> &Seen {
        self.attempts.last().expect("a call has an attempt")
    }

    /// Every attempt failed: the call returned an error to the operator.
    fn failed(&self) -> bool {
        self.last().outcome != Outcome::Forwarded
    }
}

/// What [`check_backoff`] looked at.
#[derive(Debug, Default)]
struct Backoff {
    calls: usize,
    sdk_retries: usize,
    /// Calls of a request that came after a failed call of the same request.
    repeats_after_failure: usize,
    longest_failure_run: u32,
}

/// Checks, on the proxy's record of every request, that the operator backs off without
/// asking how fast anything ran:
///
/// - the SDK makes at most its announced number of attempts per call, numbered 1, 2, ...
///   (its jittered retry delays may be close to zero, so they are not bounded here);
/// - once a call has failed (every attempt faulted), the next call of the same request
///   (same operation and parameters) comes at least [`MIN_BACKOFF`] after that failure,
///   and after the k-th failure in a row of that request at least `MIN_BACKOFF * 2^(k-1)`
///   (capped at [`MAX_BACKOFF`]): the same request failing again means the enrollment's
///   reconcile failed again with no success in between, so its backoff doubled.
///
/// These are lower bounds set by the operator's sleeps: a slow machine can only lengthen
/// the gaps, and an operator that repeats a failed pass at once breaks them at any speed.
fn check_backoff(requests: &[Seen]) -> Backoff {
    let mut by_call: BTreeMap<&str, Vec<&Seen>> = BTreeMap::new();
    for seen in requests {
        let id = seen.invocation.as_deref().unwrap_or_else(|| panic!("{} without amz-sdk-invocation-id", seen.op));
        by_call.entry(id).or_default().push(seen);
    }
    let mut report = Backoff::default();
    let mut by_request: BTreeMap<u64, Vec<Call>> = BTreeMap::new();
    for (_, mut attempts) in by_call {
        attempts.sort_by_key(|s| s.at);
        let numbers: Vec<Option<u32>> = attempts.iter().map(|s| s.attempt).collect();
        let expected: Vec<Option<u32>> = (1..=attempts.len() as u32).map(Some).collect();
        let op = &attempts[0].op;
        assert_eq!(numbers, expected, "{op}: the attempts of one SDK call, in order");
        let max = attempts[0].max_attempts.unwrap_or_else(|| panic!("{op}: no max in amz-sdk-request"));
        assert!(
            attempts.len() as u32 <= max,
            "{op}: {} attempts in one call, more than the SDK's {max}",
            attempts.len()
        );
        report.calls += 1;
        report.sdk_retries += attempts.len() - 1;
        by_request.entry(attempts[0].fingerprint).or_default().push(Call { attempts });
    }
    let mut too_soon = Vec::new();
    for calls in by_request.values_mut() {
        calls.sort_by_key(|c| c.first().at);
        let mut run = 0u32;
        for pair in calls.windows(2) {
            let (before, after) = (&pair[0], &pair[1]);
            if !before.failed() {
                run = 0;
                continue;
            }
            run += 1;
            report.repeats_after_failure += 1;
            report.longest_failure_run = report.longest_failure_run.max(run);
            let required = MIN_BACKOFF.saturating_mul(1 << (run - 1).min(16)).min(MAX_BACKOFF);
            let gap = after.first().at.saturating_duration_since(before.last().at);
            if gap < required {
                too_soon.push(format!(
                    "{} again {gap:?} after its failure #{run} in a row ({:?}); the backoff is {required:?}",
                    before.first().op,
                    before.last().outcome
                ));
            }
        }
    }
    assert!(
        too_soon.is_empty(),
        "the operator repeated a failed request before its backoff ({} of {} repeats after a failure):\n  {}",
        too_soon.len(),
        report.repeats_after_failure,
        too_soon.join("\n  ")
    );
    report
}

#[tokio::test]
async fn throttling_errors_and_resets_back_off_and_converge_without_duplicates() {
    const USERS: usize = 20;
    let (bed, users) = Bed::new("iamfault", USERS).await;
    let _operator = Operator::start_with(&bed.ns, &[("AWS_ENDPOINT_URL", &bed.proxy.url())]);

    bed.set_faults(FAULTS);
    bed.apply("faulty").await;
    let under_faults = bed.measure(Duration::from_secs(20), USERS, "under faults").await;
    bed.print_counts("under faults");
    let faulted: u64 = bed.proxy.counts().iter().filter(|((_, o), _)| o != "forwarded").map(|(_, n)| n).sum();
    assert!(faulted > 0, "the proxy injected faults");

    bed.set_faults(NO_FAULTS);
    let stopped = Instant::now();
    let before = bed.proxy.total();
    let done = bed.wait("faulty", "every user Pending after faults stop", |e| all_pending_and_ready(e, USERS)).await;
    let converging = (bed.proxy.total() - before) as f64 / stopped.elapsed().as_secs_f64();
    println!(
        "[{}] converged {:?} after faults stopped, {} requests = {converging:.1} requests/s",
        bed.tag,
        stopped.elapsed(),
        bed.proxy.total() - before
    );
    bed.check_all_pending(&done, &users).await;
    let idle = bed.measure(Duration::from_secs(10), USERS, "converged, no faults").await;
    bed.print_counts("at the end");
    println!(
        "[{}] request rate (a figure, not checked): {under_faults:.1}/s under faults, \
         {converging:.1}/s converging without faults, {idle:.1}/s idle once converged",
        bed.tag
    );
    let backoff = check_backoff(&bed.proxy.requests());
    println!("[{}] checked backoff on the wire: {backoff:?}", bed.tag);
    assert!(backoff.sdk_retries > 0, "the SDK retried faulted attempts");
    assert!(backoff.repeats_after_failure > 0, "some call failed and was repeated: the backoff check saw something");
}

#[tokio::test]
async fn codes_submitted_while_iam_throttles_and_resets_still_enable_one_device() {
    const USERS: usize = 8;
    let (bed, users) = Bed::new("iamhuman", USERS).await;
    let _operator = Operator::start_with(&bed.ns, &[("AWS_ENDPOINT_URL", &bed.proxy.url())]);
    bed.apply("human").await;
    let ready = bed.wait("human", "every user Pending", |e| all_pending_and_ready(e, USERS)).await;
    bed.check_all_pending(&ready, &users).await;

    bed.set_faults(Faults { throttle: 0.3, server_error: 0.0, timeout: 0.0, reset: 0.3 });
    let submitted = Instant::now();
    for user in &users {
        let entry = ready.status.as_ref().expect("status").users.iter().find(|u| &u.name == user).expect("user");
        let secret_name = entry.seed_secret.clone().expect("seed Secret");
        let secret = bed.secrets.get(&secret_name).await.expect("seed Secret");
        let seed = secret.data.as_ref().and_then(|d| d.get("seed")).map(|v| String::from_utf8_lossy(&v.0).into_owned());
        let (code1, code2) = iam::codes_now(&seed.expect("seed in Secret"));
        let patch = serde_json::json!({ "stringData": { "code1": code1, "code2": code2 } });
        bed.secrets
            .patch(&secret_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("submit codes for {user}: {e}"));
    }
    println!("[{}] submitted valid codes for {USERS} users under faults", bed.tag);
    for user in &users {
        bed.wait("human", &format!("{user} Compliant"), |e| state(e, user) == Some(UserState::Compliant)).await;
        bed.check_devices(USERS, "while enabling").await;
    }
    println!("[{}] all {USERS} Compliant {:?} after submitting, under faults", bed.tag, submitted.elapsed());
    bed.print_counts("at the end");
    bed.set_faults(NO_FAULTS);
    let (devices, assigned, unassigned) = bed.check_devices(USERS, "after enabling").await;
    assert_eq!((devices, assigned, unassigned), (USERS, USERS, 0), "one enabled device per user, nothing else");
    println!("[{}] checked: {devices} devices, each enabled for a different user, none left unassigned", bed.tag);
}

#[tokio::test]
async fn two_replicas_under_iam_faults_never_create_two_devices_for_one_user() {
    const USERS: usize = 12;
    let (bed, users) = Bed::new("iamleader", USERS).await;
    let url = bed.proxy.url();
    let start = |identity: &str| Operator::start_replica(&bed.ns, identity, &[("AWS_ENDPOINT_URL", &url)]);
    let holder = |want: &'static str| {
        move |l: Option<&Lease>| l.and_then(|l| l.spec.as_ref()?.holder_identity.as_deref()) == Some(want)
    };
    let first = start("a");
    common::wait_until(&bed.leases, "mfa-operator", common::WAIT, "a to hold the lease", holder("a")).await;
    let _second = start("b");

    bed.set_faults(FAULTS);
    bed.apply("shared").await;
    bed.measure(Duration::from_secs(10), USERS, "leader a under faults").await;
    let killed = Instant::now();
    first.kill();
    println!("[{}] killed leader a (SIGKILL) while converging", bed.tag);
    common::wait_until(&bed.leases, "mfa-operator", Duration::from_secs(60), "b to take the lease", holder("b")).await;
    println!("[{}] b took the lease {:?} after a was killed", bed.tag, killed.elapsed());
    bed.measure(Duration::from_secs(10), USERS, "leader b under faults").await;
    bed.print_counts("under faults");

    bed.set_faults(NO_FAULTS);
    let done = bed.wait("shared", "every user Pending under b", |e| all_pending_and_ready(e, USERS)).await;
    bed.check_all_pending(&done, &users).await;
}

/// A request IAM never answers: the proxy holds every request for [`FaultProxy::HOLD`]
/// (35 s) until it has held one. The operator's per-attempt timeout (10 s) cuts the hung
/// call short: the proxy sees the client close every held connection before it would have
/// let go itself, and the SDK retry the same call, which converges.
#[tokio::test]
async fn a_hung_iam_connection_is_cut_short_by_the_attempt_timeout() {
    const USERS: usize = 2;
    let (bed, users) = Bed::new("iamhang", USERS).await;
    let _operator = Operator::start_with(&bed.ns, &[("AWS_ENDPOINT_URL", &bed.proxy.url())]);
    bed.set_faults(Faults { throttle: 0.0, server_error: 0.0, timeout: 1.0, reset: 0.0 });
    bed.apply("hang").await;
    let deadline = Instant::now() + common::WAIT;
    while bed.proxy.holds().is_empty() {
        assert!(Instant::now() < deadline, "the operator sent no IAM request within {:?}", common::WAIT);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bed.set_faults(NO_FAULTS);
    let done = bed.wait("hang", "every user Pending after the hold", |e| all_pending_and_ready(e, USERS)).await;
    bed.check_all_pending(&done, &users).await;

    // Every hold ends one way or the other within HOLD; wait for all of them.
    let deadline = Instant::now() + FaultProxy::HOLD + common::WAIT;
    let holds = loop {
        let holds = bed.proxy.holds();
        if holds.iter().all(|h| h.end.is_some()) {
            break holds;
        }
        assert!(Instant::now() < deadline, "held requests still open after {:?}: {holds:#?}", FaultProxy::HOLD);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    bed.print_counts("at the end");
    let requests = bed.proxy.requests();
    assert!(!holds.is_empty(), "the proxy held a request");
    assert_eq!(
        holds.len() as u64,
        bed.proxy.counts().iter().filter(|((_, o), _)| o == Outcome::TimedOut.as_str()).map(|(_, n)| n).sum::<u64>(),
        "one hold per request counted as held"
    );
    for hold in &holds {
        let (ended, how) = hold.end.expect("ended");
        let held_for = ended - hold.since;
        println!("[{}] {} attempt {:?} held, then {how:?} after {held_for:?}", bed.tag, hold.op, hold.attempt);
        assert_eq!(
            how,
            HoldEnd::ClosedByClient,
            "{} was held {held_for:?} and the operator never closed it: no attempt timeout \
             ({:?} expected) cut the hung call short",
            hold.op,
            mfa_operator::aws::IAM_ATTEMPT_TIMEOUT
        );
        // The close is the attempt timeout, not something else giving up early: the
        // SDK's clock starts before the request reaches the proxy, hence the second.
        assert!(
            held_for + Duration::from_secs(1) >= mfa_operator::aws::IAM_ATTEMPT_TIMEOUT,
            "{} closed by the client after {held_for:?}, before the attempt timeout",
            hold.op
        );
        let retried = requests
            .iter()
            .any(|s| s.invocation == hold.invocation && s.attempt > hold.attempt && s.outcome == Outcome::Forwarded);
        assert!(retried, "the SDK retried the timed-out {} call (same invocation, a later attempt)", hold.op);
    }
    println!(
        "[{}] checked: {} held request(s), each closed by the operator while the proxy still held it \
         (it would have let go after {:?}), each call retried and answered",
        bed.tag,
        holds.len(),
        FaultProxy::HOLD
    );
}
