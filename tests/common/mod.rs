//! Shared harness of the integration tests: they run against the real test bed
//! (kube-apiserver + etcd + moto) that `tests/testbed/testbed up` starts, and fail
//! loudly when it is not there.

#![allow(dead_code)] // apiserver_restart uses only part of the harness

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};
use mfa_operator::crd::{MfaAccountBinding, MfaEnrollment};

/// Field manager of everything the tests write.
pub const TEST_MANAGER: &str = "mfa-operator-tests";
/// Upper bound for any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(30);

const HOW_TO_START: &str = "the test bed is not running or not in this environment.\n\
    Run the whole suite with `tests/run` (it starts and stops the test bed), or start it \
    by hand:\n    tests/testbed/testbed up && eval \"$(tests/testbed/testbed env)\"\n\
    and run `cargo test` again in that shell.";

/// Panics with instructions unless the test bed's environment is present.
pub fn require_testbed() {
    let missing: Vec<_> = ["MFA_TESTBED", "KUBECONFIG", "AWS_ENDPOINT_URL", "AWS_REGION"]
        .into_iter()
        .filter(|var| std::env::var_os(var).is_none())
        .collect();
    assert!(missing.is_empty(), "missing {missing:?}: {HOW_TO_START}");
}

/// A Kubernetes client for the test bed's admin.
pub async fn client() -> Client {
    require_testbed();
    Client::try_default().await.unwrap_or_else(|e| panic!("cannot build a client from KUBECONFIG: {e}\n{HOW_TO_START}"))
}

/// Where the operators the tests start keep their integrity key (shared by all of them,
/// as replicas of one operator share one key).
pub const KEY_NAMESPACE: &str = "mfa-operator-tests";

/// Creates a fresh namespace for one test (the test bed has no namespace controller, so
/// namespaces are never reclaimed; names are unique per run instead), and the operators'
/// own namespace if it is missing.
pub async fn namespace(client: &Client, test: &str) -> String {
    let own: Namespace = serde_json::from_value(serde_json::json!({ "metadata": { "name": KEY_NAMESPACE } }))
        .expect("namespace literal");
    match Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &own).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => panic!("create namespace {KEY_NAMESPACE}: {e}\n{HOW_TO_START}"),
    }
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").subsec_nanos();
    let name = format!("t-{test}-{}-{nanos:x}", std::process::id());
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({ "metadata": { "name": name } })).expect("namespace literal");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("create namespace {name}: {e}\n{HOW_TO_START}"));
    name
}

/// The committed CRD YAML of `plural` (the files docs/operations.md tells people to apply).
pub fn committed(plural: &str) -> CustomResourceDefinition {
    let path = format!("{}/crds/{plural}.iam.mfa-operator.dev.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

/// The committed MfaEnrollment CRD.
pub fn committed_crd() -> CustomResourceDefinition {
    committed("mfaenrollments")
}

/// The account the test bed's own credentials reach (moto's default account).
pub const ACCOUNT: &str = "123456789012";

/// Applies (server-side, forced) the enrollment `name` with `spec` through `api`. A spec
/// written in the retired form (`device` and `aws` in the enrollment, no `accountRef`)
/// is moved onto a binding for the enrollment's namespace first (see [`bind`]).
pub async fn apply_enrollment(api: &Api<MfaEnrollment>, name: &str, spec: serde_json::Value) -> MfaEnrollment {
    let namespace = api.namespace().expect("a namespaced Api").to_owned();
    let spec = bind(&api.clone().into_client(), &namespace, spec).await;
    let object = serde_json::json!({
        "apiVersion": "iam.mfa-operator.dev/v1alpha1", "kind": "MfaEnrollment",
        "metadata": { "name": name }, "spec": spec,
    });
    api.patch(name, &PatchParams::apply(TEST_MANAGER).force(), &Patch::Apply(&object))
        .await
        .unwrap_or_else(|e| panic!("apply enrollment {name}: {e}"))
}

/// Moves what `spec` says in the retired fields (`device.path`, `aws.roleArn`,
/// `aws.externalId`, `aws.region`) onto an `MfaAccountBinding` that serves `namespace`,
/// grants every user and allows Enroll, and names it in `spec.accountRef` — exactly the
/// migration docs/tenancy.md describes. The ExternalId goes into a Secret in the
/// operators' own namespace. A spec that names a binding already is left alone.
pub async fn bind(client: &Client, namespace: &str, mut spec: serde_json::Value) -> serde_json::Value {
    let Some(fields) = spec.as_object_mut() else { return spec };
    if fields.contains_key("accountRef") {
        return spec;
    }
    let device = fields.remove("device").unwrap_or_default();
    let aws = fields.remove("aws").unwrap_or_default();
    let role = aws["roleArn"].as_str();
    let account = role.and_then(|r| r.split(':').nth(4)).unwrap_or(ACCOUNT);
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&(namespace, device.to_string(), aws.to_string()), &mut hasher);
    let name = format!("{namespace}-{:x}", std::hash::Hasher::finish(&hasher) & 0xffff_ffff);
    let mut binding = serde_json::json!({
        "accountId": account,
        "namespaces": { "names": [namespace] },
        "users": { "pathPrefixes": ["/"] },
        "allowEnroll": true,
    });
    if let Some(path) = device["path"].as_str() {
        binding["device"] = serde_json::json!({ "path": path });
    }
    for field in ["roleArn", "region"] {
        if let Some(value) = aws.get(field) {
            binding[field] = value.clone();
        }
    }
    if let Some(external_id) = aws["externalId"].as_str() {
        let secret = format!("{name}-external-id");
        put_secret(client, KEY_NAMESPACE, &secret, "externalId", external_id).await;
        binding["externalIdSecretRef"] = serde_json::json!({ "name": secret, "key": "externalId" });
    }
    apply_binding(client, &name, binding).await;
    fields.insert("accountRef".into(), serde_json::json!({ "name": name }));
    spec
}

/// Applies (server-side, forced) the binding `name` with `spec`.
pub async fn apply_binding(client: &Client, name: &str, spec: serde_json::Value) -> MfaAccountBinding {
    let object = serde_json::json!({
        "apiVersion": "iam.mfa-operator.dev/v1alpha1", "kind": "MfaAccountBinding",
        "metadata": { "name": name }, "spec": spec,
    });
    Api::<MfaAccountBinding>::all(client.clone())
        .patch(name, &PatchParams::apply(TEST_MANAGER).force(), &Patch::Apply(&object))
        .await
        .unwrap_or_else(|e| panic!("apply binding {name}: {e}"))
}

/// Applies (server-side, forced) an Opaque Secret with one key.
pub async fn put_secret(client: &Client, namespace: &str, name: &str, key: &str, value: &str) {
    let object = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": { "name": name }, "stringData": { key: value },
    });
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), namespace)
        .patch(name, &PatchParams::apply(TEST_MANAGER).force(), &Patch::Apply(&object))
        .await
        .unwrap_or_else(|e| panic!("apply Secret {namespace}/{name}: {e}"));
}

