//! The MfaEnrollment API against the real kube-apiserver: the committed CRD is accepted
//! and served, the examples are valid, and invalid specs are refused at admission with
//! a message that says what is wrong.

use crate::common;

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use mfa_operator::crd::{MfaEnrollment, Mode};

fn enrollment_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("iam.mfa-operator.dev", "v1alpha1", "MfaEnrollment"))
}

#[tokio::test]
async fn committed_crd_matches_generator_and_is_established() {
    // The drift check also runs in CI; here it guards the test's own input.
    let generated = serde_yaml::to_string(&mfa_operator::crd::crd()).expect("serialize CRD");
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/mfaenrollments.iam.mfa-operator.dev.yaml"))
            .expect("read committed CRD");
    assert_eq!(
        generated, committed,
        "crds/ is stale: run `cargo run --bin crdgen > crds/mfaenrollments.iam.mfa-operator.dev.yaml`"
    );

    let client = common::client().await;
    let crd = common::install_crd(&client).await;
    let names = crd.status.and_then(|s| s.accepted_names).expect("accepted names");
    assert_eq!(names.kind, "MfaEnrollment");
    assert_eq!(names.short_names.as_deref(), Some(&["mfae".to_owned()][..]));
}

#[tokio::test]
async fn every_example_is_accepted_and_defaults_are_filled_in() {
    let client = common::client().await;
    common::install_crd(&client).await;
    let ns = common::namespace(&client, "examples").await;
    let api: Api<MfaEnrollment> = Api::namespaced(client.clone(), &ns);

    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).expect("read deploy/examples") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read example");
        let example: MfaEnrollment =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
        let created = api
            .create(&PostParams::default(), &example)
            .await
            .unwrap_or_else(|e| panic!("{} rejected by the apiserver: {e}", path.display()));
        assert!(created.spec.account_ref.is_some(), "{} names a binding", path.display());
        count += 1;
    }
    assert!(count >= 4, "expected at least 4 examples, found {count}");

    // Defaults are applied by the apiserver, so every client sees the same values.
    let minimal = serde_json::json!({
        "apiVersion": "iam.mfa-operator.dev/v1alpha1", "kind": "MfaEnrollment",
        "metadata": { "name": "minimal" },
        "spec": { "mode": "Report", "users": { "names": ["alice"] } }
    });
    let dynamic: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &enrollment_resource());
    let created = dynamic
        .patch("minimal", &PatchParams::apply(common::TEST_MANAGER), &Patch::Apply(&minimal))
        .await
        .expect("minimal enrollment accepted");
    let spec = &created.data["spec"];
    assert_eq!(spec["device"]["path"], "/mfa-operator/");
    assert_eq!(spec["pendingTTL"], "168h");
    assert_eq!(spec["resyncInterval"], "10m");
    assert_eq!(spec["users"]["consoleAccessOnly"], false);
    let typed = api.get("minimal").await.expect("get minimal");
    assert_eq!(typed.spec.mode, Mode::Report);
}

