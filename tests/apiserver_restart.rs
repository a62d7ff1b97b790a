//! Fault matrix item 3 (issue 5): the kube-apiserver restarts mid-run. The operator's
//! watch streams break, and on resume its last resourceVersion may be compacted away
//! (410 Gone). It must recover on its own, without a restart of its process, and must
//! miss no code submission, including one written right after the apiserver answers
//! again, before the operator's watches have reconnected.
//!
//! CAUTION: this test restarts the SHARED test bed's kube-apiserver twice
//! (`tests/testbed/testbed restart-apiserver`). Same port, certs, tokens and etcd, so
//! other clients continue afterwards, but requests and watches of tests running at the
//! same moment break for a few seconds. `cargo test` runs test binaries one after
//! another and this binary holds a single test, so that only happens when binaries are
//! run concurrently by hand.
//!
//! Before the second restart the test ages the operator's resourceVersion out: it notes
//! the revision after the operator's last writes, writes over a thousand ConfigMap
//! updates, and waits (bounded) until a list at exactly that revision answers 410 Gone
//! (the test bed's apiserver compacts etcd every 10 s, `--etcd-compaction-interval=10s`).
//! After the restart the operator's watches cannot resume from there: the test asserts
//! that its log shows the 410 and that it re-listed and caught B's codes.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::iam;
use common::operator::Operator;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, VersionMatch};
use mfa_operator::crd::{MfaEnrollment, UserState};

/// How long a user may take to become Compliant after a restart. Far below the default
/// resync interval (10 min), so only recovered watches can explain meeting it.
const RECOVERY: Duration = Duration::from_secs(60);
/// ConfigMap updates written between the restarts: more than the apiserver's watch cache
/// keeps for one resource, so that the old resourceVersion is gone everywhere.
const WRITES: usize = 1100;

const TESTBED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/testbed/testbed");

/// Runs `testbed restart-apiserver` and returns how long it took.
fn restart_apiserver() -> Duration {
    let t0 = Instant::now();
    let out = Command::new(TESTBED)
        .arg("restart-apiserver")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("run {TESTBED} restart-apiserver: {e}"));
    let took = t0.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "restart-apiserver failed ({}):\n{stderr}", out.status);
    eprintln!("injected: kube-apiserver restart, {took:.1?}\n{}", stderr.trim_end());
    took
}

/// Refuses to restart anything unless the script's state directory is the bed this
/// test's environment talks to (the env file does not carry MFA_TESTBED_STATE, so a
/// shell set up for another bed would otherwise restart the wrong apiserver).
fn check_same_bed() {
    let ours = std::env::var("MFA_TESTBED_APISERVER").expect("MFA_TESTBED_APISERVER (eval the testbed env)");
    let out = Command::new(TESTBED).arg("env").output().expect("run testbed env");
    let env = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && env.lines().any(|l| l.trim() == format!("export MFA_TESTBED_APISERVER={ours}")),
        "`{TESTBED} env` describes another bed than MFA_TESTBED_APISERVER={ours}; \
         set MFA_TESTBED_STATE to that bed's state directory"
    );
}

/// The pid of the operator started for `namespace`, found by its command line.
fn operator_pid(namespace: &str) -> Option<u32> {
    let needle = format!("run\0--namespace\0{namespace}\0");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        (cmdline.contains("mfa-operator") && cmdline.contains(&needle)).then_some(pid)
    })
}

/// The operator is the very process started at the beginning and has not given up.
fn assert_operator_alive(operator: &Operator, namespace: &str, pid: u32) {
    assert_eq!(operator_pid(namespace), Some(pid), "the operator process exited or was replaced");
    let logs = operator.logs_to_scan();
    // Its own words for giving up (not a bare "exiting": the AWS SDK logs "exiting
    // attempt loop" at debug level on every call).
    for bad in ["panicked", "lost the leader lease", "controller stopped"] {
        assert!(!logs.contains(bad), "the operator logged {bad:?}:\n{}", tail(&logs, 40));
    }
}

