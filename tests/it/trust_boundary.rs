//! The trust boundary, played by the attacker: a person who may patch a seed Secret (as
//! the code flow requires) or create Secrets in the namespace tries to make the operator
//! enable their device on someone else's user, guess forever, keep a device from being
//! repaired, or keep a live seed around. IAM is the test bed's strict layer, which refuses
//! codes that are not a fresh pair of the device's real seed, as AWS does.

use crate::common;

use std::time::Duration;

use common::bed::{Bed, condition, data, is_true, state, user_status};
use common::iam;
use common::operator::Operator;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use mfa_operator::crd::{MfaEnrollment, UserState};
use serde_json::json;

/// A seed of some other authenticator entry: its codes never match the operator's device.
const FOREIGN_SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

impl Bed {
    /// Enrolls `user` alone in the enrollment `team` and waits until the seed is out.
    async fn pending(&self, user: &str) -> MfaEnrollment {
        self.apply("team", json!({ "mode": "Enroll", "users": { "names": [user] } })).await;
        self.wait("team", "user Pending and Ready", |e| {
            state(e, user) == Some(UserState::Pending) && is_true(e, "Ready")
        })
        .await
    }

    /// Patches `secret` as the attacker (an ordinary writer of Secrets in the namespace).
    async fn tamper(&self, secret: &str, patch: serde_json::Value) {
        self.secrets
            .patch(secret, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("patch {secret}: {e}"));
    }
}

fn message(e: &MfaEnrollment, user: &str) -> String {
    user_status(e, user).and_then(|u| u.message.clone()).unwrap_or_default()
}

fn seed_of(secret: &Secret) -> String {
    data(secret, "seed").expect("seed in Secret")
}

/// Finding 1: a forged serial (and the attacker's seed and codes) in alice's Secret.
#[tokio::test]
async fn a_forged_serial_never_enables_a_foreign_device_on_the_victim() {
    let bed = Bed::new("forged-serial").await;
    common::strict_iam::require().await;
    let alice = bed.users(&["alice"]).await.remove(0);
    let _operator = Operator::start(&bed.ns);
    let pending = bed.pending(&alice).await;
    let victim_serial = user_status(&pending, &alice).and_then(|u| u.serial_number.clone()).expect("serial");
    let secret = bed.seed_secret(&pending, &alice).await;
    let original_seed = seed_of(&secret);

    // The attacker's own device, whose seed they hold.
    let (foreign, foreign_seed) = iam::create_device_with_seed(&bed.iam, "/", &bed.user("mallory-phone")).await;
    let (code1, code2) = iam::codes_now(&foreign_seed);
    bed.tamper(
        &secret.name_any(),
        json!({
            "metadata": { "annotations": { "iam.mfa-operator.dev/serial-number": foreign } },
            "stringData": { "seed": foreign_seed, "code1": code1, "code2": code2 },
        }),
    )
    .await;

    let replaced = bed
        .wait("team", "alice's tampered Secret replaced", |e| {
            state(e, &alice) == Some(UserState::Compliant)
                || message(e, &alice).contains("someone other than the operator")
        })
        .await;
    assert_eq!(state(&replaced, &alice), Some(UserState::Pending), "the forged Secret was obeyed");
    let devices = iam::virtual_devices(&bed.iam).await;
    assert!(devices.contains(&(foreign.clone(), None)), "the foreign device is untouched and unassigned: {devices:?}");
    assert!(
        !devices.iter().any(|(_, user)| user.as_deref() == Some(alice.as_str())),
        "alice got a device: {devices:?}"
    );
    assert!(bed.event_reasons("team").await.contains(&"SeedSecretTampered".to_owned()));

    // The replacement is alice's own derived device with a fresh seed, and it works.
    let fresh = bed.seed_secret(&replaced, &alice).await;
    let fresh_seed = seed_of(&fresh);
    assert_ne!(fresh_seed, foreign_seed);
    assert_ne!(fresh_seed, original_seed, "a seed the attacker has seen is never reused");
    assert_eq!(user_status(&replaced, &alice).and_then(|u| u.serial_number.clone()), Some(victim_serial.clone()));
    let (code1, code2) = iam::codes_now(&fresh_seed);
    bed.submit(&fresh.name_any(), &code1, &code2).await;
    bed.wait("team", "alice Compliant", |e| state(e, &alice) == Some(UserState::Compliant)).await;
    let devices = iam::virtual_devices(&bed.iam).await;
    assert!(devices.contains(&(victim_serial, Some(alice.clone()))), "{devices:?}");
    assert!(devices.contains(&(foreign, None)), "the foreign device was never deleted: {devices:?}");
}

