//! The chart's ValidatingAdmissionPolicy, proven on the real apiserver: `helm template`
//! renders the chart with `watchNamespace` set to a fresh namespace (so the binding, and
//! with it the cluster-scoped policy, touches only this test's Secrets), the policy, its
//! binding and the operator's ServiceAccount and Role are applied, and then two
//! impersonated identities write Secrets:
//!
//! - the operator's ServiceAccount may create a seed Secret and change anything in it;
//! - `alice`, who may get/list/create/patch/update/delete every Secret there, may
//!   add, change and remove `code1`/`code2`, and write ordinary Secrets as she likes, but
//!   not create a seed Secret or a look-alike, nor change any other data key, a label,
//!   an annotation, the type or the ownerReferences of a seed Secret.

use crate::common;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use mfa_operator::crd::MfaEnrollment;
use serde_json::{Value, json};

use common::chart::{kind, render};
const SEED_TYPE: &str = "iam.mfa-operator.dev/mfa-seed";
const LABEL_ENROLLMENT: &str = "iam.mfa-operator.dev/enrollment";
const ANNOTATION_SERIAL: &str = "iam.mfa-operator.dev/serial-number";
/// What the test applies from the render: the policy, its binding, and the operator's
/// identity and rights in the watched namespace (for its writes to pass RBAC).
const APPLIED_KINDS: [&str; 5] =
    ["ServiceAccount", "Role", "RoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"];

/// The messages of the chart's rules (templates/admission-policy.yaml).
const FORGED: &str = "only the mfa-operator may create a seed Secret or make a Secret look like one: \
    type iam.mfa-operator.dev/mfa-seed, the labels iam.mfa-operator.dev/enrollment and \
    app.kubernetes.io/managed-by=mfa-operator, and names starting with mfa-seed- are reserved for it";
const FINALIZERS: &str = "only the mfa-operator may change the finalizers of a seed Secret";
const LABELS: &str = "only the mfa-operator may change the labels of a seed Secret";
const ANNOTATIONS: &str = "only the mfa-operator may change the annotations of a seed Secret";
const OWNERS: &str = "only the mfa-operator may change the ownerReferences of a seed Secret";
fn data_message(keys: &str) -> String {
    format!(
        "only the mfa-operator may change {keys} in a seed Secret: you may only add, change or remove code1 and code2"
    )
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

fn dynamic_api(client: &Client, object: &Value) -> Api<DynamicObject> {
    let api_version = object["apiVersion"].as_str().expect("apiVersion");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind(object)));
    match object["metadata"]["namespace"].as_str() {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// A client that acts as `user` (the test bed's admin may impersonate anyone).
async fn impersonating(user: &str) -> Client {
    let mut config = kube::Config::infer().await.expect("client config from KUBECONFIG");
    config.auth_info.impersonate = Some(user.to_owned());
    Client::try_from(config).expect("impersonating client")
}

/// Lets `alice` get, list, create, patch, update and delete every Secret in `namespace`:
/// namespace-wide Secret write access, as people who write codes commonly have. (Without
/// delete, OwnerReferencesPermissionEnforcement would refuse her ownerReference changes
/// before the policy sees them.)
async fn grant_alice(admin: &Client, namespace: &str) {
    let objects = [
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": { "name": "secret-writer", "namespace": namespace },
            "rules": [{ "apiGroups": [""], "resources": ["secrets"],
                        "verbs": ["get", "list", "create", "patch", "update", "delete"] }],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": { "name": "alice-secret-writer", "namespace": namespace },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "secret-writer" },
            "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice" }],
        }),
    ];
    for object in &objects {
        apply(admin, object).await;
    }
}

async fn apply(admin: &Client, object: &Value) {
    dynamic_api(admin, object)
        .patch(name(object), &PatchParams::apply(common::TEST_MANAGER).force(), &Patch::Apply(object))
        .await
        .unwrap_or_else(|e| panic!("apply {} {}: {e}", kind(object), name(object)));
}

