//! The Helm chart's RBAC, proven on the real apiserver: `helm template` renders the chart,
//! its ServiceAccount and (Cluster)Roles and bindings are applied, and the real
//! `mfa-operator` binary runs with exactly the chart's container arguments and
//! environment, authenticated by a token of that ServiceAccount (nothing else), through
//! a full enrollment with leader election. Calls outside the chart's rules are then
//! refused for the same token.
//!
//! The test bed has no controller manager and no kubelet, so no pod runs: the process
//! stands in for the pod, and a TokenRequest stands in for the projected token.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::iam;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt};
use mfa_operator::crd::{MfaEnrollment, UserState};

use common::chart::{kind, render};
/// The kinds the test applies from the render (no workload can run on the test bed).
const RBAC_KINDS: [&str; 5] = ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"];

fn name(object: &serde_json::Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

fn api_resource(object: &serde_json::Value) -> ApiResource {
    let (group, version) = match object["apiVersion"].as_str().expect("apiVersion").split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", object["apiVersion"].as_str().expect("apiVersion")),
    };
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind(object)))
}

fn dynamic_api(client: &Client, object: &serde_json::Value) -> Api<DynamicObject> {
    let resource = api_resource(object);
    match object["metadata"]["namespace"].as_str() {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// One installation of the chart's RBAC objects, for one test.
struct Install {
    admin: Client,
    objects: Vec<serde_json::Value>,
    release_ns: String,
    service_account: String,
    deployment: serde_json::Value,
}

impl Install {
    /// Renders the chart into `release_ns` and applies its ServiceAccount and RBAC
    /// objects as the test bed's admin.
    /// Renders the chart as every test here installs it (the test bed's AWS endpoint and
    /// region, leader election, debug logs) plus `sets`, and applies its RBAC objects.
    async fn new(admin: &Client, release: &str, release_ns: &str, sets: &[(&str, &str)]) -> Self {
        let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL");
        let region = std::env::var("AWS_REGION").expect("AWS_REGION");
        let mut all = vec![
            ("leaderElection.enabled", "true"),
            ("aws.region", region.as_str()),
            ("aws.endpointUrl", endpoint.as_str()),
            ("logLevel", "debug"),
        ];
        all.extend_from_slice(sets);
        let rendered = render(release, release_ns, &all);
        let deployment =
            rendered.iter().find(|o| kind(o) == "Deployment").cloned().expect("the chart renders a Deployment");
        let objects: Vec<_> = rendered.into_iter().filter(|o| RBAC_KINDS.contains(&kind(o))).collect();
        let service_account = objects
            .iter()
            .find(|o| kind(o) == "ServiceAccount")
            .map(|o| name(o).to_owned())
            .expect("the chart renders a ServiceAccount");
        for object in &objects {
            dynamic_api(admin, object)
                .patch(name(object), &PatchParams::apply(common::TEST_MANAGER).force(), &Patch::Apply(object))
                .await
                .unwrap_or_else(|e| panic!("apply {} {}: {e}", kind(object), name(object)));
        }
        Self { admin: admin.clone(), objects, release_ns: release_ns.to_owned(), service_account, deployment }
    }

    /// The kinds applied, sorted.
    fn kinds(&self) -> Vec<&str> {
        let mut kinds: Vec<_> = self.objects.iter().map(kind).collect();
        kinds.sort_unstable();
        kinds
    }

    /// A token of the chart's ServiceAccount, as the kubelet would project into the pod.
    async fn token(&self) -> String {
        let request: TokenRequest =
            serde_json::from_value(serde_json::json!({ "spec": { "audiences": [], "expirationSeconds": 3600 } }))
                .expect("token request literal");
        Api::<ServiceAccount>::namespaced(self.admin.clone(), &self.release_ns)
            .create_token_request(&self.service_account, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("TokenRequest for {}: {e}", self.service_account))
            .status
            .expect("token in status")
            .token
    }

    /// The rendered operator container.
    fn container(&self) -> &serde_json::Value {
        &self.deployment["spec"]["template"]["spec"]["containers"][0]
    }

    /// The container's arguments, with the metrics address moved to a free loopback port.
    fn args(&self) -> Vec<String> {
        let args: Vec<String> = self.container()["args"]
            .as_array()
            .expect("container args")
            .iter()
            .map(|a| a.as_str().expect("string arg").to_owned())
            .collect();
        assert!(args.iter().any(|a| a.starts_with("--metrics-address=")), "{args:?}");
        args.into_iter()
            .map(|a| if a.starts_with("--metrics-address=") { "--metrics-address=127.0.0.1:0".into() } else { a })
            .collect()
    }

    /// The container's environment as the kubelet would resolve it for `pod`.
    fn env(&self, pod: &str) -> Vec<(String, String)> {
        let mut env = Vec::new();
        for var in self.container()["env"].as_array().expect("container env") {
            let key = var["name"].as_str().expect("env name").to_owned();
            let value = if let Some(value) = var["value"].as_str() {
                value.to_owned()
            } else {
                match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                    Some("metadata.name") => pod.to_owned(),
                    Some("metadata.namespace") => self.release_ns.clone(),
                    other => panic!("env {key}: unexpected source {other:?}"),
                }
            };
            env.push((key, value));
        }
        env
    }

    /// Deletes the cluster-scoped objects (namespaced ones go with the test's namespaces,
    /// which the test bed never reclaims but never reuses either).
    async fn remove_cluster_objects(self) {
        for object in self.objects.iter().filter(|o| o["metadata"]["namespace"].is_null()) {
            let _ = dynamic_api(&self.admin, object).delete(name(object), &DeleteParams::default()).await;
        }
    }
}

/// A kubeconfig that authenticates with `token` only, and a client built from it.
struct Identity {
    dir: PathBuf,
    kubeconfig: PathBuf,
    client: Client,
}

impl Identity {
    async fn new(token: &str, tag: &str) -> Self {
        let server = std::env::var("MFA_TESTBED_APISERVER").expect("MFA_TESTBED_APISERVER (test bed env)");
        let ca = std::env::var("MFA_TESTBED_CA").expect("MFA_TESTBED_CA (test bed env)");
        let dir = std::env::temp_dir().join(format!("mfa-operator-rbac-{tag}"));
        std::fs::create_dir_all(&dir).expect("create kubeconfig dir");
        let kubeconfig = dir.join("kubeconfig");
        let text = serde_json::to_string_pretty(&serde_json::json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{ "name": "testbed", "cluster": { "server": server, "certificate-authority": ca } }],
            "users": [{ "name": "chart-service-account", "user": { "token": token } }],
            "contexts": [{ "name": "chart", "context": { "cluster": "testbed", "user": "chart-service-account" } }],
            "current-context": "chart",
        }))
        .expect("kubeconfig JSON");
        write_private(&kubeconfig, &text);
        let config = Kubeconfig::read_from(&kubeconfig).expect("read the ServiceAccount kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
            .await
            .expect("client config from the ServiceAccount kubeconfig");
        let client = Client::try_from(config).expect("ServiceAccount client");
        Self { dir, kubeconfig, client }
    }

    /// Who the apiserver says this identity is.
    async fn username(&self) -> String {
        let review: SelfSubjectReview =
            serde_json::from_value(serde_json::json!({})).expect("self subject review literal");
        let review = Api::<SelfSubjectReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .expect("SelfSubjectReview");
        review.status.and_then(|s| s.user_info).and_then(|u| u.username).expect("username in review")
    }
}