/// Finding 2: the guess counter and the TTL are the operator's, not the guesser's.
#[tokio::test]
async fn resetting_the_old_counter_annotation_does_not_buy_more_guesses() {
    let bed = Bed::new("counter-reset").await;
    let alice = bed.users(&["alice"]).await.remove(0);
    let _operator = Operator::start(&bed.ns);
    let pending = bed.pending(&alice).await;
    let secret = bed.seed_secret(&pending, &alice).await;
    let name = secret.name_any();
    let first_seed = seed_of(&secret);

    for attempt in 1..=4u32 {
        let (code1, code2) = iam::codes_now(FOREIGN_SEED);
        bed.submit(&name, &code1, &code2).await;
        bed.wait("team", &format!("refusal {attempt} counted in status"), |e| {
            user_status(e, &alice).and_then(|u| u.failed_attempts) == Some(attempt)
        })
        .await;
        // Where the counter used to live: the guesser resets it.
        bed.tamper(&name, json!({ "metadata": { "annotations": { "iam.mfa-operator.dev/failed-attempts": "0" } } }))
            .await;
    }
    let (code1, code2) = iam::codes_now(FOREIGN_SEED);
    bed.submit(&name, &code1, &code2).await;
    let rotated = bed
        .wait("team", "the fifth refusal rotates the device", |e| {
            user_status(e, &alice).is_some_and(|u| u.failed_attempts.is_none() && u.seed_secret.is_some())
                && state(e, &alice) == Some(UserState::Pending)
        })
        .await;
    let new_seed = seed_of(&bed.seed_secret(&rotated, &alice).await);
    assert_ne!(new_seed, first_seed, "five refusals replace the device and its seed");
    assert!(bed.event_reasons("team").await.contains(&"SeedRotated".to_owned()));
}

#[tokio::test]
async fn pushing_the_ttl_out_is_tampering_and_is_replaced() {
    let bed = Bed::new("ttl-push").await;
    let alice = bed.users(&["alice"]).await.remove(0);
    let _operator = Operator::start(&bed.ns);
    let pending = bed.pending(&alice).await;
    let since = user_status(&pending, &alice).and_then(|u| u.pending_since.clone()).expect("pendingSince");
    let secret = bed.seed_secret(&pending, &alice).await;
    bed.tamper(
        &secret.name_any(),
        json!({ "metadata": { "annotations": { "iam.mfa-operator.dev/created-at": "2099-01-01T00:00:00Z" } } }),
    )
    .await;
    let replaced = bed
        .wait("team", "tampered created-at replaced", |e| {
            message(e, &alice).contains("someone other than the operator")
        })
        .await;
    let status = user_status(&replaced, &alice).expect("alice");
    assert!(status.pending_since.as_ref().is_some_and(|t| t.0 >= since.0 && t.0.as_second() < 4_000_000_000));
    assert_ne!(seed_of(&bed.seed_secret(&replaced, &alice).await), seed_of(&secret));
}