/// Deletes the rendered cluster-scoped objects (the policy and its binding) when dropped,
/// also when the test fails: the test bed is shared. kubectl, because Drop cannot await.
struct ClusterScoped(Vec<String>);

impl ClusterScoped {
    fn of(objects: &[Value]) -> Self {
        let refs = objects
            .iter()
            .filter(|o| o["metadata"]["namespace"].is_null())
            .map(|o| format!("{}/{}", kind(o).to_lowercase(), name(o)))
            .collect();
        Self(refs)
    }
}

impl Drop for ClusterScoped {
    fn drop(&mut self) {
        let kubectl = std::env::var("MFA_TESTBED_KUBECTL").unwrap_or_else(|_| "kubectl".into());
        let deleted = Command::new(&kubectl).args(["delete", "--ignore-not-found"]).args(&self.0).output();
        match deleted {
            Ok(out) if out.status.success() => {}
            other => eprintln!("could not delete {:?}: {other:?}", self.0),
        }
    }
}

fn bytes(map: &[(&str, &[u8])]) -> BTreeMap<String, ByteString> {
    map.iter().map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec()))).collect()
}

/// A seed Secret as the operator writes it (src/controller/seed_secret.rs).
/// `blocks_owner_deletion`: the operator's ownerReference blocks the enrollment's
/// deletion, which OwnerReferencesPermissionEnforcement (on in the test bed) allows only
/// to those who may update the enrollment's finalizers; a forger leaves it out.
fn seed_secret(name: &str, enrollment: &MfaEnrollment, blocks_owner_deletion: bool) -> Secret {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": { "app.kubernetes.io/managed-by": "mfa-operator", LABEL_ENROLLMENT: enrollment.name_any() },
            "annotations": {
                "iam.mfa-operator.dev/user-name": "alice",
                ANNOTATION_SERIAL: "arn:aws:iam::123456789012:mfa/mfa-operator/alice",
                "iam.mfa-operator.dev/created-at": "2026-01-01T00:00:00Z",
            },
            "ownerReferences": [{
                "apiVersion": "iam.mfa-operator.dev/v1alpha1", "kind": "MfaEnrollment",
                "name": enrollment.name_any(), "uid": enrollment.uid().expect("enrollment uid"),
                "controller": true, "blockOwnerDeletion": blocks_owner_deletion,
            }],
        },
        "type": SEED_TYPE,
    }))
    .map(|mut secret: Secret| {
        secret.data = Some(bytes(&[
            ("seed", b"JBSWY3DPEHPK3PXP"),
            ("otpauth-uri", b"otpauth://totp/AWS:alice?secret=JBSWY3DPEHPK3PXP"),
            ("qr.png", b"\x89PNG\r\n\x1a\n"),
        ]));
        secret
    })
    .expect("seed Secret literal")
}

fn plain_secret(name: &str, labels: Value) -> Secret {
    serde_json::from_value(json!({
        "metadata": { "name": name, "labels": labels },
        "stringData": { "password": "hunter2" },
    }))
    .expect("Secret literal")
}

/// Asserts that the chart's policy refused the call with `message`.
fn assert_denied<T: Debug>(result: Result<T, kube::Error>, policy: &str, message: &str, what: &str) {
    // The apiserver's wording: `secrets "<name>" is forbidden: ` and then this.
    let expected = format!("ValidatingAdmissionPolicy '{policy}' with binding '{policy}' denied request: {message}");
    match result {
        Err(kube::Error::Api(status))
            if status.code == 403 && status.message.ends_with(&format!(" is forbidden: {expected}")) =>
        {
            println!("refused as expected: {what}");
        }
        other => panic!("{what}: expected 403 with\n  {expected}\ngot {other:?}"),
    }
}

