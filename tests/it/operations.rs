//! Running the operator the way a platform team does: metrics and probes on one port, and
//! several replicas behind a leader Lease. Real binary, real apiserver, real moto.

use crate::common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::iam;
use common::operator::Operator;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, PostParams};
use kube::config::Kubeconfig;
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
    let standby = second.logs_to_scan();
    assert!(!standby.contains("became the leader"), "the standby did not act");
    assert!(!standby.contains("CreateVirtualMFADevice"), "the standby made no IAM write");

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

/// Lease fencing: a leader paused (SIGSTOP) past its lease while an IAM write is due,
/// then resumed after a standby took over, does not make that write. Its IAM goes through
/// a proxy of its own, so every request it sends is seen.
#[tokio::test]
async fn a_leader_paused_past_its_lease_makes_no_iam_write_after_it_resumes() {
    let client = common::client().await;
    common::install_crd(&client).await;
    let ns = common::namespace(&client, "fence").await;
    let tag = common::unique("fence");
    let raw = iam::client().await;
    let user = format!("{tag}-ivy");
    iam::create_user(&raw, &user, &format!("/{tag}/")).await;
    let proxy = common::fault_proxy::FaultProxy::start(&std::env::var("AWS_ENDPOINT_URL").expect("endpoint")).await;
    let proxied = proxy.url();
    let env = [
        ("AWS_ENDPOINT_URL", proxied.as_str()),
        (mfa_operator::failpoint::ENV, "before-device-created"),
        ("MFA_OPERATOR_FAILPOINT_SECONDS", "4"),
    ];
    let mut stale = Operator::start_replica(&ns, "replica-a", &env);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let holder = |who: &'static str| {
        move |l: Option<&Lease>| l.and_then(|l| l.spec.as_ref()?.holder_identity.as_deref()) == Some(who)
    };
    common::wait_until(&leases, "mfa-operator", common::WAIT, "replica-a to lead", holder("replica-a")).await;

    let api: Api<MfaEnrollment> = Api::namespaced(client.clone(), &ns);
    let spec = serde_json::json!({ "mode": "Enroll", "users": { "names": [&user] }, "device": { "path": format!("/{tag}/") } });
    common::apply_enrollment(&api, "fenced", spec).await;
    // The device's creation is due: the leader waits 4 s before sending it, and is
    // stopped during the wait for longer than its lease (6 s).
    stale.wait_for_log("failpoint before-device-created: stalling", common::WAIT).await;
    stale.signal("STOP");
    let standby = Operator::start_replica(&ns, "replica-b", &[]);
    common::wait_until(&leases, "mfa-operator", Duration::from_secs(30), "replica-b to take over", holder("replica-b"))
        .await;
    let pending = |e: Option<&MfaEnrollment>| {
        e.is_some_and(|e| common::bed::state(e, &user) == Some(mfa_operator::crd::UserState::Pending))
    };
    common::wait_until(&api, "fenced", common::WAIT, "the new leader to create the device", pending).await;

    stale.signal("CONT");
    stale.wait_for_log("failpoint before-device-created: going on", common::WAIT).await;
    // It gives up the work (the fence) and then exits (it lost the lease).
    let deadline = Instant::now() + common::WAIT;
    while !stale.exited() {
        assert!(Instant::now() < deadline, "the stale leader did not exit within {:?}", common::WAIT);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let writes: Vec<String> = proxy
        .requests()
        .into_iter()
        .map(|r| r.op)
        .filter(|op| ["CreateVirtualMFADevice", "DeleteVirtualMFADevice", "EnableMFADevice"].contains(&op.as_str()))
        .collect();
    assert!(writes.is_empty(), "the stale leader sent {writes:?}");
    let logs = stale.logs();
    assert!(logs.contains("write not sent: this replica cannot confirm it still holds the leader lease"), "{logs}");
    assert_eq!(iam::devices_under(&raw, &format!("/{tag}/")).await.len(), 1, "one device, the new leader's");
    drop(standby);
}

/// A kubeconfig like the test bed's admin one that acts as `user` (impersonation): only
/// what RBAC grants `user` is allowed. It carries the admin's credentials: private to
/// this user, and removed when dropped.
struct ImpersonatingKubeconfig(std::path::PathBuf);