/// Applies every committed CRD (idempotent), waits until the apiserver serves them, and
/// returns the MfaEnrollment one.
pub async fn install_crd(client: &Client) -> CustomResourceDefinition {
    install(client, committed("mfaaccountbindings")).await;
    install(client, committed_crd()).await
}

async fn install(client: &Client, crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let name = crd.name_any();
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    api.patch(&name, &PatchParams::apply(TEST_MANAGER).force(), &Patch::Apply(&crd))
        .await
        .unwrap_or_else(|e| panic!("apply CRD {name}: {e}"));
    let established = tokio::time::timeout(WAIT, await_condition(api.clone(), &name, conditions::is_crd_established()))
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not Established within {WAIT:?}"))
        .unwrap_or_else(|e| panic!("watch CRD {name}: {e}"));
    established.unwrap_or_else(|| panic!("CRD {name} disappeared"))
}

/// A unique IAM-safe name for users and groups a test creates in moto.
pub fn unique(prefix: &str) -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_nanos();
    format!("{prefix}-{:x}", nanos % 0xffff_ffff_ffff)
}

pub mod bed;
pub mod browser;
pub mod chart;
pub mod fault_proxy;
pub mod iam;
pub mod mail;
pub mod operator;
pub mod strict_iam;

use kube::runtime::wait::Condition;

/// Waits until `condition` holds for the object `name`, or panics after `timeout` with
/// what the object looked like last. Returns `None` when the condition accepted the
/// object's absence.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    what: &str,
    condition: impl Condition<K>,
) -> Option<K>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize + Send + 'static,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let condition = std::sync::Arc::new(condition);
    let outcome = loop {
        let check = condition.clone();
        let watch = await_condition(api.clone(), name, move |o: Option<&K>| check.matches_object(o));
        match tokio::time::timeout_at(deadline, watch).await {
            Ok(Ok(object)) => break Ok(object),
            // The test bed compacts etcd every 10 s, so a watch may start from a version
            // that is gone (410): watch again from a fresh list until the deadline.
            Ok(Err(e)) if tokio::time::Instant::now() < deadline => {
                eprintln!("watching {name} for {what}: {e}; watching again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Err(e)) => panic!("watching {name} for {what}: {e}"),
            Err(elapsed) => break Err(elapsed),
        }
    };
    match outcome {
        Ok(object) => object,
        Err(_) => {
            let last = api.get_opt(name).await.ok().flatten().map(|o| {
                let mut value = serde_json::to_value(&o).unwrap_or_default();
                if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                    meta.remove("managedFields");
                }
                if let Some(data) = value.get_mut("data").and_then(|d| d.as_object_mut()) {
                    data.clear(); // never print seeds
                }
                serde_json::to_string_pretty(&value).unwrap_or_default()
            });
            panic!(
                "timed out after {timeout:?} waiting for {what}; last seen: {}",
                last.unwrap_or_else(|| "absent".into())
            )
        }
    }
}

/// Like [`wait_for`], for a condition that only an existing object can meet.
pub async fn wait_until<K>(api: &Api<K>, name: &str, timeout: Duration, what: &str, condition: impl Condition<K>) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize + Send + 'static,
{
    wait_for(api, name, timeout, what, condition)
        .await
        .unwrap_or_else(|| panic!("{name} is absent after waiting for {what}"))
}