impl Drop for Identity {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write_private(path: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    file.write_all(text.as_bytes()).expect("write kubeconfig");
}

/// The operator process standing in for the chart's pod: the rendered arguments and
/// environment, the ServiceAccount's kubeconfig, and AWS keys standing in for IRSA.
/// Nothing else is inherited. Killed when dropped.
struct Pod {
    child: Child,
    log: PathBuf,
}

impl Pod {
    fn start(install: &Install, identity: &Identity, name: &str, extra_args: &[String]) -> Self {
        let dir = std::env::temp_dir().join("mfa-operator-test-logs");
        std::fs::create_dir_all(&dir).expect("create log dir");
        let log = dir.join(format!("rbac-{name}.log"));
        println!("operator log: {}", log.display());
        let file = std::fs::File::create(&log).expect("create operator log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_mfa-operator"));
        command.env_clear().args(install.args()).args(extra_args).envs(install.env(name));
        for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_EC2_METADATA_DISABLED", "PATH"] {
            if let Some(value) = std::env::var_os(key) {
                command.env(key, value);
            }
        }
        let child = command
            .env("KUBECONFIG", &identity.kubeconfig)
            .env("HOME", &identity.dir) // no ~/.aws of the developer
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log handle"))
            .stderr(file)
            .spawn()
            .expect("start mfa-operator");
        Self { child, log }
    }

    fn logs(&self) -> String {
        common::operator::read_log(&self.log)
    }

    /// Panics with the operator's log if it exited (a refused call it cannot live with).
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("the operator exited ({status}); its log:\n{}", self.logs());
        }
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts that the apiserver refused a call with 403 Forbidden.
fn assert_forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {
            println!("refused as expected: {what}: {}", status.message);
        }
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

