//! The enrollment controller end to end: the real `mfa-operator` binary against the real
//! kube-apiserver and moto. Each test has its own namespace, its own operator (watching
//! only that namespace), its own IAM users and its own device path, so tests run in
//! parallel on one shared moto account without touching each other.

use crate::common;

use std::time::{Duration, Instant};

use common::bed::{Bed, condition, data, is_true, state, user_status};
use common::fault_proxy::FaultProxy;
use common::iam;
use common::operator::Operator;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, PostParams};
use mfa_operator::crd::{MfaEnrollment, UserState};

const LONG: Duration = Duration::from_secs(90);

#[tokio::test]
async fn report_mode_lists_users_without_mfa_and_writes_nothing() {
    let bed = Bed::new("report").await;
    let users = bed.users(&["alice", "bob", "carol"]).await;
    iam::enable_own_device(&bed.iam, &users[0]).await;
    let _operator = Operator::start(&bed.ns);

    bed.apply("audit", serde_json::json!({ "mode": "Report", "users": { "pathPrefix": format!("/{}/", bed.tag), "names": ["nobody-here"] } }))
        .await;
    let done = bed.wait("audit", "Ready", |e| is_true(e, "Ready")).await;

    let summary = done.status.as_ref().and_then(|s| s.summary.clone()).expect("summary");
    assert_eq!((summary.selected, summary.compliant, summary.missing, summary.pending), (3, 1, 2, 0));
    assert_eq!(summary.not_found, 1);
    assert_eq!(state(&done, &users[0]), Some(UserState::Compliant));
    assert_eq!(state(&done, &users[1]), Some(UserState::Missing));
    assert_eq!(state(&done, "nobody-here"), Some(UserState::NotFound));
    let (status, reason, message) = condition(&done, "Compliant").expect("Compliant condition");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "UsersWithoutMfa"));
    assert!(message.contains("2 of 3"), "{message}");
    assert_eq!(done.status.as_ref().and_then(|s| s.root_account_mfa_enabled), Some(false));

    assert!(iam::devices_under(&bed.iam, &bed.device_path).await.is_empty(), "Report mode created devices");
    assert!(
        bed.secrets.list(&ListParams::default()).await.expect("list").items.is_empty(),
        "Report mode wrote Secrets"
    );
}

#[tokio::test]
async fn enroll_delivers_the_seed_and_two_codes_make_the_user_compliant() {
    let bed = Bed::new("enroll").await;
    let users = bed.users(&["Dana.Smith+ops"]).await;
    let user = &users[0];
    let operator = Operator::start(&bed.ns);

    bed.apply("one", serde_json::json!({ "mode": "Enroll", "users": { "names": [user] } })).await;
    let pending = bed
        .wait("one", "user Pending and Ready", |e| state(e, user) == Some(UserState::Pending) && is_true(e, "Ready"))
        .await;
    let status = user_status(&pending, user).expect("user status").clone();
    let serial = status.serial_number.clone().expect("serial in status");
    assert!(serial.ends_with(&format!(":mfa{}{user}", bed.device_path)), "{serial}");
    assert!(status.pending_since.is_some() && status.expires_at.is_some());
    let (compliant, reason, _) = condition(&pending, "Compliant").expect("Compliant");
    assert_eq!((compliant.as_str(), reason.as_str()), ("False", "AwaitingCodes"));

    let secret = bed.seed_secret(&pending, user).await;
    assert_eq!(secret.type_.as_deref(), Some("iam.mfa-operator.dev/mfa-seed"));
    assert_eq!(secret.labels().get("iam.mfa-operator.dev/enrollment").map(String::as_str), Some("one"));
    assert_eq!(secret.annotations().get("iam.mfa-operator.dev/user-name"), Some(user));
    let seed = data(&secret, "seed").expect("seed");
    let uri = data(&secret, "otpauth-uri").expect("otpauth URI");
    assert!(uri.starts_with("otpauth://totp/") && uri.contains(&format!("secret={seed}")), "{uri}");
    let png = &secret.data.as_ref().and_then(|d| d.get("qr.png")).expect("qr.png").0;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "the operator renders a real PNG");
    assert_eq!(iam::devices_under(&bed.iam, &bed.device_path).await, [(serial.clone(), None)]);

    let (code1, code2) = iam::codes_now(&seed);
    bed.submit(&secret.name_any(), &code1, &code2).await;
    let done = bed.wait("one", "user Compliant", |e| state(e, user) == Some(UserState::Compliant)).await;

    assert_eq!(iam::devices_under(&bed.iam, &bed.device_path).await, [(serial, Some(user.clone()))]);
    assert!(
        bed.secrets.get_opt(&secret.name_any()).await.expect("get").is_none(),
        "seed Secret deleted after enabling"
    );
    let (compliant, reason, _) = condition(&done, "Compliant").expect("Compliant");
    assert_eq!((compliant.as_str(), reason.as_str()), ("True", "AllUsersHaveMfa"));
    let reasons = bed.event_reasons("one").await;
    assert!(reasons.contains(&"DeviceCreated".to_owned()) && reasons.contains(&"MfaEnabled".to_owned()), "{reasons:?}");

    // Secrets stay secret: neither the seed nor the codes reach status, Events or logs.
    let status_text = serde_json::to_string(&done.status).expect("json");
    let events = bed.events_text().await;
    let logs = operator.kill();
    for (what, text) in [("status", &status_text), ("events", &events), ("operator logs", &logs)] {
        for secret_text in [&seed, &code1, &code2] {
            assert!(!text.contains(secret_text.as_str()), "a seed or code appeared in {what}");
        }
    }
    assert!(logs.contains("DEBUG"), "the logs were captured at debug level");
}