fn assert_allowed<T>(result: Result<T, kube::Error>, what: &str) -> T {
    result.unwrap_or_else(|e| panic!("{what}: expected to be allowed, got {e}"))
}

/// Waits until the apiserver enforces the policy. Policies and bindings reach the
/// admission plugin through an informer, and alice's RoleBinding reaches the RBAC
/// authorizer the same way, so both take a moment after they are stored: alice tries
/// to create a seed Secret until the policy (not RBAC) refuses it.
async fn wait_until_enforced(admin: &Api<Secret>, alice: &Api<Secret>, policy: &str, enrollment: &MfaEnrollment) {
    let started = Instant::now();
    let probe = seed_secret("activation-probe", enrollment, false);
    loop {
        match alice.create(&PostParams::default(), &probe).await {
            Err(kube::Error::Api(status)) if status.code == 403 && status.message.contains(policy) => {
                println!("policy enforced {:?} after it was applied", started.elapsed());
                return;
            }
            // Not enforced yet: the create went through; remove it and try again.
            Ok(_) => {
                admin.delete("activation-probe", &DeleteParams::default()).await.expect("delete the probe");
            }
            // alice's RoleBinding is not in the authorizer's cache yet.
            Err(kube::Error::Api(status)) if status.code == 403 => {}
            Err(e) => panic!("probe create: {e}"),
        }
        assert!(started.elapsed() < common::WAIT, "the policy was not enforced within {:?}", common::WAIT);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn data_of(secret: &Secret) -> BTreeMap<String, String> {
    secret.data.iter().flatten().map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned())).collect()
}