/// The operator reads bindings; a stolen token must not grant itself an account.
async fn assert_cannot_write_bindings(sa: &Client) {
    let binding = serde_json::json!({
        "apiVersion": "iam.mfa-operator.dev/v1alpha1", "kind": "MfaAccountBinding",
        "metadata": { "name": common::unique("stolen") },
        "spec": { "accountId": "999999999999", "namespaces": { "selector": {} }, "users": { "pathPrefixes": ["/"] }, "allowEnroll": true },
    });
    let binding: mfa_operator::crd::MfaAccountBinding = serde_json::from_value(binding).expect("binding literal");
    assert_forbidden(
        Api::<mfa_operator::crd::MfaAccountBinding>::all(sa.clone()).create(&PostParams::default(), &binding).await,
        "create an MfaAccountBinding",
    );
}

fn user_state(enrollment: &MfaEnrollment, user: &str) -> Option<UserState> {
    enrollment.status.as_ref()?.users.iter().find(|u| u.name == user).map(|u| u.state)
}

/// Enrols one user from start to finish in `watch_ns` with the operator running as the
/// chart's ServiceAccount, and checks every kind of write the rules allow happened.
async fn full_enrollment(admin: &Client, pod: &mut Pod, watch_ns: &str, release_ns: &str, pod_name: &str) {
    let iam = iam::client().await;
    let tag = common::unique("rbac");
    let user = format!("{tag}-dana");
    iam::create_user(&iam, &user, &format!("/{tag}/")).await;
    let device_path = format!("/{tag}/");

    let enrollments: Api<MfaEnrollment> = Api::namespaced(admin.clone(), watch_ns);
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), watch_ns);
    let spec = serde_json::json!({ "mode": "Enroll", "users": { "names": [user] }, "device": { "path": device_path } });
    common::apply_enrollment(&enrollments, "chart", spec).await;

    let pending =
        common::wait_until(&enrollments, "chart", common::WAIT * 2, "user Pending", |o: Option<&MfaEnrollment>| {
            o.is_some_and(|e| user_state(e, &user) == Some(UserState::Pending))
        })
        .await;
    pod.assert_running();
    assert!(pending.finalizers().iter().any(|f| f.starts_with("iam.mfa-operator.dev")), "finalizer added by patch");
    let secret_name = pending
        .status
        .as_ref()
        .and_then(|s| s.users.iter().find(|u| u.name == user))
        .and_then(|u| u.seed_secret.clone())
        .expect("seed Secret named in status");
    let secret = secrets.get(&secret_name).await.expect("seed Secret created by the operator");
    let seed = secret
        .data
        .as_ref()
        .and_then(|d| d.get("seed"))
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        .expect("seed in the Secret");

    // Wrong codes first: the operator patches the Secret to clear them.
    let wrong = serde_json::json!({ "stringData": { "code1": "000000", "code2": "111111" } });
    secrets.patch(&secret_name, &PatchParams::default(), &Patch::Merge(&wrong)).await.expect("submit wrong codes");
    common::wait_until(&enrollments, "chart", common::WAIT * 2, "codes refused", |o: Option<&MfaEnrollment>| {
        o.and_then(|e| e.status.as_ref()?.users.iter().find(|u| u.name == user)?.message.clone())
            .is_some_and(|m| m.contains("refused submission 1 of 5"))
    })
    .await;
    let cleared = secrets.get(&secret_name).await.expect("seed Secret kept after refused codes");
    assert!(cleared.data.as_ref().is_some_and(|d| !d.contains_key("code1")), "refused codes cleared by the operator");

    let (code1, code2) = iam::codes_now(&seed);
    let codes = serde_json::json!({ "stringData": { "code1": code1, "code2": code2 } });
    secrets.patch(&secret_name, &PatchParams::default(), &Patch::Merge(&codes)).await.expect("submit codes");
    common::wait_until(&enrollments, "chart", common::WAIT * 2, "user Compliant", |o: Option<&MfaEnrollment>| {
        o.is_some_and(|e| user_state(e, &user) == Some(UserState::Compliant))
    })
    .await;
    pod.assert_running();

    assert_eq!(iam::devices_under(&iam, &device_path).await.len(), 1, "one device");
    assert!(
        iam::devices_under(&iam, &device_path).await.iter().all(|(_, owner)| owner.as_deref() == Some(user.as_str())),
        "the device is enabled for {user}"
    );
    assert!(secrets.get_opt(&secret_name).await.expect("get").is_none(), "seed Secret deleted by the operator");
    let reasons: Vec<String> = Api::<Event>::namespaced(admin.clone(), watch_ns)
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    for reason in ["DeviceCreated", "CodesRejected", "MfaEnabled"] {
        assert!(reasons.iter().any(|r| r == reason), "no {reason} Event: {reasons:?}");
    }
    let lease =
        Api::<Lease>::namespaced(admin.clone(), release_ns).get("mfa-operator").await.expect("the leader Lease");
    assert_eq!(lease.spec.and_then(|s| s.holder_identity).as_deref(), Some(pod_name), "the pod holds the Lease");

    // Deletion goes through the finalizer, removed by the operator with a patch.
    enrollments.delete("chart", &DeleteParams::default()).await.expect("delete enrollment");
    common::wait_for(&enrollments, "chart", common::WAIT, "enrollment deleted", |o: Option<&MfaEnrollment>| {
        o.is_none()
    })
    .await;
    pod.assert_running();
}

