//! Many teams, one operator: an `MfaAccountBinding` decides which namespaces reach which
//! account, through which credentials, for which users, and whether Enroll is allowed.
//! Each test plays a tenant who writes whatever an `MfaEnrollment` lets them write and
//! checks that nothing outside the grant is selected, created or reached.

use crate::common;

use common::bed::{Bed, condition, is_true, state};
use common::iam;
use common::operator::Operator;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use mfa_operator::crd::{MfaEnrollment, UserState};
use serde_json::json;

/// Waits until `name` is Stalled with reason NotGranted; returns the message.
async fn refused(bed: &Bed, name: &str) -> String {
    let e = bed.wait(name, "Stalled (NotGranted)", |e| is_true(e, "Stalled")).await;
    let (_, reason, message) = condition(&e, "Stalled").expect("Stalled");
    assert_eq!(reason, "NotGranted", "{name}: {message}");
    assert!(!is_true(&e, "Ready"), "{name} is not Ready while refused");
    message
}

/// Waits until the binding `name` has a `Ready` condition with `status`; returns its message.
async fn binding_ready(bed: &Bed, name: &str, status: &str) -> String {
    let bindings: Api<mfa_operator::crd::MfaAccountBinding> = Api::all(bed.client.clone());
    let ready = |b: &mfa_operator::crd::MfaAccountBinding| {
        b.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Ready").cloned()
    };
    let what = format!("binding {name} Ready={status}");
    let found =
        common::wait_until(&bindings, name, common::WAIT, &what, |b: Option<&mfa_operator::crd::MfaAccountBinding>| {
            b.and_then(ready).is_some_and(|c| c.status == status)
        })
        .await;
    ready(&found).map(|c| c.message).unwrap_or_default()
}

fn names(e: &MfaEnrollment) -> Vec<String> {
    e.status.iter().flat_map(|s| s.users.iter().map(|u| u.name.clone())).collect()
}

#[tokio::test]
async fn a_tenant_cannot_select_beyond_the_users_the_binding_grants() {
    let bed = Bed::new("grant-users").await;
    let team = format!("/{}/team-a/", bed.tag);
    let other = format!("/{}/other/", bed.tag);
    let [alice, robot, breakglass, mallory] =
        [bed.user("alice"), bed.user("robot"), bed.user("breakglass"), bed.user("mallory")];
    for user in [&alice, &robot, &breakglass] {
        iam::create_user(&bed.iam, user, &team).await;
    }
    iam::create_user(&bed.iam, &mallory, &other).await;
    iam::tag_user(&bed.iam, &robot, "iam.mfa-operator.dev/exclude", "true").await;
    let binding = bed
        .binding(
            "team-a",
            json!({ "users": { "pathPrefixes": [&team], "exclude": [&breakglass] }, "allowEnroll": true }),
        )
        .await;
    let _operator = Operator::start(&bed.ns);
    let account_ref = json!({ "name": &binding });

    // The whole account: refused before any AWS call, naming what the binding allows.
    bed.apply("everyone", json!({ "mode": "Enroll", "accountRef": account_ref, "users": { "pathPrefix": "/" } })).await;
    // A user elsewhere, by name, and by a tag that reaches beyond the grant.
    bed.apply("named", json!({ "mode": "Enroll", "accountRef": account_ref, "users": { "names": [&mallory] } })).await;
    iam::tag_user(&bed.iam, &mallory, "team", &bed.tag).await;
    iam::tag_user(&bed.iam, &alice, "team", &bed.tag).await;
    bed.apply(
        "tagged",
        json!({ "mode": "Enroll", "accountRef": account_ref, "users": { "tags": { "team": &bed.tag } } }),
    )
    .await;
    // A break-glass user, by name.
    bed.apply(
        "break-glass",
        json!({ "mode": "Enroll", "accountRef": account_ref, "users": { "names": [&breakglass] } }),
    )
    .await;
    // The granted path: excluded users (by name or by tag) are silently left out.
    bed.apply("team", json!({ "mode": "Enroll", "accountRef": account_ref, "users": { "pathPrefix": &team } })).await;

    let message = refused(&bed, "everyone").await;
    assert_eq!(
        message,
        format!("spec.users.pathPrefix / is outside what MfaAccountBinding {binding} allows (paths {team})")
    );
    let message = refused(&bed, "named").await;
    assert!(message.starts_with(&format!("spec.users selects {mallory} outside")), "{message}");
    let message = refused(&bed, "tagged").await;
    assert!(message.contains(&mallory) && !message.contains(&alice), "only the outsider is named: {message}");
    let message = refused(&bed, "break-glass").await;
    assert!(message.contains(&format!("excludes {breakglass}")), "{message}");

    let team = bed.wait("team", "Ready", |e| is_true(e, "Ready")).await;
    assert_eq!(names(&team), vec![alice.clone()], "excluded users are not selected");
    assert_eq!(state(&team, &alice), Some(UserState::Pending));
    // One device, for the one granted user: the refused enrollments created nothing.
    let devices = iam::devices_under(&bed.iam, &bed.device_path).await;
    assert_eq!(devices.len(), 1, "{devices:?}");
    assert!(devices[0].0.ends_with(&format!("/{alice}")), "{devices:?}");
    let reasons = bed.event_reasons("everyone").await;
    assert!(reasons.iter().any(|r| r == "NotGranted"), "{reasons:?}");
}