/// (description, spec, text the apiserver's refusal must contain)
const INVALID_SPECS: &[(&str, &str, &str)] = &[
    ("user name with a space", r#"{"mode":"Enroll","users":{"names":["bad name"]}}"#, "spec.users.names[0]"),
    (
        "user name of 65 characters",
        r#"{"mode":"Enroll","users":{"names":["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]}}"#,
        "may not be more than 64",
    ),
    ("user name with a slash", r#"{"mode":"Enroll","users":{"names":["a/b"]}}"#, "should match"),
    ("empty selector", r#"{"mode":"Enroll","users":{}}"#, "at least one selector"),
    ("exclude without a selector", r#"{"mode":"Enroll","users":{"exclude":["bob"]}}"#, "at least one selector"),
    (
        "name both selected and excluded",
        r#"{"mode":"Enroll","users":{"names":["a"],"exclude":["a"]}}"#,
        "cannot be in both names and exclude",
    ),
    ("duplicate names", r#"{"mode":"Enroll","users":{"names":["a","a"]}}"#, "Duplicate value"),
    ("empty names list", r#"{"mode":"Enroll","users":{"names":[]}}"#, "at least 1 items"),
    ("unknown mode", r#"{"mode":"Sometimes","users":{"names":["a"]}}"#, "supported values: \"Enroll\", \"Report\""),
    ("missing mode", r#"{"users":{"names":["a"]}}"#, "spec.mode: Required value"),
    ("negative pendingTTL", r#"{"mode":"Enroll","users":{"names":["a"]},"pendingTTL":"-5m"}"#, "spec.pendingTTL"),
    (
        "garbage pendingTTL",
        r#"{"mode":"Enroll","users":{"names":["a"]},"pendingTTL":"soon"}"#,
        "spec.pendingTTL in body should match",
    ),
    (
        "pendingTTL too short",
        r#"{"mode":"Enroll","users":{"names":["a"]},"pendingTTL":"5s"}"#,
        "pendingTTL must be between 30s and 8760h",
    ),
    (
        "resyncInterval too long",
        r#"{"mode":"Enroll","users":{"names":["a"]},"resyncInterval":"99999h"}"#,
        "resyncInterval must be between 10s and 24h",
    ),
    (
        "fractional duration",
        r#"{"mode":"Enroll","users":{"names":["a"]},"resyncInterval":"1.5h"}"#,
        "spec.resyncInterval in body should match",
    ),
    (
        "device path at the root",
        r#"{"mode":"Enroll","users":{"names":["a"]},"device":{"path":"/"}}"#,
        "must be a path dedicated to the operator",
    ),
    (
        "device path without leading slash",
        r#"{"mode":"Enroll","users":{"names":["a"]},"device":{"path":"mfa/"}}"#,
        "spec.device.path in body should match",
    ),
    (
        "device path without trailing slash",
        r#"{"mode":"Enroll","users":{"names":["a"]},"device":{"path":"/mfa"}}"#,
        "spec.device.path in body should match",
    ),
    (
        "path prefix without leading slash",
        r#"{"mode":"Enroll","users":{"pathPrefix":"eng/"}}"#,
        "spec.users.pathPrefix in body should match",
    ),
    ("group name with a space", r#"{"mode":"Enroll","users":{"groups":["dev ops"]}}"#, "spec.users.groups[0]"),
    ("reserved tag key", r#"{"mode":"Enroll","users":{"tags":{"aws:team":"x"}}}"#, "not starting with aws:"),
    ("empty tag map", r#"{"mode":"Enroll","users":{"tags":{}}}"#, "at least 1 properties"),
    (
        "externalId without roleArn",
        r#"{"mode":"Enroll","users":{"names":["a"]},"aws":{"externalId":"abc"}}"#,
        "only used together with aws.roleArn",
    ),
    (
        "role ARN with a short account",
        r#"{"mode":"Enroll","users":{"names":["a"]},"aws":{"roleArn":"arn:aws:iam::12:role/x"}}"#,
        "spec.aws.roleArn in body should match",
    ),
    (
        "region that is not a region",
        r#"{"mode":"Enroll","users":{"names":["a"]},"aws":{"region":"Mars"}}"#,
        "spec.aws.region in body should match",
    ),
];

#[tokio::test]
async fn invalid_specs_are_refused_with_a_clear_message() {
    let client = common::client().await;
    common::install_crd(&client).await;
    let ns = common::namespace(&client, "invalid").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &enrollment_resource());

    let mut failures = Vec::new();
    for (i, (what, spec, expected)) in INVALID_SPECS.iter().enumerate() {
        let object: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "iam.mfa-operator.dev/v1alpha1", "kind": "MfaEnrollment",
            "metadata": { "name": format!("invalid-{i}") },
            "spec": serde_json::from_str::<serde_json::Value>(spec).expect("spec literal is JSON"),
        }))
        .expect("object literal");
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => failures.push(format!("{what}: accepted, expected a refusal containing {expected:?}")),
            Err(kube::Error::Api(status)) if status.code == 422 && status.message.contains(expected) => {}
            Err(other) => failures.push(format!("{what}: expected 422 containing {expected:?}, got {other}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} invalid specs misbehaved:\n{}",
        failures.len(),
        INVALID_SPECS.len(),
        failures.join("\n")
    );
}