#[tokio::test]
async fn refused_codes_are_explained_cleared_and_rotate_the_device_after_five() {
    let bed = Bed::new("refuse").await;
    let users = bed.users(&["erin"]).await;
    let user = &users[0];
    let _operator = Operator::start(&bed.ns);
    bed.apply("refuse", serde_json::json!({ "mode": "Enroll", "users": { "names": [user] } })).await;
    let pending = bed.wait("refuse", "Pending", |e| state(e, user) == Some(UserState::Pending)).await;
    let secret = bed.seed_secret(&pending, user).await;
    let name = secret.name_any();
    let seed = data(&secret, "seed").expect("seed");
    let (fresh1, fresh2) = iam::codes_now(&seed);
    let (old1, old2) = iam::codes_at(&seed, iam::now_secs() - 600);
    // (what, code1, code2, text the status message must then contain)
    let submissions: [(&str, &str, &str, &str); 5] = [
        ("letters", "12ab56", "123456", "refused submission 1 of 5"),
        ("same code twice", &fresh2, &fresh2, "refused submission 2 of 5"),
        // Late codes prove the person holds the seed: explained, not counted.
        ("stale codes", &old1, &old2, "minutes old"),
        ("swapped order", &fresh2, &fresh1, "refused submission 3 of 5"),
        ("wrong codes", "000000", "111111", "refused submission 4 of 5"),
    ];
    for (what, code1, code2, marker) in submissions {
        bed.submit(&name, code1, code2).await;
        let refused = bed
            .wait("refuse", what, |e| {
                user_status(e, user).and_then(|u| u.message.as_deref()).is_some_and(|m| m.contains(marker))
            })
            .await;
        println!("{what}: {}", user_status(&refused, user).and_then(|u| u.message.clone()).unwrap_or_default());
        let after = bed.secrets.get(&name).await.expect("Secret still there");
        assert!(data(&after, "code1").is_none() && data(&after, "code2").is_none(), "{what}: code keys cleared");
        assert_eq!(state(&refused, user), Some(UserState::Pending), "{what}");
    }
    let devices = iam::devices_under(&bed.iam, &bed.device_path).await;
    assert!(devices.iter().all(|(_, u)| u.is_none()), "nothing was enabled: {devices:?}");

    // The fifth refusal replaces the device: new device, new seed.
    bed.submit(&name, "222222", "333333").await;
    let rotated = bed
        .wait("refuse", "a new seed", |e| {
            user_status(e, user).is_some_and(|u| {
                u.state == UserState::Pending && u.message.as_deref().is_some_and(|m| !m.contains("refused"))
            })
        })
        .await;
    let new_secret = bed.seed_secret(&rotated, user).await;
    assert_ne!(data(&new_secret, "seed").expect("seed"), seed, "the seed was rotated");
    assert_eq!(iam::devices_under(&bed.iam, &bed.device_path).await.len(), 1, "exactly one device after rotation");
    assert!(bed.event_reasons("refuse").await.contains(&"SeedRotated".to_owned()));
}