/// Finding 3: a look-alike Secret claiming alice's device cannot block its repair.
#[tokio::test]
async fn a_forged_claim_does_not_keep_a_lost_seed_from_being_repaired() {
    let bed = Bed::new("forged-claim").await;
    let alice = bed.users(&["alice"]).await.remove(0);
    let serial = format!("arn:aws:iam::123456789012:mfa{}{alice}", bed.device_path);
    // Before the operator ever looks: a Secret that claims alice's device for "other".
    let forged: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": "mfa-seed-forged",
            "labels": { "app.kubernetes.io/managed-by": "mfa-operator", "iam.mfa-operator.dev/enrollment": "other" },
            "annotations": {
                "iam.mfa-operator.dev/user-name": alice,
                "iam.mfa-operator.dev/serial-number": serial,
                "iam.mfa-operator.dev/created-at": "2026-01-01T00:00:00Z",
            },
        },
        "type": "iam.mfa-operator.dev/mfa-seed",
        "stringData": { "seed": FOREIGN_SEED },
    }))
    .expect("Secret literal");
    bed.secrets.create(&PostParams::default(), &forged).await.expect("create the forged claim");
    let _operator = Operator::start(&bed.ns);
    let pending = bed.pending(&alice).await;
    let secret = bed.seed_secret(&pending, &alice).await;

    // alice's seed is lost.
    // Repaired: a new seed Secret (a claim that was obeyed would leave alice "held by"
    // other, with no Secret). pendingSince has a resolution of one second, so it need not
    // change when the repair is quick: the Secret's uid is the evidence.
    bed.secrets.delete(&secret.name_any(), &DeleteParams::default()).await.expect("delete alice's Secret");
    let fresh = common::wait_until(
        &bed.secrets,
        &secret.name_any(),
        common::WAIT,
        "the new seed Secret",
        |s: Option<&Secret>| s.is_some_and(|s| s.uid() != secret.uid()),
    )
    .await;
    let repaired = bed
        .wait("team", "alice Pending and Ready", |e| {
            state(e, &alice) == Some(UserState::Pending) && is_true(e, "Ready")
        })
        .await;
    assert!(!message(&repaired, &alice).contains("held by"), "{}", message(&repaired, &alice));
    assert_ne!(seed_of(&fresh), seed_of(&secret));
    assert_eq!(iam::devices_under(&bed.iam, &bed.device_path).await, [(serial, None)]);
}

/// Finding 4: codes with whitespace are checked and sent as exactly six digits.
#[tokio::test]
async fn codes_with_whitespace_are_sent_to_iam_as_six_digits() {
    let bed = Bed::new("whitespace").await;
    common::strict_iam::require().await;
    let alice = bed.users(&["alice"]).await.remove(0);
    let _operator = Operator::start(&bed.ns);
    let pending = bed.pending(&alice).await;
    let secret = bed.seed_secret(&pending, &alice).await;
    let (code1, code2) = iam::codes_now(&seed_of(&secret));
    bed.submit(&secret.name_any(), &format!(" {code1}\n"), &format!("{code2}\r\n")).await;
    bed.wait("team", "alice Compliant", |e| state(e, &alice) == Some(UserState::Compliant)).await;
    let serial = user_status(&pending, &alice).and_then(|u| u.serial_number.clone()).expect("serial");
    assert_eq!(iam::devices_under(&bed.iam, &bed.device_path).await, [(serial, Some(alice))]);
}

/// Finding 5: a name that cannot be a label value is refused at admission.
#[tokio::test]
async fn enrollment_names_longer_than_a_label_value_are_refused() {
    let bed = Bed::new("long-name").await;
    let name = "n".repeat(70);
    let object = json!({
        "apiVersion": "iam.mfa-operator.dev/v1alpha1", "kind": "MfaEnrollment",
        "metadata": { "name": name },
        "spec": { "mode": "Report", "users": { "names": ["alice"] } },
    });
    let refused = bed
        .enrollments
        .patch(&name, &PatchParams::apply(common::TEST_MANAGER), &Patch::Apply(&object))
        .await
        .expect_err("a 70-character name is refused");
    let kube::Error::Api(status) = refused else { panic!("not an API refusal: {refused}") };
    assert_eq!(status.code, 422, "{status:?}");
    assert!(status.message.contains("at most 63 characters"), "{}", status.message);
    // 63 characters is fine.
    common::apply_enrollment(
        &bed.enrollments,
        &"n".repeat(63),
        json!({ "mode": "Report", "users": { "names": ["alice"] } }),
    )
    .await;
}

