//! Running the operator the way a platform team does: metrics and probes on one port, and
//! several replicas behind a leader Lease. Real binary, real apiserver, real moto.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::iam;
use common::operator::Operator;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use mfa_operator::crd::MfaEnrollment;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A plain HTTP/1.0 GET: (status code, body).
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// Polls `check` (bounded) while the operator works; used only where no watch exists
/// (an HTTP endpoint).
async fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn pending(e: &MfaEnrollment) -> u32 {
    e.status.as_ref().and_then(|s| s.summary.as_ref()).map_or(0, |s| s.pending)
}

#[tokio::test]
async fn metrics_and_probes_are_served_on_one_port() {
    let client = common::client().await;
    common::install_crd(&client).await;
    let ns = common::namespace(&client, "metrics").await;
    let tag = common::unique("metrics");
    let raw = iam::client().await;
    for name in ["a", "b"] {
        iam::create_user(&raw, &format!("{tag}-{name}"), &format!("/{tag}/")).await;
    }
    let port = free_port();
    let _operator = Operator::start_args(&ns, &["--metrics-address", &format!("127.0.0.1:{port}")], &[]);
    let api: Api<MfaEnrollment> = Api::namespaced(client.clone(), &ns);
    common::apply_enrollment(&api, "m", serde_json::json!({ "mode": "Enroll", "users": { "pathPrefix": format!("/{tag}/") }, "device": { "path": format!("/{tag}/") } })).await;
    common::wait_until(&api, "m", common::WAIT, "2 pending", |e: Option<&MfaEnrollment>| {
        e.is_some_and(|e| pending(e) == 2)
    })
    .await;

    assert_eq!(eventually("/healthz", common::WAIT, || get(port, "/healthz")).await.0, 200);
    assert_eq!(eventually("/readyz", common::WAIT, || get(port, "/readyz")).await.0, 200);
    let expected = format!(r#"mfa_operator_users{{namespace="{ns}",enrollment="m",state="Pending"}} 2"#);
    let metrics = eventually("the users gauge", common::WAIT, || {
        get(port, "/metrics").map(|(_, body)| body).filter(|body| body.contains(&expected))
    })
    .await;
    for family in [
        r#"mfa_operator_iam_requests_total{operation="CreateVirtualMFADevice",outcome="success"} 2"#,
        r#"mfa_operator_iam_requests_total{operation="GetAccountAuthorizationDetails",outcome="success"}"#,
        "mfa_operator_reconcile_duration_seconds_count",
        "mfa_operator_enrollment_duration_seconds_count 0",
    ] {
        assert!(metrics.contains(family), "missing {family} in\n{metrics}");
    }
    assert!(!metrics.contains(&format!("{tag}-a")), "user names are never label values");
}

#[tokio::test]
async fn two_replicas_elect_one_leader_and_a_standby_takes_over() {
    let client = common::client().await;
    common::install_crd(&client).await;
    let ns = common::namespace(&client, "leader").await;
    let tag = common::unique("leader");
    let raw = iam::client().await;
    for i in 0..10 {
        iam::create_user(&raw, &format!("{tag}-u{i}"), &format!("/{tag}/")).await;
    }
    let first = Operator::start_replica(&ns, "replica-a", &[]);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let lease = common::wait_until(
        &leases,
        "mfa-operator",
        common::WAIT,
        "replica-a to hold the lease",
        |l: Option<&Lease>| l.and_then(|l| l.spec.as_ref()?.holder_identity.as_deref()) == Some("replica-a"),
    )
    .await;
    println!("lease held by {:?}", lease.spec.and_then(|s| s.holder_identity));
    let second = Operator::start_replica(&ns, "replica-b", &[]);

    let api: Api<MfaEnrollment> = Api::namespaced(client.clone(), &ns);
    let spec = |prefix: &str| serde_json::json!({ "mode": "Enroll", "users": { "pathPrefix": prefix }, "device": { "path": format!("/{tag}/") } });
    common::apply_enrollment(&api, "first", spec(&format!("/{tag}/"))).await;
    common::wait_until(&api, "first", common::WAIT, "10 pending", |e: Option<&MfaEnrollment>| {
        e.is_some_and(|e| pending(e) == 10)
    })
    .await;
    assert_eq!(iam::devices_under(&raw, &format!("/{tag}/")).await.len(), 10, "one device per user");
    assert!(!second.logs().contains("became the leader"), "the standby did not act");
    assert!(!second.logs().contains("CreateVirtualMFADevice"), "the standby made no IAM write");

    // More users arrive (the leader's cached inventory does not see them yet), then the
    // leader dies without releasing the lease: the standby takes over after expiry and
    // starts from a fresh inventory.
    for i in 10..15 {
        iam::create_user(&raw, &format!("{tag}-u{i}"), &format!("/{tag}/")).await;
    }
    let killed_at = Instant::now();
    first.kill();
    common::wait_until(
        &leases,
        "mfa-operator",
        Duration::from_secs(30),
        "replica-b to take the lease",
        |l: Option<&Lease>| l.and_then(|l| l.spec.as_ref()?.holder_identity.as_deref()) == Some("replica-b"),
    )
    .await;
    println!("replica-b took over {:?} after the leader was killed", killed_at.elapsed());
    common::apply_enrollment(&api, "second", spec(&format!("/{tag}/"))).await;
    // "second" selects the same users: "first" (older) still owns all 15.
    common::wait_until(
        &api,
        "first",
        Duration::from_secs(60),
        "15 pending under the new leader",
        |e: Option<&MfaEnrollment>| e.is_some_and(|e| pending(e) == 15),
    )
    .await;
    assert_eq!(iam::devices_under(&raw, &format!("/{tag}/")).await.len(), 15, "still exactly one device per user");
}