/// The log without terminal colour codes.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            out.push(c);
        }
    }
    out
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<_> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Writes the codes into the seed Secret, retrying while the client's pooled connections
/// to the old apiserver process fail.
async fn submit(secrets: &Api<Secret>, secret: &str, seed: &str) {
    let (code1, code2) = iam::codes_now(seed);
    let patch = serde_json::json!({ "stringData": { "code1": code1, "code2": code2 } });
    let mut tries = 0;
    loop {
        match secrets.patch(secret, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => return,
            Err(e) if tries < 50 => {
                tries += 1;
                eprintln!("submit to {secret}: {e} (retrying)");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("submit codes to {secret}: {e}"),
        }
    }
}

fn state(e: &MfaEnrollment, user: &str) -> Option<UserState> {
    e.status.as_ref()?.users.iter().find(|u| u.name == user).map(|u| u.state)
}

async fn wait_states(enrollments: &Api<MfaEnrollment>, users: &[&String], want: UserState, timeout: Duration) {
    let users: Vec<String> = users.iter().map(|u| (*u).clone()).collect();
    let what = format!("{users:?} {want:?}");
    common::wait_until(enrollments, "restart", timeout, &what, move |o: Option<&MfaEnrollment>| {
        o.is_some_and(|e| users.iter().all(|u| state(e, u) == Some(want)))
    })
    .await;
}

/// Many cheap writes that advance etcd's revision far past the operator's last seen one.
async fn churn(client: &Client, namespace: &str) {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let map: ConfigMap =
        serde_json::from_value(serde_json::json!({ "metadata": { "name": "churn" } })).expect("literal");
    maps.create(&PostParams::default(), &map).await.expect("create churn ConfigMap");
    futures::stream::iter(0..WRITES)
        .for_each_concurrent(16, |i| {
            let maps = maps.clone();
            async move {
                let patch = serde_json::json!({ "data": { format!("k{}", i % 16): i.to_string() } });
                maps.patch("churn", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch churn");
            }
        })
        .await;
}

#[tokio::test]
async fn operator_recovers_from_apiserver_restarts_and_misses_no_code() {
    let client = common::client().await;
    check_same_bed();
    common::install_crd(&client).await;
    let ns = common::namespace(&client, "apirestart").await;
    let tag = common::unique("apirestart");
    let iam_client = iam::client().await;
    let [a, b, c] = ["a", "b", "c"].map(|n| format!("{tag}-{n}"));
    for user in [&a, &b, &c] {
        iam::create_user(&iam_client, user, &format!("/{tag}/")).await;
    }
    let enrollments: Api<MfaEnrollment> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);

    let operator = Operator::start(&ns);
    let spec = serde_json::json!({
        "mode": "Enroll", "device": { "path": format!("/{tag}/") }, "users": { "names": [&a, &b, &c] },
    });
    common::apply_enrollment(&enrollments, "restart", spec).await;
    wait_states(&enrollments, &[&a, &b, &c], UserState::Pending, common::WAIT * 2).await;
    let pending = enrollments.get("restart").await.expect("get enrollment");
    let mut seeds = std::collections::HashMap::new();
    for user in [&a, &b, &c] {
        let name = pending.status.as_ref().and_then(|s| s.users.iter().find(|u| &u.name == user)?.seed_secret.clone());
        let name = name.unwrap_or_else(|| panic!("{user} has no seed Secret in status"));
        let secret = secrets.get(&name).await.expect("get seed Secret");
        let seed = secret.data.as_ref().and_then(|d| d.get("seed")).expect("seed").0.clone();
        seeds.insert(user.clone(), (name, String::from_utf8(seed).expect("base32 text")));
    }
    let pid = operator_pid(&ns).expect("the operator runs");

    // 1 + 3: restart; C's codes go in the moment the apiserver answers again (before the
    // operator's watches can have reconnected), A's right after.
    let took1 = restart_apiserver();
    let back = Instant::now();
    submit(&secrets, &seeds[&c].0, &seeds[&c].1).await;
    submit(&secrets, &seeds[&a].0, &seeds[&a].1).await;
    eprintln!("injected: codes for C {:.1?} and A {:.1?} after the restart returned", Duration::ZERO, back.elapsed());
    wait_states(&enrollments, &[&a, &c], UserState::Compliant, RECOVERY).await;
    let compliant1 = back.elapsed();
    eprintln!("checked: A and C Compliant {compliant1:.1?} after the first restart returned");
    assert_operator_alive(&operator, &ns, pid);

    // 2: age the operator's resourceVersion out (writes + two compaction intervals), then
    // restart again: resuming its watches from there answers 410 Gone.
    let old = enrollments.list_metadata(&ListParams::default()).await.expect("list enrollments");
    let old = old.metadata.resource_version.expect("a list has a resourceVersion");
    let t = Instant::now();
    churn(&client, &ns).await;
    eprintln!("injected: {WRITES} ConfigMap updates in {:.1?}", t.elapsed());
    wait_compacted(&enrollments, &old).await;
    eprintln!("checked: revision {old} answers 410 Gone {:.1?} after the churn began", t.elapsed());
    let log_lines_before = operator.logs().lines().count();
    let took2 = restart_apiserver();
    let back = Instant::now();
    submit(&secrets, &seeds[&b].0, &seeds[&b].1).await;
    wait_states(&enrollments, &[&a, &b, &c], UserState::Compliant, RECOVERY).await;
    let compliant2 = back.elapsed();
    eprintln!("checked: B Compliant {compliant2:.1?} after the second restart returned");
    assert_operator_alive(&operator, &ns, pid);

    // Exactly one device per user, all assigned: nothing was duplicated by the relists.
    let devices = iam::devices_under(&iam_client, &format!("/{tag}/")).await;
    assert_eq!(devices.len(), 3, "{devices:?}");
    for user in [&a, &b, &c] {
        assert_eq!(devices.iter().filter(|(_, u)| u.as_ref() == Some(user)).count(), 1, "{devices:?}");
    }

    // The operator's watches answered 410 Gone after the second restart and it re-listed
    // (kube-rs's watcher logs the error event at debug level, then lists afresh).
    let logs = strip_ansi(&operator.logs_to_scan());
    let after: Vec<&str> = logs.lines().skip(log_lines_before).collect();
    let gone = after.iter().filter(|l| l.contains("code: 410") || l.contains("too old resource version")).count();
    assert!(
        gone > 0,
        "no 410 Gone in the operator's log after the second restart; its last lines:\n{}",
        tail(&after.join("\n"), 40)
    );
    eprintln!(
        "summary: restarts {took1:.1?} and {took2:.1?}; Compliant {compliant1:.1?} and {compliant2:.1?} after them; \
         {gone} log lines with 410 Gone after the second; operator pid {pid} throughout"
    );
}

/// Waits (bounded) until etcd has compacted `revision` away: a list at exactly that
/// revision answers 410 Gone.
async fn wait_compacted(api: &Api<MfaEnrollment>, revision: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let exact = ListParams::default().at(revision).matching(VersionMatch::Exact);
    loop {
        match api.list_metadata(&exact).await {
            Err(kube::Error::Api(status)) if status.code == 410 => return,
            Ok(_) => {}
            Err(e) => eprintln!("list at revision {revision}: {e} (retrying)"),
        }
        assert!(Instant::now() < deadline, "revision {revision} still served after 90 s: etcd did not compact");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