#[tokio::test]
async fn pending_ttl_rotates_an_unused_seed() {
    let bed = Bed::new("ttl").await;
    let users = bed.users(&["frank"]).await;
    let user = &users[0];
    let _operator = Operator::start(&bed.ns);
    bed.apply("ttl", serde_json::json!({ "mode": "Enroll", "users": { "names": [user] }, "pendingTTL": "30s" })).await;
    let first = bed.wait("ttl", "Pending", |e| state(e, user) == Some(UserState::Pending)).await;
    let first_seed = data(&bed.seed_secret(&first, user).await, "seed").expect("seed");
    let first_since = user_status(&first, user).and_then(|u| u.pending_since.clone()).expect("pendingSince");

    let rotated = bed
        .wait_long("ttl", "rotation after pendingTTL", LONG, |e| {
            user_status(e, user).and_then(|u| u.pending_since.as_ref()).is_some_and(|t| *t != first_since)
        })
        .await;
    let second_seed = data(&bed.seed_secret(&rotated, user).await, "seed").expect("seed");
    assert_ne!(first_seed, second_seed);
    assert_eq!(iam::devices_under(&bed.iam, &bed.device_path).await.len(), 1);
    assert!(bed.event_reasons("ttl").await.contains(&"SeedRotated".to_owned()));
}

