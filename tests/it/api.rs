//! The MfaEnrollment and MfaAccountBinding APIs against the real kube-apiserver: the
//! committed CRD is accepted and served, the examples are valid, and invalid specs
//! (enrollments without a binding or with the retired fields among them) are refused at
//! admission with a message that says what is wrong.

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
        "spec": { "accountRef": { "name": "default" }, "mode": "Report", "users": { "names": ["alice"] } }
    });
    let dynamic: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &enrollment_resource());
    let created = dynamic
        .patch("minimal", &PatchParams::apply(common::TEST_MANAGER), &Patch::Apply(&minimal))
        .await
        .expect("minimal enrollment accepted");
    let spec = &created.data["spec"];
    // The device path is the binding's now: nothing of the retired fields is filled in.
    assert_eq!(spec.get("device"), None, "no device defaulted into an enrollment: {spec}");
    assert_eq!(spec.get("aws"), None, "no aws defaulted into an enrollment: {spec}");
    assert_eq!(spec["pendingTTL"], "168h");
    assert_eq!(spec["resyncInterval"], "10m");
    assert_eq!(spec["users"]["consoleAccessOnly"], false);
    let typed = api.get("minimal").await.expect("get minimal");
    assert_eq!(typed.spec.mode, Mode::Report);
}

/// The refusal of an enrollment without `spec.accountRef`.
const NO_ACCOUNT_REF: &str = "spec.accountRef: name the MfaAccountBinding";
/// The refusals of the retired fields.
const AWS_MOVED: &str = "spec.aws moved to the MfaAccountBinding that spec.accountRef names";
const DEVICE_MOVED: &str = "spec.device moved to the MfaAccountBinding that spec.accountRef names";