/// Finding 6: the seed of an enabled device does not outlive it, in Report mode too.
#[tokio::test]
async fn the_seed_secret_goes_once_the_device_is_enabled_even_in_report_mode() {
    let bed = Bed::new("seed-dies").await;
    let alice = bed.users(&["alice"]).await.remove(0);
    let operator = Operator::start(&bed.ns);
    let pending = bed.pending(&alice).await;
    let secret = bed.seed_secret(&pending, &alice).await;
    let serial = user_status(&pending, &alice).and_then(|u| u.serial_number.clone()).expect("serial");
    operator.kill();

    // Enabled while the operator was away (a lost response, a crash), then the
    // enrollment is switched to Report.
    let (code1, code2) = iam::codes_now(&seed_of(&secret));
    bed.iam
        .enable_mfa_device()
        .user_name(&alice)
        .serial_number(&serial)
        .authentication_code1(code1)
        .authentication_code2(code2)
        .send()
        .await
        .expect("enable out of band");
    bed.apply("team", json!({ "mode": "Report", "users": { "names": [&alice] } })).await;
    let _operator = Operator::start(&bed.ns);
    bed.wait("team", "alice Compliant in Report mode", |e| {
        is_true(e, "Ready") && state(e, &alice) == Some(UserState::Compliant)
    })
    .await;
    common::wait_for(&bed.secrets, &secret.name_any(), common::WAIT, "the live seed deleted", |s: Option<&Secret>| {
        s.is_none()
    })
    .await;
    assert_eq!(iam::devices_under(&bed.iam, &bed.device_path).await, [(serial, Some(alice))], "the device stays");
}

/// Finding 7: AWS deletes every unassigned virtual device when anyone adds one in the
/// console. The person's codes then name a vanished device: a new one replaces it at
/// once, the person is told plainly, and the new seed works.
#[tokio::test]
async fn a_device_removed_by_the_console_cleanup_is_replaced_and_the_new_seed_works() {
    let bed = Bed::new("console-cleanup").await;
    common::strict_iam::require().await;
    // Its own account, since the clean-up removes every unassigned device of an account.
    let account = common::strict_iam::unique_account();
    let role = format!("arn:aws:iam::{account}:role/mfa-operator");
    let there = common::strict_iam::client_in_account(&account).await;
    let alice = bed.user("alice");
    iam::create_user(&there, &alice, "/").await;
    let _operator = Operator::start(&bed.ns);
    bed.apply("team", json!({ "mode": "Enroll", "users": { "names": [&alice] }, "aws": { "roleArn": role, "externalId": "mfa-test" } }))
        .await;
    let pending = bed
        .wait("team", "alice Pending", |e| state(e, &alice) == Some(UserState::Pending) && is_true(e, "Ready"))
        .await;
    let serial = user_status(&pending, &alice).and_then(|u| u.serial_number.clone()).expect("serial");
    let secret = bed.seed_secret(&pending, &alice).await;
    let old_seed = seed_of(&secret);

    let deleted = common::strict_iam::console_cleanup(Some(&account)).await;
    assert_eq!(deleted, std::slice::from_ref(&serial), "the clean-up removed alice's pending device");
    let (code1, code2) = iam::codes_now(&old_seed);
    bed.submit(&secret.name_any(), &code1, &code2).await;

    let replaced = bed
        .wait("team", "alice told her device was removed", |e| message(e, &alice).contains("removed from AWS"))
        .await;
    assert_eq!(state(&replaced, &alice), Some(UserState::Pending));
    let fresh = common::wait_until(
        &bed.secrets,
        &secret.name_any(),
        Duration::from_secs(30),
        "the new seed",
        |s: Option<&Secret>| s.is_some_and(|s| data(s, "seed").is_some_and(|seed| seed != old_seed)),
    )
    .await;
    let (code1, code2) = iam::codes_now(&seed_of(&fresh));
    bed.submit(&fresh.name_any(), &code1, &code2).await;
    let done =
        bed.wait("team", "alice Compliant with the new seed", |e| state(e, &alice) == Some(UserState::Compliant)).await;
    assert_eq!(condition(&done, "Compliant").map(|c| c.0), Some("True".to_owned()));
    assert_eq!(iam::devices_under(&there, &bed.device_path).await, [(serial, Some(alice))]);
}