#[tokio::test]
async fn lost_seeds_and_orphans_are_repaired_and_nothing_else_is_touched() {
    let bed = Bed::new("repair").await;
    let users = bed.users(&["gina", "hal"]).await;
    let own = iam::enable_own_device(&bed.iam, &users[1]).await;
    // An unassigned device outside the operator's path: never ours to delete.
    let foreign = iam::create_orphan_device(&bed.iam, &format!("/{}-other/", bed.tag), "keep-me").await;
    // An unassigned device under the operator's path that no Secret claims.
    let orphan = iam::create_orphan_device(&bed.iam, &bed.device_path, "lost-seed").await;
    let _operator = Operator::start(&bed.ns);

    bed.apply("repair", serde_json::json!({ "mode": "Enroll", "users": { "pathPrefix": format!("/{}/", bed.tag) } }))
        .await;
    let pending =
        bed.wait("repair", "Ready", |e| is_true(e, "Ready") && state(e, &users[0]) == Some(UserState::Pending)).await;
    let secret = bed.seed_secret(&pending, &users[0]).await;
    let seed = data(&secret, "seed").expect("seed");

    // The Secret disappears (as after a crash between the two writes): the device whose
    // seed is lost is replaced.
    bed.secrets.delete(&secret.name_any(), &DeleteParams::default()).await.expect("delete Secret");
    common::wait_until(&bed.secrets, &secret.name_any(), LONG, "a new seed Secret", |s: Option<&Secret>| {
        s.and_then(|s| data(s, "seed")).is_some_and(|new| new != seed)
    })
    .await;

    let under = iam::devices_under(&bed.iam, &bed.device_path).await;
    assert_eq!(under.len(), 1, "one device for gina, the orphan gone: {under:?}");
    assert!(under.iter().all(|(serial, _)| serial != &orphan));
    let all = iam::virtual_devices(&bed.iam).await;
    assert!(all.contains(&(own, Some(users[1].clone()))), "hal's own enabled device untouched");
    assert!(all.contains(&(foreign, None)), "devices outside the operator's path untouched");
    let reasons = bed.event_reasons("repair").await;
    assert!(
        reasons.contains(&"OrphanDeviceDeleted".to_owned()) && reasons.contains(&"SeedRotated".to_owned()),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn a_device_deactivated_out_of_band_sends_the_user_back_to_pending() {
    let bed = Bed::new("drift").await;
    let users = bed.users(&["ivan"]).await;
    let user = &users[0];
    let _operator = Operator::start(&bed.ns);
    bed.apply("drift", serde_json::json!({ "mode": "Enroll", "users": { "names": [user] }, "resyncInterval": "10s" }))
        .await;
    let pending = bed.wait("drift", "Pending", |e| state(e, user) == Some(UserState::Pending)).await;
    let secret = bed.seed_secret(&pending, user).await;
    let (code1, code2) = iam::codes_now(&data(&secret, "seed").expect("seed"));
    bed.submit(&secret.name_any(), &code1, &code2).await;
    let compliant = bed.wait("drift", "Compliant", |e| state(e, user) == Some(UserState::Compliant)).await;
    let serial = user_status(&pending, user).and_then(|u| u.serial_number.clone()).expect("serial");
    assert!(is_true(&compliant, "Compliant"));

    bed.iam.deactivate_mfa_device().user_name(user).serial_number(&serial).send().await.expect("deactivate");
    let back = bed
        .wait_long("drift", "Pending again after resync", LONG, |e| state(e, user) == Some(UserState::Pending))
        .await;
    assert!(!is_true(&back, "Compliant"));
    assert!(bed.event_reasons("drift").await.contains(&"MfaDeactivated".to_owned()));
    assert_eq!(iam::devices_under(&bed.iam, &bed.device_path).await.len(), 1, "one pending device, no leftovers");
}

#[tokio::test]
async fn deleting_an_enrollment_removes_its_pending_devices_and_secrets_only() {
    let bed = Bed::new("delete").await;
    let users = bed.users(&["judy", "kim"]).await;
    let own = iam::enable_own_device(&bed.iam, &users[1]).await;
    let _operator = Operator::start(&bed.ns);
    bed.apply("gone", serde_json::json!({ "mode": "Enroll", "users": { "names": [&users[0], &users[1]] } })).await;
    bed.wait("gone", "Ready", |e| is_true(e, "Ready") && state(e, &users[0]) == Some(UserState::Pending)).await;
    assert_eq!(iam::devices_under(&bed.iam, &bed.device_path).await.len(), 1);

    bed.enrollments.delete("gone", &DeleteParams::default()).await.expect("delete enrollment");
    let left = common::wait_for(&bed.enrollments, "gone", LONG, "the enrollment to go", |e: Option<&MfaEnrollment>| {
        e.is_none()
    })
    .await;
    assert!(left.is_none());

    assert!(iam::devices_under(&bed.iam, &bed.device_path).await.is_empty(), "pending device removed");
    assert!(bed.secrets.list(&ListParams::default()).await.expect("list").items.is_empty(), "seed Secret removed");
    assert!(iam::virtual_devices(&bed.iam).await.contains(&(own, Some(users[1].clone()))), "enabled device untouched");
}

#[tokio::test]
async fn two_enrollments_selecting_the_same_users_make_one_device_per_user() {
    let bed = Bed::new("overlap").await;
    let users = bed.users(&["lee", "max", "ned"]).await;
    let spec = serde_json::json!({ "mode": "Enroll", "users": { "pathPrefix": format!("/{}/", bed.tag) } });
    let older = bed.apply("older", spec.clone()).await;
    // Creation timestamps have one-second resolution: the order must be unambiguous, so
    // "younger" is created again until the apiserver stamps it with a later second (no
    // operator runs yet, so nothing acts on the copies deleted meanwhile).
    let created = |e: &MfaEnrollment| e.metadata.creation_timestamp.clone().expect("creationTimestamp").0;
    let deadline = Instant::now() + common::WAIT;
    let younger = loop {
        let younger = bed.apply("younger", spec.clone()).await;
        if created(&younger) != created(&older) {
            break younger;
        }
        assert!(Instant::now() < deadline, "the apiserver stamped every copy with the second of the first");
        bed.enrollments.delete("younger", &DeleteParams::default()).await.expect("delete younger");
        common::wait_for(&bed.enrollments, "younger", common::WAIT, "younger to go", |e: Option<&MfaEnrollment>| {
            e.is_none()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(created(&older) < created(&younger), "older is older: {:?}, {:?}", created(&older), created(&younger));
    let _operator = Operator::start(&bed.ns);

    let older = bed.wait("older", "Ready", |e| is_true(e, "Ready")).await;
    let younger = bed.wait("younger", "Ready", |e| is_true(e, "Ready")).await;
    for user in &users {
        assert_eq!(state(&older, user), Some(UserState::Pending));
        let theirs = user_status(&younger, user).expect("listed");
        assert_eq!(theirs.state, UserState::Pending);
        assert!(theirs.message.as_deref().is_some_and(|m| m.contains("older")), "{theirs:?}");
        assert!(theirs.seed_secret.is_none());
    }
    assert_eq!(iam::devices_under(&bed.iam, &bed.device_path).await.len(), 3, "exactly one device per user");
    let secrets = bed.secrets.list(&ListParams::default()).await.expect("list").items;
    assert_eq!(secrets.len(), 3);
    assert!(
        secrets
            .iter()
            .all(|s| { s.labels().get("iam.mfa-operator.dev/enrollment").map(String::as_str) == Some("older") })
    );
}

#[tokio::test]
async fn selection_by_group_tags_and_console_access() {
    let bed = Bed::new("select").await;
    let users = bed.users(&["ops1", "ops2", "pay1", "web1"]).await;
    let group = format!("{}-ops", bed.tag);
    iam::add_to_group(&bed.iam, &users[0], &group).await;
    iam::add_to_group(&bed.iam, &users[1], &group).await;
    iam::give_console_password(&bed.iam, &users[1]).await;
    iam::tag_user(&bed.iam, &users[2], "team", &bed.tag).await;
    let _operator = Operator::start(&bed.ns);

    bed.apply("by-group", serde_json::json!({ "mode": "Report", "users": { "groups": [&group] } })).await;
    bed.apply("by-tag", serde_json::json!({ "mode": "Report", "users": { "tags": { "team": &bed.tag } } })).await;
    bed.apply(
        "console",
        serde_json::json!({ "mode": "Report", "users": { "groups": [&group], "consoleAccessOnly": true } }),
    )
    .await;
    bed.apply("excluded", serde_json::json!({ "mode": "Report", "users": { "pathPrefix": format!("/{}/", bed.tag), "exclude": [&users[3]] } })).await;

    bed.apply(
        "typo",
        serde_json::json!({ "mode": "Report", "users": { "groups": [format!("{}-nope", bed.tag)], "names": [&users[3]] } }),
    )
    .await;
    let typo = bed.wait("typo", "Stalled", |e| is_true(e, "Stalled")).await;
    let (_, reason, message) = condition(&typo, "Stalled").expect("Stalled");
    assert_eq!(reason, "InvalidSpec");
    assert!(message.contains(&format!("{}-nope", bed.tag)), "the bad value is named: {message}");
    assert!(!is_true(&typo, "Ready"));
    assert_eq!(state(&typo, &users[3]), Some(UserState::Missing), "the valid part is still reported");

    let listed = |e: &MfaEnrollment| -> Vec<String> {
        let mut names: Vec<String> = e.status.iter().flat_map(|s| s.users.iter().map(|u| u.name.clone())).collect();
        names.sort();
        names
    };
    for (name, expected) in [
        ("by-group", vec![users[0].clone(), users[1].clone()]),
        ("by-tag", vec![users[2].clone()]),
        ("console", vec![users[1].clone()]),
        ("excluded", vec![users[0].clone(), users[1].clone(), users[2].clone()]),
    ] {
        let done = bed.wait(name, "Ready", |e| is_true(e, "Ready")).await;
        assert_eq!(listed(&done), expected, "{name}");
    }
}

#[tokio::test]
async fn five_hundred_users_all_get_a_pending_device() {
    let bed = Bed::new("bulk").await;
    let names: Vec<String> = (0..500).map(|i| format!("u{i:03}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    bed.users(&refs).await;
    let _operator = Operator::start(&bed.ns);
    let started = Instant::now();
    bed.apply("bulk", serde_json::json!({ "mode": "Enroll", "users": { "pathPrefix": format!("/{}/", bed.tag) } }))
        .await;
    let done = bed
        .wait_long("bulk", "500 pending users", Duration::from_secs(240), |e| {
            is_true(e, "Ready") && e.status.as_ref().and_then(|s| s.summary.as_ref()).is_some_and(|s| s.pending == 500)
        })
        .await;
    println!("500 users pending after {:?}", started.elapsed());
    let status = done.status.expect("status");
    assert_eq!(status.summary.expect("summary").selected, 500);
    assert_eq!(status.users.len() + status.users_omitted as usize, 500);
    assert!(status.users.len() <= 200, "the users list is bounded");
    assert_eq!(iam::devices_under(&bed.iam, &bed.device_path).await.len(), 500);
    let secrets = bed.secrets.list(&ListParams::default()).await.expect("list").items;
    assert_eq!(secrets.len(), 500);
}

#[tokio::test]
async fn an_enrollment_created_before_the_operator_and_one_after_share_the_account() {
    let bed = Bed::new("shared").await;
    let users = bed.users(&["ola", "pat"]).await;
    bed.apply("first", serde_json::json!({ "mode": "Enroll", "users": { "names": [&users[0]] } })).await;
    let upstream = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL");
    let proxy = FaultProxy::start(&upstream).await;
    let _operator = Operator::start_with(&bed.ns, &[("AWS_ENDPOINT_URL", &proxy.url())]);
    bed.wait("first", "Ready", |e| is_true(e, "Ready") && state(e, &users[0]) == Some(UserState::Pending)).await;
    bed.apply("second", serde_json::json!({ "mode": "Enroll", "users": { "names": [&users[1]] } })).await;
    let second = bed.wait("second", "Ready", |e| is_true(e, "Ready")).await;
    assert_eq!(state(&second, &users[1]), Some(UserState::Pending));
    assert_eq!(iam::devices_under(&bed.iam, &bed.device_path).await.len(), 2);
    // One inventory serves both enrollments (default resync 10m): one sweep, not two,
    // counted at a proxy (no faults) between the operator and IAM. A sweep is one first
    // page of each listing, however many pages the shared account needs.
    let first_pages = proxy.first_pages();
    println!("IAM requests at the proxy: {:?}; first pages: {first_pages:?}", proxy.calls_per_op());
    assert!(proxy.counts().iter().all(|((_, outcome), _)| outcome == "forwarded"), "{:?}", proxy.counts());
    for sweep in ["GetAccountAuthorizationDetails", "ListVirtualMFADevices", "ListGroups", "GetAccountSummary"] {
        assert_eq!(first_pages.get(sweep), Some(&1), "the account inventory is shared between enrollments: {sweep}");
    }
    let _ = PostParams::default();
}

/// A person's codes are not queued behind another enrollment's bulk work in the same
/// account: with every IAM call of the account taking 150 ms, the codes written while a
/// 240-user enrollment is still creating its devices take effect before that creation
/// ends. (Before the account lock was narrowed, the submission waited for every device
/// of the other enrollment.) An ordering, not a timing: the 240 creations are what the
/// submission must not wait for.
#[tokio::test]
async fn a_code_submission_is_not_queued_behind_bulk_work_in_the_same_account() {
    use common::strict_iam;
    strict_iam::require().await;
    let bed = Bed::new("no-wait").await;
    let account = strict_iam::unique_account();
    let there = strict_iam::client_in_account(&account).await;
    let role = serde_json::json!({ "roleArn": format!("arn:aws:iam::{account}:role/mfa-operator") });
    let person = bed.user("person");
    iam::create_user(&there, &person, "/").await;
    const BULK: usize = 240;
    let bulk_path = format!("/{}-bulk/", bed.tag);
    futures::future::join_all((0..BULK).map(|i| {
        let (there, path, tag) = (&there, &bulk_path, &bed.tag);
        async move { iam::create_user(there, &format!("{tag}-b{i:03}"), path).await }
    }))
    .await;
    let _operator = Operator::start(&bed.ns);

    bed.apply("people", serde_json::json!({ "mode": "Enroll", "users": { "names": [&person] }, "aws": role })).await;
    let pending = bed.wait("people", "person Pending", |e| state(e, &person) == Some(UserState::Pending)).await;
    let seed = bed.seed(&pending, &person).await;
    let secret = bed.seed_secret(&pending, &person).await.name_any();

    strict_iam::set_account_latency(&account, 150, 0).await;
    let bulk_devices = format!("/{}-bulk-devices/", bed.tag);
    bed.apply(
        "bulk",
        serde_json::json!({ "mode": "Enroll", "users": { "pathPrefix": &bulk_path }, "device": { "path": &bulk_devices }, "aws": role }),
    )
    .await;
    // The bulk enrollment is creating its devices: the first one exists.
    let deadline = Instant::now() + LONG;
    while iam::devices_under(&there, &bulk_devices).await.is_empty() {
        assert!(Instant::now() < deadline, "the bulk enrollment created no device within {LONG:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (code1, code2) = iam::codes_now(&seed);
    bed.submit(&secret, &code1, &code2).await;
    bed.wait("people", "person Compliant", |e| state(e, &person) == Some(UserState::Compliant)).await;
    let created = iam::devices_under(&there, &bulk_devices).await.len();
    strict_iam::set_account_latency(&account, 0, 0).await;
    assert!(created < BULK, "the submission waited for all {BULK} devices of the bulk enrollment");
    let assigned = iam::virtual_devices(&there).await;
    assert!(assigned.iter().any(|(_, user)| user.as_deref() == Some(person.as_str())), "{person} has no device");

    // The bulk work still completes, every user with one pending device.
    bed.wait_long("bulk", "bulk users Pending", LONG * 2, |e| {
        is_true(e, "Ready")
            && e.status.as_ref().and_then(|s| s.summary.as_ref()).is_some_and(|s| s.pending == BULK as u32)
    })
    .await;
    assert_eq!(iam::devices_under(&there, &bulk_devices).await.len(), BULK);
}