#[tokio::test]
async fn cluster_wide_chart_rbac_enrols_a_user_and_refuses_everything_else() {
    let admin = common::client().await;
    common::install_crd(&admin).await;
    let ns = common::namespace(&admin, "rbac-cluster").await;
    let release = common::unique("rbac");
    let install = Install::new(&admin, &release, &ns, &[]).await;
    assert_eq!(
        install.kinds(),
        [
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "ServiceAccount"
        ]
    );
    let identity = Identity::new(&install.token().await, &ns).await;
    assert_eq!(identity.username().await, format!("system:serviceaccount:{ns}:{release}-mfa-operator"));

    // Cluster-wide rights, but other tests share this test bed: watch only this namespace.
    let pod_name = format!("{release}-pod");
    let mut pod = Pod::start(&install, &identity, &pod_name, &[format!("--namespace={ns}")]);
    full_enrollment(&admin, &mut pod, &ns, &ns, &pod_name).await;

    let sa = identity.client.clone();
    assert_forbidden(
        Api::<ConfigMap>::namespaced(sa.clone(), &ns).list(&ListParams::default()).await,
        "list ConfigMaps",
    );
    assert_forbidden(
        Api::<Secret>::namespaced(sa.clone(), &ns).get("anything").await,
        "get one Secret by name (the operator only lists and watches)",
    );
    assert_forbidden(
        Api::<Secret>::namespaced(sa.clone(), &ns).get(&format!("{release}-mfa-operator-integrity-key-2")).await,
        "get a Secret in the release namespace other than the integrity key",
    );
    assert_forbidden(
        Api::<Lease>::namespaced(sa.clone(), &ns).delete("mfa-operator", &DeleteParams::default()).await,
        "delete the leader Lease",
    );
    assert_forbidden(
        Api::<Lease>::namespaced(sa.clone(), "default").get("mfa-operator").await,
        "read a Lease outside the release namespace",
    );
    assert_forbidden(
        Api::<MfaEnrollment>::namespaced(sa.clone(), &ns).delete("anything", &DeleteParams::default()).await,
        "delete an MfaEnrollment",
    );
    assert_cannot_write_bindings(&sa).await;

    drop(pod);
    install.remove_cluster_objects().await;
}