/// A finalizer added by the person would keep the seed readable after the operator deletes
/// it, and block the Secret of the next device: the operator removes it.
#[tokio::test]
async fn a_foreign_finalizer_does_not_keep_a_seed_alive() {
    let bed = Bed::new("finalizer").await;
    let alice = bed.users(&["alice"]).await.remove(0);
    let _operator = Operator::start(&bed.ns);
    let pending = bed.pending(&alice).await;
    let secret = bed.seed_secret(&pending, &alice).await;
    bed.tamper(&secret.name_any(), json!({ "metadata": { "finalizers": ["example.com/keep-the-seed"] } })).await;
    let (code1, code2) = iam::codes_now(&seed_of(&secret));
    bed.submit(&secret.name_any(), &code1, &code2).await;
    bed.wait("team", "alice Compliant", |e| state(e, &alice) == Some(UserState::Compliant)).await;
    common::wait_for(&bed.secrets, &secret.name_any(), common::WAIT, "the seed gone for good", |s: Option<&Secret>| {
        s.is_none()
    })
    .await;
}

/// A Secret squatting the seed Secret's name costs the operator a read, not IAM writes,
/// and says what is in the way; once it is gone the user gets a device.
#[tokio::test]
async fn a_squatted_seed_secret_name_is_reported_without_churning_devices() {
    let bed = Bed::new("squat").await;
    let alice = bed.users(&["alice"]).await.remove(0);
    let _operator = Operator::start(&bed.ns);
    let pending = bed.pending(&alice).await;
    let secret = bed.seed_secret(&pending, &alice).await;
    let name = secret.name_any();
    // The squatter deletes the seed Secret and takes its name with a plain Secret.
    bed.secrets.delete(&name, &DeleteParams::default()).await.expect("delete the seed Secret");
    let squat: Secret = serde_json::from_value(json!({ "metadata": { "name": name }, "stringData": { "x": "y" } }))
        .expect("Secret literal");
    bed.secrets.create(&PostParams::default(), &squat).await.expect("squat the name");
    let blocked =
        bed.wait("team", "alice blocked by the squatter", |e| message(e, &alice).contains("in the way")).await;
    assert_eq!(state(&blocked, &alice), Some(UserState::Failed));
    assert_eq!(iam::devices_under(&bed.iam, &bed.device_path).await, [], "no device without its Secret");
    bed.secrets.delete(&name, &DeleteParams::default()).await.expect("remove the squatter");
    let repaired = bed
        .wait("team", "alice Pending again", |e| {
            state(e, &alice) == Some(UserState::Pending)
                && user_status(e, &alice).is_some_and(|u| u.seed_secret.is_some())
        })
        .await;
    let fresh = bed.seed_secret(&repaired, &alice).await;
    assert_eq!(fresh.type_.as_deref(), Some("iam.mfa-operator.dev/mfa-seed"));
    assert_eq!(iam::devices_under(&bed.iam, &bed.device_path).await.len(), 1);
}