#[tokio::test]
async fn only_the_operator_writes_seed_secrets_and_people_only_their_codes() {
    let admin = common::client().await;
    common::install_crd(&admin).await;
    let ns = common::namespace(&admin, "vap").await;
    let elsewhere = common::namespace(&admin, "vap-elsewhere").await;
    let release = common::unique("vap");

    // The policy is cluster-scoped and tests share the test bed: watchNamespace scopes the
    // binding to this test's namespace, and the unique release name keeps the names apart.
    let rendered = render(&release, &ns, &[("watchNamespace", &ns)]);
    let objects: Vec<_> = rendered.into_iter().filter(|o| APPLIED_KINDS.contains(&kind(o))).collect();
    let policy_object =
        objects.iter().find(|o| kind(o) == "ValidatingAdmissionPolicy").expect("the chart renders the policy");
    let policy = name(policy_object).to_owned();
    assert_eq!(policy, format!("{release}-mfa-operator-seed-secrets.{ns}"));
    let service_account =
        objects.iter().find(|o| kind(o) == "ServiceAccount").map(|o| name(o).to_owned()).expect("ServiceAccount");
    let operator_user = format!("system:serviceaccount:{ns}:{service_account}");
    assert_eq!(
        policy_object["spec"]["matchConditions"][0]["expression"],
        format!("request.userInfo.username != '{operator_user}'"),
        "the policy exempts exactly the chart's ServiceAccount"
    );
    let cluster_scoped = ClusterScoped::of(&objects);
    for object in &objects {
        apply(&admin, object).await;
    }
    grant_alice(&admin, &ns).await;
    grant_alice(&admin, &elsewhere).await;

    let enrollments: Api<MfaEnrollment> = Api::namespaced(admin.clone(), &ns);
    let enrollment =
        common::apply_enrollment(&enrollments, "team", json!({ "mode": "Report", "users": { "names": ["alice"] } }))
            .await;
    let admin_secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns);
    let operator: Api<Secret> = Api::namespaced(impersonating(&operator_user).await, &ns);
    let alice_client = impersonating("alice").await;
    let alice: Api<Secret> = Api::namespaced(alice_client.clone(), &ns);
    wait_until_enforced(&admin_secrets, &alice, &policy, &enrollment).await;
    let merge = |patch: Value| Patch::Merge(patch);
    let pp = PatchParams::default();

    // The operator creates the seed Secret (and may change anything in it, below).
    let seed_name = "mfa-seed-alice-0a1b2c3d";
    assert_allowed(
        operator.create(&PostParams::default(), &seed_secret(seed_name, &enrollment, true)).await,
        "the operator creates a seed Secret",
    );

    // alice writes her codes the way `kubectl mfa enroll` does (a merge patch of stringData,
    // folded into data before admission, at the resourceVersion she read), replaces one,
    // and removes both.
    let shown = assert_allowed(alice.get(seed_name).await, "alice reads the seed Secret");
    let codes = json!({
        "metadata": { "resourceVersion": shown.resource_version() },
        "stringData": { "code1": "123456", "code2": "654321" },
    });
    let written = assert_allowed(alice.patch(seed_name, &pp, &merge(codes)).await, "alice writes code1 and code2");
    assert_eq!(data_of(&written).get("code2").map(String::as_str), Some("654321"));
    let mut replaced = written.clone();
    replaced.data.get_or_insert_default().insert("code1".into(), ByteString(b"111111".to_vec()));
    assert_allowed(
        alice.replace(seed_name, &PostParams::default(), &replaced).await,
        "alice changes code1 with a full update (PUT), as kubectl edit does",
    );
    let cleared = assert_allowed(
        alice.patch(seed_name, &pp, &merge(json!({ "data": { "code1": null, "code2": null } }))).await,
        "alice removes code1 and code2",
    );
    assert_eq!(
        data_of(&cleared).into_keys().collect::<Vec<_>>(),
        ["otpauth-uri", "qr.png", "seed"],
        "only the codes are gone"
    );

    // Everything else in a seed Secret is the operator's.
    assert_denied(
        alice.patch(seed_name, &pp, &merge(json!({ "stringData": { "seed": "AAAAAAAAAAAAAAAA" } }))).await,
        &policy,
        &data_message("seed"),
        "alice changes the seed",
    );
    assert_denied(
        alice
            .patch(
                seed_name,
                &pp,
                &merge(json!({ "stringData": { "code1": "123456", "otpauth-uri": "otpauth://x", "extra": "1" } })),
            )
            .await,
        &policy,
        &data_message("otpauth-uri, extra"),
        "alice writes a code together with another key and a new key",
    );
    assert_denied(
        alice.patch(seed_name, &pp, &merge(json!({ "data": { "qr.png": null } }))).await,
        &policy,
        &data_message("qr.png"),
        "alice removes the QR code",
    );
    assert_denied(
        alice
            .patch(
                seed_name,
                &pp,
                &merge(json!({ "metadata": { "annotations": {
                    ANNOTATION_SERIAL: "arn:aws:iam::123456789012:mfa/attacker" } } })),
            )
            .await,
        &policy,
        ANNOTATIONS,
        "alice changes the serial annotation",
    );
    assert_denied(
        alice.patch(seed_name, &pp, &merge(json!({ "metadata": { "annotations": { "note": "hi" } } }))).await,
        &policy,
        ANNOTATIONS,
        "alice adds an annotation",
    );
    assert_denied(
        alice.patch(seed_name, &pp, &merge(json!({ "metadata": { "labels": { LABEL_ENROLLMENT: "other" } } }))).await,
        &policy,
        LABELS,
        "alice points the Secret at another enrollment",
    );
    assert_denied(
        alice
            .patch(
                seed_name,
                &pp,
                &merge(json!({ "metadata": { "labels": { "app.kubernetes.io/managed-by": null } } })),
            )
            .await,
        &policy,
        LABELS,
        "alice removes a label",
    );
    assert_denied(
        alice.patch(seed_name, &pp, &merge(json!({ "metadata": { "ownerReferences": null } }))).await,
        &policy,
        OWNERS,
        "alice removes the ownerReference",
    );
    assert_denied(
        alice.patch(seed_name, &pp, &merge(json!({ "metadata": { "finalizers": ["example.com/keep"] } }))).await,
        &policy,
        FINALIZERS,
        "alice adds a finalizer that would keep the seed after the operator deletes it",
    );
    // Secret.type is immutable: the apiserver's own validation answers before admission.
    match alice.patch(seed_name, &pp, &merge(json!({ "type": "Opaque" }))).await {
        Err(kube::Error::Api(status))
            if status.code == 422
                && status.message.contains("type: Invalid value")
                && status.message.contains("field is immutable") =>
        {
            println!("refused as expected: alice changes the type: {}", status.message);
        }
        other => panic!("alice changes the type: expected 422 field is immutable, got {other:?}"),
    }

    // No look-alikes: neither the type nor the enrollment label, on create or update.
    assert_denied(
        alice.create(&PostParams::default(), &seed_secret("mfa-seed-forged", &enrollment, false)).await,
        &policy,
        FORGED,
        "alice creates a Secret of the seed type",
    );
    assert_denied(
        alice.create(&PostParams::default(), &plain_secret("look-alike", json!({ LABEL_ENROLLMENT: "team" }))).await,
        &policy,
        FORGED,
        "alice creates an Opaque Secret with the enrollment label",
    );
    assert_denied(
        alice
            .create(
                &PostParams::default(),
                &plain_secret("claims-alike", json!({ "app.kubernetes.io/managed-by": "mfa-operator" })),
            )
            .await,
        &policy,
        FORGED,
        "alice creates an Opaque Secret with the operator's managed-by label",
    );
    assert_denied(
        alice.create(&PostParams::default(), &plain_secret("mfa-seed-bob-0123456789abcdef", json!({}))).await,
        &policy,
        FORGED,
        "alice squats the name of a seed Secret",
    );

    // Ordinary Secrets are alice's to write, labels and annotations included.
    assert_allowed(
        alice.create(&PostParams::default(), &plain_secret("app-config", json!({ "team": "a" }))).await,
        "alice creates an ordinary Secret",
    );
    assert_allowed(
        alice
            .patch(
                "app-config",
                &pp,
                &merge(json!({
                    "metadata": { "labels": { "team": "b" }, "annotations": { "note": "rotated" } },
                    "stringData": { "password": "correct horse", "seed": "not a seed Secret" },
                })),
            )
            .await,
        "alice edits an ordinary Secret",
    );
    assert_denied(
        alice.patch("app-config", &pp, &merge(json!({ "metadata": { "labels": { LABEL_ENROLLMENT: "team" } } }))).await,
        &policy,
        FORGED,
        "alice adds the enrollment label to an ordinary Secret",
    );

    // The operator may change everything, the seed and its bookkeeping included.
    let rewritten = assert_allowed(
        operator
            .patch(
                seed_name,
                &pp,
                &merge(json!({
                    "metadata": {
                        "labels": { LABEL_ENROLLMENT: "team", "extra": "x" },
                        "annotations": { ANNOTATION_SERIAL: "arn:aws:iam::123456789012:mfa/mfa-operator/alice2" },
                        "ownerReferences": null,
                    },
                    "stringData": { "seed": "KRSXG5CTMVRXEZLU", "code1": "000000" },
                    "data": { "qr.png": null },
                })),
            )
            .await,
        "the operator rewrites the seed Secret",
    );
    assert_eq!(data_of(&rewritten).get("seed").map(String::as_str), Some("KRSXG5CTMVRXEZLU"));

    // The binding covers watchNamespace only: Secrets elsewhere are not the policy's business.
    assert_allowed(
        Api::<Secret>::namespaced(alice_client, &elsewhere)
            .create(&PostParams::default(), &seed_secret("mfa-seed-elsewhere", &enrollment, false))
            .await,
        "alice creates a seed-type Secret outside watchNamespace",
    );

    // Namespaced objects stay with the test's never-reused namespaces.
    drop(cluster_scoped);
}