#[tokio::test]
async fn a_binding_decides_the_namespaces_and_whether_the_operator_may_write() {
    let bed = Bed::new("grant-scope").await;
    let users = bed.users(&["carol"]).await;
    let path = format!("/{}/", bed.tag);
    let report_only = bed.binding("report-only", json!({ "users": { "pathPrefixes": [&path] } })).await;
    let elsewhere = bed
        .binding(
            "elsewhere",
            json!({ "namespaces": { "names": ["some-other-namespace"] }, "users": { "pathPrefixes": ["/"] }, "allowEnroll": true }),
        )
        .await;
    let _operator = Operator::start(&bed.ns);

    let selector = json!({ "names": &users });
    bed.apply("enroll", json!({ "mode": "Enroll", "accountRef": { "name": &report_only }, "users": selector })).await;
    bed.apply("report", json!({ "mode": "Report", "accountRef": { "name": &report_only }, "users": selector })).await;
    bed.apply("foreign", json!({ "mode": "Report", "accountRef": { "name": &elsewhere }, "users": selector })).await;
    bed.apply(
        "missing",
        json!({ "mode": "Report", "accountRef": { "name": format!("{}-later", bed.tag) }, "users": selector }),
    )
    .await;

    let message = refused(&bed, "enroll").await;
    assert_eq!(message, format!("MfaAccountBinding {report_only} only allows mode Report (allowEnroll is not set)"));
    let message = refused(&bed, "foreign").await;
    assert_eq!(message, format!("MfaAccountBinding {elsewhere} does not serve namespace {}", bed.ns));
    let message = refused(&bed, "missing").await;
    assert_eq!(message, format!("MfaAccountBinding {}-later does not exist", bed.tag));
    let report = bed.wait("report", "Ready", |e| is_true(e, "Ready")).await;
    assert_eq!(state(&report, &users[0]), Some(UserState::Missing));
    assert!(iam::devices_under(&bed.iam, &bed.device_path).await.is_empty(), "a Report-only grant writes nothing");

    // The platform team grants it: the binding's creation alone reconciles the enrollment.
    bed.binding("later", json!({ "users": { "pathPrefixes": [&path] } })).await;
    let granted = bed.wait("missing", "Ready once the binding exists", |e| is_true(e, "Ready")).await;
    assert_eq!(state(&granted, &users[0]), Some(UserState::Missing));
}