/// (description, spec, text the apiserver's refusal must contain). Every spec but those
/// about the account reference names a binding, so that each is refused for what it says.
const INVALID_SPECS: &[(&str, &str, &str)] = &[
    (
        "user name with a space",
        r#"{"accountRef":{"name":"default"},"mode":"Enroll","users":{"names":["bad name"]}}"#,
        "spec.users.names[0]",
    ),
    (
        "user name of 65 characters",
        r#"{"accountRef":{"name":"default"},"mode":"Enroll","users":{"names":["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]}}"#,
        "may not be more than 64",
    ),
    (
        "user name with a slash",
        r#"{"accountRef":{"name":"default"},"mode":"Enroll","users":{"names":["a/b"]}}"#,
        "should match",
    ),
    ("empty selector", r#"{"accountRef":{"name":"default"},"mode":"Enroll","users":{}}"#, "at least one selector"),
    (
        "exclude without a selector",
        r#"{"accountRef":{"name":"default"},"mode":"Enroll","users":{"exclude":["bob"]}}"#,
        "at least one selector",
    ),
    (
        "name both selected and excluded",
        r#"{"accountRef":{"name":"default"},"mode":"Enroll","users":{"names":["a"],"exclude":["a"]}}"#,
        "cannot be in both names and exclude",
    ),
    (
        "duplicate names",
        r#"{"accountRef":{"name":"default"},"mode":"Enroll","users":{"names":["a","a"]}}"#,
        "Duplicate value",
    ),
    (
        "empty names list",
        r#"{"accountRef":{"name":"default"},"mode":"Enroll","users":{"names":[]}}"#,
        "at least 1 items",
    ),
    (
        "unknown mode",
        r#"{"accountRef":{"name":"default"},"mode":"Sometimes","users":{"names":["a"]}}"#,
        "supported values: \"Enroll\", \"Report\"",
    ),
    ("missing mode", r#"{"accountRef":{"name":"default"},"users":{"names":["a"]}}"#, "spec.mode: Required value"),
    (
        "negative pendingTTL",
        r#"{"accountRef":{"name":"default"},"mode":"Enroll","users":{"names":["a"]},"pendingTTL":"-5m"}"#,
        "spec.pendingTTL",
    ),
    (
        "garbage pendingTTL",
        r#"{"accountRef":{"name":"default"},"mode":"Enroll","users":{"names":["a"]},"pendingTTL":"soon"}"#,
        "spec.pendingTTL in body should match",
    ),
    (
        "pendingTTL too short",
        r#"{"accountRef":{"name":"default"},"mode":"Enroll","users":{"names":["a"]},"pendingTTL":"5s"}"#,
        "pendingTTL must be between 30s and 8760h",
    ),
    (
        "resyncInterval too long",
        r#"{"accountRef":{"name":"default"},"mode":"Enroll","users":{"names":["a"]},"resyncInterval":"99999h"}"#,
        "resyncInterval must be between 10s and 24h",
    ),
    (
        "fractional duration",
        r#"{"accountRef":{"name":"default"},"mode":"Enroll","users":{"names":["a"]},"resyncInterval":"1.5h"}"#,
        "spec.resyncInterval in body should match",
    ),
    (
        "path prefix without leading slash",
        r#"{"accountRef":{"name":"default"},"mode":"Enroll","users":{"pathPrefix":"eng/"}}"#,
        "spec.users.pathPrefix in body should match",
    ),
    (
        "group name with a space",
        r#"{"accountRef":{"name":"default"},"mode":"Enroll","users":{"groups":["dev ops"]}}"#,
        "spec.users.groups[0]",
    ),
    (
        "reserved tag key",
        r#"{"accountRef":{"name":"default"},"mode":"Enroll","users":{"tags":{"aws:team":"x"}}}"#,
        "not starting with aws:",
    ),
    (
        "empty tag map",
        r#"{"accountRef":{"name":"default"},"mode":"Enroll","users":{"tags":{}}}"#,
        "at least 1 properties",
    ),
    // The account reference: required, and a binding's name.
    ("no accountRef", r#"{"mode":"Enroll","users":{"names":["a"]}}"#, NO_ACCOUNT_REF),
    ("accountRef: null", r#"{"accountRef":null,"mode":"Enroll","users":{"names":["a"]}}"#, NO_ACCOUNT_REF),
    (
        "accountRef without a name",
        r#"{"accountRef":{},"mode":"Enroll","users":{"names":["a"]}}"#,
        "spec.accountRef.name: Required value",
    ),
    (
        "accountRef name that is not an object name",
        r#"{"accountRef":{"name":"Team_A"},"mode":"Enroll","users":{"names":["a"]}}"#,
        "spec.accountRef.name in body should match",
    ),
    // Retired fields: refused whatever they hold, with where they went; valid values too.
    (
        "retired device path (valid before)",
        r#"{"accountRef":{"name":"default"},"mode":"Enroll","users":{"names":["a"]},"device":{"path":"/mfa-operator/"}}"#,
        DEVICE_MOVED,
    ),
    (
        "retired device, empty",
        r#"{"accountRef":{"name":"default"},"mode":"Enroll","users":{"names":["a"]},"device":{}}"#,
        DEVICE_MOVED,
    ),
    (
        "retired device path at the root",
        r#"{"accountRef":{"name":"default"},"mode":"Enroll","users":{"names":["a"]},"device":{"path":"/"}}"#,
        DEVICE_MOVED,
    ),
    (
        "retired device path without leading slash",
        r#"{"accountRef":{"name":"default"},"mode":"Enroll","users":{"names":["a"]},"device":{"path":"mfa/"}}"#,
        DEVICE_MOVED,
    ),
    (
        "retired device path without trailing slash",
        r#"{"accountRef":{"name":"default"},"mode":"Enroll","users":{"names":["a"]},"device":{"path":"/mfa"}}"#,
        DEVICE_MOVED,
    ),
    (
        "retired aws role (valid before)",
        r#"{"accountRef":{"name":"default"},"mode":"Enroll","users":{"names":["a"]},"aws":{"roleArn":"arn:aws:iam::111122223333:role/x"}}"#,
        AWS_MOVED,
    ),
    (
        "retired aws, empty",
        r#"{"accountRef":{"name":"default"},"mode":"Enroll","users":{"names":["a"]},"aws":{}}"#,
        AWS_MOVED,
    ),
    (
        "retired aws externalId without roleArn",
        r#"{"accountRef":{"name":"default"},"mode":"Enroll","users":{"names":["a"]},"aws":{"externalId":"abc"}}"#,
        AWS_MOVED,
    ),
    (
        "retired aws role ARN with a short account",
        r#"{"accountRef":{"name":"default"},"mode":"Enroll","users":{"names":["a"]},"aws":{"roleArn":"arn:aws:iam::12:role/x"}}"#,
        AWS_MOVED,
    ),
    (
        "retired aws region that is not a region",
        r#"{"accountRef":{"name":"default"},"mode":"Enroll","users":{"names":["a"]},"aws":{"region":"Mars"}}"#,
        AWS_MOVED,
    ),
];

/// A binding the apiserver accepts; every case of [`INVALID_BINDINGS`] differs from it in
/// what it says only.
const VALID_BINDING: &str = r#"{"accountId":"111122223333","roleArn":"arn:aws:iam::111122223333:role/mfa-operator","externalIdSecretRef":{"name":"team-a-external-id","key":"externalId"},"namespaces":{"names":["team-a"]},"users":{"pathPrefixes":["/team-a/"]},"device":{"path":"/mfa-operator/team-a/"}}"#;

/// (description, binding spec, text the apiserver's refusal must contain)
const INVALID_BINDINGS: &[(&str, &str, &str)] = &[
    (
        "account id of 11 digits",
        r#"{"accountId":"11112222333","namespaces":{"names":["team-a"]},"users":{"pathPrefixes":["/team-a/"]}}"#,
        "spec.accountId in body should match '^[0-9]{12}$'",
    ),
    (
        "account id with a letter",
        r#"{"accountId":"11112222333a","namespaces":{"names":["team-a"]},"users":{"pathPrefixes":["/team-a/"]}}"#,
        "spec.accountId in body should match '^[0-9]{12}$'",
    ),
    (
        "account id as a number",
        r#"{"accountId":111122223333,"namespaces":{"names":["team-a"]},"users":{"pathPrefixes":["/team-a/"]}}"#,
        "spec.accountId in body must be of type string",
    ),
    (
        "no account id",
        r#"{"namespaces":{"names":["team-a"]},"users":{"pathPrefixes":["/team-a/"]}}"#,
        "spec.accountId: Required value",
    ),
    (
        "role in another account",
        r#"{"accountId":"111122223333","roleArn":"arn:aws:iam::444455556666:role/mfa-operator","namespaces":{"names":["team-a"]},"users":{"pathPrefixes":["/team-a/"]}}"#,
        "roleArn must be a role in accountId",
    ),
    (
        "externalIdSecretRef without roleArn",
        r#"{"accountId":"111122223333","externalIdSecretRef":{"name":"team-a-external-id","key":"externalId"},"namespaces":{"names":["team-a"]},"users":{"pathPrefixes":["/team-a/"]}}"#,
        "externalIdSecretRef is only used together with roleArn",
    ),
    (
        "namespaces with neither names nor selector",
        r#"{"accountId":"111122223333","namespaces":{},"users":{"pathPrefixes":["/team-a/"]}}"#,
        "namespaces: give names, a selector, or both",
    ),
    (
        "users with neither pathPrefixes nor groups",
        r#"{"accountId":"111122223333","namespaces":{"names":["team-a"]},"users":{"exclude":["breakglass"]}}"#,
        "users: give pathPrefixes, groups, or both",
    ),
    (
        "device path at the root",
        r#"{"accountId":"111122223333","namespaces":{"names":["team-a"]},"users":{"pathPrefixes":["/team-a/"]},"device":{"path":"/"}}"#,
        "must be a path dedicated to the operator",
    ),
    (
        "device path without trailing slash",
        r#"{"accountId":"111122223333","namespaces":{"names":["team-a"]},"users":{"pathPrefixes":["/team-a/"]},"device":{"path":"/mfa"}}"#,
        "spec.device.path in body should match",
    ),
    (
        "namespace name that is not a namespace name",
        r#"{"accountId":"111122223333","namespaces":{"names":["Team_A"]},"users":{"pathPrefixes":["/team-a/"]}}"#,
        "spec.namespaces.names[0] in body should match",
    ),
    (
        "path prefix without leading slash",
        r#"{"accountId":"111122223333","namespaces":{"names":["team-a"]},"users":{"pathPrefixes":["team-a/"]}}"#,
        "spec.users.pathPrefixes[0] in body should match",
    ),
    (
        "region that is not a region",
        r#"{"accountId":"111122223333","region":"Mars","namespaces":{"names":["team-a"]},"users":{"pathPrefixes":["/team-a/"]}}"#,
        "spec.region in body should match",
    ),
];

fn binding_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("iam.mfa-operator.dev", "v1alpha1", "MfaAccountBinding"))
}

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
            // A case that names a binding must be refused for what it says, not for that.
            Err(kube::Error::Api(status))
                if status.code == 422
                    && status.message.contains(expected)
                    && (*expected == NO_ACCOUNT_REF || !status.message.contains(NO_ACCOUNT_REF)) => {}
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

    // The bindings: a valid one is accepted (so each case below is refused for what it
    // says), then every invalid one is refused. Dry runs: nothing cluster-scoped is left
    // behind, and nothing refused-but-accepted could grant a namespace anything.
    let bindings: Api<DynamicObject> = Api::all_with(client.clone(), &binding_resource());
    let dry_run = PostParams { dry_run: true, ..PostParams::default() };
    let binding = |name: String, spec: &str| -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "iam.mfa-operator.dev/v1alpha1", "kind": "MfaAccountBinding",
            "metadata": { "name": name },
            "spec": serde_json::from_str::<serde_json::Value>(spec).expect("spec literal is JSON"),
        }))
        .expect("object literal")
    };
    bindings
        .create(&dry_run, &binding(format!("{ns}-valid"), VALID_BINDING))
        .await
        .unwrap_or_else(|e| panic!("the valid binding is refused: {e}"));
    let mut failures = Vec::new();
    for (i, (what, spec, expected)) in INVALID_BINDINGS.iter().enumerate() {
        match bindings.create(&dry_run, &binding(format!("{ns}-invalid-{i}"), spec)).await {
            Ok(_) => failures.push(format!("{what}: accepted, expected a refusal containing {expected:?}")),
            Err(kube::Error::Api(status)) if status.code == 422 && status.message.contains(expected) => {}
            Err(other) => failures.push(format!("{what}: expected 422 containing {expected:?}, got {other}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} invalid bindings misbehaved:\n{}",
        failures.len(),
        INVALID_BINDINGS.len(),
        failures.join("\n")
    );
}