impl ImpersonatingKubeconfig {
    fn new(user: &str) -> Self {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut config = Kubeconfig::read().expect("read the test bed's KUBECONFIG");
        for named in &mut config.auth_infos {
            if let Some(auth) = named.auth_info.as_mut() {
                auth.impersonate = Some(user.to_owned());
                auth.impersonate_groups = Some(vec!["system:authenticated".to_owned()]);
            }
        }
        let path = std::env::temp_dir().join(format!("mfa-operator-test-{user}.kubeconfig"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .expect("create the kubeconfig");
        file.write_all(serde_yaml::to_string(&config).expect("kubeconfig YAML").as_bytes()).expect("write kubeconfig");
        Self(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 path")
    }
}

impl Drop for ImpersonatingKubeconfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Grants `user` the rules in `namespace` through a Role and RoleBinding named `name`.
async fn grant(client: &kube::Client, namespace: &str, name: &str, user: &str, rules: serde_json::Value) {
    let role: Role = serde_json::from_value(serde_json::json!({ "metadata": { "name": name }, "rules": rules }))
        .expect("role literal");
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user }],
    }))
    .expect("binding literal");
    let roles: Api<Role> = Api::namespaced(client.clone(), namespace);
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), namespace);
    for result in [
        roles.create(&PostParams::default(), &role).await.map(|_| ()),
        bindings.create(&PostParams::default(), &binding).await.map(|_| ()),
    ] {
        match result {
            Ok(()) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => panic!("grant {name} to {user} in {namespace}: {e}"),
        }
    }
}

#[tokio::test]
async fn not_ready_until_the_enrollment_cache_syncs() {
    let client = common::client().await;
    common::install_crd(&client).await;
    let ns = common::namespace(&client, "readyz").await;
    let user = common::unique("readyz");
    // The integrity key only: the operator starts, but may not list MfaEnrollments.
    grant(
        &client,
        common::KEY_NAMESPACE,
        &format!("{user}-key"),
        &user,
        serde_json::json!([{ "apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create"] }]),
    )
    .await;
    let kubeconfig = ImpersonatingKubeconfig::new(&user);
    let port = free_port();
    let operator = Operator::start_args(
        &ns,
        &["--metrics-address", &format!("127.0.0.1:{port}")],
        &[("KUBECONFIG", kubeconfig.path())],
    );

    // The list was refused (kube-runtime logs the 403), and the operator says why it is
    // not ready while staying alive: a restart would not grant it RBAC.
    operator.wait_for_log("list error with 403", Duration::from_secs(60)).await;
    let (status, body) = eventually("/readyz", common::WAIT, || get(port, "/readyz")).await;
    assert_eq!((status, body.as_str()), (503, "waiting for the MfaEnrollment cache to sync"));
    assert_eq!(get(port, "/healthz").map(|(status, _)| status), Some(200), "alive while not ready");

    grant(
        &client,
        &ns,
        "operator",
        &user,
        serde_json::json!([
            { "apiGroups": ["iam.mfa-operator.dev"], "resources": ["mfaenrollments"], "verbs": ["get", "list", "watch", "patch", "update"] },
            { "apiGroups": ["iam.mfa-operator.dev"], "resources": ["mfaenrollments/status"], "verbs": ["get", "patch", "update"] },
            { "apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch", "create", "patch", "delete"] },
            { "apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"] },
        ]),
    )
    .await;
    let ready = eventually("/readyz to answer 200 once RBAC allows the list", Duration::from_secs(90), || {
        get(port, "/readyz").filter(|(status, _)| *status == 200)
    })
    .await;
    assert_eq!(ready.1, "ready");
}

#[tokio::test]
async fn a_wedged_controller_loop_fails_liveness_and_readiness() {
    let client = common::client().await;
    common::install_crd(&client).await;
    let ns = common::namespace(&client, "healthz").await;
    let tag = common::unique("healthz");
    let port = free_port();
    // The failpoint blocks the thread of the first reconcile forever, as a deadlock would.
    // Two runtime workers, so the probes are still served on a one-CPU machine.
    let operator = Operator::start_args(
        &ns,
        &["--metrics-address", &format!("127.0.0.1:{port}"), "--liveness-timeout-seconds", "5"],
        &[("MFA_OPERATOR_FAILPOINT", "reconcile-wedge"), ("TOKIO_WORKER_THREADS", "2")],
    );
    let ready = eventually("/readyz 200 before any reconcile", common::WAIT, || {
        get(port, "/readyz").filter(|(status, _)| *status == 200)
    })
    .await;
    assert_eq!(ready.1, "ready");
    assert_eq!(get(port, "/healthz"), Some((200, "ok".to_owned())));

    let api: Api<MfaEnrollment> = Api::namespaced(client.clone(), &ns);
    common::apply_enrollment(
        &api,
        "w",
        serde_json::json!({ "mode": "Report", "users": { "pathPrefix": format!("/{tag}/") } }),
    )
    .await;
    operator.wait_for_log("failpoint reconcile-wedge", Duration::from_secs(60)).await;
    let (status, body) =
        eventually("/healthz to fail", common::WAIT, || get(port, "/healthz").filter(|(status, _)| *status != 200))
            .await;
    assert_eq!(status, 503);
    assert!(body.starts_with("a reconcile has been stuck for"), "{body}");
    let (status, body) = get(port, "/readyz").expect("/readyz answers while the loop is wedged");
    assert_eq!(status, 503, "{body}");
}