#[tokio::test]
async fn a_binding_whose_credentials_reach_another_account_is_refused() {
    let bed = Bed::new("grant-account").await;
    let users = bed.users(&["dave"]).await;
    // The operator's own credentials reach the test bed's account, not this one.
    let forged = bed
        .binding(
            "forged",
            json!({ "accountId": "111122223333", "users": { "pathPrefixes": ["/"] }, "allowEnroll": true }),
        )
        .await;
    let _operator = Operator::start(&bed.ns);
    bed.apply("forged", json!({ "mode": "Enroll", "accountRef": { "name": &forged }, "users": { "names": &users } }))
        .await;
    let message = refused(&bed, "forged").await;
    assert_eq!(
        message,
        format!(
            "MfaAccountBinding {forged}: the binding declares account 111122223333, but its credentials reach account {}",
            common::ACCOUNT
        )
    );
    assert!(iam::devices_under(&bed.iam, &bed.device_path).await.is_empty());
    // The platform team sees it on the binding itself.
    let message = binding_ready(&bed, &forged, "False").await;
    assert!(message.contains("declares account 111122223333, but its credentials reach account"), "{message}");
}

#[tokio::test]
async fn one_account_reached_two_ways_is_one_account() {
    let bed = Bed::new("grant-identity").await;
    let users = bed.users(&["erin"]).await;
    // The same account, once with the operator's own credentials and once through a role
    // in it, in another region: still one account, one owner, one device.
    let own = bed.binding("own", json!({ "users": { "pathPrefixes": ["/"] }, "allowEnroll": true })).await;
    let role = format!("arn:aws:iam::{}:role/mfa-operator", common::ACCOUNT);
    let assumed = bed
        .binding(
            "assumed",
            json!({ "roleArn": role, "region": "eu-west-1", "users": { "pathPrefixes": ["/"] }, "allowEnroll": true }),
        )
        .await;
    let _operator = Operator::start(&bed.ns);
    bed.apply("first", json!({ "mode": "Enroll", "accountRef": { "name": &own }, "users": { "names": &users } })).await;
    let first = bed.wait("first", "Pending", |e| state(e, &users[0]) == Some(UserState::Pending)).await;
    bed.apply("second", json!({ "mode": "Enroll", "accountRef": { "name": &assumed }, "users": { "names": &users } }))
        .await;
    let second = bed.wait("second", "Ready", |e| is_true(e, "Ready")).await;
    let message = common::bed::user_status(&second, &users[0]).and_then(|u| u.message.clone()).unwrap_or_default();
    assert!(message.contains("handled by"), "the older enrollment owns the user: {message}");
    assert_eq!(iam::devices_under(&bed.iam, &bed.device_path).await.len(), 1);
    assert!(common::bed::user_status(&first, &users[0]).and_then(|u| u.seed_secret.clone()).is_some());
    for binding in [&own, &assumed] {
        let message = binding_ready(&bed, binding, "True").await;
        assert_eq!(message, format!("the credentials reach account {}", common::ACCOUNT));
    }
}