#[tokio::test]
async fn single_namespace_chart_rbac_enrols_a_user_and_refuses_other_namespaces() {
    let admin = common::client().await;
    common::install_crd(&admin).await;
    let release_ns = common::namespace(&admin, "rbac-release").await;
    let watch_ns = common::namespace(&admin, "rbac-watched").await;
    let release = common::unique("rbac");
    let install = Install::new(&admin, &release, &release_ns, &[("watchNamespace", &watch_ns)]).await;
    // Namespaced rights only, plus reading bindings and namespaces (the grants).
    assert_eq!(
        install.kinds(),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "RoleBinding",
            "ServiceAccount"
        ]
    );
    assert!(install.args().contains(&format!("--namespace={watch_ns}")), "{:?}", install.args());
    let identity = Identity::new(&install.token().await, &release_ns).await;

    // Exactly the chart's arguments: the operator watches watchNamespace and nothing else.
    let pod_name = format!("{release}-pod");
    let mut pod = Pod::start(&install, &identity, &pod_name, &[]);
    full_enrollment(&admin, &mut pod, &watch_ns, &release_ns, &pod_name).await;

    let sa = identity.client.clone();
    assert_forbidden(
        Api::<Secret>::namespaced(sa.clone(), &release_ns).list(&ListParams::default()).await,
        "list Secrets outside watchNamespace",
    );
    assert_forbidden(
        Api::<Secret>::namespaced(sa.clone(), &release_ns)
            .get(&format!("{release}-mfa-operator-integrity-key-2"))
            .await,
        "get a Secret in the release namespace other than the integrity key",
    );
    assert_forbidden(
        Api::<MfaEnrollment>::all(sa.clone()).list(&ListParams::default()).await,
        "list MfaEnrollments in every namespace",
    );
    assert_forbidden(
        Api::<ConfigMap>::namespaced(sa.clone(), &watch_ns).list(&ListParams::default()).await,
        "list ConfigMaps in watchNamespace",
    );
    assert_forbidden(
        Api::<Lease>::namespaced(sa.clone(), &watch_ns).get("mfa-operator").await,
        "read a Lease outside the release namespace",
    );
    // An unrelated namespace's Secrets, not even one by name through a field selector.
    let unrelated = common::namespace(&admin, "rbac-unrelated").await;
    common::put_secret(&admin, &unrelated, "db-password", "password", "hunter2").await;
    assert_forbidden(
        Api::<Secret>::namespaced(sa.clone(), &unrelated)
            .list(&ListParams::default().fields("metadata.name=db-password"))
            .await,
        "list one Secret of an unrelated namespace by field selector",
    );
    assert_forbidden(
        Api::<Secret>::namespaced(sa.clone(), &unrelated).list_metadata(&ListParams::default()).await,
        "list Secrets of an unrelated namespace as metadata",
    );
    assert_cannot_write_bindings(&sa).await;

    drop(pod);
    install.remove_cluster_objects().await;
}

#[tokio::test]
async fn several_namespaces_chart_rbac_serves_each_and_reads_no_other_secret() {
    let admin = common::client().await;
    common::install_crd(&admin).await;
    let release_ns = common::namespace(&admin, "rbac-several").await;
    let team_a = common::namespace(&admin, "rbac-team-a").await;
    let team_b = common::namespace(&admin, "rbac-team-b").await;
    let release = common::unique("rbac");
    let watched = format!("{{{team_a},{team_b}}}");
    let install = Install::new(&admin, &release, &release_ns, &[("watchNamespaces", &watched)]).await;
    // A Role per watched namespace; cluster-wide only reading enrollments and grants.
    assert_eq!(
        install.kinds(),
        [
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "Role",
            "Role",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "RoleBinding",
            "RoleBinding",
            "ServiceAccount"
        ]
    );
    assert!(install.args().contains(&format!("--namespace={team_a},{team_b}")), "{:?}", install.args());
    let identity = Identity::new(&install.token().await, &release_ns).await;
    let pod_name = format!("{release}-pod");
    let mut pod = Pod::start(&install, &identity, &pod_name, &[]);
    full_enrollment(&admin, &mut pod, &team_a, &release_ns, &pod_name).await;
    full_enrollment(&admin, &mut pod, &team_b, &release_ns, &pod_name).await;

    let sa = identity.client.clone();
    for (namespace, what) in [
        (&release_ns, "the release namespace"),
        (&common::namespace(&admin, "rbac-other").await, "an unrelated namespace"),
    ] {
        common::put_secret(&admin, namespace, "db-password", "password", "hunter2").await;
        assert_forbidden(
            Api::<Secret>::namespaced(sa.clone(), namespace)
                .list(&ListParams::default().fields("metadata.name=db-password"))
                .await,
            &format!("list a Secret of {what} by field selector"),
        );
    }
    assert_forbidden(
        Api::<Secret>::all(sa.clone()).list_metadata(&ListParams::default()).await,
        "list Secrets in every namespace",
    );
    assert_cannot_write_bindings(&sa).await;

    drop(pod);
    install.remove_cluster_objects().await;
}
