//! Several AWS accounts from one operator: `spec.aws.roleArn` is assumed through STS and
//! each account has its own inventory and ownership. moto maps credentials issued for a
//! role to the role's account, so two accounts live in one moto server.

use crate::common;

use common::iam;
use common::operator::Operator;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use mfa_operator::crd::{MfaEnrollment, UserState};

const OTHER_ACCOUNT: &str = "111122223333";

/// A raw IAM client in the other account, through the same STS path the operator uses.
async fn other_account(role_arn: &str) -> aws_sdk_iam::Client {
    let base = mfa_operator::aws::load_sdk_config(None).await;
    let provider = aws_config::sts::AssumeRoleProvider::builder(role_arn)
        .session_name("multi-account-test")
        .external_id("mfa-test")
        .configure(&base)
        .build()
        .await;
    let config =
        base.into_builder().credentials_provider(aws_sdk_iam::config::SharedCredentialsProvider::new(provider)).build();
    aws_sdk_iam::Client::new(&config)
}

fn user_state(e: &MfaEnrollment, user: &str) -> Option<UserState> {
    e.status.as_ref()?.users.iter().find(|u| u.name == user).map(|u| u.state)
}

#[tokio::test]
async fn each_account_gets_its_own_device_for_a_user_of_the_same_name() {
    let client = common::client().await;
    common::install_crd(&client).await;
    let ns = common::namespace(&client, "accounts").await;
    let tag = common::unique("accounts");
    let path = format!("/{tag}/");
    let role_arn = format!("arn:aws:iam::{OTHER_ACCOUNT}:role/mfa-operator");
    let here = iam::client().await;
    let there = other_account(&role_arn).await;
    let user = format!("{tag}-sam");
    iam::create_user(&here, &user, "/").await;
    iam::create_user(&there, &user, "/").await;
    let _operator = Operator::start(&ns);

    let api: Api<MfaEnrollment> = Api::namespaced(client.clone(), &ns);
    for (name, aws) in [
        ("home", serde_json::Value::Null),
        ("away", serde_json::json!({ "roleArn": role_arn, "externalId": "mfa-test" })),
    ] {
        let mut spec =
            serde_json::json!({ "mode": "Enroll", "users": { "names": [&user] }, "device": { "path": &path } });
        if !aws.is_null() {
            spec["aws"] = aws;
        }
        common::apply_enrollment(&api, name, spec).await;
    }
    let pending = |e: Option<&MfaEnrollment>| e.is_some_and(|e| user_state(e, &user) == Some(UserState::Pending));
    let home = common::wait_until(&api, "home", common::WAIT, "home Pending", pending).await;
    let away = common::wait_until(&api, "away", common::WAIT, "away Pending", pending).await;

    // Different accounts never share ownership: each enrolls its own user.
    let serial = |e: &MfaEnrollment| {
        e.status.as_ref().and_then(|s| s.users.iter().find(|u| u.name == user)).and_then(|u| u.serial_number.clone())
    };
    let home_serial = serial(&home).expect("home serial");
    let away_serial = serial(&away).expect("away serial");
    assert!(home_serial.starts_with("arn:aws:iam::123456789012:mfa/"), "{home_serial}");
    assert!(away_serial.starts_with(&format!("arn:aws:iam::{OTHER_ACCOUNT}:mfa/")), "{away_serial}");
    assert_eq!(iam::devices_under(&here, &path).await.len(), 1);
    assert_eq!(iam::devices_under(&there, &path).await.len(), 1);

    // Enrolling in the other account leaves the home account's user pending.
    let secret_name =
        away.status.as_ref().and_then(|s| s.users.iter().find(|u| u.name == user)).and_then(|u| u.seed_secret.clone());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret = secrets.get(&secret_name.expect("seed Secret")).await.expect("get Secret");
    let seed =
        String::from_utf8(secret.data.as_ref().and_then(|d| d.get("seed")).expect("seed").0.clone()).expect("utf8");
    let (code1, code2) = iam::codes_now(&seed);
    let patch = serde_json::json!({ "stringData": { "code1": code1, "code2": code2 } });
    secrets
        .patch(&secret.metadata.name.clone().unwrap_or_default(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("submit");
    common::wait_until(&api, "away", common::WAIT, "away Compliant", |e: Option<&MfaEnrollment>| {
        e.is_some_and(|e| user_state(e, &user) == Some(UserState::Compliant))
    })
    .await;
    assert!(iam::devices_under(&there, &path).await.iter().any(|(_, u)| u.as_deref() == Some(user.as_str())));
    let home = api.get("home").await.expect("get home");
    assert_eq!(user_state(&home, &user), Some(UserState::Pending), "the home account's user is still pending");
}