#[tokio::test]
async fn a_tenant_cannot_choose_the_account_role_or_external_id_at_admission() {
    let client = common::client().await;
    common::install_crd(&client).await;
    let ns = common::namespace(&client, "grant-admission").await;
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &kube::api::ApiResource::erase::<MfaEnrollment>(&()));
    let users = json!({ "names": ["alice"] });
    for (what, spec, expected) in [
        ("no binding", json!({ "mode": "Report", "users": users }), "spec.accountRef: name the MfaAccountBinding"),
        (
            "a role and ExternalId of the tenant's choosing",
            json!({ "mode": "Enroll", "users": users, "accountRef": { "name": "team-a" },
                    "aws": { "roleArn": "arn:aws:iam::999999999999:role/admin", "externalId": "guessed" } }),
            "spec.aws moved to the MfaAccountBinding",
        ),
        (
            "a region to sidestep an owner",
            json!({ "mode": "Enroll", "users": users, "accountRef": { "name": "team-a" }, "aws": { "region": "eu-west-1" } }),
            "spec.aws moved to the MfaAccountBinding",
        ),
        (
            "a device path of the tenant's choosing",
            json!({ "mode": "Enroll", "users": users, "accountRef": { "name": "team-a" }, "device": { "path": "/other/" } }),
            "spec.device moved to the MfaAccountBinding",
        ),
    ] {
        let object = json!({
            "apiVersion": "iam.mfa-operator.dev/v1alpha1", "kind": "MfaEnrollment",
            "metadata": { "name": "tenant" }, "spec": spec,
        });
        let refused = api.patch("tenant", &PatchParams::apply(common::TEST_MANAGER), &Patch::Apply(&object)).await;
        let error = refused.expect_err(what).to_string();
        assert!(error.contains(expected), "{what}: {error}");
    }

    // A binding's role must be in the account it declares.
    let bindings: Api<DynamicObject> =
        Api::all_with(client.clone(), &kube::api::ApiResource::erase::<mfa_operator::crd::MfaAccountBinding>(&()));
    let object = json!({
        "apiVersion": "iam.mfa-operator.dev/v1alpha1", "kind": "MfaAccountBinding",
        "metadata": { "name": format!("{ns}-mismatch") },
        "spec": { "accountId": "123456789012", "roleArn": "arn:aws:iam::999999999999:role/x",
                  "namespaces": { "names": [&ns] }, "users": { "pathPrefixes": ["/"] } },
    });
    let refused = bindings
        .patch(&format!("{ns}-mismatch"), &PatchParams::apply(common::TEST_MANAGER), &Patch::Apply(&object))
        .await;
    let error = refused.expect_err("role in another account").to_string();
    assert!(error.contains("roleArn must be a role in accountId"), "{error}");
}

#[tokio::test]
async fn an_enrollment_whose_binding_no_longer_reaches_its_devices_can_still_be_deleted() {
    let bed = Bed::new("grant-cleanup").await;
    let users = bed.users(&["fay", "gus"]).await;
    let own = bed.binding("own", json!({ "users": { "pathPrefixes": ["/"] }, "allowEnroll": true })).await;
    let elsewhere = bed
        .binding(
            "elsewhere",
            json!({ "accountId": "111122223333", "users": { "pathPrefixes": ["/"] }, "allowEnroll": true }),
        )
        .await;
    let _operator = Operator::start(&bed.ns);
    for (name, user) in [("moved", &users[0]), ("orphaned", &users[1])] {
        bed.apply(name, json!({ "mode": "Enroll", "accountRef": { "name": &own }, "users": { "names": [user] } }))
            .await;
        bed.wait(name, "Pending", |e| state(e, user) == Some(UserState::Pending)).await;
    }
    // The tenant points one enrollment at a binding of another account, and the platform
    // team deletes the binding of the other: neither may keep them from being deleted,
    // nor make the operator touch a device through the wrong binding.
    bed.apply(
        "moved",
        json!({ "mode": "Enroll", "accountRef": { "name": &elsewhere }, "users": { "names": [&users[0]] } }),
    )
    .await;
    kube::api::Api::<mfa_operator::crd::MfaAccountBinding>::all(bed.client.clone())
        .delete(&format!("{}-own", bed.tag), &Default::default())
        .await
        .expect("delete the binding");
    for name in ["moved", "orphaned"] {
        bed.enrollments.delete(name, &Default::default()).await.expect("delete the enrollment");
        common::wait_for(
            &bed.enrollments,
            name,
            common::WAIT,
            "the enrollment to be gone",
            |e: Option<&MfaEnrollment>| e.is_none(),
        )
        .await;
        let reasons = bed.event_reasons(name).await;
        assert!(reasons.iter().any(|r| r == "NotGranted"), "{name}: a Warning says the devices stay: {reasons:?}");
    }
    let secrets = bed.secrets.list(&Default::default()).await.expect("list Secrets");
    assert!(secrets.items.is_empty(), "the seed Secrets are deleted: {:?}", secrets.items.len());
    // Untouched: both pending devices are still in IAM, unassigned.
    let devices = iam::devices_under(&bed.iam, &bed.device_path).await;
    assert_eq!(devices.len(), 2, "{devices:?}");
    assert!(devices.iter().all(|(_, user)| user.is_none()), "{devices:?}");
}
